//! Prometheus metrics: each daemon keeps one registry, served as OpenMetrics text at `/metrics`
//! with `/healthz` beside it. The registry and its encoding are the prometheus-client crate's
//! (the Prometheus project's own Rust client); the families live beside what they count
//! (`worker::metrics`, `publisher::metrics`, `autoscaler::metrics`).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::info::Info;
pub use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// What `/metrics` answers with (OpenMetrics 1.0 text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Histogram buckets for durations, in seconds: a 2KiB phase takes milliseconds, a 32GiB
/// PreCommit1 hours.
pub fn duration_buckets() -> impl Iterator<Item = f64> {
    [
        0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0,
    ]
    .into_iter()
}

/// A daemon's registry: every name under `mesh_`, `labels` on every series (a worker's id, a
/// publisher's miner), and `mesh_build_info`.
pub fn registry(labels: &[(&str, &str)]) -> Registry {
    let labels = labels
        .iter()
        .map(|(k, v)| (Cow::Owned(k.to_string()), Cow::Owned(v.to_string())));
    let mut registry = Registry::with_prefix_and_labels("mesh", labels);
    registry.register(
        "build",
        "The mesh release and the task message version this process reads",
        Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            (
                "message_version",
                crate::sector::message_version().to_string(),
            ),
        ]),
    );
    registry
}

/// What `/healthz` checks: `Err` says why the process cannot do its work now.
pub type Health = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Healthy while the NATS connection is up.
pub fn nats_health(client: async_nats::Client) -> Health {
    Arc::new(move || match client.connection_state() {
        async_nats::connection::State::Connected => Ok(()),
        state => Err(format!("not connected to NATS ({state})")),
    })
}

/// Binds `addr` (`flag` names where it was given, for the error), then serves `/metrics` and
/// `/healthz` (200 `ok`, or 503 with the reason) until `stop`.
pub async fn serve(
    addr: SocketAddr,
    flag: &str,
    registry: Registry,
    health: Health,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        format!("{flag} {addr}: cannot listen there ({e}); pick a free address or leave it out")
    })?;
    let registry = Arc::new(registry);
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut text = String::new();
                    match encode(&mut text, &registry) {
                        Ok(()) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
                        Err(e) => {
                            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
                        }
                    }
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let health = health.clone();
                async move {
                    match health() {
                        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                    }
                }
            }),
        );
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_info_names_the_release_and_the_message_version() {
        let mut text = String::new();
        encode(&mut text, &registry(&[("worker", "w1")])).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("mesh_build_info{"))
            .unwrap_or_else(|| panic!("no mesh_build_info in:\n{text}"));
        assert!(line.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))));
        let version = crate::sector::message_version();
        assert!(
            line.contains(&format!("message_version=\"{version}\"")),
            "{line}"
        );
        assert!(line.contains("worker=\"w1\""), "{line}");
        assert!(line.ends_with(" 1"), "{line}");
    }
}
