//! The broker wrapper: one NATS connection with its JetStream context, cheap to clone, plus the
//! topology (streams, consumers, buckets) the mesh runs on.

pub mod miners;
pub mod topology;

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv;
use tracing::{info, warn};

/// Errors a user can cause or fix around the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(
        "cannot reach NATS at {url}: {reason}; start a server (nats-server -js -c nats/dev.conf) \
         or pass the right --nats URL"
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "NATS at {url} has no JetStream: {reason}; start nats-server with -js (or a jetstream \
         block in its config)"
    )]
    NoJetStream { url: String, reason: String },
    #[error("{what} does not exist on the server: run `mesh-publisher init --nats URL` first")]
    Missing { what: String },
    #[error("{what}: {reason}")]
    Api { what: String, reason: String },
}

impl BrokerError {
    pub fn api(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        BrokerError::Api {
            what: what.into(),
            reason: e.to_string(),
        }
    }
}

/// A connected NATS client with JetStream. Clone freely: clones share one connection.
#[derive(Clone, Debug)]
pub struct Broker {
    client: async_nats::Client,
    js: jetstream::Context,
    url: String,
}

impl Broker {
    /// Connects to `url` (one server, or several of a cluster separated by commas), failing fast
    /// when nothing answers, and checks that JetStream is enabled. Once connected, the client
    /// reconnects by itself (to any of the servers) for as long as the process lives.
    pub async fn connect(url: &str, name: &str) -> Result<Self, BrokerError> {
        let event_url = url.to_string();
        let options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .event_callback(move |event| {
                let url = event_url.clone();
                async move {
                    match event {
                        async_nats::Event::Disconnected => warn!(%url, "disconnected from nats"),
                        async_nats::Event::Connected => info!(%url, "connected to nats"),
                        other => info!(%url, event = %other, "nats event"),
                    }
                }
            });
        // Several servers of a cluster may be given, comma-separated.
        let servers: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let client = options
            .connect(servers)
            .await
            .map_err(|e| BrokerError::Unreachable {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let js = jetstream::new(client.clone());
        js.query_account()
            .await
            .map_err(|e| BrokerError::NoJetStream {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Broker {
            client,
            js,
            url: url.to_string(),
        })
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn js(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens a key-value bucket that `init` created.
    pub async fn bucket(&self, name: &str) -> Result<kv::Store, BrokerError> {
        self.js
            .get_key_value(name)
            .await
            .map_err(|e| match e.kind() {
                jetstream::context::KeyValueErrorKind::GetBucket => BrokerError::Missing {
                    what: format!("key-value bucket {name}"),
                },
                _ => BrokerError::api(format!("open bucket {name}"), e),
            })
    }

    /// Every entry of a bucket whose value is JSON of `T`, with its key; entries that do not
    /// decode (another version's) are skipped.
    pub async fn json_entries<T: serde::de::DeserializeOwned>(
        &self,
        bucket: &str,
    ) -> Result<Vec<(String, T)>, BrokerError> {
        use futures::StreamExt;
        let store = self.bucket(bucket).await?;
        let mut keys = store
            .keys()
            .await
            .map_err(|e| BrokerError::api(format!("list {bucket}"), e))?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| BrokerError::api(format!("list {bucket}"), e))?;
            let value = store
                .get(&key)
                .await
                .map_err(|e| BrokerError::api(format!("read {bucket} {key}"), e))?;
            if let Some(value) = value.and_then(|v| serde_json::from_slice(&v).ok()) {
                out.push((key, value));
            }
        }
        Ok(out)
    }

    /// Opens a stream that `init` made.
    pub async fn stream(&self, name: &str) -> Result<jetstream::stream::Stream, BrokerError> {
        self.js.get_stream(name).await.map_err(|e| match e.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                BrokerError::Missing {
                    what: format!("stream {name}"),
                }
            }
            _ => BrokerError::api(format!("open stream {name}"), e),
        })
    }

    /// Publishes to a stream and waits for the server's ack, retrying with the same message id
    /// (so a retry is deduplicated) until it is stored or `attempts` run out.
    pub async fn publish_durable(
        &self,
        subject: String,
        message_id: &str,
        headers: Option<async_nats::HeaderMap>,
        payload: bytes::Bytes,
        attempts: u32,
    ) -> Result<jetstream::publish::PublishAck, BrokerError> {
        let mut delay = Duration::from_millis(200);
        let mut last = String::new();
        for attempt in 1..=attempts.max(1) {
            let mut headers = headers.clone().unwrap_or_default();
            headers.insert("Nats-Msg-Id", message_id);
            let sent = self
                .js
                .publish_with_headers(subject.clone(), headers, payload.clone())
                .await;
            match sent {
                Ok(ack) => match ack.await {
                    Ok(ack) => return Ok(ack),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            if attempt < attempts {
                warn!(%subject, attempt, error = %last, "publish not acknowledged; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
        Err(BrokerError::api(format!("publish to {subject}"), last))
    }
}
