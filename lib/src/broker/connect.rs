//! How a process reaches and authenticates to NATS: servers, credentials (user and password,
//! token, nkey seed, JWT credentials file), TLS (CA, client certificate) and the inbox prefix a
//! role's permissions confine replies to. Secrets are never printed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A password or token: kept out of `Debug` output and therefore out of logs and errors.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// Everything needed to open a connection. `Default` is the anonymous, plain-text connection to
/// `url`.
#[derive(Clone, Debug, Default)]
pub struct NatsConfig {
    /// One server URL, or several of a cluster separated by commas.
    pub url: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    /// A file holding an nkey seed (`SU…`).
    pub nkey: Option<PathBuf>,
    /// A `.creds` file (JWT and nkey seed), as `nsc` writes them.
    pub creds: Option<PathBuf>,
    /// PEM file of the CA that signed the server's certificate.
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key, for servers that verify clients (`verify: true`).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// TLS handshake before the server's INFO (servers with `handshake_first`).
    pub tls_first: bool,
    /// Prefix of this client's reply subjects. Left out, it is `_INBOX.<user>` when a user is
    /// given (what the role permissions of `nats/auth.conf` allow), `_INBOX.<name>` with a
    /// credentials file whose JWT names its user (what `mesh-publisher creds` writes), and
    /// `_INBOX` otherwise.
    pub inbox_prefix: Option<String>,
}

impl NatsConfig {
    pub fn new(url: impl Into<String>) -> Self {
        NatsConfig {
            url: url.into(),
            ..NatsConfig::default()
        }
    }

    /// The reply-subject prefix the client uses.
    pub fn inbox_prefix(&self) -> String {
        let named = || {
            let creds = self.creds.as_deref()?;
            super::operator::creds_user_name(creds).filter(|name| {
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            })
        };
        match (&self.inbox_prefix, &self.user) {
            (Some(prefix), _) => prefix.clone(),
            (None, Some(user)) => format!("_INBOX.{user}"),
            (None, None) => named().map_or_else(|| "_INBOX".to_string(), |n| format!("_INBOX.{n}")),
        }
    }

    /// Whether TLS is asked for (a `tls://` URL, a CA, a client certificate or `tls_first`).
    pub fn wants_tls(&self) -> bool {
        self.ca.is_some()
            || self.cert.is_some()
            || self.tls_first
            || self.url.split(',').any(|u| u.trim().starts_with("tls://"))
    }

    /// Checks the combination of options and the files they name; says what to pass instead.
    pub fn validate(&self) -> Result<(), String> {
        let methods: Vec<&str> = [
            (
                self.user.is_some() || self.password.is_some(),
                "--nats-user/--nats-password",
            ),
            (self.token.is_some(), "--nats-token"),
            (self.nkey.is_some(), "--nats-nkey"),
            (self.creds.is_some(), "--nats-creds"),
        ]
        .into_iter()
        .filter_map(|(given, name)| given.then_some(name))
        .collect();
        if methods.len() > 1 {
            return Err(format!(
                "NATS credentials given in more than one way ({}): pass only the one the \
                 server's configuration gives this user",
                methods.join(", ")
            ));
        }
        match (&self.user, &self.password) {
            (Some(_), None) => {
                return Err("--nats-user needs --nats-password (or MESH_NATS_PASSWORD)".into());
            }
            (None, Some(_)) => {
                return Err("--nats-password needs --nats-user (or MESH_NATS_USER)".into());
            }
            _ => {}
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(
                "--nats-cert and --nats-key go together: pass the client certificate and its \
                 private key"
                    .into(),
            );
        }
        if let Some(prefix) = &self.inbox_prefix {
            let ok = !prefix.is_empty()
                && prefix
                    .split('.')
                    .all(|t| !t.is_empty() && !t.contains(['*', '>', ' ']));
            if !ok {
                return Err(format!(
                    "--nats-inbox-prefix '{prefix}' is not a subject prefix: write tokens \
                     separated by dots, without wildcards, e.g. _INBOX.worker"
                ));
            }
        }
        for (flag, path) in [
            ("--nats-nkey", &self.nkey),
            ("--nats-creds", &self.creds),
            ("--nats-ca", &self.ca),
            ("--nats-cert", &self.cert),
            ("--nats-key", &self.key),
        ] {
            if let Some(path) = path {
                readable(flag, path)?;
            }
        }
        Ok(())
    }

    /// The client options: credentials, TLS and inbox prefix (name, timeouts and callbacks are
    /// the broker's).
    pub async fn options(&self) -> Result<async_nats::ConnectOptions, String> {
        self.validate()?;
        let mut options = async_nats::ConnectOptions::new();
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.expose().to_string());
        }
        if let Some(token) = &self.token {
            options = options.token(token.expose().to_string());
        }
        if let Some(path) = &self.nkey {
            let seed = std::fs::read_to_string(path)
                .map_err(|e| format!("--nats-nkey {}: {e}", path.display()))?;
            let seed = seed
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with("SU"))
                .ok_or_else(|| {
                    format!(
                        "--nats-nkey {}: no user nkey seed (a line starting with SU) in the \
                         file; write the seed `nsc` or `nk -gen user` made",
                        path.display()
                    )
                })?;
            nkeys::KeyPair::from_seed(seed).map_err(|_| {
                format!(
                    "--nats-nkey {}: the seed in the file is not a valid nkey seed",
                    path.display()
                )
            })?;
            options = options.nkey(seed.to_string());
        }
        if let Some(path) = &self.creds {
            options = options.credentials_file(path).await.map_err(|e| {
                format!(
                    "--nats-creds {}: not a NATS credentials file ({e}); pass the .creds file \
                     `nsc generate creds` wrote",
                    path.display()
                )
            })?;
        }
        if let Some(ca) = &self.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.wants_tls() {
            // Both of rustls' crypto providers are linked in (the AWS SDK brings aws-lc-rs):
            // choose one, or rustls cannot pick and panics. Another one already chosen stays.
            let _ = rustls::crypto::ring::default_provider().install_default();
            options = options.require_tls(true);
        }
        if self.tls_first {
            options = options.tls_first();
        }
        Ok(options.custom_inbox_prefix(self.inbox_prefix()))
    }
}

fn readable(flag: &str, path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("{flag} {}: cannot read it ({e})", path.display()))
}

/// The last permission violation the server reported to this process, and when.
static REFUSAL: Mutex<Option<(Instant, String)>> = Mutex::new(None);

/// How long a refusal is taken to explain an operation's failure.
const REFUSAL_RELEVANT: Duration = Duration::from_secs(30);

/// Notes a server error; returns the explanation when it is a permission violation.
pub(crate) fn note_server_error(message: &str) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    if !lower.contains("permissions violation") {
        return None;
    }
    let explained = format!(
        "the NATS server refused this user: {}: the user's role does not allow it (nats/auth.conf \
         and the README's Security section list what each role may do)",
        message.trim().trim_matches('\'')
    );
    if let Ok(mut last) = REFUSAL.lock() {
        *last = Some((Instant::now(), explained.clone()));
    }
    Some(explained)
}

/// The permission violation the server reported in the last half minute, if any: what most
/// likely made a request time out or a publish go unacknowledged.
pub fn recent_refusal() -> Option<String> {
    let last = REFUSAL.lock().ok()?;
    let (at, message) = last.as_ref()?;
    (at.elapsed() < REFUSAL_RELEVANT).then(|| message.clone())
}

/// The environment variables that carry one process's NATS identity: a process that starts
/// another one for another role (the autoscaler starting workers) must not pass them on.
pub const NATS_IDENTITY_ENV: [&str; 8] = [
    "MESH_NATS_USER",
    "MESH_NATS_PASSWORD",
    "MESH_NATS_TOKEN",
    "MESH_NATS_NKEY",
    "MESH_NATS_CREDS",
    "MESH_NATS_CERT",
    "MESH_NATS_KEY",
    "MESH_NATS_INBOX_PREFIX",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let config = NatsConfig {
            user: Some("worker".into()),
            password: Some(Secret::new("hunter2-very-secret")),
            token: None,
            ..NatsConfig::new("nats://127.0.0.1:4222")
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("worker"), "{shown}");
    }

    #[test]
    fn inbox_prefix_follows_the_user() {
        let mut config = NatsConfig::new("nats://h:4222");
        assert_eq!(config.inbox_prefix(), "_INBOX");
        config.user = Some("miner-f01000".into());
        assert_eq!(config.inbox_prefix(), "_INBOX.miner-f01000");
        config.inbox_prefix = Some("_I.x".into());
        assert_eq!(config.inbox_prefix(), "_I.x");
    }

    #[test]
    fn inbox_prefix_follows_the_user_a_credentials_file_names() {
        let dir = tempfile::tempdir().unwrap();
        let (operator, _) = super::super::operator::Operator::open(dir.path(), true).unwrap();
        let user = super::super::operator::User::parse("worker-w7").unwrap();
        let creds = dir.path().join("w7.creds");
        std::fs::write(&creds, operator.creds(&user, None).unwrap()).unwrap();
        let mut config = NatsConfig {
            creds: Some(creds),
            ..NatsConfig::new("nats://h:4222")
        };
        assert_eq!(config.inbox_prefix(), "_INBOX.worker-w7");
        config.inbox_prefix = Some("_I.x".into());
        assert_eq!(config.inbox_prefix(), "_I.x");
        config.inbox_prefix = None;
        config.creds = Some(dir.path().join("missing.creds"));
        assert_eq!(config.inbox_prefix(), "_INBOX");
    }

    #[test]
    fn bad_combinations_say_what_to_pass() {
        let base = NatsConfig::new("nats://h:4222");
        let cases: Vec<(NatsConfig, &str)> = vec![
            (
                NatsConfig {
                    user: Some("u".into()),
                    ..base.clone()
                },
                "needs --nats-password",
            ),
            (
                NatsConfig {
                    password: Some(Secret::new("p")),
                    ..base.clone()
                },
                "needs --nats-user",
            ),
            (
                NatsConfig {
                    user: Some("u".into()),
                    password: Some(Secret::new("p")),
                    token: Some(Secret::new("t")),
                    ..base.clone()
                },
                "more than one way",
            ),
            (
                NatsConfig {
                    cert: Some("/nonexistent/cert.pem".into()),
                    ..base.clone()
                },
                "go together",
            ),
            (
                NatsConfig {
                    ca: Some("/nonexistent/ca.pem".into()),
                    ..base.clone()
                },
                "--nats-ca /nonexistent/ca.pem: cannot read it",
            ),
            (
                NatsConfig {
                    inbox_prefix: Some("_INBOX.>".into()),
                    ..base.clone()
                },
                "not a subject prefix",
            ),
        ];
        for (config, expected) in cases {
            let e = config.validate().unwrap_err();
            assert!(e.contains(expected), "{e}");
            assert!(!e.contains("Secret"), "{e}");
        }
        assert!(base.validate().is_ok());
    }

    #[test]
    fn tls_is_wanted_for_tls_urls_and_certificates() {
        assert!(!NatsConfig::new("nats://h:4222").wants_tls());
        assert!(NatsConfig::new("nats://a:4222, tls://b:4222").wants_tls());
        let config = NatsConfig {
            ca: Some("ca.pem".into()),
            ..NatsConfig::new("nats://h:4222")
        };
        assert!(config.wants_tls());
    }

    #[test]
    fn permission_violations_are_explained() {
        assert_eq!(note_server_error("slow consumer"), None);
        let e = note_server_error("permissions violation for publish to \"mesh.task.x\"").unwrap();
        assert!(
            e.contains("refused this user") && e.contains("mesh.task.x"),
            "{e}"
        );
        assert_eq!(recent_refusal().as_deref(), Some(e.as_str()));
    }
}
