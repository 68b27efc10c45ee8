//! MQTT clients for the load generator (rumqttc, 3.1.1 or 5.0): each runs its event loop in a
//! task; publishes are handed to the client, received payloads to a callback.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Protocol {
    #[value(name = "3.1.1")]
    V311,
    #[value(name = "5.0")]
    V5,
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub protocol: Protocol,
}

pub enum Client {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

fn qos4(qos: u8) -> rumqttc::QoS {
    match qos {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(qos: u8) -> rumqttc::v5::mqttbytes::QoS {
    match qos {
        0 => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        1 => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        _ => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

impl Client {
    pub async fn publish(&self, topic: &str, qos: u8, payload: Bytes) -> anyhow::Result<()> {
        match self {
            Client::V311(c) => c.publish_bytes(topic, qos4(qos), false, payload).await?,
            Client::V5(c) => c.publish_bytes(topic, qos5(qos), false, payload).await?,
        }
        Ok(())
    }

    pub async fn disconnect(&self) {
        let _ = match self {
            Client::V311(c) => c.disconnect().await.map_err(|e| e.to_string()),
            Client::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
        };
    }
}

/// A connected client and its event-loop task.
pub struct Connected {
    pub client: Client,
    pub task: JoinHandle<()>,
}

/// What the event loop reports before it settles into delivering messages.
enum Milestone {
    Connected,
    Subscribed,
}

/// What a client's event loop reports to the scenario.
pub enum Traffic<'a> {
    /// A PUBLISH arrived with this payload.
    Received(&'a [u8]),
    /// A PUBLISH of ours was written to the network.
    Written,
}

/// Connects `id`; subscribes to `filter` if given (waiting for the SUBACK); reports traffic to
/// `on_traffic`.
pub async fn connect(
    target: &Target,
    id: &str,
    subscribe: Option<(&str, u8)>,
    mut on_traffic: impl FnMut(Traffic<'_>) + Send + 'static,
) -> anyhow::Result<Connected> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<Milestone, String>>();
    let (client, task) = match target.protocol {
        Protocol::V311 => {
            let mut options = rumqttc::MqttOptions::new(id, &target.host, target.port);
            options.set_keep_alive(Duration::from_secs(60));
            options.set_inflight(1000);
            options.set_max_packet_size(1 << 24, 1 << 24);
            let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1000);
            let task = tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                            on_traffic(Traffic::Received(&p.payload))
                        }
                        Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(_))) => {
                            on_traffic(Traffic::Written)
                        }
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                            let _ = tx.send(Ok(Milestone::Connected));
                        }
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                            let _ = tx.send(Ok(Milestone::Subscribed));
                        }
                        Ok(_) => {}
                        Err(err) => {
                            let _ = tx.send(Err(err.to_string()));
                            return;
                        }
                    }
                }
            });
            if let Some((filter, qos)) = subscribe {
                client.subscribe(filter, qos4(qos)).await?;
            }
            (Client::V311(client), task)
        }
        Protocol::V5 => {
            let mut options = rumqttc::v5::MqttOptions::new(id, &target.host, target.port);
            options.set_keep_alive(Duration::from_secs(60));
            options.set_outgoing_inflight_upper_limit(1000);
            let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 1000);
            let task = tokio::spawn(async move {
                use rumqttc::v5::mqttbytes::v5::Packet;
                loop {
                    match eventloop.poll().await {
                        Ok(rumqttc::v5::Event::Incoming(Packet::Publish(p))) => {
                            on_traffic(Traffic::Received(&p.payload))
                        }
                        Ok(rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::Publish(_))) => {
                            on_traffic(Traffic::Written)
                        }
                        Ok(rumqttc::v5::Event::Incoming(Packet::ConnAck(_))) => {
                            let _ = tx.send(Ok(Milestone::Connected));
                        }
                        Ok(rumqttc::v5::Event::Incoming(Packet::SubAck(_))) => {
                            let _ = tx.send(Ok(Milestone::Subscribed));
                        }
                        Ok(_) => {}
                        Err(err) => {
                            let _ = tx.send(Err(format!("{err:?}")));
                            return;
                        }
                    }
                }
            });
            if let Some((filter, qos)) = subscribe {
                client.subscribe(filter, qos5(qos)).await?;
            }
            (Client::V5(client), task)
        }
    };
    let wanted = if subscribe.is_some() { 2 } else { 1 };
    for _ in 0..wanted {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(err))) => bail!("client {id}: {err}"),
            Ok(None) => bail!("client {id}: event loop ended"),
            Err(_) => bail!("client {id}: no CONNACK/SUBACK within 30 s"),
        }
    }
    Ok(Connected { client, task })
}

/// Fails with a clear message when the broker cannot be reached at all.
pub async fn check_reachable(target: &Target) -> anyhow::Result<()> {
    tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .with_context(|| format!("cannot reach a broker at {}:{}", target.host, target.port))?;
    Ok(())
}
