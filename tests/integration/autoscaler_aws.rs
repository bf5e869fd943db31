//! The EC2 Auto Scaling provider against a real Auto Scaling API on loopback (moto's server):
//! it finds the group, grows it by desired capacity, removes named instances while lowering
//! desired capacity, and refuses a missing group and a size above max_size with errors that say
//! what to fix.
//!
//! The provider under test takes its base SDK config from the test ([`Aws::open_with`]) so that
//! static fake credentials reach it without touching the process environment; `Aws::open` passes
//! the standard chain in its place.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, ConfigLoader, Region};
use aws_sdk_autoscaling::config::Credentials;
use mesh::autoscaler::provider::aws::{Aws, AwsConfig};
use mesh::autoscaler::provider::{Instance, InstanceState};
use mesh_tests::{free_port, wait_for};

const REGION: &str = "us-east-1";
/// One of the AMIs moto knows out of the box.
const AMI: &str = "ami-12c6146b";

/// `moto_server` on a free loopback port, killed by pid when dropped.
struct Moto {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    async fn start() -> Moto {
        let program = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join("moto_server"))
            .find(|path| path.is_file())
            .expect(
                "moto_server is not on PATH: run `bash scripts/test.sh`, which installs \
                 moto[server] into .mesh/venv, and put .mesh/venv/bin on PATH",
            );
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("moto.log");
        let out = std::fs::File::create(&log).expect("moto log");
        let port = free_port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("moto log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let mut moto = Moto {
            child,
            port,
            log,
            _dir: dir,
        };
        wait_for("moto_server to listen", Duration::from_secs(60), || {
            let exited = moto.child.try_wait().ok().flatten();
            assert!(exited.is_none(), "moto_server exited: {exited:?}");
            let up = TcpStream::connect(("127.0.0.1", port)).is_ok();
            async move { up.then_some(()) }
        })
        .await;
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- moto_server log (last lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// The SDK's default loader with fake static credentials (moto accepts any).
fn fake_credentials() -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest()).credentials_provider(Credentials::new(
        "testing",
        "testing",
        None,
        None,
        "mesh-tests",
    ))
}

fn config(moto: &Moto, asg: &str) -> AwsConfig {
    AwsConfig {
        asg: asg.to_string(),
        region: Some(REGION.to_string()),
        profile: None,
        endpoint: Some(moto.endpoint()),
    }
}

/// A launch configuration and an empty group with min 0, max 5, like terraform makes.
async fn create_group(client: &aws_sdk_autoscaling::Client, name: &str) {
    client
        .create_launch_configuration()
        .launch_configuration_name(format!("{name}-lc"))
        .image_id(AMI)
        .instance_type("t3.micro")
        .send()
        .await
        .expect("create launch configuration");
    client
        .create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_configuration_name(format!("{name}-lc"))
        .availability_zones(format!("{REGION}a"))
        .min_size(0)
        .max_size(5)
        .desired_capacity(0)
        .new_instances_protected_from_scale_in(true)
        .send()
        .await
        .expect("create auto scaling group");
}

async fn desired_capacity(client: &aws_sdk_autoscaling::Client, name: &str) -> i32 {
    let out = client
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .expect("describe group");
    out.auto_scaling_groups()[0]
        .desired_capacity()
        .expect("desired capacity")
}

fn names(instances: &[Instance]) -> Vec<String> {
    let mut names: Vec<String> = instances.iter().map(|i| i.name.clone()).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_provider_grows_and_removes_named_instances_of_an_auto_scaling_group() {
    let moto = Moto::start().await;
    let sdk = fake_credentials()
        .region(Region::new(REGION))
        .endpoint_url(moto.endpoint())
        .load()
        .await;
    let client = aws_sdk_autoscaling::Client::new(&sdk);
    let asg = "mesh-worker-pc1-cpu";
    create_group(&client, asg).await;

    // A group that does not exist: the error says where to create it.
    let missing = Aws::open_with(&config(&moto, "mesh-missing"), "pc1", fake_credentials())
        .await
        .err()
        .expect("opening a missing group fails");
    let message = missing.to_string();
    assert!(
        message.contains("no Auto Scaling group named mesh-missing in region us-east-1")
            && message.contains("terraform/modules/aws-worker-group"),
        "{message}"
    );

    // Nothing listening: the SDK's own cause comes through, not just "dispatch failure".
    let mut unreachable = config(&moto, asg);
    unreachable.endpoint = Some(format!("http://127.0.0.1:{}", free_port()));
    let message = Aws::open_with(&unreachable, "pc1", fake_credentials())
        .await
        .err()
        .expect("opening an unreachable API fails")
        .to_string();
    assert!(message.contains("onnect"), "{message}");
    eprintln!("unreachable API: {message}");

    let started = Instant::now();
    let mut aws = Aws::open_with(&config(&moto, asg), "pc1", fake_credentials())
        .await
        .expect("open the group");
    let open_took = started.elapsed();
    assert!(aws.instances().await.expect("list").is_empty());

    let started = Instant::now();
    aws.grow(3).await.expect("grow to 3");
    let grow_took = started.elapsed();
    // Polled like `wait_for` (which cannot lend out `&mut aws`): real groups take minutes.
    let deadline = Instant::now() + Duration::from_secs(30);
    let instances = loop {
        let instances = aws.instances().await.expect("list instances");
        if instances.len() == 3 && instances.iter().all(|i| i.state == InstanceState::Running) {
            break instances;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for 3 instances in service: {instances:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(desired_capacity(&client, asg).await, 3);
    let started = Instant::now();
    aws.instances().await.expect("list");
    let list_took = started.elapsed();
    assert!(
        instances.iter().all(|i| i.name.starts_with("i-")),
        "{instances:?}"
    );

    // Remove two by name: exactly the third stays, and desired capacity follows.
    let all = names(&instances);
    let started = Instant::now();
    aws.remove(&all[..2]).await.expect("remove two");
    let remove_took = started.elapsed();
    let left: Vec<Instance> = aws
        .instances()
        .await
        .expect("list")
        .into_iter()
        .filter(|i| i.state != InstanceState::Stopping)
        .collect();
    assert_eq!(names(&left), all[2..].to_vec());
    assert_eq!(desired_capacity(&client, asg).await, 1);

    // Removing instances already gone is not an error, and changes nothing.
    aws.remove(&all[..1])
        .await
        .expect("remove an instance already gone");
    assert_eq!(desired_capacity(&client, asg).await, 1);

    // Above the group's max_size: a clear error naming both numbers, and nothing changes.
    let err = aws.grow(6).await.expect_err("grow past max_size");
    let message = err.to_string();
    assert!(message.contains("size 6 exceeds max_size 5"), "{message}");
    assert_eq!(desired_capacity(&client, asg).await, 1);

    // Shrinking below the group's min_size is refused before anything is terminated.
    client
        .update_auto_scaling_group()
        .auto_scaling_group_name(asg)
        .min_size(1)
        .send()
        .await
        .expect("raise min_size");
    let err = aws
        .remove(&all[2..])
        .await
        .expect_err("remove below min_size");
    assert!(err.to_string().contains("below min_size 1"), "{err}");
    assert_eq!(
        names(&aws.instances().await.expect("list")),
        all[2..].to_vec()
    );

    println!(
        "FIGURE aws provider: open {open_took:?}, grow {grow_took:?}, instances {list_took:?}, \
         remove 2 {remove_took:?} (moto_server on loopback)"
    );
}
