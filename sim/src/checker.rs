//! The invariant checker: an independent oracle fed by the nodes' event
//! streams (converted to [`Obs`]) in the order the simulation produced them.
//! It keeps its own model of who holds authority and of every agent's chain
//! and money, and reports the first violation by the spec's invariant name.
//! It never looks inside a node; it only believes what the events say.

use igor::checkpoint::Hash32;
use igor::units::{AgentId, Epoch, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

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
    /// A tick is about to run, descending from the committed checkpoint `base`.
    TickStarted { agent: AgentId, tick: u64, base: Hash32 },
    /// A tick ran to `tick` (ticks completed) and charged `cost` + `paid`.
    Ticked { agent: AgentId, tick: u64, epoch: Epoch, cost: i64, paid: i64, side_effects: u32 },
    /// A checkpoint became durable (or was adopted from a transfer).
    /// `charged`: what the node says the ticks since `prev` cost (with
    /// payments); `None` for an adopted checkpoint (no new link).
    Committed { agent: AgentId, tick: u64, hash: Hash32, prev: Hash32, budget: i64, charged: Option<i64> },
    /// Authority moved `from` → `to` (`from` = None for a new record).
    Authority { agent: AgentId, from: Option<State>, to: State },
    /// The node detected divergent heads for one epoch (EI-11).
    Divergence { agent: AgentId },
    /// The node's process died (injected by the simulator).
    Crashed,
    /// The node's records of `agent` were lost with its disk.
    Forgot { agent: AgentId },
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

#[derive(Default)]
struct AgentModel {
    initial_budget: Option<i64>,
    /// Latest authority state per node.
    authority: BTreeMap<NodeId, State>,
    /// Tick each node announced it is running (RE-8: start before finish).
    started: BTreeMap<NodeId, u64>,
    /// Every committed checkpoint: hash → (tick, budget, spent up to it).
    committed: BTreeMap<Hash32, (u64, i64, i64)>,
    /// EI-3: parent → the one child it may have.
    children: BTreeMap<Hash32, Hash32>,
    /// Ticks run per node since that node's last commit: tick → charge.
    pending: BTreeMap<NodeId, BTreeMap<u64, i64>>,
    /// Nodes that detected divergence and must stop (EI-11).
    must_stop: BTreeSet<NodeId>,
}

/// The oracle. Feed it with [`Checker::observe`] in event order.
#[derive(Default)]
pub struct Checker {
    agents: BTreeMap<AgentId, AgentModel>,
    /// Nodes whose process is down (crashed, not yet restarted).
    down: BTreeSet<NodeId>,
    /// Count of observations per kind, for coverage reporting.
    pub seen: BTreeMap<&'static str, u64>,
}

impl Checker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Final authority state of `agent` on `node` as the events told it.
    pub fn authority(&self, node: &NodeId, agent: &AgentId) -> Option<State> {
        self.agents.get(agent)?.authority.get(node).copied()
    }

    /// Authority of `agent` on every node that holds a record of it.
    pub fn states(&self, agent: &AgentId) -> Vec<(NodeId, State)> {
        self.agents.get(agent).map(|m| m.authority.iter().map(|(n, s)| (n.clone(), *s)).collect()).unwrap_or_default()
    }

    /// Highest committed tick of `agent` on any node.
    pub fn highest_tick(&self, agent: &AgentId) -> Option<u64> {
        self.agents.get(agent)?.committed.values().map(|(t, _, _)| *t).max()
    }

    pub fn observe(&mut self, at_ns: u64, node: &NodeId, obs: &Obs) -> Result<(), Violation> {
        *self.seen.entry(obs_kind(obs)).or_default() += 1;
        match obs {
            Obs::Crashed => {
                self.down.insert(node.clone());
                for m in self.agents.values_mut() {
                    m.started.remove(node);
                    m.pending.remove(node);
                }
                return Ok(());
            }
            Obs::Booted => {
                self.down.remove(node);
                return Ok(());
            }
            _ => {}
        }
        let down = &self.down;
        let agent = match obs {
            Obs::Deployed { agent, .. }
            | Obs::TickStarted { agent, .. }
            | Obs::Ticked { agent, .. }
            | Obs::Committed { agent, .. }
            | Obs::Authority { agent, .. }
            | Obs::Divergence { agent }
            | Obs::Forgot { agent } => agent.clone(),
            Obs::Crashed | Obs::Booted => unreachable!("handled above"),
        };
        let m = self.agents.entry(agent.clone()).or_default();
        let fail = |invariant, nodes: Vec<NodeId>, message: String| {
            Err(Violation { invariant, at_ns, nodes, agent: agent.clone(), message })
        };
        match obs {
            Obs::Deployed { budget, .. } => {
                m.initial_budget = Some(*budget);
                m.committed.entry(Hash32::ZERO).or_insert((0, *budget, 0));
            }
            Obs::Forgot { .. } => {
                m.authority.remove(node);
                m.started.remove(node);
                m.pending.remove(node);
            }
            Obs::TickStarted { base, tick, .. } => {
                // EI-2: execution resumes only from a committed checkpoint.
                if !m.committed.contains_key(base) {
                    return fail(
                        "EI-2",
                        vec![node.clone()],
                        format!("tick {tick} runs from uncommitted checkpoint {base:?}"),
                    );
                }
                m.started.insert(node.clone(), *tick);
            }
            Obs::Ticked { tick, epoch, cost, paid, side_effects, .. } => {
                let state = m.authority.get(node).copied();
                if state != Some(State::ActiveOwner) {
                    let inv = if *side_effects > 0 { "CM-5" } else { "EI-1" };
                    let s = state.map(State::name).unwrap_or("ABSENT");
                    return fail(inv, vec![node.clone()], format!("tick {tick} (epoch {epoch}) run in state {s}"));
                }
                // EI-1: no other live node may hold the right to tick.
                let others: Vec<NodeId> = m
                    .authority
                    .iter()
                    .filter(|(n, s)| *n != node && **s == State::ActiveOwner && !down.contains(*n))
                    .map(|(n, _)| n.clone())
                    .collect();
                if !others.is_empty() {
                    let mut nodes = vec![node.clone()];
                    nodes.extend(others);
                    return fail("EI-1", nodes, format!("two tickers: tick {tick} while another node is ACTIVE_OWNER"));
                }
                // RE-8: a tick finishes only after it was started, in order.
                if m.started.remove(node) != Some(*tick) {
                    return fail("RE-8", vec![node.clone()], format!("tick {tick} finished without being started"));
                }
                if m.must_stop.contains(node) {
                    return fail("EI-11", vec![node.clone()], format!("tick {tick} after detecting divergence"));
                }
                if *cost < 0 || *paid < 0 {
                    return fail(
                        "RE-4",
                        vec![node.clone()],
                        format!("negative charge at tick {tick}: cost {cost}, paid {paid}"),
                    );
                }
                m.pending.entry(node.clone()).or_default().insert(*tick, cost.saturating_add(*paid));
            }
            Obs::Committed { tick, hash, prev, budget, charged, .. } => {
                if *budget < 0 {
                    return fail("RE-3", vec![node.clone()], format!("negative budget {budget} at tick {tick}"));
                }
                // EI-3: one parent, one child.
                if let Some(child) = m.children.get(prev)
                    && child != hash
                {
                    return fail(
                        "EI-3",
                        vec![node.clone()],
                        format!("second child of {prev:?}: {hash:?} at tick {tick} (first: {child:?})"),
                    );
                }
                if m.committed.contains_key(hash) {
                    // The same checkpoint adopted by a migration target.
                    return Ok(());
                }
                if charged.is_none() {
                    return fail(
                        "EI-2",
                        vec![node.clone()],
                        format!("adopted checkpoint {hash:?} at tick {tick} was never committed"),
                    );
                }
                m.children.insert(*prev, *hash);
                let (prev_tick, prev_budget, prev_spent) = match m.committed.get(prev) {
                    Some(p) => *p,
                    None => {
                        return fail(
                            "EI-2",
                            vec![node.clone()],
                            format!("checkpoint at tick {tick} extends unknown parent {prev:?}"),
                        );
                    }
                };
                if *budget > prev_budget {
                    return fail(
                        "RE-4",
                        vec![node.clone()],
                        format!("budget rose from {prev_budget} to {budget} at tick {tick}"),
                    );
                }
                let pending = m.pending.entry(node.clone()).or_default();
                let spent_now: i64 = pending.range(prev_tick + 1..=*tick).map(|(_, c)| *c).sum();
                pending.retain(|t, _| *t > *tick);
                if *charged != Some(spent_now) {
                    return fail(
                        "RE-3",
                        vec![node.clone()],
                        format!("checkpoint at tick {tick} claims {charged:?} charged, its ticks charged {spent_now}"),
                    );
                }
                let spent = prev_spent.saturating_add(spent_now);
                if let Some(initial) = m.initial_budget
                    && initial.saturating_sub(spent) != *budget
                {
                    return fail(
                        "RE-3",
                        vec![node.clone()],
                        format!(
                            "budget not conserved at tick {tick}: initial {initial} - charged {spent} != {budget} in checkpoint"
                        ),
                    );
                }
                m.committed.insert(*hash, (*tick, *budget, spent));
            }
            Obs::Authority { to, .. } => {
                if *to == State::ActiveOwner {
                    // EI-5: at most one node holds authority.
                    let holders: Vec<NodeId> = m
                        .authority
                        .iter()
                        .filter(|(n, s)| *n != node && **s == State::ActiveOwner)
                        .map(|(n, _)| n.clone())
                        .collect();
                    if !holders.is_empty() {
                        let mut nodes = vec![node.clone()];
                        nodes.extend(holders);
                        return fail("EI-5", nodes, "two nodes hold authority".to_string());
                    }
                }
                if *to == State::RecoveryRequired {
                    m.must_stop.remove(node);
                }
                m.authority.insert(node.clone(), *to);
            }
            Obs::Divergence { .. } => {
                m.must_stop.insert(node.clone());
            }
            Obs::Crashed | Obs::Booted => {}
        }
        Ok(())
    }
}

fn obs_kind(obs: &Obs) -> &'static str {
    match obs {
        Obs::Deployed { .. } => "deployed",
        Obs::Booted => "booted",
        Obs::TickStarted { .. } => "tick_started",
        Obs::Ticked { .. } => "ticked",
        Obs::Committed { .. } => "committed",
        Obs::Authority { .. } => "authority",
        Obs::Divergence { .. } => "divergence",
        Obs::Crashed => "crashed",
        Obs::Forgot { .. } => "forgot",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }
    fn ag() -> AgentId {
        AgentId::new("counter").unwrap()
    }
    fn h(b: u8) -> Hash32 {
        Hash32([b; 32])
    }
    fn owner(c: &mut Checker, node: &str) {
        let obs = Obs::Authority { agent: ag(), from: None, to: State::ActiveOwner };
        c.observe(0, &n(node), &obs).unwrap();
    }
    fn tick(c: &mut Checker, node: &str, tick: u64, cost: i64) -> Result<(), Violation> {
        c.observe(0, &n(node), &Obs::TickStarted { agent: ag(), tick, base: Hash32::ZERO })?;
        let obs = Obs::Ticked { agent: ag(), tick, epoch: Epoch::new(1, 0), cost, paid: 0, side_effects: 0 };
        c.observe(0, &n(node), &obs)
    }

    fn deployed(node: &str) -> Checker {
        let mut c = Checker::new();
        c.observe(0, &n(node), &Obs::Deployed { agent: ag(), budget: 100 }).unwrap();
        owner(&mut c, node);
        c
    }
    fn commit(tick: u64, hash: Hash32, prev: Hash32, budget: i64, charged: i64) -> Obs {
        Obs::Committed { agent: ag(), tick, hash, prev, budget, charged: Some(charged) }
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
        let err =
            c.observe(1, &n("b"), &Obs::Authority { agent: ag(), from: None, to: State::ActiveOwner }).unwrap_err();
        assert_eq!(err.invariant, "EI-5");
        let mut c2 = deployed("a");
        c2.agents.get_mut(&ag()).unwrap().authority.insert(n("b"), State::ActiveOwner);
        let err = tick(&mut c2, "b", 1, 1).unwrap_err();
        assert_eq!(err.invariant, "EI-1");
        assert_eq!(err.nodes, vec![n("b"), n("a")]);
        // A crashed owner cannot tick: not a second ticker.
        c2.observe(3, &n("a"), &Obs::Crashed).unwrap();
        tick(&mut c2, "b", 1, 1).unwrap();
    }

    #[test]
    fn fork_is_ei3_tick_outside_owner_is_ei1_unstarted_tick_is_re8() {
        let mut c = deployed("a");
        c.observe(1, &n("a"), &commit(0, h(1), Hash32::ZERO, 100, 0)).unwrap();
        assert_eq!(c.observe(2, &n("b"), &commit(0, h(2), Hash32::ZERO, 100, 0)).unwrap_err().invariant, "EI-3");
        assert_eq!(tick(&mut c, "c", 1, 1).unwrap_err().invariant, "EI-1");
        let err = c.observe(4, &n("a"), &Obs::TickStarted { agent: ag(), tick: 5, base: h(9) }).unwrap_err();
        assert_eq!(err.invariant, "EI-2");
        let finish = Obs::Ticked { agent: ag(), tick: 7, epoch: Epoch::new(1, 0), cost: 1, paid: 0, side_effects: 0 };
        assert_eq!(c.observe(5, &n("a"), &finish).unwrap_err().invariant, "RE-8");
    }
}
