//! Several listeners per broker: TLS (with optional client certificates) and MQTT over
//! WebSocket, each accepting 3.1.1 and 5.0, all routing to the same subscribers.

mod common;

use common::mqtt::{Client3, options3};
use common::pki::{Pki, tls_listener};
use common::{Broker, free_port};
use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_tls_listener_serves_mqtt_and_shares_subscribers_with_tcp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let port = free_port();
    let listeners = tls_listener(dir.path(), port, false, false);
    let broker = Broker::start(&[("AOS_BROKER__LISTENERS", &listeners)]);
    let mut plain = Client3::start(broker.port(), "plain").await;
    plain.subscribe("mixed", QoS::AtLeastOnce).await;
    let (mut secure, _) = Client3::connect(pki.options(port, "secure", None))
        .await
        .expect("TLS connect");
    secure.publish_acked("mixed", false, b"over tls").await;
    assert_eq!(plain.publish_received().await.payload.as_ref(), b"over tls");
}

#[tokio::test]
async fn client_certificates_are_required_when_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let port = free_port();
    let listeners = tls_listener(dir.path(), port, true, true);
    let broker = Broker::start(&[("AOS_BROKER__LISTENERS", &listeners)]);
    assert!(
        Client3::connect(pki.options(port, "anonymous", None))
            .await
            .is_err(),
        "no client certificate, no connection"
    );
    let (mut with_cert, _) =
        Client3::connect(pki.options(port, "device-1", Some(&pki.client("device-1"))))
            .await
            .expect("connect with a client certificate");
    with_cert.subscribe("m", QoS::AtMostOnce).await;
    let publisher = Client3::start(broker.port(), "pub").await;
    publisher.publish("m", QoS::AtMostOnce, false, b"hi").await;
    assert_eq!(with_cert.publish_received().await.payload.as_ref(), b"hi");
}

#[tokio::test]
async fn a_bad_tls_setup_stops_start_up_with_the_key_to_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listeners = format!(
        r#"[{{name="broken",bind="127.0.0.1:{1}",transport="tls",tls={{cert="{0}/missing.pem",key="{0}/missing.key"}}}}]"#,
        dir.path().display(),
        free_port()
    );
    let (status, _, stderr) = common::Aos::new(dir.path(), &["run", "--roles", "broker"])
        .env("AOS_BROKER__LISTENERS", &listeners)
        .output();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("broker.listeners[0].tls"), "{stderr}");
    assert!(stderr.contains("missing.pem"), "{stderr}");
}

/// Opens a WebSocket to `path`; returns the stream and the HTTP response head.
async fn websocket(port: u16, path: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("upgrade request");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = stream.read_u8().await.expect("response");
        head.push(byte);
    }
    (stream, String::from_utf8_lossy(&head).to_ascii_lowercase())
}

/// Sends `payload` as one masked binary frame (clients must mask).
async fn send_frame(stream: &mut TcpStream, payload: &[u8]) {
    assert!(payload.len() < 126);
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x82, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).await.expect("frame");
}

/// Reads one unmasked binary frame from the server.
async fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let read = async {
        let first = stream.read_u8().await.expect("frame");
        assert_eq!(first & 0x0f, 0x2, "a binary frame");
        let len = match stream.read_u8().await.expect("length") & 0x7f {
            126 => usize::from(stream.read_u16().await.expect("length")),
            127 => stream.read_u64().await.expect("length") as usize,
            n => usize::from(n),
        };
        let mut payload = vec![0; len];
        stream.read_exact(&mut payload).await.expect("payload");
        payload
    };
    tokio::time::timeout(common::mqtt::WAIT, read)
        .await
        .expect("a frame in time")
}

#[tokio::test]
async fn mqtt_over_websocket_on_the_configured_path() {
    let port = free_port();
    let listeners = format!(r#"[{{name="ws",bind="127.0.0.1:{port}",transport="ws"}}]"#);
    let broker = Broker::start(&[("AOS_BROKER__LISTENERS", &listeners)]);

    let (_, head) = websocket(port, "/elsewhere").await;
    assert!(head.starts_with("http/1.1 404"), "{head}");

    let (mut ws, head) = websocket(port, "/mqtt").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("sec-websocket-protocol: mqtt"), "{head}");
    // CONNECT 3.1.1, client id "web".
    send_frame(
        &mut ws,
        &[
            0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 3, b'w', b'e', b'b',
        ],
    )
    .await;
    assert_eq!(read_frame(&mut ws).await, vec![0x20, 2, 0, 0], "CONNACK");
    // SUBSCRIBE `live` QoS 0.
    send_frame(&mut ws, &[0x82, 9, 0, 1, 0, 4, b'l', b'i', b'v', b'e', 0]).await;
    assert_eq!(read_frame(&mut ws).await, vec![0x90, 3, 0, 1, 0], "SUBACK");

    let publisher = Client3::start(broker.port(), "tcp").await;
    publisher
        .publish("live", QoS::AtMostOnce, false, b"to the browser")
        .await;
    let publish = read_frame(&mut ws).await;
    assert_eq!(publish[0], 0x30);
    assert!(publish.ends_with(b"to the browser"), "{publish:?}");
}

#[tokio::test]
async fn a_listener_limit_holds_while_other_listeners_accept() {
    let port = free_port();
    let listeners = format!(r#"[{{name="small",bind="127.0.0.1:{port}",max_connections=1}}]"#);
    let broker = Broker::start(&[("AOS_BROKER__LISTENERS", &listeners)]);
    let _first = Client3::start(port, "first").await;
    let refused = Client3::connect(options3(port, "second"))
        .await
        .err()
        .expect("refused");
    assert!(refused.contains("ServiceUnavailable"), "{refused}");
    Client3::start(broker.port(), "elsewhere").await;
}
