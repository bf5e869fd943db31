//! The benchmark scenarios, one module each, in one bench binary (one link of the proofs stack
//! instead of six). Each measures the mesh beside a baseline in the same run and writes
//! `bench/results/<scenario>.md`:
//!
//!     cargo bench --profile dev -p mesh-tests --bench scenarios -- dispatch scale
//!
//! With no scenario named, every one runs in turn (`real_size` alone takes about 40 minutes).

mod data_plane;
mod dispatch;
mod logins;
mod real_size;
mod recovery;
mod scale;
mod seal_overhead;
mod utilisation;

use std::process::ExitCode;

/// Every scenario, in the order a full run takes them.
const SCENARIOS: [&str; 8] = [
    "dispatch",
    "logins",
    "utilisation",
    "recovery",
    "data_plane",
    "seal_overhead",
    "scale",
    "real_size",
];

fn main() -> ExitCode {
    // `cargo bench` adds `--bench` (and passes on flags meant for libtest): only names count.
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if let Some(unknown) = named.iter().find(|n| !SCENARIOS.contains(&n.as_str())) {
        eprintln!(
            "error: '{unknown}' is not a scenario: use one or more of {}",
            SCENARIOS.join(", ")
        );
        return ExitCode::FAILURE;
    }
    let chosen: Vec<&str> = if named.is_empty() {
        SCENARIOS.to_vec()
    } else {
        named.iter().map(String::as_str).collect()
    };
    for scenario in chosen {
        // A runtime each, so that nothing one scenario left running weighs on the next.
        let runtime = tokio::runtime::Runtime::new().expect("start the async runtime");
        runtime.block_on(async {
            match scenario {
                "dispatch" => dispatch::scenario().await,
                "logins" => logins::scenario().await,
                "utilisation" => utilisation::scenario().await,
                "recovery" => recovery::scenario().await,
                "data_plane" => data_plane::scenario().await,
                "seal_overhead" => seal_overhead::scenario().await,
                "scale" => scale::scenario().await,
                "real_size" => real_size::scenario().await,
                _ => unreachable!("checked above"),
            }
        });
    }
    ExitCode::SUCCESS
}
