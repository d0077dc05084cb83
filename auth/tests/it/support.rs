//! Shared test helpers.

use std::collections::BTreeMap;

use serde_json::json;
use wiremock::{Match, Request, ResponseTemplate};

pub(crate) const CLIENT_ID: &str = "patients-app";
pub(crate) const SECRET: &str = "sup3r-s3cret/+&=value";
pub(crate) const TENANT: &str = "145f4184-1b0b-41c7-ba24-b3c1291bfda1";

/// A successful token response.
pub(crate) fn token_response(access_token: &str, expires_in: u64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
    }))
}

/// Parses a form-urlencoded body into a map (last value wins).
pub(crate) fn form(request: &Request) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(&request.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Matches a form body holding exactly these parameters (and any others not listed in `absent`).
pub(crate) struct FormHas {
    pub(crate) present: Vec<(&'static str, String)>,
    pub(crate) absent: Vec<&'static str>,
}

impl FormHas {
    pub(crate) fn new(present: &[(&'static str, &str)]) -> Self {
        Self {
            present: present.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            absent: Vec::new(),
        }
    }

    pub(crate) fn without(mut self, names: &[&'static str]) -> Self {
        self.absent.extend_from_slice(names);
        self
    }
}

impl Match for FormHas {
    fn matches(&self, request: &Request) -> bool {
        let form = form(request);
        self.present
            .iter()
            .all(|(k, v)| form.get(*k).is_some_and(|actual| actual == v))
            && self.absent.iter().all(|k| !form.contains_key(*k))
    }
}

/// Matches requests that carry no `Authorization` header.
pub(crate) struct NoAuthorization;

impl Match for NoAuthorization {
    fn matches(&self, request: &Request) -> bool {
        !request.headers.contains_key("authorization")
    }
}
