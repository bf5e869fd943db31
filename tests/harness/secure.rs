//! A nats-server run with the mesh's roles (`mesh-publisher init --roles`, included as the
//! generated file) and, optionally, TLS with a CA, server and client certificates generated for
//! the test. Each role gets a random password; processes get their identity through the
//! `MESH_NATS_*` environment, in-process clients through a [`NatsConfig`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use mesh::broker::{Broker, NatsConfig, Secret};

use crate::{NatsServer, bin};

/// The PEM files of a test CA, the server's certificate and a client certificate it signed.
pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    /// A self-signed CA, a server certificate for 127.0.0.1 and localhost, and a client
    /// certificate, written into `dir`.
    pub fn generate(dir: &std::path::Path) -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "mesh test CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");

        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, cn: &str| {
            let mut params = CertificateParams::new(names).expect("leaf params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().expect("leaf key");
            let cert = params.signed_by(&key, &ca, &ca_key).expect("sign leaf");
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key_pem) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "nats-server",
        );
        let (client_pem, client_key_pem) =
            leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth, "mesh client");
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        TestPki {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_pem),
            server_key: write("server-key.pem", &server_key_pem),
            client_cert: write("client.pem", &client_pem),
            client_key: write("client-key.pem", &client_key_pem),
        }
    }
}

/// The server with the roles for some miners, and each role's password.
pub struct SecureNats {
    pub server: NatsServer,
    pub passwords: BTreeMap<String, String>,
    /// With TLS: the files clients need (the server requires TLS and verifies clients).
    pub pki: Option<TestPki>,
}

impl SecureNats {
    /// Writes the roles with `mesh-publisher init --roles` and starts a server that includes
    /// them (and requires TLS with client certificates when `tls`).
    pub fn start(miners: &[&str], tls: bool) -> SecureNats {
        let dir = tempfile::tempdir().expect("temp dir");
        let auth = dir.path().join("auth.conf");
        let out = std::process::Command::new(bin("mesh-publisher"))
            .args(["init", "--roles"])
            .arg(&auth)
            .args(["--miners", &miners.join(",")])
            .output()
            .expect("run mesh-publisher init --roles");
        assert!(
            out.status.success(),
            "init --roles failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut users = vec!["admin".to_string(), "worker".into(), "autoscaler".into()];
        users.extend(miners.iter().map(|m| format!("miner-{m}")));
        let passwords: BTreeMap<String, String> = users
            .into_iter()
            .map(|u| (u, format!("pw-{:032x}", rand::random::<u128>())))
            .collect();
        let env = passwords
            .iter()
            .map(|(user, pw)| {
                let var = format!("MESH_{}_PASSWORD", user.replace('-', "_").to_uppercase());
                (var, pw.clone())
            })
            .collect();
        let pki = tls.then(|| TestPki::generate(dir.path()));
        // nats/secure.conf as it is, but for its port, store and certificate paths (and
        // without its TLS block when the test wants none).
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../nats");
        let template = std::fs::read_to_string(root.join("secure.conf")).expect("nats/secure.conf");
        let template = match &pki {
            Some(p) => template
                .replace(
                    "/etc/mesh/tls/server.pem",
                    &p.server_cert.display().to_string(),
                )
                .replace(
                    "/etc/mesh/tls/server-key.pem",
                    &p.server_key.display().to_string(),
                )
                .replace("/etc/mesh/tls/ca.pem", &p.ca.display().to_string()),
            None => {
                let start = template
                    .find("\ntls {")
                    .expect("a tls block in secure.conf");
                let end = start + template[start..].find("\n}\n").expect("end of tls block") + 3;
                format!("{}{}", &template[..start], &template[end..])
            }
        };
        let server = NatsServer::configured(
            dir,
            |port, store| {
                template
                    .replace("0.0.0.0:4222", &format!("127.0.0.1:{port}"))
                    .replace("/var/lib/mesh-nats", &store.display().to_string())
            },
            env,
        );
        SecureNats {
            server,
            passwords,
            pki,
        }
    }

    pub fn url(&self) -> String {
        let url = self.server.url();
        match self.pki {
            Some(_) => url.replace("nats://", "tls://"),
            None => url,
        }
    }

    /// The environment that makes a mesh process connect as `user`.
    pub fn env(&self, user: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("MESH_NATS".to_string(), self.url()),
            ("MESH_NATS_USER".into(), user.into()),
            ("MESH_NATS_PASSWORD".into(), self.passwords[user].clone()),
        ];
        env.extend(self.tls_env());
        env
    }

    /// The TLS part of the environment alone: CA and client certificate.
    pub fn tls_env(&self) -> Vec<(String, String)> {
        self.pki.as_ref().map_or(Vec::new(), |p| {
            vec![
                ("MESH_NATS_CA".into(), p.ca.display().to_string()),
                ("MESH_NATS_CERT".into(), p.client_cert.display().to_string()),
                ("MESH_NATS_KEY".into(), p.client_key.display().to_string()),
            ]
        })
    }

    /// How an in-process client connects as `user`.
    pub fn config(&self, user: &str) -> NatsConfig {
        NatsConfig {
            user: Some(user.into()),
            password: Some(Secret::new(self.passwords[user].clone())),
            ca: self.pki.as_ref().map(|p| p.ca.clone()),
            cert: self.pki.as_ref().map(|p| p.client_cert.clone()),
            key: self.pki.as_ref().map(|p| p.client_key.clone()),
            ..NatsConfig::new(self.url())
        }
    }

    pub async fn connect(&self, user: &str) -> Broker {
        Broker::connect_with(&self.config(user), &format!("test {user}"))
            .await
            .unwrap_or_else(|e| panic!("connect as {user}: {e}"))
    }

    /// Runs `mesh-publisher` as `user` to its end: (success, stdout, stderr).
    pub fn publisher(&self, user: &str, args: &[&str]) -> (bool, String, String) {
        let out = std::process::Command::new(bin("mesh-publisher"))
            .args(args)
            .envs(self.env(user))
            .output()
            .expect("run mesh-publisher");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}
