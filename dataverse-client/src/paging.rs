//! Paging ([`Pager`], following `@odata.nextLink`) and change tracking ([`DeltaStream`]).

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream, StreamExt};
use http::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;
use uuid::Uuid;

use crate::client::Req;
use crate::query::{Prefer, Query};
use crate::{DataverseClient, Error, Record, Result};

/// One page of a collection.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Page<T> {
    /// The records of this page.
    pub items: Vec<T>,
    /// `@odata.nextLink`, verbatim: pass it to [`DataverseClient::list_records_from_link`] to
    /// resume paging later.
    pub next_link: Option<String>,
    /// `@odata.count` (when the query asked for `$count=true`).
    pub count: Option<u64>,
    /// For a FetchXML query with more rows: the FetchXML of the next page (with its `page` and
    /// `paging-cookie` attributes set). Pass it to [`Query::fetch_xml`] and
    /// [`DataverseClient::list_records`] to resume paging later.
    pub next_fetch_xml: Option<String>,
}

#[derive(Deserialize)]
struct Envelope<T> {
    #[serde(default = "Vec::new")]
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink", default)]
    delta_link: Option<String>,
    #[serde(rename = "@odata.count", default)]
    count: Option<u64>,
    #[serde(rename = "@Microsoft.Dynamics.CRM.fetchxmlpagingcookie", default)]
    paging_cookie: Option<String>,
    #[serde(rename = "@Microsoft.Dynamics.CRM.morerecords", default)]
    more_records: Option<bool>,
}

enum Cursor {
    Url(Url),
    Link(String),
    /// The FetchXML of the next page.
    Fetch(String),
    Done,
}

type ErrorMap = fn(Error) -> Error;

/// Fetches `first`, then follows `@odata.nextLink` (only on the org origin), or, for a FetchXML
/// query (`fetch` holds its XML), the paging cookie. The cell receives the last
/// `@odata.deltaLink` seen.
fn envelopes<T: DeserializeOwned + Send + 'static>(
    client: DataverseClient,
    first: Result<Url>,
    label: String,
    prefer: Prefer,
    map_error: ErrorMap,
    delta_cell: Option<Arc<Mutex<Option<DeltaToken>>>>,
    fetch: Option<String>,
) -> BoxStream<'static, Result<Page<T>>> {
    let start = match first {
        Ok(url) => Cursor::Url(url),
        Err(e) => {
            return futures::stream::once(async move { Err(e) }).boxed();
        }
    };
    futures::stream::try_unfold((start, fetch), move |(cursor, fetch)| {
        let client = client.clone();
        let label = label.clone();
        let prefer = prefer.clone();
        let delta_cell = delta_cell.clone();
        async move {
            let url = match cursor {
                Cursor::Done => return Ok(None),
                Cursor::Url(url) => url,
                Cursor::Link(link) => client.same_origin_link(&link)?,
                Cursor::Fetch(xml) => client.url_for(
                    &label,
                    None,
                    None,
                    Some(&Query::fetch_xml(xml).to_query_string()),
                )?,
            };
            let mut req = Req::new(Method::GET, url, &label);
            req.prefer = prefer;
            let resp = client.send(req).await.map_err(map_error)?;
            // An empty body (Dataverse answers a delta link without changes this way) is an
            // empty page.
            let env: Envelope<T> = resp.json::<Option<Envelope<T>>>()?.unwrap_or(Envelope {
                value: Vec::new(),
                next_link: None,
                delta_link: None,
                count: None,
                paging_cookie: None,
                more_records: None,
            });
            if let (Some(cell), Some(link)) = (&delta_cell, &env.delta_link) {
                // Validate now so a foreign delta link is never persisted.
                client.same_origin_link(link)?;
                *cell.lock().unwrap_or_else(|e| e.into_inner()) = Some(DeltaToken(link.clone()));
            }
            let next_fetch = match &fetch {
                Some(xml) if env.more_records == Some(true) && crate::fetch::is_pageable(xml)? => {
                    if env.value.is_empty() {
                        return Err(Error::unexpected(
                            &format!("GET {label}"),
                            "an empty FetchXML page announced more records",
                        ));
                    }
                    let cookie = env
                        .paging_cookie
                        .as_deref()
                        .map(crate::fetch::parse_paging_cookie)
                        .transpose()?;
                    Some(crate::fetch::next_page(xml, cookie.as_ref())?)
                }
                _ => None,
            };
            let next = match (&env.next_link, &next_fetch) {
                (Some(link), _) => Cursor::Link(link.clone()),
                (None, Some(xml)) => Cursor::Fetch(xml.clone()),
                (None, None) => Cursor::Done,
            };
            let page = Page {
                items: env.value,
                next_link: env.next_link,
                count: env.count,
                next_fetch_xml: next_fetch.clone(),
            };
            Ok(Some((page, (next, next_fetch))))
        }
    })
    .boxed()
}

/// A lazily fetched collection: a [`Stream`] of records that follows `@odata.nextLink`.
///
/// Links are followed verbatim, and only when they point to the organization origin (scheme,
/// host and port); any other link ends the stream with [`Error::ForeignLink`] after the records
/// already received. Use [`into_pages`](Self::into_pages) for page-at-a-time access.
pub struct Pager<T> {
    pages: BoxStream<'static, Result<Page<T>>>,
    buffer: VecDeque<T>,
}

// `Pager` never pins a `T` (they sit in a `VecDeque`), so it is `Unpin` for any `T`.
impl<T> Unpin for Pager<T> {}

impl<T> fmt::Debug for Pager<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pager")
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

impl<T> Pager<T> {
    /// The pages not yet consumed (call before polling records; buffered records are dropped).
    pub fn into_pages(self) -> BoxStream<'static, Result<Page<T>>> {
        self.pages
    }
}

impl<T> Stream for Pager<T> {
    type Item = Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.buffer.pop_front() {
                return Poll::Ready(Some(Ok(item)));
            }
            match this.pages.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(page))) => this.buffer.extend(page.items),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// An opaque, persistable change-tracking position: the `@odata.deltaLink` Dataverse returned.
///
/// Store it (it serializes as a string) and pass it to [`DataverseClient::resume_changes`]
/// to receive only what changed since. It contains the column list and a token, no record data.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeltaToken(String);

impl DeltaToken {
    /// Wraps a stored delta link.
    pub fn new(delta_link: impl Into<String>) -> Self {
        Self(delta_link.into())
    }

    /// The delta link.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One change from a [`DeltaStream`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Change {
    /// A record created or updated since the token (all records on the first sync).
    NewOrUpdated(Record),
    /// A record deleted (or removed from the tracked set) since the token.
    Deleted {
        /// The record id.
        id: Uuid,
        /// Dataverse's `reason`, normally `deleted` (or `changed`).
        reason: Option<String>,
    },
}

/// A [`Stream`] of [`Change`]s; when it has ended, [`delta_token`](Self::delta_token) gives the
/// position to resume from.
pub struct DeltaStream {
    pages: BoxStream<'static, Result<Page<Value>>>,
    buffer: VecDeque<Value>,
    token: Arc<Mutex<Option<DeltaToken>>>,
    operation: String,
}

impl fmt::Debug for DeltaStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeltaStream")
            .field("operation", &self.operation)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

impl DeltaStream {
    /// The position to resume from: the `@odata.deltaLink` of the last page read. Before a new
    /// link arrives it is `None` for [`track_changes`](DataverseClient::track_changes) and the
    /// token passed in for [`resume_changes`](DataverseClient::resume_changes) (so an answer
    /// without changes and without a new link keeps the old position). Read the stream to the
    /// end, then persist this and resume with [`DataverseClient::resume_changes`].
    pub fn delta_token(&self) -> Option<DeltaToken> {
        self.token.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn classify(&self, item: Value) -> Result<Change> {
        let deleted = item
            .get("@odata.context")
            .and_then(Value::as_str)
            .is_some_and(|c| c.contains("$deletedEntity"));
        if deleted {
            let id = item
                .get("id")
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| {
                    Error::unexpected(&self.operation, "$deletedEntity without a GUID `id`")
                })?;
            let reason = item
                .get("reason")
                .and_then(Value::as_str)
                .map(str::to_owned);
            return Ok(Change::Deleted { id, reason });
        }
        match item {
            Value::Object(map) => Ok(Change::NewOrUpdated(Record(map))),
            _ => Err(Error::unexpected(
                &self.operation,
                "a delta `value` entry is not an object",
            )),
        }
    }
}

impl Stream for DeltaStream {
    type Item = Result<Change>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.buffer.pop_front() {
                return Poll::Ready(Some(this.classify(item)));
            }
            match this.pages.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(page))) => this.buffer.extend(page.items),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Maps the answers Dataverse gives for an unusable delta token to [`Error::DeltaTokenExpired`]:
/// `410 Gone`, or a 4xx whose message speaks of an expired / invalid delta token or version.
/// (Microsoft does not publish one dedicated error code for this.)
fn map_delta_error(error: Error) -> Error {
    let Some(se) = error.service_error() else {
        return error;
    };
    let message = se.message.as_deref().unwrap_or("").to_ascii_lowercase();
    let expired = se.status == 410
        || ((400..500).contains(&se.status)
            && se.status != 401
            && se.status != 403
            && se.status != 429
            && (message.contains("expire")
                || (message.contains("token") && message.contains("delta"))
                || message.contains("version is too old")));
    if !expired {
        return error;
    }
    match error {
        Error::NotFound(e)
        | Error::InvalidArgument(e)
        | Error::Service(e)
        | Error::ConcurrencyFailure(e) => Error::DeltaTokenExpired(e),
        other => other,
    }
}

fn keep(error: Error) -> Error {
    error
}

impl DataverseClient {
    /// Lists records: `GET {entity_set}?{query}`, following `@odata.nextLink` lazily.
    ///
    /// `T` is your row type, [`Record`] or `serde_json::Value`. Page size comes from
    /// [`Query::max_page_size`] (`Prefer: odata.maxpagesize`, Dataverse default 5000), repeated
    /// on every page request. FetchXML queries ([`Query::fetch_xml`]) are paged with the paging
    /// cookie Dataverse returns (`@Microsoft.Dynamics.CRM.fetchxmlpagingcookie`, asked for with
    /// `Prefer: odata.include-annotations`), or by page number when it returns none; the page
    /// size is the `count` attribute of `<fetch>`, and a query with `top` is not paged.
    ///
    /// Errors (bad `entity_set`, HTTP errors, [`Error::Decode`] with the JSON path such as
    /// `value[3].name`, [`Error::ForeignLink`]) arrive as `Err` items of the stream.
    pub fn list_records<T>(&self, entity_set: &str, query: &Query) -> Pager<T>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let qs = query.to_query_string();
        let first = self.url_for(entity_set, None, None, Some(&qs));
        let mut prefer = self.prefer_for_query(Some(query));
        if query.is_fetch_xml() {
            prefer.include_annotations = Some(crate::fetch::annotations_with_paging(
                prefer.include_annotations.as_deref(),
            ));
        }
        Pager {
            pages: envelopes(
                self.clone(),
                first,
                entity_set.to_owned(),
                prefer,
                keep,
                None,
                query.fetch_xml_text().map(str::to_owned),
            ),
            buffer: VecDeque::new(),
        }
    }

    /// Resumes paging from a saved [`Page::next_link`]; `label` names the entity set for
    /// tracing and errors, and `query` supplies the same `Prefer` options as the first call.
    ///
    /// The link is refused with [`Error::ForeignLink`] (as the first stream item) unless it is
    /// on the organization origin.
    pub fn list_records_from_link<T>(&self, label: &str, next_link: &str, query: &Query) -> Pager<T>
    where
        T: DeserializeOwned + Send + 'static,
    {
        Pager {
            pages: envelopes(
                self.clone(),
                self.same_origin_link(next_link),
                label.to_owned(),
                self.prefer_for_query(Some(query)),
                keep,
                None,
                None,
            ),
            buffer: VecDeque::new(),
        }
    }

    /// Starts change tracking on a table: `GET {entity_set}?$select=…` with
    /// `Prefer: odata.track-changes`. Yields every current record as [`Change::NewOrUpdated`];
    /// afterwards [`DeltaStream::delta_token`] holds the position for
    /// [`resume_changes`](Self::resume_changes).
    ///
    /// Change tracking must be enabled on the table. Dataverse rejects `$filter`, `$orderby`,
    /// `$expand` and `$top` here, so they give [`Error::InvalidInput`] before sending; use
    /// `$select` (and [`Query::max_page_size`]).
    pub fn track_changes(&self, entity_set: &str, query: &Query) -> DeltaStream {
        let first = if query.has_delta_unsupported_options() {
            Err(Error::invalid_input(
                "change-tracking query",
                "$filter, $orderby, $expand, $top and FetchXML are not supported with change tracking",
            ))
        } else {
            self.url_for(entity_set, None, None, Some(&query.to_query_string()))
        };
        let prefer = Prefer {
            track_changes: true,
            ..self.prefer_for_query(Some(query))
        };
        self.delta_stream(first, entity_set, prefer, None)
    }

    /// Continues change tracking from a stored [`DeltaToken`]: yields what was created, updated
    /// ([`Change::NewOrUpdated`]) or deleted ([`Change::Deleted`]) since, then offers a new token.
    ///
    /// Errors arrive as stream items: [`Error::DeltaTokenExpired`] when the token is too old
    /// (default retention 7 days; start again with [`track_changes`](Self::track_changes)),
    /// [`Error::ForeignLink`] if the token's link is not on this organization, and the common errors.
    pub fn resume_changes(&self, token: &DeltaToken) -> DeltaStream {
        let first = self.same_origin_link(token.as_str());
        let label = first
            .as_ref()
            .ok()
            .and_then(|u| u.path_segments()?.next_back().map(str::to_owned))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "(delta)".to_owned());
        let prefer = Prefer {
            track_changes: true,
            ..self.prefer_for_query(None)
        };
        self.delta_stream(first, &label, prefer, Some(token.clone()))
    }

    fn delta_stream(
        &self,
        first: Result<Url>,
        label: &str,
        prefer: Prefer,
        initial: Option<DeltaToken>,
    ) -> DeltaStream {
        let token = Arc::new(Mutex::new(initial));
        DeltaStream {
            pages: envelopes(
                self.clone(),
                first,
                label.to_owned(),
                prefer,
                map_delta_error,
                Some(token.clone()),
                None,
            ),
            buffer: VecDeque::new(),
            token,
            operation: format!("GET {label}"),
        }
    }
}
