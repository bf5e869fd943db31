//! Benchmark reports: a scenario's table printed and written to `bench/results/<scenario>.md`,
//! headed by the machine and the versions it ran with, so that a figure is never read without
//! its baseline or its context.

use std::fmt::Write;
use std::path::PathBuf;
use std::process::Command;

/// One scenario's results.
pub struct Report {
    /// File name under `bench/results/` (without `.md`), e.g. `dispatch`.
    pub scenario: String,
    pub title: String,
    /// What was measured and how, in a sentence or two.
    pub setup: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Lines after the table (ratios, caveats).
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(scenario: &str, title: &str, setup: &str, columns: &[&str]) -> Report {
        Report {
            scenario: scenario.to_string(),
            title: title.to_string(),
            setup: setup.to_string(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(cells.len(), self.columns.len(), "a row per column");
        self.rows.push(cells);
    }

    pub fn note(&mut self, line: impl Into<String>) {
        self.notes.push(line.into());
    }

    /// The Markdown text: title, machine, setup, table, notes.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# {}\n", self.title);
        let _ = writeln!(out, "{}\n", machine());
        let _ = writeln!(out, "{}\n", self.setup);
        let _ = writeln!(out, "| {} |", self.columns.join(" | "));
        let align: Vec<&str> = (0..self.columns.len())
            .map(|i| if i == 0 { "---" } else { "---:" })
            .collect();
        let _ = writeln!(out, "|{}|", align.join("|"));
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "{note}");
            }
        }
        out
    }

    /// Prints the report and writes it to `bench/results/<scenario>.md`; returns the path.
    pub fn write(&self) -> PathBuf {
        let text = self.markdown();
        println!("\n{text}");
        let dir = results_dir();
        std::fs::create_dir_all(&dir).expect("create bench/results");
        let path = dir.join(format!("{}.md", self.scenario));
        std::fs::write(&path, text).expect("write the report");
        println!("written to {}", path.display());
        path
    }
}

/// `bench/results/` of the repository.
pub fn results_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("bench")
        .join("results")
}

/// One line on the machine and versions: CPU model and cores, memory, nats-server, SeaweedFS,
/// the mesh, the date.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let version = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .output()
            .ok()
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr);
                text.lines().next().unwrap_or("").trim().to_string()
            })
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "not found".into())
    };
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "Machine: {model}, {cores} cores, {mem_gib:.1} GiB RAM. Versions: mesh {}, {}, SeaweedFS \
         {}, async-nats 0.51. Measured {date}.",
        env!("CARGO_PKG_VERSION"),
        version("nats-server", "--version"),
        version("weed", "version"),
    )
}
