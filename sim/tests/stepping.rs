//! `Stepping::Skip` (the default: idle stretches crossed in one turmoil
//! step) must give the same trace, byte for byte, as `Stepping::Fixed` (one
//! `step_ms` at a time, the reference) for the same scenario and seed. The
//! snapshots in `snapshots/` were recorded with fixed stepping, so
//! `--test scenarios` checks every scenario at its pinned seed; this test
//! adds other seeds and a longer, busier world (the benchmark's, cut to a
//! quarter hour), and checks that skipping really skips.

use igor_sim::runner::{self, Stepping};
use igor_sim::scenario::Scenario;
use std::path::Path;

/// Runs `scenario` both ways; returns (fixed steps, skip steps) or the
/// first differing trace line.
fn compare(scenario: &Scenario, base: &Path, seed: u64) -> Result<(u64, u64), String> {
    let fixed = runner::run_stepping(scenario, base, Some(seed), Stepping::Fixed).map_err(|e| e.to_string())?;
    let skip = runner::run_stepping(scenario, base, Some(seed), Stepping::Skip).map_err(|e| e.to_string())?;
    if let Some(d) = fixed.trace.first_difference(&skip.trace) {
        return Err(format!("{} seed {seed}: traces differ: {d:?}", scenario.name));
    }
    assert_eq!(fixed.trace.text().as_bytes(), skip.trace.text().as_bytes());
    assert_eq!((fixed.events, fixed.sim_ns), (skip.events, skip.sim_ns));
    Ok((fixed.steps, skip.steps))
}

#[test]
fn skip_stepping_gives_the_fixed_trace_for_every_scenario_at_another_seed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let files = igor_sim::scenario::files(&root).unwrap();
    assert!(files.len() > 50, "found {} scenarios", files.len());
    let (mut fixed_steps, mut skip_steps, mut failures) = (0, 0, Vec::new());
    for path in &files {
        let scenario = Scenario::load(path).unwrap_or_else(|e| panic!("{e}"));
        // Another seed than the pinned one (the snapshots test that one).
        match compare(&scenario, &Scenario::base_dir(path), scenario.seed.wrapping_add(1)) {
            Ok((f, s)) => {
                fixed_steps += f;
                skip_steps += s;
            }
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Skipping happened: far fewer turmoil steps for the same traces.
    // (Adversary scenarios step fixed; short, busy ones skip little.)
    assert!(skip_steps * 2 < fixed_steps, "skip {skip_steps} steps, fixed {fixed_steps}");
}

#[test]
fn skip_stepping_gives_the_fixed_trace_in_the_benchmark_world() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/bench-5n-10a-1h.ron");
    let mut world = Scenario::load(&path).unwrap();
    // A quarter hour: migrations, a partition, duplication and reordering
    // (the network twin's delay timers), a crash and a restart.
    world.duration_s = 900;
    world.timeline.retain(|s| s.at_ms < 900_000);
    for seed in [1, 2] {
        let (fixed, skip) = compare(&world, &Scenario::base_dir(&path), seed).unwrap();
        assert!(skip * 3 < fixed, "seed {seed}: skip {skip} steps, fixed {fixed}");
    }
}
