//! What a worker has and what its tasks need: the machine (CPU threads, memory, swap and NVIDIA
//! GPUs, detected or declared), lotus's resource table per phase and size, and the ledger of
//! what running tasks hold. No NVIDIA library means no GPUs, not an error.

pub mod cores;
pub mod ledger;
pub mod table;

use serde::{Deserialize, Serialize};

pub use ledger::{Claim, Ledger, Placement, Refusal, Usage};
pub use table::{NeedOverride, Table};

/// A worker's machine as the resource checks see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub host: String,
    pub cpu_threads: u32,
    pub memory_bytes: u64,
    #[serde(default)]
    pub swap_bytes: u64,
    /// GPU names, one per GPU.
    pub gpus: Vec<String>,
    /// The CPUs proof children are pinned to some of (`mesh-worker run --pin-cpus`: this
    /// process's affinity, one per thread counted in `cpu_threads`); empty: no pinning.
    #[serde(skip)]
    pub cpu_ids: Vec<usize>,
    /// How a proof child's `CUDA_VISIBLE_DEVICES` names each GPU of `gpus`, in the same order;
    /// empty where no GPU is handed out.
    #[serde(skip)]
    pub gpu_ids: Vec<String>,
}

/// What an operator declares instead of what is detected (a container whose limits the system
/// tables do not show, a machine shared with something else, a simulation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declared {
    pub cpus: Option<u32>,
    #[serde(default, with = "table::opt_bytes")]
    pub memory: Option<u64>,
    #[serde(default, with = "table::opt_bytes")]
    pub swap: Option<u64>,
    /// A count of GPUs (named `declared GPU <n>`); 0 means use none even if some are present.
    pub gpus: Option<u32>,
}

impl Declared {
    /// Fills what `self` leaves open from `other` (used for flag > env > file precedence).
    pub fn or(self, other: Declared) -> Declared {
        Declared {
            cpus: self.cpus.or(other.cpus),
            memory: self.memory.or(other.memory),
            swap: self.swap.or(other.swap),
            gpus: self.gpus.or(other.gpus),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if let Some(cpus) = self.cpus
            && !(1..=4096).contains(&cpus)
        {
            return Err(format!("--cpus {cpus} is out of range: use 1 to 4096"));
        }
        if self.memory == Some(0) {
            return Err("--memory 0 leaves no memory for any task: declare e.g. 256GiB".into());
        }
        if let Some(gpus) = self.gpus
            && gpus > 64
        {
            return Err(format!("--gpus {gpus} is out of range: use 0 to 64"));
        }
        Ok(())
    }

    /// The machine: detected, with what is declared put in its place.
    pub fn apply(&self, mut machine: Machine) -> Machine {
        if let Some(cpus) = self.cpus
            && cpus != machine.cpu_threads
        {
            machine.cpu_threads = cpus;
            machine.cpu_ids.clear();
        }
        if let Some(memory) = self.memory {
            machine.memory_bytes = memory;
        }
        if let Some(swap) = self.swap {
            machine.swap_bytes = swap;
        }
        if let Some(gpus) = self.gpus {
            machine.gpus = (0..gpus).map(|i| format!("declared GPU {i}")).collect();
            machine.gpu_ids = match visible_gpus() {
                Some(entries) if entries.len() >= gpus as usize => {
                    entries.into_iter().take(gpus as usize).collect()
                }
                _ => (0..gpus).map(|i| i.to_string()).collect(),
            };
        }
        machine
    }
}

/// Reads this machine's resources.
pub fn detect() -> Machine {
    let (memory_bytes, swap_bytes) = match sysinfo::System::new() {
        Ok(mut system) => {
            system.refresh_memory();
            (system.total_memory(), system.total_swap())
        }
        Err(_) => (0, 0),
    };
    let cpu_threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let (gpu_ids, gpus) = gpus().into_iter().unzip();
    Machine {
        host: sysinfo::System::host_name().unwrap_or_else(|_| "localhost".into()),
        cpu_threads,
        memory_bytes,
        swap_bytes,
        gpus,
        cpu_ids: Vec::new(),
        gpu_ids,
    }
}

/// The NVIDIA GPUs this worker may use, each as its proof children's `CUDA_VISIBLE_DEVICES`
/// names it and its name with its memory: those NVML lists (by index, which
/// `CUDA_DEVICE_ORDER=PCI_BUS_ID` makes CUDA's too), or only those the worker's
/// `CUDA_VISIBLE_DEVICES` names (see [`visible_gpus`]), as it names them.
fn gpus() -> Vec<(String, String)> {
    let Ok(nvml) = nvml_wrapper::Nvml::init() else {
        return Vec::new();
    };
    let named = |id: String, device: nvml_wrapper::Device<'_>| {
        let name = device.name().ok()?;
        let name = match device.memory_info() {
            Ok(memory) => format!("{name} ({})", crate::units::human_bytes(memory.total)),
            Err(_) => name,
        };
        Some((id, name))
    };
    match visible_gpus() {
        Some(entries) => entries
            .into_iter()
            .filter_map(|entry| {
                let device = match entry.parse::<u32>() {
                    Ok(index) => nvml.device_by_index(index).ok()?,
                    Err(_) => nvml.device_by_uuid(entry.as_str()).ok()?,
                };
                named(entry, device)
            })
            .collect(),
        None => {
            let count = nvml.device_count().unwrap_or(0);
            (0..count)
                .filter_map(|i| named(i.to_string(), nvml.device_by_index(i).ok()?))
                .collect()
        }
    }
}

/// The GPUs the worker was limited to: the entries of its `CUDA_VISIBLE_DEVICES` (indices or
/// UUIDs), none when it or `NVIDIA_VISIBLE_DEVICES` is `none`, `void` or empty; `None` when
/// neither limits them. (A container runtime applies `NVIDIA_VISIBLE_DEVICES` itself: NVML in
/// the container lists only those GPUs.)
fn visible_gpus() -> Option<Vec<String>> {
    let hidden = |v: &str| matches!(v.trim(), "" | "none" | "void" | "NoDevFiles");
    if let Ok(v) = std::env::var("NVIDIA_VISIBLE_DEVICES")
        && hidden(&v)
    {
        return Some(Vec::new());
    }
    let v = std::env::var("CUDA_VISIBLE_DEVICES").ok()?;
    if hidden(&v) {
        return Some(Vec::new());
    }
    Some(v.split(',').map(|e| e.trim().to_string()).collect())
}

/// A host name made safe for keys and subjects: letters, digits and `-`.
pub fn safe_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let s = s.trim_matches('-');
    if s.is_empty() {
        "host".into()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_this_machine() {
        let r = detect();
        assert!(r.cpu_threads >= 1);
        assert!(r.memory_bytes > 0);
        assert_eq!(safe_name("ip-10.0.0.1_x"), "ip-10-0-0-1-x");
        assert_eq!(safe_name("..."), "host");
    }

    #[test]
    fn declared_values_replace_detected_ones() {
        let detected = Machine {
            host: "h".into(),
            cpu_threads: 2,
            memory_bytes: 8 << 30,
            swap_bytes: 0,
            gpus: vec!["RTX".into()],
            cpu_ids: vec![0, 1],
            gpu_ids: vec!["0".into()],
        };
        let declared = Declared {
            cpus: Some(64),
            gpus: Some(0),
            ..Declared::default()
        }
        .or(Declared {
            cpus: Some(8),
            memory: Some(1 << 40),
            ..Declared::default()
        });
        let m = declared.apply(detected);
        assert_eq!((m.cpu_threads, m.memory_bytes), (64, 1 << 40));
        assert!(m.cpu_ids.is_empty(), "declared CPUs are not pinned");
        assert!(m.gpus.is_empty());
        assert!(
            Declared {
                cpus: Some(0),
                ..Declared::default()
            }
            .validate()
            .unwrap_err()
            .contains("--cpus 0")
        );
    }
}
