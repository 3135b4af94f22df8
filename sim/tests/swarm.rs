//! Simulator II: swarm exploration with coverage marks, the minimizer, and
//! the HTML timeline, each against the files the CLI uses.

use igor_sim::coverage::{self, Coverage};
use igor_sim::scenario::{Action, BuggifyFault, Scenario};
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
    // Within the clock bound S and with 60 s leases, no lease can lapse
    // (explore::required_marks): the A1 marks minus that one.
    let required = explore::required_marks(&template);
    let a1: Vec<&str> = coverage::a1_required().filter(|m| required.iter().any(|r| r == m)).collect();
    assert!(!a1.contains(&"lease_expired_during_partition"));
    let gaps = total.unfired(a1);
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

/// Every explore template under scenarios/templates, by file name.
const TEMPLATES: &[&str] = &["a1-swarm", "hostile-swarm", "operator-swarm", "disk-swarm", "adversary-swarm"];

fn template(name: &str) -> (Scenario, PathBuf) {
    let path = repo(&format!("scenarios/templates/{name}.ron"));
    (Scenario::load(&path).unwrap_or_else(|e| panic!("{e}")), Scenario::base_dir(&path))
}

#[test]
fn every_template_resolves_to_plain_valid_ron_and_draws_each_of_its_families() {
    for name in TEMPLATES {
        let (t, _) = template(name);
        let mut wanted: Vec<&str> = Vec::new();
        let spec = t.explore.clone();
        if spec.as_ref().is_none_or(|e| e.a1) {
            wanted.extend(explore::FAMILIES);
        }
        let extra: Vec<String> = spec.map(|e| e.families).unwrap_or_default();
        wanted.extend(extra.iter().map(String::as_str));
        let mut drawn = std::collections::BTreeSet::new();
        for seed in 0..100 {
            let r = explore::resolve(&t, seed);
            assert_eq!(r.explore, None, "{name} seed {seed}: resolved scenarios are plain");
            let back = Scenario::parse(&r.to_ron(), "resolved.ron").unwrap_or_else(|e| panic!("{name} {seed}: {e}"));
            assert_eq!(back, r, "{name} seed {seed}");
            let on = r.description.rsplit(": ").next().unwrap_or_default().to_string();
            drawn.extend(on.split(", ").map(str::to_string));
        }
        for f in wanted {
            assert!(drawn.contains(f), "{name}: family {f} never drawn in 100 seeds ({drawn:?})");
        }
    }
}

#[test]
fn explore_clocks_stay_within_the_bound_s_by_default() {
    // Spec §5: any two clocks differ by at most S. Each node's offset
    // (its steps plus the drift gathered up to the end of the heal window)
    // stays within ±S/2.
    for name in TEMPLATES {
        let (t, _) = template(name);
        let half_ms = explore::clock_bound_ns(&t) as f64 / 2e6;
        for seed in 0..300 {
            let r = explore::resolve(&t, seed);
            let run_ms = (r.duration_s * 1000 + r.expect.liveness.as_ref().map_or(0, |l| l.within_ms)) as f64;
            let mut offset: std::collections::BTreeMap<&str, f64> = Default::default();
            for st in &r.timeline {
                match &st.action {
                    Action::Skew { node, ms } => *offset.entry(node).or_default() += ms.unsigned_abs() as f64,
                    Action::Drift { node, ppm } => {
                        *offset.entry(node).or_default() += ppm.unsigned_abs() as f64 * run_ms / 1e6
                    }
                    _ => {}
                }
            }
            for (node, ms) in offset {
                assert!(ms <= half_ms, "{name} seed {seed}: {node} drifts {ms} ms off, more than S/2 = {half_ms} ms");
            }
        }
    }
    assert_eq!(explore::CLOCK_BOUND_NS, 500_000_000);
}

#[test]
fn clock_beyond_bound_is_an_explicit_template_option() {
    let (mut t, _) = template("operator-swarm");
    let mut spec = t.explore.clone().unwrap();
    spec.clock_beyond_bound = true;
    t.explore = Some(spec);
    let beyond = (0..100).any(|seed| {
        explore::resolve(&t, seed)
            .timeline
            .iter()
            .any(|st| matches!(st.action, Action::Skew { ms, .. } if ms.unsigned_abs() > 250))
    });
    assert!(beyond, "clock_beyond_bound draws skews past S/2");
}

#[test]
fn wider_templates_draw_their_operator_and_disk_actions() {
    let (ops, _) = template("operator-swarm");
    let (disk, _) = template("disk-swarm");
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..100 {
        for r in [explore::resolve(&ops, seed), explore::resolve(&disk, seed)] {
            for w in r.timeline.windows(2) {
                if let (Action::Migrate { agent, from, to }, Action::Migrate { agent: a2, from: f2, to: t2 }) =
                    (&w[0].action, &w[1].action)
                    && w[0].at_ms == w[1].at_ms
                    && agent == a2
                    && from == f2
                    && to != t2
                {
                    seen.insert("double_migration");
                }
            }
            let migrations = r.timeline.iter().filter(|s| matches!(s.action, Action::Migrate { .. })).count();
            if migrations >= 3 {
                seen.insert("chain");
            }
            for st in &r.timeline {
                match &st.action {
                    Action::Recover { .. } => seen.insert("recover"),
                    Action::Restart { storage: igor_sim::scenario::Storage::Wipe, .. } => seen.insert("wipe"),
                    Action::DiskFault { .. } => seen.insert("disk_fault"),
                    Action::Buggify { fault: BuggifyFault::DiskFull | BuggifyFault::DiskIo, .. } => {
                        seen.insert("buggify_disk")
                    }
                    _ => false,
                };
            }
            // A disk fault aimed at a handoff lands on the migration's source at its instant.
            for st in &r.timeline {
                if let Action::DiskFault { node, .. } = &st.action
                    && r.timeline.iter().any(
                        |m| matches!(&m.action, Action::Migrate { from, .. } if from == node && m.at_ms == st.at_ms),
                    )
                {
                    seen.insert("disk_fault_at_handoff");
                }
            }
        }
    }
    for want in ["double_migration", "chain", "recover", "wipe", "disk_fault", "buggify_disk", "disk_fault_at_handoff"]
    {
        assert!(seen.contains(want), "{want} never drawn: {seen:?}");
    }
}

#[test]
fn required_marks_cover_each_family_and_every_matrix_arrow() {
    let (t, _) = template("adversary-swarm");
    let marks = explore::required_marks(&t);
    assert!(marks.iter().any(|m| m == "adversary_RefuseConfirm"), "{marks:?}");
    assert!(marks.iter().any(|m| m == "transition_RECOVERY_REQUIRED_to_ACTIVE_OWNER"), "{marks:?}");
    assert!(marks.iter().any(|m| m == "handoff_completed"), "A1 families are on: {marks:?}");
    let (ops, _) = template("operator-swarm");
    let marks = explore::required_marks(&ops);
    for m in ["operator_recover_issued", "migration_chain_3_nodes", "concurrent_migrations_issued", "node_wiped"] {
        assert!(marks.iter().any(|x| x == m), "{m}: {marks:?}");
    }
}
