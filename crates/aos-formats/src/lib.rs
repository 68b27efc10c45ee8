//! `aos-formats`: how a device's payload becomes platform-message samples — JSON, XML, Protobuf
//! (a `.proto` text compiled at run time) or the platform's own form — with an optional JSON
//! Schema the decoded payload must satisfy and an optional mapping of payload fields to
//! attributes; and how samples are then interpreted ([`interpret`]: value maps, expressions,
//! levels). Used by the worker to decode and interpret, and by the CLI and API to check formats
//! and interpreters when they are saved.

pub mod command;
pub mod interpret;
pub mod json;
pub mod mapping;
pub mod protobuf;
pub mod xml;

use chrono::{DateTime, TimeZone, Utc};
use prost_reflect::MessageDescriptor;
use serde_json::Value;

use mapping::Mapping;

/// Why a payload could not be decoded (the message is logged `failed` with it).
pub type DecodeError = String;

/// Longest attribute name accepted.
pub const MAX_ATTRIBUTE: usize = 128;

/// One attribute value at one time.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub attribute: String,
    pub ts: DateTime<Utc>,
    pub value: Value,
}

/// The kinds of format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Json,
    Xml,
    Protobuf,
    /// The platform's own JSON form, `{"ts": …, "values": {…}}` (or an array of them): no
    /// conversion, no mapping.
    Pms,
}

impl Kind {
    pub const NAMES: [&str; 4] = ["json", "xml", "protobuf", "pms"];

    pub fn parse(name: &str) -> Result<Kind, String> {
        match name {
            "json" => Ok(Kind::Json),
            "xml" => Ok(Kind::Xml),
            "protobuf" => Ok(Kind::Protobuf),
            "pms" => Ok(Kind::Pms),
            other => Err(format!(
                "unknown format kind `{other}`: use one of {}",
                Kind::NAMES.join(", ")
            )),
        }
    }
}

/// A format as stored (see the `message_format` table).
#[derive(Clone, Debug, Default)]
pub struct FormatSpec<'a> {
    pub kind: &'a str,
    pub proto_text: Option<&'a str>,
    pub proto_message: Option<&'a str>,
    pub json_schema: Option<&'a Value>,
    pub mapping: Option<&'a Value>,
}

/// A format ready to decode payloads.
pub struct Format {
    kind: Kind,
    proto: Option<MessageDescriptor>,
    schema: Option<jsonschema::Validator>,
    mapping: Option<Mapping>,
}

/// Why a format does not compile: the part that is wrong (`kind`, `proto`, `message`, `schema`
/// or `mapping`, as the API names them) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatError {
    pub part: &'static str,
    pub message: String,
}

impl FormatError {
    fn at(part: &'static str, message: impl Into<String>) -> FormatError {
        FormatError {
            part,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FormatError {}

impl Format {
    /// Compiles a stored format; the error says which part is wrong.
    pub fn compile(spec: &FormatSpec) -> Result<Format, FormatError> {
        let kind = Kind::parse(spec.kind).map_err(|e| FormatError::at("kind", e))?;
        let proto = match (kind, spec.proto_text, spec.proto_message) {
            (Kind::Protobuf, Some(text), Some(message)) => {
                Some(protobuf::compile(text, message).map_err(|e| {
                    // A message type the text does not declare is the message's fault.
                    let part = if e.contains("does not compile") {
                        "proto"
                    } else {
                        "message"
                    };
                    FormatError::at(part, e)
                })?)
            }
            (Kind::Protobuf, None, _) => {
                return Err(FormatError::at(
                    "proto",
                    "a protobuf format needs its .proto text",
                ));
            }
            (Kind::Protobuf, _, None) => {
                return Err(FormatError::at(
                    "message",
                    "a protobuf format needs the message name",
                ));
            }
            (_, None, None) => None,
            (_, Some(_), _) => {
                return Err(FormatError::at(
                    "proto",
                    "only a protobuf format takes a .proto text",
                ));
            }
            (_, None, Some(_)) => {
                return Err(FormatError::at(
                    "message",
                    "only a protobuf format takes a message name",
                ));
            }
        };
        let schema = match spec.json_schema {
            Some(schema) => Some(jsonschema::validator_for(schema).map_err(|e| {
                FormatError::at("schema", format!("the JSON Schema is not valid: {e}"))
            })?),
            None => None,
        };
        let mapping = match spec.mapping {
            Some(mapping) => Mapping::parse(mapping).map_err(|e| FormatError::at("mapping", e))?,
            None => None,
        };
        if kind == Kind::Pms && (mapping.is_some() || schema.is_some()) {
            let part = if schema.is_some() {
                "schema"
            } else {
                "mapping"
            };
            return Err(FormatError::at(
                part,
                "a pms format is read as is: it takes no mapping or schema",
            ));
        }
        Ok(Format {
            kind,
            proto,
            schema,
            mapping,
        })
    }

    /// What devices without a format send: JSON, read as is.
    pub fn plain_json() -> Format {
        Format {
            kind: Kind::Json,
            proto: None,
            schema: None,
            mapping: None,
        }
    }

    /// The samples of one payload; `received` stamps values that carry no time of their own.
    pub fn decode(
        &self,
        payload: &[u8],
        received: DateTime<Utc>,
    ) -> Result<Vec<Sample>, DecodeError> {
        self.samples(&self.read(payload)?, received)
    }

    /// A payload decoded into JSON (checked against the format's schema, if any).
    pub fn read(&self, payload: &[u8]) -> Result<Value, DecodeError> {
        let value = match (self.kind, &self.proto) {
            (Kind::Pms | Kind::Json, _) => json::parse(payload)?,
            (Kind::Xml, _) => xml::to_value(payload)?,
            (Kind::Protobuf, Some(message)) => protobuf::to_value(message, payload)?,
            (Kind::Protobuf, None) => return Err("the protobuf format has no message".into()),
        };
        if let Some(schema) = &self.schema {
            let problems: Vec<String> = schema
                .iter_errors(&value)
                .take(3)
                .map(|e| format!("{} (at `{}`)", e, e.instance_path))
                .collect();
            if !problems.is_empty() {
                return Err(format!(
                    "the payload does not match the format's JSON Schema: {}",
                    problems.join("; ")
                ));
            }
        }
        Ok(value)
    }

    /// The samples of a decoded payload (or of one child node's part of a gateway's payload).
    pub fn samples(
        &self,
        value: &Value,
        received: DateTime<Utc>,
    ) -> Result<Vec<Sample>, DecodeError> {
        match (&self.mapping, self.kind) {
            (_, Kind::Pms) => json::pms(value, received),
            (Some(mapping), _) => mapping.apply(value, received),
            (None, _) => json::samples(value, received),
        }
    }
}

/// A device timestamp: milliseconds since the epoch, or an RFC 3339 time.
pub fn timestamp(value: &Value) -> Result<DateTime<Utc>, DecodeError> {
    let parsed = match value {
        Value::Number(n) => n
            .as_i64()
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        _ => None,
    };
    parsed.ok_or_else(|| {
        format!("`ts` must be milliseconds since the epoch or an RFC 3339 time, not {value}")
    })
}

/// Checks an attribute name: 1 to MAX_ATTRIBUTE printable characters.
pub fn check_attribute(name: &str) -> Result<(), DecodeError> {
    if name.is_empty() || name.chars().count() > MAX_ATTRIBUTE || name.chars().any(char::is_control)
    {
        return Err(format!(
            "attribute names must have 1 to {MAX_ATTRIBUTE} printable characters (got {name:?})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received() -> DateTime<Utc> {
        Utc.timestamp_millis_opt(0).single().expect("time")
    }

    #[test]
    fn mappings_and_schemas_apply_to_any_kind() {
        let mapping = serde_json::json!({"ts": "/time", "attributes": {"temperature": "/data/t"}});
        let schema = serde_json::json!({"type": "object", "required": ["data"]});
        let format = Format::compile(&FormatSpec {
            kind: "xml",
            mapping: Some(&mapping),
            json_schema: Some(&schema),
            ..Default::default()
        })
        .expect("compiles");
        let samples = format
            .decode(
                b"<m><time>5000</time><data><t>21.5</t></data></m>",
                received(),
            )
            .expect("decodes");
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].attribute, "temperature");
        assert_eq!(samples[0].value, serde_json::json!(21.5));
        assert_eq!(samples[0].ts.timestamp_millis(), 5000);
        let refused = format.decode(b"<m><t>1</t></m>", received()).unwrap_err();
        assert!(
            refused.contains("does not match the format's JSON Schema"),
            "{refused}"
        );
    }

    #[test]
    fn formats_that_cannot_work_are_refused_when_saved_naming_the_part() {
        let refused = |spec: FormatSpec| {
            let err = Format::compile(&spec).err().expect("refused");
            (err.part, err.message)
        };
        let said = |(part, message): (&str, String), want_part: &str, want: &str| {
            assert_eq!(part, want_part, "{message}");
            assert!(message.contains(want), "{message}");
        };
        said(
            refused(FormatSpec {
                kind: "yaml",
                ..Default::default()
            }),
            "kind",
            "unknown format kind",
        );
        said(
            refused(FormatSpec {
                kind: "protobuf",
                ..Default::default()
            }),
            "proto",
            "needs its .proto",
        );
        said(
            refused(FormatSpec {
                kind: "protobuf",
                proto_text: Some("message {"),
                proto_message: Some("x"),
                ..Default::default()
            }),
            "proto",
            "does not compile",
        );
        said(
            refused(FormatSpec {
                kind: "protobuf",
                proto_text: Some("syntax = \"proto3\"; message Reading { double t = 1; }"),
                proto_message: Some("Nope"),
                ..Default::default()
            }),
            "message",
            "Nope",
        );
        let bad_schema = serde_json::json!({"type": 12});
        said(
            refused(FormatSpec {
                kind: "json",
                json_schema: Some(&bad_schema),
                ..Default::default()
            }),
            "schema",
            "JSON Schema is not valid",
        );
        let bad_mapping = serde_json::json!({"attributes": {"t": "data.t"}});
        said(
            refused(FormatSpec {
                kind: "json",
                mapping: Some(&bad_mapping),
                ..Default::default()
            }),
            "mapping",
            "not a JSON pointer",
        );
    }
}
