//! The autoscaler's Prometheus metrics, served as text at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Upper bounds of the drain-duration histogram, in seconds (a 32GiB PC1 runs ~3.5 h).
const DRAIN_BUCKETS: [f64; 10] = [
    1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0,
];

#[derive(Default)]
struct Inner {
    desired: BTreeMap<String, u32>,
    actual: BTreeMap<String, u32>,
    draining: BTreeMap<String, u32>,
    leader: BTreeMap<String, u32>,
    decisions: BTreeMap<(String, &'static str), u64>,
    drains: BTreeMap<String, (Vec<u64>, f64, u64)>,
    errors: BTreeMap<String, u64>,
}

#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
}

impl Metrics {
    pub fn sizes(&self, group: &str, desired: u32, actual: u32, draining: u32) {
        let mut m = self.inner.lock().expect("metrics lock");
        m.desired.insert(group.to_string(), desired);
        m.actual.insert(group.to_string(), actual);
        m.draining.insert(group.to_string(), draining);
    }

    /// Whether this autoscaler holds the group's lease (sizes it) or stands by.
    pub fn leader(&self, group: &str, leader: bool) {
        let mut m = self.inner.lock().expect("metrics lock");
        m.leader.insert(group.to_string(), leader as u32);
    }

    pub fn decision(&self, group: &str, reason: &'static str) {
        let mut m = self.inner.lock().expect("metrics lock");
        *m.decisions.entry((group.to_string(), reason)).or_default() += 1;
    }

    pub fn drained(&self, group: &str, seconds: f64) {
        let mut m = self.inner.lock().expect("metrics lock");
        let (buckets, sum, count) = m
            .drains
            .entry(group.to_string())
            .or_insert_with(|| (vec![0; DRAIN_BUCKETS.len()], 0.0, 0));
        for (i, bound) in DRAIN_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                buckets[i] += 1;
            }
        }
        *sum += seconds;
        *count += 1;
    }

    pub fn error(&self, group: &str) {
        let mut m = self.inner.lock().expect("metrics lock");
        *m.errors.entry(group.to_string()).or_default() += 1;
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let m = self.inner.lock().expect("metrics lock");
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, values: &BTreeMap<String, u32>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (group, v) in values {
                let _ = writeln!(out, "{name}{{group=\"{group}\"}} {v}");
            }
        };
        gauge(
            &mut out,
            "mesh_autoscaler_group_desired",
            "Instances the group should serve with, after the stabilisation windows.",
            &m.desired,
        );
        gauge(
            &mut out,
            "mesh_autoscaler_group_actual",
            "Instances serving now (live, not draining).",
            &m.actual,
        );
        gauge(
            &mut out,
            "mesh_autoscaler_group_draining",
            "Instances draining before removal.",
            &m.draining,
        );
        gauge(
            &mut out,
            "mesh_autoscaler_group_leader",
            "1 when this autoscaler holds the group's lease and sizes it, 0 when it stands by.",
            &m.leader,
        );
        let name = "mesh_autoscaler_decisions_total";
        let _ = writeln!(
            out,
            "# HELP {name} Evaluations by reason (scale_up, scale_down, drained, ...).\n# TYPE {name} counter"
        );
        for ((group, reason), v) in &m.decisions {
            let _ = writeln!(out, "{name}{{group=\"{group}\",reason=\"{reason}\"}} {v}");
        }
        let name = "mesh_autoscaler_drain_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From drain mark to removal, per removed instance.\n# TYPE {name} histogram"
        );
        for (group, (buckets, sum, count)) in &m.drains {
            for (bound, v) in DRAIN_BUCKETS.iter().zip(buckets) {
                let _ = writeln!(out, "{name}_bucket{{group=\"{group}\",le=\"{bound}\"}} {v}");
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{group=\"{group}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(out, "{name}_sum{{group=\"{group}\"}} {sum}");
            let _ = writeln!(out, "{name}_count{{group=\"{group}\"}} {count}");
        }
        let name = "mesh_autoscaler_provider_errors_total";
        let _ = writeln!(
            out,
            "# HELP {name} Failed provider or broker calls.\n# TYPE {name} counter"
        );
        for (group, v) in &m.errors {
            let _ = writeln!(out, "{name}{{group=\"{group}\"}} {v}");
        }
        out
    }

    /// Binds `addr` (an error names it), then serves `/metrics` until `stop`.
    pub async fn serve(
        self,
        addr: SocketAddr,
        stop: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, String> {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            format!("metrics = \"{addr}\": cannot listen there ({e}); pick a free address")
        })?;
        Ok(tokio::spawn(async move {
            loop {
                let (mut socket, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            warn!(error = %e, "metrics: accept failed");
                            continue;
                        }
                    },
                    () = stop.cancelled() => return,
                };
                let metrics = self.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 1024];
                    let n = socket.read(&mut request).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&request[..n]);
                    let (status, body) = if head.starts_with("GET /metrics") {
                        ("200 OK", metrics.render())
                    } else {
                        ("404 Not Found", "try /metrics\n".to_string())
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        }))
    }
}
