//! Running a workflow: its actions in order, the trigger's facts and the assigned values as
//! variables, the whole run bounded in time. A run that fails or times out says why; it never
//! affects anything else.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use aos_formats::interpret::Engine;
use aos_storage::Storage;
use aos_storage::entity::device;
use aos_storage::repo::commands::{self, NewCommand};
use aos_storage::repo::ingest::{self, Reading};
use aos_storage::repo::{Scope, devices, interpreters};
use chrono::Utc;
use rhai::Dynamic;
use serde_json::{Map, Value, json};

use crate::definition::{Action, HttpCall, Workflow, expression_of};
use crate::http::{self, Request};

/// The longest a run takes unless configured (`worker.workflow_timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an HTTP attempt may take unless the action says.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a workflow's command may wait for its device unless the action says.
const COMMAND_EXPIRY: Duration = Duration::from_secs(3600);
/// Webhook notifications are tried this many more times.
const NOTIFY_RETRIES: u32 = 2;
/// The most steps a run's log keeps (a workflow has no loops: its definition bounds them).
const MAX_STEPS: usize = 200;
/// The longest detail a step's log keeps, in characters.
const MAX_DETAIL: usize = 300;

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `ok`, `failed` or `timeout`.
    pub result: &'static str,
    pub error: Option<String>,
    pub duration: Duration,
    pub steps: Vec<StepRecord>,
}

/// One action a run took.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StepRecord {
    /// Its place: `2`, or `3.then.1` / `3.else.1` inside the `if` that is action 3.
    pub step: String,
    pub action: &'static str,
    /// `ok`, `failed`, or `running` when the run's time ran out during it.
    pub result: &'static str,
    /// What it did, or why it failed.
    pub detail: String,
    /// How long it took, in milliseconds.
    pub ms: u64,
}

/// What a run needs around it.
pub struct Runtime<'a> {
    pub storage: &'a Storage,
    pub engine: &'a Engine,
    /// The whole run's limit.
    pub timeout: Duration,
}

/// Runs `workflow` (called `name`, of `tenant`) with `variables`.
pub async fn execute(
    runtime: &Runtime<'_>,
    workflow: &Workflow,
    name: &str,
    tenant: i64,
    variables: Map<String, Value>,
) -> Outcome {
    let started = Instant::now();
    let mut run = Run {
        storage: runtime.storage,
        engine: runtime.engine,
        workflow,
        name,
        scope: Scope::tenant(tenant),
        vars: variables,
        steps: Vec::new(),
    };
    let result = tokio::time::timeout(
        runtime.timeout,
        run.actions(&workflow.actions, String::new()),
    )
    .await;
    let duration = started.elapsed();
    let steps = run.steps;
    match result {
        Ok(Ok(())) => Outcome {
            result: "ok",
            error: None,
            duration,
            steps,
        },
        Ok(Err(error)) => Outcome {
            result: "failed",
            error: Some(error),
            duration,
            steps,
        },
        Err(_) => Outcome {
            result: "timeout",
            error: Some(format!("the run took longer than {:?}", runtime.timeout)),
            duration,
            steps,
        },
    }
}

/// At most [`MAX_DETAIL`] characters of `text`.
fn clipped(text: String) -> String {
    match text.char_indices().nth(MAX_DETAIL) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

struct Run<'a> {
    storage: &'a Storage,
    engine: &'a Engine,
    workflow: &'a Workflow,
    name: &'a str,
    scope: Scope,
    vars: Map<String, Value>,
    /// What the run did so far.
    steps: Vec<StepRecord>,
}

type Step<'b> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'b>>;

impl Run<'_> {
    fn eval(&self, text: &str) -> Result<Value, String> {
        let ast = self
            .workflow
            .expressions
            .get(text)
            .ok_or_else(|| format!("the expression `{text}` was not checked"))?;
        let mut scope = rhai::Scope::new();
        for (name, value) in &self.vars {
            let dynamic: Dynamic =
                rhai::serde::to_dynamic(value).map_err(|e| format!("variable `{name}`: {e}"))?;
            scope.push_dynamic(name.as_str(), dynamic);
        }
        let result: Dynamic = self
            .engine
            .eval_ast_with_scope(&mut scope, ast)
            .map_err(|e| format!("`{text}`: {e}"))?;
        rhai::serde::from_dynamic(&result).map_err(|e| format!("`{text}` gave {e}"))
    }

    /// A template with its `=` expressions computed.
    fn render(&self, template: &Value) -> Result<Value, String> {
        Ok(match template {
            Value::String(text) => match expression_of(text) {
                Some(expression) => self.eval(expression)?,
                None => template.clone(),
            },
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.render(v))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.render(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }

    fn text(&self, template: &str) -> Result<String, String> {
        Ok(match self.render(&Value::String(template.to_string()))? {
            Value::String(text) => text,
            other => other.to_string(),
        })
    }

    /// The device named (a template), else the trigger's.
    async fn device(&self, given: Option<&str>) -> Result<device::Model, String> {
        let uid = match given {
            Some(template) => self.text(template)?,
            None => self
                .vars
                .get("device")
                .and_then(Value::as_str)
                .map(String::from)
                .ok_or("no device: the trigger names none, so the action must")?,
        };
        devices::get(self.storage, self.scope, &uid)
            .await
            .map_err(|e| e.to_string())
    }

    /// Takes `actions` in order, each logged as a step numbered after `prefix`.
    fn actions<'b>(&'b mut self, actions: &'b [Action], prefix: String) -> Step<'b> {
        Box::pin(async move {
            for (i, action) in actions.iter().enumerate() {
                let step = format!("{prefix}{}", i + 1);
                let logged = (self.steps.len() < MAX_STEPS).then(|| {
                    self.steps.push(StepRecord {
                        step: step.clone(),
                        action: kind(action),
                        result: "running",
                        detail: String::new(),
                        ms: 0,
                    });
                    self.steps.len() - 1
                });
                let started = Instant::now();
                let done = self.action(action, &step).await;
                if let Some(at) = logged {
                    let record = &mut self.steps[at];
                    record.ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    (record.result, record.detail) = match &done {
                        Ok(did) => ("ok", clipped(did.clone())),
                        Err(error) => ("failed", clipped(error.clone())),
                    };
                }
                done.map_err(|e| format!("action {} ({}): {e}", i + 1, kind(action)))?;
            }
            Ok(())
        })
    }

    /// Takes one action (step `step`); returns what it did, for the run's log.
    async fn action(&mut self, action: &Action, step: &str) -> Result<String, String> {
        Ok(match action {
            Action::Assign { name, expression } => {
                let value = self.eval(expression)?;
                let did = format!("{name} = {value}");
                self.vars.insert(name.clone(), value);
                did
            }
            Action::If {
                condition,
                then,
                otherwise,
            } => {
                let holds = match self.eval(condition)? {
                    Value::Bool(b) => b,
                    other => return Err(format!("the condition gave {other}, not true or false")),
                };
                let (branch, taken) = if holds {
                    ("then", then)
                } else {
                    ("else", otherwise)
                };
                self.actions(taken, format!("{step}.{branch}.")).await?;
                format!(
                    "the condition was {holds}: {branch}, {} action{}",
                    taken.len(),
                    if taken.len() == 1 { "" } else { "s" }
                )
            }
            Action::Http(call) => self.http(call).await?,
            Action::Command {
                device,
                name,
                parameters,
                expires_in,
            } => {
                let target = self.device(device.as_deref()).await?;
                let expires = expires_in
                    .as_ref()
                    .and_then(|d| self.workflow.durations.get(d).copied())
                    .unwrap_or(COMMAND_EXPIRY);
                let new = NewCommand {
                    name: self.text(name)?,
                    parameters: self.render(parameters)?,
                    expires_at: Some(aos_storage::repo::expiry_after(expires).ok_or_else(
                        || {
                            format!(
                                "the command's expires_in ({expires:?}) ends after the year 9999"
                            )
                        },
                    )?),
                };
                let created = commands::create(self.storage, self.scope, &target.uid, &new)
                    .await
                    .map_err(|e| e.to_string())?;
                self.vars.insert("command_id".into(), created.id.into());
                format!("command {} `{}` to {}", created.id, new.name, target.uid)
            }
            Action::RaiseEvent {
                device,
                attribute,
                level,
                message,
            } => {
                let target = self.device(device.as_deref()).await?;
                let level = self.text(level)?;
                interpreters::raise(
                    self.storage,
                    &target,
                    attribute.as_deref(),
                    &level,
                    &self.text(message)?,
                )
                .await
                .map_err(|e| e.to_string())?;
                format!("{level} event of {}", target.uid)
            }
            Action::ClearEvent { device, attribute } => {
                let target = self.device(device.as_deref()).await?;
                interpreters::clear_open(self.storage, &target, attribute.as_deref())
                    .await
                    .map_err(|e| e.to_string())?;
                format!("open events of {} cleared", target.uid)
            }
            Action::Notify { webhook, message } => {
                let body = json!({
                    "workflow": self.name,
                    "message": self.text(message)?,
                    "device": self.vars.get("device"),
                    "at": Utc::now().to_rfc3339(),
                });
                let answer = http::call(Request {
                    method: "POST".into(),
                    url: self.text(webhook)?,
                    headers: Vec::new(),
                    body: Some(body.to_string()),
                    timeout: HTTP_TIMEOUT,
                    retries: NOTIFY_RETRIES,
                })
                .await?;
                if answer.status >= 400 {
                    return Err(format!("the webhook answered {}", answer.status));
                }
                format!("the webhook answered {}", answer.status)
            }
            Action::Save {
                device,
                attribute,
                value,
            } => {
                let target = self.device(device.as_deref()).await?;
                let value = self.render(value)?;
                let did = format!("{}.{attribute} = {value}", target.uid);
                let reading = Reading {
                    message: format!("workflow:{}", self.name),
                    tenant: target.tenant_id,
                    device: target.id,
                    attribute: attribute.clone(),
                    ts: Utc::now(),
                    value,
                    raw: None,
                    level: None,
                    watched: false,
                };
                ingest::record(
                    self.storage,
                    &[] as &[ingest::LoggedMessage],
                    &[reading],
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?;
                did
            }
        })
    }

    /// Makes an HTTP call; returns what it did.
    async fn http(&mut self, call: &HttpCall) -> Result<String, String> {
        let body = match &call.body {
            Some(template) => Some(self.render(template)?.to_string()),
            None => None,
        };
        let timeout = call
            .timeout
            .as_ref()
            .and_then(|t| self.workflow.durations.get(t).copied())
            .unwrap_or(HTTP_TIMEOUT);
        let headers = call
            .headers
            .iter()
            .map(|(k, v)| Ok((k.clone(), self.text(v)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let url = self.text(&call.url)?;
        let answer = http::call(Request {
            method: call.method.clone(),
            url: url.clone(),
            headers,
            body,
            timeout,
            retries: call.retries,
        })
        .await?;
        if let Some(variable) = &call.result {
            self.vars.insert(
                variable.clone(),
                json!({ "status": answer.status, "body": answer.body }),
            );
        }
        if answer.status >= 400 {
            return Err(format!("the API answered {}", answer.status));
        }
        Ok(format!("{} {url} answered {}", call.method, answer.status))
    }
}

fn kind(action: &Action) -> &'static str {
    match action {
        Action::Assign { .. } => "assign",
        Action::If { .. } => "if",
        Action::Http(_) => "http",
        Action::Command { .. } => "command",
        Action::RaiseEvent { .. } => "raise_event",
        Action::ClearEvent { .. } => "clear_event",
        Action::Notify { .. } => "notify",
        Action::Save { .. } => "save",
    }
}

/// Runs a stored workflow and logs the run (`key`: the happening, logged once — `None` when a
/// run with that key was logged already).
pub async fn perform(
    runtime: &Runtime<'_>,
    stored: &aos_storage::entity::workflow::Model,
    key: Option<&str>,
    variables: Map<String, Value>,
) -> Result<Option<Outcome>, aos_storage::StorageError> {
    use aos_storage::repo::workflows;
    let compiled = Workflow::compile(runtime.engine, &stored.trigger, &stored.actions);
    let Some(run) = workflows::claim_run(runtime.storage, stored, key, Utc::now()).await? else {
        return Ok(None);
    };
    let outcome = match compiled {
        Ok(workflow) => {
            execute(
                runtime,
                &workflow,
                &stored.name,
                stored.tenant_id,
                variables,
            )
            .await
        }
        // Checked when saved; a definition that no longer compiles is a failed run, said so.
        Err(error) => Outcome {
            result: "failed",
            error: Some(error),
            duration: Duration::ZERO,
            steps: Vec::new(),
        },
    };
    let end = workflows::RunEnd {
        result: outcome.result,
        duration_ms: i64::try_from(outcome.duration.as_millis()).unwrap_or(i64::MAX),
        error: outcome.error.as_deref(),
        steps: serde_json::to_value(&outcome.steps).unwrap_or_default(),
    };
    workflows::finish_run(runtime.storage, run, end).await?;
    Ok(Some(outcome))
}
