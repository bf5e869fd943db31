//! What a machine has: CPU threads, memory and NVIDIA GPUs. No NVIDIA library means no GPUs,
//! not an error.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub host: String,
    pub cpu_threads: usize,
    pub memory_bytes: u64,
    pub gpus: Vec<String>,
}

/// Reads this machine's resources.
pub fn detect() -> Resources {
    let memory_bytes = match sysinfo::System::new() {
        Ok(mut system) => {
            system.refresh_memory();
            system.total_memory()
        }
        Err(_) => 0,
    };
    let cpu_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    Resources {
        host: sysinfo::System::host_name().unwrap_or_else(|_| "localhost".into()),
        cpu_threads,
        memory_bytes,
        gpus: gpus(),
    }
}

fn gpus() -> Vec<String> {
    let Ok(nvml) = nvml_wrapper::Nvml::init() else {
        return Vec::new();
    };
    let count = nvml.device_count().unwrap_or(0);
    (0..count)
        .filter_map(|i| nvml.device_by_index(i).ok()?.name().ok())
        .collect()
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
}
