//! The Dataverse side: apply an inbound response to Dataverse, as the retired inbound custom APIs did.

use carebridge_dataverse_client::{DataverseClient, KeyValue, RecordKey, UpsertMode};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use tracing::Instrument;

use crate::{ContractNames, DeviceProcess, Error, InboundResponse, OutboundRequest, Result};
use carebridge_dataverse_client::webhook::{ContextValue, RemoteExecutionContext};

/// Where device rows live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceTable {
    /// Entity set name (default `msemr_devices`).
    pub entity_set: String,
    /// Primary key column (default `msemr_deviceid`).
    pub id_column: String,
    /// Serial-number column, which must be an **alternate key** of the table (default
    /// `msemr_serialnumber`, *unverified*: the FHIR R4 `Device.serialNumber` element; the public
    /// STU3-era CDM definition of `msemr_device` has no such column, so you may need to add it).
    pub serial_number_column: String,
    /// Device name column (default `msemr_name`).
    pub name_column: String,
    /// Device model column (default `msemr_model`).
    pub model_column: String,
    /// Single-valued navigation property of the patient lookup `msemr_patient` (default
    /// `msemr_Patient`, *unverified*: navigation properties use the lookup's schema name).
    pub patient_navigation_property: String,
}

impl Default for DeviceTable {
    fn default() -> Self {
        Self {
            entity_set: "msemr_devices".to_owned(),
            id_column: "msemr_deviceid".to_owned(),
            serial_number_column: "msemr_serialnumber".to_owned(),
            name_column: "msemr_name".to_owned(),
            model_column: "msemr_model".to_owned(),
            patient_navigation_property: "msemr_Patient".to_owned(),
        }
    }
}

/// Where enrollment state lives. All defaults are *unverified*: Microsoft never published the
/// enrollment table of the device-data solution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollmentTable {
    /// Entity set name (default `msemr_deviceenrollments`).
    pub entity_set: String,
    /// Choice column holding the state (default `msemr_enrollmentstatus`).
    pub status_column: String,
    /// Value meaning "enrolled" (default `935000000`, Microsoft's `msemr_` choice numbering).
    pub enrolled_value: i32,
    /// Value meaning "enrollment ended" (default `935000001`).
    pub ended_value: i32,
    /// Value set when enrolling failed; `None` leaves the state alone (default `Some(935000002)`).
    pub enroll_failed_value: Option<i32>,
    /// Text column receiving the error message of a failed enroll/end; `None` to skip (default `None`).
    pub error_column: Option<String>,
}

impl Default for EnrollmentTable {
    fn default() -> Self {
        Self {
            entity_set: "msemr_deviceenrollments".to_owned(),
            status_column: "msemr_enrollmentstatus".to_owned(),
            enrolled_value: 935_000_000,
            ended_value: 935_000_001,
            enroll_failed_value: Some(935_000_002),
            error_column: None,
        }
    }
}

/// How outcomes are announced (Microsoft Learn, "Send in-app notifications within model-driven apps").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationOptions {
    /// Create notifications at all (default `true`).
    pub enabled: bool,
    /// Entity set of the notification table (default `appnotifications`).
    pub entity_set: String,
    /// `toasttype`: `200000000` timed (default) or `200000001` hidden.
    pub toast_type: i32,
    /// `ttlinseconds`: delete the notification after this long if not dismissed (default `None`,
    /// the environment's setting, 14 days unless changed).
    pub ttl_in_seconds: Option<u32>,
    /// Recipient when the outbound request names no `InitiatingUserId` (default `None`: skip).
    pub fallback_user: Option<Uuid>,
}

impl Default for NotificationOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            entity_set: "appnotifications".to_owned(),
            toast_type: 200_000_000,
            ttl_in_seconds: None,
            fallback_user: None,
        }
    }
}

/// `appnotification.icontype` value for success.
pub const ICON_SUCCESS: i32 = 100_000_001;
/// `appnotification.icontype` value for failure.
pub const ICON_FAILURE: i32 = 100_000_002;

/// Configures an [`InboundProcessor`]. Every field has a default; use `..Default::default()`.
///
/// The Dataverse side: apply an inbound response to Dataverse, as the retired inbound custom APIs did.
///
/// Host it wherever the inbound custom API's logic runs outside Dataverse (a webhook on the
/// inbound API's message, a queue consumer), or call it directly from the bridge's process.
///
/// | process | success | failure |
/// |---|---|---|
/// | Sync Devices | upsert one device row per `Content` device, keyed by serial number | — |
/// | Enroll | enrollment state := enrolled | enrollment state := failed (if configured) |
/// | End enrollment | enrollment state := ended | — |
/// | Assign device | device's patient lookup := the patient | — |
/// | Unassign device | device's patient lookup cleared | — |
///
/// Every outcome then creates an in-app notification (`appnotifications`: `title`, `body`,
/// `ownerid@odata.bind`, `icontype` 100000001 success / 100000002 failure, `toasttype`) for the
/// user who pressed the button (`InitiatingUserId` of the echoed outbound request), with a link to
/// the flow URL when there is one. Seed 000: "You can see success or failure notifications within
/// the application."
///
/// Table, column and navigation-property names default to the healthcare data model
/// (`msemr_device` with `msemr_name`, `msemr_model`, `msemr_patient` → `contact`, as in Microsoft's
/// healthcare samples). Names the public model does not show are marked *unverified* below: check
/// them in your environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundProcessorOptions {
    /// Contract names (to recognise the inbound API and its parameters).
    pub names: ContractNames,
    /// Device table.
    pub devices: DeviceTable,
    /// Enrollment table.
    pub enrollments: EnrollmentTable,
    /// Entity set of patients (default `contacts`).
    pub patients_entity_set: String,
    /// Notifications.
    pub notifications: NotificationOptions,
}

impl Default for InboundProcessorOptions {
    fn default() -> Self {
        Self {
            names: ContractNames::default(),
            devices: DeviceTable::default(),
            enrollments: EnrollmentTable::default(),
            patients_entity_set: "contacts".to_owned(),
            notifications: NotificationOptions::default(),
        }
    }
}

/// What [`InboundProcessor::process`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InboundReport {
    /// Whether the response reported success.
    pub success: bool,
    /// Device rows upserted (Sync Devices).
    pub devices_upserted: usize,
    /// Whether an enrollment row was updated.
    pub enrollment_updated: bool,
    /// Whether a device–patient link was set or cleared.
    pub assignment_changed: bool,
    /// The notification created, if any.
    pub notification_id: Option<Uuid>,
}

/// Applies inbound responses to Dataverse (see `docs/device-contract.md` in the repository). Cheap to clone.
#[derive(Clone, Debug)]
pub struct InboundProcessor {
    client: DataverseClient,
    options: InboundProcessorOptions,
}

impl InboundProcessor {
    /// A processor writing through `client`.
    pub fn new(client: DataverseClient, options: Option<InboundProcessorOptions>) -> Self {
        Self {
            client,
            options: options.unwrap_or_default(),
        }
    }

    /// Applies the inbound custom API call `unique_name(params)`: recognises the process from the
    /// configured inbound names, reads the parameters, then [`process`](Self::process)es them.
    ///
    /// # Errors
    /// [`Error::UnknownProcess`] for an API that is not an inbound device API; otherwise as
    /// [`process`](Self::process).
    pub async fn process_parameters(
        &self,
        unique_name: &str,
        params: &Map<String, Value>,
    ) -> Result<InboundReport> {
        let process = self
            .options
            .names
            .apis
            .process_for_inbound(unique_name)
            .ok_or_else(|| Error::UnknownProcess {
                name: crate::process::truncate_for_error(unique_name),
            })?;
        let response = InboundResponse::from_parameters(params, &self.options.names.parameters)?;
        self.process(process, &response).await
    }

    /// Applies an inbound custom API call delivered by a Dataverse webhook registered on the
    /// inbound API's message: the process comes from `MessageName`, the response from the input
    /// parameters (string and integer values).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if `InputParameters` is missing (payload over 256 KB); otherwise as
    /// [`process_parameters`](Self::process_parameters).
    pub async fn process_webhook(&self, ctx: &RemoteExecutionContext) -> Result<InboundReport> {
        if !ctx.has_input_parameters {
            return Err(Error::invalid(
                "InputParameters",
                "is missing (Dataverse drops it when the webhook payload exceeds 256 KB)",
            ));
        }
        let params: Map<String, Value> = ctx
            .input_parameters
            .iter()
            .filter_map(|(k, v)| {
                let value = match v {
                    ContextValue::String(s) => Value::String(s.clone()),
                    ContextValue::Number(n) => Value::Number(n.clone()),
                    ContextValue::Null => Value::Null,
                    _ => return None,
                };
                Some((k.clone(), value))
            })
            .collect();
        self.process_parameters(&ctx.message_name, &params).await
    }

    /// Validates `response`, applies it and notifies the initiating user.
    ///
    /// When applying fails, the user is still notified of the failure before the error is returned.
    ///
    /// # Errors
    /// [`Error::InvalidInput`]/[`Error::Json`] for an invalid response or echoed outbound request;
    /// [`Error::Dataverse`] naming the step that failed.
    pub async fn process(
        &self,
        process: DeviceProcess,
        response: &InboundResponse,
    ) -> Result<InboundReport> {
        let span = tracing::info_span!(
            "device_inbound.process",
            process = %process,
            status = response.status_code
        );
        self.process_inner(process, response).instrument(span).await
    }

    async fn process_inner(
        &self,
        process: DeviceProcess,
        response: &InboundResponse,
    ) -> Result<InboundReport> {
        response.validate(process)?;
        let request = OutboundRequest::from_json(&response.outbound_request)?;
        request.validate(process)?;
        let mut report = InboundReport {
            success: response.is_success(),
            ..InboundReport::default()
        };
        let applied = self.apply(process, response, &request, &mut report).await;
        let (success, body) = match &applied {
            Ok(()) if response.is_success() => (true, success_body(process, &report)),
            Ok(()) => (
                false,
                format!(
                    "Error {}: {}",
                    response.status_code,
                    response.error_message.as_deref().unwrap_or("unknown error")
                ),
            ),
            Err(e) => (
                false,
                format!("The vendor's answer could not be saved in Dataverse: {e}"),
            ),
        };
        report.notification_id = self
            .notify(process, &request, response, success, &body)
            .await?;
        match &applied {
            Ok(()) => tracing::info!(
                devices_upserted = report.devices_upserted,
                enrollment_updated = report.enrollment_updated,
                assignment_changed = report.assignment_changed,
                "inbound response applied"
            ),
            Err(e) => tracing::error!(error = %e, "inbound response could not be applied"),
        }
        applied.map(|()| report)
    }

    async fn apply(
        &self,
        process: DeviceProcess,
        response: &InboundResponse,
        request: &OutboundRequest,
        report: &mut InboundReport,
    ) -> Result<()> {
        let dv =
            |operation: &'static str| move |source| Error::dataverse(process, operation, source);
        let devices = &self.options.devices;
        let enrollments = &self.options.enrollments;
        let success = response.is_success();
        match process {
            DeviceProcess::SyncDevices if success => {
                let content = response
                    .device_content()?
                    .unwrap_or_else(|| crate::DeviceContent::new(Vec::new()));
                for device in &content.devices {
                    let key = RecordKey::Alternate(vec![(
                        devices.serial_number_column.clone(),
                        KeyValue::String(device.serial_number.trim().to_owned()),
                    )]);
                    let mut row = Map::new();
                    row.insert(devices.name_column.clone(), json!(device.name));
                    row.insert(devices.model_column.clone(), json!(device.model));
                    self.client
                        .upsert_record(&devices.entity_set, &key, &row, UpsertMode::CreateOrUpdate)
                        .await
                        .map_err(dv("upsert device"))?;
                    report.devices_upserted += 1;
                }
            }
            DeviceProcess::Enroll | DeviceProcess::EndEnrollment => {
                let value = match (process, success) {
                    (DeviceProcess::Enroll, true) => Some(enrollments.enrolled_value),
                    (DeviceProcess::Enroll, false) => enrollments.enroll_failed_value,
                    (_, true) => Some(enrollments.ended_value),
                    (_, false) => None,
                };
                let mut changes = Map::new();
                if let Some(v) = value {
                    changes.insert(enrollments.status_column.clone(), json!(v));
                }
                if let Some(col) = &enrollments.error_column {
                    changes.insert(
                        col.clone(),
                        if success {
                            Value::Null
                        } else {
                            json!(response.error_message)
                        },
                    );
                }
                if let (false, Some(enrollment)) = (changes.is_empty(), &request.enrollment) {
                    self.client
                        .update_record(
                            &enrollments.entity_set,
                            enrollment.enrollment_id,
                            &changes,
                            None,
                        )
                        .await
                        .map_err(dv("update enrollment"))?;
                    report.enrollment_updated = true;
                }
            }
            DeviceProcess::AssignDevice | DeviceProcess::UnassignDevice if success => {
                let (Some(device), Some(patient)) = (&request.device, &request.patient) else {
                    return Ok(());
                };
                let device_id = match device.device_id {
                    Some(id) => id,
                    None => {
                        self.device_id_by_serial(process, &device.serial_number)
                            .await?
                    }
                };
                let nav = &devices.patient_navigation_property;
                if process == DeviceProcess::AssignDevice {
                    let mut changes = Map::new();
                    changes.insert(
                        format!("{nav}@odata.bind"),
                        json!(format!(
                            "/{}({})",
                            self.options.patients_entity_set, patient.contact_id
                        )),
                    );
                    self.client
                        .update_record(&devices.entity_set, device_id, &changes, None)
                        .await
                        .map_err(dv("link device to patient"))?;
                } else {
                    self.client
                        .disassociate(&devices.entity_set, device_id, nav, None)
                        .await
                        .map_err(dv("unlink device from patient"))?;
                }
                report.assignment_changed = true;
            }
            _ => {}
        }
        Ok(())
    }

    async fn device_id_by_serial(&self, process: DeviceProcess, serial: &str) -> Result<Uuid> {
        let devices = &self.options.devices;
        let key = RecordKey::Alternate(vec![(
            devices.serial_number_column.clone(),
            KeyValue::String(serial.trim().to_owned()),
        )]);
        let query = carebridge_dataverse_client::Query::new().select([devices.id_column.as_str()]);
        let row: Value = self
            .client
            .get_record_by_key(&devices.entity_set, &key, Some(&query))
            .await
            .map_err(|source| Error::dataverse(process, "find device by serial number", source))?;
        row.get(&devices.id_column)
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| {
                Error::invalid(
                    format!("{}.{}", devices.entity_set, devices.id_column),
                    "missing or not a GUID in Dataverse's answer",
                )
            })
    }

    async fn notify(
        &self,
        process: DeviceProcess,
        request: &OutboundRequest,
        response: &InboundResponse,
        success: bool,
        body: &str,
    ) -> Result<Option<Uuid>> {
        let opts = &self.options.notifications;
        if !opts.enabled {
            return Ok(None);
        }
        let Some(user) = request.initiating_user_id.or(opts.fallback_user) else {
            tracing::warn!(process = %process, "no InitiatingUserId and no fallback user; notification skipped");
            return Ok(None);
        };
        let title = format!(
            "{} {}",
            process.display_name(),
            if success { "succeeded" } else { "failed" }
        );
        let mut record = Map::new();
        record.insert("title".into(), json!(title));
        record.insert("body".into(), json!(body));
        record.insert(
            "ownerid@odata.bind".into(),
            json!(format!("/systemusers({user})")),
        );
        record.insert(
            "icontype".into(),
            json!(if success { ICON_SUCCESS } else { ICON_FAILURE }),
        );
        record.insert("toasttype".into(), json!(opts.toast_type));
        if let Some(ttl) = opts.ttl_in_seconds {
            record.insert("ttlinseconds".into(), json!(ttl));
        }
        if let Some(url) = response.flow_link() {
            let data = json!({
                "actions": [{"title": "View run", "data": {"url": url, "navigationTarget": "newWindow"}}]
            });
            record.insert("data".into(), json!(data.to_string()));
        }
        let id = self
            .client
            .create_record(&opts.entity_set, &record)
            .await
            .map_err(|source| Error::dataverse(process, "create notification", source))?;
        Ok(Some(id))
    }
}

fn success_body(process: DeviceProcess, report: &InboundReport) -> String {
    match process {
        DeviceProcess::Enroll => "The patient is enrolled with the device vendor.".to_owned(),
        DeviceProcess::EndEnrollment => {
            "The patient's enrollment with the device vendor has ended.".to_owned()
        }
        DeviceProcess::SyncDevices => format!(
            "{} device{} synced from the device vendor.",
            report.devices_upserted,
            if report.devices_upserted == 1 {
                ""
            } else {
                "s"
            }
        ),
        DeviceProcess::AssignDevice => "The device is assigned to the patient.".to_owned(),
        DeviceProcess::UnassignDevice => "The device is unassigned from the patient.".to_owned(),
    }
}
