//! Measurement: payloads that carry who sent them, their sequence number and when; what each
//! subscriber saw; percentiles; the broker process's CPU and memory.

use std::sync::OnceLock;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes at the start of every payload: publisher id (u32), sequence (u64), send time (u64 ns).
pub const HEADER: usize = 20;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the tool started (one clock for publishers and subscribers).
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

pub fn payload(publisher: u32, seq: u64, size: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(size.max(HEADER));
    buf.put_u32(publisher);
    buf.put_u64(seq);
    buf.put_u64(now_ns());
    buf.resize(size.max(HEADER), 0);
    buf.freeze()
}

/// A device's telemetry message: JSON with a Unix time in milliseconds (`ts`) and
/// `attributes` numeric values named `a0`, `a1`, ...
pub fn telemetry(seq: u64, attributes: usize) -> Bytes {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    // One ledger row per attribute: the sequence number only varies the values.
    let mut json = format!("{{\"ts\":{ts}");
    for a in 0..attributes {
        json.push_str(&format!(",\"a{a}\":{}.{}", 20 + a, seq % 10));
    }
    json.push('}');
    Bytes::from(json)
}

/// The sum of every series of `counter` in a Prometheus text exposition.
pub fn counter_total(exposition: &str, counter: &str) -> Option<f64> {
    let mut found = None;
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(counter) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        *found.get_or_insert(0.0) += value;
    }
    found
}

/// (publisher, sequence, send time) of a payload made by [`payload`].
pub fn parse(payload: &[u8]) -> Option<(u32, u64, u64)> {
    let header = payload.get(..HEADER)?;
    Some((
        u32::from_be_bytes(header[0..4].try_into().ok()?),
        u64::from_be_bytes(header[4..12].try_into().ok()?),
        u64::from_be_bytes(header[12..20].try_into().ok()?),
    ))
}

/// What one subscriber received.
#[derive(Default)]
pub struct Received {
    /// Within the measurement window.
    pub messages: u64,
    pub bytes: u64,
    /// Latencies (microseconds) of messages received within the window.
    pub latencies_us: Vec<u32>,
    /// Over the whole run: messages skipped in a publisher's sequence, and ones seen again.
    pub lost: u64,
    pub duplicates: u64,
    /// All messages received, whatever the window.
    pub total: u64,
    next_seq: Vec<u64>,
}

impl Received {
    /// Records a payload received at `at_ns`; `window` is the measurement window (ns).
    pub fn record(&mut self, payload: &[u8], at_ns: u64, window: (u64, u64), ordered: bool) {
        let Some((publisher, seq, sent_ns)) = parse(payload) else {
            return;
        };
        self.total += 1;
        if at_ns >= window.0 && at_ns < window.1 {
            self.messages += 1;
            self.bytes += payload.len() as u64;
            self.latencies_us
                .push((at_ns.saturating_sub(sent_ns) / 1000).min(u64::from(u32::MAX)) as u32);
        }
        if ordered {
            let p = publisher as usize;
            if self.next_seq.len() <= p {
                self.next_seq.resize(p + 1, 0);
            }
            let expected = self.next_seq[p];
            if seq < expected {
                self.duplicates += 1;
            } else {
                self.lost += seq - expected;
                self.next_seq[p] = seq + 1;
            }
        }
    }

    /// Messages still missing at the end, given how many each publisher sent.
    pub fn missing_tail(&self, sent_by: &[u64], publishers: impl Iterator<Item = u32>) -> u64 {
        publishers
            .map(|p| {
                let sent = sent_by.get(p as usize).copied().unwrap_or(0);
                let next = self.next_seq.get(p as usize).copied().unwrap_or(0);
                sent.saturating_sub(next)
            })
            .sum()
    }
}

/// Percentile (0..=100) of sorted samples.
pub fn percentile(sorted: &[u32], pct: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((pct / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// CPU time (clock ticks) and resident memory (KiB) of a process, from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    pub cpu_ticks: u64,
    pub rss_kib: u64,
}

pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(ProcSample {
        cpu_ticks: utime + stime,
        rss_kib,
    })
}

/// Clock ticks per second of /proc CPU times.
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_gaps_are_counted() {
        let p = payload(3, 7, 64);
        assert_eq!(p.len(), 64);
        let (publisher, seq, _) = parse(&p).expect("parse");
        assert_eq!((publisher, seq), (3, 7));
        let mut r = Received::default();
        for seq in [0, 1, 3, 3, 4] {
            r.record(&payload(0, seq, 32), 0, (0, 1), true);
        }
        assert_eq!((r.lost, r.duplicates, r.total), (1, 1, 5));
        assert_eq!(r.missing_tail(&[7], [0].into_iter()), 2);
    }

    #[test]
    fn telemetry_is_json_and_counters_are_summed() {
        let t = telemetry(7, 3);
        let v: serde_json::Value = serde_json::from_slice(&t).expect("JSON");
        // Only the timestamp besides the attributes: one ledger row per attribute.
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys.len(), 4, "{keys:?}");
        assert!(v["ts"].is_u64());
        assert_eq!(v["a2"], 22.7);
        let exposition = "# TYPE rows counter\nrows_total{tenant=\"a\"} 5\nrows_total{tenant=\"b\"} 7\nrows_total_other 100\n";
        assert_eq!(counter_total(exposition, "rows_total"), Some(12.0));
        assert_eq!(counter_total(exposition, "missing"), None);
    }

    #[test]
    fn percentiles_of_sorted_samples() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 51);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
