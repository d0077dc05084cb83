//! An in-memory [`DeviceVendor`] for examples, tests and flow development.
//!
//! [`SimulatedVendor::new`] stocks the two devices of seed 000's example: a thermometer
//! (`AutomatedTIP1`) and a weighing machine (`AutomatedTIP2`). It keeps enrolled patients and
//! device assignments in memory, behaves like a careful vendor (repeating an operation whose result
//! already holds answers 200, a contradiction answers 409), counts calls, and can be told to fail or
//! hang on the next call of a process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use uuid::Uuid;

use crate::{
    AssignmentRequest, DeviceContent, DeviceInfo, DeviceProcess, DeviceVendor, EnrollmentRequest,
    SyncDevicesRequest, VendorAck, VendorError,
};

/// What the simulated vendor does on its next call of a process.
#[derive(Clone, Debug)]
pub enum Injected {
    /// Fail with this error.
    Fail(VendorError),
    /// Never answer (to exercise the bridge's timeout).
    Hang,
}

#[derive(Debug, Default)]
struct State {
    devices: Vec<DeviceInfo>,
    enrolled: BTreeSet<Uuid>,
    /// serial number (lowercase) -> contact id
    assignments: BTreeMap<String, Uuid>,
    calls: HashMap<DeviceProcess, usize>,
    injected: HashMap<DeviceProcess, Injected>,
}

/// An in-memory thermometer and weighing-machine vendor (see the [module docs](self)).
#[derive(Debug)]
pub struct SimulatedVendor {
    state: Mutex<State>,
}

impl Default for SimulatedVendor {
    fn default() -> Self {
        Self::new()
    }
}

impl SimulatedVendor {
    /// A vendor stocking seed 000's two devices.
    pub fn new() -> Self {
        Self::with_devices(vec![
            DeviceInfo::new("Device 1", "Thermometer", "AutomatedTIP1"),
            DeviceInfo::new("Device 2", "Weighing machine", "AutomatedTIP2"),
        ])
    }

    /// A vendor stocking `devices`.
    pub fn with_devices(devices: Vec<DeviceInfo>) -> Self {
        Self {
            state: Mutex::new(State {
                devices,
                ..State::default()
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that matters
        // for a simulator, so recover from poisoning instead of propagating it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes the next call of `process` fail with `error`.
    pub fn fail_next(&self, process: DeviceProcess, error: VendorError) {
        self.state().injected.insert(process, Injected::Fail(error));
    }

    /// Makes the next call of `process` never answer.
    pub fn hang_next(&self, process: DeviceProcess) {
        self.state().injected.insert(process, Injected::Hang);
    }

    /// How many times `process` was called (including failed and hung calls).
    pub fn calls(&self, process: DeviceProcess) -> usize {
        self.state().calls.get(&process).copied().unwrap_or(0)
    }

    /// Whether the patient `contact_id` is enrolled.
    pub fn is_enrolled(&self, contact_id: Uuid) -> bool {
        self.state().enrolled.contains(&contact_id)
    }

    /// The patient a device is assigned to, if any.
    pub fn assignee(&self, serial_number: &str) -> Option<Uuid> {
        self.state()
            .assignments
            .get(&serial_number.trim().to_ascii_lowercase())
            .copied()
    }

    /// Counts the call and returns what was injected for it, if anything.
    fn begin(&self, process: DeviceProcess) -> Option<Injected> {
        let mut state = self.state();
        *state.calls.entry(process).or_default() += 1;
        state.injected.remove(&process)
    }

    async fn apply_injection(&self, process: DeviceProcess) -> Result<(), VendorError> {
        match self.begin(process) {
            None => Ok(()),
            Some(Injected::Fail(e)) => Err(e),
            Some(Injected::Hang) => std::future::pending().await,
        }
    }
}

#[async_trait::async_trait]
impl DeviceVendor for SimulatedVendor {
    async fn enroll(&self, request: &EnrollmentRequest) -> Result<VendorAck, VendorError> {
        self.apply_injection(DeviceProcess::Enroll).await?;
        let newly = self.state().enrolled.insert(request.patient.contact_id);
        Ok(if newly {
            VendorAck::created()
        } else {
            VendorAck::ok()
        })
    }

    async fn end_enrollment(&self, request: &EnrollmentRequest) -> Result<VendorAck, VendorError> {
        self.apply_injection(DeviceProcess::EndEnrollment).await?;
        let mut state = self.state();
        let contact = request.patient.contact_id;
        if !state.enrolled.contains(&contact) {
            return Err(VendorError::NotFound {
                what: "patient profile".to_owned(),
            });
        }
        if state.assignments.values().any(|c| *c == contact) {
            return Err(VendorError::Conflict {
                reason: "the patient still has devices assigned".to_owned(),
            });
        }
        state.enrolled.remove(&contact);
        Ok(VendorAck::ok())
    }

    async fn sync_devices(
        &self,
        _request: &SyncDevicesRequest,
    ) -> Result<DeviceContent, VendorError> {
        self.apply_injection(DeviceProcess::SyncDevices).await?;
        Ok(DeviceContent::new(self.state().devices.clone()))
    }

    async fn assign_device(&self, request: &AssignmentRequest) -> Result<VendorAck, VendorError> {
        self.apply_injection(DeviceProcess::AssignDevice).await?;
        let mut state = self.state();
        let contact = request.patient.contact_id;
        let key = request.device.serial_number.trim().to_ascii_lowercase();
        if !state
            .devices
            .iter()
            .any(|d| d.serial_number.trim().to_ascii_lowercase() == key)
        {
            return Err(VendorError::NotFound {
                // Not the serial number: device identifiers are patient data (HIPAA), and this
                // text is logged and sent back to Dataverse.
                what: "the device".to_owned(),
            });
        }
        if !state.enrolled.contains(&contact) {
            return Err(VendorError::Rejected {
                reason: "the patient is not enrolled".to_owned(),
            });
        }
        match state.assignments.get(&key) {
            Some(c) if *c == contact => Ok(VendorAck::ok()),
            Some(_) => Err(VendorError::Conflict {
                reason: "the device is assigned to another patient".to_owned(),
            }),
            None => {
                state.assignments.insert(key, contact);
                Ok(VendorAck::ok())
            }
        }
    }

    async fn unassign_device(&self, request: &AssignmentRequest) -> Result<VendorAck, VendorError> {
        self.apply_injection(DeviceProcess::UnassignDevice).await?;
        let mut state = self.state();
        let key = request.device.serial_number.trim().to_ascii_lowercase();
        match state.assignments.get(&key) {
            Some(c) if *c == request.patient.contact_id => {
                state.assignments.remove(&key);
                Ok(VendorAck::ok())
            }
            Some(_) => Err(VendorError::Conflict {
                reason: "the device is assigned to another patient".to_owned(),
            }),
            None => Ok(VendorAck::ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeviceRef, PatientRef, VendorAccountRef};

    fn enrollment(contact: u128) -> EnrollmentRequest {
        EnrollmentRequest {
            request_id: Uuid::new_v4(),
            vendor_account: VendorAccountRef {
                account_id: Uuid::from_u128(1),
                external_id: None,
            },
            patient: PatientRef {
                contact_id: Uuid::from_u128(contact),
                external_id: None,
            },
            enrollment: crate::EnrollmentRef {
                enrollment_id: Uuid::from_u128(100 + contact),
                external_id: None,
            },
        }
    }

    fn assignment(contact: u128, serial: &str) -> AssignmentRequest {
        let e = enrollment(contact);
        AssignmentRequest {
            request_id: Uuid::new_v4(),
            vendor_account: e.vendor_account,
            patient: e.patient,
            enrollment: None,
            device: DeviceRef {
                device_id: None,
                serial_number: serial.to_owned(),
            },
        }
    }

    #[tokio::test]
    async fn lifecycle() {
        let v = SimulatedVendor::new();
        assert_eq!(v.enroll(&enrollment(7)).await, Ok(VendorAck::created()));
        assert_eq!(v.enroll(&enrollment(7)).await, Ok(VendorAck::ok()));
        assert!(v.is_enrolled(Uuid::from_u128(7)));
        let sync = SyncDevicesRequest {
            request_id: Uuid::new_v4(),
            vendor_account: enrollment(7).vendor_account,
        };
        let devices = v.sync_devices(&sync).await;
        assert_eq!(devices.map(|c| c.devices.len()), Ok(2));
        assert_eq!(
            v.assign_device(&assignment(7, "AutomatedTIP1")).await,
            Ok(VendorAck::ok())
        );
        assert_eq!(v.assignee("automatedtip1"), Some(Uuid::from_u128(7)));
        assert!(matches!(
            v.assign_device(&assignment(8, "AutomatedTIP1")).await,
            Err(VendorError::Rejected { .. })
        ));
        v.enroll(&enrollment(8)).await.ok();
        assert!(matches!(
            v.assign_device(&assignment(8, "AutomatedTIP1")).await,
            Err(VendorError::Conflict { .. })
        ));
        assert!(matches!(
            v.assign_device(&assignment(7, "Nope")).await,
            Err(VendorError::NotFound { .. })
        ));
        assert!(matches!(
            v.end_enrollment(&enrollment(7)).await,
            Err(VendorError::Conflict { .. })
        ));
        assert_eq!(
            v.unassign_device(&assignment(7, "AutomatedTIP1")).await,
            Ok(VendorAck::ok())
        );
        assert_eq!(v.end_enrollment(&enrollment(7)).await, Ok(VendorAck::ok()));
        assert!(!v.is_enrolled(Uuid::from_u128(7)));
        assert_eq!(v.calls(DeviceProcess::AssignDevice), 4);
    }

    #[tokio::test]
    async fn injected_failure_applies_once() {
        let v = SimulatedVendor::new();
        v.fail_next(DeviceProcess::Enroll, VendorError::Unauthorized);
        assert_eq!(
            v.enroll(&enrollment(1)).await,
            Err(VendorError::Unauthorized)
        );
        assert_eq!(v.enroll(&enrollment(1)).await, Ok(VendorAck::created()));
    }
}
