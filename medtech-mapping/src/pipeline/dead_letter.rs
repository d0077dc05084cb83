//! Dead letters: messages that could not be mapped, kept with the reason so they can be fixed
//! and replayed.

use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::source::DEAD_LETTER_KEY;
use crate::{Error, Result};

/// The original content of a dead-lettered message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum DeadLetterEvent {
    /// The event envelope `{"Body", "Properties", "SystemProperties"}`.
    Event(Value),
    /// Input that was not JSON, as read.
    Raw(String),
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
        match &self.event {
            DeadLetterEvent::Event(Value::Object(map)) => {
                let mut map = map.clone();
                map.insert(DEAD_LETTER_KEY.to_owned(), note);
                Value::Object(map)
            }
            DeadLetterEvent::Event(other) => json!({ "Body": other, DEAD_LETTER_KEY: note }),
            DeadLetterEvent::Raw(raw) => json!({ "raw": raw, DEAD_LETTER_KEY: note }),
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
pub struct NdjsonDeadLetters<W> {
    writer: tokio::sync::Mutex<W>,
}

impl<W> fmt::Debug for NdjsonDeadLetters<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NdjsonDeadLetters").finish_non_exhaustive()
    }
}

impl<W: AsyncWrite + Unpin + Send> NdjsonDeadLetters<W> {
    /// Writes to `writer`.
    pub fn new(writer: W) -> Self {
        Self {
            writer: tokio::sync::Mutex::new(writer),
        }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.writer.into_inner()
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
        w.flush().await.map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::source::{to_event, EventPayload, EventSource, NdjsonSource};

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
        assert_eq!(replayed.payload, EventPayload::Event(event));
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
