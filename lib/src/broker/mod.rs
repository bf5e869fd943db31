//! The broker wrapper: one NATS connection with its JetStream context, cheap to clone, plus the
//! topology (streams, consumers, buckets) the mesh runs on.

pub mod connect;
pub mod consumers;
pub mod deferred;
pub mod drain;
mod follow;
pub mod headers;
pub mod keys;
pub mod miners;
pub mod operator;
pub mod roles;
pub mod topology;
pub mod workers;

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv;
use backon::{ExponentialBuilder, Retryable};
use tracing::{error, info, warn};

pub use connect::{NatsConfig, Secret};

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
    #[error(
        "NATS at {url} refused the connection ({reason}): pass the credentials the server's \
         configuration gives this role: --nats-user and --nats-password (MESH_NATS_USER, \
         MESH_NATS_PASSWORD), --nats-token, --nats-nkey or --nats-creds"
    )]
    Refused { url: String, reason: String },
    #[error(
        "TLS with NATS at {url} failed ({reason}): pass the CA that signed the server's \
         certificate with --nats-ca (MESH_NATS_CA), a client certificate with --nats-cert and \
         --nats-key if the server verifies clients, and --nats-tls-first if it wants the TLS \
         handshake first"
    )]
    Tls { url: String, reason: String },
    #[error("{0}")]
    BadConfig(String),
    #[error("{what} does not exist on the server: run `mesh-publisher init --nats URL` first")]
    Missing { what: String },
    #[error("{what}: {reason}")]
    Api { what: String, reason: String },
}

impl BrokerError {
    /// A failed JetStream call; when the server refused this user something lately (the likely
    /// cause of a timeout), the reason says so.
    pub fn api(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        let mut reason = e.to_string();
        if let Some(refusal) = connect::recent_refusal() {
            reason = format!("{reason}; {refusal}");
        }
        BrokerError::Api {
            what: what.into(),
            reason,
        }
    }
}

/// A connected NATS client with JetStream. Clone freely: clones share one connection.
#[derive(Clone, Debug)]
pub struct Broker {
    client: async_nats::Client,
    js: jetstream::Context,
    url: String,
    /// The last permission violation the server reported on this connection.
    refused: tokio::sync::watch::Receiver<Option<String>>,
}

impl Broker {
    /// Connects anonymously to `url` (one server, or several of a cluster separated by commas).
    pub async fn connect(url: &str, name: &str) -> Result<Self, BrokerError> {
        Self::connect_with(&NatsConfig::new(url), name).await
    }

    /// Connects as `config` says, failing fast when nothing answers or the server refuses the
    /// credentials, and checks that JetStream is enabled. Once connected, the client reconnects
    /// by itself (to any of the servers) for as long as the process lives.
    pub async fn connect_with(config: &NatsConfig, name: &str) -> Result<Self, BrokerError> {
        // What logs and errors show: no password written into the URL.
        let shown = crate::redact::urls(&config.url);
        let url = shown.as_str();
        let event_url = url.to_string();
        let (refused_tx, refused) = tokio::sync::watch::channel(None);
        let refused_tx = std::sync::Arc::new(refused_tx);
        let options = config
            .options()
            .await
            .map_err(BrokerError::BadConfig)?
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .event_callback(move |event| {
                let url = event_url.clone();
                let refused_tx = refused_tx.clone();
                async move {
                    match event {
                        async_nats::Event::Disconnected => warn!(%url, "disconnected from nats"),
                        async_nats::Event::Connected => info!(%url, "connected to nats"),
                        async_nats::Event::ServerError(e) => {
                            let message = e.to_string();
                            match connect::note_server_error(&message) {
                                Some(explained) => {
                                    error!(%url, "{explained}");
                                    refused_tx.send_replace(Some(message));
                                }
                                None => warn!(%url, error = %message, "nats server error"),
                            }
                        }
                        other => info!(%url, event = %other, "nats event"),
                    }
                }
            });
        // Several servers of a cluster may be given, comma-separated.
        let servers: Vec<&str> = config
            .url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let client = options.connect(servers).await.map_err(|e| {
            use async_nats::ConnectErrorKind as Kind;
            let (url, reason) = (url.to_string(), e.to_string());
            match e.kind() {
                Kind::AuthorizationViolation | Kind::Authentication => {
                    BrokerError::Refused { url, reason }
                }
                Kind::Tls => BrokerError::Tls { url, reason },
                _ if ["tls", "certificate", "handshake"]
                    .iter()
                    .any(|w| reason.to_ascii_lowercase().contains(w)) =>
                {
                    BrokerError::Tls { url, reason }
                }
                _ => BrokerError::Unreachable { url, reason },
            }
        })?;
        let js = jetstream::new(client.clone());
        js.query_account().await.map_err(|e| {
            if connect::recent_refusal().is_some() {
                BrokerError::api("read the JetStream account", e)
            } else {
                BrokerError::NoJetStream {
                    url: url.to_string(),
                    reason: e.to_string(),
                }
            }
        })?;
        Ok(Broker {
            client,
            js,
            url: url.to_string(),
            refused,
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

    /// The server's permission violations on this connection, as they come (the latest is
    /// kept): a refused publish or subscription is not answered otherwise, and a refused
    /// request only times out.
    pub fn refusals(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.refused.clone()
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

    /// Opens a bucket's keys one at a time, without the stream info `bucket` reads (which a
    /// role allowed only some keys is not given).
    pub async fn keys(&self, name: &str) -> Result<keys::Keys, BrokerError> {
        keys::Keys::open(&self.js, name).await.map_err(|e| match e {
            keys::KeyError::Failed(e) => e,
            e => BrokerError::api(format!("open bucket {name}"), e),
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
            if let Some(value) = value.and_then(|v| crate::model::decode_json(&v).ok()) {
                out.push((key, value));
            }
        }
        Ok(out)
    }

    /// The live keys of a bucket under `filter` (`f01000.>`), read through a consumer filtered
    /// on them: a role allowed only some keys of a bucket can list those (the whole-bucket
    /// `keys()` needs rights on every key).
    pub async fn keys_under(&self, bucket: &str, filter: &str) -> Result<Vec<String>, BrokerError> {
        use futures::StreamExt;
        let what = || format!("list {bucket} {filter}");
        // No stream info: it would list every key of the bucket.
        let stream = self
            .js
            .get_stream_no_info(format!("KV_{bucket}"))
            .await
            .map_err(|e| BrokerError::api(what(), e))?;
        let prefix = format!("$KV.{bucket}.");
        let consumer = stream
            .create_consumer(jetstream::consumer::push::OrderedConfig {
                name: Some(format!("keys-{:016x}", rand::random::<u64>())),
                deliver_subject: self.client.new_inbox(),
                filter_subject: format!("{prefix}{filter}"),
                headers_only: true,
                deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(|e| match e.kind() {
                jetstream::stream::ConsumerErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    BrokerError::Missing {
                        what: format!("key-value bucket {bucket}"),
                    }
                }
                _ => BrokerError::api(what(), e),
            })?;
        let mut keys = Vec::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(keys);
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| BrokerError::api(what(), e))?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| BrokerError::api(what(), e))?;
            let info = message.info().map_err(|e| BrokerError::api(what(), e))?;
            let pending = info.pending;
            let removed = message
                .headers
                .as_ref()
                .is_some_and(|h| keys::operation(h) != kv::Operation::Put);
            if !removed && let Some(key) = message.subject.strip_prefix(prefix.as_str()) {
                keys.push(key.to_string());
            }
            if pending == 0 {
                break;
            }
        }
        Ok(keys)
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
        let publish = || async {
            let mut headers = headers.clone().unwrap_or_default();
            headers.insert("Nats-Msg-Id", message_id);
            let ack = self
                .js
                .publish_with_headers(subject.clone(), headers, payload.clone())
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map_err(|e| e.to_string())
        };
        let mut attempt = 0;
        publish
            .retry(
                ExponentialBuilder::new()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(5))
                    .with_max_times(attempts.max(1) as usize - 1),
            )
            .notify(|last, _| {
                attempt += 1;
                warn!(%subject, attempt, error = %last, "publish not acknowledged; retrying");
            })
            .await
            .map_err(|last| BrokerError::api(format!("publish to {subject}"), last))
    }
}
