//! The data-driven test: every scenario under `scenarios/` runs at its
//! pinned seed, must produce the verdict its `expect` names, and its
//! canonical trace is snapshotted under `snapshots/` (review changes with
//! `cargo insta review`). Adding a case is adding a file.

use igor_sim::runner;
use igor_sim::scenario::Scenario;

#[test]
fn every_scenario_matches_expect_and_its_trace_snapshot() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        insta::glob!("../../scenarios", "**/*.ron", |path| {
            let scenario = Scenario::load(path).unwrap_or_else(|e| panic!("{e}"));
            let report = runner::run(&scenario, &Scenario::base_dir(path), None).unwrap_or_else(|e| panic!("{e}"));
            assert!(report.matches_expectation(), "{}", report.summary(&path.display().to_string()));
            insta::assert_snapshot!("trace", report.trace.text());
        });
    });
}

#[test]
fn same_seed_gives_byte_identical_traces() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/a1/migrate-basic.ron");
    let scenario = Scenario::load(&path).unwrap();
    let base = Scenario::base_dir(&path);
    for seed in [3, 4] {
        let a = runner::run(&scenario, &base, Some(seed)).unwrap();
        let b = runner::run(&scenario, &base, Some(seed)).unwrap();
        assert_eq!(a.trace.first_difference(&b.trace), None, "seed {seed}");
        assert_eq!(a.trace.hash(), b.trace.hash());
    }
}
