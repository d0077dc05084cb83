//! [`Record`]: an untyped Dataverse record with access to its OData annotations.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::query::annotations;

/// An untyped record: the JSON object Dataverse returned, annotations included.
///
/// Typed access goes through serde (`get_record::<MyRow>`); use `Record` when you need the
/// annotations, e.g. `statuscode@OData.Community.Display.V1.FormattedValue` or
/// `_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname` (request them with
/// [`Query::include_annotations`](crate::Query::include_annotations)).
///
/// ```
/// use carebridge_dataverse_client::Record;
/// let r: Record = serde_json::from_value(serde_json::json!({
///     "@odata.etag": "W/\"1001\"",
///     "statuscode": 1,
///     "statuscode@OData.Community.Display.V1.FormattedValue": "Active",
///     "_parentcustomerid_value": "6ec6a1f6-2d3b-4e5b-8e56-6d0f1d0c7c1a",
///     "_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "account"
/// })).unwrap();
/// assert_eq!(r.formatted_value("statuscode"), Some("Active"));
/// assert_eq!(r.lookup_logical_name("_parentcustomerid_value"), Some("account"));
/// assert_eq!(r.etag(), Some("W/\"1001\""));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Record(pub Map<String, Value>);

impl Record {
    /// A column value (or annotation, when `name` contains `@`).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// A column value as `T`; `None` when absent, null, or of another type.
    pub fn get_as<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        self.0
            .get(name)
            .filter(|v| !v.is_null())
            .and_then(|v| T::deserialize(v).ok())
    }

    /// An annotation on a column: `{column}@{term}`.
    pub fn annotation(&self, column: &str, term: &str) -> Option<&Value> {
        self.0.get(&format!("{column}@{term}"))
    }

    /// `{column}@OData.Community.Display.V1.FormattedValue`.
    pub fn formatted_value(&self, column: &str) -> Option<&str> {
        self.annotation(column, annotations::FORMATTED_VALUE)
            .and_then(Value::as_str)
    }

    /// `{column}@Microsoft.Dynamics.CRM.lookuplogicalname`: the table a lookup points to.
    pub fn lookup_logical_name(&self, column: &str) -> Option<&str> {
        self.annotation(column, annotations::LOOKUP_LOGICAL_NAME)
            .and_then(Value::as_str)
    }

    /// `@odata.etag`, for [`UpdateOptions::if_match`](crate::UpdateOptions::if_match).
    pub fn etag(&self) -> Option<&str> {
        self.0.get("@odata.etag").and_then(Value::as_str)
    }

    /// A GUID column (e.g. the primary key `accountid`, or a lookup `_x_value`).
    pub fn id(&self, column: &str) -> Option<Uuid> {
        self.0
            .get(column)
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
    }

    /// The underlying JSON object.
    pub fn into_inner(self) -> Map<String, Value> {
        self.0
    }
}
