//! The sealing phases, one file each: [`ap`], [`pc1`], [`pc2`], [`c1`], [`c2`], [`fin`]. A phase
//! file owns everything about its phase: its token, title and lotus priority, the artefacts it
//! reads and writes, its parameters and output, how a sector's data yields its task and absorbs
//! its output, its proof call and its simulation, its lotus resource row and its scratch need.
//! [`Phase`] only dispatches to them.
//!
//! A new phase is one file implementing [`Spec`], one variant of [`Phase`] (and of [`Params`] and
//! [`Output`] when it has any) and one line of `dispatch!`. A phase that lacks a resource row, a
//! scratch need or a proof call does not compile.

pub mod ap;
mod artefact;
pub mod c1;
pub mod c2;
pub mod fin;
pub mod pc1;
pub mod pc2;
mod sim;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

pub use artefact::Artefact;
pub use sim::MissingInput;

use crate::model::{
    Need, ObjectRef, ParseIdError, PieceInfo, PieceSpec, SectorIdentity, SectorSize, WorkerId,
};

/// Job files, logs and slack every attempt needs besides its data.
pub const ATTEMPT_OVERHEAD: u64 = 64 * 1024;

/// What every phase file provides. [`Phase`] dispatches to it; nothing outside this folder
/// knows a phase's details.
trait Spec {
    /// The token in subjects, stream names and flags: `pc1`.
    const TOKEN: &'static str;
    /// The name lotus and operators use: `PreCommit1`.
    const TITLE: &'static str;
    /// Lotus's task priority (seed 003): lower runs first.
    const PRIORITY: i8;
    /// The phase in lotus's resource variables (`PC1_32G_MAX_CONCURRENT`).
    const LOTUS_ENV: &'static str;
    /// The `lotus-worker run` flag that serves it (`--precommit1`).
    const LOTUS_FLAG: &'static str;
    /// The artefacts its task downloads into the attempt directory.
    const READS: &'static [Artefact];
    /// The artefacts it leaves in the attempt directory for the store; a result must carry
    /// each of them, and nothing else.
    const WRITES: &'static [Artefact];
    /// How long the synthetic executor pretends it takes by default: lotus's 32GiB time with an
    /// hour scaled down to a second.
    const SIMULATED: Duration;
    /// Whether it needs the Groth parameters of its proof type.
    const NEEDS_PARAMS: bool = false;
    /// Whether it runs in the sector's directory on the worker that ran the sector's
    /// PreCommit1 and kept its data there (the holder), when one did.
    const HELD: bool = false;
    /// What it sends to the store when it runs on the holder; what else it writes stays there.
    const HELD_WRITES: &'static [Artefact] = Self::WRITES;

    /// Lotus's resource row: what one task needs at each size.
    fn need(size: SectorSize) -> Need;

    /// Scratch bytes one task may fill at most with real proofs, besides the attempt's own files.
    fn scratch(size: SectorSize) -> u64;

    /// The task's parameters, from what the sector has so far.
    fn params(data: &SectorData) -> Result<Params, String>;

    /// Checks parameters beyond decoding: sizes a proof step can take, objects it names.
    fn check_params(
        _params: &Params,
        _inputs: &[ObjectRef],
        _size: SectorSize,
    ) -> Result<(), String> {
        Ok(())
    }

    /// Checks an output beyond decoding, before a publisher applies it.
    fn check_output(_output: &Output) -> Result<(), String> {
        Ok(())
    }

    /// Takes a finished task's output into the sector's data. The output objects are added to
    /// the data's objects afterwards; `seed` draws the interactive seed.
    fn absorb(
        data: &mut SectorData,
        size: SectorSize,
        worker: &WorkerId,
        output: &Output,
        seed: &mut dyn FnMut() -> [u8; 32],
    ) -> Result<(), String>;

    /// Runs the phase with the proofs library, in this (proof child) process.
    fn run(job: &Job) -> anyhow::Result<Output>;

    /// A SIMULATION of [`Spec::run`] for the synthetic executor: checks that the inputs are
    /// there and writes outputs of the right names and shape (see `proofs::synthetic`). An
    /// input that is missing is a [`MissingInput`].
    fn simulate(job: &Job) -> anyhow::Result<Output>;
}

/// A sealing phase. The order of the variants is the order a sector goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    AddPiece,
    PreCommit1,
    PreCommit2,
    Commit1,
    Commit2,
    Finalize,
}

/// Runs `$body` with `$spec` standing for the phase file's [`Spec`] implementation.
macro_rules! dispatch {
    ($phase:expr, $spec:ident => $body:expr) => {
        match $phase {
            Phase::AddPiece => {
                type $spec = ap::AddPiece;
                $body
            }
            Phase::PreCommit1 => {
                type $spec = pc1::PreCommit1;
                $body
            }
            Phase::PreCommit2 => {
                type $spec = pc2::PreCommit2;
                $body
            }
            Phase::Commit1 => {
                type $spec = c1::Commit1;
                $body
            }
            Phase::Commit2 => {
                type $spec = c2::Commit2;
                $body
            }
            Phase::Finalize => {
                type $spec = fin::Finalize;
                $body
            }
        }
    };
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::AddPiece,
        Phase::PreCommit1,
        Phase::PreCommit2,
        Phase::Commit1,
        Phase::Commit2,
        Phase::Finalize,
    ];

    /// The token used in subjects, stream names and flags: `pc1`.
    pub fn token(self) -> &'static str {
        dispatch!(self, S => S::TOKEN)
    }

    /// The phase as lotus and operators name it: `PreCommit1`.
    pub fn title(self) -> &'static str {
        dispatch!(self, S => S::TITLE)
    }

    /// Lotus task priority (seed 003): lower runs first.
    pub fn priority(self) -> i8 {
        dispatch!(self, S => S::PRIORITY)
    }

    /// The phase in lotus's resource variables: `PC1` in `PC1_32G_MAX_CONCURRENT`.
    pub fn lotus_env(self) -> &'static str {
        dispatch!(self, S => S::LOTUS_ENV)
    }

    /// The `lotus-worker run` flag (without dashes) that serves this phase.
    pub fn lotus_flag(self) -> &'static str {
        dispatch!(self, S => S::LOTUS_FLAG)
    }

    /// The artefacts its task downloads.
    pub fn reads(self) -> &'static [Artefact] {
        dispatch!(self, S => S::READS)
    }

    /// The artefacts its task uploads.
    pub fn writes(self) -> &'static [Artefact] {
        dispatch!(self, S => S::WRITES)
    }

    /// Its default duration in the synthetic executor.
    pub fn simulated(self) -> Duration {
        dispatch!(self, S => S::SIMULATED)
    }

    /// Whether its task needs the Groth parameters of the sector's proof type.
    pub fn needs_params(self) -> bool {
        dispatch!(self, S => S::NEEDS_PARAMS)
    }

    /// Whether its task runs on the worker holding the sector's data, when one does:
    /// PreCommit1 (which makes the holder), PreCommit2, Commit1 and Finalize.
    pub fn held(self) -> bool {
        dispatch!(self, S => S::HELD)
    }

    /// What its task sends to the store: everything it writes, or on the holder only what
    /// leaves it (Commit1's output, Finalize's replica and trimmed cache).
    pub fn uploads(self, on_holder: bool) -> &'static [Artefact] {
        if on_holder {
            dispatch!(self, S => S::HELD_WRITES)
        } else {
            self.writes()
        }
    }

    /// Disk a sector of `size` takes on its holder from PreCommit1 to Finalize: the unsealed
    /// copy, the replica, the layers, and trees C, D and R. PreCommit1 claims it, and the
    /// holder keeps it claimed until the sector is finalized or moves away.
    pub fn kept(size: SectorSize) -> u64 {
        (5 + layers(size)) * size.bytes()
    }

    /// Lotus's resource row for one task of this phase at `size`.
    pub fn need(self, size: SectorSize) -> Need {
        dispatch!(self, S => S::need(size))
    }

    /// Scratch bytes one task of this phase may fill at most with real proofs at `size`.
    pub fn scratch(self, size: SectorSize) -> u64 {
        dispatch!(self, S => S::scratch(size)) + ATTEMPT_OVERHEAD
    }

    /// The phase that follows this one, or `None` after Finalize.
    pub fn next(self) -> Option<Phase> {
        let i = Phase::ALL.iter().position(|p| *p == self)?;
        Phase::ALL.get(i + 1).copied()
    }

    /// Every phase, highest lotus priority first.
    pub fn by_priority() -> Vec<Phase> {
        let mut all = Phase::ALL.to_vec();
        all.sort_by_key(|p| p.priority());
        all
    }

    /// The objects of `data` this phase's task downloads: those of the artefacts it reads,
    /// except those that stay on the sector's holder when the task runs there.
    pub fn inputs(self, data: &SectorData) -> Vec<ObjectRef> {
        let reads = self.reads();
        let on_holder = self.held() && self != Phase::PreCommit1 && data.holder.is_some();
        data.objects
            .values()
            .filter(|o| {
                Artefact::of(&o.name)
                    .is_some_and(|a| reads.contains(&a) && !(on_holder && a.stays_on_holder()))
            })
            .cloned()
            .collect()
    }

    /// The parameters of this phase's task, from what the sector has so far.
    pub fn params(self, data: &SectorData) -> Result<Params, String> {
        dispatch!(self, S => S::params(data))
    }

    /// Checks a task's parameters of this phase beyond decoding.
    pub fn check_params(
        self,
        params: &Params,
        inputs: &[ObjectRef],
        size: SectorSize,
    ) -> Result<(), String> {
        if params.phase() != self {
            return Err(format!(
                "task says phase {self} but carries parameters for {}",
                params.phase()
            ));
        }
        dispatch!(self, S => S::check_params(params, inputs, size))
    }

    /// Checks an output of this phase beyond decoding.
    pub fn check_output(self, output: &Output) -> Result<(), String> {
        if output.phase() != self {
            return Err(format!("it carries {} output", output.phase()));
        }
        dispatch!(self, S => S::check_output(output))
    }

    /// Takes a finished task of this phase, run by `worker`, into `data`: its output, and its
    /// `outputs` objects, which must be exactly of the artefacts the phase uploads (each of
    /// them at least once): all it writes, or what leaves the holder when it ran there (or all
    /// it writes again, when the holder backs its data up).
    pub fn absorb(
        self,
        data: &mut SectorData,
        size: SectorSize,
        worker: &WorkerId,
        outputs: &[ObjectRef],
        output: &Output,
        seed: &mut dyn FnMut() -> [u8; 32],
    ) -> Result<(), String> {
        self.check_output(output)?;
        let on_holder = match output {
            Output::PreCommit1(out) => out.held,
            _ => self.held() && data.holder.is_some(),
        };
        let mut writes = self.uploads(on_holder);
        // A holder that backs its data up (`--back-up-held`) sends all the phase writes, as a
        // worker not holding the sector would.
        let all = self.writes();
        if on_holder
            && outputs.iter().any(|o| {
                Artefact::of(&o.name).is_some_and(|a| !writes.contains(&a) && all.contains(&a))
            })
        {
            writes = all;
        }
        if let Some(stray) = outputs
            .iter()
            .find(|o| !Artefact::of(&o.name).is_some_and(|a| writes.contains(&a)))
        {
            return Err(format!(
                "it carries {}, which {self} does not write",
                stray.name
            ));
        }
        if let Some(missing) = writes
            .iter()
            .find(|a| !outputs.iter().any(|o| Artefact::of(&o.name) == Some(**a)))
        {
            return Err(format!("it carries no {missing}"));
        }
        dispatch!(self, S => S::absorb(data, size, worker, output, seed))?;
        for object in outputs {
            data.objects.insert(object.name.clone(), object.clone());
        }
        Ok(())
    }
}

impl FromStr for Phase {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        Phase::ALL
            .into_iter()
            .find(|p| p.token() == lower)
            .ok_or_else(|| ParseIdError {
                what: "phase",
                value: s.to_string(),
                expected: "expected one of ap, pc1, pc2, c1, c2, fin",
            })
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// What a task needs besides its input objects: one variant per phase, each the phase file's
/// own parameters (none for Commit2 and Finalize).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Params {
    AddPiece(ap::Params),
    PreCommit1(pc1::Params),
    PreCommit2(pc2::Params),
    Commit1(c1::Params),
    Commit2,
    Finalize,
}

impl Params {
    pub fn phase(&self) -> Phase {
        match self {
            Params::AddPiece(_) => Phase::AddPiece,
            Params::PreCommit1(_) => Phase::PreCommit1,
            Params::PreCommit2(_) => Phase::PreCommit2,
            Params::Commit1(_) => Phase::Commit1,
            Params::Commit2 => Phase::Commit2,
            Params::Finalize => Phase::Finalize,
        }
    }
}

/// What a finished task produced besides its output objects: one variant per phase, each the
/// phase file's own output (none for Commit1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    AddPiece(ap::Output),
    PreCommit1(pc1::Output),
    PreCommit2(pc2::Output),
    Commit1,
    Commit2(c2::Output),
    Finalize(fin::Output),
}

impl Output {
    pub fn phase(&self) -> Phase {
        match self {
            Output::AddPiece(_) => Phase::AddPiece,
            Output::PreCommit1(_) => Phase::PreCommit1,
            Output::PreCommit2(_) => Phase::PreCommit2,
            Output::Commit1 => Phase::Commit1,
            Output::Commit2(_) => Phase::Commit2,
            Output::Finalize(_) => Phase::Finalize,
        }
    }
}

/// What a sector's phases have produced so far, from which its next task is built: the pieces
/// the publisher asked for, the randomness, the current artefacts and the phases' outputs. A
/// sector's record holds it (flattened, so the record's wire format is unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectorData {
    pub pieces: Vec<PieceSpec>,
    #[serde(with = "serde_bytes")]
    pub ticket: [u8; 32],
    #[serde(with = "serde_bytes")]
    pub seed: Option<[u8; 32]>,
    /// Current artefacts by object name (`unsealed`, `sealed`, `cache/…`, `c1.out`, `piece-0`).
    pub objects: BTreeMap<String, ObjectRef>,
    pub piece_infos: Vec<PieceInfo>,
    pub pc1_output: Option<ByteBuf>,
    #[serde(with = "serde_bytes")]
    pub comm_r: Option<[u8; 32]>,
    #[serde(with = "serde_bytes")]
    pub comm_d: Option<[u8; 32]>,
    pub proof_bytes: Option<ByteBuf>,
    /// The worker that ran PreCommit1 and keeps the sector's layers, trees and replica in its
    /// sector directory until Finalize; `None` while no worker does (the data is in the store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<WorkerId>,
}

impl SectorData {
    /// A new sector's data: its pieces (uploaded as `piece_objects`) and its ticket.
    pub fn new(pieces: Vec<PieceSpec>, piece_objects: Vec<ObjectRef>, ticket: [u8; 32]) -> Self {
        SectorData {
            pieces,
            ticket,
            seed: None,
            objects: piece_objects
                .into_iter()
                .map(|o| (o.name.clone(), o))
                .collect(),
            piece_infos: Vec::new(),
            pc1_output: None,
            comm_r: None,
            comm_d: None,
            proof_bytes: None,
            holder: None,
        }
    }

    /// Whether the sector holds deal pieces (and not only zeros).
    pub fn has_deals(&self) -> bool {
        self.pieces.iter().any(|p| p.object.is_some())
    }
}

/// One phase of one sector as a proof process runs it: whose sector, the attempt directory
/// holding the phase's artefacts, and the task's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: SectorIdentity,
    pub dir: PathBuf,
    pub params: Params,
}

impl Job {
    pub fn phase(&self) -> Phase {
        self.params.phase()
    }

    /// Where `artefact` lives in the attempt directory.
    pub fn path(&self, artefact: Artefact) -> PathBuf {
        artefact.path(&self.dir)
    }

    /// A file the job names relative to its directory (a piece); `validate` made it plain.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Runs `job` with the proofs library in this process.
pub fn run(job: &Job) -> anyhow::Result<Output> {
    dispatch!(job.phase(), S => S::run(job))
}

/// Simulates `job` (the synthetic executor): no proof, outputs of the right shape.
pub fn simulate(job: &Job) -> anyhow::Result<Output> {
    dispatch!(job.phase(), S => S::simulate(job))
}

/// The SDR layers a sector of `size` has: 2 up to 512MiB, 11 from 32GiB.
fn layers(size: SectorSize) -> u64 {
    match size {
        SectorSize::KiB2 | SectorSize::MiB8 | SectorSize::MiB512 => 2,
        SectorSize::GiB32 | SectorSize::GiB64 => 11,
    }
}

/// A resource row as lotus's table writes it: (min memory, max memory, GPU utilisation,
/// parallelism, parallelism with a GPU, base memory).
fn row(min: u64, max: u64, gpu: f64, par: i32, par_gpu: i32, base: u64) -> Need {
    Need {
        min_memory: min,
        max_memory: max,
        gpu_utilization: gpu,
        max_parallelism: par,
        max_parallelism_gpu: par_gpu,
        base_min_memory: base,
        max_concurrent: 0,
        gpu_required: false,
    }
}

const K: u64 = 1 << 10;
const M: u64 = 1 << 20;
const G: u64 = 1 << 30;

fn to_api_pieces(pieces: &[PieceInfo]) -> Vec<filecoin_proofs_api::PieceInfo> {
    pieces
        .iter()
        .map(|p| filecoin_proofs_api::PieceInfo {
            commitment: p.comm_p,
            size: filecoin_proofs_api::UnpaddedBytesAmount(p.size),
        })
        .collect()
}

/// File names directly inside a cache directory, sorted; none when it does not exist.
fn cache_files(cache: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(cache) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// The error a phase returns for parameters or output of another phase (the dispatchers check
/// the phase first, so only a programming error gets here).
fn mismatch(phase: Phase, what: &str, other: Phase) -> String {
    format!("{phase} was handed {other} {what}")
}

#[cfg(test)]
mod tests;
