//! The scenario runner: builds a turmoil world from a scenario (seed, epoch,
//! step and duration always explicit), runs one unmodified `igor` node per
//! host over the simulated twins, applies the timeline, feeds every node
//! event to the trace and the checker, and compares the result with the
//! scenario's `expect`. A violation stops the run at once.

use crate::byzantine::{ByzantineConduct, Interposer, Misbehaviour};
use crate::checker::{CHAIN, Checker, Obs, State, Violation};
use crate::clock::{ClockFault, SIM_EPOCH_UNIX_NS, SimClock};
use crate::coverage::Coverage;
use crate::disk::{DiskFaultKind, DiskFaults, SimDisk};
use crate::net::{FaultState, LinkFaults, NetCounters, SimNet};
use crate::scenario::{Action, Boundary, BuggifyFault, Expect, NodeSpec, Scenario, Step, Storage, Verdict};
use crate::trace::{Trace, fmt_time};
use crate::watchdog::{STUCK, Stuck, Watchdog};
use igor::authority::{AuthorityState, Reason};
use igor::checkpoint::Hash32;
use igor::driver::{self, Control};
use igor::env::mem::SeededEntropy;
use igor::env::{Disk, derive_seed};
use igor::lineage;
use igor::node::{Command, Event, Node, NodeConfig, NodeEvent, store};
use igor::sandbox::{Sandbox, SandboxConfig};
use igor::units::{AgentId, Microcents, NodeId, TickNumber};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::Digest;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Lines of trace printed before a violation.
pub const CONTEXT_LINES: usize = 15;

/// Entries of the per-thread signature memo with [`Stepping::Skip`]: about
/// 40,000 signatures are made in a simulated hour of the bench world (5
/// nodes, 10 agents), and the end-of-run history check re-verifies every
/// checkpoint; ~130 bytes an entry, ~17 MiB at most per thread.
pub const VERIFY_MEMO_ENTRIES: usize = 1 << 17;

/// How the runner moves turmoil through simulated time, and whether it
/// memoizes signature checks. Both give the same trace for the same
/// scenario and seed (tests/stepping.rs holds them to it).
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
    clock: Rc<Cell<ClockFault>>,
    faults: Rc<RefCell<FaultState>>,
    control: RefCell<Option<mpsc::UnboundedSender<Control>>>,
    boots: Cell<u32>,
    damage: RefCell<Storage>,
    /// The simulator flipped bits in this node's history (CorruptNewest):
    /// unreadable files there are the fault, not a broken chain.
    corrupted: Cell<bool>,
    /// Set by the watchdog inside the host when the node spun (STUCK).
    stuck: RefCell<Option<Stuck>>,
    /// End of run: after the driver stops, read the history archive.
    collect: Cell<bool>,
    /// The history archive read at the end: agent → (file, bytes).
    histories: RefCell<Option<Histories>>,
    /// The node's disk write faults (`DiskFault`), shared with every boot.
    disk: Rc<DiskFaults>,
    /// SCENARIOS ONLY: the node's attack (its conduct and its interposer).
    adversary: Option<Misbehaviour>,
    /// When the node's driver wakes by itself next (simulated ns, what it
    /// last reported before waiting); 0 = not known yet (never skip).
    wake_ns: Cell<u64>,
}

/// Every agent's history files on one node's disk: agent → (path, bytes).
/// Per agent directory: its archived checkpoints and its recovery records,
/// each as (path, bytes).
type Histories = BTreeMap<String, (Vec<(String, Vec<u8>)>, Vec<(String, Vec<u8>)>)>;

/// Steps the runner waits at the end of a run for the live hosts to stop
/// and hand over their history archives (each needs one step).
const VERIFY_STEPS: u32 = 100;

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

fn load_agents(scenario: &Scenario, base: &Path) -> Result<Vec<AgentBytes>, RunError> {
    #[allow(clippy::disallowed_methods)] // the runner is a backend: it reads the scenario's files
    let read = |agent: &str, rel: &str| {
        let path = base.join(rel);
        std::fs::read(&path).map_err(|e| RunError::AgentFile {
            scenario: scenario.name.clone(),
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
                    scenario: scenario.name.clone(),
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
    crate::adversary::configure(&mut cfg, spec, all);
    cfg.peers = all.iter().filter(|n| n.name != spec.name).filter_map(|n| NodeId::new(n.name.clone()).ok()).collect();
    cfg.validate().map_err(|e| RunError::Sim(format!("node {}: {e}", spec.name)))?;
    Ok(cfg)
}

/// Sandbox of a simulated node: on-demand allocation (no pooling: many
/// nodes share one process), no wall-clock net (it is not deterministic),
/// scripted http (`ScriptedHttp::simulated_world`).
fn sandbox() -> Result<Sandbox, RunError> {
    // http answers from a fixed script (deterministic, the same on every node).
    let http = std::sync::Arc::new(igor::http::ScriptedHttp::simulated_world());
    let cfg = SandboxConfig { pooling_instances: None, http, ..SandboxConfig::default() };
    Sandbox::new(cfg).map_err(|e| RunError::Sim(format!("sandbox: {e}")))
}

fn apply_damage(disk: &SimDisk, damage: &Storage) {
    // (path, recoverable) of an agent's history checkpoints, newest first.
    // Recoverable: its kv snapshot is still on disk, so a recovery could
    // resume from it (older ones are pruned once superseded).
    let newest = |agent: &str| -> Vec<(String, bool)> {
        let Ok(id) = AgentId::new(agent) else { return Vec::new() };
        let dir = lineage::history_dir(&id);
        let kv: BTreeSet<String> = disk.list(&store::kv_dir(&id)).unwrap_or_default().into_iter().collect();
        disk.list(&dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.ends_with(lineage::CHECKPOINT_EXT))
            .rev()
            .map(|n| {
                let tick = n.split('.').next().and_then(|t| t.parse::<u64>().ok());
                let ok = tick.is_some_and(|t| {
                    let p = store::kv_path(&id, TickNumber(t));
                    p.rsplit('/').next().is_some_and(|f| kv.contains(f))
                });
                (format!("{dir}/{n}"), ok)
            })
            .collect()
    };
    // Partial damage is a fault to recover from, not data loss (that is
    // `Wipe`): it stops short of the oldest checkpoint a recovery could
    // still resume from.
    let spare = |all: &[(String, bool)]| all.iter().rposition(|(_, ok)| *ok).unwrap_or(0);
    match damage {
        Storage::Intact => {}
        Storage::Wipe => disk.wipe(),
        Storage::RemoveNewest { agent, count } => {
            let all = newest(agent);
            for (p, _) in all.iter().take((*count).min(spare(&all))) {
                let _ = disk.remove(p);
            }
        }
        Storage::CorruptNewest { agent } => {
            let all = newest(agent);
            if spare(&all) > 0 {
                let _ = disk.flip_bit(&all[0].0, 40);
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
    ctl.wake_ns.set(0);
    let disk = SimDisk::with_faults(ctl.disk.clone());
    let damage = std::mem::take(&mut *ctl.damage.borrow_mut());
    if matches!(damage, Storage::CorruptNewest { .. }) {
        ctl.corrupted.set(true);
    }
    // The simulator's own damage bypasses the node's write faults.
    apply_damage(&SimDisk::default(), &damage);
    // The watchdog sits between the driver and the runner: a node that
    // spins never lets the step end, so only code inside the host can stop it.
    let (node_tx, mut node_rx) = mpsc::unbounded_channel::<NodeEvent>();
    let clock = SimClock::new(ctl.clock.clone());
    let net = SimNet::bind(ctl.faults.clone()).await?;
    let adversary = ctl.adversary.as_ref();
    let net = Interposer::new(net, adversary, &cfg, clock.clone(), node_tx.clone(), seed, u64::from(boot));
    let entropy = SeededEntropy::derived(seed, &format!("node/{}/boot/{boot}", ctl.name));
    let sandbox = sandbox().map_err(|e| e.to_string())?;
    let mut node = Node::open(cfg, disk.clone(), clock, entropy, sandbox);
    if let Some(conduct) = adversary.and_then(ByzantineConduct::new) {
        node.set_conduct(Box::new(conduct));
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    if boot == 0 {
        for a in deploys {
            let key = crate::scenario::agent_key(&a.id).map(Box::new);
            let _ = tx.send(Control::Deploy { agent: a.id, key, wasm: a.wasm, manifest: a.manifest, budget: a.budget });
        }
    }
    *ctl.control.borrow_mut() = Some(tx);
    let mut watchdog = Watchdog::new();
    let stuck = {
        let waits = |at_ns: u64| ctl.wake_ns.set(at_ns);
        let drive = driver::run_observed(&mut node, &net, &mut rx, &node_tx, &waits);
        let forward = async {
            while let Some(e) = node_rx.recv().await {
                let stuck = watchdog.observe(&e);
                let _ = events.send(e);
                if stuck.is_some() {
                    return stuck;
                }
            }
            None
        };
        tokio::pin!(drive, forward);
        tokio::select! {
            biased;
            s = &mut forward => s,
            () = &mut drive => None,
        }
    };
    // The driver is gone: no timer of its own any more.
    ctl.wake_ns.set(u64::MAX);
    let stuck = stuck.or_else(|| {
        // The driver returned: forward what it emitted last.
        while let Ok(e) = node_rx.try_recv() {
            let stuck = watchdog.observe(&e);
            let _ = events.send(e);
            if stuck.is_some() {
                return stuck;
            }
        }
        None
    });
    if let Some(s) = stuck {
        // Stop the host's software: the step can end, the runner reports.
        *ctl.stuck.borrow_mut() = Some(s);
        return Ok(());
    }
    if ctl.collect.get() {
        *ctl.histories.borrow_mut() = Some(read_histories(&disk));
    }
    Ok(())
}

/// Every file under `history/` on `disk`, per agent directory.
fn read_histories(disk: &SimDisk) -> Histories {
    let mut out = Histories::new();
    for agent in disk.list("history").unwrap_or_default() {
        let dir = format!("history/{agent}");
        let files = disk.list(&dir).unwrap_or_default();
        let read = |ext: &str| -> Vec<(String, Vec<u8>)> {
            files
                .iter()
                .filter(|f| f.ends_with(ext))
                .filter_map(|f| {
                    let path = format!("{dir}/{f}");
                    disk.read(&path).ok().map(|b| (path, b))
                })
                .collect()
        };
        out.insert(agent, (read(lineage::CHECKPOINT_EXT), read(lineage::RECOVERY_EXT)));
    }
    out
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
        Event::AgentLoaded { agent, state, epoch, head_tick, head_hash, .. } => Obs::Loaded {
            agent: agent.clone(),
            state: state_of(*state),
            epoch: *epoch,
            head_tick: head_tick.0,
            head: *head_hash,
        },
        Event::TickStarted { agent, tick, epoch, budget, base } => {
            Obs::TickStarted { agent: agent.clone(), tick: tick.0, epoch: *epoch, budget: budget.0, base: *base }
        }
        Event::TickFinished { agent, tick, epoch, cost, paid, side_effects, side_effects_allowed, outcome, .. } => {
            Obs::Ticked {
                agent: agent.clone(),
                tick: tick.0,
                epoch: *epoch,
                cost: cost.0,
                paid: paid.0,
                side_effects: if *side_effects_allowed { 0 } else { *side_effects },
                // The node prints the executor's outcome with `{:?}`.
                exhausted: outcome == "BudgetExhausted",
            }
        }
        Event::CheckpointCommitted { agent, tick, hash, prev_hash, budget, charged, paid, handoff, .. } => {
            Obs::Committed {
                agent: agent.clone(),
                tick: tick.0,
                hash: *hash,
                prev: *prev_hash,
                budget: budget.0,
                charged: Some(charged.0.saturating_add(paid.0)),
                handoff: *handoff,
                source: None,
            }
        }
        Event::CheckpointAdopted { agent, from, tick, hash, prev_hash, budget, .. } => Obs::Committed {
            agent: agent.clone(),
            tick: tick.0,
            hash: *hash,
            prev: *prev_hash,
            budget: budget.0,
            charged: None,
            handoff: false,
            source: Some(from.clone()),
        },
        Event::AuthorityChanged { agent, from, to, epoch, reason } => Obs::Authority {
            agent: agent.clone(),
            from: from.map(state_of),
            to: state_of(*to),
            epoch: *epoch,
            reason: reason.clone(),
        },
        Event::DivergenceDetected { agent, .. } => Obs::Divergence { agent: agent.clone() },
        Event::Recovered { agent, anchor, epoch, .. } => {
            Obs::Recovered { agent: agent.clone(), anchor: *anchor, epoch: *epoch }
        }
        // The node halts with reason "budget exhausted" (src/node/mod.rs).
        Event::AgentHalted { agent, reason } => {
            Obs::Halted { agent: agent.clone(), budget: reason.starts_with("budget") }
        }
        Event::FaultObserved { agent: Some(agent), .. } => Obs::Fault { agent: agent.clone() },
        Event::LocalCopyDeleted { agent } => Obs::CopyDeleted { agent: agent.clone() },
        _ => return None,
    })
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
            w.coverage.set_behaviour(&spec.name, crate::coverage::behaviour_name(&format!("{m:?}")));
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
    let (authority, highest_ticks) = final_state(&w, scenario, &agents)?;
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
        w.trace.note(format!("{} VIOLATION {v}", fmt_time(v.at_ns)));
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

/// Authority per (node, agent) and highest committed tick per agent, as the
/// checker saw them at the end of the fault window.
type FinalState = (BTreeMap<(String, String), String>, BTreeMap<String, Option<u64>>);

fn final_state(w: &World<'_>, scenario: &Scenario, agents: &[AgentBytes]) -> Result<FinalState, RunError> {
    let mut authority = BTreeMap::new();
    for spec in &scenario.nodes {
        let node = NodeId::new(spec.name.clone()).map_err(|e| RunError::Sim(e.to_string()))?;
        for a in agents {
            let state = w.checker.authority(&node, &a.id).map(State::name).unwrap_or("ABSENT");
            authority.insert((spec.name.clone(), a.id.to_string()), state.to_string());
        }
    }
    let highest = agents.iter().map(|a| (a.id.to_string(), w.checker.highest_tick(&a.id))).collect();
    Ok((authority, highest))
}

/// Something the runner does at a simulated time: a timeline action, or a
/// step the runner derived from one (a swizzle's holds, a BUGGIFY restart).
#[derive(Clone, Debug)]
enum Sched {
    Act(Action),
    Hold(String),
    Release(String),
    /// A `DiskFault`'s time is up (unless a later one on the node still runs).
    DiskHeal(String),
}

/// After the heal, how long the runner lets restarted nodes reload their
/// agents before it decides that an agent needs the operator.
const SETTLE_NS: u64 = 2_000_000_000;

/// The running simulation and everything the runner tracks about it.
struct World<'a> {
    sim: turmoil::Sim<'a>,
    seed: u64,
    nodes: Vec<String>,
    ctls: BTreeMap<String, Rc<HostCtl>>,
    rx: mpsc::UnboundedReceiver<NodeEvent>,
    trace: Trace,
    checker: Checker,
    coverage: Coverage,
    heads: Heads,
    now_ns: u64,
    events: u64,
    /// Pending actions by (time, order of scheduling).
    scheduled: BTreeMap<(u64, u64), Sched>,
    scheduled_seq: u64,
    /// Nodes crashed and not restarted.
    down: BTreeSet<String>,
    /// Directed links cut by partitions.
    cut: BTreeSet<(String, String)>,
    /// Hold count per node (Pause and Swizzle may overlap).
    held: BTreeMap<String, u32>,
    /// Armed BUGGIFY faults: (node, boundary, fault, duration ns).
    armed: Vec<(String, Boundary, BuggifyFault, u64)>,
    swizzles: u64,
    /// Agents that stopped for good (budget, trap): exempt from liveness.
    halted: BTreeSet<String>,
    /// Agents that finished a tick since the heal.
    ticked_since_heal: Option<BTreeSet<String>>,
    net_seen: BTreeMap<String, NetCounters>,
    /// Keeps Byzantine nodes' own misdeeds out of the checker (A2–A4).
    byzantine: crate::adversary::Filter,
    /// Byzantine nodes (A2–A4, not churn griefers): their own disks hold
    /// their misdeeds, which the end-of-run verify does not judge.
    byzantine_nodes: BTreeSet<String>,
    /// Per (node, agent): checkpoints the node adopted from a package. Each
    /// starts a new segment of its history: the links before it may live
    /// only on the nodes the agent visited in between (a returning agent).
    adopted: BTreeMap<(String, String), BTreeSet<Hash32>>,
    /// (agent, node) → the authority state the node last reported, for the
    /// liveness phase's operator (the checker's view leaves out Byzantine
    /// nodes' records once they misbehave).
    reported: BTreeMap<(String, String), State>,
    /// (agent, node) where an operator recovery was refused: the operator
    /// reads the refusal and tries the next candidate, never this node again.
    recover_refused: BTreeSet<(String, String)>,
    stepping: Stepping,
    /// `step_ms` in ns: the length of one fixed step.
    step_ns: u64,
    /// Turmoil steps taken.
    steps: u64,
    /// The runner acted on the world since the last step (an action, a
    /// hold, a command): the next step must be a plain one, since a host
    /// may have been woken.
    poked: bool,
    /// A simulated time at which the runner itself decides something (the
    /// liveness phase's settle time): no skip crosses it.
    alarm_ns: u64,
}

impl<'a> World<'a> {
    fn new(sim: turmoil::Sim<'a>, seed: u64, scenario: &Scenario, rx: mpsc::UnboundedReceiver<NodeEvent>) -> Self {
        World {
            sim,
            seed,
            nodes: scenario.nodes.iter().map(|n| n.name.clone()).collect(),
            ctls: BTreeMap::new(),
            rx,
            trace: Trace::new(),
            checker: Checker::new(),
            coverage: Coverage::default(),
            heads: BTreeMap::new(),
            now_ns: 0,
            events: 0,
            scheduled: BTreeMap::new(),
            scheduled_seq: 0,
            down: BTreeSet::new(),
            cut: BTreeSet::new(),
            held: BTreeMap::new(),
            armed: Vec::new(),
            swizzles: 0,
            halted: BTreeSet::new(),
            ticked_since_heal: None,
            net_seen: BTreeMap::new(),
            byzantine: crate::adversary::Filter::default(),
            byzantine_nodes: BTreeSet::new(),
            adopted: BTreeMap::new(),
            reported: BTreeMap::new(),
            recover_refused: BTreeSet::new(),
            stepping: Stepping::Fixed,
            step_ns: scenario.step_ms.saturating_mul(1_000_000).max(1),
            steps: 0,
            poked: true,
            alarm_ns: u64::MAX,
        }
    }

    fn schedule(&mut self, at_ns: u64, what: Sched) {
        self.scheduled.insert((at_ns, self.scheduled_seq), what);
        self.scheduled_seq += 1;
    }

    /// Step the simulation until `end_ns` or until `done` says so; the
    /// inner result is the first violation.
    fn run_until(
        &mut self,
        end_ns: u64,
        agents: &[AgentBytes],
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> Result<Result<(), Violation>, RunError> {
        while self.now_ns <= end_ns {
            if let Err(v) = self.apply_due(agents) {
                return Ok(Err(v));
            }
            if done(self) {
                break;
            }
            let n = self.idle_steps(end_ns);
            if let Err(v) = self.step_n(agents, n)? {
                return Ok(Err(v));
            }
        }
        Ok(Ok(()))
    }

    /// How many `step_ms` the next turmoil step may cross (1 = a plain
    /// step): with [`Stepping::Skip`], every step before the earliest
    /// moment anything could happen. Nothing in flight, nothing the runner
    /// just did, and only stepping stops that land strictly before every
    /// timer, action, alarm and the phase end (`end_ns`, inclusive): at
    /// those the plain stepping resumes, exactly where `Fixed` would be.
    fn idle_steps(&self, end_ns: u64) -> u32 {
        if self.stepping == Stepping::Fixed || self.poked || !self.sim.network_idle() {
            return 1;
        }
        let mut horizon = end_ns.saturating_add(1);
        // Once passed, the alarm's condition holds at every later stop.
        if self.alarm_ns > self.now_ns {
            horizon = horizon.min(self.alarm_ns);
        }
        if let Some((&(at, _), _)) = self.scheduled.first_key_value() {
            horizon = horizon.min(at);
        }
        for (name, ctl) in &self.ctls {
            if self.down.contains(name) {
                continue;
            }
            horizon = horizon.min(ctl.wake_ns.get());
            if let Some(t) = ctl.faults.borrow().timers.iter().min() {
                horizon = horizon.min(*t);
            }
        }
        // Whole steps that end strictly before the horizon.
        let steps = horizon.saturating_sub(1).saturating_sub(self.now_ns) / self.step_ns;
        u32::try_from(steps).unwrap_or(u32::MAX).max(1)
    }

    /// One turmoil step, then the events it produced through the checker
    /// and the watchdog's verdict on every host.
    fn step(&mut self, agents: &[AgentBytes]) -> Result<Result<(), Violation>, RunError> {
        self.step_n(agents, 1)
    }

    /// [`Self::step`] across `n` step lengths at once (see `idle_steps`).
    fn step_n(&mut self, agents: &[AgentBytes], n: u32) -> Result<Result<(), Violation>, RunError> {
        self.poked = false;
        self.steps += 1;
        self.sim.skip(n).map_err(|e| RunError::Sim(e.to_string()))?;
        self.now_ns = u64::try_from(self.sim.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if let Err(v) = self.drain(agents) {
            return Ok(Err(v));
        }
        if let Some(v) = self.stuck(agents) {
            return Ok(Err(v));
        }
        Ok(Ok(()))
    }

    /// The watchdog's verdict, if a host's watchdog tripped in the last step.
    fn stuck(&mut self, agents: &[AgentBytes]) -> Option<Violation> {
        let (node, s) = self.ctls.values().find_map(|c| c.stuck.borrow().clone().map(|s| (c.name.clone(), s)))?;
        // The violation names an agent: the busiest one in the node's last
        // events, else the first of the scenario.
        let agent = s.agent.clone().or_else(|| agents.first().map(|a| a.id.clone()))?;
        let lines = s.last_events.join("\n    ");
        let n = s.last_events.len();
        Some(Violation {
            invariant: STUCK,
            at_ns: s.at_ns,
            nodes: vec![node.clone()],
            agent: agent.clone(),
            message: format!("node {node} (agent {agent}): {}; its last {n} events:\n    {lines}", s.reason),
        })
    }

    /// End-of-run `verify` of every live node's history: stop each host's
    /// driver, let it read its archive, and check every agent's chain with
    /// `igor::lineage::verify_lineage` and the node's recovery records (what
    /// `igord verify` runs): a recorded recovery is named, any other fork
    /// is CHAIN. Files the simulator corrupted are left out first.
    fn verify_histories(&mut self, agents: &[AgentBytes]) -> Result<Result<(), Violation>, RunError> {
        let live: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| !self.down.contains(*n) && !self.byzantine_nodes.contains(*n))
            .cloned()
            .collect();
        for n in &live {
            let ctl = &self.ctls[n];
            ctl.collect.set(true);
            // Closing the control channel makes the driver return.
            *ctl.control.borrow_mut() = None;
        }
        let ready = |w: &Self| live.iter().all(|n| w.ctls[n].histories.borrow().is_some());
        for _ in 0..VERIFY_STEPS {
            if ready(self) {
                break;
            }
            if let Err(v) = self.step(agents)? {
                return Ok(Err(v));
            }
        }
        for n in &live {
            let ctl = self.ctls[n].clone();
            let Some(histories) = ctl.histories.borrow_mut().take() else {
                self.trace.note(format!("{} sim verify {n}: host did not stop", fmt_time(self.now_ns)));
                continue;
            };
            for (agent, (entries, records)) in histories {
                let kept: Vec<(String, Vec<u8>)> = entries
                    .into_iter()
                    .filter(|(_, b)| {
                        !ctl.corrupted.get()
                            || igor::checkpoint::Checkpoint::decode(b).is_ok_and(|c| c.verify_signature().is_ok())
                    })
                    .collect();
                if kept.is_empty() {
                    continue;
                }
                // Files are named by tick: sorted by name is sorted by tick.
                let adopted = self.adopted.get(&(n.clone(), agent.clone()));
                let mut segments: Vec<Vec<(String, Vec<u8>)>> = Vec::new();
                for entry in kept {
                    let starts = adopted.is_some_and(|a| a.contains(&Hash32::of(&entry.1)));
                    match segments.last_mut() {
                        Some(seg) if !starts => seg.push(entry),
                        _ => segments.push(vec![entry]),
                    }
                }
                let at = fmt_time(self.now_ns);
                let mut links = Vec::new();
                for seg in &segments {
                    match lineage::verify_lineage(seg, &records) {
                        Ok(s) => {
                            links.push(format!("{}..{}", s.first_tick, s.last_tick));
                            for (tick, anchor) in &s.recoveries {
                                links.push(format!("recovered at tick {tick} from anchor {}", anchor.short()));
                            }
                        }
                        Err(broken) => {
                            let agent_id = AgentId::new(agent.clone()).map_err(|e| RunError::Sim(e.to_string()))?;
                            self.trace.note(format!("{at} sim verify {n} {agent}: invalid: {broken}"));
                            return Ok(Err(Violation {
                                invariant: CHAIN,
                                at_ns: self.now_ns,
                                nodes: vec![ctl.name.clone()],
                                agent: agent_id,
                                message: format!("history of {agent} on {n} fails verify: {broken}"),
                            }));
                        }
                    }
                }
                self.trace.note(format!("{at} sim verify {n} {agent}: valid, ticks {}", links.join(", ")));
            }
        }
        Ok(Ok(()))
    }

    fn apply_due(&mut self, agents: &[AgentBytes]) -> Result<(), Violation> {
        while let Some(entry) = self.scheduled.first_entry() {
            if entry.key().0 > self.now_ns {
                break;
            }
            let what = entry.remove();
            self.poked = true;
            match what {
                Sched::Act(action) => {
                    self.trace.note(format!("{} sim {}", fmt_time(self.now_ns), describe(&action)));
                    self.coverage.action(self.now_ns, &action);
                    for (node, o) in self.apply(&action, agents) {
                        for (node, o) in self.byzantine.action(&node, o) {
                            self.checker.observe(self.now_ns, &node, &o)?;
                        }
                    }
                }
                Sched::Hold(n) => {
                    self.trace.note(format!("{} sim Hold(node: {n:?})", fmt_time(self.now_ns)));
                    self.hold(&n);
                }
                Sched::Release(n) => {
                    self.trace.note(format!("{} sim Release(node: {n:?})", fmt_time(self.now_ns)));
                    self.release(&n);
                }
                Sched::DiskHeal(n) => {
                    let faults = &self.ctls.get(&n).expect("scheduled for a scenario node").disk;
                    faults.end(self.now_ns, false);
                    if faults.active.get().is_none() {
                        self.trace.note(format!("{} sim DiskHeal(node: {n:?})", fmt_time(self.now_ns)));
                    }
                }
            }
        }
        Ok(())
    }

    /// Feed the events of the last step to the trace, coverage and checker.
    fn drain(&mut self, agents: &[AgentBytes]) -> Result<(), Violation> {
        let mut fire = Vec::new();
        while let Ok(e) = self.rx.try_recv() {
            self.events += 1;
            let text = e.event.to_string();
            self.trace.event(e.at_ns, e.node.as_str(), &text);
            remember_head(&mut self.heads, &e);
            // What each node reports, as an operator reads it (`igord
            // agents`): unfiltered, so a Byzantine holder is seen too.
            match &e.event {
                Event::AuthorityChanged { agent, to, .. } => {
                    self.reported.insert((agent.to_string(), e.node.to_string()), state_of(*to));
                }
                Event::AgentLoaded { agent, state, .. } => {
                    self.reported.insert((agent.to_string(), e.node.to_string()), state_of(*state));
                }
                Event::CommandRefused { command, agent: Some(agent), .. } if command == "recover" => {
                    self.recover_refused.insert((agent.to_string(), e.node.to_string()));
                }
                // Its checkpoints are gone: nothing there to recover from.
                Event::LocalCopyDeleted { agent } => {
                    self.heads.remove(&(e.node.to_string(), agent.to_string()));
                }
                _ => {}
            }
            let isolated = self.isolated(e.node.as_str());
            self.coverage.observe_text(e.node.as_str(), &e.event, &text, isolated);
            match &e.event {
                Event::AgentHalted { agent, .. } => {
                    self.halted.insert(agent.to_string());
                }
                // Retired by the operator: stopped for good, like a halt.
                Event::AuthorityChanged { agent, to: AuthorityState::Retired, reason: Reason::Shutdown, .. } => {
                    self.halted.insert(agent.to_string());
                }
                Event::TickFinished { agent, .. } => {
                    if let Some(t) = &mut self.ticked_since_heal {
                        t.insert(agent.to_string());
                    }
                }
                Event::CheckpointAdopted { agent, hash, .. } => {
                    self.adopted.entry((e.node.to_string(), agent.to_string())).or_default().insert(*hash);
                }
                Event::Misbehaved { act, .. } if !act.starts_with(crate::byzantine::CHURN_ACT_PREFIX) => {
                    self.byzantine_nodes.insert(e.node.to_string());
                }
                _ => {}
            }
            if let Some(i) =
                self.armed.iter().position(|(n, b, _, _)| n == e.node.as_str() && boundary_hit(*b, &e.event))
            {
                fire.push(self.armed.remove(i));
            }
            for (node, o) in self.byzantine.filter(&e.node, &e.event, observation(&e.event)) {
                self.checker.observe(e.at_ns, &node, &o)?;
            }
        }
        self.note_net_counters();
        for (node, boundary, fault, for_ns) in fire {
            if self.down.contains(&node) {
                continue;
            }
            self.trace.note(format!("{} sim BUGGIFY {node} {fault:?} at {boundary:?}", fmt_time(self.now_ns)));
            let end = self.now_ns.saturating_add(for_ns);
            match fault {
                BuggifyFault::Crash => {
                    self.coverage.mark("buggify_crash");
                    let crash = Action::Crash { node: node.clone() };
                    for (n, o) in self.apply(&crash, agents) {
                        for (n, o) in self.byzantine.action(&n, o) {
                            self.checker.observe(self.now_ns, &n, &o)?;
                        }
                    }
                    self.schedule(end, Sched::Act(Action::Restart { node, storage: Storage::Intact }));
                }
                BuggifyFault::DiskFull | BuggifyFault::DiskIo => {
                    self.coverage.mark("buggify_disk_fault");
                    let kind = if fault == BuggifyFault::DiskFull { DiskFaultKind::Full } else { DiskFaultKind::Io };
                    let action = Action::DiskFault { node, kind, for_ms: for_ns / 1_000_000, under: None };
                    let _ = self.apply(&action, agents);
                }
                BuggifyFault::Isolate => {
                    self.coverage.mark("buggify_isolate");
                    for other in self.nodes.clone().into_iter().filter(|o| *o != node) {
                        let (a, b) = (node.clone(), other);
                        let _ = self.apply(&Action::Partition { a: a.clone(), b: b.clone() }, agents);
                        self.schedule(end, Sched::Act(Action::Heal { a, b }));
                    }
                }
            }
        }
        Ok(())
    }

    /// Trace what the network twin rejected or corrupted, and the writes
    /// a faulty disk refused, since last time.
    fn note_net_counters(&mut self) {
        for (name, ctl) in &self.ctls {
            let refused = ctl.disk.refused.replace(0);
            if refused > 0 {
                self.trace.note(format!("{} sim disk {name} refused {refused} write(s)", fmt_time(self.now_ns)));
                self.coverage.mark("disk_write_refused");
            }
            let now = ctl.faults.borrow().counters.clone();
            // Every step: no allocation when nothing changed.
            if self.net_seen.get(name).map_or(now == NetCounters::default(), |before| *before == now) {
                continue;
            }
            let before = self.net_seen.entry(name.clone()).or_default();
            if now.rejected > before.rejected {
                let n = now.rejected - before.rejected;
                self.trace.note(format!("{} sim net {name} rejected {n} corrupted frame(s)", fmt_time(self.now_ns)));
                self.coverage.mark("corrupt_frame_rejected");
            }
            if now.duplicated > before.duplicated {
                self.coverage.mark("duplicate_request_sent");
            }
            *before = now;
        }
    }

    fn isolated(&self, node: &str) -> bool {
        self.held.get(node).is_some_and(|c| *c > 0) || self.cut.iter().any(|(a, b)| a == node || b == node)
    }

    fn hold(&mut self, node: &str) {
        let count = self.held.entry(node.to_string()).or_default();
        *count += 1;
        if *count == 1 {
            for other in self.nodes.iter().filter(|o| *o != node) {
                self.sim.hold(node, other.as_str());
            }
            self.coverage.mark("node_paused");
        }
    }

    fn release(&mut self, node: &str) {
        let Some(count) = self.held.get_mut(node) else { return };
        *count = count.saturating_sub(1);
        if *count > 0 {
            return;
        }
        self.held.remove(node);
        for other in self.nodes.iter().filter(|o| *o != node) {
            // A link stays held while its other end is held too.
            if !self.held.contains_key(other.as_str()) {
                self.sim.release(node, other.as_str());
            }
        }
    }

    /// Liveness: heal every fault, then within `within_ns` every agent that
    /// did not halt must finish a tick. An agent that only RECOVERY_REQUIRED
    /// copies hold gets one operator recovery, on the copy with the newest
    /// head. A run that is safe only because everything stopped fails here.
    fn liveness(
        &mut self,
        within_ns: u64,
        may_recover: bool,
        agents: &[AgentBytes],
    ) -> Result<Result<(), Violation>, RunError> {
        self.heal(agents);
        let heal_ns = self.now_ns;
        let deadline = heal_ns.saturating_add(within_ns);
        // The operator looks for agents to recover from the settle time on.
        self.alarm_ns = heal_ns + SETTLE_NS;
        // Only the liveness operator's own refused attempts send it on to
        // the next node: a refusal of a timeline `Recover` during the fault
        // window (a live owner elsewhere, say) says nothing about now.
        self.recover_refused.clear();
        self.ticked_since_heal = Some(BTreeSet::new());
        // agent → the node of the operator's last recovery attempt. One
        // recovery that the node accepts is all the operator gets; one the
        // node refuses (it says why) sends the operator to the next
        // candidate, each node at most once.
        let mut recovered: BTreeMap<String, String> = BTreeMap::new();
        let mut violation = None;
        let r = self.run_until(deadline, agents, |w| {
            let mut all_live = true;
            for a in agents {
                let name = a.id.to_string();
                if w.halted.contains(&name) || w.ticked_since_heal.as_ref().is_some_and(|t| t.contains(&name)) {
                    continue;
                }
                all_live = false;
                let retry = |n: &String| w.recover_refused.contains(&(name.clone(), n.clone()));
                if may_recover
                    && w.now_ns >= heal_ns + SETTLE_NS
                    && recovered.get(&name).is_none_or(retry)
                    && let Some(node) = w.recovery_candidate(&a.id)
                {
                    recovered.insert(name.clone(), node.clone());
                    // The simulator has checked no live node holds the agent.
                    let action = Action::Recover { agent: name, node, anchor_tick: None, force: true };
                    w.trace.note(format!("{} sim liveness {}", fmt_time(w.now_ns), describe(&action)));
                    // Recover yields no checker observations.
                    let _ = w.apply(&action, agents);
                }
            }
            all_live
        })?;
        if let Err(v) = r {
            return Ok(Err(v));
        }
        for a in agents {
            let name = a.id.to_string();
            let ticked = self.ticked_since_heal.as_ref().is_some_and(|t| t.contains(&name));
            if ticked && recovered.contains_key(&name) {
                self.coverage.mark("recovered_after_heal");
            }
            if self.halted.contains(&name) || ticked {
                continue;
            }
            // The fault model destroyed every copy (the last holder was
            // wiped): no protocol can bring the agent back. Named apart
            // from LIVENESS, which is a failure of the protocol.
            if let Some((node, at)) = self.checker.lost(&a.id) {
                self.coverage.mark("agent_lost_with_its_disk");
                violation = Some(Violation {
                    invariant: LOST,
                    at_ns: self.now_ns,
                    nodes: vec![node.clone()],
                    agent: a.id.clone(),
                    message: format!(
                        "every copy is gone: the last node holding it, {node}, was wiped at {} (no tick since the heal at {})",
                        fmt_time(at),
                        fmt_time(heal_ns)
                    ),
                });
                break;
            }
            // A hostage: the operator was allowed to help and could not,
            // because only misbehaving nodes hold the agent. (Without an
            // operator, the scenario asks whether the system stays live by
            // itself: that failure is LIVENESS, whoever holds the agent.)
            if may_recover && let Some(nodes) = self.checker.hostage_holders(&a.id) {
                self.coverage.mark("agent_held_hostage");
                let names: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
                violation = Some(Violation {
                    invariant: LOST,
                    at_ns: self.now_ns,
                    nodes,
                    agent: a.id.clone(),
                    message: format!(
                        "no honest node holds a copy: the only ones are on [{}], which misbehaved (no tick since the heal at {})",
                        names.join(", "),
                        fmt_time(heal_ns)
                    ),
                });
                break;
            }
            let held = self.checker.states(&a.id);
            let states: Vec<String> = held.iter().map(|(n, s)| format!("{n}={}", s.name())).collect();
            let refused: Vec<&str> =
                self.recover_refused.iter().filter(|(a, _)| *a == name).map(|(_, n)| n.as_str()).collect();
            let tried = if recovered.contains_key(&name) && refused.is_empty() {
                ", after one operator recovery".to_string()
            } else if recovered.contains_key(&name) {
                format!(", the operator's recovery refused on [{}]", refused.join(", "))
            } else if !may_recover {
                ", no operator recovery allowed".to_string()
            } else {
                String::new()
            };
            violation = Some(Violation {
                invariant: LIVENESS,
                at_ns: self.now_ns,
                nodes: held.into_iter().map(|(n, _)| n).collect(),
                agent: a.id.clone(),
                message: format!(
                    "no tick within {} ms of the heal at {}{tried} (authority: [{}])",
                    within_ns / 1_000_000,
                    fmt_time(heal_ns),
                    states.join(", ")
                ),
            });
            break;
        }
        Ok(match violation {
            Some(v) => Err(v),
            None => Ok(()),
        })
    }

    /// The node to recover `agent` on, if nobody can tick it without the
    /// operator: no live node owns it or is in a handoff, and some live node
    /// holds it in RECOVERY_REQUIRED (the one with the newest head wins;
    /// a node that refused a recovery is not asked again).
    fn recovery_candidate(&self, agent: &AgentId) -> Option<String> {
        let states: Vec<(NodeId, State)> = self
            .reported
            .iter()
            .filter(|((a, _), _)| a == agent.as_str())
            .filter_map(|((_, n), st)| Some((NodeId::new(n).ok()?, *st)))
            .collect();
        let live = |n: &NodeId| !self.down.contains(n.as_str());
        let busy = states
            .iter()
            .any(|(n, s)| live(n) && matches!(s, State::ActiveOwner | State::HandoffInitiated | State::HandoffPending));
        if busy {
            return None;
        }
        let refused = |n: &NodeId| self.recover_refused.contains(&(agent.to_string(), n.to_string()));
        states
            .iter()
            .filter(|(n, s)| live(n) && *s == State::RecoveryRequired && !refused(n))
            .max_by_key(|(n, _)| {
                let head = self.heads.get(&(n.to_string(), agent.to_string())).and_then(|m| m.keys().next_back());
                (head.copied(), std::cmp::Reverse(n.to_string()))
            })
            .map(|(n, _)| n.to_string())
    }

    /// End of the fault window: repair every cut link, release every hold,
    /// clear message faults, drop pending fault steps and armed BUGGIFY
    /// crashes, and restart crashed nodes with their disks as they are.
    /// Clock skew stays: a wrong clock is a condition, not an event.
    fn heal(&mut self, agents: &[AgentBytes]) {
        self.poked = true;
        self.trace.note(format!("{} sim Heal(all)", fmt_time(self.now_ns)));
        for (a, b) in std::mem::take(&mut self.cut) {
            self.sim.repair_oneway(a.as_str(), b.as_str());
        }
        for node in std::mem::take(&mut self.held).into_keys() {
            for other in self.nodes.iter().filter(|o| **o != node) {
                self.sim.release(node.as_str(), other.as_str());
            }
        }
        for ctl in self.ctls.values() {
            ctl.faults.borrow_mut().faults = LinkFaults::default();
            ctl.disk.end(self.now_ns, true);
        }
        self.scheduled.clear();
        self.armed.clear();
        for node in self.down.clone() {
            let restart = Action::Restart { node, storage: Storage::Intact };
            self.trace.note(format!("{} sim {}", fmt_time(self.now_ns), describe(&restart)));
            let _ = self.apply(&restart, agents);
        }
    }
}

/// The invariant name of a liveness failure.
pub const LIVENESS: &str = "LIVENESS";

/// The verdict of a run whose injected wipes destroyed every copy of an
/// agent (the checker's own record: the last node holding it was wiped and
/// none held it since), or only misbehaving nodes hold it (a hostage). Not a protocol failure: Igor keeps one replica, so
/// no protocol can bring it back. `explore` counts it apart from failures.
pub const LOST: &str = "LOST";

fn boundary_hit(b: Boundary, e: &Event) -> bool {
    match (b, e) {
        (Boundary::PackageSent, Event::PackageSent { .. }) => true,
        (Boundary::HandoffCheckpoint, Event::CheckpointCommitted { handoff, .. }) => *handoff,
        (Boundary::CheckpointCommitted, Event::CheckpointCommitted { .. }) => true,
        (Boundary::PackageAdopted, Event::CheckpointAdopted { .. }) => true,
        (Boundary::MigrationFinished, Event::MigrationFinished { .. }) => true,
        _ => false,
    }
}

/// The trace header: format, scenario and seed, build (version, git
/// revision, wasmtime), the resolved options and a fingerprint of the whole
/// resolved scenario, so a trace says exactly what produced it.
fn write_header(trace: &mut Trace, scenario: &Scenario, seed: u64) {
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
    trace.note(format!("# resolved-scenario sha256 {}", &fingerprint[..32]));
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
    let seen = heads.entry((e.node.to_string(), agent.to_string())).or_default();
    if matches!(e.event, Event::AgentLoaded { .. }) {
        // What a restarted node loads is its disk's head: anything newer
        // was lost with the disk and cannot anchor a recovery.
        seen.retain(|t, _| *t <= tick.0);
    }
    seen.insert(tick.0, hash);
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

impl World<'_> {
    /// Apply one action; returns observations for the checker.
    fn apply(&mut self, action: &Action, agents: &[AgentBytes]) -> Vec<(NodeId, Obs)> {
        self.poked = true;
        let ctl = |n: &str| self.ctls.get(n).expect("scenario validated: node names resolve").clone();
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
                if self.down.insert(node.clone()) {
                    self.sim.crash(node.as_str());
                    *ctl(node).control.borrow_mut() = None;
                    self.coverage.crashed(node);
                    obs.push((ctl(node).name.clone(), Obs::Crashed));
                }
            }
            Action::Restart { node, storage } => {
                if matches!(storage, Storage::Wipe) {
                    for a in agents {
                        obs.push((ctl(node).name.clone(), Obs::Forgot { agent: a.id.clone() }));
                    }
                    self.reported.retain(|(_, n), _| n != node);
                }
                if !matches!(storage, Storage::Intact) {
                    self.coverage.mark("restart_with_damaged_disk");
                }
                self.down.remove(node);
                // The new boot reports its own deadline.
                ctl(node).wake_ns.set(0);
                *ctl(node).damage.borrow_mut() = storage.clone();
                self.sim.bounce(node.as_str());
            }
            Action::Partition { a, b } => {
                self.cut.insert((a.clone(), b.clone()));
                self.cut.insert((b.clone(), a.clone()));
                self.sim.partition(a.as_str(), b.as_str())
            }
            Action::PartitionOneway { from, to } => {
                self.cut.insert((from.clone(), to.clone()));
                self.sim.partition_oneway(from.as_str(), to.as_str())
            }
            Action::Heal { a, b } => {
                self.cut.remove(&(a.clone(), b.clone()));
                self.cut.remove(&(b.clone(), a.clone()));
                self.sim.repair(a.as_str(), b.as_str())
            }
            Action::HealOneway { from, to } => {
                self.cut.remove(&(from.clone(), to.clone()));
                self.sim.repair_oneway(from.as_str(), to.as_str())
            }
            Action::Latency { a, b, ms } => {
                self.sim.set_link_latency(a.as_str(), b.as_str(), Duration::from_millis(*ms))
            }
            Action::Duplicate { node, probability } => ctl(node).faults.borrow_mut().faults.duplicate = *probability,
            Action::Reorder { node, max_delay_ms } => {
                ctl(node).faults.borrow_mut().faults.extra_delay_ms = (0, *max_delay_ms)
            }
            Action::Corrupt { node, probability } => ctl(node).faults.borrow_mut().faults.corrupt = *probability,
            Action::ClearFaults { node } => ctl(node).faults.borrow_mut().faults = LinkFaults::default(),
            Action::Skew { node, ms } => {
                let c = &ctl(node).clock;
                let mut f = c.get();
                f.skew(*ms);
                c.set(f);
            }
            Action::Drift { node, ppm } => {
                let c = &ctl(node).clock;
                let mut f = c.get();
                f.set_drift(self.now_ns, *ppm);
                c.set(f);
            }
            Action::Pause { node, ms } => {
                self.hold(node);
                self.schedule(self.now_ns.saturating_add(ms.saturating_mul(1_000_000)), Sched::Release(node.clone()));
            }
            Action::Swizzle { nodes, step_ms } => self.swizzle(nodes, *step_ms),
            Action::Buggify { node, on, fault, for_ms } => {
                self.armed.push((node.clone(), *on, *fault, for_ms.saturating_mul(1_000_000)));
            }
            Action::Retire { agent, node } => send(node, Command::Retire { agent: agent_id(agent) }),
            Action::Recover { agent, node, anchor_tick, force } => {
                let seen = self.heads.get(&(node.clone(), agent.clone()));
                let anchor = match anchor_tick {
                    Some(t) => seen.and_then(|m| m.get(t).copied()),
                    None => seen.and_then(|m| m.values().next_back().copied()),
                };
                // An unknown anchor is passed as zeros: the node refuses it,
                // and the refusal is in the trace.
                let anchor = anchor.unwrap_or(Hash32::ZERO);
                send(node, Command::Recover { agent: agent_id(agent), anchor, force: *force });
            }
            Action::DiskFault { node, kind, for_ms, under } => {
                let until = self.now_ns.saturating_add(for_ms.saturating_mul(1_000_000));
                ctl(node).disk.start(*kind, until);
                *ctl(node).disk.under.borrow_mut() = under.clone();
                self.schedule(until, Sched::DiskHeal(node.clone()));
            }
        }
        obs
    }

    /// Hold `nodes` one by one, then release them in a random order drawn
    /// from this swizzle's own child RNG.
    fn swizzle(&mut self, nodes: &[String], step_ms: u64) {
        let mut rng = ChaCha20Rng::from_seed(derive_seed(self.seed, &format!("swizzle/{}", self.swizzles)));
        self.swizzles += 1;
        let step = step_ms.saturating_mul(1_000_000);
        let mut order: Vec<String> = nodes.to_vec();
        let mut at = self.now_ns;
        for n in &order {
            self.schedule(at, Sched::Hold(n.clone()));
            at = at.saturating_add(step);
        }
        // Fisher-Yates with the child RNG.
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for n in order {
            self.schedule(at, Sched::Release(n));
            at = at.saturating_add(step);
        }
    }
}
