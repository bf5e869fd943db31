//! One task attempt: decode and check the task, download its inputs into a fresh scratch
//! directory (preparing: it holds no threads or GPU yet), wait for its threads and GPU, run the
//! proof in a child process capped to its threads (and pinned, with `--pin-cpus`), upload the
//! outputs, publish the result and ack, sending progress acks all along. The outcome maps to
//! JetStream as done → ack, retryable → nak with a delay, permanent → dead letter + failed
//! result + term.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::holdings::Held;
use super::metrics::{Direction, Metrics};
use super::{Claimed, Ctx, artefacts};
use crate::broker::workers::RunningTask;
use crate::broker::{deferred, headers};
use crate::model::{MinerId, ObjectRef, SectorSize, decode, encode, one_line};
use crate::names;
use crate::phases::{Artefact, Output, Phase};
use crate::proofs::job::FailureKind;
use crate::proofs::params;
use crate::sector::{
    Outcome, SectorRecord, SectorState, Task, TaskHead, TaskResult, Timings, message_version,
};
use crate::store::StoreError;

enum Failure {
    /// Another attempt may succeed.
    Retry(String),
    /// No attempt can succeed.
    Permanent(String),
    /// The worker is shutting down hard: hand the task back at once.
    Aborted,
}

/// Runs one delivered task message to its end.
pub(super) async fn run(
    ctx: Arc<Ctx>,
    msg: jetstream::Message,
    phase: Phase,
    size: SectorSize,
    claimed: &Claimed,
    abort: CancellationToken,
) {
    let msg = Arc::new(msg);
    let delivered = msg.info().map(|i| i.delivered.max(1) as u32).unwrap_or(1);
    // Deliveries that a worker handed back unrun (a task newer than it reads, or for the other
    // executor) are no attempts.
    let handed_back = if delivered > 1 {
        deferred::counted(&ctx.deferred, &msg).await
    } else {
        0
    };
    let attempt = delivered.saturating_sub(handed_back).max(1);
    if let Some(published) = msg.info().ok().map(|i| i.published) {
        // Since it was published or last handed back (a redelivery's timestamp is the original
        // publication's, so this counts the earlier attempts too).
        let published_ms = (published.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
        let waited = Duration::from_millis(crate::now_ms().saturating_sub(published_ms));
        ctx.config.metrics.taken(phase, size, waited);
    }
    let _progress = Progress::start(msg.clone(), ctx.progress_every, ctx.config.metrics.clone());
    let ended = attempt_task(&ctx, &msg, phase, size, claimed, abort, attempt).await;
    if ended && handed_back > 0 {
        deferred::clear(&ctx.deferred, &msg).await;
    }
}

/// Runs the task of `msg` as attempt `attempt`; says whether the message ended (acked or
/// terminated) rather than went back to its stream.
async fn attempt_task(
    ctx: &Arc<Ctx>,
    msg: &Arc<jetstream::Message>,
    phase: Phase,
    size: SectorSize,
    claimed: &Claimed,
    abort: CancellationToken,
    attempt: u32,
) -> bool {
    let taken = Instant::now();
    // The subject says whose task it is: only that miner may publish there (docs/security.md).
    // A body naming another miner is a forgery, and that miner's sector is not told anything.
    let publisher = names::task_publisher(&msg.subject);

    let task = match decode::<Task>(&msg.payload) {
        Ok(task) if Some(task.miner) != publisher => {
            let reason = format!(
                "task body names miner {} but came on {}",
                task.miner, msg.subject
            );
            error!(subject = %msg.subject, %reason, "dead-lettering task");
            return fail_permanently(ctx, msg, phase, size, None, attempt, &reason).await;
        }
        Ok(task) => task,
        Err(e) => {
            let reason = format!("undecodable task on {}: {e}", msg.subject);
            // If the body still says whose task it is, that sector fails with the reason.
            let head = decode::<TaskHead>(&msg.payload)
                .ok()
                .filter(|head| Some(head.miner) == publisher);
            error!(subject = %msg.subject, %reason, task = ?head.as_ref().map(|h| &h.id), "dead-lettering task");
            return fail_permanently(ctx, msg, phase, size, head.as_ref(), attempt, &reason).await;
        }
    };
    let span = info_span!(
        "task",
        task = %task.id,
        miner = %task.miner,
        sector = %task.sector,
        phase = %task.phase,
        attempt
    );
    async move {
        let head = task.head();
        // A task whose sector moved on meanwhile (a redelivery whose ack was lost in a broker
        // failover, say) failing because its inputs were cleaned up is no dead letter.
        let dead_letter = async |reason: &str| match superseded(ctx, &task).await {
            Some(why) => {
                info!(%why, failure = %reason, "task failed but is no longer needed; dropping it");
                term(ctx, msg, &format!("superseded: {why}")).await;
                true
            }
            None => fail_permanently(ctx, msg, phase, size, Some(&head), attempt, reason).await,
        };
        if let Err(e) = task.validate(size) {
            let reason = format!("invalid task: {e}");
            error!(%reason, "dead-lettering task");
            return dead_letter(&reason).await;
        }
        if task.phase != phase {
            let reason = format!(
                "task for phase {} arrived on the {phase} stream",
                task.phase
            );
            return dead_letter(&reason).await;
        }
        if task.synthetic != ctx.config.executor.is_synthetic() {
            // Never dead-lettered for this, and no attempt: a worker of the other kind will
            // take it.
            let task_is = if task.synthetic { "synthetic" } else { "real" };
            let executor = ctx.config.executor.name();
            warn!(
                task_is,
                executor,
                retry_in = ?deferred::DEFER_DELAY,
                "task is not for this worker's executor; handing it back (do not mix synthetic \
                 and real workers on one mesh)"
            );
            let reason = format!("a {task_is} task, and this worker's executor is {executor}");
            ctx.config.metrics.handed_back(phase, size);
            deferred::leave(&ctx.deferred, msg, &ctx.config.id, &reason).await;
            return false;
        }
        if attempt > task.max_attempts {
            let reason = format!(
                "delivered {attempt} times without finishing (limit {}): the workers that ran \
                 it died or lost contact",
                task.max_attempts
            );
            error!(%reason, "dead-lettering task");
            return dead_letter(&reason).await;
        }
        if let Some(why) = superseded(ctx, &task).await {
            info!(%why, "task no longer needed; dropping it");
            term(ctx, msg, &format!("superseded: {why}")).await;
            return true;
        }
        debug!(size = %size, deals = task.has_deals, "task taken; preparing its inputs");
        // A sector that moves on while its task runs (its holder lost, a phase redriven or
        // failed) stops the task: its result would be fenced off anyway.
        let stop = abort.child_token();
        let moved_on = MovedOn::watch(ctx.clone(), task.clone(), stop.clone());
        let outcome = execute(ctx, &task, attempt, claimed, &stop).await;
        ctx.registry.finished(&task.id);
        let outcome = match (outcome, moved_on.why()) {
            (Err(Failure::Aborted), Some(why)) if !abort.is_cancelled() => {
                info!(%why, "the sector moved on; task stopped and dropped");
                term(ctx, msg, &format!("superseded: {why}")).await;
                return true;
            }
            (outcome, _) => outcome,
        };
        match outcome {
            Ok(result) => {
                let finalized = task.phase == Phase::Finalize
                    && task.holder.as_ref() == Some(&ctx.config.id)
                    && matches!(result.outcome, Outcome::Done { .. });
                let finished = finish(ctx, msg, &result, size).await;
                if finished {
                    ctx.config.metrics.done(phase, size, taken.elapsed());
                }
                if finished && finalized {
                    // The replica and trimmed cache are in the store: the sector leaves here.
                    let_go(ctx, &task);
                }
                finished
            }
            Err(Failure::Aborted) => {
                warn!("aborted; handing the task back");
                ctx.config.metrics.handed_back(phase, size);
                let _ = msg.ack_with(AckKind::Nak(None)).await;
                false
            }
            Err(Failure::Retry(reason)) if attempt >= task.max_attempts => {
                let reason = format!("gave up after {attempt} attempts; last error: {reason}");
                error!(%reason, "dead-lettering task");
                dead_letter(&reason).await
            }
            Err(Failure::Retry(reason)) => {
                let delay = ctx.config.retry_delay(attempt);
                warn!(%reason, retry_in = ?delay, "task failed; will retry");
                ctx.config.metrics.retried(phase, size);
                if let Err(e) = msg.ack_with(AckKind::Nak(Some(delay))).await {
                    warn!(error = %e, "nak not sent; the task returns after the ack wait");
                }
                false
            }
            Err(Failure::Permanent(reason)) => {
                error!(%reason, "task failed for good; dead-lettering");
                dead_letter(&reason).await
            }
        }
    }
    .instrument(span)
    .await
}

/// Removes a held sector's directory and gives its disk back.
fn let_go(ctx: &Ctx, task: &Task) {
    let freed = ctx.holdings.free(task.miner, task.sector);
    ctx.ledger.lock().expect("ledger lock").unkeep(freed);
    super::ring_room(ctx);
}

/// Publishes the result, then acks; says whether the result was published. A result that
/// cannot be published is not acked: the task comes back after the ack wait and runs again
/// (the publisher keeps only one result).
async fn finish(
    ctx: &Ctx,
    msg: &jetstream::Message,
    result: &TaskResult,
    size: SectorSize,
) -> bool {
    let subject = names::result_subject(result.miner, result.sector, result.phase);
    let published = ctx
        .broker
        .publish_durable(
            subject,
            &result.message_id(),
            Some(headers::result(result)),
            encode(result).into(),
            ctx.config.publish_attempts,
        )
        .await;
    if let Err(e) = published {
        error!(error = %e, "result not published; the task will run again");
        return false;
    }
    if let Err(e) = msg.double_ack().await {
        warn!(error = %e, "ack not confirmed; the task may run again (its result is fenced)");
        ctx.config.metrics.lease_lost(result.phase, size);
    }
    info!(
        download_ms = result.timings.download_ms,
        run_ms = result.timings.run_ms,
        upload_ms = result.timings.upload_ms,
        "task done"
    );
    true
}

/// Dead-letters the message with its reason, tells the publisher (when the task is known) and
/// terminates the message. If the dead letter or the result cannot be stored, the message is
/// naked instead, so nothing is lost.
/// Says whether the message ended (terminated) rather than went back.
async fn fail_permanently(
    ctx: &Ctx,
    msg: &jetstream::Message,
    phase: Phase,
    size: SectorSize,
    task: Option<&TaskHead>,
    attempt: u32,
    reason: &str,
) -> bool {
    let reason = one_line(reason);
    let miner: Option<MinerId> = task.map(|t| t.miner);
    // A malformed id (of any length, up to a whole message) goes into no header and no result:
    // the letter must always fit, and no sector waits for such a task.
    let task = task.filter(|t| t.generation().is_some());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(names::REASON_HEADER, reason.as_str());
    headers.insert(names::ATTEMPTS_HEADER, attempt.to_string().as_str());
    let (stream, seq) = msg
        .info()
        .map(|i| (i.stream.to_string(), i.stream_sequence))
        .unwrap_or_default();
    headers.insert(names::SOURCE_STREAM_HEADER, stream.as_str());
    if let Some(task) = task {
        headers::letter(&mut headers, task);
    }
    let max_payload = ctx.broker.client().server_info().max_payload;
    let body = letter_body(&msg.payload, max_payload, &mut headers);
    let dead = ctx
        .broker
        .publish_durable(
            names::dlq_subject(phase, size, miner),
            &format!("dlq.{stream}.{seq}"),
            Some(headers),
            body,
            ctx.config.publish_attempts,
        )
        .await;
    let told = match (dead, task) {
        (Err(e), _) => Err(e),
        (Ok(_), None) => Ok(()),
        (Ok(_), Some(task)) => {
            let result = TaskResult {
                version: message_version(),
                task: task.id.clone(),
                miner: task.miner,
                sector: task.sector,
                phase: task.phase,
                attempt,
                worker: ctx.config.id.clone(),
                outcome: Outcome::Failed {
                    reason: reason.clone(),
                },
                timings: Timings::default(),
                finished_ms: crate::now_ms(),
            };
            ctx.broker
                .publish_durable(
                    names::result_subject(task.miner, task.sector, task.phase),
                    &result.message_id(),
                    Some(headers::result(&result)),
                    encode(&result).into(),
                    ctx.config.publish_attempts,
                )
                .await
                .map(|_| ())
        }
    };
    if let Err(e) = told {
        error!(error = %e, "could not dead-letter the task; it will be retried");
        let _ = msg
            .ack_with(AckKind::Nak(Some(ctx.config.retry_delay(attempt))))
            .await;
        return false;
    }
    term(ctx, msg, &reason).await;
    ctx.config.metrics.dead_lettered(phase, size);
    true
}

/// Room a dead letter leaves for its subject and headers (the reason is at most 1000
/// characters, 4 KiB of UTF-8).
const LETTER_HEADROOM: usize = 16 << 10;
/// How much of a body too large to dead-letter whole the letter keeps.
const LETTER_KEPT: usize = 4 << 10;

/// The body a dead letter carries: the task's whole body when it fits the server's
/// `max_payload` with room for headers; otherwise its first [`LETTER_KEPT`] bytes, with its
/// size and sha256 in [`names::TRUNCATED_HEADER`], so that the letter can always be stored
/// (a letter that cannot would leave the task redelivered forever).
fn letter_body(
    payload: &bytes::Bytes,
    max_payload: usize,
    headers: &mut async_nats::HeaderMap,
) -> bytes::Bytes {
    if payload.len() + LETTER_HEADROOM <= max_payload {
        return payload.clone();
    }
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(payload));
    headers.insert(
        names::TRUNCATED_HEADER,
        format!("{} sha256:{digest}", payload.len()).as_str(),
    );
    payload.slice(..LETTER_KEPT.min(payload.len()))
}

/// Removes the message from its work queue with `+TERM <reason>` (the reason reaches the
/// server's MSG_TERMINATED advisory; async-nats' `AckKind::Term` carries none).
async fn term(ctx: &Ctx, msg: &jetstream::Message, reason: &str) {
    if let Some(reply) = &msg.reply {
        let client = ctx.broker.client();
        let term = format!("+TERM {}", one_line(reason));
        if client.publish(reply.clone(), term.into()).await.is_ok() {
            let _ = client.flush().await;
        }
    }
}

/// Why `task` no longer needs running: its sector has moved on (sealed, failed, or waiting for
/// another task). `None` while the sector waits for this very task, and whenever the sector
/// cannot be read: then the task runs, and the publisher fences its result.
async fn superseded(ctx: &Ctx, task: &Task) -> Option<String> {
    let key = names::sector_key(task.miner, task.sector);
    let entry = ctx.sectors.get(&key).await.ok()??;
    let record: SectorRecord = decode(&entry).ok()?;
    match record.state {
        SectorState::Active { task: current, .. } if current == task.id => None,
        SectorState::Active { task: current, .. } => {
            Some(format!("sector {key} waits for task {current} now"))
        }
        SectorState::Sealed { .. } => Some(format!("sector {key} is sealed")),
        SectorState::Failed { phase, .. } => Some(format!("sector {key} failed in {phase}")),
        SectorState::Stopped { after, .. } => Some(format!("sector {key} stopped after {after}")),
    }
}

/// Where a task runs.
enum Place {
    /// A fresh attempt directory, removed afterwards; the sector's data goes through the store.
    Attempt,
    /// A PreCommit1 of a sector this worker will hold: a fresh sector directory, kept.
    Keep(PathBuf),
    /// A later phase of a sector this worker holds: its sector directory.
    Holder(PathBuf),
    /// A task of a sector whose data this worker does not have, although the task says so.
    Lost(String),
}

fn place(ctx: &Ctx, task: &Task) -> Result<Place, Failure> {
    let keeps = SectorSize::of_proof(task.proof).is_some_and(|s| ctx.holds.contains(&s));
    if task.phase == Phase::PreCommit1 && keeps {
        let dir = ctx
            .holdings
            .begin(task.miner, task.sector)
            .map_err(|e| Failure::Retry(format!("create the sector directory: {e}")))?;
        return Ok(Place::Keep(dir));
    }
    Ok(match &task.holder {
        Some(holder) if task.phase.held() && *holder == ctx.config.id => {
            match ctx.holdings.get(task.miner, task.sector) {
                Some(dir) => Place::Holder(dir),
                None => Place::Lost(format!(
                    "its sector directory is gone from {}",
                    ctx.scratch.path().display()
                )),
            }
        }
        Some(holder) if task.phase.held() => Place::Lost(format!(
            "the task for the sector that {holder} holds came to {}",
            ctx.config.id
        )),
        _ => Place::Attempt,
    })
}

async fn execute(
    ctx: &Ctx,
    task: &Task,
    attempt: u32,
    claimed: &Claimed,
    abort: &CancellationToken,
) -> Result<TaskResult, Failure> {
    let nonce = format!("{:08x}", rand::random::<u32>());
    let turn = Turn {
        attempt,
        nonce: &nonce,
        claimed,
    };
    match place(ctx, task)? {
        Place::Attempt => {
            let dir = ctx
                .scratch
                .attempt(&format!("{}-{nonce}", task.id))
                .map_err(|e| Failure::Retry(format!("create scratch directory: {e}")))?;
            let result = tokio::select! {
                r = execute_in(ctx, task, &turn, dir.path(), false, abort) => r,
                () = abort.cancelled() => Err(Failure::Aborted),
            };
            dir.remove().await;
            result
        }
        Place::Keep(dir) => {
            let result = tokio::select! {
                r = execute_in(ctx, task, &turn, &dir, true, abort) => r,
                () = abort.cancelled() => Err(Failure::Aborted),
            };
            let size = SectorSize::of_proof(task.proof).expect("a size the worker holds");
            let held = Held {
                size,
                pc1: task.id.clone(),
            };
            match result {
                Ok(mut result) => match ctx.holdings.keep(task.miner, task.sector, held) {
                    Ok(()) => {
                        ctx.ledger
                            .lock()
                            .expect("ledger lock")
                            .keep(Phase::kept(size));
                        if let Outcome::Done {
                            output: Output::PreCommit1(out),
                            ..
                        } = &mut result.outcome
                        {
                            out.held = true;
                        }
                        info!(dir = %dir.display(), "holding the sector here until Finalize");
                        Ok(result)
                    }
                    Err(e) => {
                        ctx.holdings.free(task.miner, task.sector);
                        Err(Failure::Retry(format!("mark the sector directory: {e}")))
                    }
                },
                Err(failure) => {
                    ctx.holdings.free(task.miner, task.sector);
                    Err(failure)
                }
            }
        }
        Place::Holder(dir) => {
            tokio::select! {
                r = execute_in(ctx, task, &turn, &dir, true, abort) => r,
                () = abort.cancelled() => Err(Failure::Aborted),
            }
        }
        Place::Lost(reason) => {
            warn!(%reason, "the sector's data is not here; the sector goes back to PreCommit1");
            Ok(TaskResult {
                version: message_version(),
                task: task.id.clone(),
                miner: task.miner,
                sector: task.sector,
                phase: task.phase,
                attempt,
                worker: ctx.config.id.clone(),
                outcome: Outcome::Lost { reason },
                timings: Timings::default(),
                finished_ms: crate::now_ms(),
            })
        }
    }
}

/// Which run of a task this is: its delivery, a nonce naming its files, and its claim.
struct Turn<'a> {
    attempt: u32,
    nonce: &'a str,
    claimed: &'a Claimed,
}

async fn execute_in(
    ctx: &Ctx,
    task: &Task,
    turn: &Turn<'_>,
    dir: &std::path::Path,
    on_holder: bool,
    abort: &CancellationToken,
) -> Result<TaskResult, Failure> {
    let Turn {
        attempt,
        nonce,
        claimed,
    } = *turn;
    let started = Instant::now();
    let mut read_bytes = 0;
    for input in &task.inputs {
        let here = Artefact::of(&input.name).is_some_and(Artefact::stays_on_holder);
        if on_holder && task.phase != Phase::PreCommit1 && here {
            continue;
        }
        read_bytes += input.size;
        // `validate` refused unsafe names already; this holds even if it had not run.
        let path = super::scratch::join_inside(dir, &input.name).ok_or_else(|| {
            Failure::Permanent(format!(
                "input name {:?} leaves the scratch directory",
                input.name
            ))
        })?;
        let moving = Instant::now();
        with_store(ctx, &format!("input {}", input.name), abort, || {
            ctx.store.get_object(input, &path)
        })
        .await?;
        let took = moving.elapsed();
        ctx.config
            .metrics
            .moved(Direction::Download, input.size, took);
    }
    if let (true, super::Executor::Proofs(runner)) =
        (task.phase.needs_params(), &ctx.config.executor)
    {
        let files = params::param_files(task.proof)
            .map_err(|e| Failure::Permanent(format!("parameter names: {e:#}")))?;
        let size = SectorSize::of_proof(task.proof).unwrap_or(SectorSize::KiB2);
        params::pull(&ctx.store, &runner.param_cache, &files.names(), size)
            .await
            .map_err(|e| match e {
                params::PullError::Unavailable(u) => Failure::Permanent(u.to_string()),
                params::PullError::Other(e) => Failure::Retry(format!("pull parameters: {e:#}")),
            })?;
    }
    let download_ms = started.elapsed().as_millis() as u64;

    // Inputs are here: now the task claims its threads and GPU, waiting for running tasks to
    // give them back if need be.
    let placement = claimed.start(ctx, abort).await.ok_or(Failure::Aborted)?;
    let gpus: Vec<String> = placement
        .gpus
        .iter()
        .filter_map(|&i| ctx.config.machine.gpu_ids.get(i).cloned())
        .collect();
    let size = SectorSize::of_proof(task.proof).unwrap_or(SectorSize::KiB2);
    let usage = ctx.ledger.lock().expect("ledger lock").usage();
    // What this worker's tasks hold with this one, for operators and the placement tests.
    info!(
        size = %size,
        deals = task.has_deals,
        tasks = usage.tasks,
        threads = usage.threads,
        cpus = %super::cpu_list(&placement.cpus),
        gpus = %gpus.join(","),
        min_memory = usage.min_memory,
        max_memory = usage.max_memory,
        gpu = usage.gpu,
        "task started"
    );
    ctx.config.metrics.started(task.phase, size);
    ctx.registry.hold(usage);
    ctx.registry.started(RunningTask {
        task: task.id.clone(),
        miner: task.miner,
        sector: task.sector,
        phase: task.phase,
        size,
        attempt,
        since_ms: crate::now_ms(),
    });
    let pin = crate::proofs::child::Pin {
        threads: claimed.claim.threads,
        machine_threads: ctx.config.machine.cpu_threads,
        cpus: placement.cpus,
        gpus,
    };

    let ran = Instant::now();
    let began = std::time::SystemTime::now();
    let job = artefacts::job(task, dir);
    let exec_dir = dir.join(format!(".exec-{nonce}"));
    tokio::fs::create_dir_all(&exec_dir)
        .await
        .map_err(|e| Failure::Retry(format!("create {}: {e}", exec_dir.display())))?;
    let output = ctx.config.executor.run(&job, &exec_dir, &pin, abort).await;
    let _ = tokio::fs::remove_dir_all(&exec_dir).await;
    if let Err(f) = &output {
        ctx.config.metrics.proof_failed(task.phase, size, f.kind);
    }
    let output = output.map_err(|f| match f.kind {
        FailureKind::Retryable => Failure::Retry(f.message),
        FailureKind::Permanent => Failure::Permanent(f.message),
        FailureKind::MissingParams => Failure::Permanent(format!(
            "{}; the worker's parameter cache lacks them: run `mesh-worker params pull \
                 --store URL`",
            f.message,
        )),
    })?;
    let run_ms = ran.elapsed().as_millis() as u64;

    let uploaded = Instant::now();
    let backup = task.back_up
        || (ctx.config.back_up_held && matches!(task.phase, Phase::PreCommit1 | Phase::PreCommit2));
    let files = artefacts::outputs(task, dir, on_holder, backup.then_some(began))
        .await
        .map_err(|e| Failure::Retry(format!("collect outputs: {e:#}")))?;
    let mut outputs: Vec<ObjectRef> = Vec::with_capacity(files.len());
    let prefix = format!(
        "{}{}-{nonce}",
        names::sector_prefix(task.miner, task.sector),
        task.phase
    );
    for (name, path) in files {
        let key = format!("{prefix}/{name}");
        let moving = Instant::now();
        let object = with_store(ctx, &format!("upload {name}"), abort, || {
            ctx.store.put_file(&name, &key, &path)
        })
        .await?;
        ctx.config
            .metrics
            .moved(Direction::Upload, object.size, moving.elapsed());
        outputs.push(object);
    }
    let upload_ms = uploaded.elapsed().as_millis() as u64;
    let written_bytes = outputs.iter().map(|o| o.size).sum();
    debug!(outputs = outputs.len(), "outputs uploaded");
    Ok(TaskResult {
        version: message_version(),
        task: task.id.clone(),
        miner: task.miner,
        sector: task.sector,
        phase: task.phase,
        attempt,
        worker: ctx.config.id.clone(),
        outcome: Outcome::Done { outputs, output },
        timings: Timings {
            download_ms,
            run_ms,
            upload_ms,
            read_bytes,
            written_bytes,
        },
        finished_ms: crate::now_ms(),
    })
}

/// Runs a store operation and waits out a store outage: an unreachable store is tried again
/// with backoff (1 s doubling to 30 s) for up to `store_patience`, while progress acks keep the
/// task with this worker, so an outage costs no attempt. Missing or corrupt objects fail for
/// good; local disk errors give the task back for another attempt.
async fn with_store<T, F, Fut>(
    ctx: &Ctx,
    what: &str,
    abort: &CancellationToken,
    mut op: F,
) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    // A loop over backon's delays rather than its `Retry` future: this runs inside the spawned
    // attempt, and rustc cannot prove that `Retry` over these borrowing closures is `Send`.
    let started = Instant::now();
    let mut delays = ExponentialBuilder::new()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(30))
        .without_max_times()
        .build();
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(e) if e.is_permanent() => return Err(Failure::Permanent(format!("{what}: {e}"))),
            Err(e @ StoreError::Unavailable { .. })
                if started.elapsed() < ctx.config.store_patience =>
            {
                let retry_in = delays.next().expect("backoff without a limit");
                warn!(error = %e, ?retry_in, "store unavailable; waiting for it");
                tokio::select! {
                    () = tokio::time::sleep(retry_in) => {}
                    () = abort.cancelled() => return Err(Failure::Aborted),
                }
            }
            Err(e) => return Err(Failure::Retry(format!("{what}: {e}"))),
        }
    }
}

/// Reads the task's sector record once per ack wait (every fourth progress ack) while the
/// task runs, and cancels `stop` when the sector no longer waits for the task.
struct MovedOn {
    why: Arc<std::sync::OnceLock<String>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl MovedOn {
    fn watch(ctx: Arc<Ctx>, task: Task, stop: CancellationToken) -> Self {
        let why = Arc::new(std::sync::OnceLock::new());
        let found = why.clone();
        let every = ctx.progress_every * 4;
        let watcher = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Some(reason) = superseded(&ctx, &task).await {
                    let _ = found.set(reason);
                    stop.cancel();
                    break;
                }
            }
        });
        MovedOn { why, watcher }
    }

    /// Why the task was stopped, if the sector moved on.
    fn why(&self) -> Option<String> {
        self.why.get().cloned()
    }
}

impl Drop for MovedOn {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Sends `+WPI` every `every` until dropped, so a short ack wait never expires under a task
/// that is still being worked on.
struct Progress {
    stop: CancellationToken,
}

impl Progress {
    fn start(msg: Arc<jetstream::Message>, every: Duration, metrics: Metrics) -> Self {
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {
                        match msg.ack_with(AckKind::Progress).await {
                            Ok(()) => metrics.progress_ack(),
                            Err(e) => debug!(error = %e, "progress ack not sent"),
                        }
                    }
                    () = token.cancelled() => break,
                }
            }
        });
        Progress { stop }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
