//! Device data partner integration for Dataverse care management, both sides of the contract.
//!
//! Microsoft's retired "device data support in care management (preview)" connected a device
//! vendor to Dataverse through five processes (enroll a patient, end an enrollment, sync devices,
//! assign a device, unassign a device). For each, Dataverse runs an **outbound** custom API when
//! the user presses a button, a flow calls the vendor, and the flow answers through an **inbound**
//! custom API with one generic response. This crate implements that loop in Rust:
//!
//! - the contract: [`DeviceProcess`], the configurable custom API names ([`ContractNames`]), the
//!   outbound request ([`OutboundRequest`]) and the inbound response ([`InboundResponse`], with the
//!   Sync Devices [`DeviceContent`] carried as a JSON string);
//! - the partner side: the [`DeviceVendor`] trait (and a [`simulated`] vendor), trigger parsing for
//!   webhooks and forwarded action triggers ([`Trigger`], with the webhook body of
//!   [`carebridge_dataverse_client::webhook`]), the [`DeviceBridge`] that
//!   runs a trigger through the vendor (bounded by a timeout, duplicates suppressed by an
//!   [`IdempotencyStore`]) and answers through the inbound custom API with
//!   `carebridge-dataverse-client`, and (feature `server`) the axum `DeviceReceiver` that
//!   serves it over HTTP;
//! - durability (feature `sql`): the receiver inbox (`SqlInbox`) commits every trigger to SQLite or
//!   PostgreSQL before answering `202` and processes it at least once with leased workers, and
//!   `SqlIdempotencyStore` keeps idempotency keys and vendor answers in the same database;
//! - the Dataverse side: the [`InboundProcessor`] that applies a response (device rows by serial
//!   number, enrollment state, device–patient link) and sends the in-app notification.
//!
//! Microsoft never published the unique names of the ten custom APIs, their parameters or the
//! enrollment table: every such name is configuration with a documented default in Microsoft's
//! `msemr_` style ([`CustomApiNames`], [`ParameterNames`], [`DeviceTable`],
//! [`EnrollmentTable`]). The guide is `docs/device-contract.md`.
//!
//! ```
//! use carebridge_device_contract::{
//!     DeviceContent, DeviceInfo, DeviceProcess, InboundResponse, OutboundRequest, VendorAccountRef,
//! };
//! # fn main() -> Result<(), carebridge_device_contract::Error> {
//! // Dataverse side: the outbound request the "Sync devices" button sends.
//! let vendor = VendorAccountRef { account_id: uuid::Uuid::new_v4(), external_id: None };
//! let request = OutboundRequest::new(DeviceProcess::SyncDevices, vendor).to_json()?;
//!
//! // Partner side: answer with the vendor's devices, exactly in seed 000's Content format.
//! let content = DeviceContent::new(vec![
//!     DeviceInfo::new("Device 1", "Thermometer", "AutomatedTIP1"),
//!     DeviceInfo::new("Device 2", "Weighing machine", "AutomatedTIP2"),
//! ]);
//! let response = InboundResponse::success(200, request).with_content(&content)?;
//! response.validate(DeviceProcess::SyncDevices)?;
//!
//! // On the wire, Content is a JSON *string* inside the response.
//! let wire = serde_json::to_value(&response).expect("serializable");
//! assert!(wire["Content"].is_string());
//! assert_eq!(response.device_content()?, Some(content));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod bridge;
mod error;
mod idempotency;
mod inbound;
#[cfg(feature = "sql")]
#[cfg_attr(docsrs, doc(cfg(feature = "sql")))]
mod inbox;
mod process;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
mod receiver;
mod request;
mod response;
// A namespace of its own: its plan, findings and outcomes are registration vocabulary, not the
// contract's, so its types are not re-exported at the root.
pub mod registration;
pub mod simulated;
mod trigger;
mod vendor;

pub use bridge::{
    BridgeOptions, BridgeOutcome, DeviceBridge, InMemoryRetryQueue, OutcomeSink,
    UndeliveredResponse,
};
pub use error::{Error, Result};
pub use idempotency::{Claim, CompletedRecord, IdempotencyStore, InMemoryIdempotencyStore};
pub use inbound::{
    DeviceTable, EnrollmentTable, InboundProcessor, InboundProcessorOptions, InboundReport,
    NotificationOptions, ICON_FAILURE, ICON_SUCCESS,
};
#[cfg(feature = "sql")]
pub use inbox::{
    InboxCounts, InboxItem, InboxOptions, InboxStage, SqlIdempotencyStore, SqlInbox, StageHook,
};
pub use process::{
    ContractNames, CustomApiNames, DeviceProcess, ParameterNames, ProcessApiNames, CATALOG,
    OUTBOUND_CATEGORY,
};
#[cfg(feature = "server")]
pub use receiver::{DeviceReceiver, ReceiverAuth, ReceiverOptions};
pub use request::{
    AssignmentRequest, DeviceRef, EnrollmentRef, EnrollmentRequest, OutboundRequest, PatientRef,
    SyncDevicesRequest, VendorAccountRef, VendorCall,
};
pub use response::{DeviceContent, DeviceInfo, InboundResponse};
pub use trigger::{IdempotencyKey, Trigger, TriggerContext, TriggerSource};
pub use vendor::{dispatch, DeviceVendor, VendorAck, VendorError, VendorOutcome};

/// The README's code blocks, compiled as doc tests so that none of them can rot.
#[doc = include_str!("../README.md")]
// Its examples use the HTTP receiver and the SQL inbox.
#[cfg(all(doctest, feature = "server", feature = "sql"))]
pub struct ReadmeDoctests;
