//! `aos-bench`: an MQTT load generator that measures any broker at host:port with the same
//! scenarios, so AOS and Mosquitto are compared by one tool. Not linked into `aos`.

mod client;
mod stats;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
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
    /// Open N idle connections and hold them.
    Connections {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        hold: Duration,
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
            },
            Scenario::Fanout { subscribers } => Plan {
                name: "fanout",
                subscribers: vec!["bench/fanout".into(); subscribers],
                publishers: vec!["bench/fanout".into()],
                fanout: subscribers as u64,
                ordered: true,
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
        protocol: cli.protocol,
    };
    client::check_reachable(&target).await?;
    let report = match cli.scenario.clone() {
        Scenario::Connections { clients, hold } => connections(&cli, clients, hold).await?,
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

async fn messages(cli: &Cli, target: &Target, plan: &Plan) -> anyhow::Result<Report> {
    let window = Arc::new((AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)));
    let connect_started = Instant::now();
    let mut receivers = Vec::new();
    let mut subscriber_tasks = Vec::new();
    for (i, filter) in plan.subscribers.iter().enumerate() {
        let received = Arc::new(Mutex::new(Received::default()));
        let (sink, window, ordered) = (received.clone(), window.clone(), plan.ordered);
        let connected = client::connect(
            target,
            &format!("bench-sub-{i}"),
            Some((filter, cli.qos)),
            move |traffic| {
                if let client::Traffic::Received(payload) = traffic {
                    let at = now_ns();
                    let w = (
                        window.0.load(Ordering::Relaxed),
                        window.1.load(Ordering::Relaxed),
                    );
                    sink.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(payload, at, w, ordered);
                }
            },
        )
        .await?;
        receivers.push(received);
        subscriber_tasks.push(connected);
    }
    // Messages count as sent once written to the network (not when handed to the client).
    let sent_in_window = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    let mut written = Vec::new();
    for (i, _) in plan.publishers.iter().enumerate() {
        let count = Arc::new(AtomicU64::new(0));
        let (mine, in_window, window) = (count.clone(), sent_in_window.clone(), window.clone());
        publishers.push(
            client::connect(target, &format!("bench-pub-{i}"), None, move |traffic| {
                if let client::Traffic::Written = traffic {
                    mine.fetch_add(1, Ordering::Relaxed);
                    let now = now_ns();
                    if now >= window.0.load(Ordering::Relaxed)
                        && now < window.1.load(Ordering::Relaxed)
                    {
                        in_window.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .await?,
        );
        written.push(count);
    }
    let connect_time = connect_started.elapsed();
    let connections = subscriber_tasks.len() + publishers.len();

    let start = now_ns();
    let (from, to) = (
        start + cli.warmup.as_nanos() as u64,
        start + (cli.warmup + cli.duration).as_nanos() as u64,
    );
    window.0.store(from, Ordering::Relaxed);
    window.1.store(to, Ordering::Relaxed);
    let per_publisher_rate = cli.rate as f64 / plan.publishers.len().max(1) as f64;
    let mut publish_tasks = Vec::new();
    for (i, (connected, topic)) in publishers.iter().zip(&plan.publishers).enumerate() {
        let client = match &connected.client {
            client::Client::V311(c) => client::Client::V311(c.clone()),
            client::Client::V5(c) => client::Client::V5(c.clone()),
        };
        let (topic, qos, size) = (topic.clone(), cli.qos, cli.size);
        publish_tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            loop {
                let now = now_ns();
                if now >= to {
                    break;
                }
                if per_publisher_rate > 0.0 {
                    let due = ((now - start) as f64 * per_publisher_rate / 1e9) as u64;
                    if seq >= due {
                        tokio::time::sleep(Duration::from_micros(200)).await;
                        continue;
                    }
                }
                if client
                    .publish(&topic, qos, stats::payload(i as u32, seq, size))
                    .await
                    .is_err()
                {
                    break;
                }
                seq += 1;
            }
        }));
    }

    // Progress, and the broker's CPU over the measurement window.
    let mut before = None;
    let mut last_print = Instant::now();
    while now_ns() < to {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if before.is_none() && now_ns() >= from {
            before = cli.pid.and_then(stats::sample);
        }
        if !cli.json && last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let received: u64 = receivers
                .iter()
                .map(|r| r.lock().unwrap_or_else(|e| e.into_inner()).total)
                .sum();
            let sent: u64 = written.iter().map(|w| w.load(Ordering::Relaxed)).sum();
            eprint!(
                "\r{:>5.1}s  sent {:>10}  received {:>10}",
                (now_ns() - start) as f64 / 1e9,
                sent,
                received
            );
        }
    }
    let after = cli.pid.and_then(stats::sample);
    if !cli.json {
        eprintln!();
    }
    for task in publish_tasks {
        task.await.context("publisher task")?;
    }
    // What was handed to a client but not written yet is not counted as sent.
    let sent_by: Vec<u64> = written.iter().map(|w| w.load(Ordering::Relaxed)).collect();
    // Let what is in flight arrive (for loss accounting), within a bound.
    let expected: u64 = sent_by.iter().sum::<u64>() * plan.fanout;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let received: u64 = receivers
            .iter()
            .map(|r| r.lock().unwrap_or_else(|e| e.into_inner()).total)
            .sum();
        if received >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for connected in publishers.iter().chain(&subscriber_tasks) {
        connected.client.disconnect().await;
    }
    for connected in publishers.into_iter().chain(subscriber_tasks) {
        connected.task.abort();
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
        connections,
        connections_per_s: connections as f64 / connect_time.as_secs_f64(),
        broker_cpu_percent: cpu_percent(before, after, cli.duration),
        broker_rss_kib: after.map(|a| a.rss_kib),
        broker_rss_per_connection_bytes: None,
    })
}

/// A minimal 3.1.1 CONNECT (clean session, keep alive 0 — an idle client the broker must keep).
fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 0];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// Opens `clients` idle MQTT connections (from several loopback source addresses, so the
/// ephemeral port range is not the limit), holds them, and reports the broker's memory per
/// connection.
async fn connections(cli: &Cli, clients: usize, hold: Duration) -> anyhow::Result<Report> {
    let before = cli.pid.and_then(stats::sample);
    let target: std::net::SocketAddr = format!("{}:{}", cli.host, cli.port)
        .parse()
        .context("--host must be an IP address for the connections scenario")?;
    let started = Instant::now();
    let mut open = Vec::with_capacity(clients);
    for i in 0..clients {
        let source = std::net::SocketAddr::from(([127, 0, 0, 1 + (i % 8) as u8], 0));
        let socket = TcpSocket::new_v4()?;
        if target.ip().is_loopback() {
            socket.bind(source)?;
        }
        let mut stream = socket
            .connect(target)
            .await
            .with_context(|| format!("connection {i}"))?;
        stream
            .write_all(&connect_packet(&format!("idle-{i}")))
            .await?;
        let mut connack = [0u8; 4];
        stream
            .read_exact(&mut connack)
            .await
            .with_context(|| format!("CONNACK {i}"))?;
        if connack[3] != 0 {
            bail!("connection {i} refused with return code {}", connack[3]);
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
        protocol: Some(Protocol::V311),
        connections: clients,
        connections_per_s: clients as f64 / connect_time.as_secs_f64(),
        broker_rss_kib: after.map(|a| a.rss_kib),
        broker_rss_per_connection_bytes: per_connection,
        ..Report::default()
    })
}
