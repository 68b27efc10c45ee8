//! Which payload fields are which attributes: JSON pointers into the decoded payload (JSON, XML
//! or Protobuf alike), and optionally where the device's timestamp is.
//!
//! `{"ts": "/time", "attributes": {"temperature": "/data/t", "humidity": "/data/h"}}`

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::{DecodeError, Sample, check_attribute, timestamp};

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// Where the device's timestamp is; absent (or missing in a payload): the time received.
    #[serde(default)]
    pub ts: Option<String>,
    /// Attribute → where its value is.
    pub attributes: BTreeMap<String, String>,
}

fn check_pointer(pointer: &str) -> Result<(), String> {
    if pointer.is_empty() || pointer.starts_with('/') {
        Ok(())
    } else {
        Err(format!(
            "`{pointer}` is not a JSON pointer (it starts with `/`, for example /data/temperature)"
        ))
    }
}

impl Mapping {
    /// Reads a stored mapping; `None` for an empty one (`{}`: the payload is read as is).
    pub fn parse(stored: &Value) -> Result<Option<Mapping>, String> {
        if stored.is_null() || stored.as_object().is_some_and(|m| m.is_empty()) {
            return Ok(None);
        }
        let mapping: Mapping = serde_json::from_value(stored.clone())
            .map_err(|e| format!("mapping: {e} (expected {{\"ts\": \"/pointer\", \"attributes\": {{\"name\": \"/pointer\"}}}})"))?;
        if mapping.attributes.is_empty() {
            return Err("mapping: `attributes` names no attribute".into());
        }
        for (name, pointer) in &mapping.attributes {
            check_attribute(name).map_err(|e| format!("mapping: {e}"))?;
            check_pointer(pointer).map_err(|e| format!("mapping of `{name}`: {e}"))?;
        }
        if let Some(ts) = &mapping.ts {
            check_pointer(ts).map_err(|e| format!("mapping of `ts`: {e}"))?;
        }
        Ok(Some(mapping))
    }

    /// The mapped attributes present in `value` (devices may send some of them only).
    pub fn apply(
        &self,
        value: &Value,
        received: DateTime<Utc>,
    ) -> Result<Vec<Sample>, DecodeError> {
        let ts = match self.ts.as_deref().and_then(|p| value.pointer(p)) {
            Some(ts) => timestamp(ts)?,
            None => received,
        };
        let samples: Vec<Sample> = self
            .attributes
            .iter()
            .filter_map(|(name, pointer)| {
                value
                    .pointer(pointer)
                    .filter(|v| !v.is_null())
                    .map(|v| Sample {
                        attribute: name.clone(),
                        ts,
                        value: v.clone(),
                    })
            })
            .collect();
        if samples.is_empty() {
            return Err("none of the mapped fields is in the payload".into());
        }
        Ok(samples)
    }
}
