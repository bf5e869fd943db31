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
    slots: Option<u32>,
    scratch: String,
    scratch_limit: u64,
    serving: Vec<Serving>,
}

/// The info as text (or JSON).
pub fn render(config: &WorkerConfig, json: bool) -> String {
    let serving = config.plan();
    if json {
        let info = Info {
            machine: &config.machine,
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
        m.gpus.join(", ")
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
            "phase", "size", "threads", "min mem", "max mem", "base mem", "gpu", "max conc",
            "scratch", "at once",
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
