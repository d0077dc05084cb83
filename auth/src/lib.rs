//! OAuth2 credentials shared by every carebridge client.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod token;

pub use error::{Error, Result};
pub use token::{AccessToken, StaticToken, TokenProvider};
