//! What a create, update or patch was answered with: the resource, or an `OperationOutcome`
//! (or nothing) and where the written resource lives.
//!
//! FHIR R4 (`http.html`, "Managing Return Content") lets a client ask for the answer of a
//! write with `Prefer: return=minimal` (no body), `return=representation` (the resource) or
//! `return=OperationOutcome` (an `OperationOutcome` with the hints and warnings about the
//! write, instead of the resource). Servers send an `OperationOutcome` for a successful write
//! only when asked, and several answer a write without the headers that name the resource
//! (the Microsoft FHIR server answered a conditional create that found its match with `200`, no
//! body and no `Location` before its PR 4995; the test server answers it with an
//! `OperationOutcome`, an `ETag` and no `Location`). Hence:
//!
//! - [`FhirClient::create`] & co. return the resource. They ask for
//!   `return=representation` (one request), or for `return=OperationOutcome` with
//!   `return_outcome` and then read the resource back from what the answer names.
//! - [`FhirClient::create_for_outcome`] & co. return a [`WriteSummary`]: the id, the version
//!   and the `OperationOutcome`, never the resource, so they never read it back.

use carebridge_fhir_model::resources::OperationOutcome;
use carebridge_fhir_model::FhirResource;
use http::HeaderMap;

use crate::client::{CreateOptions, FhirClient, UpdateOptions, RETURN_OUTCOME};
use crate::error::Interaction;
use crate::pager::decode_search_page;
use crate::patch::PatchOperation;
use crate::response::{parse_location, version_from_etag, Response};
use crate::search::{SearchMethod, SearchParams};
use crate::transport::{decode, probe, RawResponse};
use crate::{Error, Result};

/// What a server reported about a write, without the written resource: the value of the
/// [`Response`] of [`FhirClient::create_for_outcome`], [`update_for_outcome`],
/// [`conditional_update_for_outcome`] and [`patch_for_outcome`].
///
/// The version ([`Response::version_id`]), the `ETag`, the status (`201` created, `200`
/// updated or found by a conditional create) and the server's `OperationOutcome` about the
/// write ([`Response::outcome`]) are on the enclosing [`Response`].
///
/// [`update_for_outcome`]: FhirClient::update_for_outcome
/// [`conditional_update_for_outcome`]: FhirClient::conditional_update_for_outcome
/// [`patch_for_outcome`]: FhirClient::patch_for_outcome
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteSummary {
    id: Option<String>,
}

impl WriteSummary {
    /// The logical id of the written resource: from the `Location` (or `Content-Location`)
    /// header, else from the resource body when the server sent one anyway, else the id the
    /// request addressed (update, patch), else, for a conditional create or update, the one
    /// resource its criteria match. `None` only when none of these names it.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

/// What identifies the written resource when the answer carries no resource.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WriteTarget<'a> {
    /// The id the request addressed (update, patch).
    pub(crate) id: Option<&'a str>,
    /// The criteria of a conditional create (`If-None-Exist`) or conditional update.
    pub(crate) criteria: Option<&'a SearchParams>,
}

/// The body of the answer to a write.
enum Body {
    /// None (`return=minimal`, or a server that sends none).
    Empty,
    /// An `OperationOutcome` (`None` when it could not be decoded).
    Outcome(Option<Box<OperationOutcome>>),
    /// Anything else: the written resource.
    Resource,
}

fn body_of(interaction: Interaction, resource_type: &str, raw: &RawResponse) -> Body {
    if raw.body.iter().all(u8::is_ascii_whitespace) {
        return Body::Empty;
    }
    let is_outcome = resource_type != "OperationOutcome"
        && probe(&raw.body).and_then(|i| i.resource_type).as_deref() == Some("OperationOutcome");
    if !is_outcome {
        return Body::Resource;
    }
    match decode::<OperationOutcome>(interaction, "OperationOutcome", &raw.body) {
        Ok(outcome) => Body::Outcome(Some(Box::new(outcome))),
        Err(error) => {
            // The server accepted the write: an outcome that cannot be read does not fail it.
            tracing::warn!(
                fhir.interaction = %interaction,
                error = %error,
                "the OperationOutcome of an accepted write could not be decoded"
            );
            Body::Outcome(None)
        }
    }
}

/// The id and version the headers of the answer name: `Location` / `Content-Location`
/// (`…/[type]/[id]/_history/[vid]`), else `known_id` with the `ETag`'s version.
fn located(headers: &HeaderMap, known_id: Option<&str>) -> Option<(String, Option<String>)> {
    headers
        .get(http::header::LOCATION)
        .or_else(|| headers.get(http::header::CONTENT_LOCATION))
        .and_then(|v| v.to_str().ok())
        .and_then(|l| parse_location(l).map(|(_, id, vid)| (id.to_owned(), vid.map(str::to_owned))))
        .or_else(|| {
            let etag = headers
                .get(http::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .and_then(version_from_etag);
            known_id.map(|id| (id.to_owned(), etag))
        })
}

impl FhirClient {
    /// The resource a write was answered with; or, when the answer is an `OperationOutcome`
    /// (kept as [`Response::outcome`]) or empty, the resource read back from what the answer
    /// and the request name.
    pub(crate) async fn written<R: FhirResource>(
        &self,
        interaction: Interaction,
        raw: RawResponse,
        target: WriteTarget<'_>,
    ) -> Result<Response<R>> {
        let outcome = match body_of(interaction, R::TYPE.as_str(), &raw) {
            Body::Resource => return Self::typed(interaction, R::TYPE.as_str(), raw),
            Body::Outcome(outcome) => outcome,
            Body::Empty => None,
        };
        let found = match located(&raw.headers, target.id) {
            Some((id, Some(vid))) => {
                let read = self.vread::<R>(&id, &vid).await?;
                Some((read.value, read.version_id))
            }
            Some((id, None)) => {
                let read = self.read::<R>(&id).await?;
                Some((read.value, read.version_id))
            }
            None => match target.criteria {
                Some(criteria) => self.find_one::<R>(criteria).await?,
                None => None,
            },
        };
        let Some((value, version)) = found else {
            return Err(Error::UnexpectedResponse {
                interaction,
                reason: "the server accepted the write but named no resource to read back".into(),
            });
        };
        let mut response = Response::from_headers(raw.status, &raw.headers, value);
        response.fill_version(|| version);
        response.outcome = outcome;
        Ok(response)
    }

    /// What a write was answered with, without reading anything back (only a conditional write
    /// whose answer names no resource searches its criteria).
    async fn summarized<R: FhirResource>(
        &self,
        interaction: Interaction,
        raw: RawResponse,
        target: WriteTarget<'_>,
    ) -> Response<WriteSummary> {
        let (outcome, body_id, body_version) = match body_of(interaction, R::TYPE.as_str(), &raw) {
            Body::Resource => {
                probe(&raw.body).map_or((None, None, None), |info| (None, info.id, info.version_id))
            }
            Body::Outcome(outcome) => (outcome, None, None),
            Body::Empty => (None, None, None),
        };
        let mut response =
            Response::from_headers(raw.status, &raw.headers, WriteSummary::default());
        let mut id = response
            .location_id()
            .map(str::to_owned)
            .or(body_id)
            .or_else(|| target.id.map(str::to_owned));
        let mut version = body_version;
        if let (None, Some(criteria)) = (&id, target.criteria) {
            match self.find_one::<R>(criteria).await {
                Ok(Some((found, found_version))) => {
                    id = found.id().map(str::to_owned);
                    version = version.or(found_version);
                }
                Ok(None) => {}
                // The write was accepted: not knowing its id does not fail it.
                Err(error) => tracing::warn!(
                    fhir.interaction = %interaction,
                    error = %error,
                    "the resource of an accepted conditional write could not be found"
                ),
            }
        }
        response.fill_version(|| version);
        response.value.id = id;
        response.outcome = outcome;
        response
    }

    /// The one `R` that `criteria` match, and its version, from the first page of a `POST
    /// [type]/_search` (the criteria stay out of URLs, as in `If-None-Exist`); `None` for no
    /// match or several.
    async fn find_one<R: FhirResource>(
        &self,
        criteria: &SearchParams,
    ) -> Result<Option<(R, Option<String>)>> {
        let ty = R::TYPE.as_str();
        let spec = self.search_spec(Some(ty), criteria, SearchMethod::Post);
        let raw = self.inner.execute(spec).await?;
        let mut items =
            decode_search_page::<R>(Interaction::Search, Some(ty), &raw.body)?.into_items();
        if items.len() != 1 {
            return Ok(None);
        }
        Ok(items.pop().map(|found| {
            let version = found
                .meta()
                .and_then(|m| m.version_id.as_ref())
                .and_then(|v| v.value())
                .cloned();
            (found, version)
        }))
    }

    /// `POST [base]/[type]` like [`create`](Self::create) (conditional with
    /// [`CreateOptions::if_none_exist`]), returning what the server reported about the write
    /// instead of the resource: its id ([`WriteSummary::id`]), version and `OperationOutcome`.
    ///
    /// Always sends `Prefer: return=OperationOutcome` ([`CreateOptions::return_outcome`] is
    /// not read) and never reads the resource back: a server that returns the resource anyway
    /// gives its id and version, and no outcome. Only a conditional create whose answer names
    /// no resource (no `Location`, no resource body: a server that found the match) searches
    /// its criteria once for the id. A write the server accepted never fails: an id that
    /// cannot be found is `None`.
    ///
    /// # Errors
    /// As [`create`](Self::create), for the write itself.
    pub async fn create_for_outcome<R: FhirResource>(
        &self,
        resource: &R,
        options: Option<CreateOptions>,
    ) -> Result<Response<WriteSummary>> {
        let options = options.unwrap_or_default();
        let spec = self.create_spec(resource, &options, RETURN_OUTCOME)?;
        let raw = self.inner.execute(spec).await?;
        let target = WriteTarget {
            id: None,
            criteria: options.if_none_exist.as_ref(),
        };
        Ok(self.summarized::<R>(Interaction::Create, raw, target).await)
    }

    /// `PUT [base]/[type]/[id]` like [`update`](Self::update), returning the id, version and
    /// `OperationOutcome` of the write instead of the resource (see
    /// [`create_for_outcome`](Self::create_for_outcome)). The id is the one updated; the
    /// version comes from the `ETag` or `Location` (`None` if the server sent neither).
    ///
    /// # Errors
    /// As [`update`](Self::update).
    pub async fn update_for_outcome<R: FhirResource>(
        &self,
        resource: &R,
        options: Option<UpdateOptions>,
    ) -> Result<Response<WriteSummary>> {
        let options = options.unwrap_or_default();
        let (url, id) = self.update_url(resource)?;
        let spec = self.put_spec(resource, url, &options, RETURN_OUTCOME)?;
        let raw = self.inner.execute(spec).await?;
        let target = WriteTarget {
            id: Some(id),
            criteria: None,
        };
        Ok(self.summarized::<R>(Interaction::Update, raw, target).await)
    }

    /// `PUT [base]/[type]?criteria` like [`conditional_update`](Self::conditional_update),
    /// returning the id, version and `OperationOutcome` of the write instead of the resource
    /// (see [`create_for_outcome`](Self::create_for_outcome)); an answer that names no
    /// resource searches the criteria once for the id.
    ///
    /// # Errors
    /// As [`conditional_update`](Self::conditional_update).
    pub async fn conditional_update_for_outcome<R: FhirResource>(
        &self,
        resource: &R,
        criteria: &SearchParams,
        options: Option<UpdateOptions>,
    ) -> Result<Response<WriteSummary>> {
        let options = options.unwrap_or_default();
        let url = self.conditional_update_url::<R>(criteria)?;
        let spec = self.put_spec(resource, url, &options, RETURN_OUTCOME)?;
        let raw = self.inner.execute(spec).await?;
        let target = WriteTarget {
            id: None,
            criteria: Some(criteria),
        };
        Ok(self.summarized::<R>(Interaction::Update, raw, target).await)
    }

    /// `PATCH [base]/[type]/[id]` like [`patch`](Self::patch), returning the id, version and
    /// `OperationOutcome` of the write instead of the resource (see
    /// [`create_for_outcome`](Self::create_for_outcome)).
    ///
    /// # Errors
    /// As [`patch`](Self::patch).
    pub async fn patch_for_outcome<R: FhirResource>(
        &self,
        id: &str,
        operations: &[PatchOperation],
        options: Option<UpdateOptions>,
    ) -> Result<Response<WriteSummary>> {
        let options = options.unwrap_or_default();
        let spec = self.patch_spec::<R>(id, operations, &options, RETURN_OUTCOME)?;
        let raw = self.inner.execute(spec).await?;
        let target = WriteTarget {
            id: Some(id),
            criteria: None,
        };
        Ok(self.summarized::<R>(Interaction::Patch, raw, target).await)
    }
}
