//! Event sources: where device messages come from, and how they are acknowledged.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;

use carebridge_medtech_expr::{BODY, PROPERTIES, SYSTEM_PROPERTIES};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::{Doc, Error, JsonNode, Result};

/// The key a dead-letter record adds to the original event; sources drop it, so a dead-letter
/// file can be replayed as input.
///
/// Public API: the dead-letter record format (see [`DeadLetter::to_json`](super::DeadLetter::to_json))
/// is a contract with whoever reads or repairs dead-letter files, and an application's own
/// [`EventSource`] drops the annotation under this key to replay them.
pub const DEAD_LETTER_KEY: &str = "deadLetter";

/// The content of one event.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventPayload {
    /// The event as the templates see it: `{"Body", "Properties", "SystemProperties"}`.
    Event(Value),
    /// One line of NDJSON input, not parsed yet (its position is its line number): an envelope,
    /// a message body or a dead-letter record, read as [`to_event`] reads a value. The pipeline
    /// parses it into a [`Doc`] (strings borrowed from the line, nothing copied), and
    /// dead-letters it as [`EventPayload::Invalid`] when it is not JSON; see [`parse_line`].
    Line(String),
    /// A broker message (a Kafka record, an Event Hubs event) whose body is JSON text not
    /// parsed yet, with its properties already decoded. The pipeline parses the body into a
    /// [`Doc`] (strings borrowed from the body, nothing copied) and builds the event
    /// `{"Body", "Properties", "SystemProperties"}` around it; a body that is not JSON is
    /// dead-lettered with its raw text, and the reason names [`Message::origin`].
    Message(Message),
    /// The input could not be read as JSON; it is dead-lettered with its raw text.
    Invalid {
        /// The raw input (kept only to be written to the dead-letter sink, never logged).
        raw: String,
        /// Why it could not be read (position only).
        reason: String,
    },
}

/// A broker message: its body as received and its decoded properties (see
/// [`EventPayload::Message`]).
///
/// ```
/// use carebridge_medtech_mapping::pipeline::Message;
/// use serde_json::{json, Map};
///
/// let mut properties = Map::new();
/// properties.insert("ProfileName".to_owned(), json!("vitals"));
/// let m = Message::new(r#"{"hr": 72}"#, properties, Map::new(), "topic devices partition 0 offset 7");
/// let event = m.to_value()?;
/// assert_eq!(event["Body"]["hr"], 72);
/// assert_eq!(event["Properties"]["ProfileName"], "vitals");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Message {
    /// The body as received: JSON text, parsed by the pipeline.
    pub body: String,
    /// The event's `Properties` (application properties, record headers).
    pub properties: Map<String, Value>,
    /// The event's `SystemProperties` (what the broker says about the message).
    pub system_properties: Map<String, Value>,
    /// Where the message came from, for dead-letter reasons (`topic t partition 0 offset 7`).
    pub origin: String,
}

impl Message {
    /// A message with this body, these properties and this origin.
    pub fn new(
        body: impl Into<String>,
        properties: Map<String, Value>,
        system_properties: Map<String, Value>,
        origin: impl Into<String>,
    ) -> Self {
        Self {
            body: body.into(),
            properties,
            system_properties,
            origin: origin.into(),
        }
    }

    /// The event as the templates see it, borrowing the body's strings and the properties.
    ///
    /// # Errors
    /// The parser's error when the body is not JSON.
    pub fn to_doc(&self) -> std::result::Result<Doc<'_>, serde_json::Error> {
        fn map(m: &Map<String, Value>) -> Doc<'_> {
            Doc::Object(
                m.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Doc::borrowed(v)))
                    .collect(),
            )
        }
        let body = Doc::parse(&self.body)?;
        Ok(carebridge_medtech_expr::event_envelope(
            body,
            map(&self.properties),
            map(&self.system_properties),
        ))
    }

    /// The event as JSON (as [`to_doc`](Message::to_doc), owned).
    ///
    /// # Errors
    /// The parser's error when the body is not JSON.
    pub fn to_value(&self) -> std::result::Result<Value, serde_json::Error> {
        self.to_doc().map(|doc| doc.to_value())
    }

    /// The dead-letter reason for a body that is not JSON (see [`not_json_reason`]).
    pub(crate) fn invalid_reason(&self, e: &serde_json::Error) -> String {
        not_json_reason(&self.origin, e)
    }
}

/// The dead-letter reason for a message body that is not JSON: where it came from and where the
/// parser stopped (`topic t partition 0 offset 7: not valid JSON (line 1 column 12: Eof)`), never
/// the body itself. Shared by the pipeline and broker sources, so every such reason reads alike.
pub fn not_json_reason(origin: &str, e: &serde_json::Error) -> String {
    format!(
        "{origin}: not valid JSON (line {} column {}: {:?})",
        e.line(),
        e.column(),
        e.classify()
    )
}

/// One event taken from a source, to be acknowledged with [`EventSource::ack`] once its outcome
/// (Observations persisted, dead letter written, or skip recorded) is durable.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceEvent {
    /// The source's position of this event (line number, offset, sequence number), increasing.
    pub position: u64,
    /// The content.
    pub payload: EventPayload,
}

/// A stream of device events with at-least-once delivery.
///
/// The pipeline calls [`ack`](EventSource::ack) for a position only after everything the event
/// produced is persisted, and acknowledges in position order; a source backed by a log (Kafka,
/// Event Hubs) stores that position as its committed offset. Events not acknowledged when a run
/// stops are delivered again by the next run, and idempotent persistence makes that harmless.
pub trait EventSource: Send {
    /// The next event, or `None` at the end of the input.
    ///
    /// # Errors
    /// [`Error::Io`] when the underlying input fails.
    fn next_event(&mut self) -> impl Future<Output = Result<Option<SourceEvent>>> + Send;

    /// Marks every event up to and including `position` as processed.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Store`] when the acknowledgement cannot be
    /// stored; the events will then be delivered again.
    fn ack(&mut self, position: u64) -> impl Future<Output = Result<()>> + Send;

    /// The next event if one is available now, without waiting: `Ok(None)` when none is ready
    /// yet (or the input ended; [`next_event`](EventSource::next_event) tells which).
    ///
    /// The pipeline calls it after `next_event` returned an event, to fill a batch with what is
    /// already there (see [`PipelineOptions::batch_size`](crate::pipeline::PipelineOptions)).
    /// The default has nothing ready, so every batch is one event; sources that buffer
    /// (files, Kafka) override it.
    ///
    /// # Errors
    /// As [`next_event`](EventSource::next_event).
    fn try_next_event(&mut self) -> Result<Option<SourceEvent>> {
        Ok(None)
    }

    /// Serves the source while the pipeline waits on its sink and takes no new event: the
    /// pipeline polls it alongside the batches in flight, and drops it (unfinished) as soon as a
    /// batch finishes. It must be cancel-safe, and may return (`Ok`) at any time to be called
    /// again.
    ///
    /// A broker consumer keeps its group membership here: it pauses its partitions and keeps
    /// polling, so a slow sink never makes it miss `max.poll.interval.ms`; events it receives
    /// meanwhile are kept for [`next_event`](EventSource::next_event). The default has nothing
    /// to serve and never returns.
    ///
    /// # Errors
    /// As [`next_event`](EventSource::next_event): a failure that must stop the run.
    fn keep_alive(&mut self) -> impl Future<Output = Result<()>> + Send {
        std::future::pending()
    }

    /// Whether the source was asked to stop (a shutdown signal). The pipeline then gives up
    /// retrying writes that fail transiently, so the run ends and its unacknowledged events are
    /// delivered again later. The default is never.
    fn is_stopping(&self) -> bool {
        false
    }
}

/// Polls `future` once without a real waker: its output if it is ready now.
///
/// Only for futures whose work survives being dropped unfinished (cancel-safe): the sources'
/// own `next_event`s, which keep a partly read line in the source.
pub(crate) fn poll_now<F: Future>(future: F) -> Option<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(future).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// Turns one JSON value into the event the templates see.
///
/// An object with a `Body` property is taken as the envelope (missing `Properties` and
/// `SystemProperties` become `{}`, and a dead-letter annotation is dropped); anything else is the
/// message body, wrapped with [`envelope`](crate::envelope).
///
/// Public API for applications that write their own [`EventSource`] over `serde_json::Value`s
/// (what [`InMemorySource`] does), so their events read exactly as the built-in sources' do.
///
/// ```
/// use carebridge_medtech_mapping::pipeline::to_event;
/// let event = to_event(serde_json::json!({"hr": 72}));
/// assert_eq!(event, serde_json::json!({"Body": {"hr": 72}, "Properties": {}, "SystemProperties": {}}));
/// ```
pub fn to_event(value: Value) -> Value {
    match value {
        Value::Object(mut map) if map.contains_key(BODY) => {
            map.remove(DEAD_LETTER_KEY);
            for key in [PROPERTIES, SYSTEM_PROPERTIES] {
                if !map.get(key).is_some_and(Value::is_object) {
                    map.insert(key.to_owned(), Value::Object(Map::new()));
                }
            }
            Value::Object(map)
        }
        other => crate::envelope(other),
    }
}

/// What one line of input is (see [`parse_line`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ParsedLine<'t> {
    /// The event as the templates see it.
    Event(Doc<'t>),
    /// The line is not JSON (or is the dead-letter record of a line that still is not).
    Invalid {
        /// The text to dead-letter.
        raw: Cow<'t, str>,
        /// Why (column and kind of the JSON error).
        reason: String,
    },
}

/// Reads one line of input the way [`NdjsonSource`] reads it: an envelope, a message body
/// (wrapped with [`Doc::envelope`]) or a dead-letter record (its annotation dropped; the record
/// of a line that was not JSON stands for that line's raw text), as a [`Doc`] borrowing `line`.
///
/// Public API for applications that receive NDJSON lines over their own transport (a queue, a
/// socket) and want each read as a file line is, dead-letter records included.
///
/// ```
/// use carebridge_medtech_mapping::pipeline::{parse_line, ParsedLine};
/// use carebridge_medtech_mapping::JsonNode;
/// let ParsedLine::Event(event) = parse_line(r#"{"hr": 72}"#) else { unreachable!() };
/// assert!(event.get("Body").is_some());
/// assert!(matches!(parse_line("not json"), ParsedLine::Invalid { .. }));
/// ```
pub fn parse_line(line: &str) -> ParsedLine<'_> {
    let line = line.trim();
    let doc = match Doc::parse(line) {
        Ok(d) => d,
        Err(e) => {
            return ParsedLine::Invalid {
                raw: Cow::Borrowed(line),
                reason: format!("not valid JSON (column {}: {:?})", e.column(), e.classify()),
            }
        }
    };
    // A dead-letter record of a line that was not JSON carries that line as `raw`: replaying
    // it means reading the raw text again (fixed by hand, or still invalid).
    let raw = (doc.get(BODY).is_none() && doc.get(DEAD_LETTER_KEY).is_some())
        .then(|| doc.get("raw").and_then(JsonNode::as_str))
        .flatten();
    if let Some(raw) = raw {
        return match Doc::parse(raw) {
            Ok(d) => ParsedLine::Event(doc_to_event(d).into_owned()),
            Err(e) => ParsedLine::Invalid {
                raw: Cow::Owned(raw.to_owned()),
                reason: format!(
                    "dead-lettered raw text is still not valid JSON (column {}: {:?})",
                    e.column(),
                    e.classify()
                ),
            },
        };
    }
    ParsedLine::Event(doc_to_event(doc))
}

/// [`to_event`] over a [`Doc`].
fn doc_to_event(doc: Doc<'_>) -> Doc<'_> {
    match doc {
        Doc::Object(_) if doc.get(BODY).is_some() => {
            let mut doc = doc;
            doc.remove(DEAD_LETTER_KEY);
            for key in [PROPERTIES, SYSTEM_PROPERTIES] {
                if !doc.get(key).is_some_and(JsonNode::is_object) {
                    doc.insert(key, Doc::Object(Vec::new()));
                }
            }
            doc
        }
        other => Doc::envelope(other),
    }
}

/// An in-memory source, for tests and for applications that already hold the events.
#[derive(Debug, Default)]
pub struct InMemorySource {
    pending: VecDeque<SourceEvent>,
    acked: Option<u64>,
}

impl InMemorySource {
    /// A source of `values`, each an envelope or a message body (see [`to_event`]), at positions
    /// 0, 1, 2, ...
    pub fn new(values: impl IntoIterator<Item = Value>) -> Self {
        let pending = values
            .into_iter()
            .zip(0u64..)
            .map(|(v, position)| SourceEvent {
                position,
                payload: EventPayload::Event(to_event(v)),
            })
            .collect();
        Self {
            pending,
            acked: None,
        }
    }

    /// A source of these events as they are (any payload, such as the
    /// [`Message`]s a broker source delivers); positions must increase.
    pub fn from_events(events: impl IntoIterator<Item = SourceEvent>) -> Self {
        Self {
            pending: events.into_iter().collect(),
            acked: None,
        }
    }

    /// The highest acknowledged position, if any.
    pub fn acked(&self) -> Option<u64> {
        self.acked
    }

    /// Events not yet taken.
    pub fn remaining(&self) -> usize {
        self.pending.len()
    }
}

impl EventSource for InMemorySource {
    async fn next_event(&mut self) -> Result<Option<SourceEvent>> {
        Ok(self.pending.pop_front())
    }

    async fn ack(&mut self, position: u64) -> Result<()> {
        self.acked = Some(self.acked.map_or(position, |a| a.max(position)));
        Ok(())
    }

    fn try_next_event(&mut self) -> Result<Option<SourceEvent>> {
        Ok(self.pending.pop_front())
    }
}

/// Newline-delimited JSON from a file, stdin or any async reader: one event per line, either the
/// envelope `{"Body", "Properties", "SystemProperties"}` or a plain message body. Dead-letter
/// records (the envelope plus a `deadLetter` annotation) are accepted too, so a dead-letter file
/// can be replayed. Blank lines are ignored; positions are 1-based line numbers. A line that is
/// not UTF-8 or not JSON becomes an [`EventPayload::Invalid`] event (a dead letter), not an error,
/// except a last line that ends without a newline and is not JSON: that is a write torn by a
/// crash, skipped with a warning (its line number is then never delivered).
///
/// [`try_next_event`](EventSource::try_next_event) returns the lines the reader already holds,
/// so a batch fills from the read buffer without waiting for a slow writer (stdin, a pipe).
#[derive(Debug)]
pub struct NdjsonSource<R> {
    reader: R,
    line: u64,
    acked: Option<u64>,
    /// The line being read; kept across an unfinished read so no byte is lost.
    buf: Vec<u8>,
}

/// The read buffer [`NdjsonSource::open`] gives a file: big enough that a batch of a few
/// hundred events fills without waiting for another read.
const FILE_READ_BUFFER: usize = 1 << 20;

impl<R: AsyncBufRead + Unpin + Send> NdjsonSource<R> {
    /// Reads events from `reader`.
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            line: 0,
            acked: None,
            buf: Vec::new(),
        }
    }

    /// The highest acknowledged line number, if any.
    pub fn acked(&self) -> Option<u64> {
        self.acked
    }
}

impl NdjsonSource<tokio::io::BufReader<tokio::fs::File>> {
    /// Opens the NDJSON file at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened.
    pub async fn open(path: &std::path::Path) -> Result<Self> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| Error::io("input file", Some(path), source))?;
        Ok(Self::new(tokio::io::BufReader::with_capacity(
            FILE_READ_BUFFER,
            file,
        )))
    }
}

impl<R: AsyncBufRead + Unpin + Send> NdjsonSource<R> {
    /// Reads the next non-blank line into an event. Cancel-safe: a line read only in part stays
    /// in `self.buf` and the next call goes on with it.
    async fn read_event(&mut self) -> Result<Option<SourceEvent>> {
        loop {
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .await
                .map_err(|source| {
                    Error::io(format!("input line {}", self.line + 1), None, source)
                })?;
            // `read_until` stops at a newline or at the end of the input (a last line without
            // a newline).
            if n == 0 && self.buf.is_empty() {
                return Ok(None);
            }
            self.line += 1;
            if self.buf.last() != Some(&b'\n') && !is_json(&self.buf) {
                // The input ended in the middle of a line that is not JSON: a write torn by a
                // crash (of whoever wrote the file, or of a dead-letter writer). It is not a
                // message: skip it (a writer appending later starts a new line after it).
                tracing::warn!(
                    line = self.line,
                    bytes = self.buf.len(),
                    "the last line ends without a newline and is not JSON (a torn write): skipped"
                );
                self.buf.clear();
                continue;
            }
            let event = self.to_source_event(&self.buf);
            self.buf.clear();
            if let Some(event) = event {
                return Ok(Some(event));
            }
        }
    }

    /// The event of one line (`None` for a blank line).
    fn to_source_event(&self, line: &[u8]) -> Option<SourceEvent> {
        let text = match std::str::from_utf8(line) {
            Ok(t) => t.trim(),
            Err(e) => {
                return Some(SourceEvent {
                    position: self.line,
                    payload: EventPayload::Invalid {
                        raw: String::from_utf8_lossy(line).trim().to_owned(),
                        reason: format!(
                            "line {}: not UTF-8 (byte {})",
                            self.line,
                            e.valid_up_to() + 1
                        ),
                    },
                })
            }
        };
        if text.is_empty() {
            return None;
        }
        // Parsed by the pipeline (`parse_line`), into a `Doc` that borrows the line.
        let payload = EventPayload::Line(text.to_owned());
        Some(SourceEvent {
            position: self.line,
            payload,
        })
    }
}

/// Whether `bytes` hold one JSON value (surrounding whitespace allowed).
fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

impl<R: AsyncBufRead + Unpin + Send> EventSource for NdjsonSource<R> {
    async fn next_event(&mut self) -> Result<Option<SourceEvent>> {
        self.read_event().await
    }

    async fn ack(&mut self, position: u64) -> Result<()> {
        self.acked = Some(self.acked.map_or(position, |a| a.max(position)));
        Ok(())
    }

    fn try_next_event(&mut self) -> Result<Option<SourceEvent>> {
        poll_now(self.read_event()).unwrap_or(Ok(None))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// The event a payload stands for, as JSON (a line parsed as the pipeline parses it).
    pub(crate) fn event_value(p: &EventPayload) -> Value {
        match p {
            EventPayload::Event(v) => v.clone(),
            EventPayload::Line(l) => match parse_line(l) {
                ParsedLine::Event(d) => d.to_value(),
                other => panic!("{other:?}"),
            },
            EventPayload::Message(m) => m.to_value().unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn dead_lettered_raw_lines_replay_as_their_raw_text() {
        let input = concat!(
            "{\"raw\":\"{still broken\",\"deadLetter\":{\"reason\":\"invalid_json\"}}\n",
            "{\"raw\":\"{\\\"hr\\\":7}\",\"deadLetter\":{\"reason\":\"invalid_json\"}}\n",
        );
        let mut src = NdjsonSource::new(input.as_bytes());
        let first = src.next_event().await.unwrap().unwrap();
        let EventPayload::Line(line) = &first.payload else {
            panic!("{first:?}");
        };
        match parse_line(line) {
            ParsedLine::Invalid { raw, reason } => {
                assert_eq!(raw, "{still broken");
                assert!(reason.contains("still not valid JSON"), "{reason}");
            }
            other => panic!("expected invalid, got {other:?}"),
        }
        let second = src.next_event().await.unwrap().unwrap();
        assert_eq!(
            event_value(&second.payload),
            json!({"Body":{"hr":7},"Properties":{},"SystemProperties":{}})
        );
    }

    #[tokio::test]
    async fn ndjson_reads_envelopes_bodies_dead_letters_and_invalid_lines() {
        let input = concat!(
            "{\"Body\":{\"hr\":1},\"Properties\":{\"a\":\"b\"}}\n",
            "\n",
            "{\"hr\":2}\n",
            "{\"Body\":{\"hr\":3},\"deadLetter\":{\"reason\":\"x\"}}\n",
            "{not json\n",
        );
        let mut src = NdjsonSource::new(input.as_bytes());
        let mut got = Vec::new();
        while let Some(e) = src.next_event().await.unwrap() {
            got.push(e);
        }
        assert_eq!(got.len(), 4);
        assert_eq!(
            event_value(&got[0].payload),
            json!({"Body":{"hr":1},"Properties":{"a":"b"},"SystemProperties":{}})
        );
        assert_eq!(got[1].position, 3);
        assert_eq!(
            event_value(&got[1].payload),
            json!({"Body":{"hr":2},"Properties":{},"SystemProperties":{}})
        );
        assert_eq!(
            event_value(&got[2].payload),
            json!({"Body":{"hr":3},"Properties":{},"SystemProperties":{}})
        );
        assert_eq!(got[3].position, 5);
        let EventPayload::Line(line) = &got[3].payload else {
            panic!("{:?}", got[3]);
        };
        match parse_line(line) {
            ParsedLine::Invalid { raw, reason } => {
                assert_eq!(raw, "{not json");
                assert!(reason.starts_with("not valid JSON (column 2"), "{reason}");
            }
            other => panic!("expected invalid, got {other:?}"),
        }
        src.ack(3).await.unwrap();
        src.ack(2).await.unwrap();
        assert_eq!(src.acked(), Some(3));
    }

    #[tokio::test]
    async fn try_next_event_takes_only_complete_lines_and_loses_no_byte() {
        use tokio::io::AsyncWriteExt;
        let (mut writer, reader) = tokio::io::duplex(1024);
        let mut src = NdjsonSource::new(tokio::io::BufReader::new(reader));
        assert_eq!(src.try_next_event().unwrap(), None, "nothing written yet");
        writer
            .write_all(b"{\"hr\":1}\n{\"hr\":2}\n{\"hr\":")
            .await
            .unwrap();
        let body = |e: SourceEvent| event_value(&e.payload)["Body"].clone();
        let first = src.next_event().await.unwrap().unwrap();
        assert_eq!(body(first), json!({"hr": 1}));
        let second = src.try_next_event().unwrap().unwrap();
        assert_eq!((second.position, body(second)), (2, json!({"hr": 2})));
        // Half a line is there: not ready, and the half is kept.
        assert_eq!(src.try_next_event().unwrap(), None);
        assert_eq!(src.try_next_event().unwrap(), None);
        writer.write_all(b"3}\n").await.unwrap();
        drop(writer);
        let third = src.next_event().await.unwrap().unwrap();
        assert_eq!((third.position, body(third)), (3, json!({"hr": 3})));
        assert_eq!(src.next_event().await.unwrap(), None);
        assert_eq!(src.try_next_event().unwrap(), None);
    }

    #[tokio::test]
    async fn a_line_that_is_not_utf8_is_an_invalid_event_and_reading_goes_on() {
        let input: &[u8] = b"{\"hr\":1}\n{\"hr\":\xff}\n{\"hr\":3}";
        let mut src = NdjsonSource::new(input);
        let mut got = Vec::new();
        while let Some(e) = src.next_event().await.unwrap() {
            got.push(e);
        }
        assert_eq!(got.len(), 3);
        match &got[1].payload {
            EventPayload::Invalid { reason, .. } => {
                assert_eq!(reason, "line 2: not UTF-8 (byte 7)");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(got[2].position, 3, "a last line without a newline is read");
    }

    /// A last line cut off by a crash (no newline, not JSON) is skipped, in a message file as in
    /// a dead-letter file; a last line without a newline that is JSON is read, and a line that
    /// is not JSON but ends with a newline is still a dead letter.
    #[tokio::test]
    async fn a_torn_last_line_is_skipped() {
        let dead_letter = b"{\"Body\":{\"hr\":2},\"deadLetter\":{\"reason\":\"x\"}}";
        let mut torn_dead_letter = dead_letter.to_vec();
        torn_dead_letter.push(b'\n');
        torn_dead_letter.extend_from_slice(&dead_letter[..30]);
        let cases: [(&[u8], Vec<Value>); 5] = [
            (b"{\"hr\":1}\n{\"hr\":", vec![json!({"hr": 1})]),
            (
                b"{\"hr\":1}\n{\"hr\":2}",
                vec![json!({"hr": 1}), json!({"hr": 2})],
            ),
            (&torn_dead_letter, vec![json!({"hr": 2})]),
            (b"{\"hr\":1}\n{\"hr\":\xe2\x82", vec![json!({"hr": 1})]),
            (b"{\"hr\":", vec![]),
        ];
        for (input, bodies) in cases {
            let mut src = NdjsonSource::new(input);
            let mut got = Vec::new();
            while let Some(e) = src.next_event().await.unwrap() {
                got.push(event_value(&e.payload)["Body"].clone());
            }
            assert_eq!(got, bodies, "{}", String::from_utf8_lossy(input));
        }
        let mut src = NdjsonSource::new(&b"{\"hr\":1}\n{\"hr\":\n{\"hr\":3}\n{\"h"[..]);
        let mut positions = Vec::new();
        while let Some(e) = src.next_event().await.unwrap() {
            positions.push((e.position, matches!(e.payload, EventPayload::Line(_))));
        }
        assert_eq!(positions, [(1, true), (2, true), (3, true)]);
    }

    #[tokio::test]
    async fn in_memory_source_positions_and_acks() {
        let mut src = InMemorySource::new([json!({"a":1}), json!({"Body":{"b":2}})]);
        assert_eq!(src.remaining(), 2);
        let first = src.next_event().await.unwrap().unwrap();
        assert_eq!(first.position, 0);
        assert_eq!(src.acked(), None);
        src.ack(0).await.unwrap();
        assert_eq!(src.acked(), Some(0));
    }
}
