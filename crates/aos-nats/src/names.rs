//! How AOS names become NATS names. Queue names may hold `.`, which neither a stream name nor a
//! single subject token may: it is encoded (`_` → `__`, `.` → `_d`), reversibly.

/// `acquisition.dead` → `acquisition_ddead`.
pub(crate) fn token(queue: &str) -> String {
    let mut out = String::with_capacity(queue.len() + 4);
    for c in queue.chars() {
        match c {
            '_' => out.push_str("__"),
            '.' => out.push_str("_d"),
            c => out.push(c),
        }
    }
    out
}

/// The stream of `queue`: `<PREFIX>_Q_<token>` (stream names cannot hold `.`).
pub(crate) fn queue_stream(prefix: &str, queue: &str) -> String {
    format!("{}_Q_{}", prefix.to_ascii_uppercase(), token(queue))
}

/// The subject items of `queue` are published to: `<prefix>.q.<token>`.
pub(crate) fn queue_subject(prefix: &str, queue: &str) -> String {
    format!("{prefix}.q.{}", token(queue))
}

/// The subject of a bus subject or pattern: `<prefix>.bus.<subject>`.
pub(crate) fn bus_subject(prefix: &str, subject: &str) -> String {
    format!("{prefix}.bus.{subject}")
}

/// The key-value bucket of the deployment.
pub(crate) fn bucket(prefix: &str) -> String {
    prefix.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_become_single_tokens_without_collisions() {
        assert_eq!(token("acquisition.dead"), "acquisition_ddead");
        assert_eq!(token("a_d"), "a__d");
        assert_ne!(token("a.x"), token("a_dx"));
        assert_eq!(
            queue_stream("aos", "workflows.dead"),
            "AOS_Q_workflows_ddead"
        );
        assert_eq!(queue_subject("aos", "a.b"), "aos.q.a_db");
        assert!(!queue_stream("aos", "x.y").contains('.'));
    }
}
