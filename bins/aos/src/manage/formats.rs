//! `aos format` and `aos class format`: how a class's devices' payloads are read.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use aos_formats::{Format, FormatSpec};
use aos_storage::Storage;
use aos_storage::repo::audit;
use aos_storage::repo::formats::{self, NewFormat};
use clap::Subcommand;

use super::{cli_event, scope};

#[derive(Subcommand, Debug)]
pub enum FormatCommand {
    /// Create a message format of a tenant: how devices' payloads are read, or with --outbound
    /// how commands to them are written. It is checked now (the .proto text compiles and names
    /// the message, the JSON Schema is valid, the mapping reads); give it to a class with
    /// `aos class format`.
    Add {
        name: String,
        #[arg(long)]
        tenant: String,
        /// json, xml, protobuf or pms (the platform's own {"ts", "values"} form).
        #[arg(long)]
        kind: String,
        /// protobuf: the .proto file.
        #[arg(long, value_name = "FILE", requires = "message")]
        proto: Option<PathBuf>,
        /// protobuf: the message type to decode (package.Message).
        #[arg(long, requires = "proto")]
        message: Option<String>,
        /// A JSON Schema file the decoded payload must satisfy.
        #[arg(long, value_name = "FILE")]
        schema: Option<PathBuf>,
        /// ATTRIBUTE=POINTER (repeatable): the attribute's value is at this JSON pointer of the
        /// decoded payload (/data/temperature). Without any, the payload's fields are read as is.
        #[arg(long = "map", value_name = "ATTRIBUTE=POINTER")]
        map: Vec<String>,
        /// The JSON pointer of the device's timestamp (ms since the epoch or RFC 3339).
        #[arg(long, value_name = "POINTER", requires = "map")]
        ts: Option<String>,
        /// A format commands are written in ({"id", "name", "parameters"} as JSON, XML of the same
        /// shape, or the Protobuf message filled from it); it takes no schema or mapping.
        #[arg(long, conflicts_with_all = ["schema", "map"])]
        outbound: bool,
    },
    /// List the formats of a tenant.
    List {
        #[arg(long)]
        tenant: String,
    },
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The stored mapping of `--map` and `--ts` (`{}`: none).
fn mapping(map: &[String], ts: Option<String>) -> anyhow::Result<serde_json::Value> {
    if map.is_empty() {
        return Ok(serde_json::json!({}));
    }
    let mut attributes = serde_json::Map::new();
    for pair in map {
        let Some((attribute, pointer)) = pair.split_once('=') else {
            bail!("`{pair}` is not ATTRIBUTE=POINTER (for example temperature=/data/t)");
        };
        attributes.insert(attribute.to_string(), pointer.into());
    }
    let mut mapping = serde_json::json!({ "attributes": attributes });
    if let Some(ts) = ts {
        mapping["ts"] = ts.into();
    }
    Ok(mapping)
}

pub async fn formats(storage: &Storage, command: FormatCommand) -> anyhow::Result<()> {
    match command {
        FormatCommand::Add {
            name,
            tenant,
            kind,
            proto,
            message,
            schema,
            map,
            ts,
            outbound,
        } => {
            let scope = scope(storage, &tenant).await?;
            let proto_text = proto.as_deref().map(read).transpose()?;
            let json_schema = match &schema {
                Some(path) => Some(
                    serde_json::from_str::<serde_json::Value>(&read(path)?)
                        .with_context(|| format!("{} is not JSON", path.display()))?,
                ),
                None => None,
            };
            let mapping = mapping(&map, ts)?;
            Format::compile(&FormatSpec {
                kind: &kind,
                proto_text: proto_text.as_deref(),
                proto_message: message.as_deref(),
                json_schema: json_schema.as_ref(),
                mapping: Some(&mapping),
            })
            .map_err(|e| anyhow::anyhow!("format `{name}`: {e}"))?;
            let new = NewFormat {
                name: name.clone(),
                kind: kind.clone(),
                proto_text,
                proto_message: message,
                json_schema,
                mapping,
                outbound,
            };
            formats::create(storage, scope, new).await?;
            let mut event = cli_event(Some(scope.tenant), "format.create", "format", &name);
            event.detail = serde_json::json!({ "kind": kind, "outbound": outbound });
            audit::record(storage, event).await?;
            let flag = if outbound { " --outbound" } else { "" };
            println!(
                "format `{name}` ({kind}) created in `{tenant}`; give it to a class with `aos class format CLASS --tenant {tenant} --format {name}{flag}`"
            );
        }
        FormatCommand::List { tenant } => {
            println!(
                "{:<32} {:<9} {:<9} {:<7} {:<7} message",
                "name", "kind", "direction", "schema", "mapping"
            );
            for f in formats::list(storage, scope(storage, &tenant).await?).await? {
                let mapped = f.mapping.as_object().is_some_and(|m| !m.is_empty());
                println!(
                    "{:<32} {:<9} {:<9} {:<7} {:<7} {}",
                    f.name,
                    f.kind,
                    f.direction,
                    f.json_schema.is_some(),
                    mapped,
                    f.proto_message.unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

/// `aos class format`: sets or clears the format of a class's devices (or of their commands).
pub async fn class_format(
    storage: &Storage,
    class: &str,
    tenant: &str,
    format: Option<String>,
    outbound: bool,
) -> anyhow::Result<()> {
    let scope = scope(storage, tenant).await?;
    formats::set_class_format(storage, scope, class, format.as_deref(), outbound).await?;
    let mut event = cli_event(Some(scope.tenant), "class.format", "class", class);
    event.detail = serde_json::json!({ "format": format, "outbound": outbound });
    audit::record(storage, event).await?;
    match (format, outbound) {
        (Some(format), false) => {
            println!("devices of `{class}` send `{format}` (within a minute on running workers)");
        }
        (Some(format), true) => println!(
            "commands to devices of `{class}` are written in `{format}` (within a minute on running workers)"
        ),
        (None, false) => println!("devices of `{class}` send JSON read as is"),
        (None, true) => println!("commands to devices of `{class}` are written as JSON"),
    }
    Ok(())
}
