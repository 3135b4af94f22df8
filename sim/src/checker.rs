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
    /// An instance started (or resumed) from the checkpoint `head` at `tick`.
    Started { agent: AgentId, tick: u64, head: Hash32 },
    /// A tick ran to `tick` (ticks completed) and charged `cost` + `paid`.
    Ticked { agent: AgentId, tick: u64, epoch: Epoch, cost: i64, paid: i64, side_effects: u32 },
    /// A checkpoint became durable (or was adopted from a transfer).
    Committed { agent: AgentId, tick: u64, hash: Hash32, prev: Hash32, budget: i64 },
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
    /// Nodes with a started instance since their last crash (RE-8).
    running: BTreeSet<NodeId>,
    /// Every committed checkpoint: hash → (tick, budget, spent up to it).
    committed: BTreeMap<Hash32, (u64, i64, i64)>,
    /// EI-3: parent → the one child it may have.
    children: BTreeMap<Hash32, Hash32>,
    /// Ticks run per node since that node's last commit: tick → charge.
    pending: BTreeMap<NodeId, BTreeMap<u64, i64>>,
    /// Checkpoint each node's instance is running from (RE-3 base).
    base: BTreeMap<NodeId, Hash32>,
    /// Nodes that detected divergence and must stop (EI-11).
    must_stop: BTreeSet<NodeId>,
}

/// The oracle. Feed it with [`Checker::observe`] in event order.
#[derive(Default)]
pub struct Checker {
    agents: BTreeMap<AgentId, AgentModel>,
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

    /// Highest committed tick of `agent` on any node.
    pub fn highest_tick(&self, agent: &AgentId) -> Option<u64> {
        self.agents.get(agent)?.committed.values().map(|(t, _, _)| *t).max()
    }

    pub fn observe(&mut self, at_ns: u64, node: &NodeId, obs: &Obs) -> Result<(), Violation> {
        *self.seen.entry(obs_kind(obs)).or_default() += 1;
        if let Obs::Crashed = obs {
            for m in self.agents.values_mut() {
                m.running.remove(node);
                m.pending.remove(node);
            }
            return Ok(());
        }
        let agent = match obs {
            Obs::Deployed { agent, .. }
            | Obs::Started { agent, .. }
            | Obs::Ticked { agent, .. }
            | Obs::Committed { agent, .. }
            | Obs::Authority { agent, .. }
            | Obs::Divergence { agent }
            | Obs::Forgot { agent } => agent.clone(),
            Obs::Crashed => unreachable!("handled above"),
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
                m.running.remove(node);
                m.pending.remove(node);
            }
            Obs::Started { head, tick, .. } => {
                // EI-2: execution resumes only from a committed checkpoint.
                if !m.committed.contains_key(head) {
                    return fail(
                        "EI-2",
                        vec![node.clone()],
                        format!("started from uncommitted checkpoint {head:?} at tick {tick}"),
                    );
                }
                m.running.insert(node.clone());
                m.base.insert(node.clone(), *head);
                m.pending.remove(node);
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
                    .filter(|(n, s)| *n != node && **s == State::ActiveOwner && m.running.contains(*n))
                    .map(|(n, _)| n.clone())
                    .collect();
                if !others.is_empty() {
                    let mut nodes = vec![node.clone()];
                    nodes.extend(others);
                    return fail("EI-1", nodes, format!("two tickers: tick {tick} while another node is ACTIVE_OWNER"));
                }
                // RE-8: ticks only after the instance was started.
                if !m.running.contains(node) {
                    return fail("RE-8", vec![node.clone()], format!("tick {tick} before the instance started"));
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
            Obs::Committed { tick, hash, prev, budget, .. } => {
                if *budget < 0 {
                    return fail("RE-3", vec![node.clone()], format!("negative budget {budget} at tick {tick}"));
                }
                // EI-3: one parent, one child.
                if let Some(child) = m.children.get(prev) {
                    if child != hash {
                        return fail(
                            "EI-3",
                            vec![node.clone()],
                            format!("second child of {prev:?}: {hash:?} at tick {tick} (first: {child:?})"),
                        );
                    }
                }
                if m.committed.contains_key(hash) {
                    // The same checkpoint adopted by a migration target.
                    m.base.insert(node.clone(), *hash);
                    return Ok(());
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
                let spent = prev_spent.saturating_add(spent_now);
                if let Some(initial) = m.initial_budget {
                    if initial.saturating_sub(spent) != *budget {
                        return fail(
                            "RE-3",
                            vec![node.clone()],
                            format!(
                                "budget not conserved at tick {tick}: initial {initial} - charged {spent} != {budget} in checkpoint"
                            ),
                        );
                    }
                }
                m.committed.insert(*hash, (*tick, *budget, spent));
                m.base.insert(node.clone(), *hash);
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
            Obs::Crashed => {}
        }
        Ok(())
    }
}

fn obs_kind(obs: &Obs) -> &'static str {
    match obs {
        Obs::Deployed { .. } => "deployed",
        Obs::Started { .. } => "started",
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
    fn tick(tick: u64, cost: i64) -> Obs {
        Obs::Ticked { agent: ag(), tick, epoch: Epoch::new(1, 0), cost, paid: 0, side_effects: 0 }
    }
    fn start(c: &mut Checker, node: &str, head: Hash32) {
        c.observe(0, &n(node), &Obs::Started { agent: ag(), tick: 0, head }).unwrap();
    }

    #[test]
    fn conserved_chain_passes_and_leak_is_re3() {
        let mut c = Checker::new();
        c.observe(0, &n("a"), &Obs::Deployed { agent: ag(), budget: 100 }).unwrap();
        owner(&mut c, "a");
        start(&mut c, "a", Hash32::ZERO);
        c.observe(1, &n("a"), &tick(1, 10)).unwrap();
        c.observe(2, &n("a"), &tick(2, 5)).unwrap();
        let ok = Obs::Committed { agent: ag(), tick: 2, hash: h(1), prev: Hash32::ZERO, budget: 85 };
        c.observe(3, &n("a"), &ok).unwrap();
        c.observe(4, &n("a"), &tick(3, 5)).unwrap();
        let leak = Obs::Committed { agent: ag(), tick: 3, hash: h(2), prev: h(1), budget: 81 };
        assert_eq!(c.observe(5, &n("a"), &leak).unwrap_err().invariant, "RE-3");
    }

    #[test]
    fn two_tickers_are_ei1_and_two_owners_ei5() {
        let mut c = Checker::new();
        c.observe(0, &n("a"), &Obs::Deployed { agent: ag(), budget: 100 }).unwrap();
        owner(&mut c, "a");
        start(&mut c, "a", Hash32::ZERO);
        let err =
            c.observe(1, &n("b"), &Obs::Authority { agent: ag(), from: None, to: State::ActiveOwner }).unwrap_err();
        assert_eq!(err.invariant, "EI-5");
        // Had b got there anyway (the checker keeps going in tests), its tick is EI-1.
        let mut c2 = Checker::new();
        c2.observe(0, &n("a"), &Obs::Deployed { agent: ag(), budget: 100 }).unwrap();
        owner(&mut c2, "a");
        start(&mut c2, "a", Hash32::ZERO);
        c2.agents.get_mut(&ag()).unwrap().authority.insert(n("b"), State::ActiveOwner);
        start(&mut c2, "b", Hash32::ZERO);
        assert_eq!(c2.observe(2, &n("b"), &tick(1, 1)).unwrap_err().invariant, "EI-1");
    }

    #[test]
    fn fork_is_ei3_and_tick_outside_owner_is_ei1() {
        let mut c = Checker::new();
        c.observe(0, &n("a"), &Obs::Deployed { agent: ag(), budget: 100 }).unwrap();
        let first = Obs::Committed { agent: ag(), tick: 0, hash: h(1), prev: Hash32::ZERO, budget: 100 };
        c.observe(1, &n("a"), &first).unwrap();
        let fork = Obs::Committed { agent: ag(), tick: 0, hash: h(2), prev: Hash32::ZERO, budget: 100 };
        assert_eq!(c.observe(2, &n("b"), &fork).unwrap_err().invariant, "EI-3");
        assert_eq!(c.observe(3, &n("c"), &tick(1, 1)).unwrap_err().invariant, "EI-1");
        let err = c.observe(4, &n("c"), &Obs::Started { agent: ag(), tick: 5, head: h(9) }).unwrap_err();
        assert_eq!(err.invariant, "EI-2");
    }
}
