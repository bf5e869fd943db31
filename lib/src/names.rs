//! Every subject, stream, consumer and bucket name of the mesh, built in this one place so that
//! the code, the files in `nats/` and `nats stream report` always agree.

use crate::model::{MinerId, SectorNum, SectorSize, TaskClass, WorkerId};
use crate::phases::Phase;

/// Results of every task, for every miner: `mesh.result.<miner>.<sector>.<phase>`.
pub const RESULT_STREAM: &str = "MESH_RESULT";
/// Tasks that failed for good, with their reason: `mesh.dlq.<phase>.<size>.<miner>`.
pub const DLQ_STREAM: &str = "MESH_DLQ";
/// Sector state per `<miner>.<sector>`, written with compare-and-set.
pub const SECTORS_BUCKET: &str = "mesh-sectors";
/// Live workers per worker id, kept alive by heartbeats.
pub const WORKERS_BUCKET: &str = "mesh-workers";
/// Miners sharing the pool, with their weights, per miner id.
pub const MINERS_BUCKET: &str = "mesh-miners";
/// Drain marks per worker id, set by the autoscaler: the worker stops taking tasks.
pub const DRAIN_BUCKET: &str = "mesh-drain";
/// One key per autoscaled group naming the autoscaler that sizes it (`autoscaler::lease`).
pub const LEASES_BUCKET: &str = "mesh-leases";
/// Tasks a worker left for a newer one (a message version it cannot read), per
/// `<miner>.<stream>.<sequence>`: how many deliveries were deferrals and so no attempts
/// (`broker::deferred`).
pub const DEFERRED_BUCKET: &str = "mesh-deferred";

/// Header carrying the reason a task was dead-lettered.
pub const REASON_HEADER: &str = "Mesh-Reason";
/// Header carrying how many times a dead-lettered task was delivered.
pub const ATTEMPTS_HEADER: &str = "Mesh-Attempts";
/// Header naming the stream a dead-lettered task came from.
pub const SOURCE_STREAM_HEADER: &str = "Mesh-Stream";
/// Header of a dead letter whose task body was too large to carry whole: the body's size and
/// sha256 (`<bytes> sha256:<hex>`); the letter holds only its first bytes.
pub const TRUNCATED_HEADER: &str = "Mesh-Truncated";

/// Headers that say what a task, result or dead letter is, for `nats stream view` (the
/// MessagePack body stays the authority; the mesh never reads these back).
pub const MINER_HEADER: &str = "Mesh-Miner";
pub const SECTOR_HEADER: &str = "Mesh-Sector";
pub const PHASE_HEADER: &str = "Mesh-Phase";
pub const SIZE_HEADER: &str = "Mesh-Size";
pub const TASK_HEADER: &str = "Mesh-Task";
/// The attempt a result comes from.
pub const ATTEMPT_HEADER: &str = "Mesh-Attempt";
pub const WORKER_HEADER: &str = "Mesh-Worker";
/// `done`, `failed` or `lost`.
pub const OUTCOME_HEADER: &str = "Mesh-Outcome";
/// The message version of the body.
pub const VERSION_HEADER: &str = "Mesh-Version";

/// `MESH_TASK_PC1_2KIB`
pub fn task_stream(phase: Phase, size: SectorSize) -> String {
    format!(
        "MESH_TASK_{}_{}",
        phase.token().to_ascii_uppercase(),
        size.token().to_ascii_uppercase()
    )
}

/// `mesh.task.pc1.2kib.*.*`: what a task stream holds (miner and class follow).
pub fn task_stream_subjects(phase: Phase, size: SectorSize) -> String {
    format!("mesh.task.{phase}.{}.*.*", size.token())
}

/// `mesh.task.pc1.2kib.f01000.deals`: where one miner's tasks of a phase, size and class go.
pub fn task_subject(phase: Phase, size: SectorSize, miner: MinerId, class: TaskClass) -> String {
    format!("mesh.task.{phase}.{}.{miner}.{class}", size.token())
}

/// Reads a task subject back: phase, size, miner and class.
pub fn parse_task_subject(subject: &str) -> Option<(Phase, SectorSize, MinerId, TaskClass)> {
    let mut parts = subject.split('.');
    if (parts.next()?, parts.next()?) != ("mesh", "task") {
        return None;
    }
    let phase = parts.next()?.parse().ok()?;
    let size = parts.next()?.parse().ok()?;
    let miner = parts.next()?.parse().ok()?;
    let class = parts.next()?.parse().ok()?;
    parts
        .next()
        .is_none()
        .then_some((phase, size, miner, class))
}

/// `workers-f01000-deals`: the durable pull consumer through which workers take one miner's
/// tasks of one class from a task stream (each task stream has one per miner and class).
pub fn task_consumer(miner: MinerId, class: TaskClass) -> String {
    format!("workers-{miner}-{class}")
}

/// Tasks bound to the worker that holds their sector's data (PreCommit2, Commit1 and Finalize of
/// a sector whose PreCommit1 cache stayed on that worker): `mesh.held.<worker>.<phase>.<size>.<miner>`.
pub const HELD_STREAM: &str = "MESH_HELD";

/// `mesh.held.>`: what the held-task stream holds.
pub const HELD_SUBJECTS: &str = "mesh.held.>";

/// `mesh.held.w1.pc2.2kib.f01000`: where one miner's task for the sector worker `w1` holds goes.
pub fn held_subject(worker: &WorkerId, phase: Phase, size: SectorSize, miner: MinerId) -> String {
    format!("mesh.held.{worker}.{phase}.{}.{miner}", size.token())
}

/// `mesh.held.w1.>`: the tasks worker `w1` alone takes.
pub fn held_filter(worker: &WorkerId) -> String {
    format!("mesh.held.{worker}.>")
}

/// `mesh.bell.pc1.2kib`: rung (a core message, not stored) when a task is published to the
/// task stream of a phase and size, so that idle workers of that stream look at once. Workers
/// listen here rather than on the task subjects: whoever may subscribe to a task subject itself
/// can make the server store anything in its stream (a push consumer delivering there).
pub fn bell(phase: Phase, size: SectorSize) -> String {
    format!("mesh.bell.{phase}.{}", size.token())
}

/// `f01000.deals`: the body of a task stream's bell, naming whose task was stored. A hint, not a
/// claim: the worker that hears it fetches from that miner's consumer of the class (whatever it
/// finds there is that miner's, since only a miner may store its tasks) and looks at the whole
/// stream if it finds nothing there.
pub fn bell_body(miner: MinerId, class: TaskClass) -> String {
    format!("{miner}.{class}")
}

/// Reads a bell's body back; `None` for an empty body (a publisher of an earlier release) or
/// anything else.
pub fn parse_bell_body(body: &[u8]) -> Option<(MinerId, TaskClass)> {
    let (miner, class) = std::str::from_utf8(body).ok()?.split_once('.')?;
    Some((miner.parse().ok()?, class.parse().ok()?))
}

/// `mesh.bell.held.w1`: rung when a task is published for worker `w1`, which holds its sector.
pub fn held_bell(worker: &WorkerId) -> String {
    format!("mesh.bell.held.{worker}")
}

/// `mesh.bell.>`: every bell.
pub const BELLS: &str = "mesh.bell.>";

/// Reads a held-task subject back: worker, phase, size and miner.
pub fn parse_held_subject(subject: &str) -> Option<(WorkerId, Phase, SectorSize, MinerId)> {
    let mut parts = subject.split('.');
    if (parts.next()?, parts.next()?) != ("mesh", "held") {
        return None;
    }
    let worker = WorkerId(parts.next()?.to_string());
    let phase = parts.next()?.parse().ok()?;
    let size = parts.next()?.parse().ok()?;
    let miner = parts.next()?.parse().ok()?;
    parts
        .next()
        .is_none()
        .then_some((worker, phase, size, miner))
}

/// `held-w1`: the durable consumer through which worker `w1` takes the tasks of the sectors it
/// holds (the worker creates it; its id is stable across restarts).
pub fn held_consumer(worker: &WorkerId) -> String {
    format!("held-{worker}")
}

/// The miner a task subject (of a task stream or the held stream) says published it.
pub fn task_publisher(subject: &str) -> Option<MinerId> {
    parse_task_subject(subject)
        .map(|(_, _, miner, _)| miner)
        .or_else(|| parse_held_subject(subject).map(|(_, _, _, miner)| miner))
}

/// `mesh.result.f01000.12.pc1`
pub fn result_subject(miner: MinerId, sector: SectorNum, phase: Phase) -> String {
    format!("mesh.result.{miner}.{sector}.{phase}")
}

/// `mesh.result.>`: what the result stream holds.
pub const RESULT_SUBJECTS: &str = "mesh.result.>";

/// `mesh.result.f01000.>`: one miner's results.
pub fn result_filter(miner: MinerId) -> String {
    format!("mesh.result.{miner}.>")
}

/// The durable consumer through which a miner's publishers read its results.
pub fn result_consumer(miner: MinerId) -> String {
    format!("publisher-{miner}")
}

/// `mesh.dlq.>`: what the dead-letter stream holds.
pub const DLQ_SUBJECTS: &str = "mesh.dlq.>";

/// `mesh.dlq.pc1.2kib.f01000`; `miner` is `unknown` when the task could not be decoded.
pub fn dlq_subject(phase: Phase, size: SectorSize, miner: Option<MinerId>) -> String {
    match miner {
        Some(miner) => format!("mesh.dlq.{phase}.{}.{miner}", size.token()),
        None => format!("mesh.dlq.{phase}.{}.unknown", size.token()),
    }
}

/// `f01000.12`: a sector's key in [`SECTORS_BUCKET`].
pub fn sector_key(miner: MinerId, sector: SectorNum) -> String {
    format!("{miner}.{sector}")
}

/// `f01000.next`: the key holding a miner's next free sector number.
pub fn sector_counter_key(miner: MinerId) -> String {
    format!("{miner}.next")
}

/// `f01000/12/`: the object store prefix holding one sector's data.
pub fn sector_prefix(miner: MinerId, sector: SectorNum) -> String {
    format!("{miner}/{sector}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bell_names_its_miner_and_class_and_anything_else_names_none() {
        let miner: MinerId = "f01000".parse().unwrap();
        let body = bell_body(miner, TaskClass::Deals);
        assert_eq!(body, "f01000.deals");
        assert_eq!(
            parse_bell_body(body.as_bytes()),
            Some((miner, TaskClass::Deals))
        );
        for bad in [
            &b""[..],
            b"f01000",
            b"f01000.zzz",
            b"x.cc",
            b"f01000.cc.x",
            b"\xff.cc",
        ] {
            assert_eq!(parse_bell_body(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names_follow_the_design() {
        let miner: MinerId = "f01000".parse().unwrap();
        let (phase, size) = (Phase::PreCommit1, SectorSize::KiB2);
        assert_eq!(task_stream(phase, size), "MESH_TASK_PC1_2KIB");
        assert_eq!(task_stream_subjects(phase, size), "mesh.task.pc1.2kib.*.*");
        assert_eq!(
            task_subject(phase, size, miner, TaskClass::Deals),
            "mesh.task.pc1.2kib.f01000.deals"
        );
        assert_eq!(
            parse_task_subject("mesh.task.pc1.2kib.f01000.cc"),
            Some((phase, size, miner, TaskClass::Cc))
        );
        assert_eq!(parse_task_subject("mesh.task.pc1.2kib.f01000"), None);
        assert_eq!(parse_task_subject("mesh.task.pc1.2kib.f01000.cc.x"), None);
        assert_eq!(task_consumer(miner, TaskClass::Cc), "workers-f01000-cc");
        assert_eq!(
            result_subject(miner, SectorNum(12), Phase::Commit2),
            "mesh.result.f01000.12.c2"
        );
        assert_eq!(result_filter(miner), "mesh.result.f01000.>");
        assert_eq!(dlq_subject(phase, size, None), "mesh.dlq.pc1.2kib.unknown");
        assert_eq!(sector_key(miner, SectorNum(12)), "f01000.12");
        assert_eq!(sector_prefix(miner, SectorNum(12)), "f01000/12/");
        let worker = WorkerId("box-1".into());
        let held = held_subject(&worker, Phase::PreCommit2, size, miner);
        assert_eq!(held, "mesh.held.box-1.pc2.2kib.f01000");
        assert_eq!(
            parse_held_subject(&held),
            Some((worker.clone(), Phase::PreCommit2, size, miner))
        );
        assert_eq!(task_publisher(&held), Some(miner));
        assert_eq!(task_publisher("mesh.task.pc1.2kib.f01000.cc"), Some(miner));
        assert_eq!(parse_held_subject("mesh.held.box-1.pc2.2kib"), None);
        assert_eq!(held_filter(&worker), "mesh.held.box-1.>");
        assert_eq!(held_consumer(&worker), "held-box-1");
    }
}
