//! The S3 path on a real S3 server (SeaweedFS): parameters pushed to and pulled from the bucket
//! by a worker that starts without them, and a sector with a piece sealed through the bucket;
//! credentials from the standard AWS chain (a profile file) and the errors when they are wrong or
//! missing; each miner's objects under its own prefix.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use mesh_tests::{Mesh, Proc, Seaweed, bin, lines, require_2kib_params, s3_store, verify_out_line};

#[tokio::test(flavor = "multi_thread")]
async fn a_sector_seals_through_s3_with_parameters_pulled_from_it() {
    let params = require_2kib_params();
    let s3 = Seaweed::start();
    let url = format!("s3://{}/mesh-test", s3.bucket);
    let store = s3_store(&s3, "mesh-test").await;

    let mesh = Mesh::start().await;
    let env: Vec<(String, String)> = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let cache = params.display().to_string();
    let mut push = Proc::spawn(
        &bin("mesh-worker"),
        &[
            "params",
            "push",
            "--store",
            &url,
            "--param-cache",
            &cache,
            "--sizes",
            "2KiB",
        ],
        &env,
        &mesh.log("push"),
    );
    assert!(
        push.wait(Duration::from_secs(300)).await.success(),
        "{}",
        push.tail(20)
    );

    // The worker starts with an empty parameter cache: it must pull them for Commit2, and its
    // two sectors' Commit2 tasks prepare at once, sharing one download of each file.
    let worker_cache = mesh.path("worker-params").display().to_string();
    let scratch = mesh.scratch().display().to_string();
    let nats = mesh.url();
    let worker = Proc::spawn(
        &bin("mesh-worker"),
        &[
            "run",
            "--nats",
            &nats,
            "--store",
            &url,
            "--scratch",
            &scratch,
            "--id",
            "s3w",
            "--param-cache",
            &worker_cache,
        ],
        &env,
        &mesh.log("worker"),
    );
    let piece = mesh.path("piece.txt");
    std::fs::write(&piece, "a small deal, sealed through S3\n".repeat(20)).unwrap();
    let out = mesh.path("sealed.jsonl");
    let mut publisher = Proc::spawn(
        &bin("mesh-publisher"),
        &[
            "seal",
            "--nats",
            &nats,
            "--store",
            &url,
            "--miner",
            "f01000",
            "--count",
            "2",
            "--piece",
            piece.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--param-cache",
            &cache,
        ],
        &env,
        &mesh.log("publisher"),
    );
    let status = publisher.wait(Duration::from_secs(600)).await;
    assert!(status.success(), "{}", publisher.tail(40));
    let lines = lines(&out);
    let mut sealed: Vec<u64> = lines.iter().map(|l| verify_out_line(l)).collect();
    sealed.sort();
    assert_eq!(sealed, [1, 2]);

    let files =
        mesh::proofs::params::param_files(mesh::model::SectorSize::KiB2.seal_proof()).unwrap();
    assert!(
        mesh::proofs::params::missing(&mesh.path("worker-params"), files.all()).is_empty(),
        "the worker pulled the parameters"
    );
    let log = worker.log_text();
    for name in files.all() {
        let pulls = log
            .lines()
            .filter(|l| l.contains("pulling parameters") && l.contains(name))
            .count();
        assert_eq!(pulls, 1, "{name} is downloaded once:\n{log}");
    }
    let waited = log.contains("waiting for another download");
    println!("the second Commit2 waited for the first one's download: {waited}");
    let leftovers: Vec<_> = std::fs::read_dir(mesh.path("worker-params"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A sector with a deal keeps its unsealed copy; the bucket holds exactly what the record
    // refers to.
    let listed = store.list("f01000/1/").await.unwrap();
    let names: Vec<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
    assert!(names.iter().any(|k| k.ends_with("/sealed")), "{names:?}");
    assert!(names.iter().any(|k| k.ends_with("/unsealed")), "{names:?}");
    assert!(!names.iter().any(|k| k.contains("layer")), "{names:?}");
}

/// Runs `mesh-worker` with only `env` in its environment (nothing inherited: no AWS keys or
/// `~/.aws` of whoever runs the tests) and returns whether it succeeded, and its output.
async fn worker_cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let run = tokio::process::Command::new(bin("mesh-worker"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("mesh-worker ends within 120 s")
        .expect("run mesh-worker");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A parameter cache holding stand-ins for the 2KiB files (`params push` and `pull` move bytes
/// and check their sha256; nothing reads them as parameters here).
fn fake_params(dir: &std::path::Path) -> Vec<String> {
    let files =
        mesh::proofs::params::param_files(mesh::model::SectorSize::KiB2.seal_proof()).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    for name in files.names() {
        std::fs::write(dir.join(&name), format!("stand-in for {name}\n").repeat(50)).unwrap();
    }
    files.names()
}

/// An AWS shared credentials file with one profile, and a config file giving it a region.
fn aws_files(dir: &std::path::Path, profile: &str, key: &str, secret: &str) -> (String, String) {
    let credentials = dir.join("credentials");
    let config = dir.join("config");
    std::fs::write(
        &credentials,
        format!("[{profile}]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
    std::fs::write(
        &config,
        format!("[profile {profile}]\nregion = eu-central-1\n"),
    )
    .unwrap();
    (
        credentials.display().to_string(),
        config.display().to_string(),
    )
}

/// The environment of a worker whose only credentials are profile `meshprof` of `aws_files`
/// (no AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_REGION), talking to `endpoint`.
fn profile_env(
    dir: &std::path::Path,
    files: (String, String),
    endpoint: String,
) -> Vec<(&'static str, String)> {
    let (credentials, config) = files;
    vec![
        ("HOME", dir.display().to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", credentials),
        ("AWS_CONFIG_FILE", config),
        ("AWS_PROFILE", "meshprof".into()),
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_and_region_come_from_an_aws_profile() {
    let s3 = Seaweed::start();
    let admin = s3_store(&s3, "").await;
    let dir = tempfile::tempdir().unwrap();
    let files = aws_files(dir.path(), "meshprof", &s3.access_key, &s3.secret_key);
    let env = profile_env(dir.path(), files, s3.endpoint());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let url = format!("s3://{}/profile", s3.bucket);
    let pushed = dir.path().join("pushed");
    let names = fake_params(&pushed);
    let cache = pushed.display().to_string();
    let args = ["--store", &url, "--param-cache", &cache, "--sizes", "2KiB"];
    let (ok, out) = worker_cli(&[&["params", "push"][..], &args].concat(), &env).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("s3 region from the AWS environment or profile")
            && out.contains("eu-central-1"),
        "the region comes from the profile: {out}"
    );

    let listed = admin.list("profile/params/").await.unwrap();
    for name in &names {
        assert!(
            listed
                .iter()
                .any(|(k, _)| k == &format!("profile/params/{name}")),
            "{name} is in the bucket: {listed:?}"
        );
    }
    let pulled = dir.path().join("pulled");
    let cache = pulled.display().to_string();
    let args = ["--store", &url, "--param-cache", &cache, "--sizes", "2KiB"];
    let (ok, out) = worker_cli(&[&["params", "pull"][..], &args].concat(), &env).await;
    assert!(ok, "{out}");
    for name in &names {
        assert_eq!(
            std::fs::read(pulled.join(name)).unwrap(),
            std::fs::read(pushed.join(name)).unwrap(),
            "{name} came back as it went"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_profile_with_a_wrong_secret_is_refused_without_showing_it() {
    let s3 = Seaweed::start();
    s3_store(&s3, "").await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = "not-the-secret-5f2b9c";
    let files = aws_files(dir.path(), "meshprof", &s3.access_key, wrong);
    let env = profile_env(dir.path(), files, s3.endpoint());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let cache = dir.path().join("params");
    fake_params(&cache);
    let url = format!("s3://{}/wrong", s3.bucket);
    let cache = cache.display().to_string();
    let (ok, out) = worker_cli(
        &[
            "params",
            "push",
            "--store",
            &url,
            "--param-cache",
            &cache,
            "--sizes",
            "2KiB",
        ],
        &env,
    )
    .await;
    assert!(!ok, "a wrong secret must fail: {out}");
    assert!(
        out.contains("403") && out.contains("the store refused the credentials of the AWS chain"),
        "{out}"
    );
    assert!(!out.contains(wrong), "the secret is printed: {out}");
    assert!(!out.contains("panicked"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_credentials_and_an_unknown_profile_are_explained() {
    // The chain gives up before any request: the endpoint is never contacted.
    let dir = tempfile::tempdir().unwrap();
    let secret = "never-shown-3e7a1d";
    let (credentials, config) = aws_files(dir.path(), "meshprof", "AKIDEXAMPLE", secret);
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.display().to_string();
    let home = dir.path().display().to_string();
    let cache = dir.path().join("params");
    fake_params(&cache);
    let cache = cache.display().to_string();
    let args = [
        "params",
        "push",
        "--store",
        "s3://mesh/none",
        "--s3-endpoint",
        "http://127.0.0.1:9",
        "--param-cache",
        &cache,
        "--sizes",
        "2KiB",
    ];
    let base = [
        ("HOME", home.as_str()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];

    let nothing = [
        ("AWS_SHARED_CREDENTIALS_FILE", empty.as_str()),
        ("AWS_CONFIG_FILE", &empty),
    ];
    let started = std::time::Instant::now();
    let (ok, out) = worker_cli(&args, &[&base[..], &nothing].concat()).await;
    assert!(!ok, "{out}");
    for needle in [
        "no S3 credentials from the AWS chain",
        "--s3-access-key-id",
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "instance role",
    ] {
        assert!(out.contains(needle), "{needle}: {out}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "no slow metadata probing"
    );

    let unknown = [
        ("AWS_SHARED_CREDENTIALS_FILE", credentials.as_str()),
        ("AWS_CONFIG_FILE", &config),
        ("AWS_PROFILE", "nosuchprofile"),
    ];
    let (ok, out) = worker_cli(&args, &[&base[..], &unknown].concat()).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("profile `nosuchprofile` was not defined"),
        "{out}"
    );
    assert!(!out.contains(secret), "the secret is printed: {out}");
}

/// Every object a miner's sectors leave in the store lies under `<prefix>/<miner>/`, so a bucket
/// policy can fence one miner's publisher to its own prefix; parameters (shared by all) lie under
/// `<prefix>/params/`.
#[tokio::test(flavor = "multi_thread")]
async fn each_miners_objects_stay_under_its_own_prefix() {
    let s3 = Seaweed::start();
    let admin = s3_store(&s3, "").await;
    let mut mesh = Mesh::start().await;
    mesh.store = format!("s3://{}/fence", s3.bucket);
    mesh.env = s3.env();
    // Pieces and intermediate outputs are deleted once a sector seals: list the bucket all along
    // and judge every key ever seen.
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = CancellationToken::new();
    let watcher = tokio::spawn({
        let (admin, seen, stop) = (admin.clone(), seen.clone(), stop.clone());
        async move {
            while !stop.is_cancelled() {
                if let Ok(listed) = admin.list("fence/").await {
                    seen.lock()
                        .unwrap()
                        .extend(listed.into_iter().map(|(k, _)| k));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let _worker = mesh.worker(
        "w1",
        &[
            "--executor",
            "synthetic",
            "--synthetic-durations",
            "ap=50ms,pc1=300ms,pc2=50ms,c1=20ms,c2=50ms,fin=20ms",
        ],
    );
    let piece = mesh.path("piece.txt");
    std::fs::write(&piece, "a deal\n".repeat(40)).unwrap();
    let piece = piece.display().to_string();
    let miners = ["f01000", "f01001"];
    let mut publishers: Vec<Proc> = miners
        .iter()
        .map(|miner| {
            mesh.seal_for(
                miner,
                &format!("publisher-{miner}"),
                &["--count", "2", "--synthetic", "--piece", &piece],
            )
        })
        .collect();
    for publisher in &mut publishers {
        let status = publisher.wait(Duration::from_secs(180)).await;
        assert!(status.success(), "{}", publisher.tail(30));
    }
    stop.cancel();
    watcher.await.unwrap();
    let mut seen = seen.lock().unwrap().clone();
    seen.extend(
        admin
            .list("fence/")
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k),
    );

    for miner in miners {
        let own = format!("fence/{miner}/");
        for object in ["/piece-0", "/unsealed", "/sealed", "/cache/p_aux"] {
            assert!(
                seen.iter()
                    .any(|k| k.starts_with(&own) && k.ends_with(object)),
                "{miner}'s {object} is under {own}: {seen:?}"
            );
        }
    }
    let shared = format!("fence/{}/", mesh::proofs::params::STORE_PREFIX);
    let outside: Vec<&String> = seen
        .iter()
        .filter(|k| {
            !miners.iter().any(|m| k.starts_with(&format!("fence/{m}/"))) && !k.starts_with(&shared)
        })
        .collect();
    assert!(
        outside.is_empty(),
        "objects outside a miner's prefix: {outside:?}"
    );

    // What a publisher fenced to its own prefix can check.
    let store = s3_store(&s3, "fence").await;
    store.check_under("f01000/").await.unwrap();
}
