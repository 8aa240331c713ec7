//! Every gate and transition of a rollout step, on plain values.

use super::*;
use edgefleet_common::fleet_api::{ModuleSource, PhaseSize, RolloutPolicy};
use edgefleet_common::reported::ApplyStatus;

use crate::rollouts::fixtures::{model, status};

const DEPLOYMENT: &str = "line";
const REVISION: u64 = 2;
/// The manifest version rendered for moved devices in these tests.
const VERSION: u64 = 7;

fn policy() -> RolloutPolicy {
    let mut policy: RolloutPolicy = serde_json::from_str("{}").expect("defaults");
    policy.soak_seconds = 10;
    policy.offline_timeout_seconds = 60;
    policy.max_error_percent = Some(5.0);
    policy
}

fn rollout(phases: &[&[&str]]) -> Rollout {
    Rollout {
        deployment: DEPLOYMENT.into(),
        from_revision: 1,
        to_revision: REVISION,
        policy: policy(),
        state: StagedState::Running,
        reason: None,
        phases: phases
            .iter()
            .map(|devices| Phase {
                devices: devices.iter().map(|d| (*d).to_owned()).collect(),
                ..Phase::default()
            })
            .collect(),
        current: 0,
    }
}

fn manifest(device: &str, revision: u64) -> RenderedManifest {
    RenderedManifest {
        device_id: device.into(),
        version: VERSION,
        fingerprint: String::new(),
        sources: [(
            "m".to_owned(),
            ModuleSource {
                deployment: DEPLOYMENT.into(),
                revision,
                layered: false,
            },
        )]
        .into(),
        sealed_passwords: BTreeMap::new(),
        wire: String::new(),
    }
}

/// `devices` carry the new revision and report `code` for it, with a model that served 100
/// requests with `errors` errors.
fn observed(devices: &[&str], code: ApplyStatus, errors: u64) -> Observed {
    let mut seen = Observed::default();
    for d in devices {
        let mut s = status(VERSION, code, vec![("m", model(100, errors, 1_000))]);
        s.last_seen_ms = Some(50_000);
        seen.statuses.insert((*d).to_owned(), s);
        seen.manifests
            .insert((*d).to_owned(), manifest(d, REVISION));
    }
    seen
}

fn names(devices: &[&str]) -> BTreeSet<String> {
    devices.iter().map(|d| (*d).to_owned()).collect()
}

#[test]
fn a_rollout_past_its_last_phase_is_completed() {
    let mut r = rollout(&[]);
    assert_eq!(step(&mut r, &Observed::default(), 1_000), Step::default());
    assert_eq!(r.state, StagedState::Completed);
}

#[test]
fn devices_that_start_matching_join_the_last_phase_once() {
    let mut r = rollout(&[&["a"], &["b"]]);
    join(&mut r, ["a".to_owned(), "c".to_owned(), "b".to_owned()]);
    assert_eq!(r.phases[1].devices, ["b", "c"]);
    let mut empty = rollout(&[]);
    join(&mut empty, ["x".to_owned()]);
    assert_eq!(empty.phases.len(), 1);
    assert_eq!(empty.phases[0].devices, ["x"]);
    assert_eq!(devices_to_observe(&r), ["a"]);
}

#[test]
fn the_first_step_admits_the_phase_with_each_devices_counters_then() {
    let mut r = rollout(&[&["a", "b"], &["c"]]);
    let seen = observed(&["a"], ApplyStatus::Applied, 3);
    let s = step(&mut r, &seen, 1_000);
    assert_eq!(s.rerender, names(&["a", "b"]));
    assert_eq!(s.finished, None);
    let phase = &r.phases[0];
    assert_eq!(phase.gate, "moving: 2 of 2 devices");
    assert_eq!(phase.started_ms, Some(1_000));
    assert_eq!(phase.moved["a"], [("m".to_owned(), (100, 3))].into());
    assert!(phase.moved["b"].is_empty(), "no status: no counters");
}

#[test]
fn max_per_minute_paces_admission_and_holds_the_phase() {
    let mut r = rollout(&[&["a", "b", "c"]]);
    r.policy.max_per_minute = Some(1);
    let seen = observed(&["a", "b", "c"], ApplyStatus::Applied, 0);
    assert_eq!(step(&mut r, &seen, 0).rerender.len(), 1);
    let held = step(&mut r, &seen, 30_000);
    assert!(held.rerender.is_empty());
    assert_eq!(
        r.phases[0].gate,
        "moving: 1 of 3 devices (at most 1 a minute)"
    );
    assert_eq!(step(&mut r, &seen, 60_000).rerender.len(), 1);
}

#[test]
fn a_healthy_phase_soaks_then_the_next_starts_and_the_last_completes() {
    let mut r = rollout(&[&["a"], &["b"]]);
    let seen = observed(&["a", "b"], ApplyStatus::Applied, 0);
    step(&mut r, &seen, 0);
    assert_eq!(step(&mut r, &seen, 1_000), Step::default());
    assert_eq!(r.phases[0].gate, "soaking: healthy for 0 s of 10 s");
    step(&mut r, &seen, 6_000);
    assert_eq!(r.phases[0].gate, "soaking: healthy for 5 s of 10 s");
    assert_eq!(step(&mut r, &seen, 11_000), Step::default());
    assert_eq!((r.current, r.phases[0].gate.as_str()), (1, "done"));
    assert_eq!(step(&mut r, &seen, 12_000).rerender, names(&["b"]));
    step(&mut r, &seen, 13_000);
    let last = step(&mut r, &seen, 23_000);
    assert_eq!(last.finished, Some(Finished::Completed));
    assert_eq!(r.state, StagedState::Completed);
}

#[test]
fn a_device_still_applying_holds_the_soak() {
    let mut r = rollout(&[&["a"]]);
    let mut seen = observed(&["a"], ApplyStatus::Applied, 0);
    step(&mut r, &seen, 0);
    step(&mut r, &seen, 1_000);
    assert_eq!(r.phases[0].healthy_since_ms, Some(1_000));
    seen.manifests.get_mut("a").expect("a").version = VERSION + 1;
    step(&mut r, &seen, 2_000);
    assert_eq!(r.phases[0].healthy_since_ms, None);
    assert_eq!(
        r.phases[0].gate,
        format!("waiting for a has not applied manifest {} yet", VERSION + 1)
    );
}

#[test]
fn a_device_silent_past_the_timeout_is_named_but_does_not_hold_the_phase() {
    let mut r = rollout(&[&["a", "b"]]);
    let mut seen = observed(&["a"], ApplyStatus::Applied, 0);
    seen.manifests.insert("b".into(), manifest("b", REVISION));
    step(&mut r, &seen, 0);
    step(&mut r, &seen, 61_000);
    assert_eq!(
        r.phases[0].gate,
        "soaking: healthy for 0 s of 10 s (1 timed out: b)"
    );
}

#[test]
fn a_device_another_deployment_wins_on_is_not_judged() {
    let mut r = rollout(&[&["a", "b"]]);
    let mut seen = observed(&["a"], ApplyStatus::Applied, 0);
    seen.manifests
        .insert("b".into(), manifest("b", REVISION - 1));
    step(&mut r, &seen, 0);
    step(&mut r, &seen, 1_000);
    assert_eq!(r.phases[0].gate, "soaking: healthy for 0 s of 10 s");
}

#[test]
fn failures_below_the_limit_hold_the_phase_and_at_the_limit_roll_everything_back() {
    let mut r = rollout(&[&["a", "b"], &["c"]]);
    r.policy.max_failures = PhaseSize::Devices(2);
    let mut seen = observed(&["a", "b"], ApplyStatus::Applied, 0);
    seen.statuses.insert(
        "a".into(),
        status(VERSION, ApplyStatus::ActivationFailed, vec![]),
    );
    step(&mut r, &seen, 0);
    assert_eq!(step(&mut r, &seen, 1_000), Step::default());
    assert!(
        r.phases[0]
            .gate
            .starts_with("waiting for a: manifest 7: 417")
    );
    assert_eq!(r.state, StagedState::Running);

    // b's model has failed 50 of the 100 requests since it moved, over the 5 % limit.
    seen.statuses.insert(
        "b".into(),
        status(
            VERSION,
            ApplyStatus::Applied,
            vec![("m", model(200, 50, 1_000))],
        ),
    );
    let s = step(&mut r, &seen, 2_000);
    assert_eq!(s.rerender, names(&["a", "b"]));
    let Some(Finished::RolledBack { reason }) = s.finished else {
        panic!("rolled back: {s:?}");
    };
    assert!(reason.starts_with("phase 0 (canary): 2 device(s) failed: a: manifest 7: 417"));
    assert_eq!(r.state, StagedState::RolledBack);
    assert_eq!(r.reason.as_deref(), Some(reason.as_str()));
    assert!(r.phases[0].gate.starts_with("failed: "));
}

#[test]
fn a_failure_in_a_later_phase_names_it_a_batch() {
    let mut r = rollout(&[&["a"], &["b"]]);
    let seen = observed(&["a"], ApplyStatus::Applied, 0);
    step(&mut r, &seen, 0);
    step(&mut r, &seen, 1_000);
    step(&mut r, &seen, 11_000);
    let failing = observed(&["b"], ApplyStatus::AgentError, 0);
    step(&mut r, &failing, 12_000);
    let s = step(&mut r, &failing, 13_000);
    assert_eq!(
        s.rerender,
        names(&["a", "b"]),
        "every moved device goes back"
    );
    assert!(
        r.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("phase 1 (batch)"))
    );
}
