//! The sizing policy, as a pure function of what the autoscaler read, the group's state and the
//! clock: no I/O, so every rule is tested directly.
//!
//! - A group needs `ceil((tasks running on its serving instances + its share of the tasks
//!   waiting) / slots)` instances, within `[min, max]`. With nothing waiting and nothing running that is
//!   `min` (zero by default), and work appearing wakes it.
//! - It grows once the need has been higher than its size for the whole up window (default 0:
//!   at once), and shrinks only once the need has been lower throughout the down window; the
//!   new size is the least (growing) or the most (shrinking) need seen in that window, as
//!   Kubernetes' HPA stabilises. A load that swings faster than the down window therefore keeps
//!   the group at its peak instead of flapping.
//! - Shrinking drains: idle instances are chosen first (booting ones, then idle workers), busy
//!   ones only when no idle one is left, the least busy first. A draining instance is removed
//!   once its worker says it has stopped taking tasks and holds none, or when the drain timeout
//!   passes. Growing cancels drains first (the busiest first) and asks the provider for the rest.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::config::GroupConfig;
use super::provider::InstanceState;
use crate::model::SectorSize;
use crate::phases::Phase;

/// What waits and runs on one task stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub waiting: u64,
    pub running: u64,
}

/// One instance of a group as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub state: InstanceState,
    /// What its registry record says; `None` while it has none (booting, or gone).
    pub worker: Option<WorkerView>,
    /// Since when it carries a drain mark.
    pub drain_since_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerView {
    /// Tasks it holds.
    pub busy: u32,
    /// It has stopped taking tasks.
    pub draining: bool,
}

impl Member {
    fn busy(&self) -> u32 {
        self.worker.map_or(0, |w| w.busy)
    }

    fn live(&self) -> bool {
        self.state != InstanceState::Stopping
    }
}

/// The recommendations a group has seen, for its stabilisation windows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupState {
    /// `(at_ms, recommended size)`, oldest first, as far back as the longer window.
    history: VecDeque<(u64, u32)>,
    /// When the group was first evaluated: a window is only judged once it has been watched.
    since_ms: Option<u64>,
}

/// Why the group changes (or not); the metrics count decisions by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// Work waits beyond what the group runs.
    ScaleUp,
    /// Work appeared for a group at zero.
    WakeFromZero,
    /// The group is below `min` or above `max`.
    Bounds,
    /// Less work than instances for the whole down window.
    ScaleDown,
    /// Neither backlog nor running work for the whole down window.
    ScaleToZero,
    /// Demand came back while instances drained: their drains are lifted.
    DrainCancelled,
    /// A draining instance stopped and holds no task: removed.
    Drained,
    /// A draining instance still held tasks at the drain timeout: removed anyway.
    DrainTimeout,
    /// The need differs from the size, but not yet for a whole window.
    HeldByWindow,
    Steady,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::ScaleUp => "scale_up",
            Reason::WakeFromZero => "wake_from_zero",
            Reason::Bounds => "bounds",
            Reason::ScaleDown => "scale_down",
            Reason::ScaleToZero => "scale_to_zero",
            Reason::DrainCancelled => "drain_cancelled",
            Reason::Drained => "drained",
            Reason::DrainTimeout => "drain_timeout",
            Reason::HeldByWindow => "held_by_window",
            Reason::Steady => "steady",
        }
    }
}

/// What to do with one group now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Instances the work needs now, within bounds.
    pub recommended: u32,
    /// The size the group should have (serving, not draining), after the windows.
    pub desired: u32,
    /// Instances serving now: live and not draining.
    pub active: u32,
    /// Instances draining now.
    pub draining: u32,
    /// Ask the provider for this many live instances (draining ones included).
    pub grow_to: Option<u32>,
    /// Set drain marks on these.
    pub drain: Vec<String>,
    /// Lift the drain marks of these.
    pub undrain: Vec<String>,
    /// Remove these (drained, or past the drain timeout), with the reason.
    pub remove: Vec<(String, Reason)>,
    /// Every reason behind this decision; `Steady` or `HeldByWindow` alone when nothing changes.
    pub reasons: Vec<Reason>,
    /// One line for the log and `plan`.
    pub why: String,
}

impl Decision {
    pub fn changes_anything(&self) -> bool {
        self.grow_to.is_some()
            || !self.drain.is_empty()
            || !self.undrain.is_empty()
            || !self.remove.is_empty()
    }
}

/// Splits each stream's waiting tasks between the groups that serve it, evenly (the first
/// groups in the config get the remainder): what each group counts as its own waiting work.
pub fn share_waiting(
    groups: &[GroupConfig],
    backlog: &BTreeMap<(Phase, SectorSize), Backlog>,
) -> Vec<u64> {
    let mut shares = vec![0u64; groups.len()];
    for (&stream, b) in backlog {
        let serving: Vec<usize> = (0..groups.len())
            .filter(|&i| groups[i].streams().any(|s| s == stream))
            .collect();
        let n = serving.len() as u64;
        let (Some(each), Some(rest)) = (b.waiting.checked_div(n), b.waiting.checked_rem(n)) else {
            continue;
        };
        for (k, &i) in serving.iter().enumerate() {
            shares[i] += each + u64::from((k as u64) < rest);
        }
    }
    shares
}

/// Decides one group's size and actions. `waiting` is its share of the waiting tasks
/// ([`share_waiting`]); the running work is read from its members' workers.
pub fn decide(
    group: &GroupConfig,
    members: &[Member],
    waiting: u64,
    state: &GroupState,
    now_ms: u64,
) -> (Decision, GroupState) {
    // Tasks on draining instances are already served by them: only the serving ones count.
    let running: u64 = members
        .iter()
        .filter(|m| m.live() && m.drain_since_ms.is_none())
        .map(|m| u64::from(m.busy()))
        .sum();
    let need = (running + waiting).div_ceil(u64::from(group.slots));
    let recommended = need.min(u64::from(u32::MAX)) as u32;
    let recommended = recommended.clamp(group.min, group.max);

    let mut state = state.clone();
    let since = *state.since_ms.get_or_insert(now_ms);
    state.history.push_back((now_ms, recommended));
    let keep = ms(group.scale_up_window.max(group.scale_down_window));
    while state.history.len() > 1 && now_ms.saturating_sub(state.history[0].0) > keep {
        state.history.pop_front();
    }

    let active: Vec<&Member> = members
        .iter()
        .filter(|m| m.live() && m.drain_since_ms.is_none())
        .collect();
    let draining: Vec<&Member> = members
        .iter()
        .filter(|m| m.live() && m.drain_since_ms.is_some())
        .collect();
    let current = active.len() as u32;
    let watched = now_ms.saturating_sub(since);
    // What the window allows: the least need over the up window, the most over the down one.
    let within = |window: Duration| {
        state
            .history
            .iter()
            .filter(move |(at, _)| now_ms.saturating_sub(*at) <= ms(window))
            .map(|&(_, r)| r)
    };
    let up = if group.scale_up_window.is_zero() {
        recommended
    } else if watched >= ms(group.scale_up_window) {
        within(group.scale_up_window).min().unwrap_or(current)
    } else {
        current
    };
    let down = if group.scale_down_window.is_zero() {
        recommended
    } else if watched >= ms(group.scale_down_window) {
        within(group.scale_down_window).max().unwrap_or(current)
    } else {
        current
    };
    let mut reasons = Vec::new();
    let windowed = if up > current {
        up
    } else if down < current {
        down
    } else {
        current
    };
    let desired = windowed.clamp(group.min, group.max);
    if desired != windowed {
        reasons.push(Reason::Bounds);
    }

    let mut decision = Decision {
        recommended,
        desired,
        active: current,
        draining: draining.len() as u32,
        grow_to: None,
        drain: Vec::new(),
        undrain: Vec::new(),
        remove: Vec::new(),
        reasons: Vec::new(),
        why: String::new(),
    };
    let work = format!(
        "{waiting} waiting, {running} running, {} slot(s) each",
        group.slots
    );
    if desired > current {
        let mut missing = desired - current;
        // Lift drains first, the busiest first: they are warm and hold work.
        let mut lift: Vec<&&Member> = draining.iter().collect();
        lift.sort_by(|a, b| b.busy().cmp(&a.busy()).then(a.name.cmp(&b.name)));
        for m in lift.into_iter().take(missing as usize) {
            decision.undrain.push(m.name.clone());
            missing -= 1;
        }
        if !decision.undrain.is_empty() {
            reasons.push(Reason::DrainCancelled);
        }
        if missing > 0 {
            let live = (active.len() + draining.len()) as u32;
            decision.grow_to = Some(live + missing);
        }
        if !reasons.contains(&Reason::Bounds) {
            reasons.push(if current == 0 {
                Reason::WakeFromZero
            } else {
                Reason::ScaleUp
            });
        }
        decision.why = format!("{current} → {desired}: {work}");
    } else if desired < current {
        let excess = (current - desired) as usize;
        let mut order: Vec<&&Member> = active.iter().collect();
        // Idle first (booting before registered), then the least busy.
        order.sort_by_key(|m| (m.busy(), m.worker.is_some(), m.name.clone()));
        decision.drain = order
            .into_iter()
            .take(excess)
            .map(|m| m.name.clone())
            .collect();
        if !reasons.contains(&Reason::Bounds) {
            reasons.push(if desired == 0 {
                Reason::ScaleToZero
            } else {
                Reason::ScaleDown
            });
        }
        decision.why = format!(
            "{current} → {desired}: {work}, below {current} for {}",
            humantime::format_duration(group.scale_down_window)
        );
    } else if recommended != current {
        reasons.push(Reason::HeldByWindow);
        decision.why =
            format!("stays at {current}: {work} needs {recommended}, not yet for a whole window");
    } else {
        decision.why = format!("stays at {current}: {work}");
    }

    for m in &draining {
        if decision.undrain.contains(&m.name) {
            continue;
        }
        let since = m.drain_since_ms.unwrap_or(now_ms);
        let stopped = match m.worker {
            None => true,
            Some(w) => w.draining && w.busy == 0,
        };
        if stopped {
            decision.remove.push((m.name.clone(), Reason::Drained));
        } else if now_ms.saturating_sub(since) >= ms(group.drain_timeout) {
            decision.remove.push((m.name.clone(), Reason::DrainTimeout));
        }
    }
    for (_, why) in &decision.remove {
        if !reasons.contains(why) {
            reasons.push(*why);
        }
    }
    if reasons.is_empty() {
        reasons.push(Reason::Steady);
    }
    decision.reasons = reasons;
    (decision, state)
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::autoscaler::config::AutoscalerConfig;

    fn group(min: u32, max: u32, slots: u32, down_s: u64) -> GroupConfig {
        let text = format!(
            r#"[[group]]
            name = "g"
            phases = ["pc1"]
            sizes = ["2KiB"]
            min = {min}
            max = {max}
            slots = {slots}
            scale_down_window = "{down_s}s"
            drain_timeout = "60s"
            provider = {{ kind = "local" }}"#
        );
        AutoscalerConfig::parse(&text).unwrap().groups.remove(0)
    }

    fn member(i: usize, busy: Option<u32>, drain_since_ms: Option<u64>) -> Member {
        Member {
            name: format!("g-{i}"),
            state: InstanceState::Running,
            worker: busy.map(|busy| WorkerView {
                busy,
                draining: drain_since_ms.is_some(),
            }),
            drain_since_ms,
        }
    }

    #[test]
    fn work_wakes_a_group_at_zero_at_once() {
        let g = group(0, 5, 2, 60);
        let (d, _) = decide(&g, &[], 3, &GroupState::default(), 1_000);
        assert_eq!(d.grow_to, Some(2));
        assert_eq!(d.reasons, vec![Reason::WakeFromZero]);
    }

    #[test]
    fn an_idle_group_reaches_zero_only_after_the_window() {
        let g = group(0, 5, 1, 60);
        let members = [member(1, Some(0), None)];
        let mut state = GroupState::default();
        for t in [0, 30_000, 59_999] {
            let (d, s) = decide(&g, &members, 0, &state, t);
            assert!(d.drain.is_empty(), "at {t} ms: {d:?}");
            state = s;
        }
        let (d, _) = decide(&g, &members, 0, &state, 60_000);
        assert_eq!(d.drain, vec!["g-1".to_string()]);
        assert_eq!(d.reasons, vec![Reason::ScaleToZero]);
    }

    #[test]
    fn a_drained_instance_is_removed_and_a_busy_one_waits_for_the_timeout() {
        let g = group(0, 5, 1, 0);
        let idle = member(1, Some(0), Some(0));
        let busy = member(2, Some(1), Some(0));
        let (d, _) = decide(
            &g,
            &[idle.clone(), busy.clone()],
            0,
            &GroupState::default(),
            1,
        );
        assert_eq!(d.remove, vec![("g-1".to_string(), Reason::Drained)]);
        let (d, _) = decide(&g, &[busy], 0, &GroupState::default(), 60_000);
        assert_eq!(d.remove, vec![("g-2".to_string(), Reason::DrainTimeout)]);
    }

    #[test]
    fn a_worker_that_has_not_seen_its_mark_is_not_removed() {
        let g = group(0, 5, 1, 0);
        let mut m = member(1, Some(0), Some(0));
        m.worker = Some(WorkerView {
            busy: 0,
            draining: false,
        });
        let (d, _) = decide(&g, &[m], 0, &GroupState::default(), 1);
        assert!(d.remove.is_empty());
    }

    #[test]
    fn demand_coming_back_lifts_drains_before_growing() {
        let g = group(0, 5, 1, 0);
        let members = [
            member(1, Some(1), None),
            member(2, Some(0), Some(0)),
            member(3, Some(1), Some(0)),
        ];
        // 1 running + 3 waiting = 4 needed; 1 active, 2 draining: lift both, grow by one.
        let (d, _) = decide(&g, &members, 3, &GroupState::default(), 1);
        assert_eq!(d.undrain, vec!["g-3".to_string(), "g-2".to_string()]);
        assert_eq!(d.grow_to, Some(4));
        assert!(d.remove.is_empty());
        assert!(d.reasons.contains(&Reason::DrainCancelled));
    }

    #[test]
    fn waiting_work_is_split_between_groups_that_serve_a_stream() {
        let a = group(0, 5, 1, 0);
        let mut b = a.clone();
        b.phases.push(Phase::Commit2);
        let backlog = BTreeMap::from([
            (
                (Phase::PreCommit1, SectorSize::KiB2),
                Backlog {
                    waiting: 5,
                    running: 9,
                },
            ),
            (
                (Phase::Commit2, SectorSize::KiB2),
                Backlog {
                    waiting: 2,
                    running: 0,
                },
            ),
        ]);
        assert_eq!(share_waiting(&[a, b], &backlog), vec![3, 4]);
    }

    /// A member list: each instance idle, busy, booting or draining.
    fn members() -> impl Strategy<Value = Vec<Member>> {
        prop::collection::vec(
            (prop::option::of(0u32..3), prop::option::of(0u64..100_000)),
            0..12,
        )
        .prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (busy, drain))| member(i, busy, drain))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn bounds_hold_and_busy_instances_are_drained_last(
            min in 0u32..4,
            extra in 0u32..6,
            slots in 1u32..4,
            members in members(),
            waiting in 0u64..40,
            down_s in 0u64..3,
            history in prop::collection::vec(0u32..10, 0..5),
        ) {
            let g = group(min, min + extra, slots, down_s);
            let mut state = GroupState::default();
            for (k, r) in history.iter().enumerate() {
                state.history.push_back((k as u64 * 1000, *r));
                state.since_ms.get_or_insert(0);
            }
            let now = 100_000;
            let (d, _) = decide(&g, &members, waiting, &state, now);
            prop_assert!(d.desired >= g.min && d.desired <= g.max, "{d:?}");
            let active: Vec<&Member> =
                members.iter().filter(|m| m.drain_since_ms.is_none()).collect();
            // What the decision leaves serving is the desired size (when the provider grows).
            let serving = active.len() as u32 - d.drain.len() as u32 + d.undrain.len() as u32
                + d.grow_to.map_or(0, |to| to - (members.len() as u32));
            prop_assert_eq!(serving, d.desired, "{:?}", d);
            // Never drain a busy instance while an idle active one stays.
            let busy_drained = d.drain.iter().any(|n| {
                members.iter().any(|m| &m.name == n && m.busy() > 0)
            });
            let idle_kept = active.iter().any(|m| m.busy() == 0 && !d.drain.contains(&m.name));
            prop_assert!(!(busy_drained && idle_kept), "{:?}", d);
            // Removal only of drained instances or those past the timeout.
            for (name, why) in &d.remove {
                let m = members.iter().find(|m| &m.name == name).unwrap();
                let since = m.drain_since_ms.unwrap();
                match why {
                    Reason::Drained => prop_assert_eq!(m.busy(), 0),
                    Reason::DrainTimeout => prop_assert!(now - since >= 60_000),
                    _ => prop_assert!(false, "removed for {:?}", why),
                }
            }
        }

        /// A load that swings between high and low faster than the down window: after the first
        /// growth, the group never changes direction.
        #[test]
        fn a_sawtooth_causes_no_flaps(
            period_s in 2u64..50,
            high in 2u64..20,
            low in 0u64..2,
            window_s in 60u64..300,
        ) {
            let g = group(0, 20, 1, window_s);
            let mut state = GroupState::default();
            let mut members: Vec<Member> = Vec::new();
            let mut changes = Vec::new();
            for step in 0..(10 * window_s) {
                let t = step * 1000;
                let waiting = if (t / 1000 / period_s) % 2 == 0 { high } else { low };
                let (d, s) = decide(&g, &members, waiting, &state, t);
                state = s;
                if let Some(to) = d.grow_to {
                    changes.push('+');
                    while (members.len() as u32) < to {
                        members.push(member(members.len(), Some(0), None));
                    }
                }
                if !d.drain.is_empty() {
                    changes.push('-');
                    members.retain(|m| !d.drain.contains(&m.name));
                }
            }
            changes.dedup();
            prop_assert_eq!(changes, vec!['+']);
        }
    }
}
