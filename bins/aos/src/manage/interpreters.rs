//! `aos interpreter` and `aos event`: how attribute values are interpreted, and the events their
//! levels raise.

use anyhow::bail;
use aos_formats::interpret::{self, Interpreter};
use aos_storage::Storage;
use aos_storage::repo::audit;
use aos_storage::repo::interpreters::{self, NewInterpreter};
use aos_storage::repo::paging::Page;
use clap::Subcommand;

use super::{cli_event, scope};

#[derive(Subcommand, Debug)]
pub enum InterpreterCommand {
    /// Set how an attribute's values are interpreted (for one class, or every class of the
    /// tenant): raw values mapped, then an expression (rhai; the value is `value`), then levels.
    /// A level change raises an event; back to normal clears it. Applies within a minute.
    Set {
        attribute: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        class: Option<String>,
        /// RAW=VALUE (repeatable): a raw value and what it means (`1=open`).
        #[arg(long = "map", value_name = "RAW=VALUE")]
        map: Vec<String>,
        /// An expression of `value`, e.g. `value / 10.0`.
        #[arg(long)]
        expression: Option<String>,
        /// NAME:MIN:MAX (repeatable; a bound may be empty): values in [MIN, MAX) have level NAME,
        /// e.g. warning:30:50 and faulty:50: — values in no range are normal.
        #[arg(long = "level", value_name = "NAME:MIN:MAX")]
        levels: Vec<String>,
    },
    /// List the interpreters of a tenant.
    List {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum EventCommand {
    /// List the newest events of a tenant's devices.
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Acknowledge an event.
    Ack {
        id: i64,
        #[arg(long)]
        tenant: String,
    },
    /// Clear an event.
    Clear {
        id: i64,
        #[arg(long)]
        tenant: String,
    },
}

fn bound(text: &str, level: &str) -> anyhow::Result<serde_json::Value> {
    if text.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    match text.parse::<f64>() {
        Ok(n) => Ok(n.into()),
        Err(_) => bail!("level `{level}`: `{text}` is not a number"),
    }
}

fn levels(given: &[String]) -> anyhow::Result<Option<serde_json::Value>> {
    if given.is_empty() {
        return Ok(None);
    }
    let mut ranges = Vec::new();
    for range in given {
        let parts: Vec<&str> = range.split(':').collect();
        let [name, min, max] = parts.as_slice() else {
            bail!("`{range}` is not NAME:MIN:MAX (for example warning:30:50, or faulty:50:)");
        };
        let mut level = serde_json::json!({ "level": name });
        for (key, text) in [("min", min), ("max", max)] {
            let value = bound(text, name)?;
            if !value.is_null() {
                level[key] = value;
            }
        }
        ranges.push(level);
    }
    Ok(Some(ranges.into()))
}

pub async fn interpreters(storage: &Storage, command: InterpreterCommand) -> anyhow::Result<()> {
    match command {
        InterpreterCommand::Set {
            attribute,
            tenant,
            class,
            map,
            expression,
            levels: given,
        } => {
            let scope = scope(storage, &tenant).await?;
            let value_map = if map.is_empty() {
                None
            } else {
                let mut mapped = serde_json::Map::new();
                for pair in &map {
                    let Some((raw, value)) = pair.split_once('=') else {
                        bail!("`{pair}` is not RAW=VALUE (for example 1=open)");
                    };
                    let value = serde_json::from_str(value).unwrap_or_else(|_| value.into());
                    mapped.insert(raw.to_string(), value);
                }
                Some(serde_json::Value::Object(mapped))
            };
            let levels = levels(&given)?;
            Interpreter::compile(
                &interpret::engine(),
                value_map.as_ref(),
                expression.as_deref(),
                levels.as_ref(),
            )
            .map_err(|e| anyhow::anyhow!("interpreter of `{attribute}`: {e}"))?;
            let new = NewInterpreter {
                attribute: attribute.clone(),
                class: class.clone(),
                value_map,
                expression,
                levels,
            };
            interpreters::save(storage, scope, new).await?;
            let mut event = cli_event(
                Some(scope.tenant),
                "interpreter.set",
                "interpreter",
                &attribute,
            );
            event.detail = serde_json::json!({ "class": class });
            audit::record(storage, event).await?;
            let applies =
                class.map_or_else(|| "every class".to_string(), |c| format!("class `{c}`"));
            println!(
                "`{attribute}` of {applies} in `{tenant}` is interpreted so from now on (within a minute on running workers)"
            );
        }
        InterpreterCommand::List { tenant } => {
            println!(
                "{:<24} {:<8} {:<24} levels",
                "attribute", "class", "expression"
            );
            for i in interpreters::list(storage, scope(storage, &tenant).await?).await? {
                println!(
                    "{:<24} {:<8} {:<24} {}",
                    i.attribute,
                    i.class_id.map_or("all".to_string(), |c| c.to_string()),
                    i.expression.unwrap_or_default(),
                    i.levels.map(|l| l.to_string()).unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

pub async fn events(storage: &Storage, command: EventCommand) -> anyhow::Result<()> {
    match command {
        EventCommand::List { tenant, limit } => {
            let scope = scope(storage, &tenant).await?;
            println!(
                "{:<6} {:<10} {:<21} {:<6} {:<8} {:<6} message",
                "id", "level", "raised", "acked", "cleared", "count"
            );
            let filter = interpreters::EventFilter {
                page: Page {
                    limit: limit.clamp(1, 1000),
                    ..Page::default()
                },
                ..Default::default()
            };
            for (e, _) in interpreters::events(storage, scope, &filter).await?.0 {
                println!(
                    "{:<6} {:<10} {:<21} {:<6} {:<8} {:<6} {}",
                    e.id,
                    e.level,
                    e.raised_at.format("%Y-%m-%dT%H:%M:%SZ"),
                    e.acknowledged_at.is_some(),
                    e.cleared_at.is_some(),
                    e.crossings,
                    e.message
                );
            }
        }
        EventCommand::Ack { id, tenant } => settle(storage, &tenant, id, false).await?,
        EventCommand::Clear { id, tenant } => settle(storage, &tenant, id, true).await?,
    }
    Ok(())
}

async fn settle(storage: &Storage, tenant: &str, id: i64, clear: bool) -> anyhow::Result<()> {
    let scope = scope(storage, tenant).await?;
    interpreters::settle(storage, scope, id, "cli", clear).await?;
    let action = if clear {
        "event.clear"
    } else {
        "event.acknowledge"
    };
    audit::record(
        storage,
        cli_event(Some(scope.tenant), action, "event", &id.to_string()),
    )
    .await?;
    println!(
        "event {id} {}",
        if clear { "cleared" } else { "acknowledged" }
    );
    Ok(())
}
