//! Unit tests of `audit` (kept apart so the module reads as code).

use super::*;
use crate::env::mem::{ManualClock, MemDisk, SeededEntropy};
use crate::node::fake::CounterExecutor;
use crate::node::{Conduct, Node, NodeConfig};
use crate::units::NodeId;

/// A node that bills one extra microcent on tick 37 (RE-3 broken).
struct Overcharge;
impl Conduct for Overcharge {
    fn surcharge(&mut self, _agent: &AgentId, _cost: Microcents) -> (Microcents, Option<String>) {
        (Microcents(1), Some("surcharge".into()))
    }
}

/// A history of `ticks` ticks of the counter executor, checkpoint about
/// every 10; `lie_from`: the node overcharges from that tick on.
fn history(ticks: u64, lie_from: Option<u64>) -> (MemDisk, AgentId) {
    let agent = AgentId::new("counter").unwrap();
    let clock = ManualClock::new(1_700_000_000_000_000_000);
    let disk = MemDisk::new();
    let mut cfg = NodeConfig::new(NodeId::new("n0").unwrap());
    cfg.tick_idle_ns = 1_000_000;
    cfg.checkpoint_interval_ns = 10_000_000;
    let exec = CounterExecutor::new(Microcents(3));
    let mut node = Node::open(cfg, disk.clone(), clock.clone(), SeededEntropy::derived(1, "n0"), exec);
    node.deploy(agent.clone(), b"module".to_vec(), b"{}".to_vec(), Microcents(1_000_000)).unwrap();
    // Bounded: a node that stops ticking fails the test, never hangs it
    // (one tick per step at most; 4x the steps is ample).
    let mut steps = 0u64;
    while node.agent(&agent).unwrap().tick.0 < ticks {
        steps += 1;
        assert!(steps <= ticks.saturating_mul(4) + 100, "the node stopped ticking at {:?}", node.agent(&agent));
        if lie_from.is_some_and(|t| node.agent(&agent).unwrap().tick.0 + 1 == t) {
            node.set_conduct(Box::new(Overcharge));
        }
        clock.advance_ns(1_000_000);
        node.advance();
    }
    (disk, agent)
}

fn run(disk: &MemDisk, agent: &AgentId) -> AuditReport {
    let (files, kv) = load_history(disk, agent, 0).unwrap();
    let input =
        AuditInput { agent: agent.clone(), files, kv, wasm: b"module".to_vec(), manifest: b"{}".to_vec(), from: None };
    audit(&mut CounterExecutor::new(Microcents(3)), &input, &mut |_| {}).unwrap()
}

#[test]
fn an_honest_history_audits_clean_through_the_default_replay() {
    let (disk, agent) = history(100, None);
    let r = run(&disk, &agent);
    assert_eq!(r.finding, None);
    assert!(r.unlogged.is_empty() && r.from_genesis, "{r:?}");
    assert_eq!(r.ticks_replayed, r.head_tick.0);
    assert!(r.head_tick.0 >= 100 && r.audited + 1 == r.links, "{r:?}");
}

/// A node lying about metering (one microcent more than the tick cost,
/// RE-3) is caught at the first tick it overcharged, by the budget the
/// next tick started from.
#[test]
fn an_overcharging_node_is_named_at_the_tick() {
    let (disk, agent) = history(100, Some(37));
    let f = run(&disk, &agent).finding.expect("the overcharge is found");
    assert_eq!(f.tick, TickNumber(37), "{f}");
    let FindingKind::Replay(DivergenceKind::Charge { budget_before, budget_after, replayed, .. }) = f.kind else {
        panic!("{f}")
    };
    assert_eq!((budget_before.0 - budget_after.0, replayed), (4, Microcents(3)), "{f}");
    assert!(f.to_string().contains("charged 4"), "{f}");
}
