//! The wire format of version 1 is kept: tasks, results and sector records encoded by the mesh
//! before the phases had files of their own (`lib/testdata/wire-v1`, written by that code) decode
//! into the same values and encode back to the same fields (tasks and results to the very same
//! bytes), so records in a deployed `mesh-sectors` bucket keep working and workers of either
//! build read each other's messages.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::IgnoredAny;

use super::{Outcome, SectorRecord, SectorState, Task, TaskResult};
use crate::model::{decode, encode};
use crate::phases::{Output, Params, Phase};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/wire-v1")
        .join(format!("{name}.mpk"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Decodes a fixture as `T` and checks that it encodes back to the same fields and values
/// (in any order: MessagePack maps are read by key), byte for byte when `exact`.
fn round_trip<T>(name: &str, exact: bool) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = fixture(name);
    let value: T = decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let again = encode(&value);
    let fields = |bytes: &[u8]| -> Vec<String> {
        decode::<BTreeMap<String, IgnoredAny>>(bytes)
            .unwrap()
            .into_keys()
            .collect()
    };
    assert_eq!(
        fields(&again),
        fields(&bytes),
        "{name} encodes other fields"
    );
    assert_eq!(
        decode::<T>(&again).unwrap(),
        value,
        "{name} encodes other values"
    );
    if exact {
        assert_eq!(again, bytes, "{name} encodes differently");
    }
    value
}

#[test]
fn version_1_tasks_results_and_records_decode_and_encode_unchanged() {
    for phase in Phase::ALL {
        let p = phase.token();
        let task: Task = round_trip(&format!("task-{p}"), true);
        assert_eq!((task.phase, task.params.phase()), (phase, phase));
        task.validate(crate::model::SectorSize::KiB2).unwrap();
        let result: TaskResult = round_trip(&format!("result-{p}"), true);
        let Outcome::Done { output, .. } = &result.outcome else {
            panic!("{p}: {:?}", result.outcome)
        };
        assert_eq!(output.phase(), phase);
        // A record holds its phases' data flattened, which moves `state` after it.
        let mut record: SectorRecord = round_trip(&format!("record-{p}"), false);
        // The record built this very task, and accepts this very result.
        assert_eq!(record.task(5, task.created_ms).unwrap().unwrap(), task);
        record.fence(&result).unwrap();
        record.apply(&result, || [6; 32], 2);
        let next = phase.next().map_or("sealed", Phase::token);
        let expected: SectorRecord = decode(&fixture(&format!("record-{next}"))).unwrap();
        assert_eq!(record, expected, "{p} absorbed differently");
    }
    let sealed: SectorRecord = round_trip("record-sealed", false);
    assert!(matches!(sealed.state, SectorState::Sealed { .. }));
    assert!(sealed.data.proof_bytes.is_some() && sealed.data.seed.is_some());
    let failed: SectorRecord = round_trip("record-failed", false);
    assert!(matches!(failed.state, SectorState::Failed { .. }));
    let _: TaskResult = round_trip("result-failed", true);

    // Phases without parameters or output keep their plain variants.
    let c2: Task = round_trip("task-c2", true);
    assert_eq!(c2.params, Params::Commit2);
    let c1: TaskResult = round_trip("result-c1", true);
    assert!(matches!(
        c1.outcome,
        Outcome::Done {
            output: Output::Commit1,
            ..
        }
    ));
}
