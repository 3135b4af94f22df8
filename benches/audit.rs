//! Cost of auditing a history by replay, per tick, against the live cost
//! per tick, measured in the same process run (so the ratios hold on any
//! machine). Run: `cargo bench --bench audit`.
//!
//! Two agents: `counter` (the cheapest possible tick) and `budget_eater`
//! (a busy agent, ~10^5 fuel of work per tick). Two measurements each:
//! - execution: the live `Executor::tick` on one instance (recording each
//!   tick's inputs and event log as the node does) against
//!   `Executor::replay_in` over those records on one instance (the audit's
//!   inner loop: replay, charge check);
//! - end to end: a real `Node` (MemDisk, manual clock) running the agent
//!   with a checkpoint every 50 ticks, against `igor::audit::audit` over the
//!   history it left (chain verification, log signatures, replay, state
//!   comparison at every checkpoint).
//!
//! Each figure is the median of several rounds (the machine is shared).
#![allow(clippy::disallowed_methods)] // a benchmark reads the wall clock by definition

use igor::audit::{self, AuditInput};
use igor::env::mem::{ManualClock, MemDisk, SeededEntropy};
use igor::executor::{Executor, TickInputs};
use igor::node::{Node, NodeConfig};
use igor::sandbox::{Sandbox, SandboxConfig};
use igor::units::{AgentId, Microcents, NodeId, TickNumber};
use std::hint::black_box;
use std::time::Instant;

const COUNTER: &[u8] = include_bytes!("../agents/counter.wat");
const BUSY: &[u8] = include_bytes!("../agents/budget_eater.wat");
const ROUNDS: usize = 5;
const PRICE: Microcents = Microcents(1_000_000);

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig { pooling_instances: Some(8), ..SandboxConfig::default() }).expect("sandbox")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Live ticks on one instance, recording what the node records; then the
/// audit's replay of those records on one instance. (live, replay) ns/tick.
fn execution(wat: &[u8], n: u64) -> (f64, f64) {
    let mut sb = sandbox();
    let hash = sb.prepare(wat, &[]).expect("prepare");
    let mut live = sb.start(&hash, &[], &[], &[]).expect("start");
    let mut records: Vec<(TickInputs, Vec<u8>)> = Vec::with_capacity(n as usize);
    let mut budget = Microcents(i64::MAX / 4);
    let t = Instant::now();
    for tick in 1..=n {
        let inputs = TickInputs {
            tick: TickNumber(tick),
            now_unix_ns: 1_700_000_000_000_000_000 + tick as i64,
            rand_seed: [7; 32],
            budget,
            price_per_second: PRICE,
            side_effects_allowed: true,
            receipts: Vec::new(),
        };
        let r = sb.tick(&mut live, &inputs);
        budget = Microcents(budget.0 - r.cost.0 - r.paid.0);
        records.push((inputs, r.event_log));
    }
    let live_ns = t.elapsed().as_nanos() as f64 / n as f64;
    let mut inst = sb.start(&hash, &[], &[], &[]).expect("start");
    let t = Instant::now();
    let mut left = records[0].0.budget;
    for (i, (inputs, log)) in records.iter().enumerate() {
        let r = sb.replay_in(&hash, &[], &mut inst, inputs, log).expect("replay");
        left = Microcents(left.0 - r.cost.0 - r.paid.0);
        let next = records.get(i + 1).map_or(budget, |(n, _)| n.budget);
        assert_eq!(left, next, "replayed charge of tick {}", inputs.tick);
    }
    let replay_ns = t.elapsed().as_nanos() as f64 / n as f64;
    assert_eq!(sb.snapshot(&mut inst).expect("snapshot"), sb.snapshot(&mut live).expect("snapshot"));
    black_box(left);
    (live_ns, replay_ns)
}

/// A node runs `n` ticks (checkpoint every 50), then the history is
/// audited. (node ns/tick, audit ns/tick).
fn end_to_end(wat: &[u8], n: u64) -> (f64, f64) {
    let agent = AgentId::new("bench").expect("id");
    let clock = ManualClock::new(1_700_000_000_000_000_000);
    let disk = MemDisk::new();
    let mut cfg = NodeConfig::new(NodeId::new("n0").expect("id"));
    cfg.price_per_second = PRICE;
    cfg.tick_idle_ns = 1_000_000;
    cfg.tick_fast_ns = 1_000_000;
    cfg.checkpoint_interval_ns = 50_000_000;
    let mut node = Node::open(cfg, disk.clone(), clock.clone(), SeededEntropy::derived(1, "bench"), sandbox());
    node.deploy(agent.clone(), wat.to_vec(), b"{}".to_vec(), Microcents(i64::MAX / 4)).expect("deploy");
    let t = Instant::now();
    while node.agent(&agent).expect("agent").tick.0 < n {
        clock.advance_ns(1_000_000);
        node.advance();
        node.drain_events();
    }
    let node_ns = t.elapsed().as_nanos() as f64 / n as f64;
    let (files, kv) = audit::load_history(&disk, &agent, 0).expect("history");
    let input = AuditInput { agent, files, kv, wasm: wat.to_vec(), manifest: b"{}".to_vec(), from: None };
    let mut sb = sandbox();
    let t = Instant::now();
    let report = audit::audit(&mut sb, &input, &mut |_| {}).expect("audit");
    let audit_ns = t.elapsed().as_nanos() as f64 / report.ticks_replayed.max(1) as f64;
    assert!(report.finding.is_none() && report.unlogged.is_empty(), "{report:?}");
    assert!(report.ticks_replayed >= n - 50, "{}", report.ticks_replayed);
    (node_ns, audit_ns)
}

fn main() {
    for (name, wat, n, chain) in [("counter", COUNTER, 200_000u64, 10_000u64), ("busy", BUSY, 20_000, 5_000)] {
        let (mut live, mut replay, mut node, mut audit) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let (l, r) = execution(wat, n);
            live.push(l);
            replay.push(r);
            let (nd, a) = end_to_end(wat, chain);
            node.push(nd);
            audit.push(a);
        }
        let (live, replay, node, audit) = (median(live), median(replay), median(node), median(audit));
        println!("{name}: live tick (one instance, recorded)      {live:>10.0} ns/tick");
        println!("{name}: audit replay (one instance, checked)    {replay:>10.0} ns/tick {:>6.2}x live", replay / live);
        println!("{name}: live node (ticks + checkpoints/50)      {node:>10.0} ns/tick");
        println!(
            "{name}: igor::audit::audit over its history     {audit:>10.0} ns/tick {:>6.2}x live node, {:>6.2}x live tick",
            audit / node,
            audit / live
        );
    }
}
