//! Installs the ten device-data custom APIs in a Dataverse environment, idempotently.
//!
//! Seed 000 names the five outbound and five inbound custom APIs and their parameters, and tells
//! flow makers to find the outbound ones under Catalog "Device Management", Category "Device
//! Management Partner Integration Outbound". This module writes exactly that through the
//! documented custom API tables (Microsoft Learn, *CustomAPI tables*, *Create a custom API with
//! code*) and the catalog tables (*Catalog and CatalogAssignment tables*):
//!
//! | table (entity set) | what is written |
//! |---|---|
//! | `customapi` (`customapis`) | `uniquename`, `name`, `displayname`, `description`, `bindingtype` 0 (Global), `isfunction` false, `allowedcustomprocessingsteptype` |
//! | `customapirequestparameter` (`customapirequestparameters`) | `uniquename`, `name`, `displayname`, `description`, `type` (7 Integer, 10 String), `isoptional` |
//! | `catalog` (`catalogs`) | the catalog (first level) and the category (second level, `ParentCatalogId`) |
//! | `catalogassignment` (`catalogassignments`) | one row per outbound API in the category |
//!
//! A new API is created with its request parameters in one deep insert (`POST customapis` with
//! `CustomAPIRequestParameters`); a parameter missing from an existing API is added on its own
//! (`POST customapirequestparameters` with `CustomAPIId@odata.bind`).
//!
//! **Parameters.** The flow answers by calling the inbound API as an unbound action, so the shared
//! response contract (`StatusCode` Integer, `ErrorMessage`, `OutboundRequest`, `FlowUrl`, and for
//! Sync Devices `Content`, all String) are the inbound API's *request parameters*; `StatusCode`
//! and `OutboundRequest` are required, the others optional (an error message only accompanies a
//! failure, `Content` only a successful sync). The outbound API has one required String request
//! parameter, `OutboundRequest`. Neither declares response properties: nobody reads an answer
//! from them (the outbound result travels through the inbound call).
//!
//! **Processing steps.** The Dataverse "When an action is performed" trigger only lists APIs that
//! allow asynchronous steps, and this crate's receiver may be registered as a synchronous webhook,
//! so outbound APIs allow both (`2`, Sync and Async); the inbound APIs' logic runs as an
//! asynchronous step ([`InboundProcessor`](crate::InboundProcessor) behind a webhook), so they
//! allow `1` (Async only). Both are configurable.
//!
//! **Idempotence.** [`RegistrationPlan::build`] reads what exists and compares it with what
//! should exist; nothing is written until [`RegistrationPlan::apply`]. A second run over a correct
//! environment plans no write. Columns Dataverse lets you change after saving (`name`,
//! `displayname`, `description`) are updated in place; a difference in a column it does not
//! (`bindingtype`, `isfunction`, `allowedcustomprocessingsteptype`, a parameter's `type` or
//! `isoptional`, a category's parent) is reported and left alone: fixing it means deleting and
//! recreating the API, which this module never does. Extra parameters on an existing API are
//! reported too, never deleted.
//!
//! Check mode is [`RegistrationPlan::build`] and [`RegistrationPlan::items`] without `apply`.
//!
//! ```
//! # use std::sync::Arc;
//! # use carebridge_auth::StaticToken;
//! # use carebridge_dataverse_client::DataverseClient;
//! use carebridge_device_contract::registration::{RegistrationOptions, RegistrationPlan};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let server = wiremock::MockServer::start().await;
//! # wiremock::Mock::given(wiremock::matchers::method("GET"))
//! #     .respond_with(wiremock::ResponseTemplate::new(200)
//! #         .set_body_json(serde_json::json!({"value": []})))
//! #     .mount(&server).await;
//! # let client = DataverseClient::new(&server.uri(), Arc::new(StaticToken::new("t")), None)?;
//! let plan = RegistrationPlan::build(&client, &RegistrationOptions::default()).await?;
//! // Check mode: list what would change, write nothing.
//! for item in plan.items() {
//!     println!("{item}");
//! }
//! assert!(plan.has_changes());
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;

use carebridge_dataverse_client::{DataverseClient, Query, Record};
use futures::TryStreamExt;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{ContractNames, Error, Result, CATALOG, OUTBOUND_CATEGORY};

mod desired;

use desired::{desired_apis, ApiSpec};

/// `customapi.allowedcustomprocessingsteptype` (cannot be changed after the API is saved).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProcessingStepType {
    /// `0`: no custom processing steps.
    None,
    /// `1`: asynchronous steps only.
    AsyncOnly,
    /// `2`: synchronous and asynchronous steps.
    SyncAndAsync,
}

impl ProcessingStepType {
    /// The choice value.
    pub fn code(self) -> i64 {
        match self {
            Self::None => 0,
            Self::AsyncOnly => 1,
            Self::SyncAndAsync => 2,
        }
    }
}

/// The data type of a request parameter (`customapirequestparameter.type`), the two the seed uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParameterType {
    /// `7` Integer ("Status code").
    Integer,
    /// `10` String (every other parameter).
    String,
}

impl ParameterType {
    /// The choice value.
    pub fn code(self) -> i64 {
        match self {
            Self::Integer => 7,
            Self::String => 10,
        }
    }
}

/// Where the outbound APIs appear in the Power Automate action trigger: a catalog (first level)
/// and a category (second level) of the `catalog` table, with their unique names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogPlacement {
    /// Unique name of the catalog (default `msemr_DeviceManagement`).
    pub catalog_unique_name: String,
    /// Display name of the catalog (default [`CATALOG`], "Device Management").
    pub catalog_display_name: String,
    /// Unique name of the category (default `msemr_DeviceManagementPartnerIntegrationOutbound`).
    pub category_unique_name: String,
    /// Display name of the category (default [`OUTBOUND_CATEGORY`]).
    pub category_display_name: String,
    /// The `catalogassignment` navigation property that binds the assigned custom API (default
    /// `object_customapi`: the `object` column is a polymorphic lookup, and Dataverse names such
    /// navigation properties `{column}_{table}`; check your environment's `$metadata`).
    pub object_navigation_property: String,
}

impl Default for CatalogPlacement {
    fn default() -> Self {
        Self {
            catalog_unique_name: "msemr_DeviceManagement".to_owned(),
            catalog_display_name: CATALOG.to_owned(),
            category_unique_name: "msemr_DeviceManagementPartnerIntegrationOutbound".to_owned(),
            category_display_name: OUTBOUND_CATEGORY.to_owned(),
            object_navigation_property: "object_customapi".to_owned(),
        }
    }
}

/// What to register. Every field has a default matching seed 000 and this crate's names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationOptions {
    /// The custom API and parameter unique names (the same configuration the bridge and the
    /// inbound processor use).
    pub names: ContractNames,
    /// Processing steps the outbound APIs allow (default [`ProcessingStepType::SyncAndAsync`]).
    pub outbound_step_type: ProcessingStepType,
    /// Processing steps the inbound APIs allow (default [`ProcessingStepType::AsyncOnly`]).
    pub inbound_step_type: ProcessingStepType,
    /// The catalog and category of the outbound APIs; `None` skips the catalog tables.
    pub catalog: Option<CatalogPlacement>,
}

impl Default for RegistrationOptions {
    fn default() -> Self {
        Self {
            names: ContractNames::default(),
            outbound_step_type: ProcessingStepType::SyncAndAsync,
            inbound_step_type: ProcessingStepType::AsyncOnly,
            catalog: Some(CatalogPlacement::default()),
        }
    }
}

/// One thing registration manages.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Component {
    /// A custom API, by unique name.
    CustomApi(String),
    /// A request parameter of a custom API.
    RequestParameter {
        /// The API's unique name.
        api: String,
        /// The parameter's unique name.
        parameter: String,
    },
    /// A catalog row (catalog or category), by unique name.
    Catalog(String),
    /// The assignment of a custom API to a category.
    CatalogAssignment {
        /// The API's unique name.
        api: String,
        /// The category's unique name.
        category: String,
    },
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CustomApi(name) => write!(f, "custom API `{name}`"),
            Self::RequestParameter { api, parameter } => {
                write!(f, "request parameter `{parameter}` of `{api}`")
            }
            Self::Catalog(name) => write!(f, "catalog `{name}`"),
            Self::CatalogAssignment { api, category } => {
                write!(f, "assignment of `{api}` to `{category}`")
            }
        }
    }
}

/// How a component compares with what should exist.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Finding {
    /// It does not exist; `apply` creates it.
    Missing,
    /// It exists and is correct; `apply` leaves it alone.
    Correct,
    /// It exists with different values in `fields` (column names). When `fixable`, `apply`
    /// updates them; otherwise Dataverse does not allow changing them (or the component is
    /// extra) and `apply` leaves it alone, reporting it again.
    Differs {
        /// The differing columns (`displayname`, `isfunction`, ...; `exists` for an extra
        /// parameter).
        fields: Vec<&'static str>,
        /// Whether `apply` can update them in place.
        fixable: bool,
    },
}

/// One line of a plan: a component and how it compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanItem {
    /// What.
    pub component: Component,
    /// How it compares.
    pub finding: Finding,
}

impl fmt::Display for PlanItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.finding {
            Finding::Missing => write!(f, "missing: {}", self.component),
            Finding::Correct => write!(f, "correct: {}", self.component),
            Finding::Differs { fields, fixable } => write!(
                f,
                "differs: {} ({}){}",
                self.component,
                fields.join(", "),
                if *fixable {
                    ""
                } else {
                    " - cannot be changed in place"
                }
            ),
        }
    }
}

/// What `apply` did to a component.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Created.
    Created,
    /// Updated the listed columns.
    Updated(Vec<&'static str>),
    /// Already correct; nothing written.
    AlreadyCorrect,
    /// Differs in columns that cannot be changed in place; nothing written.
    Differs(Vec<&'static str>),
}

/// The result of [`RegistrationPlan::apply`]: one outcome per component, in plan order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistrationReport {
    /// Each component and what happened to it.
    pub outcomes: Vec<(Component, Outcome)>,
}

impl RegistrationReport {
    /// The components with a given kind of outcome.
    fn count(&self, pred: impl Fn(&Outcome) -> bool) -> usize {
        self.outcomes.iter().filter(|(_, o)| pred(o)).count()
    }

    /// How many components were created.
    pub fn created(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Created))
    }

    /// How many components were updated.
    pub fn updated(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Updated(_)))
    }

    /// How many components were already correct.
    pub fn already_correct(&self) -> usize {
        self.count(|o| matches!(o, Outcome::AlreadyCorrect))
    }

    /// The components left differing (columns Dataverse does not let us change, extra parameters).
    pub fn differing(&self) -> impl Iterator<Item = (&Component, &[&'static str])> {
        self.outcomes.iter().filter_map(|(c, o)| match o {
            Outcome::Differs(fields) => Some((c, fields.as_slice())),
            _ => None,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Plan

/// A reference to a row: known, or created earlier in the same `apply`.
#[derive(Clone, Debug)]
enum RowRef {
    Known(Uuid),
    Planned(Component),
}

#[derive(Clone, Debug)]
enum Action {
    Create {
        entity_set: &'static str,
        body: Map<String, Value>,
        /// `(navigation property, entity set, row)` lookups bound at apply time.
        binds: Vec<(String, &'static str, RowRef)>,
    },
    Update {
        entity_set: &'static str,
        id: Uuid,
        body: Map<String, Value>,
        fields: Vec<&'static str>,
    },
}

#[derive(Clone, Debug)]
struct Step {
    item: PlanItem,
    action: Option<Action>,
}

/// What registration would do, computed from what exists ([`build`](Self::build)) and carried out
/// by [`apply`](Self::apply). Its [`items`](Self::items) are the `--check` report.
#[derive(Clone, Debug)]
pub struct RegistrationPlan {
    steps: Vec<Step>,
}

#[derive(Debug, serde::Deserialize)]
struct ExistingParam {
    #[serde(default)]
    customapirequestparameterid: Option<Uuid>,
    uniquename: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    displayname: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(rename = "type")]
    kind: i64,
    #[serde(default)]
    isoptional: bool,
}

#[derive(Debug, serde::Deserialize)]
struct ExistingApi {
    customapiid: Uuid,
    uniquename: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    displayname: Option<String>,
    #[serde(default)]
    description: Option<String>,
    bindingtype: i64,
    isfunction: bool,
    allowedcustomprocessingsteptype: i64,
    #[serde(rename = "CustomAPIRequestParameters", default)]
    parameters: Vec<ExistingParam>,
}

#[derive(Debug, serde::Deserialize)]
struct ExistingCatalog {
    catalogid: Uuid,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    displayname: Option<String>,
    #[serde(rename = "_parentcatalogid_value", default)]
    parent: Option<Uuid>,
}

fn read_err(table: &'static str) -> impl FnOnce(carebridge_dataverse_client::Error) -> Error {
    move |e| Error::registration("read", table, e)
}

async fn list<T: serde::de::DeserializeOwned + Send + 'static>(
    client: &DataverseClient,
    entity_set: &'static str,
    query: &Query,
) -> Result<Vec<T>> {
    client
        .list_records::<T>(entity_set, query)
        .try_collect()
        .await
        .map_err(read_err(entity_set))
}

/// The mutable text columns that differ; `None` on the service side counts as empty.
fn text_diffs(
    pairs: &[(&'static str, Option<&str>, &str)],
    body: &mut Map<String, Value>,
) -> Vec<&'static str> {
    let mut fields = Vec::new();
    for &(column, have, want) in pairs {
        if have.unwrap_or_default() != want {
            fields.push(column);
            body.insert(column.to_owned(), Value::from(want));
        }
    }
    fields
}

fn finding_for(fixable: Vec<&'static str>, fixed: Vec<&'static str>) -> Finding {
    if fixable.is_empty() && fixed.is_empty() {
        Finding::Correct
    } else if fixed.is_empty() {
        Finding::Differs {
            fields: fixable,
            fixable: true,
        }
    } else {
        let mut fields = fixed;
        fields.extend(fixable);
        Finding::Differs {
            fields,
            fixable: false,
        }
    }
}

impl RegistrationPlan {
    /// Reads the custom APIs, their request parameters and the catalog rows named by `options`
    /// and compares them with what should exist. Writes nothing.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] for an empty unique name; [`Error::Registration`] when a
    /// read fails (no permission on the custom API or catalog tables, transport).
    #[tracing::instrument(name = "device_contract.registration.plan", skip_all, err(Display))]
    pub async fn build(client: &DataverseClient, options: &RegistrationOptions) -> Result<Self> {
        let apis = desired_apis(options);
        for api in &apis {
            if api.unique_name.trim().is_empty()
                || api
                    .parameters
                    .iter()
                    .any(|p| p.unique_name.trim().is_empty())
            {
                return Err(Error::InvalidConfiguration {
                    reason: "custom API and parameter unique names must not be empty".to_owned(),
                });
            }
        }
        let mut steps = Vec::new();
        let mut api_ids: HashMap<String, Uuid> = HashMap::new();
        for api in &apis {
            Self::plan_api(client, api, &mut steps, &mut api_ids).await?;
        }
        if let Some(placement) = &options.catalog {
            Self::plan_catalog(client, placement, &apis, &api_ids, &mut steps).await?;
        }
        Ok(Self { steps })
    }

    async fn plan_api(
        client: &DataverseClient,
        api: &ApiSpec,
        steps: &mut Vec<Step>,
        api_ids: &mut HashMap<String, Uuid>,
    ) -> Result<()> {
        let query = Query::new()
            .select([
                "customapiid",
                "uniquename",
                "name",
                "displayname",
                "description",
                "bindingtype",
                "isfunction",
                "allowedcustomprocessingsteptype",
            ])
            .filter(format!("uniquename eq {}", Query::quote(&api.unique_name)))
            .expand(
                "CustomAPIRequestParameters($select=customapirequestparameterid,uniquename,name,displayname,description,type,isoptional)",
            );
        let found: Vec<ExistingApi> = list(client, "customapis", &query).await?;
        let api_component = Component::CustomApi(api.unique_name.clone());
        let Some(existing) = found
            .into_iter()
            .find(|a| a.uniquename.eq_ignore_ascii_case(&api.unique_name))
        else {
            let Value::Object(body) = api.body() else {
                return Ok(());
            };
            steps.push(Step {
                item: PlanItem {
                    component: api_component,
                    finding: Finding::Missing,
                },
                action: Some(Action::Create {
                    entity_set: "customapis",
                    body,
                    binds: Vec::new(),
                }),
            });
            // The parameters come with the API (deep insert): listed for the report only.
            for p in &api.parameters {
                steps.push(Step {
                    item: PlanItem {
                        component: Component::RequestParameter {
                            api: api.unique_name.clone(),
                            parameter: p.unique_name.clone(),
                        },
                        finding: Finding::Missing,
                    },
                    action: None,
                });
            }
            return Ok(());
        };
        api_ids.insert(api.unique_name.clone(), existing.customapiid);

        let mut body = Map::new();
        let fixable = text_diffs(
            &[
                ("name", existing.name.as_deref(), &api.unique_name),
                (
                    "displayname",
                    existing.displayname.as_deref(),
                    &api.display_name,
                ),
                (
                    "description",
                    existing.description.as_deref(),
                    &api.description,
                ),
            ],
            &mut body,
        );
        let mut fixed = Vec::new();
        if existing.bindingtype != 0 {
            fixed.push("bindingtype");
        }
        if existing.isfunction {
            fixed.push("isfunction");
        }
        if existing.allowedcustomprocessingsteptype != api.step_type.code() {
            fixed.push("allowedcustomprocessingsteptype");
        }
        let finding = finding_for(fixable.clone(), fixed);
        let action = (!fixable.is_empty()).then_some(Action::Update {
            entity_set: "customapis",
            id: existing.customapiid,
            body,
            fields: fixable,
        });
        steps.push(Step {
            item: PlanItem {
                component: api_component,
                finding,
            },
            action,
        });

        for want in &api.parameters {
            let component = Component::RequestParameter {
                api: api.unique_name.clone(),
                parameter: want.unique_name.clone(),
            };
            let have = existing
                .parameters
                .iter()
                .find(|p| p.uniquename.eq_ignore_ascii_case(&want.unique_name));
            let step = match have {
                None => {
                    let Value::Object(body) = want.body() else {
                        continue;
                    };
                    Step {
                        item: PlanItem {
                            component,
                            finding: Finding::Missing,
                        },
                        action: Some(Action::Create {
                            entity_set: "customapirequestparameters",
                            body,
                            binds: vec![(
                                "CustomAPIId".to_owned(),
                                "customapis",
                                RowRef::Known(existing.customapiid),
                            )],
                        }),
                    }
                }
                Some(have) => {
                    let mut body = Map::new();
                    let fixable = text_diffs(
                        &[
                            ("name", have.name.as_deref(), &want.unique_name),
                            (
                                "displayname",
                                have.displayname.as_deref(),
                                &want.display_name,
                            ),
                            (
                                "description",
                                have.description.as_deref(),
                                &want.description,
                            ),
                        ],
                        &mut body,
                    );
                    let mut fixed = Vec::new();
                    if have.kind != want.kind.code() {
                        fixed.push("type");
                    }
                    if have.isoptional != want.is_optional {
                        fixed.push("isoptional");
                    }
                    let finding = finding_for(fixable.clone(), fixed);
                    let action = match (have.customapirequestparameterid, fixable.is_empty()) {
                        (Some(id), false) => Some(Action::Update {
                            entity_set: "customapirequestparameters",
                            id,
                            body,
                            fields: fixable,
                        }),
                        _ => None,
                    };
                    Step {
                        item: PlanItem { component, finding },
                        action,
                    }
                }
            };
            steps.push(step);
        }
        for extra in existing.parameters.iter().filter(|have| {
            !api.parameters
                .iter()
                .any(|w| w.unique_name.eq_ignore_ascii_case(&have.uniquename))
        }) {
            steps.push(Step {
                item: PlanItem {
                    component: Component::RequestParameter {
                        api: api.unique_name.clone(),
                        parameter: extra.uniquename.clone(),
                    },
                    finding: Finding::Differs {
                        fields: vec!["exists"],
                        fixable: false,
                    },
                },
                action: None,
            });
        }
        Ok(())
    }

    async fn plan_catalog(
        client: &DataverseClient,
        placement: &CatalogPlacement,
        apis: &[ApiSpec],
        api_ids: &HashMap<String, Uuid>,
        steps: &mut Vec<Step>,
    ) -> Result<()> {
        let catalog_ref = Self::plan_catalog_row(
            client,
            &placement.catalog_unique_name,
            &placement.catalog_display_name,
            "Device data partner integration (care management).",
            None,
            steps,
        )
        .await?;
        let category_ref = Self::plan_catalog_row(
            client,
            &placement.category_unique_name,
            &placement.category_display_name,
            "Outbound custom APIs that trigger the device vendor flows.",
            Some(catalog_ref),
            steps,
        )
        .await?;
        for api in apis.iter().filter(|a| a.outbound) {
            let component = Component::CatalogAssignment {
                api: api.unique_name.clone(),
                category: placement.category_unique_name.clone(),
            };
            let existing = match (&category_ref, api_ids.get(&api.unique_name)) {
                (RowRef::Known(category), Some(api_id)) => {
                    let query = Query::new().select(["catalogassignmentid"]).filter(format!(
                        "_catalogid_value eq {category} and _object_value eq {api_id}"
                    ));
                    !list::<Record>(client, "catalogassignments", &query)
                        .await?
                        .is_empty()
                }
                _ => false,
            };
            let api_ref = match api_ids.get(&api.unique_name) {
                Some(id) => RowRef::Known(*id),
                None => RowRef::Planned(Component::CustomApi(api.unique_name.clone())),
            };
            steps.push(if existing {
                Step {
                    item: PlanItem {
                        component,
                        finding: Finding::Correct,
                    },
                    action: None,
                }
            } else {
                let mut body = Map::new();
                body.insert("name".to_owned(), Value::from(api.unique_name.as_str()));
                Step {
                    item: PlanItem {
                        component,
                        finding: Finding::Missing,
                    },
                    action: Some(Action::Create {
                        entity_set: "catalogassignments",
                        body,
                        binds: vec![
                            ("CatalogId".to_owned(), "catalogs", category_ref.clone()),
                            (
                                placement.object_navigation_property.clone(),
                                "customapis",
                                api_ref,
                            ),
                        ],
                    }),
                }
            });
        }
        Ok(())
    }

    async fn plan_catalog_row(
        client: &DataverseClient,
        unique_name: &str,
        display_name: &str,
        description: &str,
        parent: Option<RowRef>,
        steps: &mut Vec<Step>,
    ) -> Result<RowRef> {
        let query = Query::new()
            .select([
                "catalogid",
                "uniquename",
                "name",
                "displayname",
                "_parentcatalogid_value",
            ])
            .filter(format!("uniquename eq {}", Query::quote(unique_name)));
        let found: Vec<ExistingCatalog> = list(client, "catalogs", &query).await?;
        let component = Component::Catalog(unique_name.to_owned());
        let Some(have) = found.into_iter().next() else {
            let mut body = Map::new();
            body.insert("uniquename".to_owned(), Value::from(unique_name));
            body.insert("name".to_owned(), Value::from(unique_name));
            body.insert("displayname".to_owned(), Value::from(display_name));
            body.insert("description".to_owned(), Value::from(description));
            let binds = parent
                .map(|p| vec![("ParentCatalogId".to_owned(), "catalogs", p)])
                .unwrap_or_default();
            steps.push(Step {
                item: PlanItem {
                    component: component.clone(),
                    finding: Finding::Missing,
                },
                action: Some(Action::Create {
                    entity_set: "catalogs",
                    body,
                    binds,
                }),
            });
            return Ok(RowRef::Planned(component));
        };
        let mut body = Map::new();
        let fixable = text_diffs(
            &[
                ("name", have.name.as_deref(), unique_name),
                ("displayname", have.displayname.as_deref(), display_name),
            ],
            &mut body,
        );
        let parent_ok = match &parent {
            None => have.parent.is_none(),
            Some(RowRef::Known(id)) => have.parent == Some(*id),
            // The parent is created in this run, so this existing row cannot point at it.
            Some(RowRef::Planned(_)) => false,
        };
        let fixed = if parent_ok {
            Vec::new()
        } else {
            vec!["parentcatalogid"]
        };
        let finding = finding_for(fixable.clone(), fixed);
        let action = (!fixable.is_empty()).then_some(Action::Update {
            entity_set: "catalogs",
            id: have.catalogid,
            body,
            fields: fixable,
        });
        steps.push(Step {
            item: PlanItem { component, finding },
            action,
        });
        Ok(RowRef::Known(have.catalogid))
    }

    /// Every component and how it compares, in the order `apply` handles them.
    pub fn items(&self) -> impl Iterator<Item = &PlanItem> {
        self.steps.iter().map(|s| &s.item)
    }

    /// The components that are missing or differ.
    pub fn differences(&self) -> impl Iterator<Item = &PlanItem> {
        self.items().filter(|i| i.finding != Finding::Correct)
    }

    /// Whether [`apply`](Self::apply) would write anything.
    pub fn has_changes(&self) -> bool {
        self.steps.iter().any(|s| s.action.is_some())
    }

    /// Writes the plan: creates what is missing, updates the columns that can be updated, and
    /// leaves the rest. Stops at the first failed write (a second run resumes, since it plans
    /// from what then exists).
    ///
    /// # Errors
    /// [`Error::Registration`] naming the operation and table of the failed write.
    #[tracing::instrument(name = "device_contract.registration.apply", skip_all, err(Display))]
    pub async fn apply(self, client: &DataverseClient) -> Result<RegistrationReport> {
        let mut created: HashMap<Component, Uuid> = HashMap::new();
        let mut report = RegistrationReport::default();
        for step in self.steps {
            let component = step.item.component;
            let unfixable = match &step.item.finding {
                Finding::Differs {
                    fields,
                    fixable: false,
                } => Some(fields.clone()),
                _ => None,
            };
            let outcome = match step.action {
                Some(Action::Create {
                    entity_set,
                    mut body,
                    binds,
                }) => {
                    for (nav, set, row) in binds {
                        let id = match row {
                            RowRef::Known(id) => id,
                            RowRef::Planned(c) => {
                                *created.get(&c).ok_or_else(|| Error::InvalidConfiguration {
                                    reason: format!("{c} was not created before it was needed"),
                                })?
                            }
                        };
                        body.insert(
                            format!("{nav}@odata.bind"),
                            Value::from(format!("/{set}({id})")),
                        );
                    }
                    let id = client
                        .create_record(entity_set, &body)
                        .await
                        .map_err(|e| Error::registration("create", entity_set, e))?;
                    tracing::debug!(entity_set, "registration created a row");
                    created.insert(component.clone(), id);
                    Outcome::Created
                }
                Some(Action::Update {
                    entity_set,
                    id,
                    body,
                    fields,
                }) => {
                    client
                        .update_record(entity_set, id, &body, None)
                        .await
                        .map_err(|e| Error::registration("update", entity_set, e))?;
                    tracing::debug!(entity_set, fields = ?fields, "registration updated a row");
                    match unfixable {
                        // The rest still differs: report all of it.
                        Some(all) => Outcome::Differs(all),
                        None => Outcome::Updated(fields),
                    }
                }
                None => match step.item.finding {
                    // Parameters created with their API.
                    Finding::Missing => Outcome::Created,
                    Finding::Correct => Outcome::AlreadyCorrect,
                    Finding::Differs { fields, .. } => {
                        tracing::warn!(fields = ?fields, "registration left a differing row alone");
                        Outcome::Differs(fields)
                    }
                },
            };
            report.outcomes.push((component, outcome));
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests;
