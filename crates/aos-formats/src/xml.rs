//! XML payloads, read into the same shape as JSON so that mappings and schemas apply alike: the
//! root element's children become an object (`<t>21.5</t>` → `"t": 21.5`), repeated elements an
//! array, attributes `@name` keys, and text that reads as a number or boolean becomes one.

use quick_xml::Reader;
use quick_xml::events::{BytesRef, BytesStart, Event};
use serde_json::{Map, Value};

use crate::DecodeError;

/// Deepest element nesting accepted (a payload is data, not a document).
const MAX_DEPTH: usize = 32;

/// An element being read: its attributes and children so far, and its text.
#[derive(Default)]
struct Element {
    name: String,
    fields: Map<String, Value>,
    text: String,
}

impl Element {
    /// The element's value: its text alone (typed), or its fields (with the text as `#text`).
    fn into_value(self) -> Value {
        let text = self.text.trim();
        if self.fields.is_empty() {
            return typed(text);
        }
        let mut fields = self.fields;
        if !text.is_empty() {
            fields.insert("#text".into(), typed(text));
        }
        Value::Object(fields)
    }

    fn add(&mut self, name: String, value: Value) {
        match self.fields.get_mut(&name) {
            Some(Value::Array(items)) => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
            None => {
                self.fields.insert(name, value);
            }
        }
    }
}

/// Numbers and booleans as such, anything else as a string.
fn typed(text: &str) -> Value {
    if let Ok(n) = text.parse::<i64>() {
        return n.into();
    }
    if let Ok(n) = text.parse::<f64>()
        && n.is_finite()
    {
        return n.into();
    }
    match text {
        "true" => true.into(),
        "false" => false.into(),
        _ => text.into(),
    }
}

fn name_of(bytes: &[u8]) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "an element name is not UTF-8".to_string())
}

fn invalid(e: impl std::fmt::Display) -> DecodeError {
    format!("invalid XML: {e}")
}

/// The character an entity reference (`&amp;`, `&#176;`) stands for.
fn entity(reference: &BytesRef) -> Result<char, DecodeError> {
    if let Some(c) = reference.resolve_char_ref().map_err(invalid)? {
        return Ok(c);
    }
    match reference.decode().map_err(invalid)?.as_ref() {
        "amp" => Ok('&'),
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "quot" => Ok('"'),
        "apos" => Ok('\''),
        other => Err(invalid(format!("unknown entity `&{other};`"))),
    }
}

/// A new element with its attributes.
fn element(start: &BytesStart) -> Result<Element, DecodeError> {
    let mut element = Element {
        name: name_of(start.name().as_ref())?,
        ..Default::default()
    };
    for attribute in start.attributes() {
        let attribute = attribute.map_err(invalid)?;
        let value = attribute.unescape_value().map_err(invalid)?;
        element.add(
            format!("@{}", name_of(attribute.key.as_ref())?),
            typed(&value),
        );
    }
    Ok(element)
}

/// Adds a finished element to its parent; the root's value once the root is finished.
fn finish(open: &mut [Element], element: Element) -> Option<Value> {
    match open.last_mut() {
        Some(parent) => {
            let name = element.name.clone();
            parent.add(name, element.into_value());
            None
        }
        None => Some(element.into_value()),
    }
}

/// The root element's content as a JSON value.
pub fn to_value(payload: &[u8]) -> Result<Value, DecodeError> {
    let mut reader = Reader::from_reader(payload);
    let mut open: Vec<Element> = Vec::new();
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf).map_err(invalid)? {
            Event::Start(_) | Event::Empty(_) if open.len() >= MAX_DEPTH => {
                return Err(format!("XML nested deeper than {MAX_DEPTH} elements"));
            }
            Event::Start(start) => open.push(element(&start)?),
            Event::Empty(start) => {
                let element = element(&start)?;
                if let Some(root) = finish(&mut open, element) {
                    return Ok(root);
                }
            }
            Event::Text(text) => {
                if let Some(element) = open.last_mut() {
                    element.text.push_str(&text.decode().map_err(invalid)?);
                }
            }
            Event::GeneralRef(reference) => {
                if let Some(element) = open.last_mut() {
                    element.text.push(entity(&reference)?);
                }
            }
            Event::CData(data) => {
                if let Some(element) = open.last_mut() {
                    element.text.push_str(&String::from_utf8_lossy(&data));
                }
            }
            Event::End(_) => {
                let element = open
                    .pop()
                    .ok_or_else(|| invalid("a closing tag without an opening one"))?;
                if let Some(root) = finish(&mut open, element) {
                    return Ok(root);
                }
            }
            Event::Eof => return Err(invalid("the document ends before its root element does")),
            _ => {}
        }
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_attributes_and_repeats_read_as_json() {
        let value = to_value(
            br#"<?xml version="1.0"?><m unit="C"><t>21.5</t><door>open &amp; ok</door><h>40</h><h>41</h><ok/></m>"#,
        )
        .expect("xml");
        assert_eq!(
            value,
            serde_json::json!({"@unit": "C", "t": 21.5, "door": "open & ok", "h": [40, 41], "ok": ""})
        );
    }

    #[test]
    fn broken_xml_is_refused() {
        for bad in [&b"<m><t>1</m>"[..], b"<m>", b"not xml at all", b"</m>"] {
            assert!(to_value(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = format!("{}{}", "<a>".repeat(40), "</a>".repeat(40));
        assert!(to_value(deep.as_bytes()).unwrap_err().contains("deeper"));
    }
}
