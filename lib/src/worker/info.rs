//! `mesh-worker info`: what the worker detected, what it will serve, what each task needs by the
//! resource table and how many fit at once, or why none ever does.

use serde::Serialize;

use super::{Serving, WorkerConfig};
use crate::render::table;
use crate::resources::Machine;
use crate::units::human_bytes;

#[derive(Serialize)]
struct Info<'a> {
    machine: &'a Machine,
    proofs: Proofs,
    slots: Option<u32>,
    scratch: String,
    scratch_limit: u64,
    serving: Vec<Serving>,
}

/// How this build proves, and what of it the environment turns on.
#[derive(Serialize)]
struct Proofs {
    multicore_sdr_built: bool,
    /// `FIL_PROOFS_USE_MULTICORE_SDR=1` (lotus's switch).
    multicore_sdr_used: bool,
    /// `FIL_PROOFS_MULTICORE_SDR_PRODUCERS` (3 unless set), as the resource table reads it.
    sdr_producers: Option<i32>,
    gpu_support: bool,
}

impl Proofs {
    fn read() -> Proofs {
        // The worker's config already refused a bad producer count.
        let sdr = crate::resources::table::sdr_threads(&|name| std::env::var(name).ok())
            .ok()
            .flatten();
        Proofs {
            multicore_sdr_built: crate::proofs::MULTICORE_SDR,
            multicore_sdr_used: sdr.is_some(),
            sdr_producers: sdr.map(|threads| threads - 1),
            gpu_support: crate::proofs::GPU_BUILD,
        }
    }

    fn describe(&self) -> String {
        let sdr = match (self.multicore_sdr_built, self.sdr_producers) {
            (true, Some(producers)) => format!(
                "multicore SDR: PreCommit1 runs {producers} producers and one hashing thread"
            ),
            (true, None) => "multicore SDR built, off: PreCommit1 hashes on one thread (set \
                             FIL_PROOFS_USE_MULTICORE_SDR=1 to use it)"
                .into(),
            (false, _) => "built without multicore SDR: PreCommit1 hashes on one thread".into(),
        };
        let gpu = if self.gpu_support {
            format!(
                "PreCommit2 and Commit2 on GPUs (built with {})",
                crate::proofs::gpu_features().join(", ")
            )
        } else {
            "no GPU support: PreCommit2 and Commit2 on the CPU".to_string()
        };
        format!("{sdr}; {gpu}")
    }
}

/// The info as text (or JSON).
pub fn render(config: &WorkerConfig, json: bool) -> String {
    let serving = config.plan();
    let proofs = Proofs::read();
    if json {
        let info = Info {
            machine: &config.machine,
            proofs,
            slots: config.slots,
            scratch: config.scratch.display().to_string(),
            scratch_limit: config.scratch_limit,
            serving,
        };
        return serde_json::to_string_pretty(&info).expect("info serializes") + "\n";
    }
    let m = &config.machine;
    let gpus = if m.gpus.is_empty() {
        "none".to_string()
    } else {
        let mut users: Vec<String> = Vec::new();
        for s in serving.iter().filter(|s| s.claim.gpu_milli > 0) {
            if !users.contains(&s.phase.to_string()) {
                users.push(s.phase.to_string());
            }
        }
        let users = if users.is_empty() {
            "no phase served here uses them".to_string()
        } else {
            format!(
                "used by {}, each task on its own GPU (CUDA_VISIBLE_DEVICES)",
                users.join(", ")
            )
        };
        let mut lines: Vec<String> = m
            .gpus
            .iter()
            .zip(&m.gpu_ids)
            .map(|(name, device)| format!("{device}: {name}"))
            .collect();
        lines.push(users);
        lines.join("\n")
    };
    let mut out = table(&[
        vec!["host".into(), m.host.clone()],
        vec!["cpu".into(), format!("{} threads", m.cpu_threads)],
        vec![
            "memory".into(),
            format!(
                "{} RAM, {} swap",
                human_bytes(m.memory_bytes),
                human_bytes(m.swap_bytes)
            ),
        ],
        vec!["gpus".into(), gpus],
        vec!["proofs".into(), proofs.describe()],
        vec![
            "slots".into(),
            config
                .slots
                .map_or("no limit: the resource table decides".into(), |n| {
                    format!("at most {n} tasks at once")
                }),
        ],
        vec![
            "scratch".into(),
            format!(
                "{} (limit {})",
                config.scratch.display(),
                human_bytes(config.scratch_limit)
            ),
        ],
    ]);
    out.push('\n');
    let mut rows = vec![
        [
            "phase", "size", "threads", "cpu cap", "min mem", "max mem", "base mem", "gpu",
            "max conc", "scratch", "at once",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for s in &serving {
        let gpu = if s.claim.gpu_milli > 0 {
            format!("{:.2}", s.claim.gpu_milli as f64 / 1000.0)
        } else if s.need.gpu_required {
            "required".into()
        } else {
            "-".into()
        };
        let at_once = match (&s.refusal, s.at_once) {
            (Some(refusal), _) => format!("not served: {refusal}"),
            (None, Some(n)) => n.to_string(),
            (None, None) => format!("over {}", super::AT_ONCE_SHOWN),
        };
        rows.push(vec![
            s.phase.to_string(),
            s.size.to_string(),
            s.claim.threads.to_string(),
            match (s.thread_cap, s.pinned) {
                (Some(n), true) => format!("{n}, pinned"),
                (Some(n), false) => n.to_string(),
                (None, _) => "-".into(),
            },
            human_bytes(s.claim.min_memory),
            human_bytes(s.claim.max_memory),
            human_bytes(s.claim.base_memory),
            gpu,
            match s.claim.max_concurrent {
                0 => "-".into(),
                n => n.to_string(),
            },
            human_bytes(s.claim.scratch),
            at_once,
        ]);
    }
    out.push_str(&table(&rows));
    out
}
