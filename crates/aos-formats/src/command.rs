//! Commands going out and device replies coming back. A command is the platform message
//! `{"id": 17, "name": "reboot", "parameters": {…}}`, written in the device class's outbound
//! format: JSON (also for `pms`), XML of the same shape (`<command><id>17</id>…</command>`), or
//! the format's Protobuf message filled from that JSON. A reply names the command and says how
//! it went: `{"id": 17, "status": "ok"}` or `{"id": 17, "status": "failed", "error": "…"}`
//! (XML devices reply in XML of the same shape, elements or attributes).

use prost::Message as _;
use prost_reflect::DynamicMessage;
use quick_xml::Writer;
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use serde_json::{Value, json};

use crate::{DecodeError, Format, Kind, json as json_format, xml};

/// Reply statuses that mean the command was carried out.
const DONE: [&str; 3] = ["ok", "acknowledged", "done"];
/// Reply statuses that mean it was not.
const NOT_DONE: [&str; 3] = ["failed", "error", "rejected"];

/// A command in the device's outbound format (`None`: JSON).
pub fn encode(
    format: Option<&Format>,
    id: i64,
    name: &str,
    parameters: &Value,
) -> Result<Vec<u8>, String> {
    let message = json!({ "id": id, "name": name, "parameters": parameters });
    match format.map(|f| (f.kind, f.proto.as_ref())) {
        None | Some((Kind::Json | Kind::Pms, _)) => Ok(message.to_string().into_bytes()),
        Some((Kind::Xml, _)) => to_xml("command", &message),
        Some((Kind::Protobuf, Some(descriptor))) => {
            DynamicMessage::deserialize(descriptor.clone(), message)
                .map(|m| m.encode_to_vec())
                .map_err(|e| {
                    format!(
                        "the command does not fit the Protobuf message `{}`: {e}",
                        descriptor.full_name()
                    )
                })
        }
        Some((Kind::Protobuf, None)) => Err("the protobuf format has no message".into()),
    }
}

fn to_xml(root: &str, value: &Value) -> Result<Vec<u8>, String> {
    let mut writer = Writer::new(Vec::new());
    write_element(&mut writer, root, value).map_err(|e| format!("cannot write XML: {e}"))?;
    Ok(writer.into_inner())
}

fn write_element(writer: &mut Writer<Vec<u8>>, name: &str, value: &Value) -> std::io::Result<()> {
    if let Value::Array(items) = value {
        for item in items {
            write_element(writer, name, item)?;
        }
        return Ok(());
    }
    writer.write_event(Event::Start(BytesStart::new(name)))?;
    match value {
        Value::Object(fields) => {
            for (field, inner) in fields {
                write_element(writer, field, inner)?;
            }
        }
        Value::String(text) => writer.write_event(Event::Text(BytesText::new(text)))?,
        Value::Null => {}
        other => writer.write_event(Event::Text(BytesText::new(&other.to_string())))?,
    }
    writer.write_event(Event::End(BytesEnd::new(name)))
}

/// A device's reply to a command: the command's id, and `None` if it was carried out or the
/// device's reason if not.
pub fn read_reply(
    format: Option<&Format>,
    payload: &[u8],
) -> Result<(i64, Option<String>), DecodeError> {
    let value = match format.map(|f| f.kind) {
        Some(Kind::Xml) => xml::to_value(payload)?,
        _ => json_format::parse(payload)?,
    };
    let field = |name: &str| value.get(name).or_else(|| value.get(format!("@{name}")));
    let id = field("id")
        .and_then(|id| id.as_i64().or_else(|| id.as_str()?.parse().ok()))
        .ok_or("a command reply needs the command's `id` (a number)")?;
    let status = field("status").and_then(Value::as_str).unwrap_or("ok");
    if DONE.contains(&status) {
        return Ok((id, None));
    }
    if NOT_DONE.contains(&status) {
        let reason = field("error")
            .map(|e| e.as_str().map_or_else(|| e.to_string(), String::from))
            .unwrap_or_else(|| format!("the device replied `{status}`"));
        return Ok((id, Some(reason)));
    }
    Err(format!(
        "a command reply's `status` is one of {} or {}, not `{status}`",
        DONE.join(", "),
        NOT_DONE.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FormatSpec;

    fn format(kind: &str, proto: Option<(&str, &str)>) -> Format {
        Format::compile(&FormatSpec {
            kind,
            proto_text: proto.map(|p| p.0),
            proto_message: proto.map(|p| p.1),
            ..Default::default()
        })
        .expect("format")
    }

    #[test]
    fn commands_are_written_in_the_outbound_format() {
        let params = json!({"delay": 5, "mode": "a<b"});
        let plain = encode(None, 7, "reboot", &params).expect("json");
        assert_eq!(
            serde_json::from_slice::<Value>(&plain).expect("json"),
            json!({"id": 7, "name": "reboot", "parameters": params})
        );
        let xml_out = encode(Some(&format("xml", None)), 7, "reboot", &params).expect("xml");
        assert_eq!(
            String::from_utf8(xml_out.clone()).expect("utf8"),
            "<command><id>7</id><name>reboot</name><parameters><delay>5</delay><mode>a&lt;b</mode></parameters></command>"
        );
        assert_eq!(
            xml::to_value(&xml_out).expect("reads back"),
            json!({"id": 7, "name": "reboot", "parameters": {"delay": 5, "mode": "a<b"}})
        );
        let proto = "syntax = \"proto3\"; package p; message Params { int32 delay = 1; string mode = 2; } message Cmd { int64 id = 1; string name = 2; Params parameters = 3; }";
        let pb = format("protobuf", Some((proto, "p.Cmd")));
        let encoded = encode(Some(&pb), 7, "reboot", &params).expect("protobuf");
        let decoded = pb.read(&encoded).expect("decodes");
        assert_eq!(decoded["id"], json!(7));
        assert_eq!(decoded["parameters"]["mode"], json!("a<b"));
        let unfit = encode(Some(&pb), 7, "reboot", &json!({"speed": 1}));
        assert!(unfit.is_err_and(|e| e.contains("p.Cmd")));
    }

    #[test]
    fn replies_say_which_command_and_how_it_went() {
        assert_eq!(
            read_reply(None, br#"{"id": 7, "status": "ok"}"#),
            Ok((7, None))
        );
        assert_eq!(read_reply(None, br#"{"id": "7"}"#), Ok((7, None)));
        assert_eq!(
            read_reply(None, br#"{"id": 7, "status": "failed", "error": "busy"}"#),
            Ok((7, Some("busy".into())))
        );
        let xml_reply = read_reply(
            Some(&format("xml", None)),
            br#"<reply id="9" status="error"/>"#,
        );
        assert_eq!(
            xml_reply,
            Ok((9, Some("the device replied `error`".into())))
        );
        assert!(read_reply(None, br#"{"status": "ok"}"#).is_err());
        assert!(read_reply(None, br#"{"id": 7, "status": "maybe"}"#).is_err());
        assert!(read_reply(None, b"not json").is_err());
    }
}
