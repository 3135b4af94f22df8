//! Adversaries in the simulator (spec §8, A2–A4). The attacks themselves
//! live in [`crate::byzantine`] (a conduct for the node's state, an
//! interposer on its wire); this file holds what the simulator adds
//! around them: node keys and defence switches for each
//! host, the observation filter that keeps a Byzantine node's own,
//! unpreventable misdeeds (ticking a copy it keeps) out of the checker while
//! still judging everything honest nodes accept from it, and the audit of
//! collateral (detection time, ticks lost, budget drained, A3 bound).

use crate::byzantine::node_key_seed;
use crate::checker::Obs;
use crate::report::RunReport;
use crate::scenario::{Expect, NodeSpec, Scenario, Verdict};
use igor::checkpoint::Hash32;
use igor::identity::Keypair;
use igor::node::defence::Defence;
use igor::node::{Event, NodeConfig};
use igor::units::{AgentId, NodeId};
use std::collections::{BTreeMap, BTreeSet};

/// A3 bound: requests of one kind an attacker can make an honest node act
/// on per simulated minute with `rate_limit` on: the bucket's burst plus its
/// sustained rate (see `igor::node::defence`). `None` for kinds that are not
/// rate limited (replies).
pub fn a3_bound_per_minute(kind: &str) -> Option<u64> {
    use igor::node::defence::*;
    let per_min = |refill_ns: u64| 60_000_000_000 / refill_ns;
    match kind {
        "AgentTransfer" => Some(TRANSFER_BURST + per_min(TRANSFER_REFILL_NS)),
        "HeadAnnounce" => Some(ANNOUNCE_BURST + per_min(ANNOUNCE_REFILL_NS)),
        _ => None,
    }
}

/// Budget an A3 griefer that does not host the agent can drain from it,
/// microcents per minute: failed, refused or rejected interactions never
/// charge the agent (only ticks do, and only on its owner).
pub const A3_DRAIN_BOUND_PER_MINUTE: i64 = 0;

/// Apply a node's adversary and defence settings and the key directory.
pub fn configure(cfg: &mut NodeConfig, spec: &NodeSpec, all: &[NodeSpec]) {
    cfg.defences = spec.defences.unwrap_or_default();
    cfg.node_key_seed = Some(node_key_seed(&spec.name));
    cfg.peer_keys = all
        .iter()
        .filter_map(|n| Some((NodeId::new(n.name.clone()).ok()?, Keypair::from_seed(node_key_seed(&n.name)).public())))
        .collect();
}

/// The scenario with `defence` switched off on every node, expecting
/// `attack.off` if `off_expect` (else keeping the on-expectation, so that
/// the damage shows as failed expectations).
pub fn with_defence_off(s: &Scenario, defence: Defence, off_expect: bool) -> Scenario {
    let mut s = s.clone();
    for n in &mut s.nodes {
        let mut d = n.defences.unwrap_or_default();
        d.switch(defence, false);
        n.defences = Some(d);
    }
    if let (true, Some(off)) = (off_expect, s.attack.as_ref().and_then(|a| a.off.clone())) {
        s.expect = off;
    }
    s
}

/// Keeps a Byzantine node's own misdeeds out of the checker: once a node
/// has misbehaved, its authority claims are not the system's (no protocol
/// can stop a node from running code it holds), and its ticks and commits
/// are held back. A held commit reaches the checker, with the ticks it
/// covers, the moment an honest node adopts it (or a descendant): then it
/// *is* the system's, and the checker judges it like any other link (a
/// forked tick run without authority is EI-1, a money lie RE-3).
///
/// A held commit takes the held ticks it covers with it at the moment it
/// is made: a crash of the node then drops only the ticks no commit
/// covers (lost work, EI-2), never those of a commit still waiting to be
/// adopted.
#[derive(Debug, Default)]
pub struct Filter {
    byzantine: BTreeSet<NodeId>,
    /// Commit hash → (node, the ticks it covers, the commit).
    held: BTreeMap<Hash32, HeldCommit>,
    /// Ticks no held commit covers yet, per node and agent.
    held_ticks: HeldTicks,
}

#[derive(Debug)]
struct HeldCommit {
    node: NodeId,
    ticks: Vec<Obs>,
    commit: Obs,
}

fn tick_of(o: &Obs) -> u64 {
    match o {
        Obs::TickStarted { tick, .. } | Obs::Ticked { tick, .. } | Obs::Committed { tick, .. } => *tick,
        _ => 0,
    }
}

/// Ticks no held commit covers, per node and agent: one agent's commit
/// never takes another agent's ticks on the same node.
type HeldTicks = BTreeMap<(NodeId, AgentId), Vec<Obs>>;

fn drop_uncovered(held: &mut HeldTicks, node: &NodeId, agent: Option<&AgentId>) {
    held.retain(|(n, a), _| n != node || agent.is_some_and(|x| x != a));
}

impl Filter {
    pub fn is_byzantine(&self, node: &NodeId) -> bool {
        self.byzantine.contains(node)
    }

    /// An observation the simulator makes itself (a crash, a wipe): the
    /// work of a Byzantine node that no held commit covers is lost with
    /// its process or disk (EI-2), like an honest node's.
    pub fn action(&mut self, node: &NodeId, obs: Obs) -> Vec<(NodeId, Obs)> {
        match &obs {
            Obs::Crashed => drop_uncovered(&mut self.held_ticks, node, None),
            Obs::Forgot { agent } => drop_uncovered(&mut self.held_ticks, node, Some(agent)),
            _ => {}
        }
        vec![(node.clone(), obs)]
    }

    /// The observations the checker should see for one node event.
    pub fn filter(&mut self, node: &NodeId, event: &Event, obs: Option<Obs>) -> Vec<(NodeId, Obs)> {
        // A churn griefer's handoffs follow the protocol: its claims stay
        // the system's (the checker judges it like an honest host).
        let mut out = Vec::new();
        if let Event::Misbehaved { act, .. } = event
            && !act.starts_with(crate::byzantine::CHURN_ACT_PREFIX)
            && self.byzantine.insert(node.clone())
        {
            out.push((node.clone(), Obs::Distrusted));
        }
        let Some(obs) = obs else { return out };
        if self.byzantine.contains(node) {
            let kept = match obs {
                Obs::Committed { ref agent, hash, tick, charged: Some(_), .. } => {
                    let pending = self.held_ticks.entry((node.clone(), agent.clone())).or_default();
                    let split = pending.iter().position(|t| tick_of(t) > tick).unwrap_or(pending.len());
                    let ticks = pending.drain(..split).collect();
                    self.held.insert(hash, HeldCommit { node: node.clone(), ticks, commit: obs });
                    Vec::new()
                }
                Obs::TickStarted { ref agent, .. } | Obs::Ticked { ref agent, .. } => {
                    self.held_ticks.entry((node.clone(), agent.clone())).or_default().push(obs);
                    Vec::new()
                }
                Obs::Authority { .. }
                | Obs::Divergence { .. }
                | Obs::Loaded { .. }
                | Obs::Halted { .. }
                | Obs::Fault { .. } => Vec::new(),
                Obs::Crashed | Obs::Forgot { .. } => self.action(node, obs),
                other => vec![(node.clone(), other)],
            };
            out.extend(kept);
            return out;
        }
        let mut chain = Vec::new();
        if let Obs::Committed { hash, charged: None, .. } = &obs {
            let mut next = *hash;
            while let Some(held) = self.held.remove(&next) {
                if let Obs::Committed { prev, .. } = &held.commit {
                    next = *prev;
                }
                chain.push(held);
            }
            chain.reverse();
        }
        for HeldCommit { node: n, ticks, commit } in chain {
            out.extend(ticks.into_iter().map(|t| (n.clone(), t)));
            out.push((n, commit));
        }
        out.push((node.clone(), obs));
        out
    }
}

/// What the attack cost and when it was noticed, from the canonical trace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Collateral {
    /// First misbehaviour (s) and first defence reaction after it (s).
    pub attack_at_s: Option<f64>,
    pub detected_at_s: Option<f64>,
    /// The defence named by the first reaction.
    pub detected_by: Option<String>,
    /// Ticks honest nodes ran and then discarded by falling to
    /// RECOVERY_REQUIRED before committing them (EI-2).
    pub ticks_lost: u64,
    /// Microcents charged on Byzantine nodes beyond the ticks' own cost.
    pub budget_drained: i64,
    /// Requests honest nodes acted on per attacker per simulated minute,
    /// per kind (the highest over attackers); runs shorter than a minute
    /// count as one minute.
    pub admitted_per_minute: BTreeMap<String, u64>,
}

/// Audit a run's trace. Lines look like `000012.345 node kind k=v …`
/// (read with [`crate::trace::parse`], which unquotes values).
pub fn collateral(r: &RunReport) -> Collateral {
    let mut c = Collateral::default();
    let mut byz: BTreeSet<String> = BTreeSet::new();
    // Churn griefers: their transfers to each other count against the A3
    // bound too (each node, griefer or not, runs the same rate limit).
    let mut churn: BTreeSet<String> = BTreeSet::new();
    let mut admitted: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut uncommitted: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut pending_cost: BTreeMap<(String, String), i64> = BTreeMap::new();
    for line in r.trace.lines() {
        let Some(l) = crate::trace::parse(line) else { continue };
        let (node, at) = (l.host.as_str(), l.at_ns as f64 / 1e9);
        let num = |k: &str| l.int(k).unwrap_or(0);
        let key = (node.to_string(), l.get("agent").unwrap_or("").to_string());
        match l.kind.as_str() {
            "misbehaved" => {
                byz.insert(node.to_string());
                if l.get("act").is_some_and(|a| a.starts_with("bounces")) {
                    churn.insert(node.to_string());
                }
                c.attack_at_s.get_or_insert(at);
            }
            "claim_rejected" | "divergence_detected" if c.attack_at_s.is_some() && c.detected_at_s.is_none() => {
                c.detected_at_s = Some(at);
                c.detected_by = Some(l.get("defence").unwrap_or("divergence_detection").to_string());
            }
            "authority_changed" if !byz.contains(node) && l.get("to") == Some("RECOVERY_REQUIRED") => {
                // EI-2: work since the last checkpoint is discarded.
                c.ticks_lost += uncommitted.remove(&key).unwrap_or(0);
                if c.attack_at_s.is_some() && c.detected_at_s.is_none() {
                    c.detected_at_s = Some(at);
                    c.detected_by = Some(format!("pause ({})", l.get("reason").unwrap_or("?")));
                }
            }
            "message_received" if !byz.contains(node) || churn.contains(node) => {
                let kind = l.get("kind").unwrap_or("?");
                if let Some(peer) = l.get("peer").filter(|p| byz.contains(*p))
                    && a3_bound_per_minute(kind).is_some()
                {
                    *admitted.entry((peer.to_string(), kind.to_string())).or_default() += 1;
                }
            }
            "tick_finished" => {
                *pending_cost.entry(key.clone()).or_default() += num("cost") + num("paid");
                if !byz.contains(node) {
                    *uncommitted.entry(key).or_default() += 1;
                }
            }
            "checkpoint_committed" => {
                let ticks = pending_cost.remove(&key).unwrap_or(0);
                if byz.contains(node) {
                    c.budget_drained += (num("charged") + num("paid") - ticks).max(0);
                }
                uncommitted.remove(&key);
            }
            _ => {}
        }
    }
    let minutes = (r.sim_ns as f64 / 60e9).max(1.0);
    for ((_, kind), n) in admitted {
        let rate = (n as f64 / minutes).ceil() as u64;
        let e = c.admitted_per_minute.entry(kind).or_default();
        *e = (*e).max(rate);
    }
    c
}

impl Collateral {
    /// Whether some attacker exceeded the A3 bound for some kind.
    pub fn exceeds_a3_bound(&self) -> bool {
        self.admitted_per_minute.iter().any(|(k, n)| a3_bound_per_minute(k).is_some_and(|b| *n > b))
    }
}

/// The verdict of a run as the matrix reports it: the checker's first
/// violation, else the A3 bound, else the expectations that failed.
pub fn verdict(r: &RunReport, class: &str) -> String {
    if let Some(v) = &r.violation {
        return v.invariant.to_string();
    }
    if class == "A3" && collateral(r).exceeds_a3_bound() {
        return "A3-BOUND".to_string();
    }
    if !r.failures.is_empty() {
        return "DEGRADED".to_string();
    }
    "PASS".to_string()
}

/// Does a run match `expect` (an A3 bound breach counts as the violation
/// `A3-BOUND`, which the checker itself cannot see)?
pub fn matches(r: &RunReport, expect: &Expect, class: &str) -> bool {
    let v = verdict(r, class);
    match &expect.verdict {
        Verdict::Pass => v == "PASS",
        Verdict::Violation(name) if name == "A3-BOUND" => v == "A3-BOUND",
        Verdict::Violation(_) => r.matches_expectation(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::State;
    use crate::checker::{Checker, Violation};
    use igor::authority::Reason;
    use igor::units::{AgentId, Epoch};

    /// Filter and checker as the runner wires them, for one agent.
    struct Pipe {
        filter: Filter,
        checker: Checker,
    }

    fn node(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }
    fn agent() -> AgentId {
        AgentId::new("counter").unwrap()
    }
    fn h(b: u8) -> Hash32 {
        Hash32([b; 32])
    }

    impl Pipe {
        /// `agent` deployed on `n`, which owns it at epoch 1.0.
        fn new(n: &str) -> Self {
            let mut p = Pipe { filter: Filter::default(), checker: Checker::new() };
            p.obs(n, Obs::Deployed { agent: agent(), budget: 100 }).unwrap();
            p.authority(n, None, State::ActiveOwner, Reason::Deployed);
            p
        }
        fn event(&mut self, n: &str, event: Event, obs: Option<Obs>) -> Result<(), Violation> {
            for (who, o) in self.filter.filter(&node(n), &event, obs) {
                self.checker.observe(0, &who, &o)?;
            }
            Ok(())
        }
        fn obs(&mut self, n: &str, obs: Obs) -> Result<(), Violation> {
            self.event(n, Event::NodeShutdown, Some(obs))
        }
        /// A crash and restart injected by the simulator (not a node event).
        fn bounce(&mut self, n: &str) {
            for (who, o) in self.filter.action(&node(n), Obs::Crashed) {
                self.checker.observe(0, &who, &o).unwrap();
            }
            self.obs(n, Obs::Booted).unwrap();
        }
        fn misbehave(&mut self, n: &str) {
            let act = "took counter over, never confirms".to_string();
            self.event(n, Event::Misbehaved { agent: Some(agent()), act }, None).unwrap();
        }
        fn tick(&mut self, n: &str, tick: u64, major: u64) -> Result<(), Violation> {
            self.tick_of(n, agent(), tick, major)
        }
        fn tick_of(&mut self, n: &str, agent: AgentId, tick: u64, major: u64) -> Result<(), Violation> {
            let epoch = Epoch::new(major, 0);
            let budget = 100 - tick as i64;
            self.obs(n, Obs::TickStarted { agent: agent.clone(), tick, epoch, budget, base: Hash32::ZERO })?;
            self.obs(n, Obs::Ticked { agent, tick, epoch, cost: 1, paid: 0, side_effects: 0, exhausted: false })
        }
        fn commit(
            &mut self,
            n: &str,
            tick: u64,
            hash: Hash32,
            prev: Hash32,
            charged: Option<i64>,
        ) -> Result<(), Violation> {
            self.commit_of(n, agent(), tick, hash, prev, charged)
        }
        fn commit_of(
            &mut self,
            n: &str,
            agent: AgentId,
            tick: u64,
            hash: Hash32,
            prev: Hash32,
            charged: Option<i64>,
        ) -> Result<(), Violation> {
            let source = charged.is_none().then(|| node("b"));
            let budget = 100 - tick as i64;
            self.obs(n, Obs::Committed { agent, tick, hash, prev, budget, charged, handoff: false, source })
        }
        fn authority(&mut self, n: &str, from: Option<State>, to: State, reason: Reason) {
            self.obs(n, Obs::Authority { agent: agent(), from, to, epoch: Epoch::new(1, 0), reason }).unwrap();
        }
    }

    /// A RefuseConfirm target ticks once before it acts out (explore
    /// adversary-swarm seed 2166), commits that tick with the next five,
    /// crashes, and an honest node later adopts a descendant: the released
    /// commit's bill is the six ticks it covers, not a money lie.
    #[test]
    fn a_held_commit_keeps_the_ticks_it_covers_across_the_byzantine_nodes_crash() {
        use State::*;
        let mut p = Pipe::new("b");
        p.tick("b", 1, 1).unwrap(); // before it misbehaves: observed at once
        p.misbehave("b");
        for t in 2..=6 {
            p.tick("b", t, 1).unwrap();
        }
        p.commit("b", 6, h(1), Hash32::ZERO, Some(6)).unwrap(); // covers 1..=6
        p.tick("b", 7, 1).unwrap(); // never committed: lost with the crash
        p.bounce("b");
        p.tick("b", 7, 1).unwrap();
        p.tick("b", 8, 1).unwrap();
        p.commit("b", 8, h(2), h(1), Some(2)).unwrap();
        // c adopts b's head: both held commits are released with their ticks.
        p.authority("c", None, HandoffPending, Reason::PackageReceived);
        p.commit("c", 8, h(2), h(1), None).unwrap();
    }

    /// The other half: ticks a held commit covers, all run after the node
    /// misbehaved, survive its crash (they were dropped with the
    /// uncommitted ones, so the released commit billed ticks nobody saw).
    #[test]
    fn a_crash_drops_only_the_held_ticks_no_commit_covers() {
        use State::*;
        let mut p = Pipe::new("b");
        p.misbehave("b");
        for t in 1..=3 {
            p.tick("b", t, 1).unwrap();
        }
        p.commit("b", 3, h(1), Hash32::ZERO, Some(3)).unwrap();
        p.tick("b", 4, 1).unwrap();
        p.bounce("b");
        p.tick("b", 4, 1).unwrap();
        p.commit("b", 4, h(2), h(1), Some(1)).unwrap();
        p.authority("c", None, HandoffPending, Reason::PackageReceived);
        p.commit("c", 4, h(2), h(1), None).unwrap();
    }

    #[test]
    fn scenarios_without_adversaries_serialize_as_before() {
        let text = r#"Scenario(name: "x", seed: 1, duration_s: 10, nodes: [(name: "a")],
            agents: [(name: "counter", wasm: "c.wat", budget_microcents: 1, node: "a")], expect: (verdict: Pass))"#;
        let s = Scenario::parse(text, "x.ron").unwrap();
        let ron = s.to_ron();
        assert!(!ron.contains("adversary") && !ron.contains("attack") && !ron.contains("defences"), "{ron}");
    }

    /// Explore adversary-swarm seed 3920: a RefuseConfirm target also
    /// hosts its own decoy; the decoy's commit must not take the other
    /// agent's held ticks with it (they were released as the decoy's, so
    /// the counter's commit billed ticks nobody had seen).
    #[test]
    fn one_agents_held_commit_never_takes_another_agents_ticks() {
        use State::*;
        let decoy = AgentId::new("decoy").unwrap();
        let mut p = Pipe::new("b");
        p.obs("b", Obs::Deployed { agent: decoy.clone(), budget: 100 }).unwrap();
        p.misbehave("b");
        for t in 1..=3 {
            p.tick("b", t, 1).unwrap();
            p.tick_of("b", decoy.clone(), t, 1).unwrap();
        }
        p.commit_of("b", decoy, 3, h(9), Hash32::ZERO, Some(3)).unwrap();
        p.commit("b", 3, h(1), Hash32::ZERO, Some(3)).unwrap();
        p.authority("c", None, HandoffPending, Reason::PackageReceived);
        p.commit("c", 3, h(1), Hash32::ZERO, None).unwrap();
    }
}
