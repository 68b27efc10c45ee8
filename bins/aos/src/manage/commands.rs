//! `aos command`: commands to devices — one device, or a batch for devices and whole classes —
//! and their status. A running node's workers deliver them (see docs/topics.md).

use std::time::Duration;

use anyhow::{Context, bail};
use aos_storage::Storage;
use aos_storage::repo::audit;
use aos_storage::repo::commands::{self, BatchTarget, CommandFilter, NewCommand};
use aos_storage::repo::paging::Page;
use clap::{Args, Subcommand};

use super::{cli_event, scope};

/// What a command says, and how long it may wait.
#[derive(Args, Debug)]
pub struct CommandSpec {
    /// The command's name, as the device knows it (reboot, set-interval, …).
    #[arg(long)]
    name: String,
    /// KEY=VALUE (repeatable): a parameter; VALUE is read as JSON when it is JSON (5, true,
    /// {"a":1}), as text otherwise.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// How long the command waits for its device (offline devices get it when they connect);
    /// then it expires.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1d")]
    expires_in: Duration,
}

impl CommandSpec {
    fn command(&self) -> anyhow::Result<NewCommand> {
        let mut parameters = serde_json::Map::new();
        for pair in &self.params {
            let Some((key, value)) = pair.split_once('=') else {
                bail!("`{pair}` is not KEY=VALUE (for example delay=5)");
            };
            let value = serde_json::from_str(value).unwrap_or_else(|_| value.into());
            parameters.insert(key.to_string(), value);
        }
        let expires_in =
            chrono::Duration::from_std(self.expires_in).context("--expires-in is too long")?;
        Ok(NewCommand {
            name: self.name.clone(),
            parameters: parameters.into(),
            expires_at: Some(chrono::Utc::now() + expires_in),
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum CommandCommand {
    /// Queue a command for a device; it is sent once the device is connected and subscribed to
    /// its command topic, and its status follows the device's reply.
    Send {
        /// The device's id.
        device: String,
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        spec: CommandSpec,
    },
    /// Queue a command for several devices and whole classes at once.
    Batch {
        /// A name for the batch.
        batch: String,
        #[arg(long)]
        tenant: String,
        /// A device (repeatable).
        #[arg(long = "device")]
        devices: Vec<String>,
        /// Every device of a class (repeatable).
        #[arg(long = "class")]
        classes: Vec<String>,
        /// Devices registered later in those classes get the command too (until it expires).
        #[arg(long, requires = "classes")]
        include_future: bool,
        #[command(flatten)]
        spec: CommandSpec,
    },
    /// List the newest commands of a tenant.
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        device: Option<String>,
        /// queued, sent, acknowledged, failed or expired.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        batch: Option<i64>,
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
}

pub async fn commands(storage: &Storage, command: CommandCommand) -> anyhow::Result<()> {
    match command {
        CommandCommand::Send {
            device,
            tenant,
            spec,
        } => {
            let scope = scope(storage, &tenant).await?;
            let new = spec.command()?;
            let created = commands::create(storage, scope, &device, &new).await?;
            let mut event = cli_event(Some(scope.tenant), "command.create", "device", &device);
            event.detail = serde_json::json!({ "command": created.id, "name": new.name });
            audit::record(storage, event).await?;
            println!("{}", created.id);
        }
        CommandCommand::Batch {
            batch,
            tenant,
            devices,
            classes,
            include_future,
            spec,
        } => {
            let scope = scope(storage, &tenant).await?;
            let new = spec.command()?;
            let target = BatchTarget {
                devices,
                classes,
                include_future,
            };
            let (created, queued) =
                commands::create_batch(storage, scope, &batch, &new, &target).await?;
            let mut event = cli_event(Some(scope.tenant), "command.batch", "batch", &batch);
            event.detail =
                serde_json::json!({ "batch": created.id, "name": new.name, "commands": queued });
            audit::record(storage, event).await?;
            println!(
                "batch {} `{batch}`: {queued} commands queued{}",
                created.id,
                if include_future {
                    "; devices registered later in its classes get it too"
                } else {
                    ""
                }
            );
        }
        CommandCommand::List {
            tenant,
            device,
            status,
            batch,
            limit,
        } => {
            let scope = scope(storage, &tenant).await?;
            let filter = CommandFilter {
                device,
                status,
                batch,
                page: Page {
                    limit: limit.clamp(1, 1000),
                    ..Page::default()
                },
            };
            println!(
                "{:<8} {:<24} {:<20} {:<13} {:<25} error",
                "id", "device", "name", "status", "created"
            );
            for row in commands::list(storage, scope, &filter).await?.0 {
                let c = row.command;
                println!(
                    "{:<8} {:<24} {:<20} {:<13} {:<25} {}",
                    c.id,
                    row.device,
                    c.name,
                    c.status,
                    c.created_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    c.error.unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
