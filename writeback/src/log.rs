//! Logged outcomes: the Data integration toolkit logs (a parent log per change, child logs for
//! the FHIR endpoint's warning and information issues), and sinks for tracing and tests.

use std::fmt;
use std::sync::Mutex;

use carebridge_dataverse_client::DataverseClient;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::config::Message;
use crate::{Error, Result};

/// The category of a parent log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LogStatus {
    /// Written (and Provenance created).
    Success,
    /// Written, but the FHIR endpoint returned warning or information issues ("Message
    /// processed with warnings"), or the Provenance failed.
    Warning,
    /// Not written: an error.
    Failure,
    /// Not written on purpose: no map, writeback off, message not supported, no consent.
    Skipped,
}

impl LogStatus {
    /// `"success"`, `"warning"`, `"failure"`, `"skipped"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Warning => "warning",
            Self::Failure => "failure",
            Self::Skipped => "skipped",
        }
    }
}

impl fmt::Display for LogStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A child log: one OperationOutcome issue (or a Provenance failure detail).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildLog {
    /// `fatal`, `error`, `warning` or `information`.
    pub severity: String,
    /// The issue type code (`invalid`, `business-rule`, `informational`, ...).
    pub code: String,
    /// FHIRPath locations (`Patient.birthDate`).
    pub expression: Vec<String>,
    /// The server's diagnostics text. It can quote resource content: it goes to the Dataverse
    /// log (where administrators review it), never to tracing.
    pub diagnostics: Option<String>,
}

impl ChildLog {
    pub(crate) fn from_issue(
        issue: &carebridge_fhir_model::resources::OperationOutcomeIssue,
    ) -> Self {
        Self {
            severity: issue
                .severity
                .value()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            code: issue
                .code
                .value()
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default(),
            expression: issue
                .expression
                .iter()
                .chain(issue.location.iter())
                .filter_map(|e| e.value().cloned())
                .collect(),
            diagnostics: issue.diagnostics.as_ref().and_then(|d| d.value().cloned()),
        }
    }
}

/// A parent log entry for one change.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    /// The category.
    pub status: LogStatus,
    /// A one-line summary ("Patient updated", "skipped: no consent").
    pub description: String,
    /// Details: the error chain for failures (names and codes, no column values).
    pub message: String,
    /// The Dataverse table.
    pub table: String,
    /// The Dataverse record.
    pub record_id: Uuid,
    /// The Dataverse correlation id.
    pub correlation_id: Uuid,
    /// Create or Update.
    pub change: Message,
    /// The entity map used, when one was selected.
    pub entity_map: Option<String>,
    /// What was written: `Patient/1/_history/3`, or `alternate endpoint (HTTP 202)`.
    pub target: Option<String>,
    /// Whether processing must stop (invalid connectivity settings).
    pub fatal: bool,
    /// Child logs.
    pub children: Vec<ChildLog>,
}

/// Where outcomes are recorded. Implementations must not block for long: they run inline.
#[async_trait::async_trait]
pub trait OutcomeLog: Send + Sync + fmt::Debug {
    /// Records one entry.
    ///
    /// # Errors
    /// [`Error::Log`] or [`Error::Dataverse`] when the entry could not be recorded.
    async fn record(&self, entry: &LogEntry) -> Result<()>;
}

/// Logs outcomes as `tracing` events (target `carebridge_writeback::outcome`): status, table,
/// record id, correlation id, map, target and issue codes; never diagnostics or values.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingOutcomeLog;

#[async_trait::async_trait]
impl OutcomeLog for TracingOutcomeLog {
    async fn record(&self, e: &LogEntry) -> Result<()> {
        let codes: Vec<String> = e
            .children
            .iter()
            .map(|c| format!("{}/{}", c.severity, c.code))
            .collect();
        let codes = codes.join(",");
        let map = e.entity_map.as_deref().unwrap_or("");
        let target = e.target.as_deref().unwrap_or("");
        match e.status {
            LogStatus::Failure => tracing::error!(
                target: "carebridge_writeback::outcome", status = %e.status, table = %e.table,
                record_id = %e.record_id, correlation_id = %e.correlation_id, change = %e.change,
                entity_map = map, fatal = e.fatal, message = %e.message, "{}", e.description
            ),
            LogStatus::Warning => tracing::warn!(
                target: "carebridge_writeback::outcome", status = %e.status, table = %e.table,
                record_id = %e.record_id, correlation_id = %e.correlation_id, change = %e.change,
                entity_map = map, target_resource = target, issues = %codes, "{}", e.description
            ),
            _ => tracing::info!(
                target: "carebridge_writeback::outcome", status = %e.status, table = %e.table,
                record_id = %e.record_id, correlation_id = %e.correlation_id, change = %e.change,
                entity_map = map, target_resource = target, "{}", e.description
            ),
        }
        Ok(())
    }
}

/// Keeps entries in memory (tests, examples).
#[derive(Debug, Default)]
pub struct InMemoryOutcomeLog {
    entries: Mutex<Vec<LogEntry>>,
}

impl InMemoryOutcomeLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the entries recorded so far.
    pub fn entries(&self) -> Vec<LogEntry> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait::async_trait]
impl OutcomeLog for InMemoryOutcomeLog {
    async fn record(&self, entry: &LogEntry) -> Result<()> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry.clone());
        Ok(())
    }
}

/// Table and column names of the toolkit log (Microsoft did not publish them: defaults in the
/// toolkit's `msind_` style; set yours).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolkitLogNames {
    /// Entity set of the log table.
    pub entity_set: String,
    /// Single-valued navigation property of a child log to its parent log ("Parent Transaction").
    pub parent_navigation: String,
    /// Name/description column ("Description").
    pub description_column: String,
    /// Category choice column ("Category").
    pub category_column: String,
    /// Message column ("Message").
    pub message_column: String,
    /// Source column ("Source").
    pub source_column: String,
    /// The value written to the source column.
    pub source_value: String,
    /// Choice values for success, warning, failure (error) and skipped.
    pub category_values: [i64; 4],
}

impl Default for ToolkitLogNames {
    fn default() -> Self {
        Self {
            entity_set: "msind_logs".to_owned(),
            parent_navigation: "msind_ParentTransaction".to_owned(),
            description_column: "msind_description".to_owned(),
            category_column: "msind_category".to_owned(),
            message_column: "msind_message".to_owned(),
            source_column: "msind_source".to_owned(),
            source_value: "Writeback".to_owned(),
            category_values: [935_000_000, 935_000_001, 935_000_002, 935_000_003],
        }
    }
}

/// Writes the Data integration toolkit logs with a [`DataverseClient`]: one parent log per
/// change and one child log per OperationOutcome issue, linked to the parent.
#[derive(Clone, Debug)]
pub struct DataverseOutcomeLog {
    client: DataverseClient,
    names: ToolkitLogNames,
}

impl DataverseOutcomeLog {
    /// Writes through `client` with `names`.
    pub fn new(client: DataverseClient, names: ToolkitLogNames) -> Self {
        Self { client, names }
    }

    fn category(&self, status: LogStatus) -> i64 {
        let [s, w, f, k] = self.names.category_values;
        match status {
            LogStatus::Success => s,
            LogStatus::Warning => w,
            LogStatus::Failure => f,
            LogStatus::Skipped => k,
        }
    }

    fn row(&self, description: String, category: i64, message: String) -> Map<String, Value> {
        let n = &self.names;
        let mut row = Map::new();
        row.insert(n.description_column.clone(), Value::String(description));
        row.insert(n.category_column.clone(), json!(category));
        row.insert(n.message_column.clone(), Value::String(message));
        row.insert(
            n.source_column.clone(),
            Value::String(n.source_value.clone()),
        );
        row
    }
}

#[async_trait::async_trait]
impl OutcomeLog for DataverseOutcomeLog {
    async fn record(&self, e: &LogEntry) -> Result<()> {
        let mut message = format!(
            "{} {} {} (correlation {})",
            e.change, e.table, e.record_id, e.correlation_id
        );
        if let Some(map) = &e.entity_map {
            message.push_str(&format!("; entity map {map}"));
        }
        if let Some(target) = &e.target {
            message.push_str(&format!("; target {target}"));
        }
        if !e.message.is_empty() {
            message.push_str("; ");
            message.push_str(&e.message);
        }
        let parent = self.row(e.description.clone(), self.category(e.status), message);
        let parent_id = self
            .client
            .create_record(&self.names.entity_set, &Value::Object(parent))
            .await
            .map_err(|err| Error::dataverse("write parent log", err))?;
        for child in &e.children {
            let status = match child.severity.as_str() {
                "fatal" | "error" => LogStatus::Failure,
                "warning" => LogStatus::Warning,
                _ => LogStatus::Success,
            };
            let mut text = format!("{} {}", child.severity, child.code);
            if !child.expression.is_empty() {
                text.push_str(&format!(" at {}", child.expression.join(", ")));
            }
            if let Some(d) = &child.diagnostics {
                text.push_str(": ");
                text.push_str(d);
            }
            let mut row = self.row(
                format!("{} issue from the FHIR endpoint", child.severity),
                self.category(status),
                text,
            );
            row.insert(
                format!("{}@odata.bind", self.names.parent_navigation),
                Value::String(format!("/{}({parent_id})", self.names.entity_set)),
            );
            self.client
                .create_record(&self.names.entity_set, &Value::Object(row))
                .await
                .map_err(|err| Error::dataverse("write child log", err))?;
        }
        Ok(())
    }
}
