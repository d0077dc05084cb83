//! Custom APIs: unbound and bound actions, functions, and their metadata (`customapis`).

use http::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;
use uuid::Uuid;

use crate::client::Req;
use crate::query::{check_identifier, encode_query_value, Query, RecordKey};
use crate::{DataverseClient, Error, Result};

/// How a custom API is bound (`customapi.bindingtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BindingType {
    /// `0`: unbound (global), `POST /api/data/v9.2/{uniquename}`.
    Global,
    /// `1`: bound to one record of `bound_entity_logical_name`.
    Entity,
    /// `2`: bound to a table (collection).
    EntityCollection,
    /// A value this crate does not know.
    Other(i64),
}

impl BindingType {
    fn from_code(code: i64) -> Self {
        match code {
            0 => Self::Global,
            1 => Self::Entity,
            2 => Self::EntityCollection,
            n => Self::Other(n),
        }
    }
}

/// The data type of a custom API request parameter or response property (`type` choice).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CustomApiType {
    /// `0` Boolean.
    Boolean,
    /// `1` DateTime.
    DateTime,
    /// `2` Decimal.
    Decimal,
    /// `3` Entity.
    Entity,
    /// `4` EntityCollection.
    EntityCollection,
    /// `5` EntityReference.
    EntityReference,
    /// `6` Float.
    Float,
    /// `7` Integer.
    Integer,
    /// `8` Money.
    Money,
    /// `9` Picklist.
    Picklist,
    /// `10` String.
    String,
    /// `11` StringArray.
    StringArray,
    /// `12` Guid.
    Guid,
    /// A value this crate does not know (not validated).
    Other(i64),
}

impl CustomApiType {
    /// Maps the `type` choice value.
    pub fn from_code(code: i64) -> Self {
        match code {
            0 => Self::Boolean,
            1 => Self::DateTime,
            2 => Self::Decimal,
            3 => Self::Entity,
            4 => Self::EntityCollection,
            5 => Self::EntityReference,
            6 => Self::Float,
            7 => Self::Integer,
            8 => Self::Money,
            9 => Self::Picklist,
            10 => Self::String,
            11 => Self::StringArray,
            12 => Self::Guid,
            n => Self::Other(n),
        }
    }

    /// Checks that a JSON value has this type; returns what was expected when it does not.
    fn check(self, value: &Value) -> std::result::Result<(), &'static str> {
        let ok = match self {
            Self::Boolean => value.is_boolean(),
            Self::DateTime => value.as_str().is_some_and(|s| {
                chrono::DateTime::parse_from_rfc3339(s).is_ok()
                    || chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
            }),
            Self::Decimal | Self::Float | Self::Money => value.is_number(),
            Self::Integer | Self::Picklist => value.is_i64() || value.is_u64(),
            Self::String => value.is_string(),
            Self::StringArray => value
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string)),
            Self::Guid => value.as_str().is_some_and(|s| Uuid::parse_str(s).is_ok()),
            Self::Entity | Self::EntityReference => value.is_object(),
            Self::EntityCollection => value
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_object)),
            Self::Other(_) => true,
        };
        if ok {
            return Ok(());
        }
        Err(match self {
            Self::Boolean => "a boolean",
            Self::DateTime => "an ISO 8601 date-time string",
            Self::Decimal | Self::Float | Self::Money => "a number",
            Self::Integer | Self::Picklist => "an integer",
            Self::String => "a string",
            Self::StringArray => "an array of strings",
            Self::Guid => "a GUID string",
            Self::Entity | Self::EntityReference => "an object",
            Self::EntityCollection => "an array of objects",
            Self::Other(_) => "a value",
        })
    }
}

/// A request parameter of a custom API (`customapirequestparameter`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CustomApiParameter {
    /// `uniquename`: the JSON property name in the request body.
    pub unique_name: String,
    /// `type`.
    pub kind: CustomApiType,
    /// `isoptional`.
    pub is_optional: bool,
    /// `logicalentityname` (for entity types).
    pub logical_entity_name: Option<String>,
}

/// A response property of a custom API (`customapiresponseproperty`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CustomApiResponseProperty {
    /// `uniquename`: the JSON property name in the response body.
    pub unique_name: String,
    /// `type`.
    pub kind: CustomApiType,
    /// `logicalentityname` (for entity types).
    pub logical_entity_name: Option<String>,
}

/// The definition of a custom API, read from the `customapis` table.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CustomApiMetadata {
    /// `uniquename`.
    pub unique_name: String,
    /// `bindingtype`.
    pub binding_type: BindingType,
    /// `boundentitylogicalname` for bound APIs.
    pub bound_entity_logical_name: Option<String>,
    /// `isfunction`: a function (`GET`) rather than an action (`POST`).
    pub is_function: bool,
    /// `isprivate`.
    pub is_private: bool,
    /// `CustomAPIRequestParameters`.
    pub request_parameters: Vec<CustomApiParameter>,
    /// `CustomAPIResponseProperties`.
    pub response_properties: Vec<CustomApiResponseProperty>,
}

impl CustomApiMetadata {
    /// Checks a request body against the definition before it is sent: it must be a JSON
    /// object, have every non-optional parameter (non-null), no unknown parameter (`@odata.*`
    /// annotations are allowed), and values of the declared types.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the API and parameter (never the value).
    pub fn validate_request(&self, request: &Value) -> Result<()> {
        let what = |p: &str| format!("custom API `{}` parameter `{p}`", self.unique_name);
        let obj = match request {
            Value::Object(o) => o,
            Value::Null if self.request_parameters.iter().all(|p| p.is_optional) => return Ok(()),
            _ => {
                return Err(Error::invalid_input(
                    format!("custom API `{}` request", self.unique_name),
                    "must be a JSON object",
                ))
            }
        };
        for p in &self.request_parameters {
            match obj.get(&p.unique_name) {
                None | Some(Value::Null) if !p.is_optional => {
                    return Err(Error::invalid_input(what(&p.unique_name), "is required"))
                }
                None | Some(Value::Null) => {}
                Some(v) => p.kind.check(v).map_err(|expected| {
                    Error::invalid_input(what(&p.unique_name), format!("must be {expected}"))
                })?,
            }
        }
        for name in obj.keys() {
            if name.contains('@') {
                continue;
            }
            if !self
                .request_parameters
                .iter()
                .any(|p| &p.unique_name == name)
            {
                return Err(Error::invalid_input(
                    what(name),
                    "is not defined by the API",
                ));
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct RawParam {
    uniquename: String,
    #[serde(rename = "type")]
    kind: i64,
    #[serde(default)]
    isoptional: bool,
    #[serde(default)]
    logicalentityname: Option<String>,
}

#[derive(Deserialize)]
struct RawApi {
    uniquename: String,
    #[serde(default)]
    bindingtype: i64,
    #[serde(default)]
    boundentitylogicalname: Option<String>,
    #[serde(default)]
    isfunction: bool,
    #[serde(default)]
    isprivate: bool,
    #[serde(rename = "CustomAPIRequestParameters", default)]
    request: Vec<RawParam>,
    #[serde(rename = "CustomAPIResponseProperties", default)]
    response: Vec<RawParam>,
}

#[derive(Deserialize)]
struct RawList {
    value: Vec<RawApi>,
}

/// Renders function parameters as `(A=@p1,B=@p2)` plus the alias query string.
fn function_call(name: &str, params: &[(&str, Value)]) -> Result<(String, String)> {
    let mut args = Vec::with_capacity(params.len());
    let mut aliases = Vec::with_capacity(params.len());
    for (i, (param, value)) in params.iter().enumerate() {
        check_identifier(&format!("function `{name}` parameter name"), param)?;
        let literal = match value {
            Value::String(s) => Query::quote(s),
            Value::Object(_) | Value::Array(_) => value.to_string(),
            other => other.to_string(),
        };
        args.push(format!("{param}=@p{}", i + 1));
        aliases.push(format!("@p{}={}", i + 1, encode_query_value(&literal)));
    }
    Ok((format!("{name}({})", args.join(",")), aliases.join("&")))
}

impl DataverseClient {
    fn operation_url(&self, path: &str, query: &str) -> Result<Url> {
        let mut s = format!("{}{path}", self.inner.api_base);
        if !query.is_empty() {
            s.push('?');
            s.push_str(query);
        }
        Url::parse(&s).map_err(|e| Error::invalid_input("request URL", e.to_string()))
    }

    /// Calls an unbound action or custom API: `POST /api/data/v9.2/{unique_name}` with
    /// `request` as the JSON body; decodes the response properties into `Resp`.
    ///
    /// Use `()` or `Option<T>` for APIs without response properties (`204 No Content`). Typed
    /// structs ignore `@odata.context`. An action is a `POST`: it is retried only after `429`
    /// and `401`, never after timeouts or `5xx`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a malformed `unique_name` or an unserializable request;
    /// [`Error::NotFound`] if no such API is visible; [`Error::InvalidArgument`] when Dataverse
    /// rejects the parameters; [`Error::Decode`] if the answer is not a `Resp`; the common errors.
    pub async fn call_custom_api<Rq, Resp>(&self, unique_name: &str, request: &Rq) -> Result<Resp>
    where
        Rq: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        check_identifier("custom API unique name", unique_name)?;
        let url = self.operation_url(unique_name, "")?;
        let req = Req::new(Method::POST, url, unique_name).json_body(&request)?;
        self.send(req).await?.json()
    }

    /// [`call_custom_api`](Self::call_custom_api) with raw JSON in and out (`null` for no content).
    ///
    /// # Errors
    /// As [`call_custom_api`](Self::call_custom_api).
    pub async fn call_custom_api_json(&self, unique_name: &str, request: &Value) -> Result<Value> {
        self.call_custom_api(unique_name, request).await
    }

    /// Validates `request` against `metadata` ([`CustomApiMetadata::validate_request`]), then
    /// calls it: an unbound action with [`call_custom_api`](Self::call_custom_api), an unbound
    /// function with [`call_function`](Self::call_function) (parameters from the object).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if validation fails, or the API is bound (use
    /// [`call_bound_action`](Self::call_bound_action) / [`call_bound_function`](Self::call_bound_function));
    /// otherwise as the call made.
    pub async fn call_custom_api_checked<Rq, Resp>(
        &self,
        metadata: &CustomApiMetadata,
        request: &Rq,
    ) -> Result<Resp>
    where
        Rq: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let value = serde_json::to_value(request).map_err(|e| {
            Error::invalid_input(
                "custom API request",
                format!("cannot serialize to JSON: {e}"),
            )
        })?;
        metadata.validate_request(&value)?;
        if metadata.binding_type != BindingType::Global {
            return Err(Error::invalid_input(
                format!("custom API `{}`", metadata.unique_name),
                "is bound; call it with call_bound_action or call_bound_function",
            ));
        }
        if metadata.is_function {
            let params: Vec<(&str, Value)> = value
                .as_object()
                .map(|o| o.iter().map(|(k, v)| (k.as_str(), v.clone())).collect())
                .unwrap_or_default();
            self.call_function(&metadata.unique_name, &params).await
        } else {
            self.call_custom_api(&metadata.unique_name, &value).await
        }
    }

    /// Calls an action bound to one record:
    /// `POST {entity_set}({id})/Microsoft.Dynamics.CRM.{unique_name}`.
    ///
    /// # Errors
    /// As [`call_custom_api`](Self::call_custom_api).
    pub async fn call_bound_action<Rq, Resp>(
        &self,
        entity_set: &str,
        id: Uuid,
        unique_name: &str,
        request: &Rq,
    ) -> Result<Resp>
    where
        Rq: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        check_identifier("custom API unique name", unique_name)?;
        let url = self.url_for(
            entity_set,
            Some(&RecordKey::Id(id)),
            Some(&format!("Microsoft.Dynamics.CRM.{unique_name}")),
            None,
        )?;
        let label = format!("{entity_set}/{unique_name}");
        let req = Req::new(Method::POST, url, &label).json_body(&request)?;
        self.send(req).await?.json()
    }

    /// Calls an unbound function: `GET /api/data/v9.2/{name}(A=@p1,…)?@p1=…`.
    ///
    /// Parameter values are passed as aliases: strings become quoted OData literals, numbers and
    /// booleans stay as they are, objects and arrays are sent as JSON (e.g. entity references
    /// `{"@odata.id":"accounts(…)"}`). Functions are `GET`s and are retried on transient failures.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for malformed names; otherwise as [`call_custom_api`](Self::call_custom_api).
    pub async fn call_function<Resp: DeserializeOwned>(
        &self,
        name: &str,
        params: &[(&str, Value)],
    ) -> Result<Resp> {
        check_identifier("function name", name)?;
        let (path, query) = function_call(name, params)?;
        let url = self.operation_url(&path, &query)?;
        self.send(Req::new(Method::GET, url, name)).await?.json()
    }

    /// Calls a function bound to one record:
    /// `GET {entity_set}({id})/Microsoft.Dynamics.CRM.{name}(…)`.
    ///
    /// # Errors
    /// As [`call_function`](Self::call_function).
    pub async fn call_bound_function<Resp: DeserializeOwned>(
        &self,
        entity_set: &str,
        id: Uuid,
        name: &str,
        params: &[(&str, Value)],
    ) -> Result<Resp> {
        check_identifier("function name", name)?;
        let (call, query) = function_call(name, params)?;
        let url = self.url_for(
            entity_set,
            Some(&RecordKey::Id(id)),
            Some(&format!("Microsoft.Dynamics.CRM.{call}")),
            Some(&query),
        )?;
        let label = format!("{entity_set}/{name}");
        self.send(Req::new(Method::GET, url, &label)).await?.json()
    }

    /// Reads a custom API definition with its request parameters and response properties:
    /// `GET customapis?$filter=uniquename eq '…'&$expand=CustomAPIRequestParameters(…),CustomAPIResponseProperties(…)`.
    ///
    /// Use it to [validate](CustomApiMetadata::validate_request) a call before sending it (the
    /// caller needs read access to the `customapi` tables).
    ///
    /// # Errors
    /// [`Error::CustomApiNotFound`] when no API has this unique name; [`Error::InvalidInput`] for
    /// a malformed name; [`Error::Decode`] and the common errors.
    pub async fn get_custom_api_metadata(&self, unique_name: &str) -> Result<CustomApiMetadata> {
        check_identifier("custom API unique name", unique_name)?;
        let query = Query::new()
            .select([
                "uniquename",
                "bindingtype",
                "boundentitylogicalname",
                "isfunction",
                "isprivate",
            ])
            .filter(format!("uniquename eq {}", Query::quote(unique_name)))
            .expand(
                "CustomAPIRequestParameters($select=uniquename,type,isoptional,logicalentityname)",
            )
            .expand("CustomAPIResponseProperties($select=uniquename,type,logicalentityname)");
        let url = self.url_for("customapis", None, None, Some(&query.to_query_string()))?;
        let list: RawList = self
            .send(Req::new(Method::GET, url, "customapis"))
            .await?
            .json()?;
        let raw = list
            .value
            .into_iter()
            .find(|a| a.uniquename.eq_ignore_ascii_case(unique_name))
            .ok_or_else(|| Error::CustomApiNotFound {
                unique_name: unique_name.to_owned(),
            })?;
        Ok(CustomApiMetadata {
            unique_name: raw.uniquename,
            binding_type: BindingType::from_code(raw.bindingtype),
            bound_entity_logical_name: raw.boundentitylogicalname,
            is_function: raw.isfunction,
            is_private: raw.isprivate,
            request_parameters: raw
                .request
                .into_iter()
                .map(|p| CustomApiParameter {
                    unique_name: p.uniquename,
                    kind: CustomApiType::from_code(p.kind),
                    is_optional: p.isoptional,
                    logical_entity_name: p.logicalentityname,
                })
                .collect(),
            response_properties: raw
                .response
                .into_iter()
                .map(|p| CustomApiResponseProperty {
                    unique_name: p.uniquename,
                    kind: CustomApiType::from_code(p.kind),
                    logical_entity_name: p.logicalentityname,
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta() -> CustomApiMetadata {
        CustomApiMetadata {
            unique_name: "msemr_Test".into(),
            binding_type: BindingType::Global,
            bound_entity_logical_name: None,
            is_function: false,
            is_private: false,
            request_parameters: vec![
                CustomApiParameter {
                    unique_name: "StatusCode".into(),
                    kind: CustomApiType::Integer,
                    is_optional: false,
                    logical_entity_name: None,
                },
                CustomApiParameter {
                    unique_name: "ErrorMessage".into(),
                    kind: CustomApiType::String,
                    is_optional: true,
                    logical_entity_name: None,
                },
            ],
            response_properties: vec![],
        }
    }

    #[test]
    fn validation_accepts_and_rejects() {
        let m = meta();
        assert!(m.validate_request(&json!({"StatusCode": 200})).is_ok());
        assert!(m
            .validate_request(&json!({"StatusCode": 200, "ErrorMessage": null}))
            .is_ok());
        let err = m
            .validate_request(&json!({"ErrorMessage": "x"}))
            .unwrap_err();
        assert!(err.to_string().contains("StatusCode"), "{err}");
        assert!(m.validate_request(&json!({"StatusCode": "200"})).is_err());
        assert!(m
            .validate_request(&json!({"StatusCode": 1, "Extra": 1}))
            .is_err());
        assert!(m.validate_request(&json!([1])).is_err());
    }

    #[test]
    fn types_check_values() {
        assert!(CustomApiType::Guid
            .check(&json!("7eb682f1-ca75-e511-80d4-00155d2a68d1"))
            .is_ok());
        assert!(CustomApiType::Guid.check(&json!("nope")).is_err());
        assert!(CustomApiType::DateTime
            .check(&json!("2024-01-02T03:04:05Z"))
            .is_ok());
        assert!(CustomApiType::StringArray.check(&json!(["a", 1])).is_err());
        assert!(CustomApiType::Other(99).check(&json!(null)).is_ok());
    }

    #[test]
    fn function_parameters_become_aliases() {
        let (path, query) = function_call(
            "msemr_Lookup",
            &[("Name", json!("O'Hara")), ("Top", json!(5))],
        )
        .unwrap();
        assert_eq!(path, "msemr_Lookup(Name=@p1,Top=@p2)");
        assert_eq!(query, "@p1='O''Hara'&@p2=5");
        assert!(function_call("f", &[("bad name", json!(1))]).is_err());
    }
}
