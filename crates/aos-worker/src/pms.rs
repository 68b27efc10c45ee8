//! The platform message (PMS): what every device message becomes, whatever format it arrived in
//! — the device it is about and what kind of message it is (its [`Route`], from the topic), and
//! its timestamped attribute values (`aos_formats::Sample`, from the payload).

/// What a device message carries, from the last level of its topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    Telemetry,
    Attributes,
    Events,
    CommandReply,
}

/// Where a device message belongs, read from its topic (see docs/topics.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The device the data is about: the publisher, or a gateway's child node.
    pub device: String,
    /// The gateway that sent it for its child node.
    pub gateway: Option<String>,
    pub kind: MessageKind,
}

impl MessageKind {
    /// The name of a data message's kind (`None` for command replies).
    pub fn name(self) -> Option<&'static str> {
        match self {
            MessageKind::Telemetry => Some("telemetry"),
            MessageKind::Attributes => Some("attributes"),
            MessageKind::Events => Some("events"),
            MessageKind::CommandReply => None,
        }
    }
}

fn kind(rest: &[&str]) -> Option<MessageKind> {
    match rest {
        ["telemetry"] => Some(MessageKind::Telemetry),
        ["attributes"] => Some(MessageKind::Attributes),
        ["events"] => Some(MessageKind::Events),
        ["commands", "reply"] => Some(MessageKind::CommandReply),
        _ => None,
    }
}

/// Reads the route of a message that `publisher` sent on `topic`.
pub fn route(publisher: &str, topic: &str) -> Result<Route, String> {
    let levels: Vec<&str> = topic.split('/').collect();
    let unknown = || format!("`{topic}` is not a device message topic (see docs/topics.md)");
    match levels.as_slice() {
        ["aos", id, "nodes", child, rest @ ..] if *id == publisher && !child.is_empty() => {
            Ok(Route {
                device: child.to_string(),
                gateway: Some(publisher.to_string()),
                kind: kind(rest).ok_or_else(unknown)?,
            })
        }
        ["aos", id, rest @ ..] if *id == publisher => Ok(Route {
            device: publisher.to_string(),
            gateway: None,
            kind: kind(rest).ok_or_else(unknown)?,
        }),
        _ => Err(unknown()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_route_to_devices_and_gateway_children() {
        assert_eq!(
            route("d1", "aos/d1/telemetry"),
            Ok(Route {
                device: "d1".into(),
                gateway: None,
                kind: MessageKind::Telemetry
            })
        );
        assert_eq!(
            route("gw", "aos/gw/nodes/n7/commands/reply"),
            Ok(Route {
                device: "n7".into(),
                gateway: Some("gw".into()),
                kind: MessageKind::CommandReply
            })
        );
        for bad in [
            "aos/d1/other",
            "aos/d2/telemetry",
            "x/d1/telemetry",
            "aos/d1/nodes//telemetry",
        ] {
            assert!(route("d1", bad).is_err(), "{bad}");
        }
    }
}
