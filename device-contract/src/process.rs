//! The five device-data processes and the configurable names of their custom APIs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The Power Automate **Catalog** that groups the device-management custom APIs, exactly as seed 000
/// tells flow makers to select it in the Dataverse action trigger.
pub const CATALOG: &str = "Device Management";

/// The Power Automate **Category** of the outbound custom APIs, exactly as seed 000 names it.
pub const OUTBOUND_CATEGORY: &str = "Device Management Partner Integration Outbound";

/// One of the five device-data processes a care manager starts from the app.
///
/// Serializes as its [`as_str`](Self::as_str) name (`"Enroll"`, `"EndEnrollment"`, ...).
///
/// The five device-data processes and the configurable names of their custom APIs.
///
/// Seed: Microsoft Learn, "Partner integration for device data support in care management
/// (preview)". Microsoft retired that solution on 2025-01-30 and never published the *unique names*
/// of its custom APIs or of their parameters, only display names. Every name below is therefore
/// configuration with a documented default derived from the display names, in Microsoft's
/// `msemr_` publisher-prefix style. Change them to whatever your Dataverse solution defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DeviceProcess {
    /// Enroll a patient: create the patient profile in the vendor system ("Enroll now").
    Enroll,
    /// End enrollment for a patient: delete the patient profile in the vendor system ("End enrollment").
    EndEnrollment,
    /// Sync devices: fetch the vendor's device inventory into Dataverse ("Sync devices").
    SyncDevices,
    /// Assign a device to a patient ("Assign device").
    AssignDevice,
    /// Unassign a device from a patient ("Unassign device").
    UnassignDevice,
}

impl DeviceProcess {
    /// All five processes, in the order seed 000 lists them.
    pub const ALL: [DeviceProcess; 5] = [
        DeviceProcess::Enroll,
        DeviceProcess::EndEnrollment,
        DeviceProcess::SyncDevices,
        DeviceProcess::AssignDevice,
        DeviceProcess::UnassignDevice,
    ];

    /// The stable name used in JSON and logs: `Enroll`, `EndEnrollment`, `SyncDevices`,
    /// `AssignDevice`, `UnassignDevice`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enroll => "Enroll",
            Self::EndEnrollment => "EndEnrollment",
            Self::SyncDevices => "SyncDevices",
            Self::AssignDevice => "AssignDevice",
            Self::UnassignDevice => "UnassignDevice",
        }
    }

    /// The URL path segment used by the receiver: `enroll`, `end-enrollment`, `sync-devices`,
    /// `assign-device`, `unassign-device`.
    pub fn path_segment(self) -> &'static str {
        match self {
            Self::Enroll => "enroll",
            Self::EndEnrollment => "end-enrollment",
            Self::SyncDevices => "sync-devices",
            Self::AssignDevice => "assign-device",
            Self::UnassignDevice => "unassign-device",
        }
    }

    /// The process name of seed 000 (e.g. "Enroll a patient").
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Enroll => "Enroll a patient",
            Self::EndEnrollment => "End enrollment for a patient",
            Self::SyncDevices => "Sync devices with a device vendor's system",
            Self::AssignDevice => "Assign a device to a patient",
            Self::UnassignDevice => "Unassign a device from a patient",
        }
    }

    /// The button the user selects in the app to start the process (seed 000, "Dataverse trigger").
    pub fn dataverse_trigger(self) -> &'static str {
        match self {
            Self::Enroll => "Enroll now",
            Self::EndEnrollment => "End enrollment",
            Self::SyncDevices => "Sync devices",
            Self::AssignDevice => "Assign device",
            Self::UnassignDevice => "Unassign device",
        }
    }

    /// The display name of the outbound custom API (seed 000).
    pub fn outbound_display_name(self) -> &'static str {
        match self {
            Self::Enroll => "Create Device Enrollment Outbound",
            Self::EndEnrollment => "Delete Device Enrollment Outbound",
            Self::SyncDevices => "Sync Devices Outbound",
            Self::AssignDevice => "Assign Device Outbound",
            Self::UnassignDevice => "Unassign Device Outbound",
        }
    }

    /// The display name of the inbound custom API (seed 000).
    pub fn inbound_display_name(self) -> &'static str {
        match self {
            Self::Enroll => "Create Device Enrollment Inbound",
            Self::EndEnrollment => "Delete Device Enrollment Inbound",
            Self::SyncDevices => "Sync Devices Inbound",
            Self::AssignDevice => "Assign Device Inbound",
            Self::UnassignDevice => "Unassign Device Inbound",
        }
    }

    /// Whether the inbound response of this process may carry `Content` (only Sync Devices).
    pub fn allows_content(self) -> bool {
        matches!(self, Self::SyncDevices)
    }
}

impl fmt::Display for DeviceProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeviceProcess {
    type Err = Error;

    /// Accepts [`as_str`](DeviceProcess::as_str) names and [`path_segment`](DeviceProcess::path_segment)s,
    /// ASCII case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| {
                p.as_str().eq_ignore_ascii_case(s) || p.path_segment().eq_ignore_ascii_case(s)
            })
            .ok_or_else(|| Error::UnknownProcess {
                name: truncate_for_error(s),
            })
    }
}

/// The name of an unknown process or custom API as errors show it: the name itself when it has the
/// shape of one (custom API unique names carry the publisher prefix and `_`; path segments use
/// `-`), otherwise only its length, because the name is input and could hold anything.
pub(crate) fn truncate_for_error(s: &str) -> String {
    const MAX: usize = 80;
    let shaped = s.len() <= MAX
        && s.contains(['_', '-'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if shaped {
        s.to_owned()
    } else {
        format!("<{} characters, not a custom API name>", s.chars().count())
    }
}

/// The unique names of the outbound and inbound custom API of one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessApiNames {
    /// Unique name of the outbound custom API, which Dataverse runs when the user presses the button
    /// (and which triggers the flow, webhook or this crate's receiver).
    pub outbound: String,
    /// Unique name of the inbound custom API (an unbound action) that receives the vendor's answer.
    pub inbound: String,
}

impl ProcessApiNames {
    fn new(outbound: &str, inbound: &str) -> Self {
        Self {
            outbound: outbound.to_owned(),
            inbound: inbound.to_owned(),
        }
    }
}

/// The unique names of the ten custom APIs.
///
/// The defaults are **not** Microsoft's published names (there are none): they are the seed's display
/// names without spaces, behind Microsoft's `msemr_` prefix, e.g. "Create Device Enrollment Outbound"
/// becomes `msemr_CreateDeviceEnrollmentOutbound`.
///
/// | process | default outbound | default inbound |
/// |---|---|---|
/// | Enroll | `msemr_CreateDeviceEnrollmentOutbound` | `msemr_CreateDeviceEnrollmentInbound` |
/// | EndEnrollment | `msemr_DeleteDeviceEnrollmentOutbound` | `msemr_DeleteDeviceEnrollmentInbound` |
/// | SyncDevices | `msemr_SyncDevicesOutbound` | `msemr_SyncDevicesInbound` |
/// | AssignDevice | `msemr_AssignDeviceOutbound` | `msemr_AssignDeviceInbound` |
/// | UnassignDevice | `msemr_UnassignDeviceOutbound` | `msemr_UnassignDeviceInbound` |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomApiNames {
    /// Enroll a patient.
    pub enroll: ProcessApiNames,
    /// End enrollment for a patient.
    pub end_enrollment: ProcessApiNames,
    /// Sync devices.
    pub sync_devices: ProcessApiNames,
    /// Assign a device.
    pub assign_device: ProcessApiNames,
    /// Unassign a device.
    pub unassign_device: ProcessApiNames,
}

impl Default for CustomApiNames {
    fn default() -> Self {
        Self {
            enroll: ProcessApiNames::new(
                "msemr_CreateDeviceEnrollmentOutbound",
                "msemr_CreateDeviceEnrollmentInbound",
            ),
            end_enrollment: ProcessApiNames::new(
                "msemr_DeleteDeviceEnrollmentOutbound",
                "msemr_DeleteDeviceEnrollmentInbound",
            ),
            sync_devices: ProcessApiNames::new(
                "msemr_SyncDevicesOutbound",
                "msemr_SyncDevicesInbound",
            ),
            assign_device: ProcessApiNames::new(
                "msemr_AssignDeviceOutbound",
                "msemr_AssignDeviceInbound",
            ),
            unassign_device: ProcessApiNames::new(
                "msemr_UnassignDeviceOutbound",
                "msemr_UnassignDeviceInbound",
            ),
        }
    }
}

impl CustomApiNames {
    /// The names of `process`.
    pub fn get(&self, process: DeviceProcess) -> &ProcessApiNames {
        match process {
            DeviceProcess::Enroll => &self.enroll,
            DeviceProcess::EndEnrollment => &self.end_enrollment,
            DeviceProcess::SyncDevices => &self.sync_devices,
            DeviceProcess::AssignDevice => &self.assign_device,
            DeviceProcess::UnassignDevice => &self.unassign_device,
        }
    }

    /// The process whose **outbound** API is `unique_name` (Dataverse unique names are
    /// case-insensitive, so the comparison is too).
    pub fn process_for_outbound(&self, unique_name: &str) -> Option<DeviceProcess> {
        DeviceProcess::ALL
            .into_iter()
            .find(|p| self.get(*p).outbound.eq_ignore_ascii_case(unique_name))
    }

    /// The process whose **inbound** API is `unique_name` (case-insensitive).
    pub fn process_for_inbound(&self, unique_name: &str) -> Option<DeviceProcess> {
        DeviceProcess::ALL
            .into_iter()
            .find(|p| self.get(*p).inbound.eq_ignore_ascii_case(unique_name))
    }
}

/// The unique names of the custom API **parameters**.
///
/// Seed 000 gives only display names ("Status code", "Error message", "Outbound request",
/// "Flow URL", "Content"); the defaults are those names in PascalCase, the casing seed 000 uses inside
/// `Content` (`ResponseFormat`, `Devices`, `SerialNumber`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParameterNames {
    /// The outbound APIs' request parameter, and the inbound parameter echoing it (default `OutboundRequest`).
    pub outbound_request: String,
    /// Inbound "Status code", an integer (default `StatusCode`).
    pub status_code: String,
    /// Inbound "Error message" (default `ErrorMessage`).
    pub error_message: String,
    /// Inbound "Flow URL" (default `FlowUrl`).
    pub flow_url: String,
    /// Inbound "Content", Sync Devices only (default `Content`).
    pub content: String,
}

impl Default for ParameterNames {
    fn default() -> Self {
        Self {
            outbound_request: "OutboundRequest".to_owned(),
            status_code: "StatusCode".to_owned(),
            error_message: "ErrorMessage".to_owned(),
            flow_url: "FlowUrl".to_owned(),
            content: "Content".to_owned(),
        }
    }
}

/// Every configurable name of the contract: custom APIs and their parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContractNames {
    /// Custom API unique names.
    pub apis: CustomApiNames,
    /// Custom API parameter names.
    pub parameters: ParameterNames,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_strings_match_seed() {
        assert_eq!(CATALOG, "Device Management");
        assert_eq!(
            OUTBOUND_CATEGORY,
            "Device Management Partner Integration Outbound"
        );
    }

    #[test]
    fn default_names_follow_display_names() {
        let names = CustomApiNames::default();
        for p in DeviceProcess::ALL {
            let expected_out = format!("msemr_{}", p.outbound_display_name().replace(' ', ""));
            let expected_in = format!("msemr_{}", p.inbound_display_name().replace(' ', ""));
            assert_eq!(names.get(p).outbound, expected_out);
            assert_eq!(names.get(p).inbound, expected_in);
            assert_eq!(
                names.process_for_outbound(&expected_out.to_lowercase()),
                Some(p)
            );
            assert_eq!(names.process_for_inbound(&expected_in), Some(p));
            assert_eq!(names.process_for_outbound(&expected_in), None);
        }
    }

    #[test]
    fn process_parses_names_and_segments() {
        for p in DeviceProcess::ALL {
            assert_eq!(p.as_str().parse::<DeviceProcess>().ok(), Some(p));
            assert_eq!(p.path_segment().parse::<DeviceProcess>().ok(), Some(p));
            let json = serde_json::to_string(&p).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
        }
        assert!(matches!(
            "Reboot".parse::<DeviceProcess>(),
            Err(Error::UnknownProcess { .. })
        ));
    }

    #[test]
    fn only_sync_allows_content() {
        let allowed: Vec<_> = DeviceProcess::ALL
            .into_iter()
            .filter(|p| p.allows_content())
            .collect();
        assert_eq!(allowed, vec![DeviceProcess::SyncDevices]);
    }
}
