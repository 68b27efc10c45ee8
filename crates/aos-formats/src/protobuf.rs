//! Protobuf payloads: the schema is given as `.proto` text and compiled when the format is
//! loaded (protox, a protobuf compiler in Rust), and payloads are decoded by reflection
//! (prost-reflect) into the protobuf JSON mapping with the fields' own names.

use prost_reflect::{DynamicMessage, MessageDescriptor, SerializeOptions};
use protox::Compiler;
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use serde_json::Value;

use crate::DecodeError;

/// The name the `.proto` text is compiled under.
const FILE_NAME: &str = "format.proto";

/// The format's `.proto` text; well-known `google/protobuf/*.proto` imports resolve too.
struct Source(String);

impl FileResolver for Source {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == FILE_NAME {
            File::from_source(name, &self.0)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

/// Compiles `proto_text` and finds `message` in it (its full name, `package.Message`).
pub fn compile(proto_text: &str, message: &str) -> Result<MessageDescriptor, String> {
    let mut resolver = ChainFileResolver::new();
    resolver.add(Source(proto_text.to_string()));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = Compiler::with_file_resolver(resolver);
    compiler
        .open_file(FILE_NAME)
        .map_err(|e| format!("the .proto text does not compile: {e}"))?;
    let pool = compiler.descriptor_pool();
    pool.get_message_by_name(message).ok_or_else(|| {
        let known: Vec<String> = pool
            .all_messages()
            .map(|m| m.full_name().to_string())
            .collect();
        format!(
            "no message `{message}` in the .proto text: use one of {}",
            known.join(", ")
        )
    })
}

/// A payload of `message` as JSON.
pub fn to_value(message: &MessageDescriptor, payload: &[u8]) -> Result<Value, DecodeError> {
    let decoded = DynamicMessage::decode(message.clone(), payload)
        .map_err(|e| format!("not a protobuf `{}`: {e}", message.full_name()))?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(false);
    decoded
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| format!("the protobuf message cannot be read: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROTO: &str = r#"
        syntax = "proto3";
        package acme;
        message Reading {
          double temperature = 1;
          int64 ts = 2;
          string door = 3;
        }
    "#;

    #[test]
    fn a_proto_text_compiles_and_decodes_payloads() {
        let message = compile(PROTO, "acme.Reading").expect("compiles");
        // temperature = 21.5 (field 1, fixed64), ts = 1000 (field 2, varint), door = "open".
        let mut payload = vec![0x09];
        payload.extend_from_slice(&21.5f64.to_le_bytes());
        payload.extend_from_slice(&[0x10, 0xe8, 0x07, 0x1a, 4]);
        payload.extend_from_slice(b"open");
        let value = to_value(&message, &payload).expect("decodes");
        assert_eq!(
            value,
            serde_json::json!({"temperature": 21.5, "ts": 1000, "door": "open"})
        );
        assert!(to_value(&message, &[0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn mistakes_in_the_schema_are_named() {
        assert!(
            compile("message {", "x")
                .unwrap_err()
                .contains("does not compile")
        );
        let wrong = compile(PROTO, "acme.Nope").unwrap_err();
        assert!(wrong.contains("use one of acme.Reading"), "{wrong}");
    }
}
