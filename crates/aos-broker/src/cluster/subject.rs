//! MQTT topics as bus subjects, losslessly. A topic level becomes one subject token: bytes
//! outside `A-Z a-z 0-9 - _` are written `%XX` (so `.`, `*`, `>`, spaces, `%` and `$` never
//! reach NATS as they are), and an empty level is `%` alone (a token may not be empty). A
//! filter becomes the subject patterns that cover it: `+` is `*`, and `#` is `>` together with
//! its parent level (`a/#` matches `a`). The patterns may cover more than the filter (`#`
//! also takes `$` topics); the node's own subscription tree decides what each client gets. The
//! members of a shared subscription on every node form one NATS queue group.

use std::fmt::Write;

/// Where routed messages travel on the bus.
const ROOT: &str = "mqtt";

fn token(level: &str, out: &mut String) {
    if level.is_empty() {
        out.push('%');
        return;
    }
    for byte in level.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// The subject a message on `topic` is routed on.
pub fn of_topic(topic: &str) -> String {
    let mut out = String::with_capacity(ROOT.len() + topic.len() + 8);
    out.push_str(ROOT);
    for level in topic.split('/') {
        out.push('.');
        token(level, &mut out);
    }
    out
}

/// Where messages for the shared subscriptions of one broker's sessions go (no topic's
/// subject, nor any filter's pattern, covers it).
pub fn of_node(incarnation: &str) -> String {
    let mut out = String::from("mqttn.");
    token(incarnation, &mut out);
    out
}

/// The NATS queue group of the members of shared subscription `$share/{group}/{filter}` on
/// every node: each message goes to one node's, which gives it to one of its members.
pub fn queue_of(group: &str, filter: &str) -> String {
    let mut out = String::from("share.");
    token(group, &mut out);
    out.push('.');
    token(filter, &mut out);
    out
}

/// The subject patterns that cover `filter` (a valid MQTT topic filter).
pub fn patterns_of(filter: &str) -> Vec<String> {
    let mut pattern = String::from(ROOT);
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level == "#" {
            // `a/#` also matches `a` itself; `#` alone matches every topic (at least one level).
            let parent = (pattern != ROOT).then(|| pattern.clone());
            pattern.push_str(".>");
            return parent.into_iter().chain([pattern]).collect();
        }
        pattern.push('.');
        if level == "+" {
            pattern.push('*');
        } else {
            token(level, &mut pattern);
        }
        if levels.peek().is_none() {
            break;
        }
    }
    vec![pattern]
}

#[cfg(test)]
mod tests {
    use aos_core::bus::{subject_matches, validate_pattern, validate_subject};

    use super::*;

    #[test]
    fn every_topic_is_a_valid_subject_and_distinct_topics_stay_distinct() {
        let topics = [
            "a/b", "a//b", "/a", "a/", "a.b/c", "a/*/>", "a b/c", "$SYS/x", "%/a", "%25", "ünï/ß",
            "a/%2E",
        ];
        let subjects: Vec<String> = topics.iter().map(|t| of_topic(t)).collect();
        for subject in &subjects {
            validate_subject(subject).unwrap_or_else(|e| panic!("{subject}: {e}"));
        }
        let mut distinct = subjects.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), subjects.len(), "{subjects:?}");
        assert_eq!(of_topic("a//b"), "mqtt.a.%.b");
        let queue = queue_of("g 1", "a/+/#");
        validate_subject(&queue).unwrap_or_else(|e| panic!("{queue}: {e}"));
        assert_ne!(queue, queue_of("g", "1/a/+/#"));
        assert_eq!(of_topic("a.b/c d"), "mqtt.a%2Eb.c%20d");
        let node = of_node("n.1-18f");
        validate_subject(&node).unwrap_or_else(|e| panic!("{node}: {e}"));
        assert!(!subject_matches("mqtt.>", &node));
    }

    /// A pattern covers every topic the filter matches.
    #[test]
    fn patterns_cover_what_their_filter_matches() {
        let cases: [(&str, &[&str], &[&str]); 6] = [
            ("a/+/c", &["a/b/c", "a//c"], &["a/b/d", "a/b/c/d"]),
            ("a/#", &["a", "a/b", "a/b/c", "a/"], &["b", "ab"]),
            ("#", &["a", "/", "a/b"], &[]),
            ("+", &["a"], &["a/b"]),
            ("a.b/*/>", &["a.b/*/>"], &["a.b/x/>", "a/b"]),
            ("/+", &["/a", "/"], &["a"]),
        ];
        for (filter, matching, other) in cases {
            let patterns = patterns_of(filter);
            for pattern in &patterns {
                validate_pattern(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            }
            let covered = |topic: &str| {
                patterns
                    .iter()
                    .any(|p| subject_matches(p, &of_topic(topic)))
            };
            for topic in matching {
                assert!(covered(topic), "{filter} {patterns:?} misses {topic}");
            }
            for topic in other {
                assert!(!covered(topic), "{filter} {patterns:?} takes {topic}");
            }
        }
    }
}
