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
    /// `text` with the paths `(certificate, key, CA)` replaced by this PKI's server files.
    pub fn in_place_of(&self, text: &str, (cert, key, ca): (&str, &str, &str)) -> String {
        text.replace(cert, &self.server_cert.display().to_string())
            .replace(key, &self.server_key.display().to_string())
            .replace(ca, &self.ca.display().to_string())
    }

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

        let leaf = |names: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>, cn: &str| {
            let mut params = CertificateParams::new(names).expect("leaf params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = usages;
            let key = KeyPair::generate().expect("leaf key");
            let cert = params.signed_by(&key, &ca, &ca_key).expect("sign leaf");
            (cert.pem(), key.serialize_pem())
        };
        // Server and client usage both: a cluster node is a TLS client of the others' routes.
        let (server_pem, server_key_pem) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            "nats-server",
        );
        let (client_pem, client_key_pem) = leaf(
            vec![],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            "mesh client",
        );
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

/// The server (or the 3-node cluster) with the roles for some miners, and each role's password.
pub struct SecureNats {
    pub servers: Vec<NatsServer>,
    pub passwords: BTreeMap<String, String>,
    /// In operator mode: each user's credentials file (and no passwords).
    pub creds: BTreeMap<String, PathBuf>,
    /// With TLS: the files clients need (the server requires TLS and verifies clients).
    pub pki: Option<TestPki>,
    /// Files the servers share (the cluster's roles and certificates), removed on drop.
    _shared: Option<tempfile::TempDir>,
}

/// `mesh-publisher init --roles` written into `dir/auth.conf` (with the system account when
/// `system`), a random password per user, and the server environment that holds them.
fn roles(
    dir: &std::path::Path,
    miners: &[&str],
    system: bool,
) -> (BTreeMap<String, String>, Vec<(String, String)>) {
    let mut init = std::process::Command::new(bin("mesh-publisher"));
    init.args(["init", "--roles"])
        .arg(dir.join("auth.conf"))
        .args(["--miners", &miners.join(",")]);
    if system {
        init.arg("--system-account");
    }
    let out = init.output().expect("run mesh-publisher init --roles");
    assert!(
        out.status.success(),
        "init --roles failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut users = vec!["admin".to_string(), "worker".into(), "autoscaler".into()];
    users.extend(miners.iter().map(|m| format!("miner-{m}")));
    if system {
        users.push(mesh::broker::roles::SYSTEM_USER.into());
    }
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
    (passwords, env)
}

/// A server running nats/secure.conf as it is (including `dir/auth.conf`), but for its port,
/// store and certificate paths (and without its TLS block when there is no `pki`).
fn secure_conf(
    dir: tempfile::TempDir,
    pki: Option<&TestPki>,
    env: Vec<(String, String)>,
) -> NatsServer {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../nats");
    let template = std::fs::read_to_string(root.join("secure.conf")).expect("nats/secure.conf");
    let template = match pki {
        Some(p) => p.in_place_of(
            &template,
            (
                "/etc/mesh/tls/server.pem",
                "/etc/mesh/tls/server-key.pem",
                "/etc/mesh/tls/ca.pem",
            ),
        ),
        None => {
            let start = template
                .find("\ntls {")
                .expect("a tls block in secure.conf");
            let end = start + template[start..].find("\n}\n").expect("end of tls block") + 3;
            format!("{}{}", &template[..start], &template[end..])
        }
    };
    NatsServer::configured(
        dir,
        |port, store| {
            template
                .replace("0.0.0.0:4222", &format!("127.0.0.1:{port}"))
                .replace("/var/lib/mesh-nats", &store.display().to_string())
        },
        env,
    )
}

impl SecureNats {
    /// Writes the roles with `mesh-publisher init --roles` and starts a server that includes
    /// them (and requires TLS with client certificates when `tls`).
    pub fn start(miners: &[&str], tls: bool) -> SecureNats {
        let dir = tempfile::tempdir().expect("temp dir");
        let (passwords, env) = roles(dir.path(), miners, false);
        let pki = tls.then(|| TestPki::generate(dir.path()));
        let server = secure_conf(dir, pki.as_ref(), env);
        SecureNats {
            servers: vec![server],
            passwords,
            creds: BTreeMap::new(),
            pki,
            _shared: None,
        }
    }

    /// Operator mode: `mesh-publisher init --roles auth.conf --operator keys` (no TLS), and a
    /// credentials file of its own for each of `workers` (`worker-<name>`, from
    /// `mesh-publisher creds`). Every user logs in with its credentials file; no password.
    pub fn start_operator(miners: &[&str], workers: &[&str]) -> SecureNats {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = dir.path().join("keys");
        let run = |args: Vec<String>| {
            let out = std::process::Command::new(bin("mesh-publisher"))
                .args(&args)
                .output()
                .expect("run mesh-publisher");
            assert!(
                out.status.success(),
                "mesh-publisher {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(vec![
            "init".into(),
            "--roles".into(),
            dir.path().join("auth.conf").display().to_string(),
            "--operator".into(),
            keys.display().to_string(),
            "--miners".into(),
            miners.join(","),
        ]);
        let mut creds = BTreeMap::new();
        let mut users = vec!["admin".to_string(), "autoscaler".into()];
        users.extend(miners.iter().map(|m| format!("miner-{m}")));
        for user in users {
            creds.insert(
                user.clone(),
                keys.join("creds").join(format!("{user}.creds")),
            );
        }
        for worker in workers {
            let user = format!("worker-{worker}");
            let file = keys.join(format!("{user}.creds"));
            run(vec![
                "creds".into(),
                "--operator".into(),
                keys.display().to_string(),
                "--user".into(),
                user.clone(),
                "--out".into(),
                file.display().to_string(),
            ]);
            creds.insert(user, file);
        }
        let server = secure_conf(dir, None, Vec::new());
        SecureNats {
            servers: vec![server],
            passwords: BTreeMap::new(),
            creds,
            pki: None,
            _shared: None,
        }
    }

    /// The production cluster of `deploy/nats/nats.conf`: three nodes, each running the file
    /// as it is but for its ports, store and certificate paths (hosts `nats-N` become loopback
    /// ports), with the roles and the system account from `init --roles --system-account`, TLS
    /// on client and route ports. Each node's configuration is first checked with
    /// `nats-server -t`, as an operator would. Also returns each node's monitoring port.
    pub fn production_cluster(miners: &[&str]) -> (SecureNats, Vec<u16>) {
        let shared = tempfile::tempdir().expect("temp dir");
        let (passwords, env) = roles(shared.path(), miners, true);
        let pki = TestPki::generate(shared.path());
        let file =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/nats.conf");
        let template = std::fs::read_to_string(&file).expect("deploy/nats/nats.conf");
        let template = pki.in_place_of(
            &template,
            (
                "/etc/mesh/tls/node.pem",
                "/etc/mesh/tls/node-key.pem",
                "/etc/mesh/tls/ca.pem",
            ),
        );
        let ports: Vec<[u16; 3]> = (0..3)
            .map(|_| [crate::free_port(), crate::free_port(), crate::free_port()])
            .collect();
        let mut servers = Vec::new();
        for (i, [client, http, route]) in ports.iter().copied().enumerate() {
            let dir = tempfile::tempdir().expect("temp dir");
            std::fs::copy(
                shared.path().join("auth.conf"),
                dir.path().join("auth.conf"),
            )
            .expect("copy auth.conf");
            let mut text = template
                .replace("0.0.0.0:4222", &format!("127.0.0.1:{client}"))
                .replace("127.0.0.1:8222", &format!("127.0.0.1:{http}"))
                .replace("0.0.0.0:6222", &format!("127.0.0.1:{route}"))
                .replace(
                    "/var/lib/nats/jetstream",
                    &dir.path().join("js").display().to_string(),
                );
            for (j, [_, _, other]) in ports.iter().enumerate() {
                text = text.replace(
                    &format!("nats-route://nats-{}.example:6222", j + 1),
                    &format!("nats-route://127.0.0.1:{other}"),
                );
            }
            let mut node_env = env.clone();
            node_env.push(("MESH_NATS_NAME".into(), format!("nats-{}", i + 1)));
            let path = dir.path().join("server.conf");
            std::fs::write(&path, &text).expect("write node config");
            let (ok, said) = NatsServer::check_config(&path, &node_env);
            assert!(ok, "nats-server -t refused deploy/nats/nats.conf: {said}");
            servers.push(NatsServer::from_config(
                dir,
                client,
                &format!("nats-{}", i + 1),
                &text,
                node_env,
            ));
        }
        let nats = SecureNats {
            servers,
            passwords,
            creds: BTreeMap::new(),
            pki: Some(pki),
            _shared: Some(shared),
        };
        (nats, ports.iter().map(|p| p[1]).collect())
    }

    /// Every server's URL, comma-separated.
    pub fn url(&self) -> String {
        let urls: Vec<String> = self.servers.iter().map(NatsServer::url).collect();
        let url = urls.join(",");
        match self.pki {
            Some(_) => url.replace("nats://", "tls://"),
            None => url,
        }
    }

    /// The environment that makes a mesh process connect as `user`.
    pub fn env(&self, user: &str) -> Vec<(String, String)> {
        let mut env = vec![("MESH_NATS".to_string(), self.url())];
        match self.creds.get(user) {
            Some(file) => env.push(("MESH_NATS_CREDS".into(), file.display().to_string())),
            None => env.extend([
                ("MESH_NATS_USER".into(), user.into()),
                ("MESH_NATS_PASSWORD".into(), self.passwords[user].clone()),
            ]),
        }
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
        if let Some(file) = self.creds.get(user) {
            return NatsConfig {
                creds: Some(file.clone()),
                ..NatsConfig::new(self.url())
            };
        }
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

    /// Starts `program` with `args` as `user`, logging to `log`.
    pub fn spawn(
        &self,
        user: &str,
        program: &std::path::Path,
        args: &[&str],
        log: &std::path::Path,
    ) -> crate::Proc {
        let env = self.env(user);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        crate::Proc::spawn(program, args, &env, log)
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
