//! The data-driven test: every scenario under `scenarios/` runs at its
//! pinned seed, must produce the verdict its `expect` names, and its
//! canonical trace is snapshotted under `snapshots/` (review changes with
//! `cargo insta review`). Adding a case is adding a file. The `# build`
//! header line (version, git revision) is masked in snapshots: it changes
//! with every commit, the behaviour does not.

use igor_sim::runner;
use igor_sim::scenario::Scenario;

/// The trace text with the `# build` header line masked.
fn snapshot_text(trace: &igor_sim::trace::Trace) -> String {
    let lines: Vec<String> = trace
        .lines()
        .iter()
        .map(|l| if l.starts_with("# build ") { "# build [masked]".to_string() } else { l.clone() })
        .collect();
    lines.join("\n") + "\n"
}

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
            insta::assert_snapshot!("trace", snapshot_text(&report.trace));
        });
    });
}

#[test]
fn same_resolved_ron_gives_byte_identical_traces() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/a1/message-faults.ron");
    let scenario = Scenario::load(&path).unwrap();
    let base = Scenario::base_dir(&path);
    for seed in [3, 4] {
        // Resolve (seed in the file), print as RON, parse back, run twice.
        let mut resolved = scenario.clone();
        resolved.seed = seed;
        let text = resolved.to_ron();
        let again = Scenario::parse(&text, "resolved.ron").unwrap();
        assert_eq!(again, resolved, "resolved RON round-trips");
        let a = runner::run(&again, &base, None).unwrap();
        let b = runner::run(&again, &base, None).unwrap();
        assert_eq!(a.trace.first_difference(&b.trace), None, "seed {seed}");
        assert_eq!(a.trace.text().as_bytes(), b.trace.text().as_bytes());
        let direct = runner::run(&scenario, &base, Some(seed)).unwrap();
        assert_eq!(direct.trace.hash(), a.trace.hash(), "--seed {seed} equals the resolved file");
        let header: Vec<&str> = a.trace.lines().iter().take(5).map(String::as_str).collect();
        assert!(header[0].starts_with("# igor-sim trace v"), "{header:?}");
        assert_eq!(header[1], format!("# scenario message-faults seed {seed}"));
        assert!(header[2].contains("wasmtime 48.0.8") && header[2].contains(" git "), "{header:?}");
        assert!(header[3].starts_with("# options duration_s=30 "), "{header:?}");
    }
}
