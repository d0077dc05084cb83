//! Paging: [`Pager`] streams items across pages, [`Pages`] streams whole pages.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use carebridge_fhir_model::Resource;
use chrono::{DateTime, Utc};
use futures::Stream;
use http::Method;
use serde::de::DeserializeOwned;

use crate::bundle::{decode_entry, parse_instant, raw_type, RawBundle};
use crate::error::Interaction;
use crate::response::version_from_etag;
use crate::transport::RequestSpec;
use crate::{Error, FhirClient, Result};

/// One page of a search or history: the items, the included resources, the total and the link
/// to the next page.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    items: Vec<T>,
    included: Vec<Resource>,
    total: Option<u64>,
    next: Option<String>,
}

impl<T> Page<T> {
    /// The items: search matches of the searched type, or history entries.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// Consumes the page, returning its items.
    pub fn into_items(self) -> Vec<T> {
        self.items
    }

    /// Resources added by `_include`/`_revinclude` (search mode `include`) and any other entries
    /// that are not matches of the searched type.
    pub fn included(&self) -> &[Resource] {
        &self.included
    }

    /// `Bundle.total`: the number of matches across all pages, if the server reported it.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// The `next` link, if there is a further page. Resume later with
    /// [`FhirClient::resume_search`].
    pub fn next_link(&self) -> Option<&str> {
        self.next.as_deref()
    }
}

/// One entry of a `_history` page: a version of a resource, or its deletion.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry<R> {
    resource: Option<R>,
    method: Option<String>,
    status: Option<String>,
    version_id: Option<String>,
    last_modified: Option<DateTime<Utc>>,
    full_url: Option<String>,
}

impl<R> HistoryEntry<R> {
    /// The version's content; `None` for a deletion.
    pub fn resource(&self) -> Option<&R> {
        self.resource.as_ref()
    }

    /// Takes the version's content.
    pub fn into_resource(self) -> Option<R> {
        self.resource
    }

    /// `request.method` of the change (`POST`, `PUT`, `PATCH`, `DELETE`), if reported.
    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }

    /// Whether this entry records a deletion.
    pub fn is_deletion(&self) -> bool {
        self.method.as_deref() == Some("DELETE") || self.resource.is_none()
    }

    /// `response.status` as reported (`201 Created`, `200`, …).
    pub fn status(&self) -> Option<&str> {
        self.status.as_deref()
    }

    /// The version id, from `response.etag`.
    pub fn version_id(&self) -> Option<&str> {
        self.version_id.as_deref()
    }

    /// `response.lastModified`.
    pub fn last_modified(&self) -> Option<DateTime<Utc>> {
        self.last_modified
    }

    /// `fullUrl`.
    pub fn full_url(&self) -> Option<&str> {
        self.full_url.as_deref()
    }
}

/// Turns a response body into a page.
pub(crate) type Decoder<T> = fn(Interaction, Option<&str>, &[u8]) -> Result<Page<T>>;

/// Search pages: entries whose resource is of `expected` type (or any type when `None`) and whose
/// search mode is `match` (or absent) are items; everything else is included.
pub(crate) fn decode_search_page<T: DeserializeOwned>(
    interaction: Interaction,
    expected: Option<&str>,
    body: &[u8],
) -> Result<Page<T>> {
    let bundle = RawBundle::parse(interaction, body)?;
    let mut items = Vec::new();
    let mut included = Vec::new();
    for (index, entry) in bundle.entry.iter().enumerate() {
        let Some(raw) = entry.resource else { continue };
        let mode = entry.search.as_ref().and_then(|s| s.mode.as_deref());
        let ty = raw_type(raw);
        let is_match =
            mode.is_none_or(|m| m == "match") && expected.is_none_or(|e| ty.as_deref() == Some(e));
        if is_match {
            items.push(decode_entry::<T>(
                interaction,
                expected.unwrap_or("Resource"),
                index,
                raw,
            )?);
        } else {
            included.push(decode_entry::<Resource>(
                interaction,
                "Resource",
                index,
                raw,
            )?);
        }
    }
    Ok(Page {
        items,
        included,
        total: bundle.total,
        next: bundle.link("next").map(str::to_owned),
    })
}

/// History pages: every entry is an item, with or without a resource.
pub(crate) fn decode_history_page<T: DeserializeOwned>(
    interaction: Interaction,
    expected: Option<&str>,
    body: &[u8],
) -> Result<Page<HistoryEntry<T>>> {
    let bundle = RawBundle::parse(interaction, body)?;
    let mut items = Vec::with_capacity(bundle.entry.len());
    for (index, entry) in bundle.entry.iter().enumerate() {
        let resource = match entry.resource {
            Some(raw) => Some(decode_entry::<T>(
                interaction,
                expected.unwrap_or("Resource"),
                index,
                raw,
            )?),
            None => None,
        };
        let response = entry.response.as_ref();
        items.push(HistoryEntry {
            resource,
            method: entry.request.as_ref().and_then(|r| r.method.clone()),
            status: response.and_then(|r| r.status.clone()),
            version_id: response
                .and_then(|r| r.etag.as_deref())
                .and_then(version_from_etag),
            last_modified: response
                .and_then(|r| r.last_modified.as_deref())
                .and_then(parse_instant),
            full_url: entry.full_url.clone(),
        });
    }
    Ok(Page {
        items,
        included: Vec::new(),
        total: bundle.total,
        next: bundle.link("next").map(str::to_owned),
    })
}

type PageFuture<T> = Pin<Box<dyn Future<Output = Result<Page<T>>> + Send>>;

enum State<T> {
    Start(RequestSpec),
    Next(String),
    Fetching(PageFuture<T>),
    Done,
}

/// A stream of whole pages ([`Page`]), fetched lazily: the next page is requested only when
/// polled. `next` links are followed only on the client's configured origin; a link elsewhere
/// ends the stream with [`Error::ForeignLink`].
pub struct Pages<T> {
    client: FhirClient,
    interaction: Interaction,
    resource_type: Option<String>,
    decoder: Decoder<T>,
    state: State<T>,
    last_link: Option<String>,
}

impl<T> std::fmt::Debug for Pages<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pages")
            .field("interaction", &self.interaction)
            .field("resource_type", &self.resource_type)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Pages<T> {
    pub(crate) fn start(client: FhirClient, spec: RequestSpec, decoder: Decoder<T>) -> Self {
        Self {
            client,
            interaction: spec.interaction,
            resource_type: spec.resource_type.clone(),
            decoder,
            state: State::Start(spec),
            last_link: None,
        }
    }

    pub(crate) fn resume(
        client: FhirClient,
        interaction: Interaction,
        resource_type: Option<String>,
        link: String,
        decoder: Decoder<T>,
    ) -> Self {
        Self {
            client,
            interaction,
            resource_type,
            decoder,
            state: State::Next(link),
            last_link: None,
        }
    }

    /// An empty stream that yields `error` once.
    pub(crate) fn failed(
        client: FhirClient,
        interaction: Interaction,
        error: Error,
        decoder: Decoder<T>,
    ) -> Self {
        let failed: PageFuture<T> = Box::pin(async move { Err(error) });
        Self {
            client,
            interaction,
            resource_type: None,
            decoder,
            state: State::Fetching(failed),
            last_link: None,
        }
    }

    fn fetch(&self, spec: RequestSpec) -> PageFuture<T> {
        let client = self.client.clone();
        let decoder = self.decoder;
        Box::pin(async move {
            let interaction = spec.interaction;
            let expected = spec.resource_type.clone();
            let response = client.inner.execute(spec).await?;
            decoder(interaction, expected.as_deref(), &response.body)
        })
    }
}

impl<T: Send + 'static> Stream for Pages<T> {
    type Item = Result<Page<T>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match std::mem::replace(&mut this.state, State::Done) {
                State::Done => return Poll::Ready(None),
                State::Start(spec) => this.state = State::Fetching(this.fetch(spec)),
                State::Next(link) => {
                    let url = match this.client.inner.resolve_link("next", &link) {
                        Ok(url) => url,
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    };
                    this.last_link = Some(link);
                    let spec = RequestSpec::new(
                        this.interaction,
                        this.resource_type.as_deref(),
                        Method::GET,
                        url,
                    );
                    this.state = State::Fetching(this.fetch(spec));
                }
                State::Fetching(mut future) => match future.as_mut().poll(cx) {
                    Poll::Pending => {
                        this.state = State::Fetching(future);
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Poll::Ready(Ok(page)) => {
                        // A server repeating the same next link would loop forever: stop instead.
                        this.state = match &page.next {
                            Some(next) if this.last_link.as_deref() != Some(next.as_str()) => {
                                State::Next(next.clone())
                            }
                            _ => State::Done,
                        };
                        return Poll::Ready(Some(Ok(page)));
                    }
                },
            }
        }
    }
}

/// A stream of items across all pages of a search or history, fetched lazily.
///
/// Implements [`futures::Stream`]`<Item = Result<T>>`: use `StreamExt::next` or
/// `TryStreamExt::try_collect`. For whole pages (totals, included resources, the `next` link to
/// resume from) use [`Pager::into_pages`] before polling.
pub struct Pager<T> {
    pages: Pages<T>,
    buffer: VecDeque<T>,
    total: Option<u64>,
}

impl<T> std::fmt::Debug for Pager<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pager")
            .field("pages", &self.pages)
            .field("buffered", &self.buffer.len())
            .field("total", &self.total)
            .finish()
    }
}

// Items are moved out of the buffer, never pinned in place.
impl<T> Unpin for Pager<T> {}

impl<T: Send + 'static> Pager<T> {
    pub(crate) fn new(pages: Pages<T>) -> Self {
        Self {
            pages,
            buffer: VecDeque::new(),
            total: None,
        }
    }

    /// The stream of whole pages. Items this pager already buffered (from a page partly
    /// consumed) are not repeated: call it before polling.
    pub fn into_pages(self) -> Pages<T> {
        self.pages
    }

    /// `Bundle.total` of the most recent page, once one has been fetched.
    pub fn total(&self) -> Option<u64> {
        self.total
    }
}

impl<T: Send + 'static> Stream for Pager<T> {
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.buffer.pop_front() {
                return Poll::Ready(Some(Ok(item)));
            }
            match Pin::new(&mut this.pages).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(page))) => {
                    if page.total.is_some() {
                        this.total = page.total;
                    }
                    this.buffer.extend(page.items);
                }
            }
        }
    }
}
