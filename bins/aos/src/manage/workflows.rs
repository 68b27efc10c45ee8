//! `aos workflow`: a tenant's workflows — imported and exported as JSON, listed, switched on and
//! off, run by hand — and their run log.

use std::path::PathBuf;

use anyhow::{Context, bail};
use aos_formats::interpret;
use aos_storage::Storage;
use aos_storage::repo::audit;
use aos_storage::repo::workflows::{self, NewWorkflow};
use aos_workflows::run::{self, Runtime};
use aos_workflows::{Workflow, WorkflowDocument};
use clap::Subcommand;

use super::{cli_event, scope};

#[derive(Subcommand, Debug)]
pub enum WorkflowCommand {
    /// Create or replace (by name) a workflow from its JSON document: {"name", "enabled",
    /// "trigger", "actions"} (see docs/workflows.md). It is checked first; running workers pick
    /// it up within a minute.
    Import {
        file: PathBuf,
        #[arg(long)]
        tenant: String,
    },
    /// Print a workflow's JSON document.
    Export {
        name: String,
        #[arg(long)]
        tenant: String,
    },
    /// List the workflows of a tenant.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Let a workflow run on its trigger again.
    Enable {
        name: String,
        #[arg(long)]
        tenant: String,
    },
    /// Stop a workflow from running on its trigger.
    Disable {
        name: String,
        #[arg(long)]
        tenant: String,
    },
    /// Run a workflow now, here, and log the run (its trigger is not needed).
    Run {
        name: String,
        #[arg(long)]
        tenant: String,
        /// The device it runs for (the variable `device`).
        #[arg(long)]
        device: Option<String>,
        /// NAME=VALUE (repeatable): a variable; VALUE is read as JSON when it is JSON.
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
    },
    /// The newest runs of a workflow.
    Runs {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
}

pub async fn workflows(storage: &Storage, command: WorkflowCommand) -> anyhow::Result<()> {
    match command {
        WorkflowCommand::Import { file, tenant } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let document: WorkflowDocument = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a workflow document", file.display()))?;
            let trigger = serde_json::to_value(&document.trigger)?;
            let actions = serde_json::to_value(&document.actions)?;
            Workflow::compile(&interpret::engine(), &trigger, &actions)
                .map_err(|e| anyhow::anyhow!("workflow `{}`: {e}", document.name))?;
            let scope = scope(storage, &tenant).await?;
            let (saved, created) = workflows::save(
                storage,
                scope,
                NewWorkflow {
                    name: document.name.clone(),
                    enabled: document.enabled,
                    trigger,
                    actions,
                },
            )
            .await?;
            let action = if created {
                "workflow.create"
            } else {
                "workflow.update"
            };
            audit::record(
                storage,
                cli_event(Some(scope.tenant), action, "workflow", &saved.name),
            )
            .await?;
            println!(
                "workflow `{}` {} in `{tenant}` ({})",
                saved.name,
                if created { "created" } else { "replaced" },
                if saved.enabled { "enabled" } else { "disabled" }
            );
        }
        WorkflowCommand::Export { name, tenant } => {
            let stored = workflows::by_name(storage, scope(storage, &tenant).await?, &name).await?;
            let document = serde_json::json!({
                "name": stored.name,
                "enabled": stored.enabled,
                "trigger": stored.trigger,
                "actions": stored.actions,
            });
            println!("{}", serde_json::to_string_pretty(&document)?);
        }
        WorkflowCommand::List { tenant } => {
            println!("{:<32} {:<8} {:<10} actions", "name", "enabled", "trigger");
            for w in workflows::list(storage, scope(storage, &tenant).await?).await? {
                println!(
                    "{:<32} {:<8} {:<10} {}",
                    w.name,
                    w.enabled,
                    w.trigger["kind"].as_str().unwrap_or("?"),
                    w.actions.as_array().map_or(0, Vec::len)
                );
            }
        }
        WorkflowCommand::Enable { name, tenant } => switch(storage, &name, &tenant, true).await?,
        WorkflowCommand::Disable { name, tenant } => switch(storage, &name, &tenant, false).await?,
        WorkflowCommand::Run {
            name,
            tenant,
            device,
            vars,
        } => {
            let scope = scope(storage, &tenant).await?;
            let stored = workflows::by_name(storage, scope, &name).await?;
            let mut variables = serde_json::Map::new();
            for pair in &vars {
                let Some((key, value)) = pair.split_once('=') else {
                    bail!("`{pair}` is not NAME=VALUE (for example limit=30)");
                };
                let value = serde_json::from_str(value).unwrap_or_else(|_| value.into());
                variables.insert(key.to_string(), value);
            }
            if let Some(device) = device {
                variables.insert("device".into(), device.into());
            }
            let engine = interpret::engine();
            let runtime = Runtime {
                storage,
                engine: &engine,
                timeout: run::DEFAULT_TIMEOUT,
            };
            let outcome = run::perform(&runtime, &stored, None, variables)
                .await?
                .context("the run was not logged")?;
            audit::record(
                storage,
                cli_event(Some(scope.tenant), "workflow.run", "workflow", &name),
            )
            .await?;
            match outcome.error {
                None => println!("ok ({} ms)", outcome.duration.as_millis()),
                Some(error) => bail!("{}: {error}", outcome.result),
            }
        }
        WorkflowCommand::Runs {
            name,
            tenant,
            limit,
        } => {
            let newest = aos_storage::repo::paging::Page {
                limit: limit.clamp(1, 1000),
                ..Default::default()
            };
            let (runs, _) =
                workflows::runs(storage, scope(storage, &tenant).await?, &name, &newest).await?;
            println!(
                "{:<8} {:<25} {:<8} {:>8} error",
                "id", "started", "result", "ms"
            );
            for r in runs {
                println!(
                    "{:<8} {:<25} {:<8} {:>8} {}",
                    r.id,
                    r.started_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    r.result,
                    r.duration_ms,
                    r.error.unwrap_or_default()
                );
                for step in r
                    .steps
                    .as_ref()
                    .and_then(|s| s.as_array())
                    .into_iter()
                    .flatten()
                {
                    let text = |key: &str| step[key].as_str().unwrap_or_default().to_string();
                    println!(
                        "         {} {} {}: {} ({} ms)",
                        text("step"),
                        text("action"),
                        text("result"),
                        text("detail"),
                        step["ms"]
                    );
                }
            }
        }
    }
    Ok(())
}

async fn switch(storage: &Storage, name: &str, tenant: &str, enabled: bool) -> anyhow::Result<()> {
    let scope = scope(storage, tenant).await?;
    workflows::set_enabled(storage, scope, name, enabled).await?;
    let action = if enabled {
        "workflow.enable"
    } else {
        "workflow.disable"
    };
    audit::record(
        storage,
        cli_event(Some(scope.tenant), action, "workflow", name),
    )
    .await?;
    println!(
        "workflow `{name}` {} (within a minute on running workers)",
        if enabled { "enabled" } else { "disabled" }
    );
    Ok(())
}
