//! Workflow definitions: the JSON form people write, import and export, and its checked,
//! compiled form.
//!
//! Wherever an action takes a value (command parameters, an HTTP body, a message, a saved value,
//! a device id, a URL), a string beginning with `=` is an expression (rhai) of the run's
//! variables, and any other string is itself: `"reboot"` is that text, `"=value * 2"` is
//! computed. In objects and arrays every string is read the same way.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use aos_formats::interpret::Engine;
use croner::Cron;
use rhai::AST;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most actions one workflow may hold (counting those inside conditions).
pub const MAX_ACTIONS: usize = 100;
/// Most attempts of an HTTP call (its retries included).
pub const MAX_HTTP_ATTEMPTS: u32 = 10;

/// What starts a workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// A device message was stored (of devices of `class`, or device `device`; of the `message`
    /// kind: telemetry, attributes or events). Variables: `device`, `values` (attribute → value),
    /// and each attribute's value by its name when it is a plain identifier.
    Message {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        class: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// An attribute's level changed (to `level`, if given). Variables: `device`, `attribute`,
    /// `value`, `level`, `previous_level`.
    Level {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attribute: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        level: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        class: Option<String>,
    },
    /// An attribute's value went above `above` (or below `below`) from a value that was not.
    /// Variables: `device`, `attribute`, `value`, `previous`.
    Threshold {
        attribute: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        above: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        below: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        class: Option<String>,
    },
    /// A device connected, disconnected, or was seen for the first time (its first connection,
    /// or its registration by its gateway). Variables: `device`, `event`.
    Device {
        event: DeviceEvent,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        class: Option<String>,
    },
    /// A cron schedule (5 fields, or 6 with seconds first; UTC). Variables: `scheduled_at`.
    Schedule { cron: String },
    /// Only when someone runs it. Variables: those given (`device`, if named).
    Manual,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceEvent {
    Connected,
    Disconnected,
    Registered,
}

/// An HTTP call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCall {
    /// An `http://` or `https://` URL (or an expression giving one).
    pub url: String,
    #[serde(default = "post")]
    pub method: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Sent as JSON (a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Per attempt (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Attempts after the first when it fails or answers 5xx (default 0).
    #[serde(default)]
    pub retries: u32,
    /// A variable that gets `{"status": …, "body": …}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

fn post() -> String {
    "POST".into()
}

/// One step of a workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Sets variable `name` to an expression's value.
    Assign { name: String, expression: String },
    /// Runs `then` when the condition (an expression) is true, `else` otherwise.
    If {
        condition: String,
        #[serde(default)]
        then: Vec<Action>,
        #[serde(default, rename = "else", skip_serializing_if = "Vec::is_empty")]
        otherwise: Vec<Action>,
    },
    /// Calls an HTTP API; a failure (after the retries) or a 4xx/5xx answer fails the run.
    Http(HttpCall),
    /// Queues a command for a device (the trigger's device unless `device` names one).
    Command {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
        name: String,
        #[serde(default = "empty_object")]
        parameters: Value,
        /// How long it may wait for the device (default 1h).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_in: Option<String>,
    },
    /// Raises an event (alarm) for a device.
    RaiseEvent {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attribute: Option<String>,
        level: String,
        message: String,
    },
    /// Clears a device's open events (of one attribute, if given).
    ClearEvent {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attribute: Option<String>,
    },
    /// Posts `{"workflow", "message", "device", "at"}` as JSON to a webhook.
    Notify { webhook: String, message: String },
    /// Writes a value of a device attribute (ledger and latest value).
    Save {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
        attribute: String,
        value: Value,
    },
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// A workflow as imported and exported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDocument {
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub trigger: Trigger,
    pub actions: Vec<Action>,
}

fn yes() -> bool {
    true
}

/// A checked workflow: its expressions compiled, its durations and schedule read.
#[derive(Debug)]
pub struct Workflow {
    pub trigger: Trigger,
    pub actions: Vec<Action>,
    pub(crate) expressions: HashMap<String, AST>,
    pub(crate) durations: HashMap<String, Duration>,
    schedule: Option<Cron>,
}

/// The expression of a template string (`=…`), if it is one.
pub(crate) fn expression_of(text: &str) -> Option<&str> {
    text.strip_prefix('=')
}

impl Workflow {
    /// Checks a stored trigger and actions; the error says what is wrong and where.
    pub fn compile(engine: &Engine, trigger: &Value, actions: &Value) -> Result<Workflow, String> {
        let trigger: Trigger = serde_json::from_value(trigger.clone()).map_err(|e| {
            format!("trigger: {e} (kinds: message, level, threshold, device, schedule, manual)")
        })?;
        let actions: Vec<Action> = serde_json::from_value(actions.clone()).map_err(|e| {
            format!("actions: {e} (each one of assign, if, http, command, raise_event, clear_event, notify, save)")
        })?;
        let mut compiled = Workflow {
            trigger,
            actions: Vec::new(),
            expressions: HashMap::new(),
            durations: HashMap::new(),
            schedule: None,
        };
        match &compiled.trigger {
            Trigger::Schedule { cron } => {
                compiled.schedule = Some(Cron::from_str(cron).map_err(|e| {
                    format!("trigger: the cron pattern `{cron}` is not valid: {e}")
                })?);
            }
            Trigger::Threshold { above, below, .. } if above.is_none() == below.is_none() => {
                return Err("trigger: a threshold has either `above` or `below`".into());
            }
            Trigger::Message {
                message: Some(kind),
                ..
            } if !["telemetry", "attributes", "events"].contains(&kind.as_str()) => {
                return Err(format!(
                    "trigger: `message` is telemetry, attributes or events, not `{kind}`"
                ));
            }
            _ => {}
        }
        let mut count = 0;
        compiled.check(engine, &actions, "actions", &mut count)?;
        compiled.actions = actions;
        Ok(compiled)
    }

    /// The next time a schedule fires after `after`.
    pub fn next_run(
        &self,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.schedule
            .as_ref()
            .and_then(|cron| cron.find_next_occurrence(&after, false).ok())
    }

    fn expression(&mut self, engine: &Engine, text: &str, at: &str) -> Result<(), String> {
        if !self.expressions.contains_key(text) {
            let ast = engine
                .compile_expression(text)
                .map_err(|e| format!("{at}: the expression `{text}` does not compile: {e}"))?;
            self.expressions.insert(text.to_string(), ast);
        }
        Ok(())
    }

    fn template(&mut self, engine: &Engine, value: &Value, at: &str) -> Result<(), String> {
        match value {
            Value::String(text) => match expression_of(text) {
                Some(expression) => self.expression(engine, expression, at),
                None => Ok(()),
            },
            Value::Array(items) => items.iter().try_for_each(|v| self.template(engine, v, at)),
            Value::Object(fields) => fields
                .values()
                .try_for_each(|v| self.template(engine, v, at)),
            _ => Ok(()),
        }
    }

    fn text(&mut self, engine: &Engine, text: &str, at: &str) -> Result<(), String> {
        self.template(engine, &Value::String(text.to_string()), at)
    }

    fn duration(&mut self, text: &str, at: &str) -> Result<(), String> {
        let parsed = humantime::parse_duration(text)
            .map_err(|e| format!("{at}: `{text}` is not a duration (10s, 5m, 1h): {e}"))?;
        if aos_storage::repo::expiry_after(parsed).is_none() {
            return Err(format!(
                "{at}: `{text}` is too long: it ends after the year 9999"
            ));
        }
        self.durations.insert(text.to_string(), parsed);
        Ok(())
    }

    fn check(
        &mut self,
        engine: &Engine,
        actions: &[Action],
        path: &str,
        count: &mut usize,
    ) -> Result<(), String> {
        for (i, action) in actions.iter().enumerate() {
            *count += 1;
            if *count > MAX_ACTIONS {
                return Err(format!("a workflow holds at most {MAX_ACTIONS} actions"));
            }
            let at = format!("{path}[{i}]");
            match action {
                Action::Assign { name, expression } => {
                    check_variable(name, &at)?;
                    self.expression(engine, expression, &at)?;
                }
                Action::If {
                    condition,
                    then,
                    otherwise,
                } => {
                    self.expression(engine, condition, &at)?;
                    self.check(engine, then, &format!("{at}.then"), count)?;
                    self.check(engine, otherwise, &format!("{at}.else"), count)?;
                }
                Action::Http(call) => {
                    self.text(engine, &call.url, &at)?;
                    if expression_of(&call.url).is_none()
                        && !(call.url.starts_with("http://") || call.url.starts_with("https://"))
                    {
                        return Err(format!(
                            "{at}: the URL `{}` is not http:// or https://",
                            call.url
                        ));
                    }
                    if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&call.method.as_str()) {
                        return Err(format!(
                            "{at}: the method is GET, POST, PUT, PATCH or DELETE, not `{}`",
                            call.method
                        ));
                    }
                    if let Some(body) = &call.body {
                        self.template(engine, body, &at)?;
                    }
                    if let Some(timeout) = &call.timeout {
                        self.duration(timeout, &at)?;
                    }
                    if call.retries >= MAX_HTTP_ATTEMPTS {
                        return Err(format!("{at}: at most {} retries", MAX_HTTP_ATTEMPTS - 1));
                    }
                    if let Some(result) = &call.result {
                        check_variable(result, &at)?;
                    }
                }
                Action::Command {
                    device,
                    name,
                    parameters,
                    expires_in,
                } => {
                    self.optional(engine, device.as_deref(), &at)?;
                    self.text(engine, name, &at)?;
                    if !parameters.is_object() {
                        return Err(format!("{at}: command parameters are a JSON object"));
                    }
                    self.template(engine, parameters, &at)?;
                    if let Some(expires_in) = expires_in {
                        self.duration(expires_in, &at)?;
                    }
                }
                Action::RaiseEvent {
                    device,
                    message,
                    level,
                    ..
                } => {
                    self.optional(engine, device.as_deref(), &at)?;
                    self.text(engine, message, &at)?;
                    self.text(engine, level, &at)?;
                }
                Action::ClearEvent { device, .. } => {
                    self.optional(engine, device.as_deref(), &at)?;
                }
                Action::Notify { webhook, message } => {
                    self.text(engine, webhook, &at)?;
                    self.text(engine, message, &at)?;
                }
                Action::Save {
                    device,
                    attribute,
                    value,
                } => {
                    self.optional(engine, device.as_deref(), &at)?;
                    aos_formats::check_attribute(attribute).map_err(|e| format!("{at}: {e}"))?;
                    self.template(engine, value, &at)?;
                }
            }
        }
        Ok(())
    }

    fn optional(&mut self, engine: &Engine, text: Option<&str>, at: &str) -> Result<(), String> {
        text.map_or(Ok(()), |t| self.text(engine, t, at))
    }
}

/// Whether `name` can be a variable: letters, digits and `_`, not starting with a digit.
pub(crate) fn is_variable(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_variable(name: &str, at: &str) -> Result<(), String> {
    if is_variable(name) {
        Ok(())
    } else {
        Err(format!(
            "{at}: `{name}` is not a variable name (letters, digits and _, not starting with a digit)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(trigger: Value, actions: Value) -> Result<Workflow, String> {
        Workflow::compile(&aos_formats::interpret::engine(), &trigger, &actions)
    }

    #[test]
    fn definitions_are_checked_where_they_are_wrong() {
        let ok = compile(
            json!({"kind": "level", "attribute": "t", "level": "faulty"}),
            json!([
                {"assign": {"name": "target", "expression": "value - 5"}},
                {"if": {"condition": "target > 10", "then": [
                    {"command": {"name": "cool", "parameters": {"to": "=target"}}}
                ]}},
                {"http": {"url": "http://127.0.0.1:1/x", "retries": 2, "timeout": "2s"}}
            ]),
        );
        assert!(ok.is_ok(), "{ok:?}");
        let cases = [
            (json!({"kind": "sometimes"}), json!([]), "trigger"),
            (
                json!({"kind": "schedule", "cron": "61 * * * *"}),
                json!([]),
                "cron pattern",
            ),
            (
                json!({"kind": "threshold", "attribute": "t"}),
                json!([]),
                "either `above` or `below`",
            ),
            (
                json!({"kind": "manual"}),
                json!([{"assign": {"name": "x", "expression": "1 +"}}]),
                "actions[0]",
            ),
            (
                json!({"kind": "manual"}),
                json!([{"assign": {"name": "9x", "expression": "1"}}]),
                "not a variable name",
            ),
            (
                json!({"kind": "manual"}),
                json!([{"if": {"condition": "true", "then": [{"http": {"url": "ftp://x"}}]}}]),
                "actions[0].then[0]",
            ),
            (
                json!({"kind": "manual"}),
                json!([{"http": {"url": "http://x", "timeout": "soon"}}]),
                "not a duration",
            ),
            (
                json!({"kind": "manual"}),
                json!([{"command": {"name": "x", "expires_in": "100000years"}}]),
                "ends after the year 9999",
            ),
            (
                json!({"kind": "manual"}),
                json!([{"launch": {}}]),
                "actions",
            ),
            (
                json!({"kind": "manual"}),
                json!([{"command": {"name": "x", "parameters": {"a": "=)"}}}]),
                "does not compile",
            ),
        ];
        for (trigger, actions, expected) in cases {
            let err = compile(trigger.clone(), actions.clone()).expect_err("refused");
            assert!(err.contains(expected), "{trigger} {actions}: {err}");
        }
    }

    #[test]
    fn schedules_name_their_next_run() {
        let every_minute = compile(
            json!({"kind": "schedule", "cron": "*/15 * * * * *"}),
            json!([]),
        )
        .expect("valid");
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-30T10:00:07Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
        assert_eq!(
            every_minute.next_run(at).map(|t| t.to_rfc3339()),
            Some("2026-11-30T10:00:15+00:00".into())
        );
    }

    #[test]
    fn documents_round_trip() {
        let document: WorkflowDocument = serde_json::from_value(json!({
            "name": "cool",
            "trigger": {"kind": "threshold", "attribute": "t", "above": 30.0},
            "actions": [{"notify": {"webhook": "http://h/x", "message": "=`hot: ${value}`"}}]
        }))
        .expect("reads");
        assert!(document.enabled);
        let again: WorkflowDocument =
            serde_json::from_value(serde_json::to_value(&document).expect("writes"))
                .expect("reads back");
        assert_eq!(again, document);
    }
}
