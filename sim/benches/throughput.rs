//! Simulator throughput: simulated seconds per wall-clock second and seeds
//! per minute for the 5-node, 10-agent, one-hour world with migrations and
//! faults (`bench-5n-10a-1h.ron`), against a baseline measured in the same
//! run: the same world with the agents removed (turmoil stepping, idle nodes
//! and the timeline only). Run: `cargo bench -p igor-sim --bench throughput`
//! (`-- N` for N seeds, default 3).
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time

use igor_sim::runner;
use igor_sim::scenario::Scenario;
use std::path::Path;
use std::time::Instant;

fn measure(scenario: &Scenario, base: &Path, seeds: u64) -> (f64, u64) {
    let start = Instant::now();
    let mut events = 0;
    for seed in 0..seeds {
        let r = runner::run(scenario, base, Some(seed)).expect("benchmark world runs");
        assert!(r.matches_expectation(), "seed {seed}: {}", r.mismatch_reason());
        events += r.events;
    }
    (start.elapsed().as_secs_f64(), events)
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
    let (idle_wall, _) = measure(&idle, &base, seeds);
    let (wall, events) = measure(&world, &base, seeds);
    println!(
        "world: {} ({} nodes, {} agents, {} s simulated, {} timeline actions)",
        world.name,
        world.nodes.len(),
        world.agents.len(),
        world.duration_s,
        world.timeline.len()
    );
    println!("seeds: {seeds}");
    println!("baseline (no agents): {:.0} simulated s per wall s", sim_s / idle_wall);
    println!(
        "full world:           {:.0} simulated s per wall s ({:.2}x the baseline's wall time)",
        sim_s / wall,
        wall / idle_wall
    );
    println!("seeds per minute:     {:.1}", seeds as f64 * 60.0 / wall);
    println!("events per wall s:    {:.0}", events as f64 / wall);
}
