//! Simulator II: swarm exploration with coverage marks, the minimizer, and
//! the HTML timeline, each against the files the CLI uses.

use igor_sim::coverage::{self, Coverage};
use igor_sim::scenario::Scenario;
use igor_sim::{explore, html, minimize, runner};
use std::path::{Path, PathBuf};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Seeds of the A1 template the CI test explores: enough to fire every A1
/// mark (the 500-seed acceptance run is `igor-sim explore … --seeds 0..500`).
const CI_SEEDS: std::ops::Range<u64> = 0..60;

#[test]
fn explore_a1_template_is_safe_live_and_fires_every_mark() {
    let path = repo("scenarios/templates/a1-swarm.ron");
    let template = Scenario::load(&path).unwrap();
    let base = Scenario::base_dir(&path);
    let mut total = Coverage::default();
    for seed in CI_SEEDS {
        let resolved = explore::resolve(&template, seed);
        let report = runner::run(&resolved, &base, None).unwrap();
        assert!(report.matches_expectation(), "seed {seed}:\n{}\n{}", report.mismatch_reason(), resolved.to_ron());
        total.merge(&report.coverage);
    }
    let gaps = total.unfired(coverage::a1_required());
    assert!(gaps.is_empty(), "coverage gaps over seeds {CI_SEEDS:?}: {gaps:?}\n{}", total.report());
}

#[test]
fn resolved_explore_ron_reproduces_the_same_trace() {
    let path = repo("scenarios/templates/a1-swarm.ron");
    let template = Scenario::load(&path).unwrap();
    let base = Scenario::base_dir(&path);
    for seed in [7, 11] {
        let resolved = explore::resolve(&template, seed);
        let direct = runner::run(&resolved, &base, None).unwrap();
        // What `explore` prints, run as `igor-sim run` would.
        let reparsed = Scenario::parse(&resolved.to_ron(), "resolved.ron").unwrap();
        let replay = runner::run(&reparsed, &base, None).unwrap();
        assert_eq!(direct.trace.first_difference(&replay.trace), None, "seed {seed}");
        assert_eq!(direct.trace.hash(), replay.trace.hash());
    }
}

#[test]
fn minimize_shrinks_the_noisy_unsafe_scenario_to_a_handful_of_actions() {
    let path = repo("sim/tests/data/noisy-unsafe-self-recover.ron");
    let noisy = Scenario::load(&path).unwrap();
    assert!(noisy.timeline.len() >= 20, "the test case must be noisy");
    let base = Scenario::base_dir(&path);
    let min = minimize::minimize(&noisy, &base, None, |_| {}).unwrap();
    assert_eq!(min.invariant, "EI-5");
    assert!(
        min.scenario.timeline.len() <= 5,
        "{} actions left:\n{}",
        min.scenario.timeline.len(),
        min.scenario.to_ron()
    );
    assert_eq!(min.scenario.nodes.len(), 2, "the idle third node is dropped:\n{}", min.scenario.to_ron());
    // The written scenario is an ordinary one that fails the same way.
    let again = Scenario::parse(&min.scenario.to_ron(), "min.ron").unwrap();
    let report = runner::run(&again, &base, None).unwrap();
    assert!(report.matches_expectation(), "{}", report.mismatch_reason());
    assert_eq!(report.violation.map(|v| v.invariant), Some("EI-5"));
}

#[test]
fn html_timeline_has_a_lane_per_node_and_an_arrow_per_package() {
    for (file, violation) in
        [("scenarios/a1/partition-during-transfer.ron", 0), ("scenarios/a1/unsafe-self-recover.ron", 1)]
    {
        let path = repo(file);
        let scenario = Scenario::load(&path).unwrap();
        let report = runner::run(&scenario, &Scenario::base_dir(&path), None).unwrap();
        let page = html::render(&report.trace, &scenario.name);
        let packages = report.trace.lines().iter().filter(|l| l.contains(" package_sent ")).count();
        assert!(packages >= 1, "{file}");
        assert_eq!(html::count(&page, "lane"), scenario.nodes.len(), "{file}");
        let arrows = html::count(&page, "arrow") + html::count(&page, "arrow undelivered");
        assert_eq!(arrows, packages, "{file}");
        assert_eq!(html::count(&page, "violation"), violation, "{file}");
        assert!(html::count(&page, "fault") >= 1, "{file}: the partition is a shaded span");
        assert!(html::count(&page, "tick") > 0 && html::count(&page, "checkpoint") > 0, "{file}");
        // Self-contained: nothing fetched from anywhere.
        for needle in ["http://", "https://", "src=", "<link", "@import"] {
            let hits = page.matches(needle).count();
            let allowed = usize::from(needle == "http://"); // the SVG namespace URI only
            assert!(hits <= allowed, "{file}: {needle} appears {hits} times");
        }
    }
}
