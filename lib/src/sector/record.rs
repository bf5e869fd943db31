//! The sector state machine: which phase a sector is in, what its phases have produced so far,
//! and which results it accepts. What each phase's task carries and how its output is absorbed
//! is the phase's own (`phases`); this file sequences them. Pure: the publisher stores records
//! in the `mesh-sectors` bucket with compare-and-set and does all I/O around these functions.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Outcome, Task, TaskId, TaskResult, message_version};
use crate::model::{
    MAX_MESSAGE_BYTES, MinerId, ObjectRef, PieceSpec, RegisteredSealProof, SectorNum, SectorSize,
    WorkerId, check_object, encode, one_line,
};
use crate::names;
use crate::phases::{Artefact, Output, Phase, SectorData};

/// Largest encoded record a result may leave: half a message, so that the record always fits in
/// the bucket and the next task (its inputs and parameters come from the record) in its stream.
const MAX_RECORD_BYTES: usize = MAX_MESSAGE_BYTES / 2;

/// Where a sector is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SectorState {
    /// Waiting for `task` (phase `phase`) to finish. `published` turns true once the task is
    /// safely in its stream; a restarted publisher re-publishes tasks that are not.
    Active {
        phase: Phase,
        task: TaskId,
        generation: u32,
        published: bool,
        since_ms: u64,
    },
    /// Every phase done and the proof verified.
    Sealed { at_ms: u64 },
    /// A phase failed for good.
    Failed {
        phase: Phase,
        reason: String,
        at_ms: u64,
    },
    /// Stopped on purpose after phase `after` (`mesh-publisher seal --until`); never sealed.
    Stopped { after: Phase, at_ms: u64 },
}

impl SectorState {
    pub fn is_finished(&self) -> bool {
        !matches!(self, SectorState::Active { .. })
    }

    /// Waiting for generation `generation` of `phase`'s task, which is not published yet.
    fn waiting(
        miner: MinerId,
        sector: SectorNum,
        phase: Phase,
        generation: u32,
        now_ms: u64,
    ) -> SectorState {
        SectorState::Active {
            phase,
            task: TaskId::new(miner, sector, phase, generation),
            generation,
            published: false,
            since_ms: now_ms,
        }
    }

    /// A short word for listings: the phase, `sealed` or `failed`.
    pub fn label(&self) -> String {
        match self {
            SectorState::Active { phase, .. } => phase.to_string(),
            SectorState::Sealed { .. } => "sealed".into(),
            SectorState::Failed { .. } => "failed".into(),
            SectorState::Stopped { .. } => "stopped".into(),
        }
    }
}

/// One accepted phase, for the record's history and the overhead figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseRun {
    pub phase: Phase,
    pub worker: WorkerId,
    pub attempt: u32,
    pub download_ms: u64,
    pub run_ms: u64,
    pub upload_ms: u64,
    /// From the phase's task becoming active to its result being accepted.
    pub wall_ms: u64,
    /// Bytes its attempt read from and wrote to the store.
    #[serde(default)]
    pub read_bytes: u64,
    #[serde(default)]
    pub written_bytes: u64,
}

/// Task generations between two relocations of a sector: after relocation `n` every phase
/// starts at generation `100 n`, so that no task repeats the message id of a task published
/// before (JetStream would drop it as a duplicate within its duplicate window).
const RELOCATION_GENERATIONS: u32 = 100;

/// A sector sent back to PreCommit1, or on from the store's backup of its data, because the
/// worker holding its data was lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relocation {
    pub holder: WorkerId,
    pub reason: String,
    pub at_ms: u64,
}

/// Why a result was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stale {
    Finished(String),
    OtherSector {
        sector: (MinerId, SectorNum),
        result: (MinerId, SectorNum),
    },
    OtherPhase {
        sector: Phase,
        result: Phase,
    },
    OtherTask {
        expected: TaskId,
        got: TaskId,
    },
}

impl fmt::Display for Stale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stale::Finished(state) => write!(f, "sector is already {state}"),
            Stale::OtherSector { sector, result } => write!(
                f,
                "result is for sector {}.{}, not {}.{}",
                result.0, result.1, sector.0, sector.1
            ),
            Stale::OtherPhase { sector, result } => {
                write!(f, "sector is in {sector}, result is for {result}")
            }
            Stale::OtherTask { expected, got } => {
                write!(f, "sector waits for task {expected}, result is for {got}")
            }
        }
    }
}

/// A sector sealed for a lotus miner (`mesh-publisher lotus pledge`): its number is one the
/// miner reserved, its ticket the chain's, its seed the one lotus sends with its Commit1 call.
/// After PreCommit2 it waits for lotus ([`SectorRecord::awaits_lotus`]) instead of drawing a
/// seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotusImport {
    /// The chain epoch the ticket was drawn at.
    pub ticket_epoch: i64,
    /// The miner's reservation the sector number came from.
    pub reservation: String,
    /// The secret every URL given to lotus for this sector carries.
    pub secret: String,
    /// Lotus accepted the sector (`SectorReceive`).
    #[serde(default)]
    pub received: bool,
    /// What lotus said when the sector left its sealing pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<LotusDone>,
}

/// Lotus's report that a sector left its sealing pipeline (`RemoteSealingDoneParams`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotusDone {
    pub successful: bool,
    /// Lotus's state name, e.g. `Proving`.
    pub state: String,
    pub at_ms: u64,
}

/// Everything the mesh knows about one sector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectorRecord {
    pub version: u16,
    pub miner: MinerId,
    pub sector: SectorNum,
    pub proof: RegisteredSealProof,
    pub size: SectorSize,
    /// What its phases have produced so far (flattened: its fields are the record's own).
    #[serde(flatten)]
    pub data: SectorData,
    pub state: SectorState,
    pub history: Vec<PhaseRun>,
    /// Each time the sector went back to PreCommit1 because the worker holding its data was
    /// lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relocations: Vec<Relocation>,
    /// Sealed by the synthetic executor (a simulation): its proof is not a proof.
    #[serde(default)]
    pub synthetic: bool,
    /// The phase after which the sector stops instead of going on (`seal --until`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Phase>,
    /// Sealed for a lotus miner, which imports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lotus: Option<LotusImport>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

impl SectorRecord {
    /// A new sector waiting for AddPiece. `piece_objects` are its uploaded pieces, named
    /// `piece-<i>` as `pieces` refers to them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        miner: MinerId,
        sector: SectorNum,
        size: SectorSize,
        proof: RegisteredSealProof,
        pieces: Vec<PieceSpec>,
        piece_objects: Vec<ObjectRef>,
        ticket: [u8; 32],
        now_ms: u64,
    ) -> Self {
        SectorRecord {
            version: message_version(),
            miner,
            sector,
            proof,
            size,
            data: SectorData::new(pieces, piece_objects, ticket),
            state: SectorState::waiting(miner, sector, Phase::AddPiece, 0, now_ms),
            history: Vec::new(),
            relocations: Vec::new(),
            synthetic: false,
            until: None,
            lotus: None,
            created_ms: now_ms,
            updated_ms: now_ms,
        }
    }

    pub fn has_deals(&self) -> bool {
        self.data.has_deals()
    }

    /// A lotus sector past PreCommit2 whose Commit1 waits for the seed lotus draws once its
    /// precommit is on chain.
    pub fn awaits_lotus(&self) -> bool {
        self.lotus.is_some()
            && self.data.seed.is_none()
            && matches!(
                self.state,
                SectorState::Active {
                    phase: Phase::Commit1,
                    ..
                }
            )
    }

    /// Where a lotus sector stands with lotus, in a few words for listings; `None` for the
    /// mesh's own sectors.
    pub fn lotus_stage(&self) -> Option<String> {
        let lotus = self.lotus.as_ref()?;
        Some(match &lotus.done {
            Some(done) if done.successful => format!("done ({})", done.state),
            Some(done) => format!("failed in lotus ({})", done.state),
            None if self.awaits_lotus() && !lotus.received => "to be received".into(),
            None if self.awaits_lotus() => "received, waiting for the seed".into(),
            None if lotus.received => "received".into(),
            None => format!("sealing (ticket of epoch {})", lotus.ticket_epoch),
        })
    }

    /// Takes lotus's seed for Commit1. The same seed again is accepted (lotus retries a call
    /// that failed); another one is refused, saying why.
    pub fn take_seed(&mut self, seed: [u8; 32], now_ms: u64) -> Result<(), String> {
        if self.lotus.is_none() {
            return Err("it is not sealed for lotus".into());
        }
        match self.data.seed {
            Some(have) if have == seed => Ok(()),
            Some(_) => Err("it already has another seed".into()),
            None if self.awaits_lotus() => {
                self.data.seed = Some(seed);
                self.updated_ms = now_ms;
                Ok(())
            }
            None => Err(format!(
                "it is in {}, not waiting for Commit1",
                self.state.label()
            )),
        }
    }

    /// Result fencing: only a result of the task the sector waits for is accepted; a late
    /// result of an earlier attempt, phase or generation is dropped, and so is one whose body
    /// names another sector than the one it was applied to.
    pub fn fence(&self, result: &TaskResult) -> Result<(), Stale> {
        if (result.miner, result.sector) != (self.miner, self.sector) {
            return Err(Stale::OtherSector {
                sector: (self.miner, self.sector),
                result: (result.miner, result.sector),
            });
        }
        match &self.state {
            SectorState::Active { phase, task, .. } => {
                if *phase != result.phase {
                    Err(Stale::OtherPhase {
                        sector: *phase,
                        result: result.phase,
                    })
                } else if *task != result.task {
                    Err(Stale::OtherTask {
                        expected: task.clone(),
                        got: result.task.clone(),
                    })
                } else {
                    Ok(())
                }
            }
            other => Err(Stale::Finished(other.label())),
        }
    }

    /// Applies an accepted result: stores its outputs and moves to the next phase (drawing the
    /// interactive seed when PreCommit2 completes), to sealed after Finalize, or to failed.
    /// A result that does not carry what its phase must produce, or that fails
    /// [`TaskResult::validate`], fails the sector with the reason, leaving its objects as they
    /// were.
    pub fn apply(&mut self, result: &TaskResult, mut seed: impl FnMut() -> [u8; 32], now_ms: u64) {
        let since = match &self.state {
            SectorState::Active { since_ms, .. } => *since_ms,
            _ => now_ms,
        };
        let unusable = |reason: String| {
            format!(
                "{} result from worker {} is unusable: {reason}",
                result.phase, result.worker
            )
        };
        if let Err(reason) = result.validate() {
            self.fail(result.phase, unusable(reason), now_ms);
            return;
        }
        match &result.outcome {
            Outcome::Failed { reason } => self.fail(result.phase, reason.clone(), now_ms),
            Outcome::Lost { reason } => {
                let reason = format!("worker {} lost the sector's data: {reason}", result.worker);
                self.relocate(&reason, now_ms);
            }
            Outcome::Done { outputs, output } => {
                let mut next = self.clone();
                let absorbed = next
                    .absorb(result.phase, &result.worker, outputs, output, &mut seed)
                    .and_then(|()| next.check_size());
                if let Err(reason) = absorbed {
                    self.fail(result.phase, unusable(reason), now_ms);
                    return;
                }
                *self = next;
                if self.lotus.is_some() && result.phase == Phase::PreCommit2 {
                    // Lotus draws the seed from the chain after its precommit lands.
                    self.data.seed = None;
                }
                self.history.push(PhaseRun {
                    phase: result.phase,
                    worker: result.worker.clone(),
                    attempt: result.attempt,
                    download_ms: result.timings.download_ms,
                    run_ms: result.timings.run_ms,
                    upload_ms: result.timings.upload_ms,
                    wall_ms: now_ms.saturating_sub(since),
                    read_bytes: result.timings.read_bytes,
                    written_bytes: result.timings.written_bytes,
                });
                self.state = match result.phase.next() {
                    _ if self.until == Some(result.phase) => SectorState::Stopped {
                        after: result.phase,
                        at_ms: now_ms,
                    },
                    Some(next) => SectorState::waiting(
                        self.miner,
                        self.sector,
                        next,
                        self.first_generation(),
                        now_ms,
                    ),
                    None => SectorState::Sealed { at_ms: now_ms },
                };
                self.updated_ms = now_ms;
            }
        }
    }

    /// Runs the current phase again as a fresh task (the next generation), e.g. after a proof
    /// that did not verify. Returns the new generation, or `None` if the sector is finished.
    pub fn redrive(&mut self, now_ms: u64) -> Option<u32> {
        let SectorState::Active {
            phase, generation, ..
        } = &self.state
        else {
            return None;
        };
        let (phase, generation) = (*phase, generation + 1);
        self.state = SectorState::waiting(self.miner, self.sector, phase, generation, now_ms);
        self.updated_ms = now_ms;
        Some(generation)
    }

    /// The generation a phase's first task has: 0, or `100 n` after `n` relocations (far from
    /// any generation a dead-letter retry, one more each, could have used).
    fn first_generation(&self) -> u32 {
        RELOCATION_GENERATIONS * self.relocations.len() as u32
    }

    /// The worker holding the sector's data, while the sector still needs it: from PreCommit2
    /// until Finalize is done, Commit2 included (Finalize cannot run without the holder, so a
    /// sector whose holder is lost goes back to PreCommit1 at once rather than after a proof).
    pub fn waits_on_holder(&self) -> Option<&WorkerId> {
        match &self.state {
            SectorState::Active { phase, .. }
                if !matches!(phase, Phase::AddPiece | Phase::PreCommit1) =>
            {
                self.data.holder.as_ref()
            }
            _ => None,
        }
    }

    /// Whether what the sector's current phase needs of its holder's data is also in the store:
    /// the holder backed it up (`mesh-worker run --back-up-held`), the layers and tree D after
    /// PreCommit1, the replica and trees C and R after PreCommit2.
    pub fn backed_up(&self) -> bool {
        let has = |artefact| {
            self.data
                .objects
                .keys()
                .any(|name| Artefact::of(name) == Some(artefact))
        };
        match &self.state {
            SectorState::Active {
                phase: Phase::PreCommit2,
                ..
            } => has(Artefact::Cache),
            SectorState::Active {
                phase: Phase::Commit1 | Phase::Commit2 | Phase::Finalize,
                ..
            } => has(Artefact::Cache) && has(Artefact::Sealed),
            _ => false,
        }
    }

    /// Takes a held sector away from its holder, because that worker is gone: where the holder
    /// backed the data up ([`SectorRecord::backed_up`]), the sector goes on from the store on
    /// any worker, its current phase as a fresh task (a running Commit2 goes on: it needs
    /// nothing of the holder); otherwise it goes back to PreCommit1 on any worker, as a fresh
    /// task: PreCommit1 is deterministic, so the same ticket gives the same commitments. A
    /// fresh task has the first generation after this relocation. `reason` goes to the
    /// history. Returns false, changing nothing, unless the sector waits on a holder.
    pub fn relocate(&mut self, reason: &str, now_ms: u64) -> bool {
        let Some(holder) = self.waits_on_holder().cloned() else {
            return false;
        };
        let restore = self.backed_up();
        self.relocations.push(Relocation {
            holder,
            reason: one_line(reason),
            at_ms: now_ms,
        });
        let generation = self.first_generation();
        self.data.holder = None;
        if restore {
            if let SectorState::Active { phase, .. } = &self.state
                && *phase != Phase::Commit2
            {
                self.state =
                    SectorState::waiting(self.miner, self.sector, *phase, generation, now_ms);
            }
            self.updated_ms = now_ms;
            return true;
        }
        self.data.pc1_output = None;
        self.data.comm_r = None;
        self.data.comm_d = None;
        self.data.seed = None;
        self.data.proof_bytes = None;
        // What AddPiece left is all PreCommit1 needs; later outputs are of the lost data.
        self.data.objects.retain(|name, _| {
            matches!(
                Artefact::of(name),
                Some(Artefact::Pieces | Artefact::Unsealed)
            )
        });
        self.state = SectorState::waiting(
            self.miner,
            self.sector,
            Phase::PreCommit1,
            generation,
            now_ms,
        );
        self.updated_ms = now_ms;
        true
    }

    /// Runs a failed phase again, as task generation `generation` (one the sector never used, so
    /// that the task's message id is not deduplicated away), once an operator fixed the cause.
    /// Refuses, saying why, unless the sector failed at `phase`.
    pub fn retry(&mut self, phase: Phase, generation: u32, now_ms: u64) -> Result<(), String> {
        match &self.state {
            SectorState::Failed { phase: failed, .. } if *failed == phase => {}
            SectorState::Failed { phase: failed, .. } => {
                return Err(format!("sector failed at {failed}, not at {phase}"));
            }
            other => return Err(format!("sector is {}, not failed", other.label())),
        }
        self.state = SectorState::waiting(self.miner, self.sector, phase, generation, now_ms);
        self.updated_ms = now_ms;
        Ok(())
    }

    /// Notes that `task` is safely in its stream; false if the sector has moved on since.
    pub fn mark_published(&mut self, task: &TaskId) -> bool {
        match &mut self.state {
            SectorState::Active {
                task: current,
                published,
                ..
            } if current == task => {
                *published = true;
                true
            }
            _ => false,
        }
    }

    /// Fails the sector; the reason is kept on one line and cut short (see [`one_line`]),
    /// as workers put it on the task's dead letter.
    pub fn fail(&mut self, phase: Phase, reason: String, now_ms: u64) {
        self.state = SectorState::Failed {
            phase,
            reason: one_line(&reason),
            at_ms: now_ms,
        };
        self.updated_ms = now_ms;
    }

    fn check_size(&self) -> Result<(), String> {
        let len = encode(self).len();
        if len > MAX_RECORD_BYTES {
            return Err(format!(
                "the sector's record would grow to {len} bytes, over the {MAX_RECORD_BYTES} allowed"
            ));
        }
        Ok(())
    }

    /// Takes a done result's outputs in, as its phase says: the objects must stay inside the
    /// sector, and be what the phase writes.
    fn absorb(
        &mut self,
        phase: Phase,
        worker: &WorkerId,
        outputs: &[ObjectRef],
        output: &Output,
        seed: &mut dyn FnMut() -> [u8; 32],
    ) -> Result<(), String> {
        let prefix = names::sector_prefix(self.miner, self.sector);
        for object in outputs {
            check_object(object, &prefix)?;
        }
        phase.absorb(&mut self.data, self.size, worker, outputs, output, seed)
    }

    /// The task for the phase the sector is in, or `None` when it is finished.
    pub fn task(&self, max_attempts: u32, now_ms: u64) -> Option<Result<Task, String>> {
        let SectorState::Active { phase, task, .. } = &self.state else {
            return None;
        };
        let phase = *phase;
        let params = match phase.params(&self.data) {
            Ok(params) => params,
            Err(e) => return Some(Err(e)),
        };
        Some(Ok(Task {
            version: message_version(),
            id: task.clone(),
            miner: self.miner,
            sector: self.sector,
            proof: self.proof,
            phase,
            priority: phase.priority(),
            has_deals: self.has_deals(),
            max_attempts,
            inputs: phase.inputs(&self.data),
            params,
            holder: if phase.held() && phase != Phase::PreCommit1 {
                self.data.holder.clone()
            } else {
                None
            },
            synthetic: self.synthetic,
            // Lotus downloads the replica and the cache after PreCommit2, from the store.
            back_up: self.lotus.is_some() && matches!(phase, Phase::PreCommit1 | Phase::PreCommit2),
            created_ms: now_ms,
        }))
    }
}

#[cfg(test)]
mod tests {

    use serde_bytes::ByteBuf;

    use super::*;
    use crate::model::{PieceInfo, decode};
    use crate::phases::{ap, c2, fin, pc1, pc2};
    use crate::sector::Timings;

    fn record() -> SectorRecord {
        let miner: MinerId = "f01000".parse().unwrap();
        SectorRecord::new(
            miner,
            SectorNum(3),
            SectorSize::KiB2,
            SectorSize::KiB2.seal_proof(),
            vec![PieceSpec {
                object: None,
                size: 2032,
            }],
            Vec::new(),
            [9; 32],
            1000,
        )
    }

    fn object(name: &str, tag: &str) -> ObjectRef {
        ObjectRef {
            name: name.into(),
            key: format!("f01000/3/{tag}/{name}"),
            size: 1,
            sha256: [0; 32],
        }
    }

    fn done(rec: &SectorRecord, outputs: Vec<ObjectRef>, output: Output) -> TaskResult {
        let SectorState::Active { phase, task, .. } = &rec.state else {
            panic!("not active")
        };
        TaskResult {
            version: message_version(),
            task: task.clone(),
            miner: rec.miner,
            sector: rec.sector,
            phase: *phase,
            attempt: 1,
            worker: WorkerId("w1".into()),
            outcome: Outcome::Done { outputs, output },
            timings: Timings::default(),
            finished_ms: 0,
        }
    }

    fn ap_done(rec: &SectorRecord) -> TaskResult {
        done(
            rec,
            vec![object("unsealed", "ap")],
            Output::AddPiece(ap::Output {
                piece_infos: vec![PieceInfo {
                    comm_p: [1; 32],
                    size: 2032,
                }],
            }),
        )
    }

    fn drive_to_sealed(rec: &mut SectorRecord) {
        let steps: Vec<(Vec<ObjectRef>, Output)> = vec![
            (
                vec![object("unsealed", "ap")],
                Output::AddPiece(ap::Output {
                    piece_infos: vec![PieceInfo {
                        comm_p: [1; 32],
                        size: 2032,
                    }],
                }),
            ),
            (
                vec![
                    object("cache/tree-d", "pc1"),
                    object("cache/layer-1", "pc1"),
                ],
                Output::PreCommit1(pc1::Output {
                    pc1_output: ByteBuf::from(vec![1, 2, 3]),
                    held: false,
                }),
            ),
            (
                vec![object("sealed", "pc2"), object("cache/p_aux", "pc2")],
                Output::PreCommit2(pc2::Output {
                    comm_r: [2; 32],
                    comm_d: [3; 32],
                }),
            ),
            (vec![object("c1.out", "c1")], Output::Commit1),
            (
                vec![],
                Output::Commit2(c2::Output {
                    proof: ByteBuf::from(vec![4; 192]),
                }),
            ),
            (
                vec![],
                Output::Finalize(fin::Output {
                    kept: vec!["p_aux".into()],
                }),
            ),
        ];
        for (i, (outputs, output)) in steps.into_iter().enumerate() {
            let task = rec.task(5, 0).unwrap().unwrap();
            task.validate(SectorSize::KiB2).unwrap();
            let result = done(rec, outputs, output);
            rec.fence(&result).unwrap();
            rec.apply(&result, || [5; 32], 2000 + i as u64);
        }
    }

    #[test]
    fn a_sector_walks_every_phase_to_sealed_keeping_only_final_objects() {
        let mut rec = record();
        drive_to_sealed(&mut rec);
        assert_eq!(rec.state, SectorState::Sealed { at_ms: 2005 });
        assert_eq!(rec.data.seed, Some([5; 32]));
        assert_eq!(rec.history.len(), 6);
        let names: Vec<&str> = rec.data.objects.keys().map(String::as_str).collect();
        assert_eq!(names, ["cache/p_aux", "sealed"]);
        let back: SectorRecord = decode(&encode(&rec)).unwrap();
        assert_eq!(back, rec);
    }

    #[test]
    fn tasks_carry_each_phase_inputs() {
        let mut rec = record();
        let ap = ap_done(&rec);
        rec.apply(&ap, || [0; 32], 1);
        let pc1 = rec.task(5, 0).unwrap().unwrap();
        assert_eq!(pc1.phase, Phase::PreCommit1);
        assert_eq!(pc1.inputs.len(), 1);
        assert_eq!(pc1.inputs[0].name, "unsealed");
        assert_eq!(pc1.id.0, "f01000.3.pc1.0");
    }

    #[test]
    fn a_redriven_phase_fences_out_the_old_generation() {
        let mut rec = record();
        let old = ap_done(&rec);
        assert_eq!(rec.redrive(10), Some(1));
        assert!(matches!(rec.fence(&old), Err(Stale::OtherTask { .. })));
        let task = rec.task(5, 0).unwrap().unwrap();
        assert_eq!(task.id.0, "f01000.3.ap.1");
        assert!(!rec.mark_published(&old.task));
        assert!(rec.mark_published(&task.id));
        assert!(matches!(
            rec.state,
            SectorState::Active {
                published: true,
                ..
            }
        ));
    }

    #[test]
    fn a_failed_phase_is_retried_as_a_new_generation_and_nothing_else_is() {
        let mut rec = record();
        let ap = ap_done(&rec);
        rec.apply(&ap, || [0; 32], 1);
        assert_eq!(
            rec.retry(Phase::PreCommit1, 1, 2),
            Err("sector is pc1, not failed".into())
        );
        let old = rec.task(5, 0).unwrap().unwrap();
        rec.fail(Phase::PreCommit1, "corrupt unsealed".into(), 3);
        assert_eq!(
            rec.retry(Phase::AddPiece, 1, 4),
            Err("sector failed at pc1, not at ap".into())
        );

        rec.retry(Phase::PreCommit1, 1, 5).unwrap();
        assert_eq!(
            rec.state,
            SectorState::Active {
                phase: Phase::PreCommit1,
                task: TaskId("f01000.3.pc1.1".into()),
                generation: 1,
                published: false,
                since_ms: 5,
            }
        );
        assert_eq!(rec.updated_ms, 5);
        let task = rec.task(5, 0).unwrap().unwrap();
        assert_eq!(task.inputs, old.inputs, "the phase keeps its inputs");
        // A late result of the failed generation is fenced out.
        let late = done(
            &rec,
            vec![],
            Output::PreCommit1(pc1::Output {
                pc1_output: ByteBuf::from(vec![1]),
                held: false,
            }),
        );
        let late = TaskResult {
            task: old.id.clone(),
            ..late
        };
        assert!(matches!(rec.fence(&late), Err(Stale::OtherTask { .. })));
        // Retrying again is refused: the sector is active now.
        assert!(rec.retry(Phase::PreCommit1, 2, 6).is_err());

        let mut sealed = record();
        drive_to_sealed(&mut sealed);
        assert_eq!(
            sealed.retry(Phase::Finalize, 1, 7),
            Err("sector is sealed, not failed".into())
        );
    }

    /// PreCommit1 done by w1, which holds the sector now.
    fn held_pc1(rec: &SectorRecord) -> TaskResult {
        done(
            rec,
            vec![],
            Output::PreCommit1(pc1::Output {
                pc1_output: ByteBuf::from(vec![1, 2, 3]),
                held: true,
            }),
        )
    }

    #[test]
    fn a_held_sector_goes_back_to_pc1_when_its_holder_is_lost_even_during_commit2() {
        let mut rec = record();
        rec.apply(&ap_done(&rec), || [0; 32], 1);
        let pc1 = held_pc1(&rec);
        assert_eq!(rec.waits_on_holder(), None, "PreCommit1 has no holder yet");
        rec.apply(&pc1, || [0; 32], 2);
        assert_eq!(rec.waits_on_holder(), Some(&WorkerId("w1".into())));
        let pc2 = done(
            &rec,
            vec![],
            Output::PreCommit2(pc2::Output {
                comm_r: [2; 32],
                comm_d: [3; 32],
            }),
        );
        rec.apply(&pc2, || [0; 32], 3);
        rec.apply(
            &done(&rec, vec![object("c1.out", "c1")], Output::Commit1),
            || [5; 32],
            4,
        );
        assert!(matches!(
            rec.state,
            SectorState::Active {
                phase: Phase::Commit2,
                ..
            }
        ));
        assert_eq!(rec.waits_on_holder(), Some(&WorkerId("w1".into())));
        let c2 = done(
            &rec,
            vec![],
            Output::Commit2(c2::Output {
                proof: ByteBuf::from(vec![4; 192]),
            }),
        );

        assert!(rec.relocate("w1 is gone", 5));
        assert_eq!(rec.waits_on_holder(), None);
        assert_eq!(rec.data.holder, None);
        let task = rec.task(5, 0).unwrap().unwrap();
        assert_eq!(task.id.0, "f01000.3.pc1.100");
        assert_eq!(task.inputs[0].name, "unsealed");
        // The proof of the lost data comes too late: fenced off.
        assert!(matches!(rec.fence(&c2), Err(Stale::OtherPhase { .. })));
        assert!(!rec.relocate("again", 6), "nothing waits on a holder now");
        // Every later phase is a new task too: the same id would be dropped as a duplicate.
        let pc1 = held_pc1(&rec);
        rec.apply(&pc1, || [0; 32], 7);
        assert_eq!(rec.task(5, 0).unwrap().unwrap().id.0, "f01000.3.pc2.100");
    }

    #[test]
    fn a_backed_up_sector_goes_on_from_the_store_when_its_holder_is_lost() {
        let mut rec = record();
        rec.apply(&ap_done(&rec), || [0; 32], 1);
        // The holder backed up its layers and tree D with PreCommit1.
        let layer = object("cache/sc-02-data-layer-1.dat", "pc1");
        let mut pc1 = held_pc1(&rec);
        if let Outcome::Done { outputs, .. } = &mut pc1.outcome {
            outputs.push(layer.clone());
        }
        rec.apply(&pc1, || [0; 32], 2);
        assert!(rec.backed_up());
        assert!(rec.relocate("w1 is gone", 3));
        assert_eq!(rec.data.holder, None);
        let task = rec.task(5, 0).unwrap().unwrap();
        assert_eq!(
            task.id.0, "f01000.3.pc2.100",
            "PreCommit2 again, not PreCommit1"
        );
        assert_eq!(task.holder, None);
        assert!(task.inputs.iter().any(|i| i.name == layer.name), "{task:?}");
        assert!(rec.data.pc1_output.is_some());
        assert!(!rec.relocate("again", 4));

        // Without the replica in the store, a sector past PreCommit2 is not backed up.
        let mut rec = record();
        rec.apply(&ap_done(&rec), || [0; 32], 1);
        rec.apply(&held_pc1(&rec), || [0; 32], 2);
        assert!(!rec.backed_up(), "nothing of the cache in the store");
    }

    #[test]
    fn stale_results_are_fenced() {
        let mut rec = record();
        let ap = ap_done(&rec);
        rec.apply(&ap, || [0; 32], 1);
        // The same AddPiece result arriving again (a late attempt) is dropped.
        let err = rec.fence(&ap).unwrap_err();
        assert_eq!(
            err,
            Stale::OtherPhase {
                sector: Phase::PreCommit1,
                result: Phase::AddPiece
            }
        );
        // A result for the right phase but another generation of the task is dropped.
        let mut other = done(
            &rec,
            vec![],
            Output::PreCommit1(pc1::Output {
                pc1_output: ByteBuf::from(vec![1]),
                held: false,
            }),
        );
        other.task = TaskId("f01000.3.pc1.7".into());
        assert!(matches!(rec.fence(&other), Err(Stale::OtherTask { .. })));
        let mut sealed = record();
        drive_to_sealed(&mut sealed);
        assert!(matches!(sealed.fence(&ap), Err(Stale::Finished(s)) if s == "sealed"));
        // A result whose body names another sector is not this sector's, whatever its task id.
        let rec = record();
        let mut elsewhere = ap_done(&rec);
        elsewhere.miner = "f01001".parse().unwrap();
        let err = rec.fence(&elsewhere).unwrap_err();
        assert!(matches!(err, Stale::OtherSector { .. }));
        assert_eq!(
            err.to_string(),
            "result is for sector f01001.3, not f01000.3"
        );
    }

    #[test]
    fn failures_and_unusable_results_fail_the_sector_with_a_reason() {
        let mut rec = record();
        let mut failed = done(&rec, vec![], Output::Commit1);
        failed.outcome = Outcome::Failed {
            reason: "corrupt piece".into(),
        };
        rec.apply(&failed, || [0; 32], 5);
        assert!(
            matches!(&rec.state, SectorState::Failed { reason, .. } if reason == "corrupt piece")
        );

        let mut rec = record();
        let escaping = done(
            &rec,
            vec![ObjectRef {
                key: "f01001/3/x/unsealed".into(),
                ..object("unsealed", "ap")
            }],
            Output::AddPiece(ap::Output {
                piece_infos: vec![PieceInfo {
                    comm_p: [1; 32],
                    size: 2032,
                }],
            }),
        );
        rec.apply(&escaping, || [0; 32], 5);
        assert!(
            matches!(&rec.state, SectorState::Failed { reason, .. } if reason.contains("outside")),
            "{:?}",
            rec.state
        );

        // Piece infos that do not fit the sector, or a record grown past what the bucket
        // holds, are unusable too; the record keeps its objects as they were.
        for (piece_infos, why) in [(vec![2032, 2032], "do not fit"), (vec![2000], "127 × 2^k")] {
            let mut rec = record();
            let piece_infos = piece_infos
                .into_iter()
                .map(|size| PieceInfo {
                    comm_p: [1; 32],
                    size,
                })
                .collect();
            let bad = done(
                &rec,
                vec![object("unsealed", "ap")],
                Output::AddPiece(ap::Output { piece_infos }),
            );
            rec.apply(&bad, || [0; 32], 5);
            assert!(
                matches!(&rec.state, SectorState::Failed { reason, .. } if reason.contains(why)),
                "{:?}",
                rec.state
            );
            assert!(rec.data.objects.is_empty());
        }
        let mut rec = record();
        let ap = ap_done(&rec);
        rec.apply(&ap, || [0; 32], 1);
        let names = (0..1000).map(|i| object(&format!("cache/{i:0>250}/{i:0>100}"), "pc1"));
        let huge = done(
            &rec,
            names.collect(),
            Output::PreCommit1(pc1::Output {
                pc1_output: ByteBuf::from(vec![1]),
                held: false,
            }),
        );
        rec.apply(&huge, || [0; 32], 5);
        assert!(
            matches!(&rec.state, SectorState::Failed { reason, .. } if reason.contains("grow")),
            "{:?}",
            rec.state
        );
        assert_eq!(rec.data.objects.len(), 1, "only AddPiece's unsealed file");

        // A reason is kept on one line and cut short.
        let mut rec = record();
        let mut failed = done(&rec, vec![], Output::Commit1);
        failed.outcome = Outcome::Failed {
            reason: format!("bad\n{}", "x".repeat(5000)),
        };
        rec.apply(&failed, || [0; 32], 5);
        let SectorState::Failed { reason, .. } = &rec.state else {
            panic!("not failed: {:?}", rec.state)
        };
        assert!(
            reason.starts_with("bad x") && reason.len() == 1000,
            "{reason}"
        );
    }
}
