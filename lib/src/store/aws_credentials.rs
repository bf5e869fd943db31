//! S3 credentials and region from the standard AWS chain, for stores given no keys: the
//! environment, profile files (`AWS_PROFILE`), web identity (EKS), ECS task roles and EC2 instance
//! roles, in the order the AWS SDKs and CLI use.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_config::Region;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::environment::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_credential_types::provider::ProvideCredentials;
use object_store::CredentialProvider;
use object_store::aws::AwsCredential;
use tokio::sync::Mutex;

/// Credentials without an expiry (static keys of a profile) are asked for again after this, so
/// a rotated profile file is picked up by a long-running worker.
const STATIC_TTL: Duration = Duration::from_secs(15 * 60);
/// Expiring credentials are renewed this long before they expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5 * 60);

/// What a user can do when the chain finds nothing, named in the error.
const WHAT_TO_DO: &str = "give keys with --s3-access-key-id and --s3-secret-access-key (or \
     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), name a profile of ~/.aws/credentials or \
     ~/.aws/config with AWS_PROFILE (AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE move those \
     files), or run with an EC2 instance role, an EKS service account role \
     (AWS_WEB_IDENTITY_TOKEN_FILE) or an ECS task role";

/// The region named by `AWS_REGION`, `AWS_DEFAULT_REGION` or the selected profile, if any.
/// Instance metadata is not asked (that could take seconds off EC2): on EC2 give the region.
pub(super) fn configured_region() -> Option<String> {
    let chain = RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
        .or_else(ProfileFileRegionProvider::new());
    // aws-config reads profile files with std::fs, so this completes without an IO reactor and
    // is as quick as reading two small files; `Store::open` stays synchronous.
    futures::executor::block_on(chain.region()).map(|r| r.to_string())
}

/// The chain failed to provide credentials; the message says why and what to do.
#[derive(Debug)]
pub(super) struct NoCredentials(String);

impl fmt::Display for NoCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoCredentials {}

/// An object_store credential provider that asks the AWS default chain, built on first use (it
/// needs the runtime), and keeps what it got until shortly before it expires.
pub(super) struct ChainCredentials {
    region: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Dropped after a failure: aws-config's profile provider answers only its first call with
    /// the reason it failed ("profile `x` was not defined"), later ones with an unhelpful error.
    chain: Option<DefaultCredentialsChain>,
    cached: Option<(Arc<AwsCredential>, Instant)>,
}

impl fmt::Debug for ChainCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainCredentials")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl ChainCredentials {
    pub(super) fn new(region: String) -> ChainCredentials {
        ChainCredentials {
            region,
            state: Mutex::new(State::default()),
        }
    }

    async fn credential(&self) -> Result<Arc<AwsCredential>, NoCredentials> {
        // Held across the fetch, so concurrent requests wait for one answer.
        let mut state = self.state.lock().await;
        if let Some((credential, renew_at)) = state.cached.as_ref()
            && Instant::now() < *renew_at
        {
            return Ok(Arc::clone(credential));
        }
        let chain = match state.chain.take() {
            Some(chain) => chain,
            None => {
                DefaultCredentialsChain::builder()
                    .region(Region::new(self.region.clone()))
                    .build()
                    .await
            }
        };
        let got = chain
            .provide_credentials()
            .await
            .map_err(|e| NoCredentials(explain(&e)))?;
        state.chain = Some(chain);
        let ttl = match got.expiry() {
            Some(expiry) => expiry
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .saturating_sub(EXPIRY_MARGIN),
            None => STATIC_TTL,
        };
        let credential = Arc::new(AwsCredential {
            key_id: got.access_key_id().to_string(),
            secret_key: got.secret_access_key().to_string(),
            token: got.session_token().map(str::to_string),
        });
        state.cached = Some((Arc::clone(&credential), Instant::now() + ttl));
        Ok(credential)
    }
}

/// The chain's error with its causes on one line (the chain lists each provider it tried), and
/// what to do. Credentials errors never carry secrets.
fn explain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut detail = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    // "no credentials found in chain. Attempted:\n  Environment: …\n  Profile: …" on one line.
    let mut lines = detail.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut detail = lines.next().unwrap_or_default().to_string();
    for line in lines {
        detail.push_str(if detail.ends_with(':') { " " } else { "; " });
        detail.push_str(line);
    }
    format!(
        "no S3 credentials from the AWS chain (environment, profile, web identity, ECS, \
         instance role): {detail}; {WHAT_TO_DO}"
    )
}

#[async_trait::async_trait]
impl CredentialProvider for ChainCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        self.credential()
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chains_report_fits_on_one_line_and_says_what_to_do() {
        let e = std::io::Error::other(
            "no credentials found in chain. Attempted:\n  Environment: not set\n  Profile: \
             profile `x` was not defined",
        );
        let shown = explain(&e);
        assert!(!shown.contains('\n'), "{shown}");
        assert!(
            shown.contains("Attempted: Environment: not set; Profile: profile `x` was not defined"),
            "{shown}"
        );
        assert!(shown.contains("AWS_PROFILE") && shown.contains("--s3-access-key-id"));
    }
}
