//! Utilisation under uneven miner load: one shared pool of workers (the mesh's design) beside a
//! static partition (each miner its own workers, as Lotus runs today), in the same run.
//! Synthetic executor (a SIMULATION: each phase sleeps for a scaled-down lotus time), real
//! nats-server, the mesh's binaries.
//!
//!     cargo build --workspace && cargo bench --profile dev -p mesh-tests --bench scenarios -- utilisation
//!
//! About a minute and a half on two busy cores (the equal partition alone takes ~35 s).
//! Four miners submit 60/25/10/5% of 40 sectors, all at once. Each layout runs on fresh servers:
//! the shared pool is one mesh whose 8 workers serve every miner; a partition is one mesh per
//! miner (its own nats-server and store) with only that miner's workers, which is exactly "each
//! miner its own workers" (mesh-worker has no flag to serve one miner only). Busy slots come
//! from the workers' "task started"/"task done" log lines, sector latencies from the sealed
//! sector records. Writes `bench/results/utilisation.md` and `utilisation.svg`.

use std::collections::BTreeMap;
use std::time::Duration;

use mesh::sector::SectorState;
use mesh_tests::report::{Report, results_dir};
use mesh_tests::{Mesh, Proc, log_field, log_time_ms, wait_for};
use plotters::prelude::*;

/// Miners and their sectors: 60/25/10/5% of 40.
const MINERS: [(&str, usize); 4] = [("f01000", 24), ("f01001", 10), ("f01002", 4), ("f01003", 2)];
/// Workers in every layout, one task at a time each.
const WORKERS: usize = 8;
const DURATIONS: &str = "ap=100ms,pc1=1500ms,pc2=400ms,c1=50ms,c2=400ms,fin=50ms";
/// A sector's task time end to end with `DURATIONS`.
const SECTOR_MS: u64 = 2500;
/// Per publisher; the slowest layout needs about 35 s.
const DEADLINE: Duration = Duration::from_secs(240);
/// The plot's resolution: busy slots averaged over this much time.
const BIN_MS: u64 = 500;

/// How the workers are laid out.
struct Layout {
    name: String,
    /// Workers per miner, in `MINERS` order; `None` for one pool serving every miner.
    partition: Option<Vec<usize>>,
}

/// One attempt of one task on one worker slot, from its start to its end.
struct Span {
    miner: String,
    sector: String,
    start: u64,
    end: u64,
}

/// A sealed sector: when it was created and sealed (ms since the epoch).
struct Sector {
    miner: String,
    number: String,
    created: u64,
    sealed: u64,
}

/// What one layout's run left behind.
struct Measured {
    /// Just before the publishers started.
    t0: u64,
    spans: Vec<Span>,
    sectors: Vec<Sector>,
}

/// Utilisation of some slots over a run.
struct Figures {
    /// Mean busy slots over the slots, while at least one of their tasks waited.
    busy_waited: f64,
    /// Mean busy slots over the slots, from the publishers' start to the last sector sealed.
    busy_run: f64,
    /// Mean busy slots per `BIN_MS` from t0, for the plot.
    bins: Vec<f64>,
    /// How long a sector's next task took to start after its previous one ended (through the
    /// worker's result, the publisher and the next task's publish), in ms.
    handoffs: Vec<u64>,
}

/// The worker's task attempts, each start paired with its end.
fn spans(worker: &Proc) -> Vec<Span> {
    let mut open: BTreeMap<String, (u64, String, String)> = BTreeMap::new();
    let mut out = Vec::new();
    for line in worker.log_text().lines() {
        let started = line.contains("task started");
        if !started && !line.contains("task done") {
            continue;
        }
        let at = log_time_ms(line);
        let task = log_field(line, "task").expect("a task id").to_string();
        if started {
            let miner = log_field(line, "miner").expect("a miner").to_string();
            let sector = log_field(line, "sector").expect("a sector").to_string();
            open.insert(task, (at, miner, sector));
        } else if let Some((start, miner, sector)) = open.remove(&task) {
            out.push(Span {
                miner,
                sector,
                start,
                end: at,
            });
        }
    }
    assert!(
        open.is_empty(),
        "tasks started and never done (synthetic tasks do not fail): {:?}\n{}",
        open.keys().collect::<Vec<_>>(),
        worker.tail(20)
    );
    out
}

/// Runs every miner's sectors on `layout` and collects what happened.
async fn run(layout: &Layout) -> Measured {
    // Each group is one mesh: its miners and its number of workers.
    let groups: Vec<(Vec<(&str, usize)>, usize)> = match &layout.partition {
        None => vec![(MINERS.to_vec(), WORKERS)],
        Some(split) => MINERS
            .iter()
            .zip(split)
            .map(|(&m, &n)| (vec![m], n))
            .collect(),
    };
    let flags = [
        "--executor",
        "synthetic",
        "--synthetic-durations",
        DURATIONS,
        "--cpus",
        "2",
        "--gpus",
        "0",
        "--slots",
        "1",
    ];
    let mut meshes = Vec::new();
    for _ in &groups {
        meshes.push(Mesh::start().await);
    }
    let workers: Vec<Proc> = groups
        .iter()
        .zip(&meshes)
        .enumerate()
        .flat_map(|(g, ((_, n), mesh))| {
            (0..*n).map(move |i| mesh.worker(&format!("g{g}w{i}"), &flags))
        })
        .collect();
    wait_for("every worker to start", Duration::from_secs(60), || {
        let ready = workers
            .iter()
            .all(|w| w.log_text().contains("worker started"));
        async move { ready.then_some(()) }
    })
    .await;

    let t0 = mesh::now_ms();
    let mut publishers = Vec::new();
    for ((miners, _), mesh) in groups.iter().zip(&meshes) {
        for &(miner, count) in miners {
            let out = mesh.path(&format!("{miner}.jsonl"));
            let args = [
                "--count",
                &count.to_string(),
                "--synthetic",
                "--out",
                out.to_str().expect("a UTF-8 temp path"),
            ];
            let publisher = mesh.seal_for(miner, &format!("publisher-{miner}"), &args);
            publishers.push((publisher, out, count));
        }
    }
    for (publisher, out, count) in &mut publishers {
        let status = publisher.wait(DEADLINE).await;
        assert!(status.success(), "{}", publisher.tail(20));
        assert_eq!(
            mesh_tests::lines(out).len(),
            *count,
            "an --out line per sector"
        );
    }

    let mut sectors = Vec::new();
    for ((miners, _), mesh) in groups.iter().zip(&meshes) {
        let broker = mesh.broker().await;
        for &(miner, count) in miners {
            let records = mesh::publisher::list_sectors(&broker, miner.parse().expect("miner id"))
                .await
                .expect("list the miner's sectors");
            assert_eq!(records.len(), count, "{miner}'s sectors");
            for r in records {
                let SectorState::Sealed { at_ms } = r.state else {
                    panic!("{miner} sector {} is {:?}", r.sector, r.state);
                };
                sectors.push(Sector {
                    miner: miner.to_string(),
                    number: r.sector.to_string(),
                    created: r.created_ms,
                    sealed: at_ms,
                });
            }
        }
    }
    let spans: Vec<Span> = workers.iter().flat_map(spans).collect();
    assert_eq!(
        spans.len(),
        6 * sectors.len(),
        "six tasks per sector, each run once"
    );
    Measured { t0, spans, sectors }
}

/// Busy fractions of `slots` slots that ran `spans` for `sectors`, over `t0..end`. A sector's
/// task waits from the moment its sector could go on (created, or its previous phase done) until
/// it starts.
fn figures(t0: u64, end: u64, spans: &[&Span], sectors: &[&Sector], slots: usize) -> Figures {
    // (time, change of busy slots, change of waiting tasks)
    let mut changes: Vec<(u64, i64, i64)> = Vec::new();
    let mut handoffs = Vec::new();
    for s in spans {
        changes.push((s.start, 1, 0));
        changes.push((s.end, -1, 0));
    }
    for sector in sectors {
        let mut tasks: Vec<&&Span> = spans
            .iter()
            .filter(|s| s.miner == sector.miner && s.sector == sector.number)
            .collect();
        tasks.sort_by_key(|s| s.start);
        let mut ready = sector.created;
        for (k, s) in tasks.into_iter().enumerate() {
            if s.start > ready {
                changes.push((ready, 0, 1));
                changes.push((s.start, 0, -1));
            }
            if k > 0 {
                handoffs.push(s.start.saturating_sub(ready));
            }
            ready = s.end;
        }
    }
    changes.sort();
    let (mut busy, mut waiting, mut last) = (0i64, 0i64, t0);
    let (mut waited_ms, mut busy_waited, mut busy_run) = (0u64, 0u64, 0u64);
    let mut bins = Vec::new();
    for (at, d_busy, d_waiting) in changes {
        let at = at.max(t0);
        let dt = at - last;
        if waiting > 0 {
            waited_ms += dt;
            busy_waited += busy as u64 * dt;
        }
        // The run ends with the last sector sealed; a worker logs its end a moment later.
        busy_run += busy as u64 * at.min(end).saturating_sub(last.min(end));
        // Spread busy × [last, at) over the bins it covers.
        let mut from = last;
        while from < at {
            let bin = ((from - t0) / BIN_MS) as usize;
            let to = at.min(t0 + (bin as u64 + 1) * BIN_MS);
            if bins.len() <= bin {
                bins.resize(bin + 1, 0.0);
            }
            bins[bin] += (busy as u64 * (to - from)) as f64 / BIN_MS as f64;
            from = to;
        }
        busy += d_busy;
        waiting += d_waiting;
        last = at;
    }
    Figures {
        busy_waited: busy_waited as f64 / (slots as u64 * waited_ms.max(1)) as f64,
        busy_run: busy_run as f64 / (slots as u64 * (end - t0).max(1)) as f64,
        bins,
        handoffs,
    }
}

/// Workers per miner in proportion to its sectors (largest remainder), at least one each.
fn proportional(workers: usize) -> Vec<usize> {
    let total: usize = MINERS.iter().map(|m| m.1).sum();
    let quota: Vec<f64> = MINERS
        .iter()
        .map(|m| (workers * m.1) as f64 / total as f64)
        .collect();
    let mut split: Vec<usize> = quota.iter().map(|q| (q.floor() as usize).max(1)).collect();
    while split.iter().sum::<usize>() < workers {
        let i = (0..split.len())
            .max_by(|&a, &b| (quota[a] - split[a] as f64).total_cmp(&(quota[b] - split[b] as f64)))
            .expect("miners");
        split[i] += 1;
    }
    while split.iter().sum::<usize>() > workers {
        let i = (0..split.len()).max_by_key(|&i| split[i]).expect("miners");
        split[i] -= 1;
    }
    split
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// Busy slots over time, one line per layout, averaged per `BIN_MS`.
fn plot(series: &[(String, Vec<f64>)]) {
    let path = results_dir().join("utilisation.svg");
    let bin_s = BIN_MS as f64 / 1000.0;
    let x_max = series.iter().map(|(_, b)| b.len()).max().unwrap_or(1) as f64 * bin_s;
    let root = SVGBackend::new(&path, (960, 440)).into_drawing_area();
    root.fill(&WHITE).expect("fill");
    let total: usize = MINERS.iter().map(|m| m.1).sum();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Busy slots of {WORKERS} workers (mean per {BIN_MS} ms), {total} sectors of 4 \
                 miners at 60/25/10/5%"
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..x_max * 1.02, 0.0..(WORKERS as f64 + 0.5))
        .expect("chart");
    chart
        .configure_mesh()
        .x_desc("seconds since the sectors were submitted")
        .y_desc("busy slots")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .expect("mesh");
    let colours = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(255, 127, 14),
    ];
    for ((name, bins), colour) in series.iter().zip(colours) {
        let steps = bins
            .iter()
            .enumerate()
            .flat_map(|(k, &busy)| [(k as f64 * bin_s, busy), ((k + 1) as f64 * bin_s, busy)]);
        chart
            .draw_series(LineSeries::new(steps, colour.stroke_width(2)))
            .expect("series")
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .expect("legend");
    root.present().expect("write the SVG");
    println!("written to {}", path.display());
}

/// The `p`th percentile, nearest rank.
fn percentile(mut xs: Vec<u64>, p: usize) -> u64 {
    xs.sort_unstable();
    xs[(xs.len() * p).div_ceil(100).max(1) - 1]
}

/// Runs the scenario and writes its report.
pub async fn scenario() {
    let total: usize = MINERS.iter().map(|m| m.1).sum();
    let equal = vec![WORKERS / MINERS.len(); MINERS.len()];
    let layouts = [
        Layout {
            name: "shared pool".into(),
            partition: None,
        },
        Layout {
            name: "partition, equal".into(),
            partition: Some(equal),
        },
        Layout {
            name: "partition, proportional".into(),
            partition: Some(proportional(WORKERS)),
        },
    ];
    let mut report = Report::new(
        "utilisation",
        "Utilisation under uneven miner load: shared pool against per-miner workers",
        &format!(
            "SIMULATION (synthetic executor; real nats-server and mesh binaries, dev profile). \
             {} miners submit {} of {total} sectors (60/25/10/5%), all at once when the run \
             starts (one `mesh-publisher seal --synthetic` per miner, started together). \
             {WORKERS} workers of one slot each (`--cpus 2 --gpus 0 --slots 1`). Phase times are \
             lotus's 32GiB times scaled down, PC1 3.5 h → 1.5 s (about 1 s for 2.3 h); the short \
             phases are kept longer than that scale so that the mesh's per-task overhead stays \
             small beside them: PC2 and C2 (~20 min each on a GPU) → 400 ms, AddPiece 100 ms, \
             C1 and Finalize 50 ms: `{DURATIONS}`, {SECTOR_MS} ms of task time per sector. \
             Layouts, one after another on fresh servers: *shared pool*, one mesh whose workers \
             serve every miner (fair share, every weight 1); *partition*, a mesh per miner with \
             only that miner's workers, as Lotus runs today, split equally (what an operator \
             without foresight does) or in proportion to the sectors (largest remainder, at \
             least one worker each: perfect foresight). *Busy while work waited*: busy slots \
             over all slots, averaged over the time some task of the layout (of that miner, on \
             miner rows) waited, a task waiting from its sector's creation or previous phase's \
             end to its start. *Busy over run*: the same over the whole run, from the \
             publishers' start to the last sector sealed. *Wait to enter*: mean time from a sector's \
             creation to its AddPiece's start. Latency: sector created → \
             sealed.",
            MINERS.len(),
            MINERS
                .iter()
                .map(|m| m.1.to_string())
                .collect::<Vec<_>>()
                .join("/"),
        ),
        &[
            "layout",
            "miner",
            "sectors",
            "workers",
            "busy while work waited",
            "busy over run",
            "wait to enter",
            "mean latency",
            "p95 latency",
            "last sealed",
        ],
    );
    let mut series = Vec::new();
    let mut makespans = Vec::new();
    let mut handoffs = Vec::new();
    let mut shared_enter = Vec::new();
    for layout in &layouts {
        println!("utilisation: running {}…", layout.name);
        let m = run(layout).await;
        let secs = |t: u64| t.saturating_sub(m.t0) as f64 / 1000.0;
        let end = m.sectors.iter().map(|s| s.sealed).max().expect("sectors");
        // One row for the whole layout, then one per miner.
        let mut rows = vec![(
            None,
            m.spans.iter().collect::<Vec<_>>(),
            m.sectors.iter().collect::<Vec<_>>(),
        )];
        for (i, &(miner, _)) in MINERS.iter().enumerate() {
            rows.push((
                Some(i),
                m.spans.iter().filter(|s| s.miner == miner).collect(),
                m.sectors.iter().filter(|s| s.miner == miner).collect(),
            ));
        }
        for (miner, spans, sectors) in rows {
            let latencies: Vec<u64> = sectors.iter().map(|s| s.sealed - s.created).collect();
            let mean = latencies.iter().sum::<u64>() as f64 / latencies.len() as f64 / 1000.0;
            let p95 = percentile(latencies, 95) as f64 / 1000.0;
            // A sector's first task is its AddPiece.
            let enter: Vec<u64> = sectors
                .iter()
                .map(|sector| {
                    let first = spans
                        .iter()
                        .filter(|s| s.miner == sector.miner && s.sector == sector.number)
                        .map(|s| s.start)
                        .min()
                        .expect("the sector's tasks");
                    first.saturating_sub(sector.created)
                })
                .collect();
            let enter = enter.iter().sum::<u64>() as f64 / enter.len() as f64 / 1000.0;
            let last = secs(sectors.iter().map(|s| s.sealed).max().expect("sectors"));
            // Busy figures: of the whole pool, or of a partition's own workers (over the whole
            // run: they sit idle once their miner's sectors are sealed).
            let slots = match (&layout.partition, miner) {
                (_, None) => Some(WORKERS),
                (Some(split), Some(i)) => Some(split[i]),
                (None, Some(_)) => None,
            };
            let busy = slots.map(|slots| figures(m.t0, end, &spans, &sectors, slots));
            let workers = match (&layout.partition, miner) {
                (None, None) => format!("{WORKERS} shared"),
                (None, Some(_)) => "shared".into(),
                (Some(split), None) => split
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join("/"),
                (Some(split), Some(i)) => split[i].to_string(),
            };
            let (name, who) = match miner {
                None => (layout.name.clone(), "all".to_string()),
                Some(i) => {
                    let (id, count) = MINERS[i];
                    let share = 100.0 * count as f64 / total as f64;
                    (String::new(), format!("{id} ({share:.0}%)"))
                }
            };
            report.row(vec![
                name,
                who,
                sectors.len().to_string(),
                workers,
                busy.as_ref().map_or(String::new(), |f| pct(f.busy_waited)),
                busy.as_ref().map_or(String::new(), |f| pct(f.busy_run)),
                format!("{enter:.1} s"),
                format!("{mean:.1} s"),
                format!("{p95:.1} s"),
                format!("{last:.1} s"),
            ]);
            if miner.is_none() {
                let f = busy.expect("the whole pool's figures");
                handoffs.push((
                    layout.name.clone(),
                    percentile(f.handoffs.clone(), 50),
                    percentile(f.handoffs, 95),
                ));
                series.push((layout.name.clone(), f.bins));
                makespans.push(last);
            } else if let (None, Some(i)) = (&layout.partition, miner) {
                shared_enter.push(format!("{} {enter:.1} s", MINERS[i].0));
            }
        }
    }
    let ideal = (total as u64 * SECTOR_MS) as f64 / 1000.0 / WORKERS as f64;
    report.note(format!(
        "- Makespan against the shared pool: equal partition {:.2}×, proportional {:.2}×. The \
         task time alone, spread perfectly over {WORKERS} slots, takes {ideal:.1} s; one \
         sector cannot take less than {:.1} s.",
        makespans[1] / makespans[0],
        makespans[2] / makespans[0],
        SECTOR_MS as f64 / 1000.0,
    ));
    report.note(format!(
        "- From a task's end (logged by its worker after the result is out) to the start of \
         the sector's next task: {}. The median is mostly the mesh's hand-off (result to the \
         publisher, new state stored, next task published and taken); the tail is queueing for \
         a busy slot. A hand-off counts as waiting, so a partition with no more sectors than \
         workers waits only for hand-offs and its *busy while work waited* says little.",
        handoffs
            .iter()
            .map(|(name, p50, p95)| format!("{p50} ms median and {p95} ms p95 ({name})"))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    report.note(format!(
        "- Shared pool, mean wait to enter per miner: {}. A sector enters the pipeline with \
         its AddPiece, which every worker takes last (lotus's order) and which is short, so \
         miners often tie at no AddPiece running; a tie goes to the miner with fewer tasks \
         waiting, so the small miners' sectors enter first and the large miner's wait (before \
         that tie-break, a tie went to the lowest miner id and a small miner with a high id \
         could wait longest).",
        shared_enter.join(", ")
    ));
    report.note("\n![busy slots over time](utilisation.svg)");
    report.write();
    plot(&series);
}
