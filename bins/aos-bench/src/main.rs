//! `aos-bench`: an MQTT load generator that measures any broker at host:port with the same
//! scenarios, so AOS and Mosquitto are compared by one tool. Not linked into `aos`.

mod client;
mod stats;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::BytesMut;
use clap::{Parser, Subcommand};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use client::{Protocol, Target};
use stats::{ProcSample, Received, now_ns, percentile};

#[derive(Parser, Debug)]
#[command(
    name = "aos-bench",
    version,
    about = "MQTT load generator: the same scenarios against any broker (AOS, Mosquitto, ...)"
)]
struct Cli {
    /// Broker host (the tool connects nowhere else).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Port the subscribers connect to (default: `--port`): another broker node of a cluster,
    /// to measure messages routed between nodes.
    #[arg(long)]
    subscriber_port: Option<u16>,
    #[arg(long, value_enum, default_value = "3.1.1")]
    protocol: Protocol,
    /// QoS of publishes and subscriptions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Payload bytes (at least 20: publisher, sequence and send time travel in it).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Messages per second over all publishers; 0: as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Measurement time.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Time before measuring (traffic flows, nothing is counted).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Username for every CONNECT (for AOS devices: `provision`, with a class's provisioning key
    /// as password, registers the ingest scenario's devices on their first connection).
    #[arg(long)]
    username: Option<String>,
    #[arg(long)]
    password: Option<String>,
    /// Subscribers keep persistent sessions (clean session 0; 5.0: session expiry 1 hour), so a
    /// broker that keeps them durably stores each QoS 1/2 message it queues for them.
    #[arg(long)]
    persistent_subscribers: bool,
    /// Broker process id, to report its CPU and memory.
    #[arg(long)]
    pid: Option<u32>,
    /// Print the report as JSON (and no progress).
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug, Clone)]
enum Scenario {
    /// N publishers, each publishing to its own subscriber.
    P2p {
        #[arg(long, default_value_t = 10)]
        pairs: usize,
    },
    /// N publishers to one subscriber, or to a shared subscription of `shared` members.
    Fanin {
        #[arg(long, default_value_t = 10)]
        publishers: usize,
        #[arg(long, default_value_t = 0)]
        shared: usize,
    },
    /// One publisher to N subscribers.
    Fanout {
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
    },
    /// N devices publishing telemetry JSON with K attributes to `aos/{device}/telemetry`,
    /// measured until the platform has stored it: the counter `stored_counter` (stored rows,
    /// one per attribute) is read from the nodes' Prometheus endpoints `metrics_url` (several,
    /// comma-separated, for a cluster's workers: their counters are added up).
    Ingest {
        #[arg(long, default_value_t = 100)]
        devices: usize,
        #[arg(long, default_value_t = 3)]
        attributes: usize,
        /// The node's metrics endpoint, e.g. http://127.0.0.1:9090/metrics.
        #[arg(long)]
        #[arg(value_delimiter = ',')]
        metrics_url: Vec<String>,
        #[arg(long, default_value = "aos_ledger_rows_total")]
        stored_counter: String,
    },
    /// Open N idle connections (half 3.1.1, half 5.0, each subscribed to its command topic)
    /// and hold them.
    Connections {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        hold: Duration,
        /// Port the 5.0 clients connect to (default: `--port`), for a broker that serves 5.0
        /// on a listener of its own (rumqttd).
        #[arg(long)]
        v5_port: Option<u16>,
    },
}

/// Who subscribes to what, who publishes where, and how many copies of each message are due.
struct Plan {
    name: &'static str,
    subscribers: Vec<String>,
    publishers: Vec<String>,
    /// Copies of each published message the subscribers should receive together.
    fanout: u64,
    /// Whether each subscriber sees each of its publishers' messages in order (not so for a
    /// shared subscription, whose members split them).
    ordered: bool,
    /// Telemetry with this many attributes instead of timestamped binary payloads.
    telemetry: Option<usize>,
}

impl Plan {
    fn of(scenario: &Scenario) -> Plan {
        match *scenario {
            Scenario::P2p { pairs } => Plan {
                name: "p2p",
                subscribers: (0..pairs).map(|i| format!("bench/p2p/{i}")).collect(),
                publishers: (0..pairs).map(|i| format!("bench/p2p/{i}")).collect(),
                fanout: 1,
                ordered: true,
                telemetry: None,
            },
            Scenario::Fanin { publishers, shared } => Plan {
                name: "fanin",
                subscribers: if shared == 0 {
                    vec!["bench/fanin/+".into()]
                } else {
                    vec!["$share/bench/bench/fanin/+".into(); shared]
                },
                publishers: (0..publishers)
                    .map(|i| format!("bench/fanin/{i}"))
                    .collect(),
                fanout: 1,
                ordered: shared == 0,
                telemetry: None,
            },
            Scenario::Fanout { subscribers } => Plan {
                name: "fanout",
                subscribers: vec!["bench/fanout".into(); subscribers],
                publishers: vec!["bench/fanout".into()],
                fanout: subscribers as u64,
                ordered: true,
                telemetry: None,
            },
            Scenario::Ingest {
                devices,
                attributes,
                ..
            } => Plan {
                name: "ingest",
                subscribers: Vec::new(),
                publishers: (0..devices)
                    .map(|i| format!("aos/bench-dev-{i}/telemetry"))
                    .collect(),
                fanout: 0,
                ordered: false,
                telemetry: Some(attributes),
            },
            Scenario::Connections { .. } => unreachable!("not a message scenario"),
        }
    }
}

#[derive(Serialize, Debug, Default)]
struct Latency {
    p50: u32,
    p90: u32,
    p99: u32,
    max: u32,
}

#[derive(Serialize, Debug, Default)]
struct Report {
    scenario: String,
    protocol: Option<Protocol>,
    qos: u8,
    payload_bytes: usize,
    target_rate: u64,
    duration_s: f64,
    publishers: usize,
    subscribers: usize,
    sent_per_s: f64,
    received_per_s: f64,
    received_bytes_per_s: f64,
    latency_us: Latency,
    lost: u64,
    duplicated: u64,
    connections: usize,
    connections_per_s: f64,
    broker_cpu_percent: Option<f64>,
    broker_rss_kib: Option<u64>,
    broker_rss_per_connection_bytes: Option<f64>,
    /// Ingest: rows (one per attribute) stored per second in the window, the same as messages,
    /// and how long after the last publish everything sent was stored (None: not within 60 s).
    stored_rows_per_s: Option<f64>,
    stored_messages_per_s: Option<f64>,
    stored_all_after_s: Option<f64>,
}

fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let cpu = report
        .broker_cpu_percent
        .map_or("-".into(), |c| format!("{c:.0}%"));
    let rss = report
        .broker_rss_kib
        .map_or("-".into(), |r| format!("{:.1} MiB", r as f64 / 1024.0));
    println!("scenario            {}", report.scenario);
    println!(
        "clients             {} publishers, {} subscribers",
        report.publishers, report.subscribers
    );
    println!("sent                {:>12.0} msg/s", report.sent_per_s);
    println!(
        "received            {:>12.0} msg/s  {:>10.1} MiB/s",
        report.received_per_s,
        report.received_bytes_per_s / 1048576.0
    );
    println!(
        "latency             p50 {} µs  p90 {} µs  p99 {} µs  max {} µs",
        report.latency_us.p50, report.latency_us.p90, report.latency_us.p99, report.latency_us.max
    );
    println!(
        "lost / duplicated   {} / {}",
        report.lost, report.duplicated
    );
    println!(
        "connections         {} at {:.0}/s",
        report.connections, report.connections_per_s
    );
    println!("broker              cpu {cpu}  rss {rss}");
    if let Some(per) = report.broker_rss_per_connection_bytes {
        println!("broker rss / conn   {per:.0} bytes");
    }
    if let (Some(rows), Some(messages)) = (report.stored_rows_per_s, report.stored_messages_per_s) {
        let after = report
            .stored_all_after_s
            .map_or("not within 60 s".into(), |s| {
                format!("{s:.1} s after the last publish")
            });
        println!(
            "stored              {messages:>12.0} msg/s  {rows:>10.0} rows/s  all stored {after}"
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.size < stats::HEADER {
        bail!("--size must be at least {} bytes", stats::HEADER);
    }
    let target = Target {
        host: cli.host.clone(),
        port: cli.port,
        subscriber_port: cli.subscriber_port.unwrap_or(cli.port),
        protocol: cli.protocol,
        username: cli.username.clone(),
        password: cli.password.clone(),
        persistent_subscribers: cli.persistent_subscribers,
    };
    let report = match cli.scenario.clone() {
        Scenario::Connections {
            clients,
            hold,
            v5_port,
        } => connections(&cli, clients, hold, v5_port).await?,
        scenario => messages(&cli, &target, &Plan::of(&scenario)).await?,
    };
    print(&report, cli.json)
}

fn cpu_percent(
    before: Option<ProcSample>,
    after: Option<ProcSample>,
    wall: Duration,
) -> Option<f64> {
    let (before, after) = (before?, after?);
    Some(
        (after.cpu_ticks - before.cpu_ticks) as f64
            / stats::ticks_per_second()
            / wall.as_secs_f64()
            * 100.0,
    )
}

/// Most QoS 1/2 messages a publisher keeps unacknowledged (as a device library would).
const MAX_INFLIGHT: u64 = 1000;
/// Most messages written in one go by a publisher at an unlimited rate.
const BATCH: u64 = 64;

/// Runs one subscriber until its connection ends: records every PUBLISH, acknowledges QoS 1/2.
async fn subscriber(
    mut connection: client::Connection,
    received: Arc<Mutex<Received>>,
    window: Arc<(AtomicU64, AtomicU64)>,
    ordered: bool,
) {
    let protocol = connection.protocol;
    let mut acks = BytesMut::new();
    while let Ok(true) = connection.reader.fill().await {
        let at = now_ns();
        let w = (
            window.0.load(Ordering::Relaxed),
            window.1.load(Ordering::Relaxed),
        );
        {
            let mut sink = received.lock().unwrap_or_else(|e| e.into_inner());
            connection.reader.packets(|first, body| match first >> 4 {
                client::kind::PUBLISH => {
                    if let Some(p) = client::parse_publish(first, body, protocol) {
                        sink.record(p.payload, at, w, ordered);
                        match p.qos {
                            1 => client::put_ack(&mut acks, client::kind::PUBACK, p.packet_id),
                            2 => client::put_ack(&mut acks, client::kind::PUBREC, p.packet_id),
                            _ => {}
                        }
                    }
                }
                client::kind::PUBREL => {
                    if let Some(id) = client::ack_id(body) {
                        client::put_ack(&mut acks, client::kind::PUBCOMP, id);
                    }
                }
                _ => {}
            });
        }
        if !acks.is_empty() {
            if connection.writer.write_all(&acks).await.is_err() {
                return;
            }
            acks.clear();
        }
    }
}

/// What a publisher is told: its topic, its share of the rate, and the run's clock.
struct PublisherPlan {
    id: u32,
    topic: String,
    qos: u8,
    size: usize,
    /// Telemetry with this many attributes instead of a timestamped binary payload.
    telemetry: Option<usize>,
    /// Messages per second for this publisher; 0: unlimited.
    rate: f64,
    start: u64,
    to: u64,
}

/// Publishes until `plan.to`, paced to its rate, keeping at most MAX_INFLIGHT QoS 1/2 messages
/// unacknowledged; `on_written(n, at)` counts messages once they are written to the socket.
/// Returns the connection for a clean DISCONNECT, unless a write was left unfinished.
async fn publisher(
    mut connection: client::Connection,
    plan: PublisherPlan,
    on_written: impl Fn(u64, u64),
) -> anyhow::Result<Option<client::Connection>> {
    let protocol = connection.protocol;
    let (mut seq, mut inflight, mut next_id) = (0u64, 0u64, 0u16);
    let mut out = BytesMut::new();
    loop {
        let now = now_ns();
        if now >= plan.to {
            return Ok(Some(connection));
        }
        let due = if plan.rate > 0.0 {
            (((now - plan.start) as f64 * plan.rate / 1e9) as u64).saturating_sub(seq)
        } else {
            BATCH
        };
        let room = if plan.qos > 0 {
            MAX_INFLIGHT - inflight
        } else {
            u64::MAX
        };
        let n = due.min(room).min(BATCH * 16);
        for _ in 0..n {
            next_id = next_id.checked_add(1).unwrap_or(1);
            let payload = match plan.telemetry {
                Some(attributes) => stats::telemetry(seq, attributes),
                None => stats::payload(plan.id, seq, plan.size),
            };
            client::put_publish(&mut out, protocol, &plan.topic, plan.qos, next_id, &payload);
            seq += 1;
        }
        if plan.qos > 0 {
            inflight += n;
        }
        if !out.is_empty() {
            // A broker that stopped reading holds the write: give up at the end of the run.
            let end = tokio::time::Instant::now() + Duration::from_nanos(plan.to - now);
            match tokio::time::timeout_at(end, connection.writer.write_all(&out)).await {
                Ok(written) => written?,
                Err(_) => return Ok(None),
            }
            out.clear();
            on_written(n, now_ns());
        }
        if plan.qos == 0 && plan.rate == 0.0 {
            continue;
        }
        // Wait for acknowledgements, or for the next message to be due.
        let next_due = if plan.rate > 0.0 {
            plan.start + ((seq + 1) as f64 * 1e9 / plan.rate) as u64
        } else {
            plan.to
        };
        let wait = Duration::from_nanos(next_due.min(plan.to).saturating_sub(now_ns()));
        let may_send = plan.qos == 0 || inflight < MAX_INFLIGHT;
        tokio::select! {
            open = connection.reader.fill() => {
                if !open? {
                    bail!("the broker closed the connection of publisher {}", plan.id);
                }
            }
            _ = tokio::time::sleep(wait), if may_send || plan.rate == 0.0 => {}
        }
        connection.reader.packets(|first, body| {
            let Some(id) = client::ack_id(body) else {
                return;
            };
            match first >> 4 {
                client::kind::PUBACK | client::kind::PUBCOMP => {
                    inflight = inflight.saturating_sub(1);
                }
                client::kind::PUBREC => client::put_ack(&mut out, client::kind::PUBREL, id),
                _ => {}
            }
        });
    }
}

/// Where the ingest scenario reads how much the platform has stored.
struct StoredCounter {
    /// host:port and path of each metrics endpoint.
    endpoints: Vec<(String, String)>,
    counter: String,
}

impl StoredCounter {
    fn of(scenario: &Scenario) -> anyhow::Result<Option<StoredCounter>> {
        let Scenario::Ingest {
            metrics_url,
            stored_counter,
            ..
        } = scenario
        else {
            return Ok(None);
        };
        let mut endpoints = Vec::new();
        for url in metrics_url {
            let rest = url
                .strip_prefix("http://")
                .context("--metrics-url must be an http:// URL")?;
            let (addr, path) = rest.split_once('/').unwrap_or((rest, ""));
            endpoints.push((addr.to_string(), format!("/{path}")));
        }
        Ok(Some(StoredCounter {
            endpoints,
            counter: stored_counter.clone(),
        }))
    }

    /// The counters' current total (a minimal HTTP/1.1 GET to each endpoint).
    async fn read(&self) -> anyhow::Result<f64> {
        let mut total = 0.0;
        for (addr, path) in &self.endpoints {
            let mut stream = tokio::net::TcpStream::connect(addr)
                .await
                .with_context(|| format!("cannot reach the metrics endpoint {addr}"))?;
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await?;
            let mut body = String::new();
            stream.read_to_string(&mut body).await?;
            total += stats::counter_total(&body, &self.counter).unwrap_or(0.0);
        }
        Ok(total)
    }
}

async fn messages(cli: &Cli, target: &Target, plan: &Plan) -> anyhow::Result<Report> {
    let stored = StoredCounter::of(&cli.scenario)?;
    let stored_base = match &stored {
        Some(counter) => counter.read().await?,
        None => 0.0,
    };
    let window = Arc::new((AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)));
    let connect_started = Instant::now();
    let mut receivers = Vec::new();
    let mut subscriber_tasks = Vec::new();
    for (i, filter) in plan.subscribers.iter().enumerate() {
        let mut connection = client::Connection::open(
            &target.for_subscribers(),
            &format!("bench-sub-{i}"),
            target.persistent_subscribers,
        )
        .await?;
        connection.subscribe(filter, cli.qos).await?;
        let received = Arc::new(Mutex::new(Received::default()));
        receivers.push(received.clone());
        subscriber_tasks.push(tokio::spawn(subscriber(
            connection,
            received,
            window.clone(),
            plan.ordered,
        )));
    }
    let mut connections = Vec::new();
    for (i, topic) in plan.publishers.iter().enumerate() {
        // A device signs in as itself: its client id is its topic segment.
        let client_id = match plan.telemetry {
            Some(_) => topic.split('/').nth(1).unwrap_or(topic).to_string(),
            None => format!("bench-pub-{i}"),
        };
        connections.push(client::Connection::open(target, &client_id, false).await?);
    }
    let connect_time = connect_started.elapsed();
    let connection_count = subscriber_tasks.len() + connections.len();

    let start = now_ns();
    let (from, to) = (
        start + cli.warmup.as_nanos() as u64,
        start + (cli.warmup + cli.duration).as_nanos() as u64,
    );
    window.0.store(from, Ordering::Relaxed);
    window.1.store(to, Ordering::Relaxed);
    let sent_in_window = Arc::new(AtomicU64::new(0));
    let rate = cli.rate as f64 / plan.publishers.len().max(1) as f64;
    let mut written = Vec::new();
    let mut publish_tasks = Vec::new();
    for (i, (connection, topic)) in connections.into_iter().zip(&plan.publishers).enumerate() {
        let count = Arc::new(AtomicU64::new(0));
        written.push(count.clone());
        let in_window = sent_in_window.clone();
        let on_written = move |n: u64, at: u64| {
            count.fetch_add(n, Ordering::Relaxed);
            if at >= from && at < to {
                in_window.fetch_add(n, Ordering::Relaxed);
            }
        };
        let plan = PublisherPlan {
            id: i as u32,
            topic: topic.clone(),
            qos: cli.qos,
            size: cli.size,
            telemetry: plan.telemetry,
            rate,
            start,
            to,
        };
        publish_tasks.push(tokio::spawn(publisher(connection, plan, on_written)));
    }

    // Progress, and the broker's CPU over the measurement window.
    let total_received = || -> u64 {
        receivers
            .iter()
            .map(|r| r.lock().unwrap_or_else(|e| e.into_inner()).total)
            .sum()
    };
    let mut before = None;
    let mut window_started = false;
    let mut stored_from = stored_base;
    let mut last_print = Instant::now();
    while now_ns() < to {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !window_started && now_ns() >= from {
            window_started = true;
            before = cli.pid.and_then(stats::sample);
            if let Some(counter) = &stored {
                stored_from = counter.read().await?;
            }
        }
        if !cli.json && last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let sent: u64 = written.iter().map(|w| w.load(Ordering::Relaxed)).sum();
            eprint!(
                "\r{:>5.1}s  sent {:>10}  received {:>10}",
                (now_ns() - start) as f64 / 1e9,
                sent,
                total_received()
            );
        }
    }
    let after = cli.pid.and_then(stats::sample);
    let stored_to = match &stored {
        Some(counter) => counter.read().await?,
        None => 0.0,
    };
    if !cli.json {
        eprintln!();
    }
    let mut publishers = Vec::new();
    for task in publish_tasks {
        publishers.push(task.await.context("publisher task")??);
    }
    let sent_by: Vec<u64> = written.iter().map(|w| w.load(Ordering::Relaxed)).collect();
    // Let what is in flight arrive (for loss accounting): what has not arrived 2 s after the
    // end counts as lost (in an overloaded run: dropped, or still queued in the broker).
    let expected: u64 = sent_by.iter().sum::<u64>() * plan.fanout;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && total_received() < expected {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stored_all_after = None;
    if let (Some(counter), Some(attributes)) = (&stored, plan.telemetry) {
        let sent: u64 = written.iter().map(|w| w.load(Ordering::Relaxed)).sum();
        let wanted = stored_base + (sent * attributes as u64) as f64;
        let last_publish = Instant::now();
        while last_publish.elapsed() < Duration::from_secs(60) {
            if counter.read().await? >= wanted {
                stored_all_after = Some(last_publish.elapsed().as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for connection in publishers.into_iter().flatten() {
        connection.disconnect().await;
    }
    for task in subscriber_tasks {
        task.abort();
    }

    let mut latencies = Vec::new();
    let (mut messages, mut bytes, mut lost, mut duplicated, mut total) = (0, 0, 0, 0, 0);
    for (i, received) in receivers.iter().enumerate() {
        let r = received.lock().unwrap_or_else(|e| e.into_inner());
        messages += r.messages;
        bytes += r.bytes;
        total += r.total;
        latencies.extend_from_slice(&r.latencies_us);
        if plan.ordered {
            lost += r.lost;
            duplicated += r.duplicates;
            let publishers: Vec<u32> = match plan.name {
                "p2p" => vec![i as u32],
                _ => (0..sent_by.len() as u32).collect(),
            };
            lost += r.missing_tail(&sent_by, publishers.into_iter());
        }
    }
    if !plan.ordered {
        lost = expected.saturating_sub(total);
        duplicated = total.saturating_sub(expected);
    }
    latencies.sort_unstable();
    let secs = cli.duration.as_secs_f64();
    Ok(Report {
        scenario: plan.name.into(),
        protocol: Some(cli.protocol),
        qos: cli.qos,
        payload_bytes: cli.size,
        target_rate: cli.rate,
        duration_s: secs,
        publishers: plan.publishers.len(),
        subscribers: plan.subscribers.len(),
        sent_per_s: sent_in_window.load(Ordering::Relaxed) as f64 / secs,
        received_per_s: messages as f64 / secs,
        received_bytes_per_s: bytes as f64 / secs,
        latency_us: Latency {
            p50: percentile(&latencies, 50.0),
            p90: percentile(&latencies, 90.0),
            p99: percentile(&latencies, 99.0),
            max: latencies.last().copied().unwrap_or(0),
        },
        lost,
        duplicated,
        connections: connection_count,
        connections_per_s: connection_count as f64 / connect_time.as_secs_f64(),
        broker_cpu_percent: cpu_percent(before, after, cli.duration),
        broker_rss_kib: after.map(|a| a.rss_kib),
        broker_rss_per_connection_bytes: None,
        stored_rows_per_s: stored.as_ref().map(|_| (stored_to - stored_from) / secs),
        stored_messages_per_s: plan
            .telemetry
            .map(|k| (stored_to - stored_from) / secs / k.max(1) as f64),
        stored_all_after_s: stored_all_after,
    })
}

/// A minimal 3.1.1 CONNECT (clean session, keep alive 0 — an idle client the broker must keep).
/// A CONNECT of an idle client (clean session, keep-alive `keep_alive` seconds).
fn connect_packet(client_id: &str, protocol: Protocol, keep_alive: u16) -> Vec<u8> {
    let v5 = protocol == Protocol::V5;
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', if v5 { 5 } else { 4 }, 0x02];
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if v5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    with_header(0x10, body)
}

/// A SUBSCRIBE (packet id 1) to `filter` with QoS 1.
fn subscribe_packet(filter: &str, protocol: Protocol) -> Vec<u8> {
    let mut body = vec![0, 1];
    if protocol == Protocol::V5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(1);
    with_header(0x82, body)
}

fn with_header(first: u8, body: Vec<u8>) -> Vec<u8> {
    let mut packet = vec![first];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        packet.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    packet.extend(body);
    packet
}

/// Reads one packet: its first byte and its body.
async fn read_packet(stream: &mut tokio::net::TcpStream) -> anyhow::Result<(u8, Vec<u8>)> {
    let first = stream.read_u8().await?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let byte = stream.read_u8().await?;
        len |= usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 || shift > 21 {
            break;
        }
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await?;
    Ok((first, body))
}

/// Keep-alive of the idle clients: not zero (some brokers refuse it), long enough that no
/// PINGREQ is due while they are held.
const IDLE_KEEP_ALIVE_SECS: u16 = 600;

/// Opens `clients` idle MQTT connections — every other one 5.0, the others 3.1.1, each
/// subscribed to its own command topic as a device is (from several loopback source
/// addresses, so the ephemeral port range is not the limit) — holds them, and reports the
/// broker's memory per connection.
async fn connections(
    cli: &Cli,
    clients: usize,
    hold: Duration,
    v5_port: Option<u16>,
) -> anyhow::Result<Report> {
    let before = cli.pid.and_then(stats::sample);
    let address = |port: u16| -> anyhow::Result<std::net::SocketAddr> {
        format!("{}:{port}", cli.host)
            .parse()
            .context("--host must be an IP address for the connections scenario")
    };
    let (v3_target, v5_target) = (address(cli.port)?, address(v5_port.unwrap_or(cli.port))?);
    let started = Instant::now();
    let mut open = Vec::with_capacity(clients);
    for i in 0..clients {
        let (protocol, target) = if i % 2 == 1 {
            (Protocol::V5, v5_target)
        } else {
            (Protocol::V311, v3_target)
        };
        let source = std::net::SocketAddr::from(([127, 0, 0, 1 + (i % 8) as u8], 0));
        let socket = TcpSocket::new_v4()?;
        if target.ip().is_loopback() {
            socket.bind(source)?;
        }
        let mut stream = socket
            .connect(target)
            .await
            .with_context(|| format!("connection {i}"))?;
        let client_id = format!("idle-{i}");
        stream
            .write_all(&connect_packet(&client_id, protocol, IDLE_KEEP_ALIVE_SECS))
            .await?;
        let (first, connack) = read_packet(&mut stream)
            .await
            .with_context(|| format!("CONNACK {i}"))?;
        if first != 0x20 || connack.get(1) != Some(&0) {
            bail!("connection {i} refused: {first:#x} {connack:?}");
        }
        stream
            .write_all(&subscribe_packet(
                &format!("idle/{client_id}/commands"),
                protocol,
            ))
            .await?;
        let (first, _) = read_packet(&mut stream)
            .await
            .with_context(|| format!("SUBACK {i}"))?;
        if first != 0x90 {
            bail!("connection {i}: expected a SUBACK, got {first:#x}");
        }
        open.push(stream);
        if !cli.json && i % 1000 == 999 {
            eprint!("\r{:>7} connections", i + 1);
        }
    }
    let connect_time = started.elapsed();
    if !cli.json {
        eprintln!();
    }
    tokio::time::sleep(hold).await;
    let after = cli.pid.and_then(stats::sample);
    drop(open);
    let per_connection = match (before, after) {
        (Some(b), Some(a)) => {
            Some((a.rss_kib.saturating_sub(b.rss_kib) * 1024) as f64 / clients as f64)
        }
        _ => None,
    };
    Ok(Report {
        scenario: "connections".into(),
        protocol: None,
        connections: clients,
        connections_per_s: clients as f64 / connect_time.as_secs_f64(),
        broker_rss_kib: after.map(|a| a.rss_kib),
        broker_rss_per_connection_bytes: per_connection,
        ..Report::default()
    })
}
