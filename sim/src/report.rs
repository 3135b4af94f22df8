//! The result of one run: [`RunReport`] (verdict, failed expectations, the
//! trace, final authority and ticks, coverage), its human summary, the
//! expectation check, and the trace header. Outside the runner so that the
//! adversary audit can read a report without importing the runner (which
//! imports the adversary's filter).

use crate::checker::{Checker, State, Violation};
use crate::coverage::Coverage;
use crate::scenario::{Expect, Scenario, Verdict};
use crate::trace::{Trace, fmt_time};
use igor::units::{AgentId, NodeId};
use sha2::Digest;
use std::collections::BTreeMap;

/// Lines of trace printed before a violation.
pub const CONTEXT_LINES: usize = 15;

/// The result of one run.
pub struct RunReport {
    pub scenario: String,
    pub seed: u64,
    pub expect: Expect,
    pub violation: Option<Violation>,
    /// Expectations (authority, ticks) that did not hold.
    pub failures: Vec<String>,
    pub trace: Trace,
    pub events: u64,
    pub sim_ns: u64,
    /// Final authority per (node, agent), state names.
    pub authority: BTreeMap<(String, String), String>,
    pub highest_ticks: BTreeMap<String, Option<u64>>,
    /// Coverage marks this run fired.
    pub coverage: Coverage,
    /// Turmoil steps the run took (with [`Stepping::Skip`], one step may
    /// cross many `step_ms`).
    pub steps: u64,
}

impl RunReport {
    pub fn matches_expectation(&self) -> bool {
        match &self.expect.verdict {
            Verdict::Pass => self.violation.is_none() && self.failures.is_empty(),
            Verdict::Violation(name) => self.violation.as_ref().is_some_and(|v| v.invariant == name),
        }
    }

    /// One line saying why the run did not match (empty if it did).
    pub fn mismatch_reason(&self) -> String {
        if self.matches_expectation() {
            return String::new();
        }
        match (&self.expect.verdict, &self.violation) {
            (Verdict::Pass, Some(v)) => format!("{v}"),
            (Verdict::Pass, None) => self.failures.join("; "),
            (Verdict::Violation(name), Some(v)) => format!("expected {name}, got {v}"),
            (Verdict::Violation(name), None) => format!("expected {name} to be violated, but every invariant held"),
        }
    }

    /// Human summary: verdict, final state, trace fingerprint.
    pub fn summary(&self, path: &str) -> String {
        let mut s = String::new();
        let verdict = match &self.violation {
            Some(v) => format!("VIOLATION {}", v.invariant),
            None => "PASS (no invariant violated)".to_string(),
        };
        let expected = match &self.expect.verdict {
            Verdict::Pass => "Pass".to_string(),
            Verdict::Violation(n) => format!("Violation({n})"),
        };
        s += &format!("scenario  {} ({path})\nseed      {}\n", self.scenario, self.seed);
        s += &format!("simulated {}s, {} events\n", fmt_time(self.sim_ns), self.events);
        s += &format!("verdict   {verdict}\nexpected  {expected}\n");
        if let Some(v) = &self.violation {
            s += &format!("\n{v}\nlast events:\n");
            for l in self.trace.tail(CONTEXT_LINES) {
                s += &format!("  {l}\n");
            }
        }
        s += "\nfinal authority:\n";
        for ((node, agent), state) in &self.authority {
            s += &format!("  {node:<10} {agent:<16} {state}\n");
        }
        for (agent, tick) in &self.highest_ticks {
            s += &format!("  {agent} highest committed tick: {}\n", tick.map(|t| t.to_string()).unwrap_or("-".into()));
        }
        for f in &self.failures {
            s += &format!("expectation failed: {f}\n");
        }
        s += &format!("trace     {} lines, sha256 {}\n", self.trace.lines().len(), self.trace.hash());
        let ok = if self.matches_expectation() { "MATCHES expect" } else { "DOES NOT MATCH expect" };
        s += &format!("result    {ok}\n");
        if !self.matches_expectation() {
            s += &format!("reproduce: igor-sim run {path} --seed {}\n", self.seed);
        }
        s
    }
}

/// Authority per (node, agent) and highest committed tick per agent, as the
/// checker saw them at the end of the fault window.
pub(crate) type FinalState = (BTreeMap<(String, String), String>, BTreeMap<String, Option<u64>>);

pub(crate) fn final_state(checker: &Checker, nodes: &[NodeId], agents: &[AgentId]) -> FinalState {
    let mut authority = BTreeMap::new();
    for node in nodes {
        for a in agents {
            let state = checker.authority(node, a).map(State::name).unwrap_or("ABSENT");
            authority.insert((node.to_string(), a.to_string()), state.to_string());
        }
    }
    let highest = agents.iter().map(|a| (a.to_string(), checker.highest_tick(a))).collect();
    (authority, highest)
}

/// The trace header: format, scenario and seed, build (version, git
/// revision, wasmtime), the resolved options and a fingerprint of the whole
/// resolved scenario, so a trace says exactly what produced it.
pub(crate) fn write_header(trace: &mut Trace, scenario: &Scenario, seed: u64) {
    let mut resolved = scenario.clone();
    resolved.seed = seed;
    let fingerprint = hex::encode(sha2::Sha256::digest(resolved.to_ron().as_bytes()));
    let names = |v: Vec<&str>| v.join(",");
    trace.note(format!("# igor-sim trace v{}", crate::trace::TRACE_FORMAT));
    trace.note(format!("# scenario {} seed {seed}", scenario.name));
    trace.note(crate::trace::build_line());
    let (lo, hi) = scenario.network.latency_ms;
    trace.note(format!(
        "# options duration_s={} step_ms={} latency_ms={lo}..{hi} loss={} nodes={} agents={} timeline={} liveness={}",
        scenario.duration_s,
        scenario.step_ms,
        scenario.network.loss,
        names(scenario.nodes.iter().map(|n| n.name.as_str()).collect()),
        names(scenario.agents.iter().map(|a| a.name.as_str()).collect()),
        scenario.timeline.len(),
        scenario.expect.liveness.as_ref().map(|l| format!("{}ms", l.within_ms)).unwrap_or_else(|| "off".into()),
    ));
    trace.note(format!("# resolved-scenario sha256 {}", crate::trace::hex_digest(&fingerprint)));
}

pub(crate) fn expectation_failures(r: &RunReport) -> Vec<String> {
    if r.violation.is_some() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (node, per_agent) in &r.expect.authority {
        for (agent, want) in per_agent {
            let got = r.authority.get(&(node.clone(), agent.clone())).map(String::as_str).unwrap_or("ABSENT");
            if got != want {
                out.push(format!("authority of {agent} on {node}: expected {want}, got {got}"));
            }
        }
    }
    for (agent, (lo, hi)) in &r.expect.ticks {
        match r.highest_ticks.get(agent).copied().flatten() {
            Some(t) if (*lo..=*hi).contains(&t) => {}
            got => out.push(format!("highest committed tick of {agent}: expected {lo}..={hi}, got {got:?}")),
        }
    }
    out
}
