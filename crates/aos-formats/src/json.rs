//! JSON payloads, and how a decoded payload reads without a mapping: an object of attribute
//! values (`{"temperature": 21.5, "door": "open"}`), or the platform's form with a device
//! timestamp (`{"ts": 1764500000000, "values": {…}}`, `ts` in milliseconds since the epoch or
//! RFC 3339), or an array of either.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::{DecodeError, Sample, check_attribute, timestamp};

pub fn parse(payload: &[u8]) -> Result<Value, DecodeError> {
    serde_json::from_slice(payload).map_err(|e| format!("invalid JSON: {e}"))
}

/// Which objects are read: any (`flat`: every key but `ts` is an attribute), or only the
/// platform's `{"ts", "values"}` form.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    Any,
    Platform,
}

fn object(
    map: &Map<String, Value>,
    form: Form,
    received: DateTime<Utc>,
    out: &mut Vec<Sample>,
) -> Result<(), DecodeError> {
    let ts = match map.get("ts") {
        Some(ts) => timestamp(ts)?,
        None => received,
    };
    // The platform's form nests the values; otherwise every key but `ts` is an attribute.
    let (values, flat) = match (map.get("values"), form) {
        (Some(Value::Object(values)), _) => (values, false),
        (Some(other), _) => return Err(format!("`values` must be an object, not {other}")),
        (None, Form::Any) => (map, true),
        (None, Form::Platform) => {
            return Err(
                "a platform message is {\"ts\": …, \"values\": {…}}: `values` is missing".into(),
            );
        }
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

fn read(value: &Value, form: Form, received: DateTime<Utc>) -> Result<Vec<Sample>, DecodeError> {
    let mut samples = Vec::new();
    match value {
        Value::Object(map) => object(map, form, received, &mut samples)?,
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(map) => object(map, form, received, &mut samples)?,
                    other => return Err(format!("array items must be objects, not {other}")),
                }
            }
        }
        other => {
            return Err(format!(
                "a payload must be an object or an array of objects, not {other}"
            ));
        }
    }
    Ok(samples)
}

/// The samples of a decoded payload without a mapping; `received` stamps values without `ts`.
pub fn samples(value: &Value, received: DateTime<Utc>) -> Result<Vec<Sample>, DecodeError> {
    read(value, Form::Any, received)
}

/// The samples of a payload in the platform's own form.
pub fn pms(value: &Value, received: DateTime<Utc>) -> Result<Vec<Sample>, DecodeError> {
    read(value, Form::Platform, received)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).single().expect("time")
    }

    fn decode(payload: &[u8], received: DateTime<Utc>) -> Result<Vec<Sample>, DecodeError> {
        samples(&parse(payload)?, received)
    }

    #[test]
    fn flat_objects_the_platform_form_and_arrays_decode() {
        let received = at(1_000);
        let flat = decode(br#"{"t": 21.5, "door": "open"}"#, received).expect("flat");
        assert_eq!(flat.len(), 2);
        assert!(flat.iter().all(|s| s.ts == received));
        let platform = decode(br#"{"ts": 5000, "values": {"t": 1}}"#, received).expect("platform");
        let one = |ms, v: i64| {
            vec![Sample {
                attribute: "t".into(),
                ts: at(ms),
                value: v.into(),
            }]
        };
        assert_eq!(platform, one(5000, 1));
        let flat_ts = decode(br#"{"ts": "1970-01-01T00:00:07Z", "t": 2}"#, received).expect("ts");
        assert_eq!(flat_ts, one(7000, 2));
        let array = decode(br#"[{"ts": 1, "t": 1}, {"ts": 2, "t": 2}]"#, received).expect("array");
        assert_eq!(array.len(), 2);
        let strict = pms(&parse(br#"{"t": 1}"#).expect("json"), received).expect_err("not pms");
        assert!(strict.contains("`values` is missing"), "{strict}");
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
