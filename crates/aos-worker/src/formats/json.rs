//! JSON payloads: an object of attribute values (`{"temperature": 21.5, "door": "open"}`), or
//! the platform's own form with a device timestamp (`{"ts": 1764500000000, "values": {…}}`,
//! `ts` in milliseconds since the epoch or RFC 3339), or an array of either.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

use crate::pms::Sample;

/// Longest attribute name accepted.
pub const MAX_ATTRIBUTE: usize = 128;

/// Why a payload could not be decoded (the message is marked failed with it).
pub type DecodeError = String;

fn timestamp(value: &Value) -> Result<DateTime<Utc>, DecodeError> {
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

fn check_attribute(name: &str) -> Result<(), DecodeError> {
    if name.is_empty() || name.chars().count() > MAX_ATTRIBUTE || name.chars().any(char::is_control)
    {
        return Err(format!(
            "attribute names must have 1 to {MAX_ATTRIBUTE} printable characters (got {name:?})"
        ));
    }
    Ok(())
}

fn object(
    map: &serde_json::Map<String, Value>,
    received: DateTime<Utc>,
    out: &mut Vec<Sample>,
) -> Result<(), DecodeError> {
    let ts = match map.get("ts") {
        Some(ts) => timestamp(ts)?,
        None => received,
    };
    // The platform's form nests the values; otherwise every key but `ts` is an attribute.
    let (values, flat) = match map.get("values") {
        Some(Value::Object(values)) => (values, false),
        Some(other) => return Err(format!("`values` must be an object, not {other}")),
        None => (map, true),
    };
    for (name, value) in values {
        if flat && name == "ts" {
            continue;
        }
        check_attribute(name)?;
        out.push(Sample {
            attribute: name.clone(),
            ts,
            value: value.clone(),
        });
    }
    Ok(())
}

/// The samples of a JSON payload; `received` stamps values that carry no `ts`.
pub fn decode(payload: &[u8], received: DateTime<Utc>) -> Result<Vec<Sample>, DecodeError> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| format!("invalid JSON: {e}"))?;
    let mut samples = Vec::new();
    match &value {
        Value::Object(map) => object(map, received, &mut samples)?,
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(map) => object(map, received, &mut samples)?,
                    other => return Err(format!("array items must be objects, not {other}")),
                }
            }
        }
        other => {
            return Err(format!(
                "a JSON payload must be an object or an array of objects, not {other}"
            ));
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).single().expect("time")
    }

    #[test]
    fn flat_objects_the_platform_form_and_arrays_decode() {
        let received = at(1_000);
        let flat = decode(br#"{"t": 21.5, "door": "open"}"#, received).expect("flat");
        assert_eq!(flat.len(), 2);
        assert!(flat.iter().all(|s| s.ts == received));
        let platform = decode(br#"{"ts": 5000, "values": {"t": 1}}"#, received).expect("platform");
        assert_eq!(
            platform,
            vec![Sample {
                attribute: "t".into(),
                ts: at(5000),
                value: 1.into()
            }]
        );
        let flat_ts = decode(br#"{"ts": "1970-01-01T00:00:07Z", "t": 2}"#, received).expect("ts");
        assert_eq!(
            flat_ts,
            vec![Sample {
                attribute: "t".into(),
                ts: at(7000),
                value: 2.into()
            }]
        );
        let array = decode(br#"[{"ts": 1, "t": 1}, {"ts": 2, "t": 2}]"#, received).expect("array");
        assert_eq!(array.len(), 2);
    }

    #[test]
    fn bad_payloads_say_what_is_wrong() {
        let received = at(0);
        let error = |payload: &[u8]| decode(payload, received).expect_err("refused");
        assert!(error(b"not json").contains("invalid JSON"));
        assert!(error(b"42").contains("must be an object or an array"));
        assert!(error(br#"[1]"#).contains("array items must be objects"));
        assert!(error(br#"{"ts": true, "t": 1}"#).contains("`ts` must be"));
        assert!(error(br#"{"values": 3}"#).contains("`values` must be an object"));
        assert!(error(br#"{"": 1}"#).contains("attribute names"));
        assert!(error(&[0xff, 0xfe]).contains("invalid JSON"));
    }
}
