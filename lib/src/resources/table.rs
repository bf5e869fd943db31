//! Lotus's resource table (`storage/sealer/storiface/resources.go`): what one task of each phase
//! and sector size needs (each phase file gives its row), overridable per entry from the
//! worker's config file and from environment variables named as lotus names them
//! (`PC1_32G_MAX_CONCURRENT=4`).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::model::{Need, SectorSize};
use crate::phases::Phase;

/// Every field of [`Need`], optional: an override from the config file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeedOverride {
    #[serde(default, with = "opt_bytes")]
    pub min_memory: Option<u64>,
    #[serde(default, with = "opt_bytes")]
    pub max_memory: Option<u64>,
    pub gpu_utilization: Option<f64>,
    pub max_parallelism: Option<i32>,
    pub max_parallelism_gpu: Option<i32>,
    #[serde(default, with = "opt_bytes")]
    pub base_min_memory: Option<u64>,
    pub max_concurrent: Option<u32>,
    pub gpu_required: Option<bool>,
}

impl NeedOverride {
    fn apply(&self, need: &mut Need) {
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(v) = self.$field { need.$field = v; })* };
        }
        set!(
            min_memory,
            max_memory,
            gpu_utilization,
            max_parallelism,
            max_parallelism_gpu,
            base_min_memory,
            max_concurrent,
            gpu_required
        );
    }
}

/// The lotus environment names of the fields, in lotus's order, plus mesh's `GPU_REQUIRED`.
const ENV_FIELDS: [&str; 8] = [
    "MIN_MEMORY",
    "MAX_MEMORY",
    "GPU_UTILIZATION",
    "MAX_PARALLELISM",
    "MAX_PARALLELISM_GPU",
    "BASE_MIN_MEMORY",
    "MAX_CONCURRENT",
    "GPU_REQUIRED",
];

/// What every phase of every size needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    entries: BTreeMap<(Phase, SectorSize), Need>,
}

impl Default for Table {
    fn default() -> Self {
        Table::lotus()
    }
}

impl Table {
    /// Lotus's defaults: every phase's row at every size. (Finalize has no row in lotus; its
    /// file gives it lotus's Fetch row.)
    pub fn lotus() -> Table {
        let entries = Phase::ALL
            .into_iter()
            .flat_map(|phase| SectorSize::ALL.map(|size| ((phase, size), phase.need(size))))
            .collect();
        Table { entries }
    }

    pub fn get(&self, phase: Phase, size: SectorSize) -> Need {
        self.entries
            .get(&(phase, size))
            .copied()
            .unwrap_or_else(|| phase.need(size))
    }

    /// Applies the `[resources.<phase>.<size>]` sections of a config file. Keys are phase tokens
    /// (`pc1`) and sizes as people write them (`32GiB`).
    pub fn apply_file(
        &mut self,
        sections: &BTreeMap<String, BTreeMap<String, NeedOverride>>,
    ) -> Result<(), String> {
        for (phase, sizes) in sections {
            let phase: Phase = phase
                .parse()
                .map_err(|e| format!("[resources.{phase}]: {e}"))?;
            for (size, over) in sizes {
                let size: SectorSize = size
                    .parse()
                    .map_err(|e| format!("[resources.{phase}.{size}]: {e}"))?;
                let need = self
                    .entries
                    .entry((phase, size))
                    .or_insert_with(|| phase.need(size));
                over.apply(need);
                check(need).map_err(|e| format!("[resources.{phase}.{size}]: {e}"))?;
            }
        }
        Ok(())
    }

    /// Applies environment variables named as lotus names them: `<PHASE>_<SIZE>_<FIELD>`, e.g.
    /// `PC1_32G_MAX_CONCURRENT=4`, `C2_32G_GPU_REQUIRED=true` (phases AP, PC1, PC2, C1, C2,
    /// FIN; sizes 2K, 8M, 512M, 32G, 64G; memory in bytes or with a unit). As in lotus,
    /// `FIL_PROOFS_USE_MULTICORE_SDR=1` makes PreCommit1 take its SDR producers (3, or
    /// `FIL_PROOFS_MULTICORE_SDR_PRODUCERS`) plus one thread, unless its `MAX_PARALLELISM` is
    /// set. Returns the variables applied.
    pub fn apply_env(
        &mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<String>, String> {
        let mut applied = Vec::new();
        let sdr_threads = sdr_threads(lookup)?;
        for (&(phase, size), need) in self.entries.iter_mut() {
            let prefix = format!("{}_{}", phase.lotus_env(), env_size(size));
            for field in ENV_FIELDS {
                let name = format!("{prefix}_{field}");
                let Some(value) = lookup(&name) else {
                    if phase == Phase::PreCommit1
                        && field == "MAX_PARALLELISM"
                        && let Some(threads) = sdr_threads
                    {
                        need.max_parallelism = threads;
                        applied.push("FIL_PROOFS_USE_MULTICORE_SDR".to_string());
                    }
                    continue;
                };
                let fix = "fix or unset this resource table override";
                set_field(need, field, value.trim())
                    .map_err(|e| format!("{name}={value}: {e}; {fix}"))?;
                check(need).map_err(|e| format!("{name}={value}: {e}; {fix}"))?;
                applied.push(name);
            }
        }
        applied.sort();
        applied.dedup();
        Ok(applied)
    }
}

/// The size as lotus's environment names have it (`32GiB` → `32G`).
fn env_size(size: SectorSize) -> &'static str {
    let label = size.label();
    label.strip_suffix("iB").unwrap_or(label)
}

fn set_field(need: &mut Need, field: &str, value: &str) -> Result<(), String> {
    let whole = |v: &str| -> Result<i64, String> {
        v.parse()
            .map_err(|_| format!("'{v}' is not a whole number"))
    };
    match field {
        "MIN_MEMORY" => need.min_memory = crate::units::parse_bytes(value)?,
        "MAX_MEMORY" => need.max_memory = crate::units::parse_bytes(value)?,
        "BASE_MIN_MEMORY" => need.base_min_memory = crate::units::parse_bytes(value)?,
        "GPU_UTILIZATION" => {
            need.gpu_utilization = value
                .parse()
                .map_err(|_| format!("'{value}' is not a number such as 1.0 or 0.5"))?
        }
        "MAX_PARALLELISM" => need.max_parallelism = whole(value)?.clamp(-2, i32::MAX as i64) as i32,
        "MAX_PARALLELISM_GPU" => {
            need.max_parallelism_gpu = whole(value)?.clamp(-2, i32::MAX as i64) as i32
        }
        "MAX_CONCURRENT" => {
            need.max_concurrent = u32::try_from(whole(value)?)
                .map_err(|_| format!("'{value}' is not 0 (no limit) or a task count"))?
        }
        "GPU_REQUIRED" => {
            need.gpu_required = match value.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" | "" => false,
                _ => return Err(format!("'{value}' is not true or false")),
            }
        }
        _ => unreachable!("ENV_FIELDS lists every field"),
    }
    Ok(())
}

/// Refuses values no task could be scheduled with.
fn check(need: &Need) -> Result<(), String> {
    if !need.gpu_utilization.is_finite() || !(0.0..=64.0).contains(&need.gpu_utilization) {
        return Err(format!(
            "gpu_utilization {} is out of range: use 0 (no GPU) to 64; 1.0 is one whole GPU",
            need.gpu_utilization
        ));
    }
    for (name, value) in [
        ("max_parallelism", need.max_parallelism),
        ("max_parallelism_gpu", need.max_parallelism_gpu),
    ] {
        if value < -1 {
            return Err(format!(
                "{name} {value} is out of range: use -1 (92% of the threads), 0 or a thread count"
            ));
        }
    }
    Ok(())
}

/// Threads of PreCommit1 with multicore SDR, as lotus's `getSDRThreads`: its producers plus
/// one, or `None` without `FIL_PROOFS_USE_MULTICORE_SDR=1`.
pub fn sdr_threads(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Option<i32>, String> {
    if lookup("FIL_PROOFS_USE_MULTICORE_SDR").as_deref() != Some("1") {
        return Ok(None);
    }
    let producers = match lookup("FIL_PROOFS_MULTICORE_SDR_PRODUCERS") {
        Some(v) => v
            .trim()
            .parse::<i32>()
            .map_err(|_| format!("FIL_PROOFS_MULTICORE_SDR_PRODUCERS={v}: not a whole number"))?,
        None => 3,
    };
    Ok(Some(producers.max(0) + 1))
}

/// Serde for optional byte counts written as numbers (`4096`) or with a unit (`"56GiB"`).
pub(crate) mod opt_bytes {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Number(n)) => Ok(Some(n)),
            Some(Raw::Text(s)) => crate::units::parse_bytes(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;

    #[test]
    fn lotus_values_and_thread_counts() {
        let t = Table::lotus();
        let pc1 = t.get(Phase::PreCommit1, SectorSize::GiB32);
        assert_eq!((pc1.min_memory, pc1.max_memory), (56 * G, 64 * G));
        assert_eq!(pc1.threads(64, 0), 1);
        let pc2 = t.get(Phase::PreCommit2, SectorSize::GiB32);
        // 92 % of the threads without a GPU, 6 with one.
        assert_eq!(pc2.threads(16, 0), 14);
        assert_eq!(pc2.threads(128, 0), 117);
        assert_eq!(pc2.threads(16, 1), 6);
        assert_eq!(pc2.threads(1, 0), 1);
        let c2 = t.get(Phase::Commit2, SectorSize::GiB32);
        assert_eq!((c2.min_memory, c2.base_min_memory), (30 * G, 32 * G));
        assert_eq!(t.get(Phase::Commit1, SectorSize::GiB64).threads(16, 0), 0);
        assert_eq!(env_size(SectorSize::MiB512), "512M");
    }

    #[test]
    fn environment_overrides_in_the_lotus_style() {
        let mut t = Table::lotus();
        let env: BTreeMap<&str, &str> = [
            ("PC1_32G_MAX_CONCURRENT", "4"),
            ("C2_32G_GPU_REQUIRED", "true"),
            ("AP_2K_MIN_MEMORY", "1GiB"),
            ("PC2_64G_MAX_MEMORY", "34359738368"),
            ("FIL_PROOFS_USE_MULTICORE_SDR", "1"),
        ]
        .into();
        let applied = t.apply_env(&|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert!(applied.contains(&"PC1_32G_MAX_CONCURRENT".to_string()));
        assert_eq!(
            t.get(Phase::PreCommit1, SectorSize::GiB32).max_concurrent,
            4
        );
        assert!(t.get(Phase::Commit2, SectorSize::GiB32).gpu_required);
        assert_eq!(t.get(Phase::AddPiece, SectorSize::KiB2).min_memory, G);
        assert_eq!(
            t.get(Phase::PreCommit2, SectorSize::GiB64).max_memory,
            32 * G
        );
        // Multicore SDR: 3 producers + 1.
        assert_eq!(
            t.get(Phase::PreCommit1, SectorSize::GiB32).threads(64, 0),
            4
        );

        let bad: BTreeMap<&str, &str> = [("PC1_32G_MAX_CONCURRENT", "lots")].into();
        let e = Table::lotus()
            .apply_env(&|k| bad.get(k).map(|v| v.to_string()))
            .unwrap_err();
        assert!(
            e.contains("PC1_32G_MAX_CONCURRENT=lots") && e.contains("whole number"),
            "{e}"
        );
        let bad: BTreeMap<&str, &str> = [("C2_32G_GPU_UTILIZATION", "-1")].into();
        let e = Table::lotus()
            .apply_env(&|k| bad.get(k).map(|v| v.to_string()))
            .unwrap_err();
        assert!(e.contains("gpu_utilization -1 is out of range"), "{e}");
    }

    #[test]
    fn file_overrides_name_their_section() {
        let mut t = Table::lotus();
        let file: BTreeMap<String, BTreeMap<String, NeedOverride>> = toml::from_str(
            "[pc1.32GiB]\nmax_concurrent = 14\nmin_memory = \"60GiB\"\n[c2.64GiB]\ngpu_required = true\n",
        )
        .unwrap();
        t.apply_file(&file).unwrap();
        let pc1 = t.get(Phase::PreCommit1, SectorSize::GiB32);
        assert_eq!((pc1.max_concurrent, pc1.min_memory), (14, 60 * G));
        assert!(t.get(Phase::Commit2, SectorSize::GiB64).gpu_required);

        let file: BTreeMap<String, BTreeMap<String, NeedOverride>> =
            toml::from_str("[pc3.32GiB]\nmax_concurrent = 1\n").unwrap();
        let e = Table::lotus().apply_file(&file).unwrap_err();
        assert!(
            e.contains("[resources.pc3]") && e.contains("bad phase"),
            "{e}"
        );
        let e = toml::from_str::<BTreeMap<String, BTreeMap<String, NeedOverride>>>(
            "[pc1.32GiB]\nmax_concurent = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("max_concurent"), "{e}");
    }
}
