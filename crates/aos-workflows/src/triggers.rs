//! Which workflows a happening starts, and the queued form of a started run.
//!
//! Runs go through the durable `workflows` queue: whoever notices a trigger (the acquisition
//! pipeline, the presence listener, the scheduler, the API) pushes a [`Triggered`] item, and
//! workers run them. Each carries a key naming the happening, so a happening noticed twice
//! (a redelivered message) runs a workflow once.

use std::collections::HashMap;
use std::sync::Arc;

use aos_storage::entity::workflow;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::definition::{DeviceEvent, Trigger, Workflow, is_variable};

/// The queue of workflow runs to make.
pub const WORKFLOW_QUEUE: &str = "workflows";

/// A workflow run to make.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Triggered {
    pub workflow: i64,
    pub tenant: i64,
    /// Names the happening (unique per workflow run); `None`: always run (manual runs).
    pub key: Option<String>,
    pub variables: Map<String, Value>,
}

impl Triggered {
    pub fn encode(&self) -> bytes::Bytes {
        serde_json::to_vec(self).unwrap_or_default().into()
    }

    pub fn decode(payload: &[u8]) -> Result<Triggered, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

/// A device as triggers see it.
#[derive(Clone, Copy, Debug)]
pub struct DeviceFacts<'a> {
    pub uid: &'a str,
    pub class: i64,
}

/// The enabled workflows of one tenant, compiled, with its class names resolved.
#[derive(Default)]
pub struct TenantWorkflows {
    workflows: Vec<(workflow::Model, Arc<Workflow>)>,
    classes: HashMap<String, i64>,
}

impl TenantWorkflows {
    /// `stored`: the tenant's enabled workflows (those that do not compile are skipped with a
    /// warning: they were checked when saved); `classes`: its class names and ids.
    pub fn new(
        engine: &aos_formats::interpret::Engine,
        stored: Vec<workflow::Model>,
        classes: HashMap<String, i64>,
    ) -> TenantWorkflows {
        let workflows = stored
            .into_iter()
            .filter_map(|w| match Workflow::compile(engine, &w.trigger, &w.actions) {
                Ok(compiled) => Some((w, Arc::new(compiled))),
                Err(err) => {
                    tracing::warn!(workflow = %w.name, %err, "a stored workflow does not compile; it does not run");
                    None
                }
            })
            .collect();
        TenantWorkflows { workflows, classes }
    }

    pub fn is_empty(&self) -> bool {
        self.workflows.is_empty()
    }

    fn in_class(&self, wanted: Option<&String>, device: DeviceFacts) -> bool {
        wanted.is_none_or(|name| self.classes.get(name) == Some(&device.class))
    }

    /// Whether a threshold workflow watches `attribute` (its changes must then be reported).
    pub fn watches(&self, attribute: &str) -> bool {
        self.workflows.iter().any(
            |(_, w)| matches!(&w.trigger, Trigger::Threshold { attribute: a, .. } if a == attribute),
        )
    }

    fn each<'a>(
        &'a self,
        wanted: impl Fn(&Trigger) -> bool + 'a,
    ) -> impl Iterator<Item = &'a workflow::Model> + 'a {
        self.workflows
            .iter()
            .filter(move |(_, w)| wanted(&w.trigger))
            .map(|(m, _)| m)
    }

    /// Runs for a stored device message of `kind` (telemetry, attributes, events) with `values`.
    pub fn on_message(
        &self,
        message_key: &str,
        device: DeviceFacts,
        kind: &str,
        values: &Map<String, Value>,
    ) -> Vec<Triggered> {
        self.each(|t| match t {
            Trigger::Message {
                class,
                device: only,
                message,
            } => {
                self.in_class(class.as_ref(), device)
                    && only.as_deref().is_none_or(|u| u == device.uid)
                    && message.as_deref().is_none_or(|m| m == kind)
            }
            _ => false,
        })
        .map(|w| {
            let mut variables = Map::new();
            for (name, value) in values {
                if is_variable(name) {
                    variables.insert(name.clone(), value.clone());
                }
            }
            variables.insert("values".into(), Value::Object(values.clone()));
            variables.insert("message".into(), kind.into());
            variables.insert("device".into(), device.uid.into());
            triggered(
                w,
                format!("message:{message_key}:{}", device.uid),
                variables,
            )
        })
        .collect()
    }

    /// Runs for a change of an attribute's latest value: level triggers when its level changed,
    /// threshold triggers when it crossed theirs.
    pub fn on_change(
        &self,
        change: &aos_storage::repo::ingest::Change,
        device: DeviceFacts,
    ) -> Vec<Triggered> {
        let number = change.value.as_f64();
        let before = change.previous.as_ref().and_then(Value::as_f64);
        let crossed = |above: &Option<f64>, below: &Option<f64>| match (above, below, number) {
            (Some(limit), _, Some(n)) => n > *limit && before.is_none_or(|b| b <= *limit),
            (_, Some(limit), Some(n)) => n < *limit && before.is_none_or(|b| b >= *limit),
            _ => false,
        };
        self.each(|t| match t {
            Trigger::Level {
                attribute,
                level,
                class,
            } => {
                change.level_changed()
                    && self.in_class(class.as_ref(), device)
                    && attribute.as_deref().is_none_or(|a| a == change.attribute)
                    && level.as_deref().is_none_or(|l| l == change.level)
            }
            Trigger::Threshold {
                attribute,
                above,
                below,
                class,
            } => {
                *attribute == change.attribute
                    && self.in_class(class.as_ref(), device)
                    && crossed(above, below)
            }
            _ => false,
        })
        .map(|w| {
            let mut variables = Map::new();
            variables.insert("device".into(), device.uid.into());
            variables.insert("attribute".into(), change.attribute.clone().into());
            variables.insert("value".into(), change.value.clone());
            variables.insert("level".into(), change.level.clone().into());
            variables.insert(
                "previous_level".into(),
                change.previous_level.clone().into(),
            );
            variables.insert(
                "previous".into(),
                change.previous.clone().unwrap_or(Value::Null),
            );
            let key = format!(
                "change:{}:{}:{}",
                change.message, device.uid, change.attribute
            );
            triggered(w, key, variables)
        })
        .collect()
    }

    /// Runs for a device connecting, disconnecting or being seen first; `at_ms` names the
    /// happening.
    pub fn on_device(&self, device: DeviceFacts, event: DeviceEvent, at_ms: i64) -> Vec<Triggered> {
        self.each(|t| {
            matches!(t, Trigger::Device { event: e, class } if *e == event && self.in_class(class.as_ref(), device))
        })
        .map(|w| {
            let mut variables = Map::new();
            variables.insert("device".into(), device.uid.into());
            let name = serde_json::to_value(event).unwrap_or_default();
            variables.insert("event".into(), name.clone());
            let key = format!("device:{}:{}:{at_ms}", device.uid, name.as_str().unwrap_or_default());
            triggered(w, key, variables)
        })
        .collect()
    }
}

fn triggered(workflow: &workflow::Model, key: String, variables: Map<String, Value>) -> Triggered {
    Triggered {
        workflow: workflow.id,
        tenant: workflow.tenant_id,
        key: Some(format!("{}:{key}", workflow.id)),
        variables,
    }
}
