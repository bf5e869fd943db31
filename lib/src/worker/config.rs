//! The worker's config file (`mesh-worker run --config FILE`, TOML): the machine to schedule on
//! and overrides of the resource table. Flags and environment variables win over it.
//!
//! ```toml
//! [machine]                 # declare instead of detect (all optional)
//! cpus = 64
//! memory = "1TiB"
//! swap = "0"
//! gpus = 2
//!
//! [resources.pc1.32GiB]     # any field of lotus's table, plus gpu_required
//! max_concurrent = 14
//! min_memory = "60GiB"
//!
//! [resources.c2.32GiB]
//! gpu_required = true
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::resources::{Declared, NeedOverride};

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerFile {
    #[serde(default)]
    pub machine: Declared,
    /// `[resources.<phase>.<size>]` sections.
    #[serde(default)]
    pub resources: BTreeMap<String, BTreeMap<String, NeedOverride>>,
}

impl WorkerFile {
    /// Reads and checks the file; errors name the file and what in it is wrong.
    pub fn load(path: &Path) -> Result<WorkerFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--config {}: cannot read it: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("--config {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<WorkerFile, String> {
        let file: WorkerFile =
            toml::from_str(text).map_err(|e| crate::config::toml_error(text, &e))?;
        file.machine
            .validate()
            .map_err(|e| format!("[machine]: {}", e.replace("--", "")))?;
        crate::resources::Table::lotus().apply_file(&file.resources)?;
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_file_parses_and_mistakes_are_named() {
        let file = WorkerFile::parse(
            "[machine]\ncpus = 64\nmemory = \"1TiB\"\ngpus = 1\n\n\
             [resources.pc1.32GiB]\nmax_concurrent = 14\n\n[resources.c2.32GiB]\ngpu_required = true\n",
        )
        .unwrap();
        assert_eq!(file.machine.cpus, Some(64));
        assert_eq!(file.machine.memory, Some(1 << 40));
        assert_eq!(file.resources["pc1"]["32GiB"].max_concurrent, Some(14));

        let e = WorkerFile::parse("[machine]\ncpu = 64\n").unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("unknown field `cpu`"),
            "{e}"
        );
        let e = WorkerFile::parse("[machine]\nmemory = \"lots\"\n").unwrap_err();
        assert!(e.contains("\"lots\"") && e.contains("500GiB"), "{e}");
        let e = WorkerFile::parse("[machine]\ncpus = 0\n").unwrap_err();
        assert!(e.contains("[machine]: cpus 0 is out of range"), "{e}");
        let e = WorkerFile::parse("[resources.pc1.4KiB]\nmax_concurrent = 1\n").unwrap_err();
        assert!(
            e.contains("[resources.pc1.4KiB]") && e.contains("bad sector size"),
            "{e}"
        );
    }
}
