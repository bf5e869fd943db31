//! Operator mode: the roles of [`super::roles`] as users of signed JWT credentials instead of
//! passwords in the server's file, so that every worker can have a user of its own.
//!
//! With passwords, all workers share the user `worker`, and so its inbox prefix
//! (`_INBOX.worker`): any worker can listen to the replies another worker's requests get (the
//! tasks it pulls, their ack subjects). Here the server trusts one operator key; the account
//! `MESH` (JetStream on) and the system account `SYS` are signed by it and preloaded in the
//! server's file. Users are credentials files (`.creds`: a user JWT and its nkey seed) signed
//! with the account's key, which the admin keeps. A worker's user is `worker-<name>`, signed
//! with the account's worker signing key instead: a key scoped to the worker role, whose
//! permissions the account JWT holds with the inbox `_INBOX.{{name()}}.>`, which the server
//! fills in with each user's name. What that key signs is a worker, never more. The autoscaler
//! has a scoped key of its own too. Minting a user needs no change to the server's file and no
//! reload.
//!
//! JWTs are written here (header, claims, ed25519 signature of the nkeys crate) as the NATS JWT
//! v2 format has them: the Rust JWT crates make no operator JWTs or no JetStream account limits.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::roles::{Role, SYSTEM_USER};
use crate::model::MinerId;

/// The account the mesh's users belong to, and the system account.
pub const ACCOUNT: &str = "MESH";
pub const SYSTEM_ACCOUNT: &str = "SYS";

/// The files of a key directory: one nkey seed each.
const OPERATOR_SEED: &str = "operator.nk";
const ACCOUNT_SEED: &str = "account-MESH.nk";
const SYSTEM_SEED: &str = "account-SYS.nk";
/// The keys that sign workers' and autoscalers' users, each scoped to its role.
pub const WORKER_SIGNING_SEED: &str = "worker-signing.nk";
pub const AUTOSCALER_SIGNING_SEED: &str = "autoscaler-signing.nk";

/// The operator's key and the two accounts' keys, read from (or first written to) a directory
/// that only the admin reads.
pub struct Operator {
    operator: KeyPair,
    account: KeyPair,
    system: KeyPair,
    worker_signing: KeyPair,
    autoscaler_signing: KeyPair,
}

/// Who a credentials file is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum User {
    /// A role's user of the account `MESH`. For workers, `name` is `worker-<name>`.
    Mesh { role: Role, name: String },
    /// The system account's user, `sys`.
    System,
}

impl User {
    /// Reads a user name: `admin`, `autoscaler`, `miner-<id>`, `worker-<name>` or `sys`.
    pub fn parse(name: &str) -> Result<User, String> {
        let mesh = |role| {
            Ok(User::Mesh {
                role,
                name: name.to_string(),
            })
        };
        match name {
            "admin" => mesh(Role::Admin),
            "autoscaler" => mesh(Role::Autoscaler),
            SYSTEM_USER => Ok(User::System),
            "worker" => Err(
                "name each worker's user `worker-<name>` (e.g. worker-$(hostname)): in operator \
                 mode every worker has a user, and so an inbox, of its own"
                    .into(),
            ),
            _ => {
                if let Some(miner) = name.strip_prefix("miner-") {
                    let miner: MinerId =
                        miner.parse().map_err(|e| format!("user {name:?}: {e}"))?;
                    return mesh(Role::Miner(miner));
                }
                if let Some(worker) = name.strip_prefix("worker-") {
                    let ok = !worker.is_empty()
                        && worker.len() <= 64
                        && worker
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                    if !ok {
                        return Err(format!(
                            "user {name:?}: a worker's name is 1–64 letters, digits, '-' or \
                             '_' after `worker-`, e.g. worker-pc1-07"
                        ));
                    }
                    return mesh(Role::Worker);
                }
                Err(format!(
                    "no such user {name:?}: give admin, autoscaler, miner-<id> (e.g. \
                     miner-f01000), worker-<name> (e.g. worker-pc1-07) or {SYSTEM_USER}"
                ))
            }
        }
    }

    pub fn name(&self) -> &str {
        match self {
            User::Mesh { name, .. } => name,
            User::System => SYSTEM_USER,
        }
    }
}

impl Operator {
    /// Reads the keys of `dir`; with `create`, makes them (readable by their owner alone, and
    /// `dir` too when this makes it) when it holds none. Returns whether they were made. Keys
    /// are never overwritten: a directory with some of them but not all is refused.
    pub fn open(dir: &Path, create: bool) -> Result<(Operator, bool), String> {
        let files = [
            OPERATOR_SEED,
            ACCOUNT_SEED,
            SYSTEM_SEED,
            WORKER_SIGNING_SEED,
            AUTOSCALER_SIGNING_SEED,
        ]
        .map(|f| dir.join(f));
        let present: Vec<&PathBuf> = files.iter().filter(|f| f.exists()).collect();
        if present.is_empty() && !create {
            return Err(format!(
                "--operator {}: holds no operator keys; make them with `mesh-publisher init \
                 --roles FILE --operator {} --miners …` first",
                dir.display(),
                dir.display()
            ));
        }
        if present.is_empty() {
            if !dir.exists() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("--operator {}: {e}", dir.display()))?;
                restrict(dir, 0o700)?;
            }
            let made = Operator {
                operator: KeyPair::new_operator(),
                account: KeyPair::new_account(),
                system: KeyPair::new_account(),
                worker_signing: KeyPair::new_account(),
                autoscaler_signing: KeyPair::new_account(),
            };
            for (file, key) in files.iter().zip([
                &made.operator,
                &made.account,
                &made.system,
                &made.worker_signing,
                &made.autoscaler_signing,
            ]) {
                let seed = key.seed().map_err(|e| format!("nkey seed: {e}"))?;
                write_secret(file, &format!("{seed}\n"))?;
            }
            return Ok((made, true));
        }
        if present.len() < files.len() {
            let missing: Vec<String> = files
                .iter()
                .filter(|f| !f.exists())
                .map(|f| f.display().to_string())
                .collect();
            return Err(format!(
                "--operator {}: {} missing while the other keys are there; restore it from \
                 your backup (a new key would lock out every user signed with the old one)",
                dir.display(),
                missing.join(", ")
            ));
        }
        let read = |file: &PathBuf, prefix: &str, what: &str| -> Result<KeyPair, String> {
            let text =
                std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let seed = text.trim();
            if !seed.starts_with(prefix) {
                return Err(format!(
                    "{}: not an {what} nkey seed (it should start with {prefix})",
                    file.display()
                ));
            }
            KeyPair::from_seed(seed).map_err(|e| format!("{}: {e}", file.display()))
        };
        Ok((
            Operator {
                operator: read(&files[0], "SO", "operator")?,
                account: read(&files[1], "SA", "account")?,
                system: read(&files[2], "SA", "account")?,
                worker_signing: read(&files[3], "SA", "account")?,
                autoscaler_signing: read(&files[4], "SA", "account")?,
            },
            false,
        ))
    }

    /// The public key of the account `MESH`.
    pub fn account_key(&self) -> String {
        self.account.public_key()
    }

    /// A nats-server configuration fragment that trusts the operator and preloads both
    /// accounts. It holds no secret: JWTs and public keys only.
    pub fn server_config(&self, miners: &[MinerId]) -> Result<String, String> {
        let operator = jwt(
            &self.operator,
            &self.operator.public_key(),
            "mesh",
            json!({"type": "operator", "version": 2,
                   "system_account": self.system.public_key()}),
        )?;
        let unlimited = json!({"subs": -1, "data": -1, "payload": -1, "imports": -1,
                               "exports": -1, "wildcards": true, "conn": -1, "leaf": -1});
        let mut mesh_limits = unlimited.clone();
        for (key, value) in [
            ("mem_storage", -1),
            ("disk_storage", -1),
            ("streams", -1),
            ("consumer", -1),
        ] {
            mesh_limits[key] = json!(value);
        }
        // The worker's and the autoscaler's permissions as templates the server fills with each
        // user's name: their users' JWTs stay small (a CONNECT line over the server's 4 KiB
        // `max_control_line` is refused, and the autoscaler's permissions alone are 6 KiB).
        let scopes: Vec<Value> = [
            (Role::Worker, &self.worker_signing),
            (Role::Autoscaler, &self.autoscaler_signing),
        ]
        .into_iter()
        .map(|(role, key)| {
            let p = role.permissions_as("{{name()}}");
            json!({"kind": "user_scope", "key": key.public_key(), "role": role.user(),
                   "template": {"pub": {"allow": p.publish}, "sub": {"allow": p.subscribe},
                                "subs": -1, "data": -1, "payload": -1}})
        })
        .collect();
        let account = jwt(
            &self.operator,
            &self.account.public_key(),
            ACCOUNT,
            json!({"type": "account", "version": 2, "limits": mesh_limits,
                   "signing_keys": scopes}),
        )?;
        let system = jwt(
            &self.operator,
            &self.system.public_key(),
            SYSTEM_ACCOUNT,
            json!({"type": "account", "version": 2, "limits": unlimited}),
        )?;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# The mesh's roles in operator mode (README: Security). Generated by\n\
             # `mesh-publisher init --roles FILE --operator DIR --miners {}`.\n\
             # The server trusts the operator below and knows two accounts, MESH (JetStream) and\n\
             # SYS (the system account). Users are credentials files signed with MESH's keys,\n\
             # which DIR holds: `mesh-publisher creds --operator DIR --user worker-NAME`. New\n\
             # users need no change here and no reload. This file holds no secret.",
            miners
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        let _ = writeln!(out, "operator: \"{operator}\"");
        let _ = writeln!(out, "system_account: {}", self.system.public_key());
        let _ = writeln!(out, "resolver: MEMORY");
        let _ = writeln!(out, "resolver_preload: {{");
        let _ = writeln!(out, "  # {ACCOUNT}");
        let _ = writeln!(out, "  {}: \"{account}\"", self.account.public_key());
        let _ = writeln!(out, "  # {SYSTEM_ACCOUNT}");
        let _ = writeln!(out, "  {}: \"{system}\"", self.system.public_key());
        let _ = writeln!(out, "}}");
        Ok(out)
    }

    /// The signing key scoped to `role`, for the roles whose permissions are the same for all
    /// their users but the inbox.
    fn scoped_signer(&self, role: Role) -> Option<&KeyPair> {
        match role {
            Role::Worker => Some(&self.worker_signing),
            Role::Autoscaler => Some(&self.autoscaler_signing),
            Role::Admin | Role::Miner(_) => None,
        }
    }

    /// A credentials file for `user`: a new user key, its JWT and the key's seed. Admin's and
    /// the miners' JWTs are signed by the account's key and carry the role's permissions with
    /// the user's own inbox; workers' and the autoscaler's by their role's scoped key, with no
    /// permissions of their own. `expires`, seconds since the epoch, ends its validity.
    pub fn creds(&self, user: &User, expires: Option<u64>) -> Result<String, String> {
        let key = KeyPair::new_user();
        let scoped = match user {
            User::Mesh { role, .. } => self.scoped_signer(*role),
            User::System => None,
        };
        let (issuer, nats) = match (user, scoped) {
            // Scoped: the account holds the permissions; the user JWT names the account only.
            (User::Mesh { .. }, Some(signer)) => (
                signer,
                json!({"type": "user", "version": 2,
                       "issuer_account": self.account.public_key()}),
            ),
            (User::Mesh { role, name }, None) => {
                let p = role.permissions_as(name);
                (
                    &self.account,
                    json!({"type": "user", "version": 2,
                           "pub": {"allow": p.publish}, "sub": {"allow": p.subscribe},
                           "subs": -1, "data": -1, "payload": -1}),
                )
            }
            (User::System, _) => (
                &self.system,
                json!({"type": "user", "version": 2, "subs": -1, "data": -1, "payload": -1}),
            ),
        };
        let mut token = claims(issuer, &key.public_key(), user.name(), nats);
        if let Some(exp) = expires {
            token["exp"] = json!(exp);
        }
        let token = sign(issuer, token)?;
        let seed = key.seed().map_err(|e| format!("nkey seed: {e}"))?;
        Ok(format!(
            "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        ))
    }
}

/// The `name` claim of the user JWT in a credentials file, if it has one.
pub fn creds_user_name(creds: &Path) -> Option<String> {
    let text = std::fs::read_to_string(creds).ok()?;
    let token = text.lines().map(str::trim).find(|l| l.starts_with("eyJ"))?;
    let body = token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
    claims["name"].as_str().map(str::to_string)
}

/// Writes `text` to `file`, readable by its owner alone.
pub fn write_secret(file: &Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    restrict(file, 0o600)?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", file.display()))
}

fn restrict(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn claims(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({"iat": now, "iss": issuer.public_key(), "jti": "", "name": name,
           "sub": subject, "nats": nats})
}

/// Claims signed as a JWT; its id (`jti`) is a hash of the claims without it.
fn sign(issuer: &KeyPair, mut claims: Value) -> Result<String, String> {
    let hash = Sha256::digest(claims.to_string().as_bytes());
    claims["jti"] = json!(base32(&hash));
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string().as_bytes());
    let signed = format!("{header}.{body}");
    let signature = issuer
        .sign(signed.as_bytes())
        .map_err(|e| format!("sign a JWT: {e}"))?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> Result<String, String> {
    sign(issuer, claims(issuer, subject, name, nats))
}

/// RFC 4648 base32 without padding (a JWT id).
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_name_a_role_and_workers_must_be_named() {
        assert_eq!(
            User::parse("worker-pc1-07").unwrap(),
            User::Mesh {
                role: Role::Worker,
                name: "worker-pc1-07".into()
            }
        );
        assert!(matches!(
            User::parse("miner-f01000").unwrap(),
            User::Mesh {
                role: Role::Miner(_),
                ..
            }
        ));
        assert_eq!(User::parse("sys").unwrap(), User::System);
        let shared = User::parse("worker").unwrap_err();
        assert!(shared.contains("worker-<name>"), "{shared}");
        assert!(User::parse("worker-a.b").unwrap_err().contains("1–64"));
        assert!(User::parse("root").unwrap_err().contains("no such user"));
        assert!(User::parse("miner-x").is_err());
    }

    #[test]
    fn keys_are_made_once_kept_private_and_never_half_replaced() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let (first, made) = Operator::open(&keys, true).unwrap();
        assert!(made);
        let (again, made) = Operator::open(&keys, false).unwrap();
        assert!(!made);
        let none = Operator::open(&dir.path().join("elsewhere"), false)
            .err()
            .unwrap();
        assert!(none.contains("holds no operator keys"), "{none}");
        assert!(!dir.path().join("elsewhere").exists());
        assert_eq!(first.account_key(), again.account_key());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&keys), 0o700);
        assert_eq!(mode(&keys.join(ACCOUNT_SEED)), 0o600);
        std::fs::remove_file(keys.join(OPERATOR_SEED)).unwrap();
        let err = Operator::open(&keys, true).err().unwrap();
        assert!(err.contains("operator.nk missing"), "{err}");
        assert!(keys.join(ACCOUNT_SEED).exists());
    }

    #[test]
    fn a_worker_creds_carries_its_own_inbox_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let (op, _) = Operator::open(dir.path(), true).unwrap();
        let text = op.creds(&User::parse("worker-w1").unwrap(), None).unwrap();
        let file = dir.path().join("w1.creds");
        write_secret(&file, &text).unwrap();
        assert_eq!(creds_user_name(&file).as_deref(), Some("worker-w1"));
        let token = text.lines().find(|l| l.starts_with("eyJ")).unwrap();
        let claims: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        // Signed by the worker signing key, for the account, with no permissions of its own:
        // the account's scope for that key holds them.
        let signer = op.worker_signing.public_key();
        assert_eq!(claims["iss"], json!(signer));
        assert_eq!(claims["nats"]["issuer_account"], json!(op.account_key()));
        assert!(claims["nats"].get("pub").is_none() && claims["nats"].get("sub").is_none());
        let config = op.server_config(&[]).unwrap();
        let account_jwt = config
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{}: \"", op.account_key())))
            .unwrap()
            .trim_end_matches('"');
        let account: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(account_jwt.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        let scope = &account["nats"]["signing_keys"][0];
        assert_eq!(scope["key"], json!(signer));
        assert_eq!(
            scope["template"]["sub"]["allow"][0],
            json!("_INBOX.{{name()}}.>")
        );
        // The signature is the signing key's over header and claims.
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let signing = KeyPair::from_public_key(&signer).unwrap();
        signing
            .verify(
                signed.as_bytes(),
                &URL_SAFE_NO_PAD.decode(signature).unwrap(),
            )
            .unwrap();
    }

    #[test]
    fn an_expiry_is_the_jwts_exp() {
        let dir = tempfile::tempdir().unwrap();
        let (op, _) = Operator::open(dir.path(), true).unwrap();
        let claims = |text: String| -> Value {
            let token = text
                .lines()
                .find(|l| l.starts_with("eyJ"))
                .unwrap()
                .to_string();
            let body = token.split('.').nth(1).unwrap().to_string();
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap()
        };
        let miner = User::parse("miner-f01000").unwrap();
        assert_eq!(
            claims(op.creds(&miner, Some(1_900_000_000)).unwrap())["exp"],
            1_900_000_000
        );
        assert!(claims(op.creds(&miner, None).unwrap()).get("exp").is_none());
    }

    #[test]
    fn base32_is_rfc_4648_without_padding() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    }
}
