//! Simulator throughput: simulated seconds per wall-clock second and seeds
//! per minute for the 5-node, 10-agent, one-hour world with migrations and
//! faults (`bench-5n-10a-1h.ron`), stepped both ways in the same run:
//! `Stepping::Fixed` (one turmoil step per `step_ms` and every signature
//! verified in full: the old runner) and `Stepping::Skip` (idle stretches
//! crossed in one step, signature checks answered from the per-thread memo
//! where this thread made or already checked the signature: the default). Every
//! seed's trace must be byte-identical both ways. A baseline measures the
//! same world with the agents removed (turmoil, idle nodes, the timeline).
//! Run: `cargo bench -p igor-sim --bench throughput` (`-- N` for N seeds,
//! default 3).
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time

use igor_sim::runner::{self, Stepping};
use igor_sim::scenario::Scenario;
use std::path::Path;
use std::time::Instant;

struct Measured {
    wall_s: f64,
    events: u64,
    steps: u64,
    traces: Vec<String>,
}

fn measure(scenario: &Scenario, base: &Path, seeds: u64, stepping: Stepping) -> Measured {
    let start = Instant::now();
    let (mut events, mut steps, mut traces) = (0, 0, Vec::new());
    for seed in 0..seeds {
        let r = runner::run_stepping(scenario, base, Some(seed), stepping).expect("benchmark world runs");
        assert!(r.matches_expectation(), "seed {seed}: {}", r.mismatch_reason());
        events += r.events;
        steps += r.steps;
        traces.push(r.trace.hash());
    }
    Measured { wall_s: start.elapsed().as_secs_f64(), events, steps, traces }
}

fn main() {
    let seeds: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(3);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/bench-5n-10a-1h.ron");
    let world = Scenario::load(&path).expect("benchmark scenario parses");
    let base = Scenario::base_dir(&path);
    let mut idle = world.clone();
    idle.agents.clear();
    idle.timeline.retain(|s| s.action.agent().is_none());
    idle.expect.authority.clear();
    idle.expect.ticks.clear();

    let sim_s = (world.duration_s * seeds) as f64;
    let idle_fixed = measure(&idle, &base, seeds, Stepping::Fixed);
    let fixed = measure(&world, &base, seeds, Stepping::Fixed);
    let skip = measure(&world, &base, seeds, Stepping::Skip);
    assert_eq!(fixed.traces, skip.traces, "skip stepping must give the fixed-stepping traces");
    // The bar is seeds per minute on 2 cores: the same seeds, skip
    // stepping, split over two threads (as `sweep --jobs 2` runs them).
    let start = Instant::now();
    let halves: Vec<Vec<String>> = std::thread::scope(|scope| {
        let (world, base) = (&world, &base);
        let run = move |range: std::ops::Range<u64>| {
            range
                .map(|seed| {
                    let r =
                        runner::run_stepping(world, base, Some(seed), Stepping::Skip).expect("benchmark world runs");
                    r.trace.hash()
                })
                .collect::<Vec<_>>()
        };
        let mid = seeds.div_ceil(2);
        let first = scope.spawn(move || run(0..mid));
        let second = scope.spawn(move || run(mid..seeds));
        vec![first.join().expect("first half"), second.join().expect("second half")]
    });
    let two_cores_s = start.elapsed().as_secs_f64();
    assert_eq!(halves.concat(), skip.traces, "two threads give the same traces");
    println!(
        "world: {} ({} nodes, {} agents, {} s simulated, {} timeline actions)",
        world.name,
        world.nodes.len(),
        world.agents.len(),
        world.duration_s,
        world.timeline.len()
    );
    println!("seeds: {seeds} (traces identical both ways: sha256 of seed 0 {})", &skip.traces[0][..16]);
    println!("baseline (no agents, fixed): {:.0} simulated s per wall s", sim_s / idle_fixed.wall_s);
    for (name, m) in [("before: Stepping::Fixed", &fixed), ("after:  Stepping::Skip ", &skip)] {
        println!(
            "{name}  {:>6.0} simulated s per wall s, {:>5.1} seeds per minute, {:>7} turmoil steps per seed, {:.0} events per wall s",
            sim_s / m.wall_s,
            seeds as f64 * 60.0 / m.wall_s,
            m.steps / seeds,
            m.events as f64 / m.wall_s
        );
    }
    println!("speed-up (after / before): {:.2}x", fixed.wall_s / skip.wall_s);
    println!(
        "after, 2 threads: {:.0} simulated s per wall s, {:.1} seeds per minute on 2 cores (bar: 100)",
        sim_s / two_cores_s,
        seeds as f64 * 60.0 / two_cores_s
    );
}
