//! The invariant checker: an independent oracle fed by the nodes' event
//! streams (converted to [`Obs`]) in the order the simulation produced them.
//! It keeps its own model of who holds authority and of every agent's chain
//! and money, and reports the first violation by the spec's invariant name.
//! It never looks inside a node; it only believes what the events say, and
//! it judges authority changes against its OWN copy of the spec §5 table
//! ([`transition_allowed`]), never against `igor::authority::allowed`: an
//! oracle that calls the code it judges agrees with every bug in it.
//!
//! Invariant names beyond the spec's (documented in docs/simulator.md):
//! `AUTH-TRANSITION` (a forbidden §5 arrow), `AUTH-RELOAD` (a restarted node
//! loaded a record it never had), `BUDGET-CUT` (a cut tick did not bill
//! exactly the remainder), `BUDGET-FINAL` (a budget halt without a final
//! checkpoint at budget 0), `HANDOFF-LOST-TICKS` (a finished tick missing
//! from a handoff), `CHAIN` (a node's history fails verification at the end),
//! `STUCK` (the runner's watchdog).

use igor::authority::Reason;
use igor::checkpoint::Hash32;
use igor::units::{AgentId, Epoch, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A forbidden authority transition (spec §5 table, [`transition_allowed`]).
pub const AUTH_TRANSITION: &str = "AUTH-TRANSITION";
/// A restarted node loaded a record that does not match what it last
/// reported, or any record from a disk the simulator wiped.
pub const AUTH_RELOAD: &str = "AUTH-RELOAD";
/// Spec §3: a tick cut for budget bills exactly the remainder; no tick
/// bills more than the budget it started with.
pub const BUDGET_CUT: &str = "BUDGET-CUT";
/// Spec §3: an agent halted for budget leaves a final checkpoint, budget 0,
/// at its last tick (nothing stranded).
pub const BUDGET_FINAL: &str = "BUDGET-FINAL";
/// Spec §6: the source seals its last finished tick, the target adopts
/// exactly the sealed tick: no finished tick is lost across a handoff.
pub const HANDOFF_LOST_TICKS: &str = "HANDOFF-LOST-TICKS";
/// EI-3 at rest: a node's history on disk fails `verify` at the end of a run.
pub const CHAIN: &str = "CHAIN";

/// Authority state as the checker models it (spec §5 names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    ActiveOwner,
    HandoffInitiated,
    HandoffPending,
    Retired,
    RecoveryRequired,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::ActiveOwner => "ACTIVE_OWNER",
            State::HandoffInitiated => "HANDOFF_INITIATED",
            State::HandoffPending => "HANDOFF_PENDING",
            State::Retired => "RETIRED",
            State::RecoveryRequired => "RECOVERY_REQUIRED",
        }
    }
}

/// What the checker needs to know about one node event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Obs {
    /// An agent was deployed with its initial budget (genesis).
    Deployed { agent: AgentId, budget: i64 },
    /// The node (re)started: it runs again and reloads its agents.
    Booted,
    /// A restarted node restored `agent` from its disk (`agent_loaded`).
    Loaded { agent: AgentId, state: State, epoch: Epoch, head_tick: u64, head: Hash32 },
    /// A tick is about to run under `epoch` with `budget` left, descending
    /// from the committed checkpoint `base`.
    TickStarted { agent: AgentId, tick: u64, epoch: Epoch, budget: i64, base: Hash32 },
    /// A tick ran to `tick` (ticks completed) and charged `cost` + `paid`.
    /// `exhausted`: its outcome was `BudgetExhausted` (the tick was cut).
    Ticked { agent: AgentId, tick: u64, epoch: Epoch, cost: i64, paid: i64, side_effects: u32, exhausted: bool },
    /// A checkpoint became durable (or was adopted from a transfer).
    /// `charged`: what the node says the ticks since `prev` cost (with
    /// payments); `None` for an adopted checkpoint (no new link), then
    /// `source` is the node the package came from. `handoff`: the source's
    /// sealed handoff checkpoint.
    Committed {
        agent: AgentId,
        tick: u64,
        hash: Hash32,
        prev: Hash32,
        budget: i64,
        charged: Option<i64>,
        handoff: bool,
        source: Option<NodeId>,
    },
    /// Authority moved `from` → `to` (`from` = None for a new record), now
    /// at `epoch`, for `reason`.
    Authority { agent: AgentId, from: Option<State>, to: State, epoch: Epoch, reason: Reason },
    /// The node detected divergent heads for one epoch (EI-11).
    Divergence { agent: AgentId },
    /// The agent stopped for good on this node; `budget`: for budget exhaustion.
    Halted { agent: AgentId, budget: bool },
    /// The node reported a local fault about `agent` (a write may have failed).
    Fault { agent: AgentId },
    /// An operator recovery on this node re-anchored the lineage at
    /// `anchor` under `epoch` (`recovered`): its next commit may be a second
    /// child of the anchor; the branch it replaces is abandoned.
    Recovered { agent: AgentId, anchor: Hash32, epoch: Epoch },
    /// The node's process died (injected by the simulator).
    Crashed,
    /// The node misbehaved (A2–A4): the adversary filter keeps its later
    /// authority changes out, so its last record here is stale. It no
    /// longer counts as a second holder or ticker (EI-5, EI-1) beside an
    /// honest node; ticks it ran, released when an honest node adopts
    /// them, are still judged against that record.
    Distrusted,
    /// The node's records of `agent` were lost with its disk (`Wipe`).
    Forgot { agent: AgentId },
    /// The node deleted its copy of the agent (checkpoints, key) after a
    /// confirmed handoff; a record that failed to persist may still reload.
    CopyDeleted { agent: AgentId },
}

/// A detected violation: which invariant, when, where, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub at_ns: u64,
    pub nodes: Vec<NodeId>,
    pub agent: AgentId,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<&str> = self.nodes.iter().map(|n| n.as_str()).collect();
        write!(
            f,
            "{} violated at t={} on [{}] for agent {}: {}",
            self.invariant,
            crate::trace::fmt_time(self.at_ns),
            nodes.join(", "),
            self.agent,
            self.message
        )
    }
}

/// The spec §5 transition table, written from the spec (with its binding
/// clarifications), not from the code. `from` is the record the checker
/// last saw on that node (`None`: no record), `target`: that record was
/// created by an incoming package. Besides the spec's arrows it allows the
/// abort arrows a handoff needs so that "a failed or refused transfer
/// leaves the agent on the source" (§6): HANDOFF_INITIATED → ACTIVE_OWNER
/// and, for the source, HANDOFF_PENDING → ACTIVE_OWNER, both only with
/// reason `handoff_aborted`. A new record at HANDOFF_PENDING replaces a
/// RETIRED one only at a higher epoch major (returning agent: "the old
/// record is archived, not transitioned"); RECOVERY_REQUIRED never accepts
/// a handoff.
pub fn transition_allowed(
    from: Option<(State, Epoch)>,
    target: bool,
    to: State,
    epoch: Epoch,
    reason: &Reason,
) -> bool {
    use State::*;
    match (from, to) {
        // any → RECOVERY_REQUIRED (also a node that never had a record).
        (_, RecoveryRequired) => true,
        (None, ActiveOwner) => *reason == Reason::Deployed,
        (None, HandoffPending) => *reason == Reason::PackageReceived,
        (Some((Retired, old)), HandoffPending) => *reason == Reason::PackageReceived && epoch.major > old.major,
        (None, _) => false,
        (Some((from, _)), to) => match (from, to) {
            (ActiveOwner, HandoffInitiated) => *reason == Reason::HandoffStarted,
            (HandoffInitiated, HandoffPending) => *reason == Reason::Relinquished,
            (HandoffInitiated, ActiveOwner) => *reason == Reason::HandoffAborted,
            (HandoffPending, ActiveOwner) if target => *reason == Reason::Assumed,
            (HandoffPending, ActiveOwner) => *reason == Reason::HandoffAborted,
            (HandoffPending, Retired) => !target && *reason == Reason::Confirmed,
            (ActiveOwner, Retired) => *reason == Reason::Shutdown,
            // Only explicit recovery (or the deliberately unsafe mode that
            // scenario unsafe-self-recover shows failing EI-5).
            (RecoveryRequired, ActiveOwner) => matches!(reason, Reason::Recovery | Reason::UnsafeSelfRecovery),
            _ => false,
        },
    }
}

/// One node's authority record of one agent, as the events told it.
#[derive(Clone, Copy, Debug)]
struct Record {
    state: State,
    epoch: Epoch,
    /// Created by an incoming package (the target side of a handoff).
    target: bool,
    /// A fault was reported since the record was last confirmed: a write
    /// may have failed, so a reload may legitimately show an older record.
    uncertain: bool,
}

/// What one node did with one agent since it (re)started (RE-8).
#[derive(Clone, Debug, Default)]
struct NodeRun {
    /// Tick started and the budget it started with.
    started: Option<(u64, i64)>,
    /// Last finished tick on this run.
    finished: Option<u64>,
    /// Newest checkpoint this run committed, loaded or adopted: (tick, budget).
    head: Option<(u64, i64)>,
    /// Ticks run since the last commit: tick → charge.
    pending: BTreeMap<u64, i64>,
    /// The agent halted here (budget, trap): no more ticks on this run.
    halted: bool,
    /// A fault was reported since the last finished tick.
    faulted: bool,
}

#[derive(Default)]
struct AgentModel {
    initial_budget: Option<i64>,
    /// Latest authority record per node.
    records: BTreeMap<NodeId, Record>,
    /// Per node, the current run's lifecycle.
    runs: BTreeMap<NodeId, NodeRun>,
    /// Every committed checkpoint: hash → (tick, budget, spent up to it).
    committed: BTreeMap<Hash32, (u64, i64, i64)>,
    /// EI-3: parent → the one child it may have.
    children: BTreeMap<Hash32, Hash32>,
    /// Recoveries not yet followed by their first commit: node → anchor.
    reanchoring: BTreeMap<NodeId, Hash32>,
    /// Checkpoints on branches a recovery abandoned: nothing may extend them.
    abandoned: BTreeSet<Hash32>,
    /// Nodes that detected divergence and must stop (EI-11).
    must_stop: BTreeSet<NodeId>,
    /// EI-1 per epoch: epoch major → the node that ticked in it. Never
    /// forgotten (not on crash, restart or wipe): it is the checker's own
    /// record, not a node's disk.
    ticked_in: BTreeMap<u64, NodeId>,
    /// Nodes whose disk the simulator wiped and that got no record since.
    wiped: BTreeSet<NodeId>,
    /// The tick each source sealed its last handoff at.
    sealed: BTreeMap<NodeId, u64>,
    /// Set when a wipe destroyed the last record that held the agent
    /// (node, time); cleared when any node holds it again. The fault model
    /// destroyed every copy: liveness is impossible, not violated.
    lost: Option<(NodeId, u64)>,
    /// Nodes that hold a checkpoint of the agent: they committed, adopted
    /// or loaded one, and did not delete it (after a confirmed handoff) or
    /// lose it (wipe) since. A record without one (a target whose adopt
    /// failed, a RECOVERY_REQUIRED left by a lost RETIRED write) holds
    /// nothing a recovery could resume.
    copies: BTreeSet<NodeId>,
    /// Nodes that deleted their copy and committed none since: a reload
    /// there (the record names a head, the key is gone) is no copy.
    deleted: BTreeSet<NodeId>,
}

/// A state in which a node keeps the agent's checkpoint and can still
/// tick it, hand it on, or recover it.
fn holds(state: State) -> bool {
    matches!(state, State::ActiveOwner | State::HandoffInitiated | State::HandoffPending | State::RecoveryRequired)
}

/// The oracle. Feed it with [`Checker::observe`] in event order.
#[derive(Default)]
pub struct Checker {
    agents: BTreeMap<AgentId, AgentModel>,
    /// Nodes whose process is down (crashed, not yet restarted).
    down: BTreeSet<NodeId>,
    /// Nodes that misbehaved ([`Obs::Distrusted`]).
    distrusted: BTreeSet<NodeId>,
    /// Count of observations per kind, for coverage reporting.
    pub seen: BTreeMap<&'static str, u64>,
}

fn opt_state(s: Option<State>) -> &'static str {
    s.map(State::name).unwrap_or("ABSENT")
}

impl Checker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Final authority state of `agent` on `node` as the events told it.
    pub fn authority(&self, node: &NodeId, agent: &AgentId) -> Option<State> {
        self.agents.get(agent)?.records.get(node).map(|r| r.state)
    }

    /// Authority of `agent` on every node that holds a record of it.
    pub fn states(&self, agent: &AgentId) -> Vec<(NodeId, State)> {
        self.agents
            .get(agent)
            .map(|m| m.records.iter().map(|(n, r)| (n.clone(), r.state)).collect())
            .unwrap_or_default()
    }

    /// Highest committed tick of `agent` on any node.
    pub fn highest_tick(&self, agent: &AgentId) -> Option<u64> {
        self.agents.get(agent)?.committed.values().map(|(t, _, _)| *t).max()
    }

    /// The node whose wipe destroyed the last copy of `agent`, and when, if
    /// no node has held the agent since: the checker's own record, so a
    /// node that dropped an agent by itself is never excused as "lost".
    pub fn lost(&self, agent: &AgentId) -> Option<(NodeId, u64)> {
        self.agents.get(agent)?.lost.clone()
    }

    /// The misbehaving nodes holding the only copies of `agent`, if no
    /// honest node holds one: a Byzantine host that destroyed or withholds
    /// the newest state holds the agent hostage, and no protocol can make
    /// it give the agent back (like a wipe of the last copy, not a
    /// liveness failure of the protocol).
    pub fn hostage_holders(&self, agent: &AgentId) -> Option<Vec<NodeId>> {
        let m = self.agents.get(agent)?;
        let holding: Vec<&NodeId> =
            m.copies.iter().filter(|n| m.records.get(*n).is_some_and(|r| holds(r.state))).collect();
        let honest = holding.iter().any(|n| !self.distrusted.contains(*n));
        (!honest && !holding.is_empty()).then(|| holding.into_iter().cloned().collect())
    }

    /// Which node ticked `agent` in each epoch major (EI-1 per epoch).
    pub fn tickers(&self, agent: &AgentId) -> BTreeMap<u64, NodeId> {
        self.agents.get(agent).map(|m| m.ticked_in.clone()).unwrap_or_default()
    }

    pub fn observe(&mut self, at_ns: u64, node: &NodeId, obs: &Obs) -> Result<(), Violation> {
        *self.seen.entry(obs_kind(obs)).or_default() += 1;
        match obs {
            Obs::Crashed => {
                self.down.insert(node.clone());
                // A new process starts a new run: unfinished and
                // uncommitted work is legitimately lost (EI-2).
                //
                // Except the charges of a distrusted node's ticks: its
                // commits reach the checker only when an honest node adopts
                // them (the adversary filter holds them), possibly after
                // this crash, and such a commit's interval can begin with
                // ticks it ran before it misbehaved, which were observed at
                // once. Dropping those would make an honest bill look like
                // a money lie (RE-3). A later re-run of a tick overwrites
                // its entry; the rest of the run is the new process's.
                let distrusted = self.distrusted.contains(node);
                for m in self.agents.values_mut() {
                    match m.runs.remove(node) {
                        Some(run) if distrusted && !run.pending.is_empty() => {
                            m.runs.insert(node.clone(), NodeRun { pending: run.pending, ..NodeRun::default() });
                        }
                        _ => {}
                    }
                }
                return Ok(());
            }
            Obs::Booted => {
                self.down.remove(node);
                return Ok(());
            }
            Obs::Distrusted => {
                self.distrusted.insert(node.clone());
                return Ok(());
            }
            _ => {}
        }
        let down = &self.down;
        let distrusted = &self.distrusted;
        let agent = match obs {
            Obs::Deployed { agent, .. }
            | Obs::Loaded { agent, .. }
            | Obs::TickStarted { agent, .. }
            | Obs::Ticked { agent, .. }
            | Obs::Committed { agent, .. }
            | Obs::Authority { agent, .. }
            | Obs::Divergence { agent }
            | Obs::Halted { agent, .. }
            | Obs::Fault { agent }
            | Obs::Recovered { agent, .. }
            | Obs::Forgot { agent }
            | Obs::CopyDeleted { agent } => agent.clone(),
            Obs::Crashed | Obs::Booted | Obs::Distrusted => unreachable!("handled above"),
        };
        let m = self.agents.entry(agent.clone()).or_default();
        let fail = |invariant, nodes: Vec<NodeId>, message: String| {
            Err(Violation { invariant, at_ns, nodes, agent: agent.clone(), message })
        };
        let one = || vec![node.clone()];
        match obs {
            Obs::Deployed { budget, .. } => {
                // Deploy commits the genesis checkpoint here.
                m.copies.insert(node.clone());
                m.initial_budget = Some(*budget);
                m.committed.entry(Hash32::ZERO).or_insert((0, *budget, 0));
            }
            Obs::Recovered { anchor, .. } => {
                m.reanchoring.insert(node.clone(), *anchor);
            }
            Obs::CopyDeleted { .. } => {
                m.copies.remove(node);
                m.deleted.insert(node.clone());
            }
            Obs::Forgot { .. } => {
                let copy = |n: &NodeId, r: &Record| holds(r.state) && m.copies.contains(n);
                let held_here = m.records.get(node).is_some_and(|r| copy(node, r));
                if held_here && !m.records.iter().any(|(n, r)| n != node && copy(n, r)) {
                    m.lost = Some((node.clone(), at_ns));
                }
                m.copies.remove(node);
                m.deleted.remove(node);
                m.records.remove(node);
                m.runs.remove(node);
                m.wiped.insert(node.clone());
            }
            Obs::Fault { .. } => {
                if let Some(r) = m.records.get_mut(node) {
                    r.uncertain = true;
                }
                m.runs.entry(node.clone()).or_default().faulted = true;
            }
            Obs::Loaded { state, epoch, head_tick, head, .. } => {
                // A wiped disk holds nothing: whatever it loads is a phantom.
                if m.wiped.contains(node) {
                    return fail(
                        AUTH_RELOAD,
                        one(),
                        format!("loaded a {} record at epoch {epoch} from a disk the simulator wiped", state.name()),
                    );
                }
                let Some(rec) = m.records.get(node).copied() else {
                    return fail(
                        AUTH_RELOAD,
                        one(),
                        format!("loaded a {} record at epoch {epoch} it never reported", state.name()),
                    );
                };
                // What a restart may show: the record as last reported (a
                // HANDOFF_INITIATED is never persisted: it reloads as
                // ACTIVE_OWNER), or RECOVERY_REQUIRED when in doubt.
                let same = *state == rec.state && epoch.major == rec.epoch.major;
                let unpersisted = rec.state == State::HandoffInitiated
                    && *state == State::ActiveOwner
                    && epoch.major == rec.epoch.major;
                if !(same || unpersisted || *state == State::RecoveryRequired || rec.uncertain) {
                    return fail(
                        AUTH_RELOAD,
                        one(),
                        format!(
                            "reloaded {} at epoch {epoch}, but last reported {} at epoch {}",
                            state.name(),
                            rec.state.name(),
                            rec.epoch
                        ),
                    );
                }
                m.records.insert(node.clone(), Record { state: *state, epoch: *epoch, uncertain: false, ..rec });
                if *head != Hash32::ZERO && !m.deleted.contains(node) {
                    m.copies.insert(node.clone());
                }
                if holds(*state) && m.copies.contains(node) {
                    m.lost = None;
                }
                let budget = m.committed.get(head).map(|(_, b, _)| *b).unwrap_or(0);
                m.runs.insert(node.clone(), NodeRun { head: Some((*head_tick, budget)), ..NodeRun::default() });
            }
            Obs::TickStarted { base, tick, budget, .. } => {
                // EI-2: execution resumes only from a committed checkpoint.
                if !m.committed.contains_key(base) {
                    return fail("EI-2", one(), format!("tick {tick} runs from uncommitted checkpoint {base:?}"));
                }
                // RE-8 for an owner's tick: none after the agent halted on
                // this run, none at or below the committed head. A tick
                // without authority (no record, RETIRED, ...) is EI-1 or
                // CM-5 when it finishes: that names the worse fault.
                let owner = m.records.get(node).is_some_and(|r| r.state == State::ActiveOwner);
                let run = m.runs.entry(node.clone()).or_default();
                if owner && run.halted {
                    return fail("RE-8", one(), format!("tick {tick} started after the agent halted here"));
                }
                if owner
                    && let Some((head, _)) = run.head
                    && *tick <= head
                {
                    return fail("RE-8", one(), format!("tick {tick} started at or below the committed head {head}"));
                }
                run.started = Some((*tick, *budget));
            }
            Obs::Ticked { tick, epoch, cost, paid, side_effects, exhausted, .. } => {
                let state = m.records.get(node).map(|r| r.state);
                // A distrusted node's authority changes were kept out from
                // the instant it misbehaved (a RefuseConfirm target can act
                // out before its own assume is reported): with no record at
                // all, its released ticks are judged by the other rules
                // (per epoch, chain, budget), not by a state never shown.
                let unknown = state.is_none() && distrusted.contains(node);
                if state != Some(State::ActiveOwner) && !unknown {
                    let inv = if *side_effects > 0 { "CM-5" } else { "EI-1" };
                    return fail(inv, one(), format!("tick {tick} (epoch {epoch}) run in state {}", opt_state(state)));
                }
                // EI-1: no other live node may hold the right to tick.
                let others: Vec<NodeId> = m
                    .records
                    .iter()
                    .filter(|(n, r)| {
                        *n != node && r.state == State::ActiveOwner && !down.contains(*n) && !distrusted.contains(*n)
                    })
                    .map(|(n, _)| n.clone())
                    .collect();
                if !others.is_empty() {
                    let mut nodes = one();
                    nodes.extend(others);
                    return fail("EI-1", nodes, format!("two tickers: tick {tick} while another node is ACTIVE_OWNER"));
                }
                // EI-1 per epoch: one epoch major, one ticking node, ever.
                match m.ticked_in.get(&epoch.major) {
                    Some(first) if first != node => {
                        return fail(
                            "EI-1",
                            vec![node.clone(), first.clone()],
                            format!(
                                "{node} ticks tick {tick} in epoch major {} that {first} already ticked in",
                                epoch.major
                            ),
                        );
                    }
                    Some(_) => {}
                    None => {
                        m.ticked_in.insert(epoch.major, node.clone());
                    }
                }
                let run = m.runs.entry(node.clone()).or_default();
                // RE-8: a tick finishes only after it was started, in order.
                let Some((started, budget)) = run.started.take().filter(|(t, _)| t == tick) else {
                    return fail("RE-8", one(), format!("tick {tick} finished without being started"));
                };
                debug_assert_eq!(started, *tick);
                if m.must_stop.contains(node) {
                    return fail("EI-11", one(), format!("tick {tick} after detecting divergence"));
                }
                if *cost < 0 || *paid < 0 {
                    return fail("RE-4", one(), format!("negative charge at tick {tick}: cost {cost}, paid {paid}"));
                }
                let bill = cost.saturating_add(*paid);
                // Spec §3: a tick never bills more than it started with; a
                // tick cut for budget bills exactly what was left.
                if bill > budget || (*exhausted && bill != budget) {
                    return fail(
                        BUDGET_CUT,
                        one(),
                        format!(
                            "tick {tick} (outcome {}) billed cost {cost} + paid {paid} = {bill}, budget at its start was {budget}",
                            if *exhausted { "BudgetExhausted" } else { "not cut" }
                        ),
                    );
                }
                run.finished = Some(*tick);
                run.faulted = false;
                run.pending.insert(*tick, bill);
            }
            Obs::Committed { tick, hash, prev, budget, charged, handoff, source, .. } => {
                m.copies.insert(node.clone());
                m.deleted.remove(node);
                if m.records.get(node).is_some_and(|r| holds(r.state)) {
                    m.lost = None;
                }
                if *budget < 0 {
                    return fail("RE-3", one(), format!("negative budget {budget} at tick {tick}"));
                }
                // EI-3: one parent, one child, except the first commit after
                // a recorded recovery from that parent (spec §5: the recovery
                // re-anchors the lineage and abandons the other branch).
                if m.abandoned.contains(prev) {
                    return fail(
                        "EI-3",
                        one(),
                        format!("checkpoint at tick {tick} extends {prev:?}, on a branch a recovery abandoned"),
                    );
                }
                if let Some(child) = m.children.get(prev).copied()
                    && child != *hash
                    && charged.is_some()
                    && m.reanchoring.get(node) == Some(prev)
                {
                    m.abandoned.insert(child);
                    m.children.insert(*prev, *hash);
                }
                if charged.is_some() {
                    m.reanchoring.remove(node);
                }
                if let Some(child) = m.children.get(prev)
                    && child != hash
                {
                    return fail(
                        "EI-3",
                        one(),
                        format!("second child of {prev:?}: {hash:?} at tick {tick} (first: {child:?})"),
                    );
                }
                let Some(charged) = charged else {
                    // Adopted by a migration target: exactly what the source sealed.
                    if let Some(src) = source
                        && let Some(sealed) = m.sealed.get(src)
                        && sealed != tick
                    {
                        return fail(
                            HANDOFF_LOST_TICKS,
                            vec![node.clone(), src.clone()],
                            format!("adopted tick {tick} from {src}, whose last handoff sealed tick {sealed}"),
                        );
                    }
                    if !m.committed.contains_key(hash) {
                        return fail(
                            "EI-2",
                            one(),
                            format!("adopted checkpoint {hash:?} at tick {tick} was never committed"),
                        );
                    }
                    let run = m.runs.entry(node.clone()).or_default();
                    run.head = Some((*tick, *budget));
                    run.pending.clear();
                    return Ok(());
                };
                let run = m.runs.entry(node.clone()).or_default();
                // RE-8: commits strictly increase within one node run.
                if let Some((head, _)) = run.head
                    && *tick <= head
                    && !m.committed.contains_key(hash)
                {
                    return fail("RE-8", one(), format!("commit of tick {tick} after tick {head} on the same run"));
                }
                // No finished tick is left out of a handoff's seal.
                if *handoff
                    && let Some(done) = run.finished
                    && done != *tick
                {
                    return fail(
                        HANDOFF_LOST_TICKS,
                        one(),
                        format!("handoff sealed at tick {tick}, but the last finished tick was {done}"),
                    );
                }
                if *handoff {
                    m.sealed.insert(node.clone(), *tick);
                }
                if m.committed.contains_key(hash) {
                    return Ok(());
                }
                m.children.insert(*prev, *hash);
                let (prev_tick, prev_budget, prev_spent) = match m.committed.get(prev) {
                    Some(p) => *p,
                    None => {
                        return fail(
                            "EI-2",
                            one(),
                            format!("checkpoint at tick {tick} extends unknown parent {prev:?}"),
                        );
                    }
                };
                if *budget > prev_budget {
                    return fail("RE-4", one(), format!("budget rose from {prev_budget} to {budget} at tick {tick}"));
                }
                let spent_now: i64 =
                    if prev_tick < *tick { run.pending.range(prev_tick + 1..=*tick).map(|(_, c)| *c).sum() } else { 0 };
                run.pending.retain(|t, _| *t > *tick);
                run.head = Some((*tick, *budget));
                if *charged != spent_now {
                    return fail(
                        "RE-3",
                        one(),
                        format!("checkpoint at tick {tick} claims {charged} charged, its ticks charged {spent_now}"),
                    );
                }
                let spent = prev_spent.saturating_add(spent_now);
                if let Some(initial) = m.initial_budget
                    && initial.saturating_sub(spent) != *budget
                {
                    return fail(
                        "RE-3",
                        one(),
                        format!(
                            "budget not conserved at tick {tick}: initial {initial} - charged {spent} != {budget} in checkpoint"
                        ),
                    );
                }
                m.committed.insert(*hash, (*tick, *budget, spent));
            }
            Obs::Authority { from, to, epoch, reason, .. } => {
                let rec = m.records.get(node).copied();
                let last = rec.map(|r| (r.state, r.epoch));
                let target = rec.is_some_and(|r| r.target);
                // The node's own `from` must be what it last reported; a
                // RETIRED record is archived, not transitioned, when the agent
                // comes back (spec §5), so the event shows a new record.
                let archived = from.is_none() && rec.is_some_and(|r| r.state == State::Retired);
                if *from != rec.map(|r| r.state) && !rec.is_some_and(|r| r.uncertain) && !archived {
                    return fail(
                        AUTH_TRANSITION,
                        one(),
                        format!(
                            "transition reported from {}, but the node last reported {}",
                            opt_state(*from),
                            opt_state(rec.map(|r| r.state))
                        ),
                    );
                }
                if !transition_allowed(last, target, *to, *epoch, reason) {
                    return fail(
                        AUTH_TRANSITION,
                        one(),
                        format!(
                            "forbidden transition {} -> {} (reason {reason}, epoch {} -> {epoch}{})",
                            opt_state(last.map(|l| l.0)),
                            to.name(),
                            last.map(|l| l.1.to_string()).unwrap_or_else(|| "-".into()),
                            if target { ", target" } else { "" }
                        ),
                    );
                }
                let new_record = *reason == Reason::PackageReceived && *to == State::HandoffPending;
                let run = m.runs.entry(node.clone()).or_default();
                // No finished tick is left behind when the source gives up authority.
                if *reason == Reason::Relinquished {
                    match (run.finished, run.head) {
                        (Some(done), Some((head, _))) if done > head => {
                            return fail(
                                HANDOFF_LOST_TICKS,
                                one(),
                                format!("relinquished with tick {done} finished but only tick {head} committed"),
                            );
                        }
                        (Some(done), None) => {
                            return fail(
                                HANDOFF_LOST_TICKS,
                                one(),
                                format!("relinquished with tick {done} finished and nothing committed on this run"),
                            );
                        }
                        (_, Some((head, _))) => {
                            m.sealed.insert(node.clone(), head);
                        }
                        _ => {}
                    }
                }
                if new_record || matches!(reason, Reason::Recovery | Reason::UnsafeSelfRecovery) {
                    // A new chain position on this node: a recovery may
                    // re-anchor below the old head, a package sets it.
                    *run = NodeRun::default();
                }
                if *to == State::ActiveOwner {
                    // EI-5: at most one node holds authority.
                    let holders: Vec<NodeId> = m
                        .records
                        .iter()
                        .filter(|(n, r)| *n != node && r.state == State::ActiveOwner && !distrusted.contains(*n))
                        .map(|(n, _)| n.clone())
                        .collect();
                    if !holders.is_empty() {
                        let mut nodes = one();
                        nodes.extend(holders);
                        return fail("EI-5", nodes, "two nodes hold authority".to_string());
                    }
                }
                if *to == State::RecoveryRequired {
                    m.must_stop.remove(node);
                }
                m.wiped.remove(node);
                let target = if new_record {
                    true
                } else if *to == State::ActiveOwner {
                    false
                } else {
                    target
                };
                if new_record {
                    // A package's checkpoint is a copy only once adopted.
                    m.copies.remove(node);
                }
                m.records.insert(node.clone(), Record { state: *to, epoch: *epoch, target, uncertain: false });
                if holds(*to) && m.copies.contains(node) {
                    m.lost = None;
                }
            }
            Obs::Divergence { .. } => {
                m.must_stop.insert(node.clone());
            }
            Obs::Halted { budget, .. } => {
                let run = m.runs.entry(node.clone()).or_default();
                run.halted = true;
                // Spec §3: the remainder is billed and written down, not stranded.
                if *budget
                    && !run.faulted
                    && let Some(done) = run.finished
                    && run.head != Some((done, 0))
                {
                    let head = run.head.map(|(t, b)| format!("tick {t} with budget {b}")).unwrap_or("none".into());
                    return fail(
                        BUDGET_FINAL,
                        one(),
                        format!(
                            "halted for budget after tick {done}; final checkpoint expected at tick {done} with budget 0, newest is {head}"
                        ),
                    );
                }
            }
            Obs::Crashed | Obs::Booted | Obs::Distrusted => {}
        }
        Ok(())
    }
}

fn obs_kind(obs: &Obs) -> &'static str {
    match obs {
        Obs::Deployed { .. } => "deployed",
        Obs::Booted => "booted",
        Obs::Loaded { .. } => "loaded",
        Obs::TickStarted { .. } => "tick_started",
        Obs::Ticked { .. } => "ticked",
        Obs::Committed { .. } => "committed",
        Obs::Authority { .. } => "authority",
        Obs::Divergence { .. } => "divergence",
        Obs::Halted { .. } => "halted",
        Obs::Fault { .. } => "fault",
        Obs::Crashed => "crashed",
        Obs::Distrusted => "distrusted",
        Obs::Forgot { .. } => "forgot",
        Obs::CopyDeleted { .. } => "copy_deleted",
        Obs::Recovered { .. } => "recovered",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    fn n(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }
    fn ag() -> AgentId {
        AgentId::new("counter").unwrap()
    }
    fn h(b: u8) -> Hash32 {
        Hash32([b; 32])
    }
    fn e(major: u64) -> Epoch {
        Epoch::new(major, 0)
    }
    fn auth(
        c: &mut Checker,
        node: &str,
        from: Option<State>,
        to: State,
        major: u64,
        reason: Reason,
    ) -> Result<(), Violation> {
        c.observe(0, &n(node), &Obs::Authority { agent: ag(), from, to, epoch: e(major), reason })
    }
    fn owner(c: &mut Checker, node: &str) {
        auth(c, node, None, ActiveOwner, 1, Reason::Deployed).unwrap();
    }
    fn tick_in(c: &mut Checker, node: &str, tick: u64, cost: i64, major: u64) -> Result<(), Violation> {
        let start = Obs::TickStarted { agent: ag(), tick, epoch: e(major), budget: 100, base: Hash32::ZERO };
        c.observe(0, &n(node), &start)?;
        let obs = Obs::Ticked { agent: ag(), tick, epoch: e(major), cost, paid: 0, side_effects: 0, exhausted: false };
        c.observe(0, &n(node), &obs)
    }
    fn tick(c: &mut Checker, node: &str, tick: u64, cost: i64) -> Result<(), Violation> {
        tick_in(c, node, tick, cost, 1)
    }

    fn deployed(node: &str) -> Checker {
        let mut c = Checker::new();
        c.observe(0, &n(node), &Obs::Deployed { agent: ag(), budget: 100 }).unwrap();
        owner(&mut c, node);
        c
    }
    fn commit(tick: u64, hash: Hash32, prev: Hash32, budget: i64, charged: i64) -> Obs {
        Obs::Committed { agent: ag(), tick, hash, prev, budget, charged: Some(charged), handoff: false, source: None }
    }

    #[test]
    fn conserved_chain_passes_and_leak_is_re3() {
        let mut c = deployed("a");
        tick(&mut c, "a", 1, 10).unwrap();
        tick(&mut c, "a", 2, 5).unwrap();
        c.observe(3, &n("a"), &commit(2, h(1), Hash32::ZERO, 85, 15)).unwrap();
        tick(&mut c, "a", 3, 5).unwrap();
        assert_eq!(c.observe(5, &n("a"), &commit(3, h(2), h(1), 81, 5)).unwrap_err().invariant, "RE-3");
    }

    #[test]
    fn node_accounting_that_disagrees_with_its_ticks_is_re3() {
        let mut c = deployed("a");
        tick(&mut c, "a", 1, 10).unwrap();
        let err = c.observe(3, &n("a"), &commit(1, h(1), Hash32::ZERO, 91, 9)).unwrap_err();
        assert_eq!(err.invariant, "RE-3");
    }

    #[test]
    fn two_owners_are_ei5_and_a_second_live_ticker_is_ei1() {
        let mut c = deployed("a");
        let err = auth(&mut c, "b", None, ActiveOwner, 1, Reason::Deployed).unwrap_err();
        assert_eq!(err.invariant, "EI-5");
        let mut c2 = deployed("a");
        let rec = Record { state: ActiveOwner, epoch: e(2), target: false, uncertain: false };
        c2.agents.get_mut(&ag()).unwrap().records.insert(n("b"), rec);
        let err = tick_in(&mut c2, "b", 1, 1, 2).unwrap_err();
        assert_eq!(err.invariant, "EI-1");
        assert_eq!(err.nodes, vec![n("b"), n("a")]);
        // A crashed owner cannot tick: not a second ticker.
        c2.observe(3, &n("a"), &Obs::Crashed).unwrap();
        tick_in(&mut c2, "b", 1, 1, 2).unwrap();
    }

    #[test]
    fn fork_is_ei3_tick_outside_owner_is_ei1_unstarted_tick_is_re8() {
        let mut c = deployed("a");
        c.observe(1, &n("a"), &commit(0, h(1), Hash32::ZERO, 100, 0)).unwrap();
        assert_eq!(c.observe(2, &n("b"), &commit(0, h(2), Hash32::ZERO, 100, 0)).unwrap_err().invariant, "EI-3");
        // c has no record at all: a tick there runs without authority.
        assert_eq!(tick(&mut c, "c", 1, 1).unwrap_err().invariant, "EI-1");
        let start = Obs::TickStarted { agent: ag(), tick: 5, epoch: e(1), budget: 100, base: h(9) };
        assert_eq!(c.observe(4, &n("a"), &start).unwrap_err().invariant, "EI-2");
        let finish =
            Obs::Ticked { agent: ag(), tick: 7, epoch: e(1), cost: 1, paid: 0, side_effects: 0, exhausted: false };
        assert_eq!(c.observe(5, &n("a"), &finish).unwrap_err().invariant, "RE-8");
    }

    #[test]
    fn re8_commits_increase_and_ticks_start_above_the_head() {
        let mut c = deployed("a");
        c.observe(0, &n("a"), &commit(0, h(1), Hash32::ZERO, 100, 0)).unwrap();
        tick(&mut c, "a", 1, 1).unwrap();
        c.observe(1, &n("a"), &commit(1, h(2), h(1), 99, 1)).unwrap();
        // A tick at the committed head (a replay of tick 1 as new work).
        let again = Obs::TickStarted { agent: ag(), tick: 1, epoch: e(1), budget: 99, base: h(2) };
        let err = c.observe(2, &n("a"), &again).unwrap_err();
        assert_eq!(err.invariant, "RE-8", "{err}");
        // A new link that does not move the tick forward on the same run.
        let mut c = deployed("a");
        c.observe(0, &n("a"), &commit(0, h(1), Hash32::ZERO, 100, 0)).unwrap();
        tick(&mut c, "a", 1, 1).unwrap();
        c.observe(1, &n("a"), &commit(1, h(2), h(1), 99, 1)).unwrap();
        let err = c.observe(2, &n("a"), &commit(1, h(3), h(2), 99, 0)).unwrap_err();
        assert_eq!(err.invariant, "RE-8", "{err}");
        // After a crash the new run starts from what it loads.
        c.observe(3, &n("a"), &Obs::Crashed).unwrap();
        let load = Obs::Loaded { agent: ag(), state: ActiveOwner, epoch: e(1), head_tick: 1, head: h(2) };
        c.observe(4, &n("a"), &load).unwrap();
        tick(&mut c, "a", 2, 1).unwrap();
    }

    /// Brings node "x" to `from` by allowed steps; returns the checker.
    /// `PendingTarget`/`PendingSource` distinguish the two HANDOFF_PENDING roles.
    #[derive(Clone, Copy, Debug)]
    enum Start {
        Absent,
        Owner,
        Initiated,
        PendingSource,
        PendingTarget,
        Retired,
        Recovery,
    }

    fn reach(start: Start) -> Checker {
        let mut c = Checker::new();
        c.observe(0, &n("x"), &Obs::Deployed { agent: ag(), budget: 100 }).unwrap();
        let steps: &[(Option<State>, State, Reason)] = match start {
            Start::Absent => &[],
            Start::Owner => &[(None, ActiveOwner, Reason::Deployed)],
            Start::Initiated => {
                &[(None, ActiveOwner, Reason::Deployed), (Some(ActiveOwner), HandoffInitiated, Reason::HandoffStarted)]
            }
            Start::PendingSource => &[
                (None, ActiveOwner, Reason::Deployed),
                (Some(ActiveOwner), HandoffInitiated, Reason::HandoffStarted),
                (Some(HandoffInitiated), HandoffPending, Reason::Relinquished),
            ],
            Start::PendingTarget => &[(None, HandoffPending, Reason::PackageReceived)],
            Start::Retired => &[
                (None, ActiveOwner, Reason::Deployed),
                (Some(ActiveOwner), HandoffInitiated, Reason::HandoffStarted),
                (Some(HandoffInitiated), HandoffPending, Reason::Relinquished),
                (Some(HandoffPending), Retired, Reason::Confirmed),
            ],
            Start::Recovery => {
                &[(None, ActiveOwner, Reason::Deployed), (Some(ActiveOwner), RecoveryRequired, Reason::LeaseExpired)]
            }
        };
        for (from, to, reason) in steps {
            auth(&mut c, "x", *from, *to, 1, reason.clone()).unwrap_or_else(|v| panic!("{start:?}: {v}"));
        }
        c
    }

    fn current(start: Start) -> Option<State> {
        match start {
            Start::Absent => None,
            Start::Owner => Some(ActiveOwner),
            Start::Initiated => Some(HandoffInitiated),
            Start::PendingSource | Start::PendingTarget => Some(HandoffPending),
            Start::Retired => Some(Retired),
            Start::Recovery => Some(RecoveryRequired),
        }
    }

    #[test]
    fn every_forbidden_transition_of_the_table_is_auth_transition() {
        // Each forbidden arrow of spec §5 (with its reasons), written out
        // by hand: (from, to, reason, epoch major of the new state).
        let forbidden: &[(Start, State, Reason, u64)] = &[
            // A node without a record may only be deployed to or receive a package.
            (Start::Absent, HandoffInitiated, Reason::HandoffStarted, 1),
            (Start::Absent, Retired, Reason::Shutdown, 1),
            (Start::Absent, ActiveOwner, Reason::Assumed, 2),
            (Start::Absent, ActiveOwner, Reason::Recovery, 2),
            (Start::Absent, HandoffPending, Reason::Relinquished, 1),
            // ACTIVE_OWNER: only -> HI (handoff), -> RETIRED (shutdown), -> RR.
            (Start::Owner, HandoffPending, Reason::Relinquished, 1),
            (Start::Owner, HandoffPending, Reason::PackageReceived, 2), // an owner adopting a package
            (Start::Owner, ActiveOwner, Reason::Recovery, 2),
            (Start::Owner, Retired, Reason::Confirmed, 1),
            (Start::Owner, HandoffInitiated, Reason::Recovery, 1),
            // HANDOFF_INITIATED: only -> HP (relinquished), -> AO (aborted), -> RR.
            (Start::Initiated, Retired, Reason::Confirmed, 1),
            (Start::Initiated, ActiveOwner, Reason::Recovery, 2),
            (Start::Initiated, HandoffInitiated, Reason::HandoffStarted, 1),
            (Start::Initiated, HandoffPending, Reason::PackageReceived, 1),
            // HANDOFF_PENDING, source: -> RETIRED (confirmed), -> AO (aborted), -> RR.
            (Start::PendingSource, ActiveOwner, Reason::Assumed, 2),
            (Start::PendingSource, Retired, Reason::Shutdown, 1),
            (Start::PendingSource, HandoffInitiated, Reason::HandoffStarted, 1),
            // HANDOFF_PENDING, target: -> AO (assumed), -> RR.
            (Start::PendingTarget, ActiveOwner, Reason::HandoffAborted, 1),
            (Start::PendingTarget, Retired, Reason::Confirmed, 1),
            (Start::PendingTarget, HandoffPending, Reason::PackageReceived, 2),
            // RETIRED is terminal; only a fresh package at a higher epoch replaces it.
            (Start::Retired, ActiveOwner, Reason::Recovery, 2),
            (Start::Retired, HandoffInitiated, Reason::HandoffStarted, 1),
            (Start::Retired, HandoffPending, Reason::PackageReceived, 1),
            // RECOVERY_REQUIRED: -> AO only by recovery; never accepts a handoff (defect 6).
            (Start::Recovery, HandoffPending, Reason::PackageReceived, 2),
            (Start::Recovery, ActiveOwner, Reason::Assumed, 3),
            (Start::Recovery, ActiveOwner, Reason::HandoffAborted, 1),
            (Start::Recovery, Retired, Reason::Confirmed, 1),
            (Start::Recovery, HandoffInitiated, Reason::HandoffStarted, 1),
        ];
        for (start, to, reason, major) in forbidden {
            let mut c = reach(*start);
            let err = auth(&mut c, "x", current(*start), *to, *major, reason.clone())
                .expect_err(&format!("{start:?} -> {to:?} ({reason}) must be forbidden"));
            assert_eq!(err.invariant, AUTH_TRANSITION, "{start:?} -> {to:?}: {err}");
            assert!(err.message.contains(to.name()) && err.message.contains(&reason.to_string()), "{err}");
        }
        // And every allowed arrow passes.
        let allowed: &[(Start, State, Reason, u64)] = &[
            (Start::Absent, ActiveOwner, Reason::Deployed, 1),
            (Start::Absent, HandoffPending, Reason::PackageReceived, 1),
            (Start::Owner, HandoffInitiated, Reason::HandoffStarted, 1),
            (Start::Owner, Retired, Reason::Shutdown, 1),
            (Start::Initiated, HandoffPending, Reason::Relinquished, 1),
            (Start::Initiated, ActiveOwner, Reason::HandoffAborted, 1),
            (Start::PendingSource, Retired, Reason::Confirmed, 1),
            (Start::PendingSource, ActiveOwner, Reason::HandoffAborted, 1),
            (Start::PendingTarget, ActiveOwner, Reason::Assumed, 2),
            (Start::Retired, HandoffPending, Reason::PackageReceived, 3),
            (Start::Recovery, ActiveOwner, Reason::Recovery, 2),
            (Start::Recovery, ActiveOwner, Reason::UnsafeSelfRecovery, 2),
        ];
        for (start, to, reason, major) in allowed {
            let mut c = reach(*start);
            auth(&mut c, "x", current(*start), *to, *major, reason.clone())
                .unwrap_or_else(|v| panic!("{start:?} -> {to:?} ({reason}): {v}"));
        }
        for start in [Start::Owner, Start::Initiated, Start::PendingSource, Start::PendingTarget, Start::Retired] {
            let mut c = reach(start);
            auth(&mut c, "x", current(start), RecoveryRequired, 1, Reason::Ambiguous).unwrap();
        }
    }

    #[test]
    fn a_from_that_is_not_the_last_reported_state_is_auth_transition() {
        let mut c = reach(Start::Owner);
        let err = auth(&mut c, "x", Some(RecoveryRequired), ActiveOwner, 2, Reason::Recovery).unwrap_err();
        assert_eq!(err.invariant, AUTH_TRANSITION);
    }

    #[test]
    fn an_agent_is_a_hostage_only_when_every_holder_misbehaved() {
        // x owns it and hands it to b; b adopts: two holders.
        let mut c = reach(Start::Owner);
        c.agents.get_mut(&ag()).unwrap().copies.insert(n("x")); // x's genesis
        assert_eq!(c.hostage_holders(&ag()), None, "an honest holder");
        c.observe(1, &n("x"), &Obs::Distrusted).unwrap();
        assert_eq!(c.hostage_holders(&ag()), Some(vec![n("x")]), "the only holder misbehaved");
        auth(&mut c, "b", None, HandoffPending, 1, Reason::PackageReceived).unwrap();
        assert_eq!(c.hostage_holders(&ag()), Some(vec![n("x")]), "a package not yet adopted is no copy");
        c.agents.get_mut(&ag()).unwrap().copies.insert(n("b")); // b's adopt commit
        assert_eq!(c.hostage_holders(&ag()), None, "b holds an honest copy, even in HANDOFF_PENDING");
        // No copy anywhere is LOST's business (a wipe), not a hostage.
        assert_eq!(Checker::new().hostage_holders(&ag()), None);
    }

    #[test]
    fn an_agent_is_lost_only_when_a_wipe_destroyed_its_last_holder() {
        // x owns the agent, hands it to b, retires; b is wiped: lost on b.
        let mut c = reach(Start::Owner);
        assert_eq!(c.lost(&ag()), None);
        auth(&mut c, "b", None, HandoffPending, 1, Reason::PackageReceived).unwrap();
        auth(&mut c, "x", Some(ActiveOwner), HandoffInitiated, 1, Reason::HandoffStarted).unwrap();
        auth(&mut c, "x", Some(HandoffInitiated), HandoffPending, 1, Reason::Relinquished).unwrap();
        auth(&mut c, "b", Some(HandoffPending), ActiveOwner, 2, Reason::Assumed).unwrap();
        c.agents.get_mut(&ag()).unwrap().copies.insert(n("b")); // b's adopt commit
        // While x still holds it in HANDOFF_PENDING, wiping b loses nothing.
        let mut early = reach(Start::Owner);
        auth(&mut early, "x", Some(ActiveOwner), RecoveryRequired, 1, Reason::Ambiguous).unwrap();
        early.observe(1, &n("b"), &Obs::Forgot { agent: ag() }).unwrap();
        assert_eq!(early.lost(&ag()), None, "x still holds a copy");
        auth(&mut c, "x", Some(HandoffPending), Retired, 1, Reason::Confirmed).unwrap();
        // Wiping a node that holds only a RETIRED record loses nothing.
        c.observe(3, &n("x"), &Obs::Forgot { agent: ag() }).unwrap();
        assert_eq!(c.lost(&ag()), None);
        c.observe(5, &n("b"), &Obs::Crashed).unwrap();
        c.observe(5, &n("b"), &Obs::Forgot { agent: ag() }).unwrap();
        assert_eq!(c.lost(&ag()), Some((n("b"), 5)));
        // A node that holds it again (a replayed package, say) clears it,
        // once it adopted the checkpoint.
        auth(&mut c, "x", None, HandoffPending, 3, Reason::PackageReceived).unwrap();
        assert_eq!(c.lost(&ag()), Some((n("b"), 5)), "a package not yet adopted is no copy");
        c.agents.get_mut(&ag()).unwrap().copies.insert(n("x")); // x's adopt commit
        auth(&mut c, "x", Some(HandoffPending), ActiveOwner, 4, Reason::Assumed).unwrap();
        assert_eq!(c.lost(&ag()), None);

        // Explore disk-swarm 1588: the source deleted its copy after the
        // confirmation, but its RETIRED record did not persist and reloads
        // as RECOVERY_REQUIRED. That record holds nothing: wiping the new
        // owner loses the agent.
        let mut c = reach(Start::Owner);
        auth(&mut c, "b", None, HandoffPending, 1, Reason::PackageReceived).unwrap();
        auth(&mut c, "x", Some(ActiveOwner), HandoffInitiated, 1, Reason::HandoffStarted).unwrap();
        auth(&mut c, "x", Some(HandoffInitiated), HandoffPending, 1, Reason::Relinquished).unwrap();
        auth(&mut c, "b", Some(HandoffPending), ActiveOwner, 2, Reason::Assumed).unwrap();
        c.agents.get_mut(&ag()).unwrap().copies.insert(n("b")); // b's adopt commit
        auth(&mut c, "x", Some(HandoffPending), Retired, 1, Reason::Confirmed).unwrap();
        c.observe(4, &n("x"), &Obs::CopyDeleted { agent: ag() }).unwrap();
        c.observe(4, &n("x"), &Obs::Crashed).unwrap();
        c.observe(5, &n("x"), &Obs::Booted).unwrap();
        auth(&mut c, "x", Some(Retired), RecoveryRequired, 1, Reason::RestartInDoubt).unwrap();
        // Its reload names the head its record kept; the key is gone.
        let reload =
            Obs::Loaded { agent: ag(), state: RecoveryRequired, epoch: Epoch::new(1, 0), head_tick: 0, head: h(9) };
        c.observe(5, &n("x"), &reload).unwrap();
        c.observe(6, &n("b"), &Obs::Forgot { agent: ag() }).unwrap();
        assert_eq!(c.lost(&ag()), Some((n("b"), 6)));

        // Explore disk-swarm 1685: the target's adopt failed on a full disk
        // (RECOVERY_REQUIRED with no checkpoint), then the source was wiped:
        // the target's record holds nothing a recovery could resume.
        let mut c = reach(Start::Owner);
        auth(&mut c, "b", None, HandoffPending, 1, Reason::PackageReceived).unwrap();
        auth(&mut c, "b", Some(HandoffPending), RecoveryRequired, 1, Reason::Fault).unwrap();
        auth(&mut c, "x", Some(ActiveOwner), RecoveryRequired, 1, Reason::Superseded).unwrap();
        c.observe(7, &n("x"), &Obs::Forgot { agent: ag() }).unwrap();
        assert_eq!(c.lost(&ag()), Some((n("x"), 7)));
    }

    #[test]
    fn ei1_per_epoch_across_crash_restart_and_wipe() {
        // Defect 3: b assumes 2.0 and ticks, b is wiped, a is recovered and
        // takes 2.0 again: a second node ticking epoch major 2 is EI-1.
        let mut c = reach(Start::Owner);
        tick_in(&mut c, "x", 1, 1, 1).unwrap();
        auth(&mut c, "b", None, HandoffPending, 1, Reason::PackageReceived).unwrap();
        auth(&mut c, "x", Some(ActiveOwner), RecoveryRequired, 1, Reason::Ambiguous).unwrap();
        auth(&mut c, "b", Some(HandoffPending), ActiveOwner, 2, Reason::Assumed).unwrap();
        tick_in(&mut c, "b", 2, 1, 2).unwrap();
        c.observe(1, &n("b"), &Obs::Crashed).unwrap();
        c.observe(1, &n("b"), &Obs::Forgot { agent: ag() }).unwrap();
        c.observe(2, &n("b"), &Obs::Booted).unwrap();
        auth(&mut c, "x", Some(RecoveryRequired), ActiveOwner, 2, Reason::Recovery).unwrap();
        let err = tick_in(&mut c, "x", 2, 1, 2).unwrap_err();
        assert_eq!(err.invariant, "EI-1");
        assert_eq!(err.nodes, vec![n("x"), n("b")]);
        assert!(err.message.contains("epoch major 2") && err.message.contains("b already ticked"), "{err}");

        // The same after a plain crash and restart (no wipe): still EI-1.
        let mut c = reach(Start::Owner);
        tick_in(&mut c, "x", 1, 1, 1).unwrap();
        auth(&mut c, "x", Some(ActiveOwner), RecoveryRequired, 1, Reason::LeaseExpired).unwrap();
        auth(&mut c, "b", None, HandoffPending, 0, Reason::PackageReceived).unwrap();
        auth(&mut c, "b", Some(HandoffPending), ActiveOwner, 1, Reason::Assumed).unwrap();
        c.observe(1, &n("x"), &Obs::Crashed).unwrap();
        let err = tick_in(&mut c, "b", 1, 1, 1).unwrap_err();
        assert_eq!(err.invariant, "EI-1", "{err}");

        // Renewal bumps only the generation on the same node: fine; a
        // later major on another node: fine.
        let mut c = reach(Start::Owner);
        tick_in(&mut c, "x", 1, 1, 1).unwrap();
        let start = Obs::TickStarted { agent: ag(), tick: 2, epoch: Epoch::new(1, 3), budget: 99, base: Hash32::ZERO };
        c.observe(0, &n("x"), &start).unwrap();
        let fin = Obs::Ticked {
            agent: ag(),
            tick: 2,
            epoch: Epoch::new(1, 3),
            cost: 1,
            paid: 0,
            side_effects: 0,
            exhausted: false,
        };
        c.observe(0, &n("x"), &fin).unwrap();
        auth(&mut c, "x", Some(ActiveOwner), RecoveryRequired, 1, Reason::LeaseExpired).unwrap();
        auth(&mut c, "b", None, HandoffPending, 1, Reason::PackageReceived).unwrap();
        auth(&mut c, "b", Some(HandoffPending), ActiveOwner, 2, Reason::Assumed).unwrap();
        tick_in(&mut c, "b", 3, 1, 2).unwrap();
        assert_eq!(c.tickers(&ag()), BTreeMap::from([(1, n("x")), (2, n("b"))]));
    }

    #[test]
    fn a_cut_tick_bills_the_remainder_and_a_budget_halt_leaves_a_final_checkpoint() {
        let run = |cost: i64, exhausted: bool, final_budget: Option<i64>| -> Result<(), Violation> {
            let mut c = deployed("a");
            c.observe(0, &n("a"), &commit(0, h(1), Hash32::ZERO, 100, 0))?;
            let start = Obs::TickStarted { agent: ag(), tick: 1, epoch: e(1), budget: 100, base: h(1) };
            c.observe(1, &n("a"), &start)?;
            let fin = Obs::Ticked { agent: ag(), tick: 1, epoch: e(1), cost, paid: 0, side_effects: 0, exhausted };
            c.observe(2, &n("a"), &fin)?;
            if let Some(b) = final_budget {
                c.observe(3, &n("a"), &commit(1, h(2), h(1), b, cost))?;
            }
            c.observe(4, &n("a"), &Obs::Halted { agent: ag(), budget: true })
        };
        // Defect 4: cut for budget, billed 0 of the 100 left.
        assert_eq!(run(0, true, Some(100)).unwrap_err().invariant, BUDGET_CUT);
        assert_eq!(run(101, false, None).unwrap_err().invariant, BUDGET_CUT);
        // Billed right, but no final checkpoint: stranded.
        assert_eq!(run(100, true, None).unwrap_err().invariant, BUDGET_FINAL);
        run(100, true, Some(0)).unwrap();
        // A fault in between (the final write failed) excuses it.
        let mut c = deployed("a");
        let start = Obs::TickStarted { agent: ag(), tick: 1, epoch: e(1), budget: 100, base: Hash32::ZERO };
        c.observe(1, &n("a"), &start).unwrap();
        let fin =
            Obs::Ticked { agent: ag(), tick: 1, epoch: e(1), cost: 100, paid: 0, side_effects: 0, exhausted: true };
        c.observe(2, &n("a"), &fin).unwrap();
        c.observe(3, &n("a"), &Obs::Fault { agent: ag() }).unwrap();
        c.observe(4, &n("a"), &Obs::Halted { agent: ag(), budget: true }).unwrap();
        // And a halted agent ticks no more on that run (RE-8).
        assert_eq!(tick(&mut c, "a", 2, 0).unwrap_err().invariant, "RE-8");
    }

    #[test]
    fn a_handoff_that_drops_finished_ticks_is_handoff_lost_ticks() {
        let mut c = deployed("a");
        c.observe(0, &n("a"), &commit(0, h(1), Hash32::ZERO, 100, 0)).unwrap();
        tick(&mut c, "a", 1, 1).unwrap();
        tick(&mut c, "a", 2, 1).unwrap();
        auth(&mut c, "a", Some(ActiveOwner), HandoffInitiated, 1, Reason::HandoffStarted).unwrap();
        // Sealing tick 1 while tick 2 finished loses tick 2.
        let seal = Obs::Committed {
            agent: ag(),
            tick: 1,
            hash: h(2),
            prev: h(1),
            budget: 99,
            charged: Some(1),
            handoff: true,
            source: None,
        };
        assert_eq!(c.observe(1, &n("a"), &seal).unwrap_err().invariant, HANDOFF_LOST_TICKS);
        // Relinquishing with a finished tick uncommitted loses it too.
        let mut c = deployed("a");
        c.observe(0, &n("a"), &commit(0, h(1), Hash32::ZERO, 100, 0)).unwrap();
        tick(&mut c, "a", 1, 1).unwrap();
        auth(&mut c, "a", Some(ActiveOwner), HandoffInitiated, 1, Reason::HandoffStarted).unwrap();
        let err = auth(&mut c, "a", Some(HandoffInitiated), HandoffPending, 1, Reason::Relinquished).unwrap_err();
        assert_eq!(err.invariant, HANDOFF_LOST_TICKS);
        // A target adopting another tick than the one sealed.
        let mut c = deployed("a");
        c.observe(0, &n("a"), &commit(0, h(1), Hash32::ZERO, 100, 0)).unwrap();
        tick(&mut c, "a", 1, 1).unwrap();
        auth(&mut c, "a", Some(ActiveOwner), HandoffInitiated, 1, Reason::HandoffStarted).unwrap();
        let seal = Obs::Committed {
            agent: ag(),
            tick: 1,
            hash: h(2),
            prev: h(1),
            budget: 99,
            charged: Some(1),
            handoff: true,
            source: None,
        };
        c.observe(1, &n("a"), &seal).unwrap();
        auth(&mut c, "a", Some(HandoffInitiated), HandoffPending, 1, Reason::Relinquished).unwrap();
        auth(&mut c, "b", None, HandoffPending, 1, Reason::PackageReceived).unwrap();
        let adopt = |tick, hash, prev, budget| Obs::Committed {
            agent: ag(),
            tick,
            hash,
            prev,
            budget,
            charged: None,
            handoff: false,
            source: Some(n("a")),
        };
        let err = c.observe(2, &n("b"), &adopt(0, h(1), Hash32::ZERO, 100)).unwrap_err();
        assert_eq!(err.invariant, HANDOFF_LOST_TICKS);
        c.observe(2, &n("b"), &adopt(1, h(2), h(1), 99)).unwrap();
    }

    #[test]
    fn reloads_must_match_the_last_report_and_a_wiped_disk_loads_nothing() {
        let load = |state, major| Obs::Loaded { agent: ag(), state, epoch: e(major), head_tick: 0, head: Hash32::ZERO };
        let mut c = reach(Start::Retired);
        c.observe(0, &n("x"), &Obs::Crashed).unwrap();
        assert_eq!(c.observe(1, &n("x"), &load(ActiveOwner, 1)).unwrap_err().invariant, AUTH_RELOAD);
        let mut c = reach(Start::Retired);
        c.observe(1, &n("x"), &load(Retired, 1)).unwrap();
        c.observe(1, &n("x"), &load(RecoveryRequired, 1)).unwrap();
        // HANDOFF_INITIATED is never persisted: it reloads as the owner.
        let mut c = reach(Start::Initiated);
        c.observe(1, &n("x"), &load(ActiveOwner, 1)).unwrap();
        // Defect 5: a wiped node loads a phantom record.
        let mut c = reach(Start::Owner);
        c.observe(1, &n("x"), &Obs::Forgot { agent: ag() }).unwrap();
        assert_eq!(c.observe(2, &n("x"), &load(RecoveryRequired, 0)).unwrap_err().invariant, AUTH_RELOAD);
        // A node that never reported the agent loads nothing either.
        let mut c = reach(Start::Owner);
        assert_eq!(c.observe(2, &n("y"), &load(ActiveOwner, 1)).unwrap_err().invariant, AUTH_RELOAD);
    }

    #[test]
    fn a_returning_agent_archives_a_retired_record_but_no_live_one() {
        let mut c = deployed("a");
        auth(&mut c, "a", Some(ActiveOwner), Retired, 1, Reason::Shutdown).unwrap();
        // Spec §5: the RETIRED record is archived; the event shows a new one.
        auth(&mut c, "a", None, HandoffPending, 3, Reason::PackageReceived).unwrap();
        // A live record is never silently replaced.
        let mut live = deployed("a");
        let err = auth(&mut live, "a", None, HandoffPending, 3, Reason::PackageReceived).unwrap_err();
        assert_eq!(err.invariant, AUTH_TRANSITION, "{err}");
    }

    #[test]
    fn a_recorded_recovery_may_re_anchor_once_and_abandons_the_other_branch() {
        let mut c = deployed("a");
        c.observe(1, &n("a"), &commit(0, h(1), Hash32::ZERO, 100, 0)).unwrap();
        c.observe(2, &n("a"), &commit(1, h(2), h(1), 100, 0)).unwrap();
        // Without a recorded recovery, a second child of h(1) is a fork.
        let mut forked = deployed("a");
        forked.observe(1, &n("a"), &commit(0, h(1), Hash32::ZERO, 100, 0)).unwrap();
        forked.observe(2, &n("a"), &commit(1, h(2), h(1), 100, 0)).unwrap();
        assert_eq!(forked.observe(3, &n("a"), &commit(2, h(3), h(1), 100, 0)).unwrap_err().invariant, "EI-3");
        // A recovery on a from anchor h(1): its next commit re-anchors there.
        let rec = Obs::Recovered { agent: ag(), anchor: h(1), epoch: e(5) };
        c.observe(3, &n("a"), &rec).unwrap();
        c.observe(4, &n("a"), &commit(2, h(3), h(1), 100, 0)).unwrap();
        // Once only, and nothing may extend the abandoned branch.
        assert_eq!(c.observe(5, &n("a"), &commit(3, h(4), h(1), 100, 0)).unwrap_err().invariant, "EI-3");
        let mut c2 = deployed("a");
        c2.observe(1, &n("a"), &commit(0, h(1), Hash32::ZERO, 100, 0)).unwrap();
        c2.observe(2, &n("b"), &commit(1, h(2), h(1), 100, 0)).unwrap();
        c2.observe(3, &n("a"), &rec).unwrap();
        c2.observe(4, &n("a"), &commit(2, h(3), h(1), 100, 0)).unwrap();
        let err = c2.observe(5, &n("b"), &commit(3, h(6), h(2), 100, 0)).unwrap_err();
        assert!(err.invariant == "EI-3" && err.message.contains("abandoned"), "{err}");
    }
}
