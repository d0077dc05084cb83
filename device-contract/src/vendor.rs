//! The [`DeviceVendor`] trait: what a device vendor's system does for each of the five processes.

use std::fmt;

use crate::{AssignmentRequest, DeviceContent, EnrollmentRequest, SyncDevicesRequest, VendorCall};

/// A vendor's positive answer: the status code to report back to Dataverse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VendorAck {
    /// A 2xx status, e.g. 201 when a profile was created, 200 when it already existed.
    pub status_code: u16,
}

impl VendorAck {
    /// `200 OK`: done (or nothing to do, the state was already the requested one).
    pub fn ok() -> Self {
        Self { status_code: 200 }
    }

    /// `201 Created`: something new was created in the vendor system.
    pub fn created() -> Self {
        Self { status_code: 201 }
    }
}

/// Why a vendor could not carry out an operation. Each kind maps to the status code reported to
/// Dataverse ([`status_code`](Self::status_code)); its `Display` text becomes the error message, so
/// keep patient data out of it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VendorError {
    /// Something the request refers to does not exist at the vendor (404).
    #[error("{what} was not found in the vendor system")]
    NotFound {
        /// What was missing, e.g. "the device" or "patient profile" (not a serial number or
        /// another identifier).
        what: String,
    },
    /// The request contradicts the vendor's state, e.g. the device is assigned to someone else (409).
    #[error("conflict in the vendor system: {reason}")]
    Conflict {
        /// What conflicts.
        reason: String,
    },
    /// The vendor refused the request as invalid (422).
    #[error("the vendor rejected the request: {reason}")]
    Rejected {
        /// Why.
        reason: String,
    },
    /// The vendor refused this integration's credentials (reported as 502, a gateway problem).
    #[error("the vendor refused the integration's credentials")]
    Unauthorized,
    /// The vendor system is down or throttling (503).
    #[error("the vendor system is unavailable: {reason}")]
    Unavailable {
        /// Why, as far as known.
        reason: String,
    },
    /// Any other failure, with the status code to report (clamped to 400–599).
    #[error("vendor error: {reason}")]
    Other {
        /// Status code to report.
        status_code: u16,
        /// What happened.
        reason: String,
    },
}

impl VendorError {
    /// The status code reported to Dataverse for this error.
    pub fn status_code(&self) -> u16 {
        match self {
            Self::NotFound { .. } => 404,
            Self::Conflict { .. } => 409,
            Self::Rejected { .. } => 422,
            Self::Unauthorized => 502,
            Self::Unavailable { .. } => 503,
            Self::Other { status_code, .. } => (*status_code).clamp(400, 599),
        }
    }
}

/// A device vendor's system, seen from the bridge.
///
/// Object safe (`Arc<dyn DeviceVendor>`). Implementations should be idempotent per
/// `request_id` where the vendor API allows it; the bridge already suppresses duplicate triggers,
/// and bounds each call with a timeout (a call that does not finish is reported as 504).
#[async_trait::async_trait]
pub trait DeviceVendor: Send + Sync + fmt::Debug {
    /// Creates the patient's profile in the vendor system ("Enroll now").
    ///
    /// # Errors
    /// A [`VendorError`] saying why the profile could not be created.
    async fn enroll(&self, request: &EnrollmentRequest) -> Result<VendorAck, VendorError>;

    /// Deletes the patient's profile in the vendor system ("End enrollment").
    ///
    /// # Errors
    /// A [`VendorError`] saying why the profile could not be deleted.
    async fn end_enrollment(&self, request: &EnrollmentRequest) -> Result<VendorAck, VendorError>;

    /// Lists the vendor's devices for the account ("Sync devices").
    ///
    /// # Errors
    /// A [`VendorError`] saying why the list could not be fetched.
    async fn sync_devices(
        &self,
        request: &SyncDevicesRequest,
    ) -> Result<DeviceContent, VendorError>;

    /// Assigns a device to the patient ("Assign device").
    ///
    /// # Errors
    /// A [`VendorError`] saying why the device could not be assigned.
    async fn assign_device(&self, request: &AssignmentRequest) -> Result<VendorAck, VendorError>;

    /// Unassigns a device from the patient ("Unassign device").
    ///
    /// # Errors
    /// A [`VendorError`] saying why the device could not be unassigned.
    async fn unassign_device(&self, request: &AssignmentRequest) -> Result<VendorAck, VendorError>;
}

/// What a vendor call produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VendorOutcome {
    /// Enroll, end enrollment, assign or unassign succeeded.
    Ack(VendorAck),
    /// Sync devices succeeded with this content.
    Devices(DeviceContent),
}

/// Runs `call` against `vendor`, picking the trait method for its process.
///
/// # Errors
/// The vendor's [`VendorError`].
pub async fn dispatch(
    vendor: &dyn DeviceVendor,
    call: &VendorCall,
) -> Result<VendorOutcome, VendorError> {
    match call {
        VendorCall::Enroll(r) => vendor.enroll(r).await.map(VendorOutcome::Ack),
        VendorCall::EndEnrollment(r) => vendor.end_enrollment(r).await.map(VendorOutcome::Ack),
        VendorCall::SyncDevices(r) => vendor.sync_devices(r).await.map(VendorOutcome::Devices),
        VendorCall::AssignDevice(r) => vendor.assign_device(r).await.map(VendorOutcome::Ack),
        VendorCall::UnassignDevice(r) => vendor.unassign_device(r).await.map(VendorOutcome::Ack),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes() {
        assert_eq!(
            VendorError::NotFound { what: "x".into() }.status_code(),
            404
        );
        assert_eq!(
            VendorError::Conflict { reason: "x".into() }.status_code(),
            409
        );
        assert_eq!(
            VendorError::Rejected { reason: "x".into() }.status_code(),
            422
        );
        assert_eq!(VendorError::Unauthorized.status_code(), 502);
        assert_eq!(
            VendorError::Unavailable { reason: "x".into() }.status_code(),
            503
        );
        let other = |s| VendorError::Other {
            status_code: s,
            reason: "x".into(),
        };
        assert_eq!(other(200).status_code(), 400);
        assert_eq!(other(700).status_code(), 599);
        assert_eq!(other(418).status_code(), 418);
    }

    #[test]
    fn vendor_trait_is_object_safe() {
        fn takes(_: Option<std::sync::Arc<dyn DeviceVendor>>) {}
        takes(None);
    }
}
