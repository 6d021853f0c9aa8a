//! The planner: a table of every transition, and a property test that
//! applying its actions to a model of the world converges (what runs is
//! what the manifests ask for) and never touches a workload whose manifest
//! did not change.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use paddock::model::{Restart, RestartPolicy, WorkloadName};
use paddock::reconcile::{Action, ExitKind, Observed, Reason, Version, plan};
use proptest::prelude::*;

fn n(s: &str) -> WorkloadName {
    WorkloadName::try_from(s).unwrap()
}

const V1: Version = Version(1);
const V2: Version = Version(2);

#[test]
fn every_transition() {
    let now = Instant::now();
    let later = now + Duration::from_secs(5);
    let exit = ExitKind::Code(1);
    use Observed::*;
    #[rustfmt::skip]
    let rows: Vec<(Option<Version>, Option<Observed>, Option<Action>)> = vec![
        // desired, observed => action
        (Some(V1), None, Some(Action::Start { name: n("w"), version: V1, reason: Reason::New })),
        (None, None, None),
        (Some(V1), Some(Running { version: V1, since: now, failures: 0 }), None),
        (Some(V1), Some(Starting { version: V1, failures: 0 }), None),
        (Some(V2), Some(Running { version: V1, since: now, failures: 0 }), Some(Action::Restart { name: n("w"), version: V2, reason: Reason::ManifestChanged })),
        (Some(V2), Some(Starting { version: V1, failures: 0 }), Some(Action::Restart { name: n("w"), version: V2, reason: Reason::ManifestChanged })),
        (Some(V2), Some(Stopping { version: V1 }), None),
        (None, Some(Running { version: V1, since: now, failures: 0 }), Some(Action::Stop { name: n("w"), reason: Reason::Removed })),
        (None, Some(Starting { version: V1, failures: 0 }), Some(Action::Stop { name: n("w"), reason: Reason::Removed })),
        (None, Some(Stopping { version: V1 }), None),
        (None, Some(Backoff { version: V1, until: later, failures: 1, last_exit: exit }), Some(Action::Forget { name: n("w") })),
        (None, Some(Exited { version: V1, last_exit: exit }), Some(Action::Forget { name: n("w") })),
        (None, Some(Failed { version: V1, failures: 3, last_exit: exit }), Some(Action::Forget { name: n("w") })),
        (None, Some(Held { version: V1 }), Some(Action::Forget { name: n("w") })),
        (Some(V1), Some(Backoff { version: V1, until: later, failures: 1, last_exit: exit }), None),
        (Some(V1), Some(Backoff { version: V1, until: now, failures: 1, last_exit: exit }), Some(Action::Start { name: n("w"), version: V1, reason: Reason::BackoffElapsed })),
        (Some(V2), Some(Backoff { version: V1, until: later, failures: 1, last_exit: exit }), Some(Action::Start { name: n("w"), version: V2, reason: Reason::ManifestChanged })),
        (Some(V1), Some(Exited { version: V1, last_exit: exit }), None),
        (Some(V2), Some(Exited { version: V1, last_exit: exit }), Some(Action::Start { name: n("w"), version: V2, reason: Reason::ManifestChanged })),
        (Some(V1), Some(Failed { version: V1, failures: 3, last_exit: exit }), None),
        (Some(V2), Some(Failed { version: V1, failures: 3, last_exit: exit }), Some(Action::Start { name: n("w"), version: V2, reason: Reason::ManifestChanged })),
        (Some(V1), Some(Held { version: V1 }), None),
        (Some(V2), Some(Held { version: V1 }), Some(Action::Start { name: n("w"), version: V2, reason: Reason::ManifestChanged })),
    ];
    for (desired, observed, expected) in rows {
        let d: BTreeMap<_, _> = desired.into_iter().map(|v| (n("w"), v)).collect();
        let o: BTreeMap<_, _> = observed.into_iter().map(|s| (n("w"), s)).collect();
        let got = plan(&d, &o, now);
        assert_eq!(got.actions, expected.into_iter().collect::<Vec<_>>(), "desired {d:?}, observed {o:?}");
    }
}

#[test]
fn a_waiting_restart_sets_the_wake_up_time() {
    let now = Instant::now();
    let (soon, later) = (now + Duration::from_millis(100), now + Duration::from_secs(5));
    let d = BTreeMap::from([(n("a"), V1), (n("b"), V1)]);
    let o = BTreeMap::from([
        (n("a"), Observed::Backoff { version: V1, until: later, failures: 1, last_exit: ExitKind::Code(1) }),
        (n("b"), Observed::Backoff { version: V1, until: soon, failures: 1, last_exit: ExitKind::Code(1) }),
    ]);
    let p = plan(&d, &o, now);
    assert!(p.actions.is_empty());
    assert_eq!(p.wake_at, Some(soon));
}

#[test]
fn transitions_refuse_impossible_events() {
    let now = Instant::now();
    let r = Restart {
        policy: RestartPolicy::OnFailure,
        max_retries: 2,
        backoff: "100ms".parse().unwrap(),
        backoff_max: "1s".parse().unwrap(),
        reset_after: "1m".parse().unwrap(),
    };
    let held = Observed::Held { version: V1 };
    assert_eq!(held.exited(ExitKind::Code(1), now, &r, 0.0).unwrap_err().to_string(), "exited while stopped");
    assert!(held.started(now).is_err());
    // A crash loop: two retries, then failed.
    let mut s = Observed::Starting { version: V1, failures: 0 };
    let mut states = Vec::new();
    for _ in 0..3 {
        s = s.started(now).unwrap().exited(ExitKind::Signal(9), now, &r, 0.0).unwrap();
        states.push(s.name());
        if let Observed::Backoff { version, failures, .. } = s {
            s = Observed::Starting { version, failures };
        }
    }
    assert_eq!(states, ["backoff", "backoff", "failed"]);
    assert!(matches!(s, Observed::Failed { failures: 3, last_exit: ExitKind::Signal(9), .. }));
}

#[derive(Debug, Clone)]
enum Op {
    Write(u8, u64),
    Remove(u8),
    Crash(u8),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            (0u8..6, 1u64..4).prop_map(|(i, v)| Op::Write(i, v)),
            (0u8..6).prop_map(Op::Remove),
            (0u8..6).prop_map(Op::Crash),
        ],
        1..40,
    )
}

/// A model executor: what the daemon's effects do, instantly.
fn apply(world: &mut BTreeMap<WorkloadName, Observed>, actions: &[Action], now: Instant) {
    for a in actions {
        match a {
            Action::Start { name, version, .. } | Action::Restart { name, version, .. } => {
                let failures = match world.get(name) {
                    Some(Observed::Backoff { failures, version: v, .. }) if v == version => *failures,
                    _ => 0,
                };
                let starting = Observed::Starting { version: *version, failures };
                world.insert(name.clone(), starting.started(now).unwrap());
            }
            Action::Stop { name, .. } | Action::Forget { name } => {
                world.remove(name);
            }
        }
    }
}

proptest! {
    #[test]
    fn plans_converge_and_leave_unchanged_workloads_alone(ops in ops()) {
        let restart = Restart {
            policy: RestartPolicy::OnFailure,
            max_retries: 3,
            backoff: "100ms".parse().unwrap(),
            backoff_max: "1s".parse().unwrap(),
            reset_after: "1m".parse().unwrap(),
        };
        let mut now = Instant::now();
        let mut desired: BTreeMap<WorkloadName, Version> = BTreeMap::new();
        let mut world: BTreeMap<WorkloadName, Observed> = BTreeMap::new();
        for op in ops {
            let changed = match &op {
                Op::Write(i, v) => {
                    let name = n(&format!("w{i}"));
                    let new = Version(*v);
                    let old = desired.insert(name.clone(), new);
                    (old != Some(new)).then_some(name)
                }
                Op::Remove(i) => {
                    let name = n(&format!("w{i}"));
                    desired.remove(&name).map(|_| name)
                }
                Op::Crash(i) => {
                    let name = n(&format!("w{i}"));
                    if let Some(s @ Observed::Running { .. }) = world.get(&name).copied() {
                        world.insert(name, s.exited(ExitKind::Code(1), now, &restart, 0.5).unwrap());
                    }
                    None
                }
            };
            // Right after a manifest event, only that workload is acted on
            // (besides restarts whose delay happens to be over).
            let p = plan(&desired, &world, now);
            for a in &p.actions {
                let due = matches!(a, Action::Start { reason: Reason::BackoffElapsed, .. });
                prop_assert!(due || Some(a.name()) == changed.as_ref(), "{:?} touched an unchanged workload", a);
            }
            apply(&mut world, &p.actions, now);
            now += Duration::from_millis(10);
        }
        // Let every restart delay run out; planning again must settle.
        for _ in 0..10 {
            now += Duration::from_secs(2);
            let p = plan(&desired, &world, now);
            if p.actions.is_empty() { break; }
            apply(&mut world, &p.actions, now);
        }
        prop_assert!(plan(&desired, &world, now).actions.is_empty(), "the plan does not settle");
        let names: Vec<_> = world.keys().collect();
        prop_assert_eq!(names, desired.keys().collect::<Vec<_>>(), "what is known is what is desired");
        for (name, state) in &world {
            prop_assert_eq!(state.version(), desired[name]);
            prop_assert!(matches!(state, Observed::Running { .. } | Observed::Failed { .. }), "{name}: {state:?}");
        }
    }
}
