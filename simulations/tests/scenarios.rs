//! Every shipped scenario, shrunk to run fast, passes every checker for a
//! few seeds; runs are deterministic; a broken input fails a checker.

use std::path::{Path, PathBuf};

use hearth_sim::scenario::Scenario;

fn shipped() -> Vec<(PathBuf, Scenario)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the scenarios directory")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let s = Scenario::load(&p).expect("a valid scenario");
            (p, s)
        })
        .collect()
}

/// Small enough for the unoptimised test profile.
fn small(s: &Scenario) -> Scenario {
    let mut s = s.shrunk(24, 240.0);
    // Keep the write count modest whatever the original rate.
    s.workload.writes_per_device_per_min = s.workload.writes_per_device_per_min.min(6.0);
    s.validate().expect("the shrunk scenario is valid");
    s
}

#[test]
fn every_shipped_scenario_passes_its_checks() {
    let scenarios = shipped();
    let names: Vec<&str> = scenarios.iter().map(|(_, s)| s.name.as_str()).collect();
    for expected in [
        "small-office",
        "family",
        "city",
        "partition-heal",
        "crash-storm",
        "friends",
    ] {
        assert!(names.contains(&expected), "missing scenario {expected}");
    }
    for (path, scenario) in &scenarios {
        let s = small(scenario);
        for seed in 1..=2 {
            let run = hearth_sim::run(&s, &path.display().to_string(), seed).unwrap();
            let r = &run.report;
            assert!(r.passed, "{} seed {seed}:\n{}", s.name, r.markdown());
            assert!(r.writes.acked > 0, "{} wrote nothing", s.name);
            assert_eq!(r.writes.unconverged, 0, "{}", s.name);
            // Every join completed, through the handshake.
            assert_eq!(r.pairing.succeeded, s.joins.len() as u64, "{}", s.name);
            assert!(r.pairing.attempted >= r.pairing.succeeded + r.pairing.refused);
            if s.joins.iter().any(|j| j.wrong_codes_first > 0) {
                assert!(r.pairing.refused > 0, "{}", r.markdown());
            }
        }
    }
}

#[test]
fn the_same_seed_gives_byte_identical_reports() {
    for (path, scenario) in shipped() {
        if !["crash-storm", "family"].contains(&scenario.name.as_str()) {
            continue;
        }
        let s = small(&scenario);
        let path = path.display().to_string();
        let a = hearth_sim::run(&s, &path, 7).unwrap();
        let b = hearth_sim::run(&s, &path, 7).unwrap();
        assert_eq!(a.files, b.files, "{} is not deterministic", s.name);
        let c = hearth_sim::run(&s, &path, 8).unwrap();
        assert_ne!(
            a.files["report.json"], c.files["report.json"],
            "the seed is ignored"
        );
    }
}

#[test]
fn sharing_is_exercised_and_checked() {
    let scenarios = shipped();
    let friends = small(
        &scenarios
            .iter()
            .find(|(_, s)| s.name == "friends")
            .unwrap()
            .1,
    );
    let r = hearth_sim::run(&friends, "friends.toml", 1).unwrap().report;
    assert!(r.passed, "{}", r.markdown());
    let g = &r.sharing.figures;
    assert!(
        g.contacts > 0 && g.grants > 0 && g.accepted > 0,
        "{}",
        r.markdown()
    );
    assert!(g.level_changes > 0 && g.revocations > 0, "{}", r.markdown());
    // Readers tried to write and their own nodes refused; shared writes
    // reached every member of their share.
    assert!(
        g.refused_locally > 0 && g.shared_writes > 0,
        "{}",
        r.markdown()
    );
    assert!(!g.converge_us.is_empty(), "{}", r.markdown());
    for name in ["revocation", "refusal", "share convergence"] {
        let v = r.checks.iter().find(|v| v.name == name);
        assert!(v.is_some_and(|v| v.passed), "{name}: {}", r.markdown());
    }
}

#[test]
fn faults_are_exercised() {
    let scenarios = shipped();
    let find = |name: &str| small(&scenarios.iter().find(|(_, s)| s.name == name).unwrap().1);
    // Crashes happen and lose only unacknowledged writes.
    let mut storm = find("crash-storm");
    storm.faults.crashes_per_device_per_hour = 240.0;
    let r = hearth_sim::run(&storm, "crash-storm.toml", 3)
        .unwrap()
        .report;
    assert!(r.passed, "{}", r.markdown());
    assert!(r.counters.crashes > 0);
    // The removed devices were refused, and frames to them were checked.
    let family = find("family");
    let r = hearth_sim::run(&family, "family.toml", 1).unwrap().report;
    assert!(r.passed, "{}", r.markdown());
    assert!(
        r.removed_devices > 0 && r.counters.refused > 0,
        "{}",
        r.markdown()
    );
    let access = r.checks.iter().find(|v| v.name == "access").unwrap();
    assert!(
        !access.detail.contains(" 0 non-data frames"),
        "{}",
        access.detail
    );
}

#[test]
fn a_failing_report_names_the_replay_command() {
    let (path, scenario) = shipped()
        .into_iter()
        .find(|(_, s)| s.name == "small-office")
        .unwrap();
    let mut s = small(&scenario);
    // An impossible bound: one frame held until fsync is already too many.
    s.bounds.max_held = 1;
    s.storage.fsync_ms = 50.0;
    let run = hearth_sim::run(&s, &path.display().to_string(), 5).unwrap();
    assert!(!run.report.passed);
    let md = run.report.markdown();
    assert!(md.contains("| bounds | FAIL |"), "{md}");
    assert!(md.contains(&format!(
        "cargo run -p hearth-sim --release -- run {} --seed 5",
        path.display()
    )));
}

/// The simulator runs the node's own core: a bug planted in the core's
/// persist ordering (answering a peer before persisting what its frame
/// changed) is caught by the durable-sends checker, and the same run with
/// the core as shipped passes it.
#[test]
fn a_bug_planted_in_the_cores_persist_order_is_caught() {
    use hearth_crdt::node::{Config, PlantedBug};
    let (path, scenario) = shipped()
        .into_iter()
        .find(|(_, s)| s.name == "small-office")
        .unwrap();
    let s = small(&scenario);
    let path = path.display().to_string();
    let planted = Config {
        planted: Some(PlantedBug::SendBeforePersist),
        ..Config::default()
    };
    let broken = hearth_sim::run_with(&s, &path, 2, planted).unwrap().report;
    let check = broken
        .checks
        .iter()
        .find(|v| v.name == "durable sends")
        .unwrap();
    assert!(!check.passed, "{}", broken.markdown());
    assert!(check.detail.contains("announced heads not yet durable"));
    let sound = hearth_sim::run(&s, &path, 2).unwrap().report;
    let check = sound
        .checks
        .iter()
        .find(|v| v.name == "durable sends")
        .unwrap();
    assert!(check.passed, "{}", sound.markdown());
}
