//! Client configuration.

use carebridge_http::ClientOptions;

/// Configures a [`FhirClient`](crate::FhirClient). Every field has a sensible default, so write
/// `FhirClientOptions { scopes: vec![…], ..Default::default() }`.
///
/// Retry and throttling, timeouts (default 30 s per attempt), the endpoint policy (plain `http`
/// only to loopback hosts), the response body limit and a caller-supplied `reqwest::Client`
/// (proxy, private CA roots, mTLS) are set in [`client_options`](Self::client_options), shared
/// with every carebridge client.
///
/// Which requests are retried: connection failures and timeouts, and `408`, `429`, `500`, `502`,
/// `503`, `504` answers, for requests that are safe to repeat: `GET`, `PUT`, `DELETE`, searches,
/// conditional creates (`If-None-Exist`) and patches guarded by `If-Match`. Plain creates,
/// transactions, batches and `POST` operations are sent once (unless the connection failed
/// before the server saw them). A `429` opens a throttling window for every request of the
/// client; see [`carebridge_http::RetryOptions`].
#[derive(Clone, Debug, Default)]
pub struct FhirClientOptions {
    /// The HTTP configuration shared by every carebridge client.
    pub client_options: ClientOptions,
    /// Scopes passed to [`TokenProvider::token`](carebridge_auth::TokenProvider::token). Empty (the
    /// default) lets the credential use the scopes it was configured with.
    pub scopes: Vec<String>,
}
