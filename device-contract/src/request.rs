//! The outbound request: what Dataverse sends when a user presses a device-management button.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{DeviceProcess, Error, Result};

/// The Dataverse `account` row of the device vendor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VendorAccountRef {
    /// `accountid` of the vendor organisation in Dataverse.
    pub account_id: Uuid,
    /// The vendor's own key for this customer (tenant, account number), if it needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// The patient: a Dataverse `contact` row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PatientRef {
    /// `contactid` of the patient.
    pub contact_id: Uuid,
    /// The vendor's patient id, known after enrollment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// The enrollment row whose state the inbound Enroll/End enrollment APIs update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnrollmentRef {
    /// Primary key of the enrollment row.
    pub enrollment_id: Uuid,
    /// The vendor's id for the enrollment/profile, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// A device: an `msemr_device` row and its serial number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceRef {
    /// `msemr_deviceid`, when the device row exists in Dataverse (it does after a sync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<Uuid>,
    /// The device's serial number, the key shared with the vendor.
    pub serial_number: String,
}

/// The JSON document in an outbound custom API's request parameter (see `docs/device-contract.md` in the repository).
///
/// The outbound request: what Dataverse sends when a user presses a device-management button.
///
/// Seed 000 says each outbound custom API has a request parameter ("Outbound request", a string)
/// which the flow receives and which the inbound response echoes back. Microsoft never published
/// what that string contains, so this crate defines it as one JSON document, the same shape for all
/// five processes ([`OutboundRequest`]):
///
/// ```json
/// {
///   "RequestId": "6f1c1c9e-4a0e-4f4e-9f0e-2b1f7d0c3a11",
///   "Process": "AssignDevice",
///   "RequestedOn": "2026-11-22T06:00:00Z",
///   "InitiatingUserId": "0b7f3c2e-1111-4c6b-9a55-6d2f9e0d7a01",
///   "VendorAccount": { "AccountId": "5d7c5a86-2222-4f21-8b1e-3c1d0e9f4b02", "ExternalId": "acme-tenant-7" },
///   "Patient": { "ContactId": "9a3e2d1c-3333-4a4e-8f7b-1e2d3c4b5a03", "ExternalId": "P-1001" },
///   "Enrollment": { "EnrollmentId": "1c2d3e4f-4444-4b5c-9d8e-7f6a5b4c3d04" },
///   "Device": { "DeviceId": "2d3e4f5a-5555-4c6d-8e9f-0a1b2c3d4e05", "SerialNumber": "AutomatedTIP1" }
/// }
/// ```
///
/// Why these parts:
/// - **RequestId** is generated when the button is pressed. It is the idempotency key: a retried
///   webhook or flow run carries the same id, a second press carries a new one.
/// - **InitiatingUserId** is the `systemuser` who pressed the button. The inbound side addresses the
///   in-app notification to this user; since the inbound API is called by the integration's own
///   identity, the request is the only place this survives the round trip.
/// - **VendorAccount** is the Dataverse `account` row of the device vendor (care management models
///   organisations as accounts), plus the vendor's own tenant/account key. Every process needs it.
/// - **Patient** is the `contact` row (patients are contacts in the healthcare data model, as
///   `msemr_device.msemr_patient` shows), plus the vendor's patient id once enrolled. No
///   demographics are sent: the vendor keys its profile on the contact id, which keeps PHI out of
///   the payload, the flow history and this service's logs.
/// - **Enrollment** is the Dataverse row that tracks the device-program enrollment, whose state the
///   inbound Enroll/End enrollment APIs update.
/// - **Device** is the `msemr_device` row and its serial number, the key both systems share.
///
/// | process | VendorAccount | Patient | Enrollment | Device |
/// |---|---|---|---|---|
/// | Enroll | required | required | required | — |
/// | EndEnrollment | required | required | required | — |
/// | SyncDevices | required | — | — | — |
/// | AssignDevice | required | required | optional | required |
/// | UnassignDevice | required | required | optional | required |
///
/// Parts a process does not use are rejected, so a mis-wired button fails loudly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OutboundRequest {
    /// Unique per button press; the idempotency key.
    pub request_id: Uuid,
    /// Which process this is; must match the custom API that carried it.
    pub process: DeviceProcess,
    /// When the user pressed the button.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_on: Option<DateTime<Utc>>,
    /// The `systemuser` who pressed the button (recipient of the in-app notification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiating_user_id: Option<Uuid>,
    /// The vendor.
    pub vendor_account: VendorAccountRef,
    /// The patient (all processes but Sync Devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<PatientRef>,
    /// The enrollment (Enroll, End enrollment; optional for Assign/Unassign).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<EnrollmentRef>,
    /// The device (Assign, Unassign).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceRef>,
}

impl OutboundRequest {
    /// Starts a request for `process` and `vendor_account`, with a fresh random `RequestId`.
    pub fn new(process: DeviceProcess, vendor_account: VendorAccountRef) -> Self {
        Self {
            request_id: Uuid::new_v4(),
            process,
            requested_on: Some(Utc::now()),
            initiating_user_id: None,
            vendor_account,
            patient: None,
            enrollment: None,
            device: None,
        }
    }

    /// Sets the user who pressed the button.
    pub fn with_initiating_user(mut self, user_id: Uuid) -> Self {
        self.initiating_user_id = Some(user_id);
        self
    }

    /// Sets the patient.
    pub fn with_patient(mut self, patient: PatientRef) -> Self {
        self.patient = Some(patient);
        self
    }

    /// Sets the enrollment.
    pub fn with_enrollment(mut self, enrollment: EnrollmentRef) -> Self {
        self.enrollment = Some(enrollment);
        self
    }

    /// Sets the device.
    pub fn with_device(mut self, device: DeviceRef) -> Self {
        self.device = Some(device);
        self
    }

    /// Decodes the request parameter's string.
    ///
    /// # Errors
    /// [`Error::Json`] naming the JSON path of a missing or mistyped field.
    pub fn from_json(text: &str) -> Result<Self> {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| Error::json("OutboundRequest", e))
    }

    /// Encodes the request as the string to put in the request parameter.
    ///
    /// # Errors
    /// [`Error::Json`] if serialization fails (it cannot for this type; kept for API stability).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::encode("OutboundRequest", &e))
    }

    /// Checks the parts this request's process requires and forbids (table in `docs/device-contract.md`),
    /// and that `expected` (the process of the custom API that carried it) matches `Process`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] with the path of the offending part, e.g. `OutboundRequest.Patient`.
    pub fn validate(&self, expected: DeviceProcess) -> Result<()> {
        if self.process != expected {
            return Err(Error::invalid(
                "OutboundRequest.Process",
                format!(
                    "is {} but the request arrived through the {} custom API",
                    self.process, expected
                ),
            ));
        }
        if self.request_id.is_nil() {
            return Err(Error::invalid(
                "OutboundRequest.RequestId",
                "must not be the nil UUID",
            ));
        }
        if self.vendor_account.account_id.is_nil() {
            return Err(Error::invalid(
                "OutboundRequest.VendorAccount.AccountId",
                "must not be the nil UUID",
            ));
        }
        use Need::*;
        let (patient, enrollment, device) = match self.process {
            DeviceProcess::Enroll | DeviceProcess::EndEnrollment => (Required, Required, Forbidden),
            DeviceProcess::SyncDevices => (Forbidden, Forbidden, Forbidden),
            DeviceProcess::AssignDevice | DeviceProcess::UnassignDevice => {
                (Required, Optional, Required)
            }
        };
        check_part("Patient", self.patient.is_some(), patient, self.process)?;
        check_part(
            "Enrollment",
            self.enrollment.is_some(),
            enrollment,
            self.process,
        )?;
        check_part("Device", self.device.is_some(), device, self.process)?;
        if let Some(p) = &self.patient {
            if p.contact_id.is_nil() {
                return Err(Error::invalid(
                    "OutboundRequest.Patient.ContactId",
                    "must not be the nil UUID",
                ));
            }
        }
        if let Some(e) = &self.enrollment {
            if e.enrollment_id.is_nil() {
                return Err(Error::invalid(
                    "OutboundRequest.Enrollment.EnrollmentId",
                    "must not be the nil UUID",
                ));
            }
        }
        if let Some(d) = &self.device {
            if d.serial_number.trim().is_empty() {
                return Err(Error::invalid(
                    "OutboundRequest.Device.SerialNumber",
                    "must not be empty",
                ));
            }
        }
        Ok(())
    }

    /// Validates the request (see [`validate`](Self::validate)) and turns it into the typed call for
    /// a [`DeviceVendor`](crate::DeviceVendor).
    ///
    /// # Errors
    /// As [`validate`](Self::validate).
    pub fn to_vendor_call(&self, expected: DeviceProcess) -> Result<VendorCall> {
        self.validate(expected)?;
        let missing = |part: &str| {
            Error::invalid(
                format!("OutboundRequest.{part}"),
                "is required for this process",
            )
        };
        let patient = || self.patient.clone().ok_or_else(|| missing("Patient"));
        let enrollment = || self.enrollment.clone().ok_or_else(|| missing("Enrollment"));
        let device = || self.device.clone().ok_or_else(|| missing("Device"));
        let request_id = self.request_id;
        let vendor_account = self.vendor_account.clone();
        Ok(match self.process {
            DeviceProcess::Enroll => VendorCall::Enroll(EnrollmentRequest {
                request_id,
                vendor_account,
                patient: patient()?,
                enrollment: enrollment()?,
            }),
            DeviceProcess::EndEnrollment => VendorCall::EndEnrollment(EnrollmentRequest {
                request_id,
                vendor_account,
                patient: patient()?,
                enrollment: enrollment()?,
            }),
            DeviceProcess::SyncDevices => VendorCall::SyncDevices(SyncDevicesRequest {
                request_id,
                vendor_account,
            }),
            DeviceProcess::AssignDevice => VendorCall::AssignDevice(AssignmentRequest {
                request_id,
                vendor_account,
                patient: patient()?,
                enrollment: self.enrollment.clone(),
                device: device()?,
            }),
            DeviceProcess::UnassignDevice => VendorCall::UnassignDevice(AssignmentRequest {
                request_id,
                vendor_account,
                patient: patient()?,
                enrollment: self.enrollment.clone(),
                device: device()?,
            }),
        })
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Need {
    Required,
    Optional,
    Forbidden,
}

fn check_part(name: &str, present: bool, need: Need, process: DeviceProcess) -> Result<()> {
    match (need, present) {
        (Need::Required, false) => Err(Error::invalid(
            format!("OutboundRequest.{name}"),
            format!("is required for {process}"),
        )),
        (Need::Forbidden, true) => Err(Error::invalid(
            format!("OutboundRequest.{name}"),
            format!("is not allowed for {process}"),
        )),
        _ => Ok(()),
    }
}

/// What a vendor needs to enroll a patient or end an enrollment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollmentRequest {
    /// The button press this call serves (pass it to the vendor as its idempotency key if it has one).
    pub request_id: Uuid,
    /// The vendor account.
    pub vendor_account: VendorAccountRef,
    /// The patient.
    pub patient: PatientRef,
    /// The enrollment.
    pub enrollment: EnrollmentRef,
}

/// What a vendor needs to list its devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncDevicesRequest {
    /// The button press this call serves.
    pub request_id: Uuid,
    /// The vendor account whose devices to list.
    pub vendor_account: VendorAccountRef,
}

/// What a vendor needs to assign or unassign a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignmentRequest {
    /// The button press this call serves.
    pub request_id: Uuid,
    /// The vendor account.
    pub vendor_account: VendorAccountRef,
    /// The patient.
    pub patient: PatientRef,
    /// The enrollment, when the app sent it.
    pub enrollment: Option<EnrollmentRef>,
    /// The device.
    pub device: DeviceRef,
}

/// A validated outbound request, typed per process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VendorCall {
    /// Enroll a patient.
    Enroll(EnrollmentRequest),
    /// End an enrollment.
    EndEnrollment(EnrollmentRequest),
    /// Sync devices.
    SyncDevices(SyncDevicesRequest),
    /// Assign a device.
    AssignDevice(AssignmentRequest),
    /// Unassign a device.
    UnassignDevice(AssignmentRequest),
}

impl VendorCall {
    /// The process of this call.
    pub fn process(&self) -> DeviceProcess {
        match self {
            Self::Enroll(_) => DeviceProcess::Enroll,
            Self::EndEnrollment(_) => DeviceProcess::EndEnrollment,
            Self::SyncDevices(_) => DeviceProcess::SyncDevices,
            Self::AssignDevice(_) => DeviceProcess::AssignDevice,
            Self::UnassignDevice(_) => DeviceProcess::UnassignDevice,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vendor() -> VendorAccountRef {
        VendorAccountRef {
            account_id: Uuid::from_u128(1),
            external_id: None,
        }
    }

    fn patient() -> PatientRef {
        PatientRef {
            contact_id: Uuid::from_u128(2),
            external_id: None,
        }
    }

    #[test]
    fn field_names_are_pascal_case() {
        let req = OutboundRequest {
            request_id: Uuid::from_u128(9),
            process: DeviceProcess::AssignDevice,
            requested_on: None,
            initiating_user_id: Some(Uuid::from_u128(8)),
            vendor_account: VendorAccountRef {
                account_id: Uuid::from_u128(1),
                external_id: Some("t-7".into()),
            },
            patient: Some(patient()),
            enrollment: None,
            device: Some(DeviceRef {
                device_id: None,
                serial_number: "SN1".into(),
            }),
        };
        let value = serde_json::to_value(&req).unwrap();
        assert_eq!(
            value,
            json!({
                "RequestId": "00000000-0000-0000-0000-000000000009",
                "Process": "AssignDevice",
                "InitiatingUserId": "00000000-0000-0000-0000-000000000008",
                "VendorAccount": {"AccountId": "00000000-0000-0000-0000-000000000001", "ExternalId": "t-7"},
                "Patient": {"ContactId": "00000000-0000-0000-0000-000000000002"},
                "Device": {"SerialNumber": "SN1"}
            })
        );
        let back = OutboundRequest::from_json(&value.to_string()).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn missing_field_error_names_the_path() {
        let text = r#"{"RequestId":"00000000-0000-0000-0000-000000000009","Process":"Enroll","VendorAccount":{}}"#;
        let err = OutboundRequest::from_json(text).unwrap_err();
        match err {
            Error::Json { path, reason, .. } => {
                assert_eq!(path, "VendorAccount");
                assert!(reason.contains("AccountId"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn required_and_forbidden_parts() {
        let enroll = OutboundRequest::new(DeviceProcess::Enroll, vendor()).with_patient(patient());
        let err = enroll.validate(DeviceProcess::Enroll).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { path, .. } if path == "OutboundRequest.Enrollment")
        );

        let sync =
            OutboundRequest::new(DeviceProcess::SyncDevices, vendor()).with_patient(patient());
        let err = sync.validate(DeviceProcess::SyncDevices).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { path, .. } if path == "OutboundRequest.Patient")
        );

        let ok = OutboundRequest::new(DeviceProcess::SyncDevices, vendor());
        assert!(matches!(
            ok.to_vendor_call(DeviceProcess::SyncDevices),
            Ok(VendorCall::SyncDevices(_))
        ));
        let err = ok.validate(DeviceProcess::Enroll).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { path, .. } if path == "OutboundRequest.Process")
        );
    }

    #[test]
    fn blank_serial_number_is_rejected() {
        let assign = OutboundRequest::new(DeviceProcess::AssignDevice, vendor())
            .with_patient(patient())
            .with_device(DeviceRef {
                device_id: None,
                serial_number: "  ".into(),
            });
        let err = assign
            .to_vendor_call(DeviceProcess::AssignDevice)
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { path, .. } if path == "OutboundRequest.Device.SerialNumber")
        );
    }
}
