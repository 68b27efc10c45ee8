//! sea-orm entities, one module per table. Identifiers are i64 (BIGINT); every row below
//! `tenant` carries its tenant, so that every query can be scoped to one.

pub mod aos_listener;
pub mod aos_node;
pub mod api_key;
pub mod app_user;
pub mod attribute_def;
pub mod audit_log;
pub mod class_function;
pub mod command;
pub mod command_batch;
pub mod command_group;
pub mod credential_change;
pub mod device;
pub mod device_class;
pub mod device_credential;
pub mod event;
pub mod interpreter;
pub mod latest_value;
pub mod ledger;
pub mod message_format;
pub mod message_log;
pub mod org_entity;
pub mod refresh_token;
pub mod role;
pub mod tenant;
pub mod user_role;
pub mod workflow;
pub mod workflow_run;
