//! The watchdog ends runs that would never end: a node that keeps emitting
//! events while simulated time stands still is STUCK, within bounded time
//! and memory, and the hostile agents (trap, loop) always end with a verdict.

use igor_sim::runner;
use igor_sim::scenario::Scenario;
use igor_sim::watchdog::{MAX_EVENTS_PER_INSTANT, STUCK};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One node, one agent from `agents/`, no timeline, the given node options.
fn one_node(agent_file: &str, node_options: &str, liveness: &str) -> Scenario {
    let text = format!(
        r#"Scenario(
            name: "watchdog",
            seed: 1,
            duration_s: 5,
            nodes: [(name: "a"{node_options})],
            agents: [(name: "x", wasm: "agents/{agent_file}", budget_microcents: 1_000_000_000_000, node: "a")],
            expect: (verdict: Pass{liveness}),
        )"#
    );
    Scenario::parse(&text, "watchdog.ron").unwrap_or_else(|e| panic!("{e}"))
}

/// The bound on a STUCK trace: the watchdog's limit plus the run's own lines.
const TRACE_BOUND: usize = MAX_EVENTS_PER_INSTANT as usize + 1_000;

#[test]
fn a_node_that_spins_at_one_instant_is_stuck_with_its_last_events() {
    // A zero tick interval makes an honest agent tick again at the same
    // instant, forever (its budget lasts millions of ticks): a node busy
    // without any defect of its own, independent of the node's fixes.
    // Validation refuses such a scenario (NodeConfig::validate), so the
    // configuration is changed after it, as only a test can.
    let scenario = one_node("counter.wat", "", "");
    let spin = |cfg: &mut igor::node::NodeConfig| cfg.tick_idle_ns = 0;
    let mut refused = scenario.clone();
    refused.nodes[0].tick_interval_ms = Some(0);
    let err = runner::run(&refused, &root(), None).err().expect("a zero tick interval is refused");
    assert!(err.to_string().contains("tick_idle_ns must be > 0"), "{err}");
    let report = runner::run_configured(&scenario, &root(), None, &spin).unwrap_or_else(|e| panic!("{e}"));
    let v = report.violation.as_ref().expect("a spinning node is STUCK");
    assert_eq!(v.invariant, STUCK, "{v}");
    assert_eq!(v.nodes[0].as_str(), "a");
    assert_eq!(v.agent.as_str(), "x");
    assert!(v.message.contains("one simulated instant") && v.message.contains("tick_"), "{v}");
    assert!(report.trace.lines().len() < TRACE_BOUND, "trace bounded: {} lines", report.trace.lines().len());
    assert!(report.sim_ns < 5_000_000_000, "ended at the spin, not at the end of the run");
    // `expect: Violation("STUCK")` is how a scenario asks for it.
    let mut expecting = scenario.clone();
    expecting.expect.verdict = igor_sim::scenario::Verdict::Violation(STUCK.into());
    assert!(runner::run_configured(&expecting, &root(), None, &spin).unwrap().matches_expectation());
}

#[test]
fn hostile_trap_and_loop_agents_end_with_a_verdict_in_bounded_memory() {
    for agent in ["hostile_trap.wat", "hostile_loop.wat"] {
        let scenario = one_node(agent, "", ", liveness: None");
        let report = runner::run(&scenario, &root(), None).unwrap_or_else(|e| panic!("{agent}: {e}"));
        let lines = report.trace.lines().len();
        assert!(lines < TRACE_BOUND, "{agent}: {lines} trace lines");
        // Either the node halts the agent (PASS) or the watchdog stops the
        // node (STUCK); nothing else, and never a hang.
        match &report.violation {
            None => assert!(
                report.trace.lines().iter().any(|l| l.contains("agent_halted")),
                "{agent}: passed without halting the agent"
            ),
            Some(v) => assert_eq!(v.invariant, STUCK, "{agent}: {v}"),
        }
    }
}
