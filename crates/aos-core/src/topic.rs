//! MQTT topic filters as the platform stores them (API key grants) and the broker checks them
//! (MQTT 3.1.1 and 5.0 §4.7).

/// Longest topic (in bytes) the protocol can encode.
pub const MAX_TOPIC_LEN: usize = 65535;

/// A valid (non-shared) topic filter.
pub fn valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > MAX_TOPIC_LEN || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, level)| match *level {
        "+" => true,
        "#" => i + 1 == levels.len(),
        other => !other.contains(['+', '#']),
    })
}
