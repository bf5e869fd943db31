//! A key-value bucket opened without reading its stream's info. A role allowed only some keys of
//! a bucket (a miner, its own sector keys) uses it: `STREAM.INFO` with a subjects filter lists
//! every key of the bucket, so such a role is not given it, and `async_nats`' bucket handle
//! cannot be opened without it. Gets are direct gets of one key's subject and writes are
//! publishes to it, which the role's permissions name key by key.

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

/// Why a key could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key {0} exists already")]
    Exists(String),
    #[error("key {key} changed since revision {revision}")]
    Changed { key: String, revision: u64 },
    #[error("{what}: no answer from the server in time")]
    TimedOut { what: String },
    #[error(transparent)]
    Failed(#[from] super::BrokerError),
}

impl KeyError {
    /// Whether the server did not answer (the write may have happened).
    pub fn timed_out(&self) -> bool {
        matches!(self, KeyError::TimedOut { .. })
    }

    fn failed(what: String, e: impl std::fmt::Display) -> Self {
        KeyError::Failed(super::BrokerError::api(what, e))
    }
}

/// What a bucket message's headers say was done to its key: put, delete or purge.
pub(super) fn operation(headers: &async_nats::HeaderMap) -> kv::Operation {
    match headers.get("KV-Operation").map(|v| v.as_str()) {
        Some("DEL") => kv::Operation::Delete,
        Some("PURGE") => kv::Operation::Purge,
        _ => kv::Operation::Put,
    }
}

/// Keys of one bucket, read and written one at a time.
#[derive(Clone, Debug)]
pub struct Keys {
    bucket: String,
    stream: jetstream::stream::Stream<()>,
    js: jetstream::Context,
}

impl Keys {
    pub(super) async fn open(js: &jetstream::Context, bucket: &str) -> Result<Self, KeyError> {
        let stream = js
            .get_stream_no_info(format!("KV_{bucket}"))
            .await
            .map_err(|e| KeyError::failed(format!("open bucket {bucket}"), e))?;
        Ok(Keys {
            bucket: bucket.to_string(),
            stream,
            js: js.clone(),
        })
    }

    fn subject(&self, key: &str) -> String {
        format!("$KV.{}.{key}", self.bucket)
    }

    /// The key's latest entry (a put, or the delete or purge marker that removed it), or `None`
    /// when it never had one.
    pub async fn entry(&self, key: &str) -> Result<Option<kv::Entry>, KeyError> {
        use jetstream::stream::DirectGetErrorKind as Kind;
        let what = || format!("read {} {key}", self.bucket);
        let message = match self
            .stream
            .direct_get_last_for_subject(self.subject(key))
            .await
        {
            Ok(message) => message,
            Err(e) if e.kind() == Kind::NotFound => return Ok(None),
            Err(e) if e.kind() == Kind::TimedOut => {
                return Err(KeyError::TimedOut { what: what() });
            }
            Err(e) => return Err(KeyError::failed(what(), e)),
        };
        let operation = operation(&message.headers);
        Ok(Some(kv::Entry {
            bucket: self.bucket.clone(),
            key: key.to_string(),
            value: message.payload,
            revision: message.sequence,
            delta: 0,
            created: message.time,
            operation,
            seen_current: true,
        }))
    }

    /// The key's value, `None` when it has none (never written, deleted or purged).
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, KeyError> {
        Ok(self
            .entry(key)
            .await?
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| e.value))
    }

    /// Writes `value` if the key's latest revision is still `revision` (0: the key has none).
    pub async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, KeyError> {
        self.write(key, value, Some(revision), None).await
    }

    /// Writes `value`, whatever the key held.
    pub async fn put(&self, key: &str, value: Bytes) -> Result<u64, KeyError> {
        self.write(key, value, None, None).await
    }

    /// Marks the key deleted if its latest revision is still `revision`.
    pub async fn delete(&self, key: &str, revision: u64) -> Result<u64, KeyError> {
        self.write(key, Bytes::new(), Some(revision), Some("DEL"))
            .await
    }

    /// Removes the key and its history (a purge marker replaces them).
    pub async fn purge(&self, key: &str) -> Result<u64, KeyError> {
        self.write(key, Bytes::new(), None, Some("PURGE")).await
    }

    /// Publishes to the key's subject, only over `revision` when one is given.
    async fn write(
        &self,
        key: &str,
        value: Bytes,
        revision: Option<u64>,
        operation: Option<&str>,
    ) -> Result<u64, KeyError> {
        use jetstream::context::PublishErrorKind as Kind;
        let what = || format!("write {} {key}", self.bucket);
        let mut headers = async_nats::HeaderMap::new();
        if let Some(revision) = revision {
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                revision.to_string().as_str(),
            );
        }
        if let Some(operation) = operation {
            headers.insert("KV-Operation", operation);
            if operation == "PURGE" {
                headers.insert("Nats-Rollup", "sub");
            }
        }
        let ack = self
            .js
            .publish_with_headers(self.subject(key), headers, value)
            .await
            .map_err(|e| KeyError::failed(what(), e))?
            .await;
        match ack {
            Ok(ack) => Ok(ack.sequence),
            Err(e) if e.kind() == Kind::WrongLastSequence => Err(KeyError::Changed {
                key: key.to_string(),
                revision: revision.unwrap_or_default(),
            }),
            Err(e) if e.kind() == Kind::TimedOut => Err(KeyError::TimedOut { what: what() }),
            Err(e) => Err(KeyError::failed(what(), e)),
        }
    }

    /// Writes `value` if the key has none (never written, or deleted or purged since).
    pub async fn create(&self, key: &str, value: Bytes) -> Result<u64, KeyError> {
        let refused = match self.update(key, value.clone(), 0).await {
            Ok(revision) => return Ok(revision),
            Err(e @ KeyError::Changed { .. }) => e,
            Err(e) => return Err(e),
        };
        match self.entry(key).await? {
            Some(entry) if entry.operation != kv::Operation::Put => self
                .update(key, value, entry.revision)
                .await
                .map_err(|e| match e {
                    KeyError::Changed { key, .. } => KeyError::Exists(key),
                    e => e,
                }),
            Some(_) => Err(KeyError::Exists(key.to_string())),
            None => Err(refused),
        }
    }
}
