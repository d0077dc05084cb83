//! `$batch`: several operations in one `multipart/mixed` request, with atomic change sets.

use std::fmt::Write as _;

use http::header::CONTENT_TYPE;
use http::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use carebridge_http::parse_retry_after;

use crate::client::{decode_json, parse_entity_id, Req};
use crate::error::ServiceError;
use crate::query::{check_identifier, Query, RecordKey};
use crate::records::UpsertMode;
use crate::{DataverseClient, Error, Result};

/// Dataverse's limit on operations in one `$batch` (change-set members counted one by one).
pub const MAX_BATCH_OPERATIONS: usize = 1000;

#[derive(Clone, Debug, PartialEq)]
enum Target {
    /// Relative to the API base, already encoded: `accounts(…)?$select=name`.
    Path(String),
    /// A Content-ID reference: `$1` (plus an optional suffix).
    Ref(String),
}

/// One operation inside a [`BatchRequest`].
///
/// Build it with the constructors (which mirror the [`DataverseClient`] methods) and add it to
/// a batch or a change set.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchOperation {
    method: Method,
    target: Target,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

fn json_bytes(value: &(impl Serialize + ?Sized)) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| {
        Error::invalid_input(
            "batch operation body",
            format!("cannot serialize to JSON: {e}"),
        )
    })
}

fn path(entity_set: &str, key: Option<&RecordKey>, query: Option<&Query>) -> Result<String> {
    check_identifier("entity_set", entity_set)?;
    let mut s = entity_set.to_owned();
    if let Some(key) = key {
        let _ = write!(s, "({})", key.to_segment()?);
    }
    if let Some(q) = query {
        let qs = q.to_query_string();
        if !qs.is_empty() {
            s.push('?');
            s.push_str(&qs);
        }
    }
    Ok(s)
}

impl BatchOperation {
    fn new(method: Method, target: Target) -> Self {
        Self {
            method,
            target,
            headers: Vec::new(),
            body: None,
        }
    }

    fn with_json(mut self, body: &(impl Serialize + ?Sized)) -> Result<Self> {
        self.body = Some(json_bytes(body)?);
        Ok(self)
    }

    /// `GET {entity_set}({id})[?query]`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a malformed `entity_set`.
    pub fn get(entity_set: &str, id: Uuid, query: Option<&Query>) -> Result<Self> {
        Ok(Self::new(
            Method::GET,
            Target::Path(path(entity_set, Some(&RecordKey::Id(id)), query)?),
        ))
    }

    /// `GET {entity_set}?query` (first page only).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a malformed `entity_set`.
    pub fn list(entity_set: &str, query: &Query) -> Result<Self> {
        Ok(Self::new(
            Method::GET,
            Target::Path(path(entity_set, None, Some(query))?),
        ))
    }

    /// `POST {entity_set}` (create).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a malformed `entity_set` or an unserializable record.
    pub fn create(entity_set: &str, record: &impl Serialize) -> Result<Self> {
        Self::new(Method::POST, Target::Path(path(entity_set, None, None)?)).with_json(record)
    }

    /// `PATCH {entity_set}({id})` with `If-Match: *` or the given ETag (update, never create).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a malformed `entity_set` or unserializable changes.
    pub fn update(
        entity_set: &str,
        id: Uuid,
        changes: &impl Serialize,
        if_match: Option<&str>,
    ) -> Result<Self> {
        let mut op = Self::new(
            Method::PATCH,
            Target::Path(path(entity_set, Some(&RecordKey::Id(id)), None)?),
        )
        .with_json(changes)?;
        op.headers
            .push(("If-Match".into(), if_match.unwrap_or("*").to_owned()));
        Ok(op)
    }

    /// `PATCH {entity_set}({key})` upsert, with the headers of `mode` (see [`UpsertMode`]).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a malformed `entity_set` or key, or an unserializable record.
    pub fn upsert(
        entity_set: &str,
        key: &RecordKey,
        record: &impl Serialize,
        mode: UpsertMode,
    ) -> Result<Self> {
        let mut op = Self::new(
            Method::PATCH,
            Target::Path(path(entity_set, Some(key), None)?),
        )
        .with_json(record)?;
        match mode {
            UpsertMode::CreateOrUpdate => {}
            UpsertMode::UpdateOnly => op.headers.push(("If-Match".into(), "*".into())),
            UpsertMode::CreateOnly => op.headers.push(("If-None-Match".into(), "*".into())),
        }
        Ok(op)
    }

    /// `DELETE {entity_set}({id})`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a malformed `entity_set`.
    pub fn delete(entity_set: &str, id: Uuid) -> Result<Self> {
        Ok(Self::new(
            Method::DELETE,
            Target::Path(path(entity_set, Some(&RecordKey::Id(id)), None)?),
        ))
    }

    /// `POST {unique_name}`: an unbound action / custom API.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a malformed name or an unserializable request.
    pub fn call_custom_api(unique_name: &str, request: &(impl Serialize + ?Sized)) -> Result<Self> {
        check_identifier("custom API unique name", unique_name)?;
        Self::new(Method::POST, Target::Path(unique_name.to_owned())).with_json(request)
    }

    /// `PATCH $n`: updates the record created earlier in the same change set.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for unserializable changes.
    pub fn update_created(created: ContentId, changes: &impl Serialize) -> Result<Self> {
        Self::new(Method::PATCH, Target::Ref(created.reference())).with_json(changes)
    }

    /// Adds a request header (e.g. `Prefer: return=representation`, `MSCRM.BypassCustomPluginExecution`).
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The `Content-ID` of an operation in a change set; [`reference`](Self::reference) (`$1`) can
/// stand for the created record's URI in later operations of the same change set, e.g. as the
/// value of `"parentcustomerid_account@odata.bind"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ContentId(u32);

impl ContentId {
    /// The Content-ID value.
    pub fn value(self) -> u32 {
        self.0
    }

    /// `$n`, the reference to the operation's result.
    pub fn reference(self) -> String {
        format!("${}", self.0)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Single(BatchOperation),
    ChangeSet(Vec<(ContentId, BatchOperation)>),
}

/// Adds operations to one change set; see [`BatchRequest::change_set`].
#[derive(Debug)]
pub struct ChangeSetBuilder<'a> {
    ops: &'a mut Vec<(ContentId, BatchOperation)>,
    next_id: &'a mut u32,
}

impl ChangeSetBuilder<'_> {
    /// Adds a write operation; returns its Content-ID (unique within the batch).
    pub fn add(&mut self, op: BatchOperation) -> ContentId {
        *self.next_id += 1;
        let id = ContentId(*self.next_id);
        self.ops.push((id, op));
        id
    }
}

/// A `$batch` request: single operations and atomic change sets, run in order.
///
/// ```
/// use carebridge_dataverse_client::{BatchOperation, BatchRequest, Query};
/// use serde_json::json;
/// # fn main() -> carebridge_dataverse_client::Result<()> {
/// let mut batch = BatchRequest::new();
/// batch.change_set(|cs| {
///     let account = cs.add(BatchOperation::create("accounts", &json!({"name": "Contoso"}))?);
///     cs.add(BatchOperation::create(
///         "contacts",
///         &json!({"lastname": "Ng", "parentcustomerid_account@odata.bind": account.reference()}),
///     )?);
///     Ok(())
/// })?;
/// batch.add(BatchOperation::list("accounts", &Query::new().select(["name"]).top(5))?);
/// assert_eq!(batch.operation_count(), 3);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchRequest {
    parts: Vec<Part>,
    next_id: u32,
    continue_on_error: bool,
}

impl BatchRequest {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an operation outside any change set (not atomic with the others).
    pub fn add(&mut self, op: BatchOperation) -> &mut Self {
        self.parts.push(Part::Single(op));
        self
    }

    /// Adds a change set: the operations added by `build` succeed or fail together.
    ///
    /// # Errors
    /// Whatever `build` returns; the change set is not added then.
    pub fn change_set<R>(
        &mut self,
        build: impl FnOnce(&mut ChangeSetBuilder<'_>) -> Result<R>,
    ) -> Result<R> {
        let mut ops = Vec::new();
        let mut next_id = self.next_id;
        let out = build(&mut ChangeSetBuilder {
            ops: &mut ops,
            next_id: &mut next_id,
        })?;
        self.next_id = next_id;
        self.parts.push(Part::ChangeSet(ops));
        Ok(out)
    }

    /// Sends `Prefer: odata.continue-on-error`: later operations run even if one fails.
    #[must_use]
    pub fn continue_on_error(mut self, yes: bool) -> Self {
        self.continue_on_error = yes;
        self
    }

    /// Operations in the batch, change-set members counted one by one.
    pub fn operation_count(&self) -> usize {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Single(_) => 1,
                Part::ChangeSet(ops) => ops.len(),
            })
            .sum()
    }

    /// The multipart body (CRLF line endings) for the given API base and boundary.
    pub(crate) fn to_body(&self, api_base: &str, boundary: &str) -> String {
        let mut out = String::new();
        for (i, part) in self.parts.iter().enumerate() {
            let _ = write!(out, "--{boundary}\r\n");
            match part {
                Part::Single(op) => write_operation(&mut out, api_base, op, None),
                Part::ChangeSet(ops) => {
                    let cs = format!("changeset_{}_{i}", boundary.trim_start_matches("batch_"));
                    let _ = write!(out, "Content-Type: multipart/mixed; boundary={cs}\r\n\r\n");
                    for (id, op) in ops {
                        let _ = write!(out, "--{cs}\r\n");
                        write_operation(&mut out, api_base, op, Some(*id));
                    }
                    let _ = write!(out, "--{cs}--\r\n");
                }
            }
        }
        let _ = write!(out, "--{boundary}--\r\n");
        out
    }
}

fn write_operation(out: &mut String, api_base: &str, op: &BatchOperation, id: Option<ContentId>) {
    out.push_str("Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n");
    if let Some(id) = id {
        let _ = write!(out, "Content-ID: {}\r\n", id.value());
    }
    out.push_str("\r\n");
    let target = match &op.target {
        Target::Path(p) => format!("{api_base}{p}"),
        Target::Ref(r) => r.clone(),
    };
    let _ = write!(out, "{} {target} HTTP/1.1\r\n", op.method);
    if op.body.is_some() {
        out.push_str("Content-Type: application/json; type=entry\r\n");
    }
    for (name, value) in &op.headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.push_str("\r\n");
    if let Some(body) = &op.body {
        out.push_str(&String::from_utf8_lossy(body));
    }
    out.push_str("\r\n");
}

/// The answer to one operation of a batch.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct OperationResponse {
    /// HTTP status of the operation.
    pub status: u16,
    /// Its `Content-ID`, when the request part had one.
    pub content_id: Option<String>,
    /// Its headers (name, value), in order.
    pub headers: Vec<(String, String)>,
    /// Its body (JSON text, possibly empty).
    pub body: String,
}

impl OperationResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The id from `OData-EntityId` (creates, upserts).
    pub fn entity_id(&self) -> Option<Uuid> {
        self.header("OData-EntityId").and_then(parse_entity_id)
    }

    /// Decodes the body as JSON (`null` when empty).
    ///
    /// # Errors
    /// [`Error::Decode`] when the body is not a `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        decode_json("$batch operation", self.body.as_bytes())
    }

    /// The error of a failed operation, classified like a direct call (`None` on success).
    pub fn error(&self) -> Option<Error> {
        if self.is_success() {
            return None;
        }
        let mut se = ServiceError {
            operation: "$batch operation".to_owned(),
            status: self.status,
            code: None,
            message: None,
            annotations: Default::default(),
            content_type: None,
            retry_after: self.header("Retry-After").and_then(parse_retry_after),
        };
        match serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_object()).cloned())
        {
            Some(err) => {
                se.code = err.get("code").and_then(|c| c.as_str()).map(str::to_owned);
                se.message = err
                    .get("message")
                    .and_then(|c| c.as_str())
                    .map(str::to_owned);
                se.annotations = err
                    .into_iter()
                    .filter(|(k, _)| k.starts_with('@'))
                    .collect();
            }
            None => se.content_type = self.header("Content-Type").map(str::to_owned),
        }
        Some(Error::from_service(se))
    }
}

/// The answer to one top-level part of a batch.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum BatchPartResponse {
    /// A single operation, or a change set that failed as a whole (Dataverse then returns one
    /// error response for the change set).
    Single(OperationResponse),
    /// A change set that succeeded: one response per operation.
    ChangeSet(Vec<OperationResponse>),
}

/// The parsed `$batch` answer, in request order.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct BatchResponse {
    /// One entry per top-level part that Dataverse answered (without
    /// `continue_on_error`, processing stops at the first failure, so there may be fewer
    /// entries than parts).
    pub parts: Vec<BatchPartResponse>,
}

impl BatchResponse {
    /// All operation responses, flattened in order.
    pub fn operations(&self) -> impl Iterator<Item = &OperationResponse> {
        self.parts.iter().flat_map(|p| match p {
            BatchPartResponse::Single(r) => std::slice::from_ref(r).iter(),
            BatchPartResponse::ChangeSet(v) => v.iter(),
        })
    }

    /// Whether every operation succeeded.
    pub fn all_succeeded(&self) -> bool {
        self.operations().all(OperationResponse::is_success)
    }
}

/// Extracts `boundary=` from a `multipart/mixed` content type.
pub(crate) fn boundary_of(content_type: &str) -> Option<String> {
    let lower = content_type.to_ascii_lowercase();
    if !lower.trim_start().starts_with("multipart/") {
        return None;
    }
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty())
    })
}

/// Splits multipart content (as lines without line endings) into parts.
fn split_parts<'a>(lines: &[&'a str], boundary: &str, op: &str) -> Result<Vec<Vec<&'a str>>> {
    let delim = format!("--{boundary}");
    let close = format!("--{boundary}--");
    let mut parts = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    let mut closed = false;
    for line in lines {
        let t = line.trim_end();
        if t == close {
            if let Some(p) = current.take() {
                parts.push(p);
            }
            closed = true;
            break;
        } else if t == delim {
            if let Some(p) = current.take() {
                parts.push(p);
            }
            current = Some(Vec::new());
        } else if let Some(p) = current.as_mut() {
            p.push(line);
        }
    }
    if !closed {
        return Err(Error::unexpected(
            op,
            "multipart body has no closing boundary (truncated?)",
        ));
    }
    Ok(parts)
}

fn split_headers<'a>(lines: &'a [&'a str]) -> (Vec<(String, String)>, &'a [&'a str]) {
    let mut headers = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        i += 1;
        if line.is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    (headers, lines.get(i..).unwrap_or(&[]))
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn parse_operation(lines: &[&str], op: &str) -> Result<OperationResponse> {
    let (mime_headers, rest) = split_headers(lines);
    let content_id = find(&mime_headers, "Content-ID").map(str::to_owned);
    let mut rest = rest.iter().skip_while(|l| l.trim().is_empty());
    let status_line = rest
        .next()
        .ok_or_else(|| Error::unexpected(op, "batch part without an HTTP status line"))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..600).contains(s))
        .ok_or_else(|| Error::unexpected(op, "batch part with a malformed HTTP status line"))?;
    let remaining: Vec<&str> = rest.copied().collect();
    let (headers, body) = split_headers(&remaining);
    let body = body.join("\n").trim().to_owned();
    Ok(OperationResponse {
        status,
        content_id,
        headers,
        body,
    })
}

pub(crate) fn parse_batch_response(content_type: &str, body: &str) -> Result<BatchResponse> {
    const OP: &str = "POST $batch";
    let boundary = boundary_of(content_type)
        .ok_or_else(|| Error::unexpected(OP, "response is not multipart/mixed with a boundary"))?;
    let lines: Vec<&str> = body.split('\n').collect();
    let mut parts = Vec::new();
    for part in split_parts(&lines, &boundary, OP)? {
        let (headers, content) = split_headers(&part);
        let inner = find(&headers, "Content-Type").and_then(boundary_of);
        match inner {
            Some(cs_boundary) => {
                let ops = split_parts(content, &cs_boundary, OP)?
                    .iter()
                    .map(|p| parse_operation(p, OP))
                    .collect::<Result<Vec<_>>>()?;
                parts.push(BatchPartResponse::ChangeSet(ops));
            }
            None => parts.push(BatchPartResponse::Single(parse_operation(&part, OP)?)),
        }
    }
    Ok(BatchResponse { parts })
}

impl DataverseClient {
    /// Sends a `$batch` (`POST /api/data/v9.2/$batch`, `multipart/mixed`) and parses the
    /// per-operation answers.
    ///
    /// Change sets are atomic: if one member fails, none is applied and the change set is
    /// answered by a single error ([`BatchPartResponse::Single`]). Failed operations do not make
    /// this call fail; inspect [`OperationResponse::error`]. The batch is a `POST`: it is retried
    /// only after `429` or `401`.
    ///
    /// # Errors
    /// [`Error::BatchTooLarge`] above 1000 operations and [`Error::InvalidInput`] for an empty
    /// batch (nothing is sent); [`Error::UnexpectedResponse`] for a malformed multipart answer;
    /// the common errors when the batch as a whole is rejected.
    pub async fn batch(&self, batch: &BatchRequest) -> Result<BatchResponse> {
        let count = batch.operation_count();
        if count == 0 {
            return Err(Error::invalid_input("batch", "has no operations"));
        }
        if count > MAX_BATCH_OPERATIONS {
            return Err(Error::BatchTooLarge {
                operations: count,
                limit: MAX_BATCH_OPERATIONS,
            });
        }
        let boundary = format!("batch_{}", Uuid::new_v4());
        let body = batch.to_body(self.inner.api_base.as_str(), &boundary);
        let url = self
            .inner
            .api_base
            .join("$batch")
            .map_err(|e| Error::invalid_input("request URL", e.to_string()))?;
        let mut req = Req::new(Method::POST, url, "$batch");
        req.body = Some((
            body.into_bytes(),
            format!("multipart/mixed; boundary=\"{boundary}\""),
        ));
        req.prefer.continue_on_error = batch.continue_on_error;
        req.multipart_errors_ok = true;
        let resp = self.send(req).await?;
        let content_type = resp
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = String::from_utf8_lossy(&resp.body);
        parse_batch_response(&content_type, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn body_uses_crlf_and_content_ids() {
        let mut b = BatchRequest::new();
        b.change_set(|cs| {
            let a = cs.add(BatchOperation::create("accounts", &json!({"name": "A"}))?);
            cs.add(BatchOperation::update_created(a, &json!({"name": "B"}))?);
            Ok(())
        })
        .unwrap();
        b.add(BatchOperation::get("accounts", Uuid::nil(), None).unwrap());
        let body = b.to_body("https://org/api/data/v9.2/", "batch_X");
        assert!(!body.replace("\r\n", "").contains('\n'), "bare LF in body");
        assert!(body.contains("Content-ID: 1\r\n"));
        assert!(body.contains("PATCH $1 HTTP/1.1\r\n"));
        assert!(body.contains(
            "GET https://org/api/data/v9.2/accounts(00000000-0000-0000-0000-000000000000) HTTP/1.1\r\n"
        ));
        assert!(body.ends_with("--batch_X--\r\n"));
        assert_eq!(b.operation_count(), 3);
    }

    #[test]
    fn content_ids_are_unique_across_change_sets() {
        let mut b = BatchRequest::new();
        let first = b
            .change_set(|cs| Ok(cs.add(BatchOperation::delete("accounts", Uuid::nil())?)))
            .unwrap();
        let second = b
            .change_set(|cs| Ok(cs.add(BatchOperation::delete("accounts", Uuid::nil())?)))
            .unwrap();
        assert_ne!(first, second);
    }

    #[test]
    fn boundary_parsing() {
        assert_eq!(
            boundary_of("multipart/mixed; boundary=batchresponse_1").as_deref(),
            Some("batchresponse_1")
        );
        assert_eq!(
            boundary_of("multipart/mixed; BOUNDARY=\"b 2\"").as_deref(),
            Some("b 2")
        );
        assert_eq!(boundary_of("application/json"), None);
    }

    /// Random multipart-ish input never panics the parser (a cheap stand-in for a fuzz target).
    #[test]
    fn parser_never_panics_on_noise() {
        use rand::{Rng, SeedableRng};
        let pieces = [
            "--b",
            "--b--",
            "--c",
            "--c--",
            "\r\n",
            "\n",
            "",
            " ",
            ":",
            "HTTP/1.1 ",
            "200",
            "99999",
            "OK",
            "Content-Type: multipart/mixed; boundary=c",
            "Content-Type: application/http",
            "Content-ID: 1",
            "OData-EntityId: x(",
            ")",
            "{\"error\":{",
            "}",
            "é",
            "\u{0}",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        for _ in 0..5000 {
            let n = rng.gen_range(0..40);
            let body: String = (0..n)
                .map(|_| pieces[rng.gen_range(0..pieces.len())])
                .collect();
            if let Ok(resp) = parse_batch_response("multipart/mixed; boundary=b", &body) {
                for op in resp.operations() {
                    let _ = op.entity_id();
                    let _ = op.error();
                    let _ = op.json::<serde_json::Value>();
                }
            }
        }
    }

    #[test]
    fn truncated_multipart_is_an_error() {
        let err = parse_batch_response(
            "multipart/mixed; boundary=b",
            "--b\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 200 OK\r\n\r\n{}",
        )
        .unwrap_err();
        assert!(matches!(err, Error::UnexpectedResponse { .. }));
    }
}
