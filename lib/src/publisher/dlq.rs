//! The dead letters for operators (`mesh-publisher dlq`): list them with their reasons, re-drive
//! the sectors whose cause was fixed (`retry`), and remove letters (`drop`). A letter's id is its
//! sequence in the `MESH_DLQ` stream.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use serde::Serialize;

use super::randomness::OsRandomness;
use super::{Driver, PublisherConfig};
use crate::broker::{Broker, BrokerError};
use crate::model::{MinerId, SectorSize, decode, one_line};
use crate::names;
use crate::phases::Phase;
use crate::proofs::child::ChildRunner;
use crate::render::table;
use crate::sector::{SectorState, Task, TaskId};
use crate::store::Store;

/// One message of the dead-letter stream.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The message's sequence in `MESH_DLQ`.
    pub id: u64,
    /// When it was dead-lettered (RFC 3339, UTC).
    pub time: String,
    pub subject: String,
    pub phase: Option<String>,
    pub size: Option<String>,
    /// `None` when the worker could not decode the task.
    pub miner: Option<String>,
    /// `None` when the body is not a task this version understands.
    pub sector: Option<u64>,
    pub task: Option<String>,
    pub attempts: Option<u32>,
    pub reason: String,
    /// The task stream the letter came from.
    pub stream: String,
    #[serde(skip)]
    decoded: Option<Task>,
}

impl DeadLetter {
    fn from_message(msg: jetstream::message::StreamMessage) -> Self {
        let header = |name: &str| msg.headers.get(name).map(|v| v.to_string());
        let parsed = parse_subject(&msg.subject);
        // Anyone who may publish to the stream can write a letter: only a task whose id is its
        // own sector's and phase's counts as decoded, and the reason is shown on one line.
        let decoded = decode::<Task>(&msg.payload)
            .ok()
            .filter(|task| task.generation().is_some());
        let time = SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(msg.time.unix_timestamp()).unwrap_or(0));
        DeadLetter {
            id: msg.sequence,
            time: humantime::format_rfc3339_seconds(time).to_string(),
            subject: msg.subject.to_string(),
            phase: parsed.map(|(phase, _, _)| phase.to_string()),
            size: parsed.map(|(_, size, _)| size.label().to_string()),
            miner: parsed
                .and_then(|(_, _, miner)| miner)
                .map(|m| m.to_string()),
            sector: decoded.as_ref().map(|t| t.sector.0),
            task: decoded.as_ref().map(|t| t.id.to_string()),
            attempts: header(names::ATTEMPTS_HEADER).and_then(|a| a.parse().ok()),
            reason: match header(names::TRUNCATED_HEADER) {
                // The worker kept only the start of a body too large to dead-letter whole.
                Some(whole) => one_line(&format!(
                    "{} (the task's body, {}, is cut to its first {} bytes here)",
                    header(names::REASON_HEADER).unwrap_or_default(),
                    whole,
                    msg.payload.len()
                )),
                None => one_line(&header(names::REASON_HEADER).unwrap_or_default()),
            },
            stream: header(names::SOURCE_STREAM_HEADER).unwrap_or_default(),
            decoded,
        }
    }
}

/// `mesh.dlq.pc1.2kib.f01000` → (pc1, 2KiB, Some(f01000)); the inverse of
/// [`names::dlq_subject`]. `None` for a subject of another shape.
pub fn parse_subject(subject: &str) -> Option<(Phase, SectorSize, Option<MinerId>)> {
    let rest = subject.strip_prefix(names::DLQ_SUBJECTS.trim_end_matches('>'))?;
    let mut parts = rest.split('.');
    let (phase, size, miner) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let miner = match miner {
        "unknown" => None,
        m => Some(m.parse().ok()?),
    };
    Some((phase.parse().ok()?, size.parse().ok()?, miner))
}

/// Every dead letter, oldest first.
pub async fn list(broker: &Broker) -> anyhow::Result<Vec<DeadLetter>> {
    let stream = broker.stream(names::DLQ_STREAM).await?;
    let mut out = Vec::new();
    let mut next = 1;
    loop {
        // The next stored message from `next` on, skipping deleted ones.
        match stream
            .get_first_raw_message_by_subject(names::DLQ_SUBJECTS, next)
            .await
        {
            Ok(msg) => {
                next = msg.sequence + 1;
                out.push(DeadLetter::from_message(msg));
            }
            Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                return Ok(out);
            }
            Err(e) => {
                return Err(BrokerError::api(format!("read {}", names::DLQ_STREAM), e).into());
            }
        }
    }
}

/// The letters as a plain aligned table.
pub fn render(letters: &[DeadLetter]) -> String {
    if letters.is_empty() {
        return format!("no dead letters in {}\n", names::DLQ_STREAM);
    }
    let dash = || "-".to_string();
    let mut rows = vec![
        [
            "id", "time", "phase", "size", "miner", "sector", "attempts", "reason",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for l in letters {
        rows.push(vec![
            l.id.to_string(),
            l.time.clone(),
            l.phase.clone().unwrap_or_else(dash),
            l.size.clone().unwrap_or_else(dash),
            l.miner.clone().unwrap_or_else(dash),
            l.sector
                .map_or_else(|| "undecodable".to_string(), |s| s.to_string()),
            l.attempts.map_or_else(dash, |a| a.to_string()),
            l.reason.clone(),
        ]);
    }
    table(&rows)
}

/// Which letters a `retry` or `drop` is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    Ids(Vec<u64>),
}

/// The selected letters, or an error naming the ids the stream does not hold.
fn select(letters: Vec<DeadLetter>, selection: &Selection) -> anyhow::Result<Vec<DeadLetter>> {
    let Selection::Ids(ids) = selection else {
        return Ok(letters);
    };
    let held: BTreeSet<u64> = letters.iter().map(|l| l.id).collect();
    let unknown: Vec<String> = ids
        .iter()
        .filter(|id| !held.contains(id))
        .map(u64::to_string)
        .collect();
    if !unknown.is_empty() {
        anyhow::bail!(
            "no dead letter with id {} in {}: the ids are the first column of `mesh-publisher \
             dlq list`",
            unknown.join(", "),
            names::DLQ_STREAM
        );
    }
    let wanted: BTreeSet<u64> = ids.iter().copied().collect();
    Ok(letters
        .into_iter()
        .filter(|l| wanted.contains(&l.id))
        .collect())
}

/// What `retry` did with one letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// The sector runs the phase again as `task`; the letter is removed (unless `note` says
    /// otherwise).
    Retried {
        miner: MinerId,
        sector: u64,
        task: TaskId,
        note: Option<String>,
    },
    /// Nothing to do: the sector is not failed at the letter's phase (already retried, or the
    /// letter is stale). The letter is kept.
    Skipped(String),
    /// The letter cannot be retried; the reason says what to do. The letter is kept.
    Refused(String),
}

impl Retry {
    /// One line for the operator.
    pub fn describe(&self, id: u64) -> String {
        match self {
            Retry::Retried {
                miner,
                sector,
                task,
                note,
            } => format!(
                "dead letter {id}: sector {miner}.{sector} retried as task {task}; {}",
                note.as_deref().unwrap_or("letter removed")
            ),
            Retry::Skipped(why) => format!("dead letter {id}: skipped: {why}; letter kept"),
            Retry::Refused(why) => format!("dead letter {id}: not retried: {why}"),
        }
    }
}

/// Re-drives the sectors of the selected letters: each sector that failed at its letter's
/// phase becomes active again at that phase with a new task generation, its task is published,
/// and the letter is removed. `store` and `runner` are what a [`Driver`] is made of; retrying
/// uses neither.
pub async fn retry(
    broker: &Broker,
    store: &Store,
    runner: &ChildRunner,
    selection: &Selection,
) -> anyhow::Result<Vec<(u64, Retry)>> {
    let letters = list(broker).await?;
    // Per (miner, sector, phase), the newest letter: only it tells the sector's last failure.
    let mut newest: BTreeMap<(MinerId, u64, Phase), u64> = BTreeMap::new();
    for letter in &letters {
        if let Some(task) = &letter.decoded {
            newest.insert((task.miner, task.sector.0, task.phase), letter.id);
        }
    }
    let stream = broker.stream(names::DLQ_STREAM).await?;
    let mut drivers: BTreeMap<MinerId, Driver> = BTreeMap::new();
    let mut out = Vec::new();
    for letter in select(letters, selection)? {
        let id = letter.id;
        let Some(task) = letter.decoded else {
            out.push((
                id,
                Retry::Refused(format!(
                    "its body is not a task this version can decode; remove it with \
                     `mesh-publisher dlq drop {id}`"
                )),
            ));
            continue;
        };
        let newer = newest[&(task.miner, task.sector.0, task.phase)];
        if newer != id {
            out.push((
                id,
                Retry::Skipped(format!(
                    "dead letter {newer} is a later failure of the same sector and phase (retry \
                     that one; drop this one with `mesh-publisher dlq drop {id}`)"
                )),
            ));
            continue;
        }
        let driver = match drivers.entry(task.miner) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let config = PublisherConfig {
                    miner: task.miner,
                    runner: runner.clone(),
                    max_attempts: task.max_attempts,
                    holder_grace: super::HOLDER_GRACE,
                };
                let driver = Driver::new(
                    broker.clone(),
                    store.clone(),
                    config,
                    Arc::new(OsRandomness),
                )
                .await?;
                e.insert(driver)
            }
        };
        let outcome = retry_one(driver, &task, &letter.reason).await?;
        let outcome = match outcome {
            Retry::Retried {
                miner,
                sector,
                task,
                ..
            } => {
                let note = match stream.delete_message(id).await {
                    Ok(_) => None,
                    Err(e) => Some(format!(
                        "the letter could not be removed ({e}): remove it with `mesh-publisher \
                         dlq drop {id}`"
                    )),
                };
                Retry::Retried {
                    miner,
                    sector,
                    task,
                    note,
                }
            }
            other => other,
        };
        out.push((id, outcome));
    }
    Ok(out)
}

/// Makes the sector of a dead-lettered task active again at the task's phase, with
/// compare-and-set, and publishes its new task. Only a sector that this letter failed is
/// retried: a worker fails the sector with the very reason it puts on the letter.
async fn retry_one(driver: &Driver, task: &Task, reason: &str) -> anyhow::Result<Retry> {
    let key = names::sector_key(task.miner, task.sector);
    let Some(generation) = task.generation() else {
        return Ok(Retry::Refused(format!(
            "task id {} is not {key}.{}.<generation>",
            task.id, task.phase
        )));
    };
    let new = TaskId::new(task.miner, task.sector, task.phase, generation + 1);
    let record = loop {
        let Some((mut record, revision)) = driver.load(task.sector).await? else {
            return Ok(Retry::Refused(format!(
                "sector {key} is not in the {} bucket",
                names::SECTORS_BUCKET
            )));
        };
        if let SectorState::Failed {
            phase,
            reason: failed,
            ..
        } = &record.state
            && *phase == task.phase
            && failed != reason
        {
            return Ok(Retry::Skipped(format!(
                "sector {key} failed for another reason than this letter's: {failed}"
            )));
        }
        // The failed generation's task was dead-lettered, so the next one was never published:
        // its message id is fresh and the task is not deduplicated away.
        if let Err(why) = record.retry(task.phase, generation + 1, crate::now_ms()) {
            return Ok(Retry::Skipped(format!(
                "{key}: {why} (already retried, or the letter is stale)"
            )));
        }
        if driver.store_record(&record, revision).await? {
            break record;
        }
    };
    driver.ensure_published(record).await.map_err(|e| {
        e.context(format!(
            "sector {key} is active again but its task is not published yet; a running \
             `mesh-publisher run --miner {}` publishes it",
            task.miner
        ))
    })?;
    Ok(Retry::Retried {
        miner: task.miner,
        sector: task.sector.0,
        task: new,
        note: None,
    })
}

/// Removes the selected letters; returns the ids removed.
pub async fn drop_letters(broker: &Broker, selection: &Selection) -> anyhow::Result<Vec<u64>> {
    let stream = broker.stream(names::DLQ_STREAM).await?;
    let mut removed = Vec::new();
    for letter in select(list(broker).await?, selection)? {
        stream.delete_message(letter.id).await.map_err(|e| {
            BrokerError::api(
                format!(
                    "remove dead letter {} from {}",
                    letter.id,
                    names::DLQ_STREAM
                ),
                e,
            )
        })?;
        removed.push(letter.id);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dlq_subjects_parse_back() {
        let miner: MinerId = "f01000".parse().unwrap();
        let (phase, size) = (Phase::PreCommit2, SectorSize::MiB512);
        assert_eq!(
            parse_subject(&names::dlq_subject(phase, size, Some(miner))),
            Some((phase, size, Some(miner)))
        );
        assert_eq!(
            parse_subject(&names::dlq_subject(phase, size, None)),
            Some((phase, size, None))
        );
        for bad in [
            "mesh.task.pc1.2kib.f01000",
            "mesh.dlq.pc9.2kib.f01000",
            "mesh.dlq.pc1.2kib",
            "mesh.dlq.pc1.2kib.f01000.x",
        ] {
            assert_eq!(parse_subject(bad), None, "{bad}");
        }
    }

    fn letter(id: u64) -> DeadLetter {
        DeadLetter {
            id,
            time: "2025-01-01T00:00:00Z".into(),
            subject: "mesh.dlq.ap.2kib.f01000".into(),
            phase: Some("ap".into()),
            size: Some("2KiB".into()),
            miner: Some("f01000".into()),
            sector: Some(1),
            task: Some("f01000.1.ap.0".into()),
            attempts: Some(1),
            reason: "input piece-0: object f01000/1/piece-0 is corrupt".into(),
            stream: "MESH_TASK_AP_2KIB".into(),
            decoded: None,
        }
    }

    #[test]
    fn unknown_ids_are_named_and_nothing_is_selected() {
        let err = select(vec![letter(1), letter(3)], &Selection::Ids(vec![3, 999, 2]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("no dead letter with id 999, 2 in MESH_DLQ"),
            "{err}"
        );
        let picked = select(vec![letter(1), letter(3)], &Selection::Ids(vec![3])).unwrap();
        assert_eq!(picked.iter().map(|l| l.id).collect::<Vec<_>>(), [3]);
        assert_eq!(select(vec![letter(1)], &Selection::All).unwrap().len(), 1);
    }

    #[test]
    fn letters_render_as_a_table_and_undecodable_ones_say_so() {
        let undecodable = DeadLetter {
            subject: "mesh.dlq.pc1.2kib.unknown".into(),
            phase: Some("pc1".into()),
            miner: None,
            sector: None,
            task: None,
            reason: "undecodable task".into(),
            ..letter(2)
        };
        assert_eq!(
            render(&[letter(1), undecodable]),
            "\
id  time                  phase  size  miner   sector       attempts  reason
1   2025-01-01T00:00:00Z  ap     2KiB  f01000  1            1         input piece-0: object f01000/1/piece-0 is corrupt
2   2025-01-01T00:00:00Z  pc1    2KiB  -       undecodable  1         undecodable task
"
        );
        assert_eq!(render(&[]), "no dead letters in MESH_DLQ\n");
    }
}
