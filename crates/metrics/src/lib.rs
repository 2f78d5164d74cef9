//! Metrics in the Prometheus text format, with no dependency beyond tokio: labelled counters,
//! gauges and latency histograms registered by name, and a tiny HTTP/1.1 endpoint that answers
//! `GET /metrics` (anything else gets 404). Labels are fixed strings chosen by our code (rule
//! names, node ids, outcomes), never request data, so the series stay bounded and no secret can
//! reach them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Latency buckets in seconds: 1 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

struct Family {
    kind: Kind,
    help: &'static str,
    values: BTreeMap<Vec<(&'static str, String)>, f64>,
    histograms: BTreeMap<Vec<(&'static str, String)>, Histogram>,
}

/// A set of metric families. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Metrics {
    families: Arc<Mutex<BTreeMap<&'static str, Family>>>,
}

type Labels<'a> = &'a [(&'static str, &'a str)];

fn owned(labels: Labels<'_>) -> Vec<(&'static str, String)> {
    labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_text(labels: &[(&'static str, String)], extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(
        &self,
        name: &'static str,
        kind: Kind,
        help: &'static str,
        f: impl FnOnce(&mut Family) -> R,
    ) -> R {
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let family = families.entry(name).or_insert_with(|| Family {
            kind,
            help,
            values: BTreeMap::new(),
            histograms: BTreeMap::new(),
        });
        f(family)
    }

    /// Declares a family so that it is exported (at zero) before anything happens.
    pub fn describe_counter(&self, name: &'static str, help: &'static str) {
        self.with(name, Kind::Counter, help, |_| ());
    }

    pub fn inc(&self, name: &'static str, help: &'static str, labels: Labels<'_>) {
        self.add(name, help, labels, 1.0);
    }

    pub fn add(&self, name: &'static str, help: &'static str, labels: Labels<'_>, by: f64) {
        self.with(name, Kind::Counter, help, |f| {
            *f.values.entry(owned(labels)).or_default() += by;
        });
    }

    pub fn set(&self, name: &'static str, help: &'static str, labels: Labels<'_>, value: f64) {
        self.with(name, Kind::Gauge, help, |f| {
            f.values.insert(owned(labels), value);
        });
    }

    pub fn observe(
        &self,
        name: &'static str,
        help: &'static str,
        labels: Labels<'_>,
        value: Duration,
    ) {
        let seconds = value.as_secs_f64();
        self.with(name, Kind::Histogram, help, |f| {
            let h = f
                .histograms
                .entry(owned(labels))
                .or_insert_with(|| Histogram {
                    counts: vec![0; LATENCY_BUCKETS.len()],
                    ..Default::default()
                });
            for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        });
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for (name, family) in families.iter() {
            let kind = match family.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", family.help);
            for (labels, value) in &family.values {
                let _ = writeln!(out, "{name}{} {value}", label_text(labels, None));
            }
            for (labels, h) in &family.histograms {
                for (bound, count) in LATENCY_BUCKETS.iter().zip(&h.counts) {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {count}",
                        label_text(labels, Some(("le", bound.to_string())))
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    label_text(labels, Some(("le", "+Inf".into()))),
                    h.count
                );
                let _ = writeln!(out, "{name}_sum{} {}", label_text(labels, None), h.sum);
                let _ = writeln!(out, "{name}_count{} {}", label_text(labels, None), h.count);
            }
        }
        out
    }
}

/// What runs before each scrape (to update gauges that are cheaper to read than to track).
pub type Refresh = Arc<dyn Fn(&Metrics) + Send + Sync>;

/// Serves `GET /metrics` on `listener` until the task is dropped. `refresh` runs before each
/// scrape (to update gauges that are cheaper to read than to track).
pub async fn serve(listener: tokio::net::TcpListener, metrics: Metrics, refresh: Refresh) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let refresh = refresh.clone();
        tokio::spawn(async move {
            // Read the request head, bounded in size and time.
            let mut buffer = vec![0u8; 4096];
            let mut read = 0;
            let head = tokio::time::timeout(Duration::from_secs(5), async {
                while read < buffer.len() {
                    let n = stream.read(&mut buffer[read..]).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    read += n;
                    if buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                        return Some(());
                    }
                }
                None
            })
            .await;
            if !matches!(head, Ok(Some(()))) {
                return;
            }
            let line = String::from_utf8_lossy(&buffer[..read]);
            let (status, body) =
                if line.starts_with("GET /metrics ") || line.starts_with("GET /metrics?") {
                    refresh(&metrics);
                    ("200 OK", metrics.render())
                } else {
                    (
                        "404 Not Found",
                        "only GET /metrics is served here\n".to_string(),
                    )
                };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Binds `address` and serves metrics in the background; returns the bound address.
pub async fn spawn(
    address: SocketAddr,
    metrics: Metrics,
    refresh: Refresh,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener, metrics, refresh));
    tracing::info!(%bound, "metrics served on /metrics");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_every_kind() {
        let m = Metrics::new();
        m.inc("x_total", "things", &[("rule", "max_value_per_tx")]);
        m.inc("x_total", "things", &[("rule", "max_value_per_tx")]);
        m.set("up", "is up", &[("node", "1")], 1.0);
        m.observe("lat_seconds", "latency", &[], Duration::from_millis(12));
        m.describe_counter("none_total", "nothing yet");
        let text = m.render();
        assert!(
            text.contains("x_total{rule=\"max_value_per_tx\"} 2"),
            "{text}"
        );
        assert!(text.contains("up{node=\"1\"} 1"), "{text}");
        assert!(
            text.contains("lat_seconds_bucket{le=\"0.015\"} 1"),
            "{text}"
        );
        assert!(text.contains("lat_seconds_bucket{le=\"0.01\"} 0"), "{text}");
        assert!(text.contains("lat_seconds_count 1"), "{text}");
        assert!(text.contains("# TYPE none_total counter"), "{text}");
    }
}
