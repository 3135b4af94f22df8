//! The scenario runner: builds a turmoil world from a scenario (seed, epoch,
//! step and duration always explicit), runs one unmodified `igor` node per
//! host over the simulated twins, applies the timeline, feeds every node
//! event to the trace and the checker, and compares the result with the
//! scenario's `expect`. A violation stops the run at once.

use crate::checker::{Checker, Obs, State, Violation};
use crate::clock::{SIM_EPOCH_UNIX_NS, SimClock};
use crate::disk::SimDisk;
use crate::net::{FaultState, LinkFaults, SimNet};
use crate::scenario::{Action, Expect, NodeSpec, Scenario, Storage, Verdict};
use crate::trace::{Trace, fmt_time};
use igor::authority::AuthorityState;
use igor::checkpoint::Hash32;
use igor::driver::{self, Control};
use igor::env::Disk;
use igor::env::mem::SeededEntropy;
use igor::lineage;
use igor::node::{Command, Event, Node, NodeConfig, NodeEvent};
use igor::sandbox::{Sandbox, SandboxConfig};
use igor::units::{AgentId, Microcents, NodeId};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Lines of trace printed before a violation.
pub const CONTEXT_LINES: usize = 15;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("agent {agent}: cannot read {path}: {reason}")]
    AgentFile { agent: String, path: String, reason: String },
    #[error("simulation failed: {0}")]
    Sim(String),
}

/// An agent's bytes, read before the simulation starts.
#[derive(Clone)]
struct AgentBytes {
    id: AgentId,
    wasm: Vec<u8>,
    manifest: Vec<u8>,
    budget: Microcents,
    node: String,
}

/// What the runner shares with one host across its restarts.
struct HostCtl {
    name: NodeId,
    skew_ns: Rc<Cell<i64>>,
    faults: Rc<RefCell<FaultState>>,
    control: RefCell<Option<mpsc::UnboundedSender<Control>>>,
    boots: Cell<u32>,
    damage: RefCell<Storage>,
}

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

fn load_agents(scenario: &Scenario, base: &Path) -> Result<Vec<AgentBytes>, RunError> {
    #[allow(clippy::disallowed_methods)] // the runner is a backend: it reads the scenario's files
    let read = |agent: &str, rel: &str| {
        let path = base.join(rel);
        std::fs::read(&path).map_err(|e| RunError::AgentFile {
            agent: agent.to_string(),
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    };
    scenario
        .agents
        .iter()
        .map(|a| {
            Ok(AgentBytes {
                // Validated by Scenario::validate.
                id: AgentId::new(a.name.clone()).map_err(|e| RunError::Sim(e.to_string()))?,
                // Agents travel as wasm binaries: WAT is compiled to binary
                // once here, so every node hashes the same bytes.
                wasm: igor::sandbox::wasm_binary(&read(&a.name, &a.wasm)?).map_err(|e| RunError::AgentFile {
                    agent: a.name.clone(),
                    path: base.join(&a.wasm).display().to_string(),
                    reason: e.to_string(),
                })?,
                manifest: match &a.manifest {
                    Some(m) => read(&a.name, m)?,
                    // No manifest file: an agent with no capabilities.
                    None => br#"{"capabilities": {}}"#.to_vec(),
                },
                budget: Microcents(a.budget_microcents),
                node: a.node.clone(),
            })
        })
        .collect()
}

fn node_config(spec: &NodeSpec, all: &[NodeSpec]) -> Result<NodeConfig, RunError> {
    let id = NodeId::new(spec.name.clone()).map_err(|e| RunError::Sim(e.to_string()))?;
    let mut cfg = NodeConfig::new(id);
    cfg.price_per_second = Microcents(spec.price_microcents);
    let ms = |v: u64| v.saturating_mul(1_000_000);
    if let Some(d) = spec.lease_duration_ms {
        cfg.lease.duration_ns = ms(d);
        cfg.lease.renew_before_ns = ms(d) / 2;
    }
    if let Some(g) = spec.lease_grace_ms {
        cfg.lease.grace_ns = ms(g);
    }
    if let Some(t) = spec.tick_interval_ms {
        cfg.tick_idle_ns = ms(t);
    }
    if let Some(c) = spec.checkpoint_interval_ms {
        cfg.checkpoint_interval_ns = ms(c);
    }
    cfg.unsafe_self_recover_on_lease_expiry = spec.unsafe_self_recover;
    cfg.peers = all.iter().filter(|n| n.name != spec.name).filter_map(|n| NodeId::new(n.name.clone()).ok()).collect();
    Ok(cfg)
}

/// Sandbox of a simulated node: on-demand allocation (no pooling: many
/// nodes share one process), no wall-clock net (it is not deterministic).
fn sandbox() -> Result<Sandbox, RunError> {
    let cfg = SandboxConfig { pooling_instances: None, ..SandboxConfig::default() };
    Sandbox::new(cfg).map_err(|e| RunError::Sim(format!("sandbox: {e}")))
}

fn apply_damage(disk: &SimDisk, damage: &Storage) {
    let newest = |agent: &str| -> Vec<String> {
        let Ok(id) = AgentId::new(agent) else { return Vec::new() };
        let dir = lineage::history_dir(&id);
        disk.list(&dir).unwrap_or_default().into_iter().rev().map(|n| format!("{dir}/{n}")).collect()
    };
    match damage {
        Storage::Intact => {}
        Storage::Wipe => disk.wipe(),
        Storage::RemoveNewest { agent, count } => {
            for p in newest(agent).into_iter().take(*count) {
                let _ = disk.remove(&p);
            }
        }
        Storage::CorruptNewest { agent } => {
            if let Some(p) = newest(agent).first() {
                let _ = disk.flip_bit(p, 40);
            }
        }
    }
}

/// The software of one simulated node: boots the same `Node` that `igord`
/// runs, on the turmoil twins, and drives it with the shared driver.
async fn host_main(
    ctl: Rc<HostCtl>,
    cfg: NodeConfig,
    seed: u64,
    deploys: Vec<AgentBytes>,
    events: mpsc::UnboundedSender<NodeEvent>,
) -> turmoil::Result {
    let boot = ctl.boots.get();
    ctl.boots.set(boot + 1);
    let disk = SimDisk::default();
    let damage = std::mem::take(&mut *ctl.damage.borrow_mut());
    apply_damage(&disk, &damage);
    let net = SimNet::bind(ctl.faults.clone()).await?;
    let entropy = SeededEntropy::derived(seed, &format!("node/{}/boot/{boot}", ctl.name));
    let clock = SimClock::new(ctl.skew_ns.clone());
    let sandbox = sandbox().map_err(|e| e.to_string())?;
    let mut node = Node::open(cfg, disk, clock, entropy, sandbox);
    let (tx, mut rx) = mpsc::unbounded_channel();
    if boot == 0 {
        for a in deploys {
            let _ = tx.send(Control::Deploy { agent: a.id, wasm: a.wasm, manifest: a.manifest, budget: a.budget });
        }
    }
    *ctl.control.borrow_mut() = Some(tx);
    driver::run(&mut node, &net, &mut rx, &events).await;
    Ok(())
}

fn state_of(s: AuthorityState) -> State {
    match s {
        AuthorityState::ActiveOwner => State::ActiveOwner,
        AuthorityState::HandoffInitiated => State::HandoffInitiated,
        AuthorityState::HandoffPending => State::HandoffPending,
        AuthorityState::Retired => State::Retired,
        AuthorityState::RecoveryRequired => State::RecoveryRequired,
    }
}

/// What the checker needs from one node event (most events are trace-only).
fn observation(e: &Event) -> Option<Obs> {
    Some(match e {
        Event::NodeStarted { .. } => Obs::Booted,
        Event::AgentDeployed { agent, budget, .. } => Obs::Deployed { agent: agent.clone(), budget: budget.0 },
        Event::AgentLoaded { agent, state, .. } => {
            Obs::Authority { agent: agent.clone(), from: None, to: state_of(*state) }
        }
        Event::TickStarted { agent, tick, base, .. } => {
            Obs::TickStarted { agent: agent.clone(), tick: tick.0, base: *base }
        }
        Event::TickFinished { agent, tick, epoch, cost, paid, side_effects, side_effects_allowed, .. } => Obs::Ticked {
            agent: agent.clone(),
            tick: tick.0,
            epoch: *epoch,
            cost: cost.0,
            paid: paid.0,
            side_effects: if *side_effects_allowed { 0 } else { *side_effects },
        },
        Event::CheckpointCommitted { agent, tick, hash, prev_hash, budget, charged, paid, .. } => Obs::Committed {
            agent: agent.clone(),
            tick: tick.0,
            hash: *hash,
            prev: *prev_hash,
            budget: budget.0,
            charged: Some(charged.0.saturating_add(paid.0)),
        },
        Event::CheckpointAdopted { agent, tick, hash, prev_hash, budget, .. } => Obs::Committed {
            agent: agent.clone(),
            tick: tick.0,
            hash: *hash,
            prev: *prev_hash,
            budget: budget.0,
            charged: None,
        },
        Event::AuthorityChanged { agent, from, to, .. } => {
            Obs::Authority { agent: agent.clone(), from: from.map(state_of), to: state_of(*to) }
        }
        Event::DivergenceDetected { agent, .. } => Obs::Divergence { agent: agent.clone() },
        _ => return None,
    })
}

/// Run one scenario with `seed` (or its own) and return the report.
pub fn run(scenario: &Scenario, base: &Path, seed: Option<u64>) -> Result<RunReport, RunError> {
    let seed = seed.unwrap_or(scenario.seed);
    let agents = load_agents(scenario, base)?;
    let duration_ns = scenario.duration_s.saturating_mul(1_000_000_000);
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_nanos(SIM_EPOCH_UNIX_NS as u64))
        .tick_duration(Duration::from_millis(scenario.step_ms))
        .simulation_duration(Duration::from_secs(scenario.duration_s + 60))
        .min_message_latency(Duration::from_millis(scenario.network.latency_ms.0))
        .max_message_latency(Duration::from_millis(scenario.network.latency_ms.1))
        .fail_rate(scenario.network.loss)
        .build();
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<NodeEvent>();
    let mut ctls: BTreeMap<String, Rc<HostCtl>> = BTreeMap::new();
    // Hosts are registered in the scenario's order: each registration draws
    // from turmoil's world RNG.
    for spec in &scenario.nodes {
        let cfg = node_config(spec, &scenario.nodes)?;
        let ctl = Rc::new(HostCtl {
            name: cfg.node_id.clone(),
            skew_ns: Rc::new(Cell::new(0)),
            faults: Rc::new(RefCell::new(FaultState::new(seed, &spec.name))),
            control: RefCell::new(None),
            boots: Cell::new(0),
            damage: RefCell::new(Storage::Intact),
        });
        ctls.insert(spec.name.clone(), ctl.clone());
        let deploys: Vec<AgentBytes> = agents.iter().filter(|a| a.node == spec.name).cloned().collect();
        let events = events_tx.clone();
        sim.host(spec.name.as_str(), move || {
            host_main(ctl.clone(), cfg.clone(), seed, deploys.clone(), events.clone())
        });
    }

    let mut trace = Trace::new();
    trace.note(format!("# scenario {} seed {seed}", scenario.name));
    trace.note(format!(
        "# igor-sim {} duration {}s step {}ms",
        env!("CARGO_PKG_VERSION"),
        scenario.duration_s,
        scenario.step_ms
    ));
    let mut checker = Checker::new();
    let mut timeline: Vec<_> = scenario.timeline.iter().collect();
    timeline.sort_by_key(|s| s.at_ms); // stable: same-time actions keep file order
    let mut next_action = 0;
    let mut heads: Heads = BTreeMap::new();
    let mut violation = None;
    let mut events = 0u64;
    let mut now_ns = 0u64;
    'run: while now_ns <= duration_ns {
        while let Some(step) = timeline.get(next_action) {
            if step.at_ms.saturating_mul(1_000_000) > now_ns {
                break;
            }
            next_action += 1;
            trace.note(format!("{} sim {}", fmt_time(now_ns), describe(&step.action)));
            let obs = apply(&mut sim, &ctls, &heads, &step.action, &agents);
            for (node, o) in obs {
                if let Err(v) = checker.observe(now_ns, &node, &o) {
                    violation = Some(v);
                    break 'run;
                }
            }
        }
        sim.step().map_err(|e| RunError::Sim(e.to_string()))?;
        now_ns = u64::try_from(sim.elapsed().as_nanos()).unwrap_or(u64::MAX);
        while let Ok(e) = events_rx.try_recv() {
            events += 1;
            trace.event(e.at_ns, e.node.as_str(), &e.event.to_string());
            remember_head(&mut heads, &e);
            if let Some(o) = observation(&e.event)
                && let Err(v) = checker.observe(e.at_ns, &e.node, &o)
            {
                violation = Some(v);
                break 'run;
            }
        }
    }
    if let Some(v) = &violation {
        trace.note(format!("{} VIOLATION {v}", fmt_time(v.at_ns)));
    }
    let mut authority = BTreeMap::new();
    for spec in &scenario.nodes {
        for a in &agents {
            let node = NodeId::new(spec.name.clone()).map_err(|e| RunError::Sim(e.to_string()))?;
            let state = checker.authority(&node, &a.id).map(State::name).unwrap_or("ABSENT");
            authority.insert((spec.name.clone(), a.id.to_string()), state.to_string());
        }
    }
    let highest_ticks = agents.iter().map(|a| (a.id.to_string(), checker.highest_tick(&a.id))).collect();
    let mut report = RunReport {
        scenario: scenario.name.clone(),
        seed,
        expect: scenario.expect.clone(),
        violation,
        failures: Vec::new(),
        trace,
        events,
        sim_ns: now_ns,
        authority,
        highest_ticks,
    };
    report.failures = expectation_failures(&report);
    Ok(report)
}

/// Checkpoints seen per (node, agent): tick → hash, to resolve recovery anchors.
type Heads = BTreeMap<(String, String), BTreeMap<u64, Hash32>>;

fn remember_head(heads: &mut Heads, e: &NodeEvent) {
    let (agent, tick, hash) = match &e.event {
        Event::CheckpointCommitted { agent, tick, hash, .. } | Event::CheckpointAdopted { agent, tick, hash, .. } => {
            (agent, tick, *hash)
        }
        Event::AgentLoaded { agent, head_tick, head_hash, .. } => (agent, head_tick, *head_hash),
        _ => return,
    };
    heads.entry((e.node.to_string(), agent.to_string())).or_default().insert(tick.0, hash);
}

fn expectation_failures(r: &RunReport) -> Vec<String> {
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

fn describe(a: &Action) -> String {
    // The Debug form of a scenario action is stable and readable.
    format!("{a:?}")
}

/// Apply one timeline action; returns observations for the checker.
fn apply(
    sim: &mut turmoil::Sim<'_>,
    ctls: &BTreeMap<String, Rc<HostCtl>>,
    heads: &Heads,
    action: &Action,
    agents: &[AgentBytes],
) -> Vec<(NodeId, Obs)> {
    let ctl = |n: &str| ctls.get(n).expect("scenario validated: node names resolve");
    let send = |n: &str, cmd: Command| {
        if let Some(tx) = ctl(n).control.borrow().as_ref() {
            let _ = tx.send(Control::Command(cmd));
        }
    };
    let agent_id = |a: &str| AgentId::new(a).expect("scenario validated: agent names are ids");
    let mut obs = Vec::new();
    match action {
        Action::Migrate { agent, from, to } => {
            let to = ctl(to).name.clone();
            send(from, Command::Migrate { agent: agent_id(agent), to });
        }
        Action::Crash { node } => {
            sim.crash(node.as_str());
            *ctl(node).control.borrow_mut() = None;
            obs.push((ctl(node).name.clone(), Obs::Crashed));
        }
        Action::Restart { node, storage } => {
            if matches!(storage, Storage::Wipe) {
                for a in agents {
                    obs.push((ctl(node).name.clone(), Obs::Forgot { agent: a.id.clone() }));
                }
            }
            *ctl(node).damage.borrow_mut() = storage.clone();
            sim.bounce(node.as_str());
        }
        Action::Partition { a, b } => sim.partition(a.as_str(), b.as_str()),
        Action::PartitionOneway { from, to } => sim.partition_oneway(from.as_str(), to.as_str()),
        Action::Heal { a, b } => sim.repair(a.as_str(), b.as_str()),
        Action::HealOneway { from, to } => sim.repair_oneway(from.as_str(), to.as_str()),
        Action::Latency { a, b, ms } => sim.set_link_latency(a.as_str(), b.as_str(), Duration::from_millis(*ms)),
        Action::Duplicate { node, probability } => ctl(node).faults.borrow_mut().faults.duplicate = *probability,
        Action::Reorder { node, max_delay_ms } => {
            ctl(node).faults.borrow_mut().faults.extra_delay_ms = (0, *max_delay_ms)
        }
        Action::ClearFaults { node } => ctl(node).faults.borrow_mut().faults = LinkFaults::default(),
        Action::Skew { node, ms } => {
            let c = &ctl(node).skew_ns;
            c.set(c.get().saturating_add(ms.saturating_mul(1_000_000)));
        }
        Action::Recover { agent, node, anchor_tick } => {
            let seen = heads.get(&(node.clone(), agent.clone()));
            let anchor = match anchor_tick {
                Some(t) => seen.and_then(|m| m.get(t).copied()),
                None => seen.and_then(|m| m.values().next_back().copied()),
            };
            // An unknown anchor is passed as zeros: the node refuses it, and
            // the refusal is in the trace.
            let anchor = anchor.unwrap_or(Hash32::ZERO);
            send(node, Command::Recover { agent: agent_id(agent), anchor });
        }
    }
    obs
}
