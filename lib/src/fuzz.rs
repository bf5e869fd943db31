//! Fuzzing of every body the mesh decodes from NATS, as bounded property tests that run with the
//! unit tests (and so in CI): arbitrary, message-shaped and mutated bodies never panic, oversized
//! ones are refused, whatever decodes and validates names only safe objects inside its own
//! sector, and a record that absorbs any result stays safe and storable.
//!
//! Each property runs a fixed number of cases chosen to keep the module to a few seconds in a
//! debug build. `PROPTEST_CASES=N` runs N cases of each instead, for a longer campaign:
//! `PROPTEST_CASES=100000 cargo nextest run -p mesh fuzz`. (A config that sets `cases`
//! itself hides that variable, which proptest only reads for its default, so [`config`] reads
//! it.)

use std::path::{Component, Path, PathBuf};

use proptest::prelude::*;
use serde_bytes::ByteBuf;
use serde_json::Value;

use crate::broker::drain::DrainMark;
use crate::broker::miners::MinerEntry;
use crate::broker::workers::WorkerRecord;
use crate::model::{
    DecodeError, MAX_MESSAGE_BYTES, MinerId, ObjectRef, PieceInfo, PieceSpec, SectorNum,
    SectorSize, WorkerId, check_object, decode, decode_json, encode,
};
use crate::names;
use crate::phases::{Output, Params, Phase, ap, c2, fin, pc1, pc2};
use crate::sector::{
    MESSAGE_VERSION, Outcome, SectorRecord, SectorState, Task, TaskHead, TaskResult, Timings,
};
use crate::worker::scratch::{ScratchRoot, join_inside};

/// `cases` cases, or `PROPTEST_CASES` when it is set.
fn config(cases: u32) -> ProptestConfig {
    let cases = match std::env::var_os("PROPTEST_CASES") {
        Some(_) => ProptestConfig::default().cases,
        None => cases,
    };
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

const ROOT: &str = "/scratch/worker/f01000.7.pc1.0-00000000";

fn miner() -> MinerId {
    "f01000".parse().unwrap()
}

/// A sector on its way through every phase: the record before each phase, that phase's task,
/// and a result the publisher accepts. The sector holds one deal piece, so that AddPiece reads
/// an input.
fn walk() -> Vec<(SectorRecord, Task, TaskResult)> {
    let object = |name: &str, dir: &str| ObjectRef {
        name: name.into(),
        key: format!("f01000/7/{dir}{name}"),
        size: 1,
        sha256: [0; 32],
    };
    let mut record = SectorRecord::new(
        miner(),
        SectorNum(7),
        SectorSize::KiB2,
        SectorSize::KiB2.seal_proof(),
        vec![PieceSpec {
            object: Some("piece-0".into()),
            size: 1016,
        }],
        vec![object("piece-0", "")],
        [9; 32],
        0,
    );
    let steps: Vec<(Vec<ObjectRef>, Output)> = vec![
        (
            vec![object("unsealed", "ap-1/")],
            Output::AddPiece(ap::Output {
                piece_infos: vec![
                    PieceInfo {
                        comm_p: [1; 32],
                        size: 1016,
                    },
                    PieceInfo {
                        comm_p: [2; 32],
                        size: 1016,
                    },
                ],
            }),
        ),
        (
            vec![
                object("cache/tree-d", "pc1-1/"),
                object("cache/layer-1", "pc1-1/"),
            ],
            Output::PreCommit1(pc1::Output {
                pc1_output: ByteBuf::from(vec![1, 2, 3]),
                held: false,
            }),
        ),
        (
            vec![object("sealed", "pc2-1/"), object("cache/p_aux", "pc2-1/")],
            Output::PreCommit2(pc2::Output {
                comm_r: [3; 32],
                comm_d: [4; 32],
            }),
        ),
        (vec![object("c1.out", "c1-1/")], Output::Commit1),
        (
            vec![],
            Output::Commit2(c2::Output {
                proof: ByteBuf::from(vec![5; 192]),
            }),
        ),
        (
            vec![],
            Output::Finalize(fin::Output {
                kept: vec!["p_aux".into()],
            }),
        ),
    ];
    let mut out = Vec::new();
    for (outputs, output) in steps {
        let task = record.task(5, 0).unwrap().unwrap();
        task.validate(SectorSize::KiB2).unwrap();
        let result = TaskResult {
            version: MESSAGE_VERSION,
            task: task.id.clone(),
            miner: task.miner,
            sector: task.sector,
            phase: task.phase,
            attempt: 1,
            worker: WorkerId("w1".into()),
            outcome: Outcome::Done { outputs, output },
            timings: Timings::default(),
            finished_ms: 1,
        };
        let before = record.clone();
        record.fence(&result).unwrap();
        record.apply(&result, || [6; 32], 2);
        assert!(
            !matches!(record.state, SectorState::Failed { .. }),
            "{record:?}"
        );
        out.push((before, task, result));
    }
    assert!(matches!(record.state, SectorState::Sealed { .. }));
    out
}

/// Whether `path`, joined to `root`, resolves (lexically) to `root` or below it.
fn stays_inside(root: &Path, path: &Path) -> bool {
    let Ok(rest) = path.strip_prefix(root) else {
        return false;
    };
    let mut depth = 0i64;
    for part in rest.components() {
        match part {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => depth -= 1,
            Component::RootDir | Component::Prefix(_) => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// What an accepted name or key suffix must look like, stated apart from `check_object`.
fn is_plain_relative(path: &str) -> bool {
    !path.starts_with('/')
        && path.is_ascii()
        && !path.contains(['\0', '\\', '%', ' '])
        && !path.chars().any(|c| c.is_ascii_control())
        && path.split('/').all(|seg| !matches!(seg, "" | "." | ".."))
}

/// What must hold of any task that decoded and validated, whoever wrote it.
fn assert_task_is_safe(task: &Task) {
    let prefix = names::sector_prefix(task.miner, task.sector);
    let root = Path::new(ROOT);
    for input in &task.inputs {
        assert!(is_plain_relative(&input.name), "{input:?}");
        let suffix = input.key.strip_prefix(&prefix);
        assert!(suffix.is_some_and(is_plain_relative), "{input:?}");
        let path = join_inside(root, &input.name).expect("a valid name joins");
        assert!(stays_inside(root, &path), "{}", path.display());
    }
    if let Params::AddPiece(ap::Params { pieces }) = &task.params {
        for name in pieces.iter().filter_map(|p| p.object.as_ref()) {
            assert!(task.inputs.iter().any(|i| &i.name == name), "{name}");
        }
    }
    // The attempt directory is named after the id: one plain component.
    let attempt = format!("{}-00000000", task.id);
    let parts: Vec<_> = Path::new(&attempt).components().collect();
    assert!(matches!(parts[..], [Component::Normal(_)]), "{attempt}");
    assert!(task.generation().is_some());
}

/// What must hold of a record after it took any result: its objects stay inside its sector
/// and it still fits in the bucket.
fn assert_record_is_safe(record: &SectorRecord) {
    let prefix = names::sector_prefix(record.miner, record.sector);
    for object in record.data.objects.values() {
        check_object(object, &prefix).unwrap();
    }
    assert!(encode(record).len() <= MAX_MESSAGE_BYTES);
    if let SectorState::Failed { reason, .. } = &record.state {
        assert!(!reason.chars().any(char::is_control), "{reason:?}");
    }
}

/// Decodes `bytes` as every body the mesh reads from NATS and exercises what decoded the way
/// the worker and publisher would. Panics (the property fails) only on a broken invariant.
fn decode_everything(bytes: &[u8], walk: &[(SectorRecord, Task, TaskResult)]) {
    if let Ok(task) = decode::<Task>(bytes) {
        let _ = task.head();
        let _ = task.class();
        for size in SectorSize::ALL {
            if task.validate(size).is_ok() {
                assert_task_is_safe(&task);
            }
        }
    }
    let _ = decode::<TaskHead>(bytes);
    if let Ok(result) = decode::<TaskResult>(bytes) {
        let _ = result.message_id();
        let _ = result.validate();
        for (record, _, _) in walk {
            let mut record = record.clone();
            if record.fence(&result).is_ok() {
                record.apply(&result, || [0; 32], 3);
                assert_record_is_safe(&record);
            }
        }
    }
    if let Ok(mut record) = decode::<SectorRecord>(bytes) {
        let _ = record.state.label();
        let _ = record.has_deals();
        if let Some(Ok(task)) = record.task(5, 0) {
            let _ = task.validate(record.size);
        }
        for (_, _, result) in walk {
            if record.fence(result).is_ok() {
                record.clone().apply(result, || [0; 32], 3);
            }
        }
        let _ = record.redrive(4);
        let _ = record.retry(Phase::AddPiece, 9, 5);
    }
    if let Ok(worker) = decode_json::<WorkerRecord>(bytes) {
        let _ = worker.busy();
    }
    let _ = decode_json::<MinerEntry>(bytes);
    let _ = decode_json::<DrainMark>(bytes);
}

/// Every decoder refuses `bytes` as too large.
fn assert_all_too_large(bytes: &[u8]) {
    let too_large =
        |r: Result<(), DecodeError>| matches!(r, Err(DecodeError::TooLarge(n)) if n == bytes.len());
    assert!(too_large(decode::<Task>(bytes).map(drop)));
    assert!(too_large(decode::<TaskHead>(bytes).map(drop)));
    assert!(too_large(decode::<TaskResult>(bytes).map(drop)));
    assert!(too_large(decode::<SectorRecord>(bytes).map(drop)));
    assert!(too_large(decode_json::<WorkerRecord>(bytes).map(drop)));
    assert!(too_large(decode_json::<MinerEntry>(bytes).map(drop)));
    assert!(too_large(decode_json::<DrainMark>(bytes).map(drop)));
}

/// Path segments an attacker would try.
fn nasty_segment() -> impl Strategy<Value = String> {
    let nasty = [
        "..",
        ".",
        "",
        "%2e",
        "%2e%2e",
        "%2F",
        "\\",
        "..\\..",
        "\0",
        "é",
        "\u{202e}",
        "ｃache",
        "a b",
        "~",
        "$HOME",
        "\n",
        "\x1b[2J",
        "C:",
        "..%2f",
        "...",
        ".. ",
        "\u{ff0e}\u{ff0e}",
    ];
    prop::sample::select(nasty.to_vec()).prop_map(String::from)
}

/// Path segments, nasty and plain.
fn segment() -> impl Strategy<Value = String> {
    let plain = [
        "cache",
        "p_aux",
        "sealed",
        "unsealed",
        "tree-r-last-0.dat",
        "c1.out",
        "piece-0",
        "-",
        "_",
        ".git",
        "pc1-1a2b3c4d",
    ];
    prop_oneof![
        3 => nasty_segment(),
        4 => prop::sample::select(plain.to_vec()).prop_map(String::from),
        3 => "[a-zA-Z0-9._-]{1,12}",
        1 => any::<String>().prop_map(|s| s.chars().take(8).collect()),
        1 => (250usize..1100).prop_map(|n| "x".repeat(n)),
    ]
}

/// Paths: segments joined by separators, absolute or not; or a near miss, a plain path with one
/// nasty segment in it.
fn path() -> impl Strategy<Value = String> {
    let joined = (
        prop::collection::vec(segment(), 0..6),
        prop::sample::select(vec!["/", "/", "/", "/", "\\", "//", ""]),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(segments, sep, leading, trailing)| {
            let mut path = segments.join(sep);
            if leading {
                path.insert(0, '/');
            }
            if trailing {
                path.push('/');
            }
            path
        });
    let near_miss = (
        prop::collection::vec("[a-zA-Z0-9_-]{1,8}", 1..5),
        any::<prop::sample::Index>(),
        nasty_segment(),
    )
        .prop_map(|(mut segments, at, nasty)| {
            let at = at.index(segments.len() + 1);
            segments.insert(at, nasty);
            segments.join("/")
        });
    prop_oneof![joined, near_miss]
}

/// Keys: a prefix (the sector's, a neighbour's, or a broken one) and a path.
fn key() -> impl Strategy<Value = String> {
    let prefixes = [
        "f01000/7/",
        "f01000/7/",
        "f01000/7",
        "f01000/70/",
        "f01001/7/",
        "",
        "/f01000/7/",
        "f01000/7/../7/",
        "f01000/7/./",
    ];
    (prop::sample::select(prefixes.to_vec()), path()).prop_map(|(p, rest)| format!("{p}{rest}"))
}

/// Names made only of safe segments, which must be accepted.
fn safe_name() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,30}", 1..5)
        .prop_filter("no dot segments", |s| {
            s.iter().all(|p| p != "." && p != "..")
        })
        .prop_map(|segments| segments.join("/"))
}

/// A byte-level change to an encoded body.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

/// Byte runs that mean something to MessagePack: nil, huge lengths, deep nesting, `..`.
fn interesting() -> impl Strategy<Value = Vec<u8>> {
    let runs: Vec<Vec<u8>> = vec![
        vec![0xc0],
        vec![0xdc, 0xff, 0xff],
        vec![0xdd, 0xff, 0xff, 0xff, 0xff],
        vec![0xdf, 0xff, 0xff, 0xff, 0xff],
        vec![0xdb, 0xff, 0xff, 0xff, 0xff],
        vec![0xc6, 0xff, 0xff, 0xff, 0xff],
        vec![0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0],
        vec![0xa2, b'.', b'.'],
        vec![0xa6, b'.', b'.', b'/', b'.', b'.', b'/'],
        vec![0xa1, b'/'],
        vec![0xa0],
        vec![0x91; 64],
        vec![0x81; 64],
    ];
    prop_oneof![
        prop::sample::select(runs),
        prop::collection::vec(any::<u8>(), 1..8),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, bit)| Edit::Flip(i, bit)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), interesting()).prop_map(|(i, run)| Edit::Insert(i, run)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply_edits(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len();
        match edit {
            Edit::Flip(i, bit) if len > 0 => bytes[i % len] ^= 1 << bit,
            Edit::Set(i, b) if len > 0 => bytes[i % len] = *b,
            Edit::Insert(i, run) => {
                let at = i % (len + 1);
                bytes.splice(at..at, run.iter().copied());
            }
            Edit::Delete(i, n) if len > 0 => {
                let at = i % len;
                bytes.drain(at..(at + n).min(len));
            }
            Edit::Truncate(i) => bytes.truncate(i % (len + 1)),
            _ => {}
        }
    }
    bytes
}

/// MessagePack maps and arrays shaped like the mesh's messages: field and variant names as keys,
/// edge-case numbers, and the attack strings of [`path`].
fn message_shaped() -> impl Strategy<Value = Value> {
    let keys = [
        "version",
        "id",
        "miner",
        "sector",
        "proof",
        "phase",
        "priority",
        "has_deals",
        "max_attempts",
        "inputs",
        "params",
        "holder",
        "synthetic",
        "created_ms",
        "name",
        "key",
        "size",
        "sha256",
        "AddPiece",
        "PreCommit1",
        "PreCommit2",
        "Commit1",
        "Commit2",
        "Finalize",
        "pieces",
        "object",
        "ticket",
        "piece_infos",
        "comm_p",
        "pc1_output",
        "task",
        "attempt",
        "worker",
        "outcome",
        "Done",
        "Failed",
        "outputs",
        "output",
        "reason",
        "kept",
        "timings",
        "state",
        "Active",
        "objects",
        "history",
        "Sealed",
        "generation",
        "published",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop::sample::select(vec![0u64, 1, 2, 7, 127, 1016, 2032, u64::MAX, 1 << 32])
            .prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(vec![
            "f01000",
            "f01000.7.pc1.0",
            "unsealed",
            "f01000/7/x/unsealed"
        ])
        .prop_map(Value::from),
        path().prop_map(Value::from),
        key().prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(keys.to_vec()), inner), 0..8).prop_map(
                |fields| Value::Object(
                    fields
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect()
                )
            ),
        ]
    })
}

/// A field of a task or result to overwrite with an attacker's string.
#[derive(Debug, Clone, Copy)]
enum Field {
    Name,
    Key,
    Id,
    PieceObject,
    Kept,
    Reason,
    Worker,
}

fn poke_task(task: &mut Task, field: Field, value: String) {
    match field {
        Field::Name => task.inputs.iter_mut().for_each(|i| i.name = value.clone()),
        Field::Key => task.inputs.iter_mut().for_each(|i| i.key = value.clone()),
        Field::Id => task.id.0 = value,
        Field::PieceObject => match &mut task.params {
            Params::AddPiece(ap::Params { pieces }) => pieces
                .iter_mut()
                .for_each(|p| p.object = Some(value.clone())),
            _ => task.inputs.iter_mut().for_each(|i| i.name = value.clone()),
        },
        Field::Kept | Field::Reason | Field::Worker => {
            task.holder = Some(WorkerId(value));
        }
    }
}

fn poke_result(result: &mut TaskResult, field: Field, value: String) {
    match (&mut result.outcome, field) {
        (_, Field::Worker) => result.worker = WorkerId(value),
        (_, Field::Id) => result.task.0 = value,
        (outcome, Field::Reason) => {
            *outcome = Outcome::Failed {
                reason: value.repeat(3),
            }
        }
        (Outcome::Done { outputs, output }, field) => match (field, output) {
            (Field::Kept, Output::Finalize(fin::Output { kept })) => kept.push(value),
            (Field::Key, _) => outputs.iter_mut().for_each(|o| o.key = value.clone()),
            _ => outputs.push(ObjectRef {
                name: value,
                key: "f01000/7/x-1/x".into(),
                size: 1,
                sha256: [0; 32],
            }),
        },
        (Outcome::Failed { .. } | Outcome::Lost { .. }, _) => {}
    }
}

fn field() -> impl Strategy<Value = Field> {
    prop::sample::select(vec![
        Field::Name,
        Field::Key,
        Field::Id,
        Field::PieceObject,
        Field::Kept,
        Field::Reason,
        Field::Worker,
    ])
}

proptest! {
    #![proptest_config(config(4096))]

    /// (a) Arbitrary bytes decode, or fail to, without a panic, as every body type.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        decode_everything(&bytes, &WALK);
    }

    /// (a) Bodies shaped like messages (right field names, wrong everything else) exercise the
    /// decoders past their first byte, and validation on whatever decodes.
    #[test]
    fn message_shaped_bodies_never_panic(value in message_shaped()) {
        let bytes = rmp_serde::to_vec_named(&value).unwrap();
        decode_everything(&bytes, &WALK);
        decode_everything(&serde_json::to_vec(&value).unwrap(), &WALK);
    }

    /// (b) Valid tasks and results with bytes flipped, set, inserted, deleted or cut never
    /// panic; whatever still decodes and validates is safe.
    #[test]
    fn mutated_encodings_never_panic(
        pick in 0usize..12,
        edits in prop::collection::vec(edit(), 1..8),
    ) {
        let (_, task, result) = &WALK[pick % WALK.len()];
        let body = if pick < WALK.len() { encode(task) } else { encode(result) };
        decode_everything(&apply_edits(body, &edits), &WALK);
    }

    /// (b) Valid tasks and results with a name, key, id, piece, kept file, reason or worker
    /// replaced by an attacker's string (then maybe a few bytes changed): a task validates only
    /// if it is still safe, and a record that takes the result stays safe and storable.
    #[test]
    fn poisoned_fields_are_refused_or_harmless(
        pick in 0usize..6,
        field in field(),
        value in prop_oneof![path(), key()],
        edits in prop::collection::vec(edit(), 0..3),
    ) {
        let (record, task, result) = &WALK[pick];
        let mut task = task.clone();
        poke_task(&mut task, field, value.clone());
        if task.validate(SectorSize::KiB2).is_ok() {
            assert_task_is_safe(&task);
        }
        let mut result = result.clone();
        poke_result(&mut result, field, value);
        let mut taken = record.clone();
        if taken.fence(&result).is_ok() {
            taken.apply(&result, || [0; 32], 3);
            assert_record_is_safe(&taken);
            if let Some(Ok(next)) = taken.task(5, 0) {
                next.validate(SectorSize::KiB2).unwrap();
            }
        }
        decode_everything(&apply_edits(encode(&task), &edits), &WALK);
        decode_everything(&apply_edits(encode(&result), &edits), &WALK);
    }

    /// (c) `check_object` accepts only names of safe segments and keys under the sector's
    /// prefix with no `..` segment, however they are spelt. (Name and key are tried apart, each
    /// beside a valid other half, so that neither hides the other's refusal.)
    #[test]
    fn only_safe_names_and_keys_pass(name in path(), key in key()) {
        let prefix = "f01000/7/";
        let valid = ObjectRef {
            name: "cache/p_aux".into(),
            key: "f01000/7/pc2-1/cache/p_aux".into(),
            size: 1,
            sha256: [0; 32],
        };
        let named = ObjectRef { name, ..valid.clone() };
        if check_object(&named, prefix).is_ok() {
            prop_assert!(is_plain_relative(&named.name), "{:?}", named.name);
        }
        let keyed = ObjectRef { key, ..valid };
        if check_object(&keyed, prefix).is_ok() {
            let suffix = keyed.key.strip_prefix(prefix);
            prop_assert!(suffix.is_some_and(is_plain_relative), "{:?}", keyed.key);
            prop_assert!(keyed.key.split('/').all(|p| p != ".."));
        }
    }

    /// (c) …and it does accept every name and key made of safe segments.
    #[test]
    fn safe_names_and_keys_pass(name in safe_name(), dir in safe_name()) {
        let object = ObjectRef {
            key: format!("f01000/7/{dir}/{name}"),
            name,
            size: 1,
            sha256: [0; 32],
        };
        prop_assert_eq!(check_object(&object, "f01000/7/"), Ok(()));
    }

    /// (d) Joining any name to a scratch directory gives a path inside it, or nothing.
    #[test]
    fn scratch_joins_stay_inside(name in prop_oneof![path(), key(), any::<String>()]) {
        let root = Path::new(ROOT);
        if let Some(joined) = join_inside(root, &name) {
            prop_assert!(stays_inside(root, &joined), "{}", joined.display());
            prop_assert!(joined != root);
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// (d) Attempt directories made from any name land inside the worker's root, or are refused.
    #[test]
    fn attempt_directories_stay_inside(name in prop_oneof![nasty_segment(), segment(), path()]) {
        let base = tempfile::tempdir().unwrap();
        let root = ScratchRoot::create(base.path(), "w", "h").unwrap();
        if let Ok(dir) = root.attempt(&name) {
            prop_assert!(stays_inside(root.path(), dir.path()), "{}", dir.path().display());
            prop_assert_eq!(dir.path().parent(), Some(root.path()));
        }
        prop_assert!(root.path().join("owner").exists());
        let outside: Vec<PathBuf> = std::fs::read_dir(base.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p != root.path())
            .collect();
        prop_assert!(outside.is_empty(), "{outside:?}");
    }
}

proptest! {
    #![proptest_config(config(32))]

    /// (a) A few larger bodies of arbitrary bytes.
    #[test]
    fn larger_arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 4096..65536),
    ) {
        decode_everything(&bytes, &WALK);
    }

    /// (a) Bodies over [`MAX_MESSAGE_BYTES`] are refused before any parsing, whatever they hold.
    #[test]
    fn oversized_bodies_are_too_large(extra in 1usize..4096, fill in any::<u8>()) {
        assert_all_too_large(&vec![fill; MAX_MESSAGE_BYTES + extra]);
    }
}

/// The walk, built once: every property reads it.
static WALK: std::sync::LazyLock<Vec<(SectorRecord, Task, TaskResult)>> =
    std::sync::LazyLock::new(walk);

#[test]
fn hostile_shapes_at_the_size_limit_are_refused_without_harm() {
    // A message of exactly the limit is parsed (and refused as malformed), one byte more is not.
    let at_limit = vec![0xc1; MAX_MESSAGE_BYTES];
    assert!(matches!(
        decode::<Task>(&at_limit),
        Err(DecodeError::Malformed(_))
    ));
    assert_all_too_large(&[at_limit, vec![0]].concat());

    // Nesting as deep as the limit allows, under a field no struct has (so it is skipped),
    // hits the decoders' depth limits instead of the stack.
    let nested = |open: u8, body: &[u8]| {
        let mut bytes = body.to_vec();
        bytes.resize(MAX_MESSAGE_BYTES - 1, open);
        bytes.push(0xc0);
        bytes
    };
    let msgpack = nested(0x91, &[0x81, 0xa1, b'z']);
    let json = [b"{\"z\":".as_slice(), &vec![b'['; MAX_MESSAGE_BYTES - 8]].concat();
    decode_everything(&msgpack, &WALK);
    decode_everything(&json, &WALK);
    assert!(decode::<Task>(&msgpack).is_err());
    assert!(decode_json::<MinerEntry>(&json).is_err());

    // Lengths that claim far more than the body holds allocate nothing up front.
    for claim in [
        [0xdd, 0xff, 0xff, 0xff, 0xff],
        [0xdf, 0xff, 0xff, 0xff, 0xff],
        [0xc6, 0xff, 0xff, 0xff, 0xff],
        [0xdb, 0xff, 0xff, 0xff, 0xff],
    ] {
        decode_everything(&claim, &WALK);
        let mut task = encode(&WALK[0].1);
        task.extend_from_slice(&claim);
        decode_everything(&task, &WALK);
    }
}
