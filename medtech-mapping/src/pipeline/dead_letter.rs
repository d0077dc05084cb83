//! Dead letters: messages that could not be mapped, kept with the reason so they can be fixed
//! and replayed.

use std::fmt;
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use carebridge_medtech_expr::BODY;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::output::open_output;
use super::sink::{sync_file, SyncData};
use super::source::{parse_line, Message, ParsedLine, DEAD_LETTER_KEY};
use crate::{Error, JsonNode, Result};

/// The original content of a dead-lettered message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum DeadLetterEvent {
    /// The event envelope `{"Body", "Properties", "SystemProperties"}`.
    Event(Value),
    /// Input that was not JSON, as read.
    Raw(String),
    /// A line of NDJSON input ([`EventPayload::Line`](super::EventPayload::Line)), as read; the
    /// record holds the event it stands for (see [`parse_line`]).
    Line(String),
    /// A broker message ([`EventPayload::Message`](super::EventPayload::Message)); the record
    /// holds its event envelope.
    Message(Message),
}

/// A message that could not be mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The source position of the message (line number for NDJSON input).
    pub position: u64,
    /// A stable reason code (`required-value-missing`, `device-not-found`, ...), see
    /// [`Error::reason_code`].
    pub reason: String,
    /// The error text (names template paths and expressions, never message values).
    pub detail: String,
    /// The template path of the failing expression, when the mapping failed.
    pub template_path: Option<String>,
    /// When it was dead-lettered.
    pub at: DateTime<Utc>,
    /// The original message.
    pub event: DeadLetterEvent,
}

impl DeadLetter {
    /// The record as one JSON object: the original envelope with a `deadLetter` annotation
    /// (`reason`, `detail`, `templatePath`, `position`, `at`), which
    /// [`NdjsonSource`](super::NdjsonSource) drops, so a dead-letter file replays as input. Input
    /// that was not JSON is kept as `raw` beside the annotation.
    pub fn to_json(&self) -> Value {
        let note = json!({
            "reason": self.reason,
            "detail": self.detail,
            "templatePath": self.template_path,
            "position": self.position,
            "at": self.at.to_rfc3339_opts(SecondsFormat::Millis, true),
        });
        let parsed;
        let event = match &self.event {
            DeadLetterEvent::Line(line) => match parse_line(line) {
                ParsedLine::Event(doc) => {
                    parsed = DeadLetterEvent::Event(doc.to_value());
                    &parsed
                }
                ParsedLine::Invalid { raw, .. } => {
                    return json!({ "raw": raw, DEAD_LETTER_KEY: note });
                }
            },
            DeadLetterEvent::Message(m) => match m.to_value() {
                Ok(v) => {
                    parsed = DeadLetterEvent::Event(v);
                    &parsed
                }
                Err(_) => &self.event,
            },
            other => other,
        };
        match event {
            DeadLetterEvent::Event(Value::Object(map)) => {
                let mut map = map.clone();
                map.insert(DEAD_LETTER_KEY.to_owned(), note);
                Value::Object(map)
            }
            DeadLetterEvent::Event(other) => json!({ BODY: other, DEAD_LETTER_KEY: note }),
            DeadLetterEvent::Raw(raw)
            | DeadLetterEvent::Line(raw)
            | DeadLetterEvent::Message(Message { body: raw, .. }) => {
                json!({ "raw": raw, DEAD_LETTER_KEY: note })
            }
        }
    }
}

/// Receives dead letters. Held as `Arc<dyn DeadLetterSink>`. A message is acknowledged only after
/// its dead letter is written.
#[async_trait]
pub trait DeadLetterSink: Send + Sync + fmt::Debug {
    /// Stores `letter` durably.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Store`] when it cannot be stored (the message
    /// then stays unacknowledged).
    async fn write(&self, letter: &DeadLetter) -> Result<()>;
}

/// Keeps dead letters in memory.
#[derive(Debug, Default)]
pub struct InMemoryDeadLetters {
    letters: Mutex<Vec<DeadLetter>>,
}

impl InMemoryDeadLetters {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// The dead letters so far.
    pub fn letters(&self) -> Vec<DeadLetter> {
        self.letters.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl DeadLetterSink for InMemoryDeadLetters {
    async fn write(&self, letter: &DeadLetter) -> Result<()> {
        self.letters
            .lock()
            .map_err(|_| Error::store("dead letters", std::io::Error::other("poisoned lock")))?
            .push(letter.clone());
        Ok(())
    }
}

/// Writes dead letters as NDJSON ([`DeadLetter::to_json`] per line), flushed after each;
/// `medtech run --input` replays such a file.
///
/// # Durability
///
/// [`write`](DeadLetterSink::write) returns once the line is written and flushed, and, for a
/// sink opened with [`append`](NdjsonDeadLetters::append), synced to disk with
/// [`File::sync_data`](tokio::fs::File::sync_data), so the dead letter of an acknowledged
/// message survives a crash or power loss.
/// [`with_sync_data(false)`](NdjsonDeadLetters::with_sync_data) turns the sync off for
/// throughput. A sink over any other writer ([`new`](NdjsonDeadLetters::new)) only flushes it:
/// its durability is the writer's.
pub struct NdjsonDeadLetters<W> {
    writer: tokio::sync::Mutex<W>,
    sync: Option<SyncData<W>>,
}

impl<W> fmt::Debug for NdjsonDeadLetters<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NdjsonDeadLetters")
            .field("sync_data", &self.sync.is_some())
            .finish_non_exhaustive()
    }
}

impl<W: AsyncWrite + Unpin + Send> NdjsonDeadLetters<W> {
    /// Writes to `writer`, flushed after every dead letter. The sink cannot sync a generic writer
    /// to disk: how durable a flushed dead letter is depends on the writer (see
    /// [Durability](NdjsonDeadLetters#durability); for a file prefer
    /// [`append`](NdjsonDeadLetters::append)).
    pub fn new(writer: W) -> Self {
        Self {
            writer: tokio::sync::Mutex::new(writer),
            sync: None,
        }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.writer.into_inner()
    }
}

impl NdjsonDeadLetters<tokio::fs::File> {
    /// Opens the file at `path` for appending (creating it when missing, so dead letters of
    /// earlier runs are kept) and writes to it, syncing each dead letter to disk. A new file is
    /// readable by its owner only ([`OUTPUT_FILE_MODE`](super::OUTPUT_FILE_MODE), on Unix): it
    /// holds patient data. When the file ends with a line torn by a crash, the first dead letter
    /// starts a new line.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened for writing.
    pub async fn append(path: &Path) -> Result<Self> {
        let file = open_output(path, true, "dead-letter output").await?;
        Ok(Self::new(file).with_sync_data(true))
    }

    /// Whether [`write`](DeadLetterSink::write) syncs the file to disk
    /// ([`File::sync_data`](tokio::fs::File::sync_data)) before it returns: on for
    /// [`append`](Self::append), off for [`new`](NdjsonDeadLetters::new). Turning it off trades
    /// durability for throughput: dead letters of acknowledged messages still in the operating
    /// system's cache are lost on a crash.
    pub fn with_sync_data(mut self, sync_data: bool) -> Self {
        self.sync = sync_data.then_some(sync_file as SyncData<tokio::fs::File>);
        self
    }
}

#[async_trait]
impl<W: AsyncWrite + Unpin + Send> DeadLetterSink for NdjsonDeadLetters<W> {
    async fn write(&self, letter: &DeadLetter) -> Result<()> {
        let mut line = serde_json::to_vec(&letter.to_json()).map_err(|source| Error::Json {
            what: "dead letter".to_owned(),
            source: std::sync::Arc::new(source),
        })?;
        line.push(b'\n');
        let io = |source| Error::io("dead-letter output", None, source);
        let mut w = self.writer.lock().await;
        w.write_all(&line).await.map_err(io)?;
        w.flush().await.map_err(io)?;
        if let Some(sync) = self.sync {
            sync(&mut w).await.map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::source::{to_event, EventSource, NdjsonSource};

    #[tokio::test]
    async fn a_dead_letter_file_replays_as_the_original_events() {
        let event = to_event(json!({"hr": 80, "deviceId": "d"}));
        let letter = DeadLetter {
            position: 7,
            reason: "required-value-missing".into(),
            detail: "message 6: template[0].template.timestampExpression: required value missing"
                .into(),
            template_path: Some("template[0].template.timestampExpression".into()),
            at: DateTime::<Utc>::from_timestamp(0, 0).unwrap(),
            event: DeadLetterEvent::Event(event.clone()),
        };
        let sink = NdjsonDeadLetters::new(Vec::new());
        sink.write(&letter).await.unwrap();
        let bytes = sink.into_inner();
        let record: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(record["deadLetter"]["reason"], "required-value-missing");
        assert_eq!(
            record["deadLetter"]["templatePath"],
            "template[0].template.timestampExpression"
        );
        assert_eq!(record["deadLetter"]["at"], "1970-01-01T00:00:00.000Z");
        let mut src = NdjsonSource::new(bytes.as_slice());
        let replayed = src.next_event().await.unwrap().unwrap();
        assert_eq!(
            crate::pipeline::source::tests::event_value(&replayed.payload),
            event
        );
    }

    #[tokio::test]
    async fn a_dead_letter_file_is_appended_and_synced_by_default() {
        let path = std::env::temp_dir().join(format!(
            "carebridge-medtech-dead-letters-{}.ndjson",
            std::process::id()
        ));
        std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
        let letter = |position| DeadLetter {
            position,
            reason: "invalid-message".into(),
            detail: "not valid JSON".into(),
            template_path: None,
            at: Utc::now(),
            event: DeadLetterEvent::Raw("{oops".into()),
        };
        let sink = NdjsonDeadLetters::append(&path).await.unwrap();
        assert!(sink.sync.is_some(), "a file sink syncs by default");
        sink.write(&letter(1)).await.unwrap();
        let sink = sink.with_sync_data(false);
        assert_eq!(
            format!("{sink:?}"),
            "NdjsonDeadLetters { sync_data: false, .. }"
        );
        sink.write(&letter(2)).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let records: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len(), 3, "earlier contents kept");
        assert_eq!(records[0]["earlier"], true);
        assert_eq!(records[1]["deadLetter"]["position"], 1);
        assert_eq!(records[2]["deadLetter"]["position"], 2);
        assert!(NdjsonDeadLetters::new(Vec::new()).sync.is_none());
    }

    #[test]
    fn raw_input_is_kept_beside_the_annotation() {
        let letter = DeadLetter {
            position: 1,
            reason: "invalid-message".into(),
            detail: "line 1: not valid JSON".into(),
            template_path: None,
            at: Utc::now(),
            event: DeadLetterEvent::Raw("{oops".into()),
        };
        let v = letter.to_json();
        assert_eq!(v["raw"], "{oops");
        assert_eq!(v["deadLetter"]["templatePath"], Value::Null);
    }
}
