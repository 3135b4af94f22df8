//! `Restart` of a node that is up (outside review, restart_running.ron):
//! it is a crash followed by the restart, reported to the checker and the
//! trace exactly as a timeline `Crash` at the same instant would be
//! (docs/scenarios.md). Before, the runner bounced the node without telling
//! the checker or the trace that it had crashed.

use igor_sim::runner;
use igor_sim::scenario::Scenario;
use std::path::Path;

/// A two-node world; `steps` is the timeline's RON list body.
fn scenario(steps: &str) -> Scenario {
    let text = format!(
        r#"Scenario(
    name: "restart-running",
    seed: 1,
    duration_s: 20,
    nodes: [(name: "a"), (name: "b")],
    agents: [(name: "counter", wasm: "../../agents/counter.wat", budget_microcents: 50_000_000, node: "a")],
    timeline: [{steps}],
    expect: (verdict: Pass),
)"#
    );
    Scenario::parse(&text, "restart-running.ron").unwrap_or_else(|e| panic!("{e}"))
}

fn base() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// Same trace, byte for byte, and the same verdict, for `Restart` alone
/// and for `Crash` then `Restart` at the same millisecond.
fn same_as_crash_then_restart(storage: &str) -> Option<String> {
    let migrate = r#"(at_ms: 5000, action: Migrate(agent: "counter", from: "a", to: "b"))"#;
    let restart = format!(r#"(at_ms: 3000, action: Restart(node: "a", storage: {storage}))"#);
    let crash = r#"(at_ms: 3000, action: Crash(node: "a"))"#;
    let alone = runner::run(&scenario(&format!("{restart}, {migrate}")), &base(), None).unwrap();
    let both = runner::run(&scenario(&format!("{crash}, {restart}, {migrate}")), &base(), None).unwrap();
    assert!(
        alone.trace.text().contains("000003.000 sim crash node=a\n000003.000 sim restart node=a"),
        "{storage}: no crash traced before the restart:\n{}",
        alone.trace.text()
    );
    // The header names the timeline's length (3 steps against 2): compare
    // what happened, every line after it.
    let body = |t: &str| t.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
    let (alone_text, both_text) = (body(&alone.trace.text()), body(&both.trace.text()));
    assert!(alone_text.lines().count() > 10, "{storage}: trace too short to compare:\n{alone_text}");
    assert_eq!(alone_text, both_text, "{storage}: Restart of a running node differs from Crash + Restart");
    assert_eq!(alone.violation.as_ref().map(|v| v.invariant), both.violation.as_ref().map(|v| v.invariant));
    alone.violation.map(|v| v.invariant.to_string())
}

#[test]
fn restart_of_a_running_node_with_its_disk_is_crash_then_restart() {
    // The owner loses only uncommitted ticks and resumes: an honest pass.
    assert_eq!(same_as_crash_then_restart("Intact"), None);
}

#[test]
fn restart_of_a_running_node_that_wipes_it_is_crash_then_wipe() {
    // The only copy is wiped: the honest verdict of crash-then-wipe is
    // LOST (no protocol brings back a single replica), now named as such
    // with the crash that caused it in the trace.
    assert_eq!(same_as_crash_then_restart("Wipe").as_deref(), Some(runner::LOST));
}
