//! `aos-workflows`: what a tenant automates. A workflow is a [`Trigger`] (a device message, a
//! level change, a threshold crossed, a device connecting, disconnecting or first seen, a cron
//! schedule, or a person asking) and ordered [`Action`]s (assign variables from expressions,
//! branch on a condition, call an HTTP API with timeout and retries, send a command, raise or
//! clear an event, notify a webhook, save a value). Definitions are JSON (the import/export
//! form), checked when saved ([`Workflow::compile`]) and run by workers ([`run::execute`]) with
//! the trigger's facts as variables; every run is logged with its result, duration and error.

pub mod definition;
mod http;
pub mod run;
pub mod triggers;

pub use definition::{Action, DeviceEvent, Trigger, Workflow, WorkflowDocument};
pub use triggers::{DeviceFacts, TenantWorkflows, Triggered, WORKFLOW_QUEUE};
