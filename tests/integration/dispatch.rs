//! Dispatch at scale: each published task wakes one idle worker, not the pool, and a worker
//! that stops answering (SIGSTOP) leaves the tasks announced to it to the others.

use std::time::Duration;

use futures::StreamExt;
use mesh::model::TaskClass;
use mesh::names;
use mesh::phases::Phase;
use mesh_tests::inproc::InProcWorker;
use mesh_tests::{Mesh, observe, publish_task, synthetic_task, wait_for};
use nix::sys::signal::Signal;

const MINER: &str = "f01000";
const POOL: usize = 10;

/// The JetStream API requests the server has answered so far (this one among them).
async fn api_requests(broker: &mesh::broker::Broker) -> u64 {
    broker
        .js()
        .query_account()
        .await
        .expect("account info")
        .requests
        .total
}

/// Starts idle workers `from..to` (polls and heartbeats too rare to fall in a measurement) and
/// waits until all `to` are registered and the server hears nothing from them.
async fn grow_pool(mesh: &Mesh, pool: &mut Vec<InProcWorker>, to: usize) {
    let broker = mesh.broker().await;
    for i in pool.len()..to {
        let mut config = mesh.worker_config(&format!("idle-{i}"), "ap=0ms");
        config.poll_interval = Duration::from_secs(60);
        config.heartbeat = Some(Duration::from_secs(30));
        pool.push(mesh.start_worker(config).await);
    }
    wait_for("the pool to register", Duration::from_secs(30), || async {
        let live = mesh::broker::workers::list(&broker).await.ok()?;
        (live.len() == to).then_some(())
    })
    .await;
    // Every worker has made its first take and waits for a bell.
    wait_for("the pool to go quiet", Duration::from_secs(30), || async {
        let before = api_requests(&broker).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        (api_requests(&broker).await == before + 1).then_some(())
    })
    .await;
}

/// The API requests each of three AddPiece tasks, published one at a time, costs the server.
async fn task_costs(broker: &mesh::broker::Broker, first_sector: u64) -> Vec<u64> {
    let mut results = broker
        .client()
        .subscribe(names::result_filter(MINER.parse().unwrap()))
        .await
        .unwrap();
    let mut costs = Vec::new();
    for sector in first_sector..first_sector + 3 {
        let before = api_requests(broker).await;
        let task = synthetic_task(
            MINER.parse().unwrap(),
            sector,
            Phase::AddPiece,
            false,
            vec![],
        );
        publish_task(broker, &task).await;
        tokio::time::timeout(Duration::from_secs(30), results.next())
            .await
            .expect("the task's result within 30 s (a bell lost?)")
            .expect("the result subscription");
        // Past the taker's last look after its result.
        tokio::time::sleep(Duration::from_millis(300)).await;
        costs.push(api_requests(broker).await - before - 1);
    }
    costs
}

/// Before, every bell woke every idle worker, and each of them read the task streams and tried
/// a fetch: a task cost the server a few requests per idle worker. Now one worker hears it, and
/// what a task costs does not grow with the pool.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_wakes_one_idle_worker_not_the_pool() {
    let mesh = Mesh::start().await;
    mesh.task_consumer(MINER, Phase::AddPiece, TaskClass::Cc)
        .await;
    let broker = mesh.broker().await;
    let mut pool = Vec::new();
    grow_pool(&mesh, &mut pool, 1).await;
    let alone = task_costs(&broker, 1).await;
    grow_pool(&mesh, &mut pool, POOL).await;
    let pooled = task_costs(&broker, 4).await;
    assert_eq!(observe::runs(&broker).await.len(), 6);
    println!(
        "FIGURE dispatch: JetStream API requests per task: {alone:?} with one idle worker, \
         {pooled:?} with {POOL}"
    );
    // A little room for a pool-size read that falls in a measurement.
    assert!(
        pooled.iter().max() <= Some(&(alone.iter().max().unwrap() + 3)),
        "API requests per task with one idle worker: {alone:?}; with {POOL}: {pooled:?} (the \
         pool woke)"
    );
    for worker in pool {
        worker.drain().await.unwrap();
    }
}

/// Synthetic workers whose phases take no time, holding no sector.
const WORKER: [&str; 5] = [
    "--no-holding",
    "--executor",
    "synthetic",
    "--synthetic-durations",
    "ap=0ms,pc1=0ms,pc2=0ms,c1=0ms,c2=0ms,fin=0ms",
];

/// A stopped worker still sits in the bells' queue group, so about half the bells of a pool of
/// two go to it and nobody answers them; the other worker's polls find those tasks, and every
/// task is run by it.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_worker_leaves_the_next_tasks_to_the_others() {
    let mesh = Mesh::start().await;
    mesh.task_consumer(MINER, Phase::AddPiece, TaskClass::Cc)
        .await;
    let broker = mesh.broker().await;
    let mut results = broker
        .client()
        .subscribe(names::result_filter(MINER.parse().unwrap()))
        .await
        .unwrap();
    let mut result = async |what: &str| {
        tokio::time::timeout(Duration::from_secs(30), results.next())
            .await
            .unwrap_or_else(|_| panic!("{what} not done within 30 s"))
            .expect("the result subscription")
    };
    let task = |sector| {
        synthetic_task(
            MINER.parse().unwrap(),
            sector,
            Phase::AddPiece,
            false,
            vec![],
        )
    };
    // The worker to be paused runs a task first: it is past its start and hears the bells.
    let mut paused = mesh.worker("paused", &WORKER);
    publish_task(&broker, &task(1)).await;
    result("the first task").await;
    let mut other = mesh.worker("other", &WORKER);
    wait_for(
        "both workers to register",
        Duration::from_secs(60),
        || async {
            let live = mesh::broker::workers::list(&broker).await.ok()?;
            (live.len() == 2).then_some(())
        },
    )
    .await;
    paused.signal(Signal::SIGSTOP);

    let tasks = 10;
    for sector in 2..2 + tasks {
        // The other worker is idle again, waiting for a bell (a task published at once would
        // meet its next look).
        tokio::time::sleep(Duration::from_millis(300)).await;
        publish_task(&broker, &task(sector)).await;
        result(&format!(
            "task {sector} (its bell went to the paused worker?)"
        ))
        .await;
    }
    paused.signal(Signal::SIGCONT);
    let runs = observe::runs(&broker).await;
    let by_other = runs.iter().filter(|r| r.worker == "other").count();
    assert_eq!(
        (runs.len(), by_other),
        (1 + tasks as usize, tasks as usize),
        "{runs:?}"
    );
    for worker in [&mut paused, &mut other] {
        worker.signal(Signal::SIGTERM);
        assert!(worker.wait(Duration::from_secs(30)).await.success());
    }
}
