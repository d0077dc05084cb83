//! [`FhirClient`] and its interactions.

use std::sync::Arc;

use bytes::Bytes;
use carebridge_auth::TokenProvider;
use carebridge_fhir_model::resources::{CapabilityStatement, OperationOutcome};
use carebridge_fhir_model::{FhirResource, Resource};
use http::header::{HeaderName, IF_MATCH};
use http::Method;
use serde::de::DeserializeOwned;

use crate::bundle::{BatchRequest, BatchResponse};
use crate::error::Interaction;
use crate::options::FhirClientOptions;
use crate::pager::{decode_history_page, decode_search_page, HistoryEntry, Pager, Pages};
use crate::patch::PatchOperation;
use crate::path::{check_id, check_operation_name};
use crate::response::{etag_for_version, Response};
use crate::search::{SearchMethod, SearchParams, Summary};
use crate::transport::{
    decode, probe, Inner, RawResponse, RequestSpec, FHIR_JSON, FORM, JSON_PATCH,
};
use crate::write::WriteTarget;
use crate::{Error, Result};

const IF_NONE_EXIST: HeaderName = HeaderName::from_static("if-none-exist");
const PREFER: HeaderName = HeaderName::from_static("prefer");
const RETURN_REPRESENTATION: &str = "return=representation";
pub(crate) const RETURN_OUTCOME: &str = "return=OperationOutcome";

/// The `Prefer` header of a create or update.
fn prefer(return_outcome: bool) -> &'static str {
    if return_outcome {
        RETURN_OUTCOME
    } else {
        RETURN_REPRESENTATION
    }
}

/// Options for [`FhirClient::create`].
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// Conditional create: sent as `If-None-Exist`. When the criteria match one resource, the
    /// server returns it (`200`) instead of creating a duplicate; more than one match is `412`.
    /// Conditional creates are retried like other idempotent requests.
    pub if_none_exist: Option<SearchParams>,
    /// Sends `Prefer: return=OperationOutcome` instead of `return=representation`: the server
    /// answers with its `OperationOutcome` about the write (warnings, information), exposed as
    /// [`Response::outcome`]. Default `false`.
    ///
    /// FHIR servers send an `OperationOutcome` for a successful write only when asked, and
    /// then instead of the resource, so [`create`](FhirClient::create) reads the stored
    /// resource back (one more request): by the `Location` / `Content-Location`, or, for a
    /// conditional create answered without one (a server that found the match), by one search
    /// of the `If-None-Exist` criteria. A server that ignores the preference and returns the
    /// resource costs nothing more (and gives no outcome). To get the outcome, id and version
    /// without the resource and without the read-back, use
    /// [`create_for_outcome`](FhirClient::create_for_outcome), which ignores this field.
    pub return_outcome: bool,
}

/// Options for [`FhirClient::update`], [`FhirClient::conditional_update`] and
/// [`FhirClient::patch`].
#[derive(Clone, Debug, Default)]
pub struct UpdateOptions {
    /// Version-aware update: the version id (`3`) or ETag (`W/"3"`) the change is based on, sent
    /// as `If-Match`. A stale version fails with [`Error::PreconditionFailed`].
    pub if_match: Option<String>,
    /// Sends `Prefer: return=OperationOutcome` instead of `return=representation` (update,
    /// conditional update, patch): the server's `OperationOutcome` about the write is exposed
    /// as [`Response::outcome`] and the stored resource is read back (one more request: by the
    /// `Location` / `Content-Location`, else by the id updated and the `ETag`'s version, else,
    /// for a conditional update, by one search of its criteria). Default `false`. The
    /// `*_for_outcome` methods ([`update_for_outcome`](FhirClient::update_for_outcome), …)
    /// always ask for the outcome, ignore this field and read nothing back.
    pub return_outcome: bool,
}

/// Options for [`FhirClient::delete`].
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// Delete only if the current version is this one (`If-Match`).
    pub if_match: Option<String>,
}

/// Options for [`FhirClient::search`].
#[derive(Clone, Debug, Default)]
pub struct SearchOptions {
    /// `GET` (default) or form-encoded `POST [type]/_search`. Next pages are always `GET`s of the
    /// server's `next` link.
    pub method: SearchMethod,
}

/// Options for [`FhirClient::history`] and [`FhirClient::type_history`].
#[derive(Clone, Debug, Default)]
pub struct HistoryOptions {
    /// `_count`: the page size.
    pub count: Option<u32>,
    /// `_since`: only versions changed at or after this instant (FHIR `instant`, e.g.
    /// `2024-01-01T00:00:00Z`).
    pub since: Option<String>,
}

/// Where a named operation runs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum OperationLevel {
    System,
    Type(String),
    Instance(String, String),
}

/// A named FHIR operation (`$validate`, `$everything`, …) for [`FhirClient::operation`].
///
/// Without a body it is sent as `GET` with its parameters in the query string; with a body
/// ([`with_resource`](Self::with_resource)) as `POST`. `GET` operations are retried like reads;
/// `POST` operations only if marked [`idempotent`](Self::idempotent).
#[derive(Clone, Debug)]
pub struct OperationRequest {
    level: OperationLevel,
    name: String,
    params: SearchParams,
    body: Option<Bytes>,
    idempotent: bool,
}

impl OperationRequest {
    fn new(level: OperationLevel, name: &str) -> Self {
        Self {
            level,
            name: name.trim_start_matches('$').to_owned(),
            params: SearchParams::new(),
            body: None,
            idempotent: false,
        }
    }

    /// `[base]/$name`.
    pub fn system(name: &str) -> Self {
        Self::new(OperationLevel::System, name)
    }

    /// `[base]/[type]/$name`, e.g. `OperationRequest::on_type::<Patient>("$validate")`.
    pub fn on_type<R: FhirResource>(name: &str) -> Self {
        Self::new(OperationLevel::Type(R::TYPE.as_str().to_owned()), name)
    }

    /// `[base]/[type]/[id]/$name`, e.g. `OperationRequest::on_instance::<Patient>(id, "$everything")`.
    pub fn on_instance<R: FhirResource>(id: &str, name: &str) -> Self {
        Self::new(
            OperationLevel::Instance(R::TYPE.as_str().to_owned(), id.to_owned()),
            name,
        )
    }

    /// Adds the query parameter `name=value` with `value` **raw**: it is form-encoded on the
    /// wire but not search-escaped, because operation parameters (`url`, `start`, `_since`, …) are
    /// not search parameters. A value for an operation that reads it as a search token (a
    /// `code`, an `identifier`) must be escaped by the caller with
    /// [`escape_value`](crate::escape_value).
    #[must_use]
    pub fn with_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params = self.params.param(name, value);
        self
    }

    /// Sends `resource` (a resource or a `Parameters`) as the `POST` body.
    ///
    /// # Errors
    /// [`Error::Encode`] if it cannot be serialized.
    pub fn with_resource<R: FhirResource>(mut self, resource: &R) -> Result<Self> {
        let body = serde_json::to_vec(resource).map_err(|e| Error::Encode {
            interaction: Interaction::Operation,
            resource_type: R::TYPE.as_str().to_owned(),
            source: carebridge_http::JsonError::new(&e),
        })?;
        self.body = Some(Bytes::from(body));
        Ok(self)
    }

    /// Marks a `POST` operation as safe to repeat, so that it is retried.
    #[must_use]
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// The operation name without `$`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// An async FHIR R4 REST client.
///
/// Cheap to clone (an `Arc` inside) and safe to share between tasks. Every request goes through
/// one pipeline that adds the bearer token, `Accept: application/fhir+json`, the user agent and
/// a `fhir.request` tracing span (interaction, resource type, method, status, resend count;
/// never URLs, query strings or bodies), retries as [`RetryOptions`](carebridge_http::RetryOptions)
/// describes, refreshes the token once on `401`, and maps failures to [`Error`].
#[derive(Clone, Debug)]
pub struct FhirClient {
    pub(crate) inner: Arc<Inner>,
}

impl FhirClient {
    /// Creates a client for the FHIR base URL `base_url` (e.g. `https://fhir.example.org/r4`).
    ///
    /// # Errors
    /// [`Error::InvalidEndpoint`] if `base_url` is not an absolute `http(s)` URL, has a query,
    /// fragment or credentials, or is plain `http` to a host other than loopback (unless
    /// [`InsecureHttp::Allow`](carebridge_http::InsecureHttp::Allow)).
    pub fn new(
        base_url: &str,
        credential: Arc<dyn TokenProvider>,
        options: Option<FhirClientOptions>,
    ) -> Result<Self> {
        let inner = Inner::new(base_url, credential, options.unwrap_or_default())?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The base URL (always ending in `/`).
    pub fn base_url(&self) -> &url::Url {
        self.inner.base()
    }

    pub(crate) fn typed<R: DeserializeOwned>(
        interaction: Interaction,
        type_name: &str,
        raw: RawResponse,
    ) -> Result<Response<R>> {
        let value: R = match decode(interaction, type_name, &raw.body) {
            Ok(value) => value,
            Err(error) => {
                // Say "wrong type" rather than "bad JSON" when the server sent another resource.
                let actual = probe(&raw.body).and_then(|i| i.resource_type);
                if let Some(actual) = actual.filter(|a| a != type_name && type_name != "Resource") {
                    return Err(Error::UnexpectedResponse {
                        interaction,
                        reason: format!("expected a {type_name}, got {actual}"),
                    });
                }
                return Err(error);
            }
        };
        let mut response = Response::from_headers(raw.status, &raw.headers, value);
        response.fill_version(|| probe(&raw.body).and_then(|i| i.version_id));
        Ok(response)
    }

    fn resource_body<R: FhirResource>(resource: &R, interaction: Interaction) -> Result<Bytes> {
        serde_json::to_vec(resource)
            .map(Bytes::from)
            .map_err(|e| Error::Encode {
                interaction,
                resource_type: R::TYPE.as_str().to_owned(),
                source: carebridge_http::JsonError::new(&e),
            })
    }

    fn with_criteria(mut url: url::Url, criteria: &SearchParams) -> url::Url {
        url.set_query(Some(&criteria.to_query_string()));
        url
    }

    /// `GET [base]/[type]/[id]`: the current version of a resource.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Gone`] (deleted), [`Error::InvalidInput`] for an invalid id,
    /// and the transport, auth and decode errors every call can return.
    pub async fn read<R: FhirResource>(&self, id: &str) -> Result<Response<R>> {
        check_id(id, "the id", Interaction::Read)?;
        let ty = R::TYPE.as_str();
        let url = self.inner.url(&[ty, id]);
        let raw = self
            .inner
            .execute(RequestSpec::new(
                Interaction::Read,
                Some(ty),
                Method::GET,
                url,
            ))
            .await?;
        Self::typed(Interaction::Read, ty, raw)
    }

    /// `GET [base]/[type]/[id]/_history/[vid]`: one version of a resource.
    ///
    /// # Errors
    /// As [`read`](Self::read); [`Error::NotFound`] if the version does not exist.
    pub async fn vread<R: FhirResource>(&self, id: &str, version_id: &str) -> Result<Response<R>> {
        check_id(id, "the id", Interaction::Vread)?;
        check_id(version_id, "the version id", Interaction::Vread)?;
        let ty = R::TYPE.as_str();
        let url = self.inner.url(&[ty, id, "_history", version_id]);
        let raw = self
            .inner
            .execute(RequestSpec::new(
                Interaction::Vread,
                Some(ty),
                Method::GET,
                url,
            ))
            .await?;
        Self::typed(Interaction::Vread, ty, raw)
    }

    /// `POST [base]/[type]`: creates `resource` (the server assigns the id). With
    /// [`CreateOptions::if_none_exist`] it is a conditional create.
    ///
    /// The returned response has status `201` and the stored resource (with id and
    /// `meta.versionId`), or `200` and the existing resource when a conditional create matched.
    /// A plain create is never retried (it could create duplicates); a conditional one is.
    ///
    /// # Errors
    /// [`Error::InvalidResource`] when the server rejects the resource,
    /// [`Error::PreconditionFailed`] when conditional criteria match several resources.
    pub async fn create<R: FhirResource>(
        &self,
        resource: &R,
        options: Option<CreateOptions>,
    ) -> Result<Response<R>> {
        let options = options.unwrap_or_default();
        let spec = self.create_spec(resource, &options, prefer(options.return_outcome))?;
        let raw = self.inner.execute(spec).await?;
        let target = WriteTarget {
            id: None,
            criteria: options.if_none_exist.as_ref(),
        };
        self.written(Interaction::Create, raw, target).await
    }

    /// The request of a create, asking for `prefer` (`return=…`).
    pub(crate) fn create_spec<R: FhirResource>(
        &self,
        resource: &R,
        options: &CreateOptions,
        prefer: &str,
    ) -> Result<RequestSpec> {
        let ty = R::TYPE.as_str();
        let body = Self::resource_body(resource, Interaction::Create)?;
        let mut spec = RequestSpec::new(
            Interaction::Create,
            Some(ty),
            Method::POST,
            self.inner.url(&[ty]),
        )
        .body(body, FHIR_JSON)
        .header(PREFER, prefer)?;
        if let Some(criteria) = &options.if_none_exist {
            if criteria.is_empty() {
                return Err(Error::InvalidInput {
                    interaction: Interaction::Create,
                    reason: "If-None-Exist needs search criteria".into(),
                });
            }
            spec = spec
                .header(IF_NONE_EXIST, &criteria.to_query_string())?
                .idempotent(true);
        }
        Ok(spec)
    }

    /// `PUT [base]/[type]/[id]`: replaces the resource with `resource` (its `id` is required).
    /// With [`UpdateOptions::if_match`] the update only happens if the version is still current.
    /// Servers that allow update-as-create answer `201` for a new id.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if `resource` has no valid id; [`Error::PreconditionFailed`] for a
    /// stale `If-Match`; [`Error::InvalidResource`], [`Error::Conflict`] as the server decides.
    pub async fn update<R: FhirResource>(
        &self,
        resource: &R,
        options: Option<UpdateOptions>,
    ) -> Result<Response<R>> {
        let options = options.unwrap_or_default();
        let (url, id) = self.update_url(resource)?;
        let spec = self.put_spec(resource, url, &options, prefer(options.return_outcome))?;
        let raw = self.inner.execute(spec).await?;
        let target = WriteTarget {
            id: Some(id),
            criteria: None,
        };
        self.written(Interaction::Update, raw, target).await
    }

    /// The instance URL of an update, and the id it addresses (checked).
    pub(crate) fn update_url<'r, R: FhirResource>(
        &self,
        resource: &'r R,
    ) -> Result<(url::Url, &'r str)> {
        let ty = R::TYPE.as_str();
        let id = resource.id().ok_or_else(|| Error::InvalidInput {
            interaction: Interaction::Update,
            reason: format!("the {ty} to update has no id"),
        })?;
        check_id(id, "the resource id", Interaction::Update)?;
        Ok((self.inner.url(&[ty, id]), id))
    }

    /// The conditional URL of a conditional update (`criteria` must not be empty).
    pub(crate) fn conditional_update_url<R: FhirResource>(
        &self,
        criteria: &SearchParams,
    ) -> Result<url::Url> {
        if criteria.is_empty() {
            return Err(Error::InvalidInput {
                interaction: Interaction::Update,
                reason: "conditional update needs search criteria".into(),
            });
        }
        Ok(Self::with_criteria(
            self.inner.url(&[R::TYPE.as_str()]),
            criteria,
        ))
    }

    /// The `PUT` of `resource` to `url` (an instance or a conditional URL), honouring
    /// `If-Match` and asking for `prefer` (`return=…`).
    pub(crate) fn put_spec<R: FhirResource>(
        &self,
        resource: &R,
        url: url::Url,
        options: &UpdateOptions,
        prefer: &str,
    ) -> Result<RequestSpec> {
        let body = Self::resource_body(resource, Interaction::Update)?;
        let mut spec = RequestSpec::new(
            Interaction::Update,
            Some(R::TYPE.as_str()),
            Method::PUT,
            url,
        )
        .body(body, FHIR_JSON)
        .header(PREFER, prefer)?;
        if let Some(version) = &options.if_match {
            spec = spec.header(IF_MATCH, &etag_for_version(version))?;
        }
        Ok(spec)
    }

    /// `PUT [base]/[type]?criteria`: conditional update. No match creates the resource (`201`),
    /// one match updates it (`200`), several fail with `412`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if `criteria` is empty; [`Error::PreconditionFailed`] when the
    /// criteria match several resources (or `If-Match` is stale).
    pub async fn conditional_update<R: FhirResource>(
        &self,
        resource: &R,
        criteria: &SearchParams,
        options: Option<UpdateOptions>,
    ) -> Result<Response<R>> {
        let options = options.unwrap_or_default();
        let url = self.conditional_update_url::<R>(criteria)?;
        let spec = self.put_spec(resource, url, &options, prefer(options.return_outcome))?;
        let raw = self.inner.execute(spec).await?;
        let target = WriteTarget {
            id: None,
            criteria: Some(criteria),
        };
        self.written(Interaction::Update, raw, target).await
    }

    /// `PATCH [base]/[type]/[id]` with a JSON Patch document. Retried only with
    /// [`UpdateOptions::if_match`] (a repeated unguarded patch could apply twice).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an invalid id or an empty patch; [`Error::InvalidResource`]
    /// when the patch does not apply; [`Error::PreconditionFailed`] for a stale `If-Match`.
    pub async fn patch<R: FhirResource>(
        &self,
        id: &str,
        operations: &[PatchOperation],
        options: Option<UpdateOptions>,
    ) -> Result<Response<R>> {
        let options = options.unwrap_or_default();
        let spec =
            self.patch_spec::<R>(id, operations, &options, prefer(options.return_outcome))?;
        let raw = self.inner.execute(spec).await?;
        let target = WriteTarget {
            id: Some(id),
            criteria: None,
        };
        self.written(Interaction::Patch, raw, target).await
    }

    /// The `PATCH` of `[type]/[id]` with `operations`, asking for `prefer` (`return=…`).
    pub(crate) fn patch_spec<R: FhirResource>(
        &self,
        id: &str,
        operations: &[PatchOperation],
        options: &UpdateOptions,
        prefer: &str,
    ) -> Result<RequestSpec> {
        check_id(id, "the id", Interaction::Patch)?;
        if operations.is_empty() {
            return Err(Error::InvalidInput {
                interaction: Interaction::Patch,
                reason: "a JSON Patch needs at least one operation".into(),
            });
        }
        let ty = R::TYPE.as_str();
        let body = serde_json::to_vec(operations).map_err(|e| Error::Encode {
            interaction: Interaction::Patch,
            resource_type: "JSON Patch".into(),
            source: carebridge_http::JsonError::new(&e),
        })?;
        let mut spec = RequestSpec::new(
            Interaction::Patch,
            Some(ty),
            Method::PATCH,
            self.inner.url(&[ty, id]),
        )
        .body(Bytes::from(body), JSON_PATCH)
        .header(PREFER, prefer)?
        .idempotent(options.if_match.is_some());
        if let Some(version) = &options.if_match {
            spec = spec.header(IF_MATCH, &etag_for_version(version))?;
        }
        Ok(spec)
    }

    /// `DELETE [base]/[type]/[id]`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an invalid id; [`Error::NotFound`] when the server reports an
    /// unknown id (many servers answer success instead); [`Error::PreconditionFailed`] for a
    /// stale `If-Match`; [`Error::Conflict`] when references prevent the delete.
    pub async fn delete<R: FhirResource>(
        &self,
        id: &str,
        options: Option<DeleteOptions>,
    ) -> Result<Response<()>> {
        let options = options.unwrap_or_default();
        check_id(id, "the id", Interaction::Delete)?;
        let ty = R::TYPE.as_str();
        let mut spec = RequestSpec::new(
            Interaction::Delete,
            Some(ty),
            Method::DELETE,
            self.inner.url(&[ty, id]),
        );
        if let Some(version) = &options.if_match {
            spec = spec.header(IF_MATCH, &etag_for_version(version))?;
        }
        let raw = self.inner.execute(spec).await?;
        Ok(Response::from_headers(raw.status, &raw.headers, ()))
    }

    /// `DELETE [base]/[type]?criteria`: deletes the resource the criteria match.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if `criteria` is empty; [`Error::PreconditionFailed`] when they
    /// match several resources and the server deletes only single matches.
    pub async fn conditional_delete<R: FhirResource>(
        &self,
        criteria: &SearchParams,
    ) -> Result<Response<()>> {
        if criteria.is_empty() {
            return Err(Error::InvalidInput {
                interaction: Interaction::Delete,
                reason: "conditional delete needs search criteria".into(),
            });
        }
        let ty = R::TYPE.as_str();
        let url = Self::with_criteria(self.inner.url(&[ty]), criteria);
        let raw = self
            .inner
            .execute(RequestSpec::new(
                Interaction::Delete,
                Some(ty),
                Method::DELETE,
                url,
            ))
            .await?;
        Ok(Response::from_headers(raw.status, &raw.headers, ()))
    }

    pub(crate) fn search_spec(
        &self,
        ty: Option<&str>,
        params: &SearchParams,
        method: SearchMethod,
    ) -> RequestSpec {
        let segments: Vec<&str> = ty.into_iter().collect();
        match method {
            SearchMethod::Post => {
                let mut path = segments;
                path.push("_search");
                RequestSpec::new(Interaction::Search, ty, Method::POST, self.inner.url(&path))
                    .body(Bytes::from(params.to_query_string()), FORM)
                    .idempotent(true)
            }
            SearchMethod::Get => {
                let mut url = self.inner.url(&segments);
                if !params.is_empty() {
                    url.set_query(Some(&params.to_query_string()));
                }
                RequestSpec::new(Interaction::Search, ty, Method::GET, url)
            }
        }
    }

    /// Searches `[type]` and streams the matches across pages, following `next` links lazily
    /// (only on the configured origin). `_include`d resources are on the pages:
    /// [`Pager::into_pages`], [`Page::included`](crate::Page::included).
    ///
    /// Errors (HTTP, decode, a foreign `next` link) arrive as stream items.
    pub fn search<R: FhirResource>(
        &self,
        params: SearchParams,
        options: Option<SearchOptions>,
    ) -> Pager<R> {
        let options = options.unwrap_or_default();
        let spec = self.search_spec(Some(R::TYPE.as_str()), &params, options.method);
        Pager::new(Pages::start(self.clone(), spec, decode_search_page::<R>))
    }

    /// Searches across all types (`GET [base]?params`, or `POST [base]/_search`), e.g. with
    /// `_type=Patient,Observation`.
    pub fn search_system(
        &self,
        params: SearchParams,
        options: Option<SearchOptions>,
    ) -> Pager<Resource> {
        let options = options.unwrap_or_default();
        let spec = self.search_spec(None, &params, options.method);
        Pager::new(Pages::start(
            self.clone(),
            spec,
            decode_search_page::<Resource>,
        ))
    }

    /// Continues a search of `[type]` from a `next` link saved from [`Page::next_link`](crate::Page::next_link).
    /// The link must be on the configured origin, or the stream yields [`Error::ForeignLink`].
    pub fn resume_search<R: FhirResource>(&self, next_link: &str) -> Pager<R> {
        Pager::new(Pages::resume(
            self.clone(),
            Interaction::Search,
            Some(R::TYPE.as_str().to_owned()),
            next_link.to_owned(),
            decode_search_page::<R>,
        ))
    }

    /// The number of `[type]` resources matching `params` (`_summary=count`, `Bundle.total`).
    ///
    /// # Errors
    /// The search errors; [`Error::UnexpectedResponse`] if the server reports no total.
    pub async fn count<R: FhirResource>(&self, params: SearchParams) -> Result<u64> {
        let params = params.summary(Summary::Count);
        let spec = self.search_spec(Some(R::TYPE.as_str()), &params, SearchMethod::Get);
        let raw = self.inner.execute(spec).await?;
        let page = decode_search_page::<R>(Interaction::Search, Some(R::TYPE.as_str()), &raw.body)?;
        page.total().ok_or_else(|| Error::UnexpectedResponse {
            interaction: Interaction::Search,
            reason: "the searchset has no total".into(),
        })
    }

    fn history_spec(
        &self,
        segments: &[&str],
        ty: Option<&str>,
        options: &HistoryOptions,
    ) -> RequestSpec {
        let mut url = self.inner.url(segments);
        let mut params = SearchParams::new();
        if let Some(count) = options.count {
            params = params.count(count);
        }
        if let Some(since) = &options.since {
            params = params.param("_since", since.as_str());
        }
        if !params.is_empty() {
            url.set_query(Some(&params.to_query_string()));
        }
        RequestSpec::new(Interaction::History, ty, Method::GET, url)
    }

    /// `GET [base]/[type]/[id]/_history`: every version of one resource, newest first, including
    /// its deletion if the server records one.
    pub fn history<R: FhirResource>(
        &self,
        id: &str,
        options: Option<HistoryOptions>,
    ) -> Pager<HistoryEntry<R>> {
        let ty = R::TYPE.as_str();
        if let Err(e) = check_id(id, "the id", Interaction::History) {
            return Pager::new(Pages::failed(
                self.clone(),
                Interaction::History,
                e,
                decode_history_page::<R>,
            ));
        }
        let spec = self.history_spec(
            &[ty, id, "_history"],
            Some(ty),
            &options.unwrap_or_default(),
        );
        Pager::new(Pages::start(self.clone(), spec, decode_history_page::<R>))
    }

    /// `GET [base]/[type]/_history`: changes to every resource of a type.
    pub fn type_history<R: FhirResource>(
        &self,
        options: Option<HistoryOptions>,
    ) -> Pager<HistoryEntry<R>> {
        let ty = R::TYPE.as_str();
        let spec = self.history_spec(&[ty, "_history"], Some(ty), &options.unwrap_or_default());
        Pager::new(Pages::start(self.clone(), spec, decode_history_page::<R>))
    }

    async fn post_bundle(
        &self,
        interaction: Interaction,
        kind: &str,
        request: &BatchRequest,
    ) -> Result<Response<BatchResponse>> {
        let body = request.to_body(kind, interaction)?;
        let spec = RequestSpec::new(interaction, None, Method::POST, self.inner.url(&[]))
            .body(body, FHIR_JSON)
            .header(PREFER, RETURN_REPRESENTATION)?
            // Searches and conditional writes only: sending it again changes nothing more.
            .idempotent(request.is_idempotent());
        let raw = self.inner.execute(spec).await?;
        let parsed = BatchResponse::parse(interaction, request, &raw.body)?;
        Ok(Response::from_headers(raw.status, &raw.headers, parsed))
    }

    /// `POST [base]` with a `transaction` Bundle: all entries succeed together or none does.
    /// The response has one `Ok` entry per request entry, in order. Retried like other
    /// idempotent requests when [`BatchRequest::is_idempotent`] (every entry a read, search,
    /// update, delete or conditional create); otherwise sent once.
    ///
    /// # Errors
    /// The error of the failing entry as the server reports it for the whole transaction
    /// ([`Error::InvalidResource`], [`Error::NotFound`], [`Error::PreconditionFailed`], …);
    /// [`Error::UnexpectedResponse`] if the response does not answer every entry.
    pub async fn transaction(&self, request: &BatchRequest) -> Result<Response<BatchResponse>> {
        self.post_bundle(Interaction::Transaction, "transaction", request)
            .await
    }

    /// `POST [base]` with a `batch` Bundle: entries succeed or fail independently; each failure
    /// is an `Err` entry in the response. Retried like other idempotent requests when
    /// [`BatchRequest::is_idempotent`]; otherwise sent once.
    ///
    /// # Errors
    /// Errors of the request as a whole (transport, auth, a rejected Bundle);
    /// [`Error::UnexpectedResponse`] if the response does not answer every entry.
    pub async fn batch(&self, request: &BatchRequest) -> Result<Response<BatchResponse>> {
        self.post_bundle(Interaction::Batch, "batch", request).await
    }

    /// `GET [base]/metadata`: the server's CapabilityStatement, after checking that it speaks
    /// FHIR 4.0.x.
    ///
    /// # Errors
    /// [`Error::UnsupportedFhirVersion`] when `fhirVersion` is not `4.0.x`; the usual HTTP,
    /// transport and decode errors.
    pub async fn capabilities(&self) -> Result<Response<CapabilityStatement>> {
        let url = self.inner.url(&["metadata"]);
        let raw = self
            .inner
            .execute(RequestSpec::new(
                Interaction::Capabilities,
                Some("CapabilityStatement"),
                Method::GET,
                url,
            ))
            .await?;
        let version = probe(&raw.body)
            .and_then(|i| i.fhir_version)
            .unwrap_or_default();
        if !(version == "4.0" || version.starts_with("4.0.")) {
            return Err(Error::UnsupportedFhirVersion { version });
        }
        Self::typed(Interaction::Capabilities, "CapabilityStatement", raw)
    }

    /// Invokes a named operation and decodes its output as `O` (`OperationOutcome` for
    /// `$validate`, `Bundle` for `$everything`, `Parameters`, …).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an invalid operation name or id; the usual HTTP, transport and
    /// decode errors; [`Error::UnexpectedResponse`] if the output is not an `O`.
    pub async fn operation<O: FhirResource>(
        &self,
        request: OperationRequest,
    ) -> Result<Response<O>> {
        let name = &request.name;
        check_operation_name(name)?;
        let op = format!("${name}");
        let (mut url, ty) = match &request.level {
            OperationLevel::System => (self.inner.url(&[&op]), None),
            OperationLevel::Type(ty) => (self.inner.url(&[ty, &op]), Some(ty.as_str())),
            OperationLevel::Instance(ty, id) => {
                check_id(id, "the id", Interaction::Operation)?;
                (self.inner.url(&[ty, id, &op]), Some(ty.as_str()))
            }
        };
        if !request.params.is_empty() {
            url.set_query(Some(&request.params.to_query_string()));
        }
        let spec = match &request.body {
            Some(body) => RequestSpec::new(Interaction::Operation, ty, Method::POST, url)
                .body(body.clone(), FHIR_JSON)
                .idempotent(request.idempotent),
            None => RequestSpec::new(Interaction::Operation, ty, Method::GET, url),
        };
        let raw = self.inner.execute(spec).await?;
        Self::typed(Interaction::Operation, O::TYPE.as_str(), raw)
    }

    /// `POST [base]/[type]/$validate` with `resource`: the server's validation verdict. A
    /// resource with errors is not an `Err`: inspect the returned `OperationOutcome`'s issues
    /// (servers that answer `400`/`422` instead produce [`Error::InvalidResource`] with the
    /// outcome attached).
    ///
    /// # Errors
    /// As [`operation`](Self::operation).
    pub async fn validate<R: FhirResource>(
        &self,
        resource: &R,
    ) -> Result<Response<OperationOutcome>> {
        let request = OperationRequest::on_type::<R>("validate")
            .with_resource(resource)?
            .idempotent();
        self.operation::<OperationOutcome>(request).await
    }
}
