//! MQTT test clients (rumqttc, an independent implementation) for 3.1.1 and 5.0, with helpers to
//! wait for what a test expects to receive.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Longest a test waits for a packet it expects.
pub const WAIT: Duration = Duration::from_secs(10);

/// A 3.1.1 client whose event loop runs in a task, forwarding what arrives.
pub struct Client3 {
    pub client: rumqttc::AsyncClient,
    rx: mpsc::UnboundedReceiver<Result<rumqttc::Packet, String>>,
    task: JoinHandle<()>,
}

impl Drop for Client3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn options3(port: u16, id: &str) -> rumqttc::MqttOptions {
    let mut options = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options
}

impl Client3 {
    /// Connects; returns the client and its CONNACK, or the refusal.
    pub async fn connect(
        options: rumqttc::MqttOptions,
    ) -> Result<(Client3, rumqttc::ConnAck), String> {
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 100);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(packet)) => {
                        if tx.send(Ok(packet)).is_err() {
                            return;
                        }
                    }
                    Ok(rumqttc::Event::Outgoing(_)) => {}
                    Err(err) => {
                        let _ = tx.send(Err(err.to_string()));
                        return;
                    }
                }
            }
        });
        let connack = match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(Ok(rumqttc::Packet::ConnAck(ack)))) => ack,
            Ok(Some(Ok(other))) => return Err(format!("expected CONNACK, got {other:?}")),
            Ok(Some(Err(err))) => return Err(err),
            Ok(None) => return Err("event loop ended".into()),
            Err(_) => return Err("no CONNACK in time".into()),
        };
        Ok((Client3 { client, rx, task }, connack))
    }

    pub async fn start(port: u16, id: &str) -> Client3 {
        Client3::connect(options3(port, id))
            .await
            .expect("connect")
            .0
    }

    /// The next packet from the broker (or the connection error).
    pub async fn next(&mut self) -> Result<rumqttc::Packet, String> {
        match tokio::time::timeout(WAIT, self.rx.recv()).await {
            Ok(Some(item)) => item,
            Ok(None) => Err("event loop ended".into()),
            Err(_) => Err(format!("nothing received within {WAIT:?}")),
        }
    }

    /// The next PUBLISH, skipping acknowledgements.
    pub async fn publish_received(&mut self) -> rumqttc::Publish {
        loop {
            match self.next().await {
                Ok(rumqttc::Packet::Publish(p)) => return p,
                Ok(_) => {}
                Err(err) => panic!("expected a PUBLISH: {err}"),
            }
        }
    }

    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: rumqttc::QoS,
    ) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        loop {
            match self.next().await {
                Ok(rumqttc::Packet::SubAck(ack)) => return ack.return_codes,
                Ok(_) => {}
                Err(err) => panic!("expected a SUBACK: {err}"),
            }
        }
    }

    pub async fn publish(&self, topic: &str, qos: rumqttc::QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .expect("publish");
    }

    /// Publishes QoS 1 and waits for the PUBACK.
    pub async fn publish_acked(&mut self, topic: &str, retain: bool, payload: &[u8]) {
        self.publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload)
            .await;
        loop {
            match self.next().await {
                Ok(rumqttc::Packet::PubAck(_)) => return,
                Ok(_) => {}
                Err(err) => panic!("expected a PUBACK: {err}"),
            }
        }
    }

    /// Waits until the broker closes the connection; returns the error the client saw.
    pub async fn closed(&mut self) -> String {
        loop {
            match self.next().await {
                Ok(_) => {}
                Err(err) => return err,
            }
        }
    }
}

/// A 5.0 client whose event loop runs in a task.
pub struct Client5 {
    pub client: rumqttc::v5::AsyncClient,
    rx: mpsc::UnboundedReceiver<Result<rumqttc::v5::mqttbytes::v5::Packet, String>>,
    task: JoinHandle<()>,
}

impl Drop for Client5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn options5(port: u16, id: &str) -> rumqttc::v5::MqttOptions {
    let mut options = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options
}

use rumqttc::v5::mqttbytes::v5::Packet as P5;

impl Client5 {
    pub async fn connect(
        options: rumqttc::v5::MqttOptions,
    ) -> Result<(Client5, rumqttc::v5::mqttbytes::v5::ConnAck), String> {
        let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 100);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::v5::Event::Incoming(packet)) => {
                        if tx.send(Ok(packet)).is_err() {
                            return;
                        }
                    }
                    Ok(rumqttc::v5::Event::Outgoing(_)) => {}
                    Err(err) => {
                        let _ = tx.send(Err(format!("{err:?}")));
                        return;
                    }
                }
            }
        });
        let connack = match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(Ok(P5::ConnAck(ack)))) => ack,
            Ok(Some(Ok(other))) => return Err(format!("expected CONNACK, got {other:?}")),
            Ok(Some(Err(err))) => return Err(err),
            Ok(None) => return Err("event loop ended".into()),
            Err(_) => return Err("no CONNACK in time".into()),
        };
        Ok((Client5 { client, rx, task }, connack))
    }

    pub async fn start(port: u16, id: &str) -> Client5 {
        Client5::connect(options5(port, id))
            .await
            .expect("connect")
            .0
    }

    pub async fn next(&mut self) -> Result<P5, String> {
        match tokio::time::timeout(WAIT, self.rx.recv()).await {
            Ok(Some(item)) => item,
            Ok(None) => Err("event loop ended".into()),
            Err(_) => Err(format!("nothing received within {WAIT:?}")),
        }
    }

    pub async fn publish_received(&mut self) -> rumqttc::v5::mqttbytes::v5::Publish {
        loop {
            match self.next().await {
                Ok(P5::Publish(p)) => return p,
                Ok(_) => {}
                Err(err) => panic!("expected a PUBLISH: {err}"),
            }
        }
    }

    pub async fn suback(&mut self) -> rumqttc::v5::mqttbytes::v5::SubAck {
        loop {
            match self.next().await {
                Ok(P5::SubAck(ack)) => return ack,
                Ok(_) => {}
                Err(err) => panic!("expected a SUBACK: {err}"),
            }
        }
    }

    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: rumqttc::v5::mqttbytes::QoS,
    ) -> rumqttc::v5::mqttbytes::v5::SubAck {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        self.suback().await
    }

    pub async fn puback(&mut self) -> rumqttc::v5::mqttbytes::v5::PubAck {
        loop {
            match self.next().await {
                Ok(P5::PubAck(ack)) => return ack,
                Ok(_) => {}
                Err(err) => panic!("expected a PUBACK: {err}"),
            }
        }
    }

    /// Waits for the connection to end; returns how (a broker DISCONNECT shows as
    /// `ServerDisconnect { reason_code: … }`).
    pub async fn disconnected(&mut self) -> String {
        loop {
            match self.next().await {
                Ok(P5::Disconnect(d)) => return format!("ServerDisconnect {d:?}"),
                Ok(_) => {}
                Err(err) => return err,
            }
        }
    }
}

/// Reads one MQTT packet from a raw connection: (first byte, body).
/// (A whole connection, or the read half of one.)
pub async fn read_packet(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let read = async {
        let header = stream.read_u8().await.expect("header");
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let byte = stream.read_u8().await.expect("length");
            len |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let mut body = vec![0; len];
        stream.read_exact(&mut body).await.expect("body");
        (header, body)
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("a packet in time")
}

/// A raw MQTT 3.1.1 CONNECT: keep alive 60, username and password if given, clean session as
/// given.
pub fn connect_packet(client_id: &str, credentials: Option<(&str, &str)>, clean: bool) -> Vec<u8> {
    connect_packet_with(client_id, credentials, clean, None)
}

/// A raw MQTT 3.1.1 CONNECT of a clean session with a QoS 1 will (`topic`, `payload`).
pub fn connect_packet_with_will(client_id: &str, topic: &str, payload: &str) -> Vec<u8> {
    connect_packet_with(client_id, None, true, Some((topic, payload)))
}

fn connect_packet_with(
    client_id: &str,
    credentials: Option<(&str, &str)>,
    clean: bool,
    will: Option<(&str, &str)>,
) -> Vec<u8> {
    let string = |s: &str| {
        let mut v = (s.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    };
    let signs_in = if credentials.is_some() {
        0x80 | 0x40
    } else {
        0
    };
    let wills = if will.is_some() { 0x04 | 0x08 } else { 0 };
    let flags = signs_in | wills | if clean { 0x02 } else { 0 };
    let mut body = string("MQTT");
    body.extend_from_slice(&[4, flags, 0, 60]);
    body.extend(string(client_id));
    if let Some((topic, payload)) = will {
        body.extend(string(topic));
        body.extend(string(payload));
    }
    if let Some((username, password)) = credentials {
        body.extend(string(username));
        body.extend(string(password));
    }
    packet(0x10, body)
}

/// A raw PUBLISH with a packet id (`header`: 0x32 QoS 1, 0x34 QoS 2, | 0x08 for DUP).
pub fn publish_packet(header: u8, topic: &str, id: u16, payload: &str) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(payload.as_bytes());
    packet(header, body)
}

/// An MQTT packet: its first byte, the remaining length, the body.
fn packet(header: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![header];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        out.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    out.extend(body);
    out
}

/// 5.0 publish properties a message should keep on its way: a content type, a user property
/// and an hour's expiry.
pub fn kept_properties() -> rumqttc::v5::mqttbytes::v5::PublishProperties {
    rumqttc::v5::mqttbytes::v5::PublishProperties {
        content_type: Some("text/plain".into()),
        user_properties: vec![("k".into(), "v".into())],
        message_expiry_interval: Some(3600),
        ..Default::default()
    }
}

/// Checks that a received message kept [`kept_properties`] (its expiry counting down).
pub fn assert_kept(props: &rumqttc::v5::mqttbytes::v5::PublishProperties) {
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(props.user_properties, vec![("k".into(), "v".into())]);
    let left = props.message_expiry_interval.expect("expiry forwarded");
    assert!((3500..=3600).contains(&left), "what remains of it: {left}");
}
