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

//!
//! This file owns the state machine (`Checker::observe`); the vocabulary it
//! speaks (states, observations, violations, the §5 table) is `rules`.

mod rules;
#[cfg(test)]
mod tests;

pub use rules::{
    AUTH_RELOAD, AUTH_TRANSITION, BUDGET_CUT, BUDGET_FINAL, CHAIN, HANDOFF_LOST_TICKS, Obs, State, Violation,
    transition_allowed,
};

use igor::authority::Reason;
use igor::checkpoint::Hash32;
use igor::units::{AgentId, Epoch, NodeId};
use std::collections::{BTreeMap, BTreeSet};

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
