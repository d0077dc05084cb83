//! JSON Patch ([RFC 6902](https://www.rfc-editor.org/rfc/rfc6902)) operations for
//! [`FhirClient::patch`](crate::FhirClient::patch).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One JSON Patch operation. Paths are JSON Pointers into the resource (`/name/0/family`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum PatchOperation {
    /// Adds `value` at `path` (`/-` appends to an array).
    Add {
        /// Target location.
        path: String,
        /// The value to add.
        value: Value,
    },
    /// Removes the value at `path`.
    Remove {
        /// Target location.
        path: String,
    },
    /// Replaces the value at `path`.
    Replace {
        /// Target location.
        path: String,
        /// The new value.
        value: Value,
    },
    /// Moves the value at `from` to `path`.
    Move {
        /// Source location.
        from: String,
        /// Target location.
        path: String,
    },
    /// Copies the value at `from` to `path`.
    Copy {
        /// Source location.
        from: String,
        /// Target location.
        path: String,
    },
    /// Fails the whole patch unless the value at `path` equals `value`.
    Test {
        /// Location to test.
        path: String,
        /// The expected value.
        value: Value,
    },
}

impl PatchOperation {
    /// `add`.
    pub fn add(path: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::Add {
            path: path.into(),
            value: value.into(),
        }
    }

    /// `remove`.
    pub fn remove(path: impl Into<String>) -> Self {
        Self::Remove { path: path.into() }
    }

    /// `replace`.
    pub fn replace(path: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::Replace {
            path: path.into(),
            value: value.into(),
        }
    }

    /// `test`.
    pub fn test(path: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::Test {
            path: path.into(),
            value: value.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_rfc6902_shape() {
        let ops = vec![
            PatchOperation::replace("/active", false),
            PatchOperation::remove("/telecom/0"),
            PatchOperation::Move {
                from: "/a".into(),
                path: "/b".into(),
            },
        ];
        assert_eq!(
            serde_json::to_value(&ops).unwrap(),
            serde_json::json!([
                {"op": "replace", "path": "/active", "value": false},
                {"op": "remove", "path": "/telecom/0"},
                {"op": "move", "from": "/a", "path": "/b"}
            ])
        );
    }
}
