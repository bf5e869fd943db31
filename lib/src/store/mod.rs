//! The object store that carries sector data between workers: chosen by URL (`file://` by
//! default, `s3://`, `gs://`, `az://`), streamed both ways in large blocks (`transfer.rs`), in
//! parts sized to each file ([`parts`]), every download checked against the sha256 its producer
//! recorded.

mod aws_credentials;
pub mod parts;
mod transfer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, aws, azure, gcp};
use sha2::{Digest, Sha256};

use crate::model::ObjectRef;
use aws_credentials::{ChainCredentials, NoCredentials};

/// Where the store is and how to reach it.
#[derive(Clone, Default)]
pub struct StoreConfig {
    /// `file:///abs/dir` (or a plain directory path), `s3://bucket[/prefix]`, `gs://…`, `az://…`.
    pub url: String,
    /// Builder options of the `object_store` crate, e.g. `aws_endpoint`, `aws_region`,
    /// `aws_access_key_id`, `allow_http`. Unknown keys are refused.
    pub options: Vec<(String, String)>,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options: Vec<String> = self
            .options
            .iter()
            .map(|(k, v)| {
                if is_secret(k) {
                    format!("{k}=***")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        f.debug_struct("StoreConfig")
            .field("url", &self.url)
            .field("options", &options)
            .finish()
    }
}

fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["secret", "token", "password", "key"]
        .iter()
        .any(|s| key.contains(s) && !key.ends_with("key_id"))
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bad store URL '{url}': {reason}")]
    BadUrl { url: String, reason: String },
    #[error("store {store}: object {key} does not exist")]
    NotFound { store: String, key: String },
    #[error(
        "object {key} is corrupt: expected {expected_size} bytes with sha256 {expected}, \
         got {got_size} bytes with sha256 {got}"
    )]
    Corrupt {
        key: String,
        expected: String,
        got: String,
        expected_size: u64,
        got_size: u64,
    },
    #[error("store {store}: {action} {key}: {reason}")]
    Unavailable {
        store: String,
        action: &'static str,
        key: String,
        reason: String,
    },
    #[error("local file {path}: {reason}")]
    Local { path: PathBuf, reason: String },
    #[error(
        "local file {path} is {} ({size} bytes), more than the 5 TiB a store takes in one \
         object (S3's and GCS's limit, held on every store): split it into files of at most \
         5 TiB",
        crate::units::human_bytes(*size)
    )]
    TooLarge { path: PathBuf, size: u64 },
}

impl StoreError {
    /// Whether retrying cannot help: the object is missing or not what its producer wrote.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            StoreError::BadUrl { .. }
                | StoreError::NotFound { .. }
                | StoreError::Corrupt { .. }
                | StoreError::TooLarge { .. }
        )
    }
}

fn local(path: &Path, e: impl fmt::Display) -> StoreError {
    StoreError::Local {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// A handle on the object store. Clone freely.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    name: String,
    /// Where the credentials come from, for the error when the store refuses them.
    credentials: &'static str,
    /// The file store, whose files uploads and downloads copy directly.
    local: Option<Arc<LocalFileSystem>>,
}

impl Store {
    pub fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let raw = config.url.trim();
        let bad = |reason: String| StoreError::BadUrl {
            url: raw.to_string(),
            reason,
        };
        if raw.is_empty() {
            return Err(bad(
                "it is empty; pass --store file:///some/dir or s3://bucket".into(),
            ));
        }
        let url = if raw.starts_with('/') || raw.starts_with('.') {
            let abs = std::path::absolute(raw).map_err(|e| bad(e.to_string()))?;
            url::Url::from_directory_path(&abs)
                .map_err(|()| bad("not an absolute directory path".into()))?
        } else {
            url::Url::parse(raw).map_err(|e| {
                bad(format!(
                    "{e}; expected file:///dir, s3://bucket, gs://bucket or az://container"
                ))
            })?
        };
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(30),
            ..RetryConfig::default()
        };
        let unknown = |k: &str| {
            let (keys, example) = match url.scheme() {
                "gs" => ("GoogleConfigKey", "google_service_account"),
                "s3" | "s3a" => ("AmazonS3ConfigKey", "aws_session_token"),
                _ => ("AzureConfigKey", "azure_storage_account_name"),
            };
            bad(format!(
                "unknown store option '{k}' for {}: use a key that object_store's {keys} \
                 accepts, e.g. {example}",
                url.scheme()
            ))
        };
        let mut credentials = "the configured credentials";
        let mut local = None;
        let (inner, prefix): (Arc<dyn ObjectStore>, String) = match url.scheme() {
            "file" => {
                if let Some((k, _)) = config.options.first() {
                    return Err(bad(format!(
                        "a file store takes no options, got '{k}': drop --store-option"
                    )));
                }
                let dir = url
                    .to_file_path()
                    .map_err(|()| bad("not a local path".into()))?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| bad(format!("create directory {}: {e}", dir.display())))?;
                let fs = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| bad(e.to_string()))?
                    .with_automatic_cleanup(true);
                let fs = Arc::new(fs);
                local = Some(fs.clone());
                (fs, String::new())
            }
            "s3" | "s3a" => {
                use aws::AmazonS3ConfigKey as Key;
                let mut b = aws::AmazonS3Builder::new()
                    .with_url(url.as_str())
                    .with_retry(retry);
                let mut keys = Vec::new();
                for (k, v) in &config.options {
                    let key: Key = k.parse().map_err(|_| unknown(k))?;
                    keys.push(key);
                    b = b.with_config(key, v);
                }
                let given = |key: Key| keys.contains(&key);
                match (given(Key::AccessKeyId), given(Key::SecretAccessKey)) {
                    (true, false) => {
                        return Err(bad("an access key id without its secret: add \
                                        --s3-secret-access-key (or AWS_SECRET_ACCESS_KEY)"
                            .into()));
                    }
                    (false, true) => {
                        return Err(bad("a secret access key without its key id: add \
                                        --s3-access-key-id (or AWS_ACCESS_KEY_ID)"
                            .into()));
                    }
                    _ => {}
                }
                let region = match b.get_config_value(&Key::Region) {
                    Some(region) => region,
                    None => match aws_credentials::configured_region() {
                        Some(region) => {
                            tracing::info!(%region, "s3 region from the AWS environment or profile");
                            b = b.with_region(&region);
                            region
                        }
                        None => "us-east-1".to_string(),
                    },
                };
                // Keys, or another credential source chosen by store options, are used as given;
                // otherwise the standard AWS chain provides them.
                let chosen = [
                    Key::WebIdentityTokenFile,
                    Key::ContainerCredentialsRelativeUri,
                    Key::ContainerCredentialsFullUri,
                ];
                credentials = if given(Key::AccessKeyId) {
                    "the keys given (--s3-access-key-id, AWS_ACCESS_KEY_ID or store options)"
                } else if chosen.into_iter().any(given) {
                    "the credentials the store options name"
                } else {
                    b = b.with_credentials(Arc::new(ChainCredentials::new(region)));
                    "the credentials of the AWS chain (environment, AWS_PROFILE, web identity, \
                     ECS or instance role)"
                };
                let s3 = b.build().map_err(|e| bad(e.to_string()))?;
                (Arc::new(s3), url.path().trim_matches('/').to_string())
            }
            "gs" => {
                let mut b = gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry);
                for (k, v) in &config.options {
                    let key: gcp::GoogleConfigKey = k.parse().map_err(|_| unknown(k))?;
                    b = b.with_config(key, v);
                }
                let gs = b.build().map_err(|e| bad(e.to_string()))?;
                (Arc::new(gs), url.path().trim_matches('/').to_string())
            }
            "az" | "azure" | "abfs" | "abfss" => {
                let mut b = azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry);
                for (k, v) in &config.options {
                    let key: azure::AzureConfigKey = k.parse().map_err(|_| unknown(k))?;
                    b = b.with_config(key, v);
                }
                let az = b.build().map_err(|e| bad(e.to_string()))?;
                (Arc::new(az), url.path().trim_matches('/').to_string())
            }
            other => {
                return Err(bad(format!(
                    "unsupported scheme '{other}': use file://, s3://, gs:// or az://"
                )));
            }
        };
        Ok(Store {
            inner,
            prefix: ObjectPath::from(prefix),
            name: crate::redact::urls(url.as_str()),
            credentials,
            local,
        })
    }

    /// The store as logs may show it (no credentials).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn path(&self, key: &str) -> ObjectPath {
        let mut path = self.prefix.clone();
        for part in key.split('/').filter(|p| !p.is_empty()) {
            path = path.join(part);
        }
        path
    }

    fn key_of(&self, path: &ObjectPath) -> String {
        let full = path.as_ref();
        let prefix = self.prefix.as_ref();
        if prefix.is_empty() {
            full.to_string()
        } else {
            full.strip_prefix(prefix)
                .map(|s| s.trim_start_matches('/').to_string())
                .unwrap_or_else(|| full.to_string())
        }
    }

    fn unavailable(&self, action: &'static str, key: &str, e: object_store::Error) -> StoreError {
        let reason = match e {
            object_store::Error::NotFound { .. } => {
                return StoreError::NotFound {
                    store: self.name.clone(),
                    key: key.to_string(),
                };
            }
            object_store::Error::Generic { source, .. } if source.is::<NoCredentials>() => {
                source.to_string()
            }
            e @ (object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }) => format!(
                "{e}; the store refused {}: check them, and that they may use this bucket and \
                 prefix",
                self.credentials
            ),
            other => other.to_string(),
        };
        StoreError::Unavailable {
            store: self.name.clone(),
            action,
            key: key.to_string(),
            reason,
        }
    }

    /// Checks that the store answers (a missing probe object is a fine answer).
    pub async fn check(&self) -> Result<(), StoreError> {
        match self.inner.head(&self.path(".mesh-probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.unavailable("reach", ".mesh-probe", e)),
        }
    }

    /// Checks that the store answers under `prefix` (e.g. a miner's `f01000/`) by listing it: a
    /// principal that a bucket policy fences to that prefix may read nothing above it, not even
    /// the probe [`Store::check`] asks for.
    pub async fn check_under(&self, prefix: &str) -> Result<(), StoreError> {
        match self.inner.list(Some(&self.path(prefix))).next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(self.unavailable("list", prefix, e)),
        }
    }

    /// Downloads `object` to `dest`, streaming, and checks its size and sha256. A mismatch is
    /// tried once more (a transfer may break), then reported as [`StoreError::Corrupt`].
    pub async fn get_object(&self, object: &ObjectRef, dest: &Path) -> Result<(), StoreError> {
        let mut last = None;
        for _ in 0..2 {
            let (size, sha) = self.get_file(&object.key, dest).await?;
            if size == object.size && sha == object.sha256 {
                return Ok(());
            }
            last = Some(StoreError::Corrupt {
                key: object.key.clone(),
                expected: hex::encode(object.sha256),
                got: hex::encode(sha),
                expected_size: object.size,
                got_size: size,
            });
        }
        let _ = tokio::fs::remove_file(dest).await;
        Err(last.expect("the loop ran"))
    }

    pub async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.inner
            .put(&self.path(key), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.unavailable("upload", key, e))
    }

    pub async fn get_bytes(&self, key: &str) -> Result<bytes::Bytes, StoreError> {
        let result = self
            .inner
            .get(&self.path(key))
            .await
            .map_err(|e| self.unavailable("download", key, e))?;
        result
            .bytes()
            .await
            .map_err(|e| self.unavailable("download", key, e))
    }

    /// The object `key` as a stream of chunks, with its size, for serving it on without a
    /// local copy (lotus downloads a sector's files from the publisher).
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> Result<
        (
            u64,
            futures::stream::BoxStream<'static, Result<bytes::Bytes, StoreError>>,
        ),
        StoreError,
    > {
        use futures::StreamExt;
        let result = self
            .inner
            .get(&self.path(key))
            .await
            .map_err(|e| self.unavailable("download", key, e))?;
        let size = result.meta.size;
        let name = self.name.clone();
        let key = key.to_string();
        let stream = result
            .into_stream()
            .map(move |chunk| {
                chunk.map_err(|e| StoreError::Unavailable {
                    store: name.clone(),
                    action: "download",
                    key: key.clone(),
                    reason: e.to_string(),
                })
            })
            .boxed();
        Ok((size, stream))
    }

    /// Keys (relative to the store's prefix) and sizes under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self
            .list_objects(prefix)
            .await?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect())
    }

    /// The objects under `prefix`, in key order, with their sizes and modification times.
    pub async fn list_objects(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        let path = self.path(prefix);
        let mut stream = self.inner.list(Some(&path));
        let mut out = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| self.unavailable("list", prefix, e))?;
            out.push(Listed {
                key: self.key_of(&meta.location),
                size: meta.size,
                modified: std::time::SystemTime::from(meta.last_modified),
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.inner.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.unavailable("delete", key, e)),
        }
    }
}

/// An object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Relative to the store's prefix.
    pub key: String,
    pub size: u64,
    pub modified: std::time::SystemTime,
}

/// The sha256 of a local file, read as a stream. It blocks: call it from `spawn_blocking`.
pub fn sha256_file(path: &Path) -> Result<[u8; 32], StoreError> {
    let mut file = std::fs::File::open(path).map_err(|e| local(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| local(path, e))?;
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::transfer::{BLOCK, SINGLE_PUT_LIMIT};
    use super::*;

    #[tokio::test]
    async fn files_round_trip_and_corruption_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig {
            url: dir.path().join("store").display().to_string(),
            options: vec![],
        })
        .unwrap();
        store.check().await.unwrap();
        // Empty, one request, a few parts, more than one block.
        let lens = [0, 10, SINGLE_PUT_LIMIT as usize + 12345, 2 * BLOCK + 5];
        for len in lens {
            let src = dir.path().join(format!("src-{len}"));
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            std::fs::write(&src, &data).unwrap();
            let key = format!("f01000/1/ap-x/file-{len}");
            let obj = store.put_file("unsealed", &key, &src).await.unwrap();
            assert_eq!(obj.size, len as u64);
            assert_eq!(obj.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
            let dest = dir.path().join("out").join(format!("d-{len}"));
            store.get_object(&obj, &dest).await.unwrap();
            assert_eq!(std::fs::read(&dest).unwrap(), data);
        }
        let listed = store.list("f01000/1/").await.unwrap();
        assert_eq!(listed.len(), lens.len());
        assert!(listed[0].0.starts_with("f01000/1/ap-x/"), "{listed:?}");

        // Overwrite an object behind the mesh's back: the download refuses it.
        let src = dir.path().join("src-10");
        let obj = store
            .put_file("unsealed", "f01000/1/ap-x/file-10", &src)
            .await
            .unwrap();
        store
            .put_bytes(&obj.key, b"tampered!!".to_vec())
            .await
            .unwrap();
        let err = store
            .get_object(&obj, &dir.path().join("bad"))
            .await
            .unwrap_err();
        assert!(err.is_permanent());
        assert!(err.to_string().contains("is corrupt"), "{err}");

        let err = store
            .get_object(
                &ObjectRef {
                    key: "f01000/1/nope".into(),
                    ..obj.clone()
                },
                &dir.path().join("missing"),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        store.delete(&obj.key).await.unwrap();
        store.delete(&obj.key).await.unwrap();
    }

    #[test]
    fn bad_urls_and_options_are_explained() {
        for (url, needle) in [
            ("", "empty"),
            ("ftp://x", "unsupported scheme 'ftp'"),
            ("not a url", "expected file:///dir"),
        ] {
            let err = Store::open(&StoreConfig {
                url: url.into(),
                options: vec![],
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
        let err = Store::open(&StoreConfig {
            url: "s3://bucket".into(),
            options: vec![("aws_endpoit".into(), "http://x".into())],
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown store option 'aws_endpoit'"), "{err}");
        for (key, needle) in [
            ("aws_access_key_id", "add --s3-secret-access-key"),
            ("aws_secret_access_key", "add --s3-access-key-id"),
        ] {
            let err = Store::open(&StoreConfig {
                url: "s3://bucket".into(),
                options: vec![(key.into(), "x".into())],
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains(needle), "{key}: {err}");
        }
    }

    /// The AWS chain is asked only on the first request; opening needs neither a runtime nor
    /// the network (a region lookup reads only the environment and profile files).
    #[test]
    fn an_s3_store_without_keys_opens_anywhere() {
        let open = || {
            Store::open(&StoreConfig {
                url: "s3://bucket/prefix".into(),
                options: vec![],
            })
            .unwrap()
        };
        assert!(open().credentials.contains("AWS chain"));
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async { open() });
    }

    #[test]
    fn secrets_are_not_printed() {
        let cfg = StoreConfig {
            url: "s3://b".into(),
            options: vec![
                ("aws_access_key_id".into(), "AKIA".into()),
                ("aws_secret_access_key".into(), "hunter2".into()),
                ("aws_session_token".into(), "tok3n".into()),
            ],
        };
        let shown = format!("{cfg:?}");
        assert!(
            shown.contains("AKIA") && !shown.contains("hunter2") && !shown.contains("tok3n"),
            "{shown}"
        );
        let store = Store::open(&cfg).unwrap();
        let shown = format!("{store:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok3n"),
            "{shown}"
        );
    }
}
