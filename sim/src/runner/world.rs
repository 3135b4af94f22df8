//! The running world: the turmoil simulation and everything the runner
//! tracks about it (hosts, cuts, holds, the schedule, the checker, the
//! trace), stepping it (fixed or skipping idle stretches), applying due
//! schedule entries, and draining node events into the trace, coverage
//! and checker.

use super::host::HostCtl;
use super::observe::{Heads, boundary_hit, observation, remember_head, state_of};
use super::schema::AgentBytes;
use super::{RunError, Stepping};
use crate::checker::{Checker, State, Violation};
use crate::coverage::Coverage;
use crate::disk::DiskFaultKind;
use crate::net::NetCounters;
use crate::scenario::{Action, Boundary, BuggifyFault, Scenario, Storage};
use crate::trace::{self, Line, Trace, int, word};
use crate::watchdog::STUCK;
use igor::authority::{AuthorityState, Reason};
use igor::checkpoint::Hash32;
use igor::node::{Event, NodeEvent};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use tokio::sync::mpsc;

/// Something the runner does at a simulated time: a timeline action, or a
/// step the runner derived from one (a swizzle's holds, a BUGGIFY restart).
#[derive(Clone, Debug)]
pub(super) enum Sched {
    Act(Action),
    Hold(String),
    Release(String),
    /// A `DiskFault`'s time is up (unless a later one on the node still runs).
    DiskHeal(String),
}

/// The running simulation and everything the runner tracks about it.
pub(super) struct World<'a> {
    pub(super) sim: turmoil::Sim<'a>,
    pub(super) seed: u64,
    pub(super) nodes: Vec<String>,
    pub(super) ctls: BTreeMap<String, Rc<HostCtl>>,
    pub(super) rx: mpsc::UnboundedReceiver<NodeEvent>,
    pub(super) trace: Trace,
    pub(super) checker: Checker,
    pub(super) coverage: Coverage,
    pub(super) heads: Heads,
    pub(super) now_ns: u64,
    pub(super) events: u64,
    /// Pending actions by (time, order of scheduling).
    pub(super) scheduled: BTreeMap<(u64, u64), Sched>,
    pub(super) scheduled_seq: u64,
    /// Nodes crashed and not restarted.
    pub(super) down: BTreeSet<String>,
    /// Directed links cut by partitions.
    pub(super) cut: BTreeSet<(String, String)>,
    /// Hold count per node (Pause and Swizzle may overlap).
    pub(super) held: BTreeMap<String, u32>,
    /// Armed BUGGIFY faults: (node, boundary, fault, duration ns).
    pub(super) armed: Vec<(String, Boundary, BuggifyFault, u64)>,
    pub(super) swizzles: u64,
    /// Agents that stopped for good (budget, trap): exempt from liveness.
    pub(super) halted: BTreeSet<String>,
    /// Agents that finished a tick since the heal.
    pub(super) ticked_since_heal: Option<BTreeSet<String>>,
    pub(super) net_seen: BTreeMap<String, NetCounters>,
    /// Keeps Byzantine nodes' own misdeeds out of the checker (A2–A4).
    pub(super) byzantine: crate::adversary::Filter,
    /// Byzantine nodes (A2–A4, not churn griefers): their own disks hold
    /// their misdeeds, which the end-of-run verify does not judge.
    pub(super) byzantine_nodes: BTreeSet<String>,
    /// Per (node, agent): checkpoints the node adopted from a package. Each
    /// starts a new segment of its history: the links before it may live
    /// only on the nodes the agent visited in between (a returning agent).
    pub(super) adopted: BTreeMap<(String, String), BTreeSet<Hash32>>,
    /// (agent, node) → the authority state the node last reported, for the
    /// liveness phase's operator (the checker's view leaves out Byzantine
    /// nodes' records once they misbehave).
    pub(super) reported: BTreeMap<(String, String), State>,
    /// (agent, node) where an operator recovery was refused: the operator
    /// reads the refusal and tries the next candidate, never this node again.
    pub(super) recover_refused: BTreeSet<(String, String)>,
    pub(super) stepping: Stepping,
    /// `step_ms` in ns: the length of one fixed step.
    pub(super) step_ns: u64,
    /// Turmoil steps taken.
    pub(super) steps: u64,
    /// The runner acted on the world since the last step (an action, a
    /// hold, a command): the next step must be a plain one, since a host
    /// may have been woken.
    pub(super) poked: bool,
    /// A simulated time at which the runner itself decides something (the
    /// liveness phase's settle time): no skip crosses it.
    pub(super) alarm_ns: u64,
}

impl<'a> World<'a> {
    pub(super) fn new(
        sim: turmoil::Sim<'a>,
        seed: u64,
        scenario: &Scenario,
        rx: mpsc::UnboundedReceiver<NodeEvent>,
    ) -> Self {
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

    pub(super) fn schedule(&mut self, at_ns: u64, what: Sched) {
        self.scheduled.insert((at_ns, self.scheduled_seq), what);
        self.scheduled_seq += 1;
    }

    /// Step the simulation until `end_ns` or until `done` says so; the
    /// inner result is the first violation.
    pub(super) fn run_until(
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
    pub(super) fn idle_steps(&self, end_ns: u64) -> u32 {
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
    pub(super) fn step(&mut self, agents: &[AgentBytes]) -> Result<Result<(), Violation>, RunError> {
        self.step_n(agents, 1)
    }

    /// [`Self::step`] across `n` step lengths at once (see `idle_steps`).
    pub(super) fn step_n(&mut self, agents: &[AgentBytes], n: u32) -> Result<Result<(), Violation>, RunError> {
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
    pub(super) fn stuck(&mut self, agents: &[AgentBytes]) -> Option<Violation> {
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

    pub(super) fn apply_due(&mut self, agents: &[AgentBytes]) -> Result<(), Violation> {
        while let Some(entry) = self.scheduled.first_entry() {
            if entry.key().0 > self.now_ns {
                break;
            }
            let what = entry.remove();
            self.poked = true;
            match what {
                Sched::Act(action) => {
                    // A restart of a node that is up is a crash, then the
                    // restart (docs/scenarios.md): both go the one way every
                    // timeline action goes (trace, coverage, checker).
                    for action in self.implied_crash(&action).into_iter().chain([action]) {
                        self.trace.sim(self.now_ns, trace::action_line("", &action));
                        self.coverage.action(self.now_ns, &action);
                        for (node, o) in self.apply(&action, agents) {
                            for (node, o) in self.byzantine.action(&node, o) {
                                self.checker.observe(self.now_ns, &node, &o)?;
                            }
                        }
                    }
                }
                Sched::Hold(n) => {
                    self.trace.sim(self.now_ns, Line::new("hold").with("node", word(&n)));
                    self.hold(&n);
                }
                Sched::Release(n) => {
                    self.trace.sim(self.now_ns, Line::new("release").with("node", word(&n)));
                    self.release(&n);
                }
                Sched::DiskHeal(n) => {
                    let faults = &self.ctls.get(&n).expect("scheduled for a scenario node").disk;
                    faults.end(self.now_ns, false);
                    if faults.active.get().is_none() {
                        self.trace.sim(self.now_ns, Line::new("disk_heal").with("node", word(&n)));
                    }
                }
            }
        }
        Ok(())
    }

    /// Feed the events of the last step to the trace, coverage and checker.
    pub(super) fn drain(&mut self, agents: &[AgentBytes]) -> Result<(), Violation> {
        let mut fire = Vec::new();
        while let Ok(e) = self.rx.try_recv() {
            self.events += 1;
            let text = trace::event(&e.event);
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
            self.coverage.observe(e.node.as_str(), &e.event, isolated);
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
            let line = Line::new("buggify_fired")
                .with("fault", trace::buggify_fault(fault))
                .with("node", word(&node))
                .with("on", trace::boundary(boundary));
            self.trace.sim(self.now_ns, line);
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
    pub(super) fn note_net_counters(&mut self) {
        for (name, ctl) in &self.ctls {
            let refused = ctl.disk.refused.replace(0);
            if refused > 0 {
                let line = Line::new("disk_refused").with("node", word(name)).with("writes", int(refused));
                self.trace.sim(self.now_ns, line);
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
                self.trace.sim(self.now_ns, Line::new("net_rejected").with("frames", int(n)).with("node", word(name)));
                self.coverage.mark("corrupt_frame_rejected");
            }
            if now.duplicated > before.duplicated {
                self.coverage.mark("duplicate_request_sent");
            }
            *before = now;
        }
    }

    pub(super) fn isolated(&self, node: &str) -> bool {
        self.held.get(node).is_some_and(|c| *c > 0) || self.cut.iter().any(|(a, b)| a == node || b == node)
    }

    pub(super) fn hold(&mut self, node: &str) {
        let count = self.held.entry(node.to_string()).or_default();
        *count += 1;
        if *count == 1 {
            for other in self.nodes.iter().filter(|o| *o != node) {
                self.sim.hold(node, other.as_str());
            }
            self.coverage.mark("node_paused");
        }
    }

    pub(super) fn release(&mut self, node: &str) {
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
}
