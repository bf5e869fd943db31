use super::*;

#[test]
fn phases_follow_the_pipeline_and_lotus_priorities() {
    assert_eq!(Phase::AddPiece.next(), Some(Phase::PreCommit1));
    assert_eq!(Phase::Commit2.next(), Some(Phase::Finalize));
    assert_eq!(Phase::Finalize.next(), None);
    let order: Vec<_> = Phase::by_priority().iter().map(|p| p.token()).collect();
    assert_eq!(order, ["fin", "c1", "c2", "pc2", "pc1", "ap"]);
    assert_eq!("PC1".parse::<Phase>().unwrap(), Phase::PreCommit1);
    let e = "pc3".parse::<Phase>().unwrap_err().to_string();
    assert!(e.contains("pc3") && e.contains("ap, pc1"), "{e}");
    let titles: Vec<_> = Phase::ALL.iter().map(|p| p.title()).collect();
    assert_eq!(
        titles,
        [
            "AddPiece",
            "PreCommit1",
            "PreCommit2",
            "Commit1",
            "Commit2",
            "Finalize"
        ]
    );
    for phase in Phase::ALL {
        assert_eq!(phase.token().parse::<Phase>().unwrap(), phase);
        assert_eq!(phase.to_string(), phase.token());
    }
}

/// Every artefact a phase reads was written by an earlier phase (or uploaded with the sector),
/// and is still there: only Finalize drops anything, and it is last.
#[test]
fn every_read_is_written_earlier() {
    let mut there = vec![Artefact::Pieces];
    for phase in Phase::ALL {
        for read in phase.reads() {
            assert!(
                there.contains(read),
                "{phase} reads {read} before it exists"
            );
        }
        there.extend_from_slice(phase.writes());
    }
    assert_eq!(Phase::ALL.last(), Some(&Phase::Finalize));
    assert!(
        Phase::ALL
            .iter()
            .filter(|p| p.needs_params())
            .eq([&Phase::Commit2])
    );
}

#[test]
fn scratch_needs_grow_with_size_and_follow_the_phases() {
    let kib2 = |p: Phase| p.scratch(SectorSize::KiB2);
    assert!(kib2(Phase::AddPiece) < kib2(Phase::PreCommit1));
    // PC1 claims what its sector grows to by PC2, as the sector may stay on its worker.
    assert_eq!(kib2(Phase::PreCommit1), kib2(Phase::PreCommit2));
    assert_eq!(
        Phase::PreCommit1.scratch(SectorSize::GiB32),
        Phase::kept(SectorSize::GiB32) + ATTEMPT_OVERHEAD
    );
    assert!(kib2(Phase::Commit2) < kib2(Phase::AddPiece));
    // A 32GiB sector on its holder takes about 16 sectors' worth: 512 GiB.
    assert_eq!(Phase::kept(SectorSize::GiB32) >> 30, 512);
    for phase in Phase::ALL {
        for size in SectorSize::ALL {
            assert!(phase.scratch(size) >= ATTEMPT_OVERHEAD, "{phase} {size}");
        }
    }
}

#[test]
fn rows_are_lotus_values() {
    let pc1 = Phase::PreCommit1.need(SectorSize::GiB32);
    assert_eq!((pc1.min_memory, pc1.max_memory), (56 * G, 64 * G));
    assert_eq!(pc1.threads(64, 0), 1);
    let pc2 = Phase::PreCommit2.need(SectorSize::GiB32);
    // 92 % of the threads without a GPU, 6 with one.
    assert_eq!(pc2.threads(16, 0), 14);
    assert_eq!(pc2.threads(128, 0), 117);
    assert_eq!(pc2.threads(16, 1), 6);
    assert_eq!(pc2.threads(1, 0), 1);
    let c2 = Phase::Commit2.need(SectorSize::GiB32);
    assert_eq!((c2.min_memory, c2.base_min_memory), (30 * G, 32 * G));
    assert_eq!(Phase::Commit1.need(SectorSize::GiB64).threads(16, 0), 0);
    assert_eq!(Phase::Finalize.need(SectorSize::GiB64).max_memory, M);
}

fn object(name: &str) -> ObjectRef {
    ObjectRef {
        name: name.into(),
        key: format!("f01000/1/x/{name}"),
        size: 1,
        sha256: [0; 32],
    }
}

/// A result carries exactly the artefacts its phase writes: each of them, and nothing else.
#[test]
fn outputs_are_the_artefacts_the_phase_writes() {
    let mut data = SectorData::new(vec![], vec![], [1; 32]);
    let pc1 = |pc1_output: Vec<u8>| {
        Output::PreCommit1(pc1::Output {
            pc1_output: ByteBuf::from(pc1_output),
            held: false,
        })
    };
    let absorb = |data: &mut SectorData, outputs: &[ObjectRef], output: &Output| {
        Phase::PreCommit1.absorb(
            data,
            SectorSize::KiB2,
            &WorkerId("w1".into()),
            outputs,
            output,
            &mut || [0; 32],
        )
    };
    let e = absorb(&mut data, &[], &pc1(vec![1])).unwrap_err();
    assert_eq!(e, "it carries no cache files");
    let e = absorb(
        &mut data,
        &[object("cache/tree-d"), object("sealed")],
        &pc1(vec![1]),
    )
    .unwrap_err();
    assert_eq!(e, "it carries sealed, which pc1 does not write");
    let e = absorb(&mut data, &[object("cache/tree-d")], &pc1(vec![])).unwrap_err();
    assert_eq!(e, "it carries no pc1 output");
    let e = absorb(&mut data, &[object("cache/tree-d")], &Output::Commit1).unwrap_err();
    assert_eq!(e, "it carries c1 output");
    assert_eq!(data, SectorData::new(vec![], vec![], [1; 32]));

    absorb(&mut data, &[object("cache/tree-d")], &pc1(vec![1])).unwrap();
    assert_eq!(data.pc1_output, Some(ByteBuf::from(vec![1])));
    assert!(data.objects.contains_key("cache/tree-d"));
    // The next phase's task reads the cache and carries the PC1 output.
    let inputs = Phase::PreCommit2.inputs(&data);
    assert_eq!(inputs, [object("cache/tree-d")]);
    assert_eq!(
        Phase::PreCommit2.params(&data),
        Ok(Params::PreCommit2(pc2::Params {
            pc1_output: ByteBuf::from(vec![1])
        }))
    );
    assert_eq!(
        Phase::Commit1.params(&data),
        Err("sector has no seed for c1".into())
    );
}

/// Finalize keeps the replica, the kept cache files and (for deals) the unsealed copy.
#[test]
fn finalize_keeps_what_proving_needs() {
    for deals in [false, true] {
        let pieces = vec![PieceSpec {
            object: deals.then(|| Artefact::piece(0)),
            size: 2032,
        }];
        let mut data = SectorData::new(pieces, vec![object("piece-0")], [1; 32]);
        for name in [
            "unsealed",
            "sealed",
            "c1.out",
            "cache/p_aux",
            "cache/tree-d",
        ] {
            data.objects.insert(name.into(), object(name));
        }
        let kept = |kept: &[&str]| {
            Output::Finalize(fin::Output {
                kept: kept.iter().map(|k| k.to_string()).collect(),
            })
        };
        let finalize = |data: &mut SectorData, output: &Output| {
            Phase::Finalize.absorb(
                data,
                SectorSize::KiB2,
                &WorkerId("w1".into()),
                &[],
                output,
                &mut || [0; 32],
            )
        };
        let e = finalize(&mut data.clone(), &kept(&["t_aux"])).unwrap_err();
        assert!(e.contains("kept none"), "{e}");
        finalize(&mut data, &kept(&["p_aux", "t_aux"])).unwrap();
        let names: Vec<&str> = data.objects.keys().map(String::as_str).collect();
        if deals {
            assert_eq!(names, ["cache/p_aux", "sealed", "unsealed"]);
        } else {
            assert_eq!(names, ["cache/p_aux", "sealed"]);
        }
    }
}
