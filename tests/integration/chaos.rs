//! The chaos soak: 300 synthetic sectors of 3 miners on 6 workers, and a local group sized by
//! a pair of autoscalers, while a random worker is SIGKILLed (and replaced) every few seconds,
//! one of each miner's two publishers is SIGKILLed, the active autoscaler is SIGKILLed, and the
//! nats-server is killed and restarted once. At the end every sector is sealed exactly once.
//! Prints sectors, kills, redeliveries, dropped late results and wall time.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mesh::names;
use mesh_tests::{Mesh, Proc, lines, wait_for};

use crate::autoscaler::{autoscaler_named, log_lines_of};

const MINERS: [&str; 3] = ["f01000", "f01001", "f01002"];
const SECTORS_PER_MINER: usize = 100;
const WORKERS: usize = 6;
/// Simulated 4-thread machines with 4 slots: 4 PreCommit1 at once each. No worker holds a
/// sector's data (each phase's task may restart anywhere; `locality` tests the holders).
const WORKER: [&str; 9] = [
    "--no-holding",
    "--executor",
    "synthetic",
    "--cpus",
    "4",
    "--slots",
    "4",
    "--synthetic-durations",
    "ap=200ms,pc1=3s,pc2=700ms,c1=100ms,c2=700ms,fin=200ms",
];

/// xorshift64: enough randomness to pick victims, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hundred_sectors_seal_exactly_once_through_kills_and_a_broker_restart() {
    let seed = std::env::var("MESH_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("chaos seed {seed} (set MESH_CHAOS_SEED to repeat the victims)");
    let mut rng = Rng(seed);
    let mut mesh = Mesh::start().await;
    let started = Instant::now();
    let mut generation = 0;
    let mut spawn = |mesh: &Mesh, slot: usize| {
        generation += 1;
        mesh.worker(&format!("w{slot}-{generation}"), &WORKER)
    };
    let mut workers: Vec<Proc> = (0..WORKERS).map(|slot| spawn(&mesh, slot)).collect();
    let mut retired: Vec<Proc> = Vec::new();
    let count = SECTORS_PER_MINER.to_string();
    let mut publishers: Vec<Proc> = MINERS
        .iter()
        .map(|miner| {
            let out = mesh.path(&format!("{miner}.jsonl")).display().to_string();
            mesh.seal_for(
                miner,
                miner,
                &["--count", &count, "--synthetic", "--out", &out],
            )
        })
        .collect();

    // Each miner's partner: a second publisher sharing its results.
    let mut partners: Vec<Proc> = MINERS
        .iter()
        .map(|miner| mesh.run_publisher(miner, &format!("{miner}-partner"), &[]))
        .collect();
    // A pair of autoscalers sizing one more group of the same workers (up to 2).
    // The soak's worker flags but `--slots`, which the group sets.
    let group_flags = format!(
        r#""--no-holding", "--executor", "synthetic", "--cpus", "4", "--synthetic-durations", "{}""#,
        WORKER[WORKER.len() - 1]
    );
    let (mut active, _) = autoscaler_named(&mesh, "active", 2, "1m", "2m", &group_flags, "3s");
    wait_for(
        "the first autoscaler to take the group",
        Duration::from_secs(30),
        || async { (!log_lines_of(&mesh, "active", "lease taken").is_empty()).then_some(()) },
    )
    .await;
    let (standby, _) = autoscaler_named(&mesh, "standby", 2, "1m", "2m", &group_flags, "3s");

    let mut kills = 0;
    let mut partner_killed = false;
    let mut autoscaler_killed = false;
    let mut broker_restarted = false;
    let deadline = Duration::from_secs(900);
    loop {
        let done = publishers.iter_mut().all(|p| p.try_status().is_some());
        if done {
            break;
        }
        assert!(
            started.elapsed() < deadline,
            "the soak did not finish in {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(3000 + 100 * rng.below(30) as u64)).await;
        // The broker restart comes once every publisher has created its sectors (creating them
        // is the one step a publisher does not retry).
        let created = publishers
            .iter()
            .all(|p| p.log_text().contains("INFO sealing"));
        if !partner_killed && created && started.elapsed() > Duration::from_secs(10) {
            partners[0].kill();
            partner_killed = true;
            println!(
                "chaos: {}'s partner publisher SIGKILLed at {:.0} s",
                MINERS[0],
                started.elapsed().as_secs_f64()
            );
            continue;
        }
        if !autoscaler_killed && started.elapsed() > Duration::from_secs(15) {
            active.kill();
            autoscaler_killed = true;
            println!(
                "chaos: the active autoscaler SIGKILLed at {:.0} s",
                started.elapsed().as_secs_f64()
            );
            continue;
        }
        if !broker_restarted && created && started.elapsed() > Duration::from_secs(20) {
            mesh.servers[0].kill();
            tokio::time::sleep(Duration::from_secs(2)).await;
            mesh.servers[0].restart();
            broker_restarted = true;
            println!(
                "chaos: nats-server killed and restarted at {:.0} s",
                started.elapsed().as_secs_f64()
            );
            continue;
        }
        let slot = rng.below(WORKERS);
        let mut victim = std::mem::replace(&mut workers[slot], spawn(&mesh, slot));
        victim.kill();
        retired.push(victim);
        kills += 1;
    }
    let wall = started.elapsed();
    assert!(
        broker_restarted && partner_killed && autoscaler_killed,
        "the run ended before every fault: broker restart {broker_restarted}, publisher kill \
         {partner_killed}, autoscaler kill {autoscaler_killed}"
    );
    assert_eq!(
        log_lines_of(&mesh, "standby", "took the group over").len(),
        1,
        "the standby autoscaler did not take the group over: {}",
        standby.tail(20)
    );

    let mut dropped = 0;
    for ((miner, publisher), partner) in MINERS.iter().zip(publishers.iter_mut()).zip(&partners) {
        let status = publisher.try_status().unwrap();
        assert!(status.success(), "{miner}: {}", publisher.tail(30));
        // Every sector once in the output, once in the log, sealed in the bucket.
        let out = lines(&mesh.path(&format!("{miner}.jsonl")));
        let mut numbers: Vec<u64> = out
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["sector"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        numbers.sort();
        numbers.dedup();
        assert_eq!(out.len(), SECTORS_PER_MINER, "{miner}: one line per sector");
        assert_eq!(numbers.len(), SECTORS_PER_MINER, "{miner}: no sector twice");
        // Each sector sealed by one of the two publishers.
        let log = publisher.log_text() + &partner.log_text();
        assert_eq!(log.matches("sector sealed").count(), SECTORS_PER_MINER);
        let listed = mesh.publisher(&["sectors", "--miner", miner, "--json"]);
        assert_eq!(
            listed.lines().filter(|l| l.contains("\"sealed\"")).count(),
            SECTORS_PER_MINER
        );
        dropped += log.matches("dropping late result").count();
    }
    let broker = mesh.broker().await;
    let mut dlq = broker.js().get_stream(names::DLQ_STREAM).await.unwrap();
    assert_eq!(
        dlq.info().await.unwrap().state.messages,
        0,
        "no dead letters"
    );

    // Tasks run by the group's workers count too: their logs are the group's.
    let group_logs: Vec<String> = std::fs::read_dir(mesh.path("workers"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    let all: Vec<&Proc> = workers.iter().chain(&retired).collect();
    let texts: Vec<String> = all
        .iter()
        .map(|w| w.log_text())
        .chain(group_logs.iter().cloned())
        .collect();
    let started_lines: usize = texts
        .iter()
        .map(|t| t.matches("task started").count())
        .sum();
    let redeliveries: usize = texts
        .iter()
        .map(|t| {
            t.lines()
                .filter(|l| l.contains("task started") && !l.contains("attempt=1}"))
                .count()
        })
        .sum();
    let by_group: usize = group_logs
        .iter()
        .map(|t| t.matches("task started").count())
        .sum();
    let sectors = MINERS.len() * SECTORS_PER_MINER;
    println!(
        "FIGURE chaos soak: {sectors} sectors of {} miners on {WORKERS} workers (4 slots each) \
         and an autoscaled group (up to 2, {by_group} task starts): all sealed exactly once in \
         {:.0} s; {kills} worker SIGKILLs, 1 publisher SIGKILL, 1 autoscaler SIGKILL, 1 broker \
         restart; {started_lines} task starts for {} tasks, {redeliveries} redeliveries, \
         {dropped} late results dropped, 0 dead letters",
        MINERS.len(),
        wall.as_secs_f64(),
        sectors * 6
    );
}
