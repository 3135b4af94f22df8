//! The scenario runner: builds a turmoil world from a scenario (seed, epoch,
//! step and duration always explicit), runs one unmodified `igor` node per
//! host over the simulated twins, applies the timeline, feeds every node
//! event to the trace and the checker, and compares the result with the
//! scenario's `expect`. A violation stops the run at once.
//!
//! This file owns the entry points (`run`, `run_stepping`,
//! `run_configured`), the stepping mode and the run's phases in order
//! (fault window, liveness, end-of-run verify). The parts:
//! - `schema`: scenario → node configuration, the agents' bytes;
//! - `host`: the software of one simulated host (`HostCtl`, `host_main`);
//! - `world`: the turmoil world, stepping, and feeding events onwards;
//! - `observe`: what the runner reads out of a node event for the checker;
//! - `actions`: timeline actions applied to the world;
//! - `liveness`: the heal, the liveness phase and its operator;
//! - `verify`: the end-of-run history verify (EI-3 at rest).
//!
//! The run's result, [`RunReport`], lives in [`crate::report`] (the
//! adversary audit reads it without depending on the runner).

mod actions;
mod host;
mod liveness;
mod observe;
mod schema;
mod verify;
mod world;

pub use crate::report::{CONTEXT_LINES, RunReport};
pub use liveness::{LIVENESS, LOST};

use crate::clock::{ClockFault, SIM_EPOCH_UNIX_NS};
use crate::net::FaultState;
use crate::report::{expectation_failures, final_state, write_header};
use crate::scenario::{Scenario, Step, Storage};
use crate::trace::{Line, list, text, word};
use host::{HostCtl, host_main};
use igor::node::{NodeConfig, NodeEvent};
use igor::units::{AgentId, NodeId};
use schema::{AgentBytes, load_agents, node_config};
use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::mpsc;
use world::{Sched, World};

/// Entries of the per-thread signature memo with [`Stepping::Skip`]: about
/// 40,000 signatures are made in a simulated hour of the bench world (5
/// nodes, 10 agents), and the end-of-run history check re-verifies every
/// checkpoint; ~130 bytes an entry, ~17 MiB at most per thread.
pub const VERIFY_MEMO_ENTRIES: usize = 1 << 17;

/// How the runner moves turmoil through simulated time, and whether it
/// memoizes signature checks. Both give the same trace for the same
/// scenario and seed (tests/stepping.rs and tests/memo.rs hold them to it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stepping {
    /// One turmoil step of `step_ms` at a time, always, and every signature
    /// verified in full (the reference).
    Fixed,
    /// Stretches in which nothing can happen are crossed in one turmoil
    /// step: no message is in flight, the runner has just done nothing to a
    /// host, and no node's timer (its driver's deadline, the network twin's
    /// reordering delays), timeline action, liveness alarm or phase end is
    /// due before the stretch ends. Scenarios with an adversary step fixed
    /// (its wire tricks keep timers the runner cannot see). Signatures this
    /// thread made or already checked are answered from
    /// [`igor::identity::memo`] (a pure cache: same answers, no scalar
    /// multiplication), adversary scenarios included.
    #[default]
    Skip,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("scenario {scenario}: agent {agent}: cannot read {path}: {reason}")]
    AgentFile { scenario: String, agent: String, path: String, reason: String },
    #[error("simulation failed: {0}")]
    Sim(String),
}

/// Run one scenario with `seed` (or its own) and return the report.
pub fn run(scenario: &Scenario, base: &Path, seed: Option<u64>) -> Result<RunReport, RunError> {
    run_stepping(scenario, base, seed, Stepping::default())
}

/// [`run`] with the given [`Stepping`] (the benchmark and the equivalence
/// test compare both).
pub fn run_stepping(
    scenario: &Scenario,
    base: &Path,
    seed: Option<u64>,
    stepping: Stepping,
) -> Result<RunReport, RunError> {
    run_inner(scenario, base, seed, &|_| {}, stepping)
}

/// [`run`] with `tweak` applied to every node's configuration *after* it
/// was built and validated: for simulator tests that need a node no
/// scenario may describe (a configuration validation refuses, to show the
/// watchdog stopping a node that spins). Never used by the CLI.
pub fn run_configured(
    scenario: &Scenario,
    base: &Path,
    seed: Option<u64>,
    tweak: &dyn Fn(&mut NodeConfig),
) -> Result<RunReport, RunError> {
    run_inner(scenario, base, seed, tweak, Stepping::default())
}

fn run_inner(
    scenario: &Scenario,
    base: &Path,
    seed: Option<u64>,
    tweak: &dyn Fn(&mut NodeConfig),
    stepping: Stepping,
) -> Result<RunReport, RunError> {
    let seed = seed.unwrap_or(scenario.seed);
    igor::identity::memo::set_capacity(if stepping == Stepping::Skip { VERIFY_MEMO_ENTRIES } else { 0 });
    let agents = load_agents(scenario, base)?;
    let duration_ns = scenario.duration_s.saturating_mul(1_000_000_000);
    let liveness_ns = scenario.expect.liveness.as_ref().map(|l| l.within_ms.saturating_mul(1_000_000));
    let may_recover = scenario.expect.liveness.as_ref().is_none_or(|l| l.recovery);
    let sim_s = scenario.duration_s + liveness_ns.unwrap_or(0) / 1_000_000_000 + 60;
    let sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_nanos(SIM_EPOCH_UNIX_NS as u64))
        .tick_duration(Duration::from_millis(scenario.step_ms))
        .simulation_duration(Duration::from_secs(sim_s))
        .min_message_latency(Duration::from_millis(scenario.network.latency_ms.0))
        .max_message_latency(Duration::from_millis(scenario.network.latency_ms.1))
        .fail_rate(scenario.network.loss)
        .build();
    let (events_tx, events_rx) = mpsc::unbounded_channel::<NodeEvent>();
    let mut w = World::new(sim, seed, scenario, events_rx);
    // An adversary's wire tricks sleep in tokio where the runner cannot see.
    w.stepping = if scenario.nodes.iter().any(|n| n.adversary.is_some()) { Stepping::Fixed } else { stepping };
    for spec in &scenario.nodes {
        if let Some(m) = &spec.adversary {
            w.coverage.set_behaviour(&spec.name, m.name());
        }
    }
    // Hosts are registered in the scenario's order: each registration draws
    // from turmoil's world RNG.
    for spec in &scenario.nodes {
        let mut cfg = node_config(spec, &scenario.nodes)?;
        tweak(&mut cfg);
        let ctl = Rc::new(HostCtl {
            name: cfg.node_id.clone(),
            clock: Rc::new(Cell::new(ClockFault::default())),
            faults: Rc::new(RefCell::new(FaultState::new(seed, &spec.name))),
            control: RefCell::new(None),
            boots: Cell::new(0),
            damage: RefCell::new(Storage::Intact),
            corrupted: Cell::new(false),
            stuck: RefCell::new(None),
            collect: Cell::new(false),
            histories: RefCell::new(None),
            disk: Rc::default(),
            adversary: spec.adversary.clone(),
            wake_ns: Cell::new(0),
        });
        w.ctls.insert(spec.name.clone(), ctl.clone());
        let deploys: Vec<AgentBytes> = agents.iter().filter(|a| a.node == spec.name).cloned().collect();
        let events = events_tx.clone();
        w.sim.host(spec.name.as_str(), move || {
            host_main(ctl.clone(), cfg.clone(), seed, deploys.clone(), events.clone())
        });
    }
    write_header(&mut w.trace, scenario, seed);
    let mut timeline: Vec<Step> = scenario.timeline.clone();
    timeline.sort_by_key(|s| s.at_ms); // stable: same-time actions keep file order
    for step in timeline {
        w.schedule(step.at_ms.saturating_mul(1_000_000), Sched::Act(step.action));
    }

    // Safety: the fault window is the scenario's duration.
    let mut violation = w.run_until(duration_ns, &agents, |_| false)?.err();
    let nodes: Vec<NodeId> = w.ctls.values().map(|c| c.name.clone()).collect();
    let ids: Vec<AgentId> = agents.iter().map(|a| a.id.clone()).collect();
    let (authority, highest_ticks) = final_state(&w.checker, &nodes, &ids);
    // Then liveness: heal everything and ask every agent to tick again.
    if violation.is_none()
        && let Some(within) = liveness_ns
    {
        violation = w.liveness(within, may_recover, &agents)?.err();
    }
    // The end: every live node's history must verify (EI-3 at rest).
    if violation.is_none() {
        violation = w.verify_histories(&agents)?.err();
    }
    if let Some(v) = &violation {
        let line = Line::new("violation")
            .with("agent", word(v.agent.as_str()))
            .with("invariant", word(v.invariant))
            .with("message", text(&v.message))
            .with("nodes", list(v.nodes.iter().map(|n| word(n.as_str()))));
        w.trace.sim(v.at_ns, line);
    }
    let mut report = RunReport {
        scenario: scenario.name.clone(),
        seed,
        expect: scenario.expect.clone(),
        violation,
        failures: Vec::new(),
        trace: w.trace,
        events: w.events,
        sim_ns: w.now_ns,
        authority,
        highest_ticks,
        coverage: w.coverage,
        steps: w.steps,
    };
    report.failures = expectation_failures(&report);
    Ok(report)
}
