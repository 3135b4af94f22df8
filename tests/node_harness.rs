//! A hand-driven cluster of nodes for protocol tests: shared manual clock,
//! one in-memory disk per node, and a message pool the test controls
//! (deliver, duplicate, drop, reorder, delay), with crash and restart. The
//! nodes are the real `Node` with the counter executor; this file only moves
//! bytes and checks invariants, it decides nothing about the protocol.
#![allow(dead_code)]

use igor::authority::{AuthorityState, Role};
use igor::checkpoint::{Checkpoint, Hash32};
use igor::env::mem::{ManualClock, MemDisk, SeededEntropy};
use igor::env::{Disk, NetError};
use igor::lineage::{self, Lineage};
use igor::migration::Outcome;
use igor::node::fake::CounterExecutor;
use igor::node::{Event, Node, NodeConfig, NodeEvent, RequestId};
use igor::units::{AgentId, Microcents, NodeId};
use igor::wire::{Body, Envelope};
use std::collections::{BTreeMap, BTreeSet};

pub type TestNode = Node<CounterExecutor, MemDisk, ManualClock, SeededEntropy>;

pub const COST: Microcents = Microcents(1_000);
pub const START_UNIX_NS: i64 = 1_700_000_000_000_000_000;

#[derive(Clone, Debug)]
pub struct Request {
    pub from: usize,
    pub from_incarnation: u32,
    pub to: usize,
    pub id: RequestId,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct Reply {
    pub to: usize,
    pub to_incarnation: u32,
    pub id: RequestId,
    pub result: Result<Vec<u8>, NetError>,
}

pub struct Cluster {
    pub seed: u64,
    pub clock: ManualClock,
    pub ids: Vec<NodeId>,
    pub disks: Vec<MemDisk>,
    pub nodes: Vec<Option<TestNode>>,
    pub incarnation: Vec<u32>,
    pub requests: Vec<Request>,
    pub replies: Vec<Reply>,
    pub events: Vec<NodeEvent>,
    /// Requests of which some copy reached its target: the transport can
    /// no longer truthfully call them `Unreachable`.
    pub delivered: BTreeSet<(usize, u32, RequestId)>,
    pub configure: fn(&mut NodeConfig),
    pub executor: fn(usize) -> CounterExecutor,
}

pub fn agent() -> AgentId {
    AgentId::new("counter").unwrap()
}

pub fn default_executor(_: usize) -> CounterExecutor {
    CounterExecutor::new(COST)
}

impl Cluster {
    pub fn new(n: usize, seed: u64, configure: fn(&mut NodeConfig)) -> Self {
        Self::with_executors(n, seed, configure, default_executor)
    }

    pub fn with_executors(
        n: usize,
        seed: u64,
        configure: fn(&mut NodeConfig),
        executor: fn(usize) -> CounterExecutor,
    ) -> Self {
        let ids: Vec<NodeId> = (0..n).map(|i| NodeId::new(format!("n{i}")).unwrap()).collect();
        let mut c = Cluster {
            seed,
            clock: ManualClock::new(START_UNIX_NS),
            disks: (0..n).map(|_| MemDisk::new()).collect(),
            nodes: (0..n).map(|_| None).collect(),
            incarnation: vec![0; n],
            ids,
            requests: Vec::new(),
            replies: Vec::new(),
            events: Vec::new(),
            delivered: BTreeSet::new(),
            configure,
            executor,
        };
        for i in 0..n {
            c.start(i);
        }
        c
    }

    fn config(&self, i: usize) -> NodeConfig {
        let mut cfg = NodeConfig::new(self.ids[i].clone());
        cfg.peers = self.ids.clone();
        (self.configure)(&mut cfg);
        cfg
    }

    fn start(&mut self, i: usize) {
        self.incarnation[i] += 1;
        let entropy = SeededEntropy::derived(self.seed, &format!("{}-{}", self.ids[i], self.incarnation[i]));
        let node = Node::open(self.config(i), self.disks[i].clone(), self.clock.clone(), entropy, (self.executor)(i));
        self.nodes[i] = Some(node);
        self.pump();
    }

    pub fn node(&mut self, i: usize) -> &mut TestNode {
        self.nodes[i].as_mut().expect("node is up")
    }

    pub fn index(&self, id: &NodeId) -> usize {
        self.ids.iter().position(|x| x == id).expect("known node")
    }

    /// Collect outboxes and events from every live node.
    pub fn pump(&mut self) {
        for i in 0..self.nodes.len() {
            let inc = self.incarnation[i];
            let Some(n) = self.nodes[i].as_mut() else { continue };
            for o in n.take_outbox() {
                let to = self.ids.iter().position(|x| *x == o.to).expect("peer is a cluster node");
                self.requests.push(Request { from: i, from_incarnation: inc, to, id: o.id, body: o.body });
            }
            self.events.extend(n.drain_events());
        }
    }

    pub fn deploy(&mut self, i: usize, budget: i64) {
        let manifest = br#"{"capabilities":{},"migration_policy":{"enabled":true,"max_price_per_second":0}}"#;
        self.node(i).deploy(agent(), b"counter-module".to_vec(), manifest.to_vec(), Microcents(budget)).unwrap();
        self.pump();
    }

    /// Deliver request `k` (removed unless `duplicate`); the reply joins the pool.
    pub fn deliver(&mut self, k: usize, duplicate: bool) {
        let r = if duplicate { self.requests[k].clone() } else { self.requests.remove(k) };
        let from_id = self.ids[r.from].clone();
        let key = (r.from, r.from_incarnation, r.id);
        let result = match self.nodes[r.to].as_mut() {
            None if self.delivered.contains(&key) => {
                Err(NetError::Lost { peer: self.ids[r.to].clone(), reason: "down (a copy was delivered)".into() })
            }
            None => Err(NetError::Unreachable { peer: self.ids[r.to].clone(), reason: "down".into() }),
            Some(n) => {
                self.delivered.insert(key);
                let reply = n.handle_request(&from_id, &r.body);
                if reply.is_empty() {
                    Err(NetError::Lost { peer: self.ids[r.to].clone(), reason: "no answer".into() })
                } else {
                    Ok(reply)
                }
            }
        };
        self.replies.push(Reply { to: r.from, to_incarnation: r.from_incarnation, id: r.id, result });
        self.pump();
    }

    /// Drop request `k`; the sender learns `Unreachable` (truthfully: it was
    /// never delivered) or `Lost`, or nothing at all (`report = false`).
    pub fn drop_request(&mut self, k: usize, unreachable: bool, report: bool) {
        let r = self.requests.remove(k);
        if report {
            let peer = self.ids[r.to].clone();
            let delivered = self.delivered.contains(&(r.from, r.from_incarnation, r.id));
            let result = if unreachable && !delivered {
                Err(NetError::Unreachable { peer, reason: "partitioned".into() })
            } else {
                Err(NetError::Lost { peer, reason: "connection reset".into() })
            };
            self.replies.push(Reply { to: r.from, to_incarnation: r.from_incarnation, id: r.id, result });
        }
    }

    pub fn deliver_reply(&mut self, k: usize, lose: bool) {
        let r = self.replies.remove(k);
        if self.incarnation[r.to] != r.to_incarnation {
            return; // the requester crashed since: its request state is gone
        }
        let result = if lose {
            Err(NetError::Lost { peer: NodeId::new("x").unwrap(), reason: "reply lost".into() })
        } else {
            r.result
        };
        if let Some(n) = self.nodes[r.to].as_mut() {
            n.handle_reply(r.id, result);
        }
        self.pump();
    }

    /// Move time forward by `ns`, stopping at every node deadline on the way.
    pub fn advance(&mut self, ns: u64) {
        let target = self.clock.mono_ns_now() + ns;
        for _ in 0..10_000 {
            let now = self.clock.mono_ns_now();
            let mut next = target;
            for n in self.nodes.iter_mut().flatten() {
                if let Some(d) = n.advance() {
                    next = next.min(d.max(now + 1));
                }
            }
            self.pump();
            if now >= target {
                return;
            }
            self.clock.advance_ns(next.min(target) - now);
        }
    }

    /// Deliver everything (requests, then replies) until the pool is empty.
    pub fn settle(&mut self) {
        for _ in 0..1000 {
            if !self.requests.is_empty() {
                self.deliver(0, false);
            } else if !self.replies.is_empty() {
                self.deliver_reply(0, false);
            } else {
                return;
            }
        }
    }

    pub fn crash(&mut self, i: usize) {
        if let Some(mut n) = self.nodes[i].take() {
            self.events.extend(n.drain_events());
        }
        self.disks[i].crash();
    }

    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none());
        self.start(i);
    }

    pub fn state(&self, i: usize) -> Option<AuthorityState> {
        self.nodes[i].as_ref()?.agent(&agent()).map(|v| v.state)
    }

    pub fn tickers(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].as_ref().is_some_and(|n| n.may_tick(&agent()))).collect()
    }

    pub fn ticks_by(&self, i: usize) -> usize {
        self.events.iter().filter(|e| e.node == self.ids[i] && matches!(e.event, Event::TickFinished { .. })).count()
    }

    /// Every checkpoint on every disk (crashed nodes included): (path, bytes).
    pub fn all_checkpoints(&self) -> Vec<(usize, Checkpoint, Hash32)> {
        let mut out = Vec::new();
        for (i, d) in self.disks.iter().enumerate() {
            for (_, bytes) in Lineage::archive(d, &agent()).unwrap_or_default() {
                if let Ok(c) = Checkpoint::decode(&bytes) {
                    out.push((i, c, Hash32::of(&bytes)));
                }
            }
        }
        out
    }

    /// The newest checkpoint anywhere.
    pub fn newest_tick(&self) -> Option<u64> {
        self.all_checkpoints().iter().map(|(_, c, _)| c.tick.0).max()
    }

    pub fn trace_tail(&self, n: usize) -> String {
        let start = self.events.len().saturating_sub(n);
        self.events[start..].iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
    }

    /// Whether any transfer request for the agent is in flight and not yet
    /// expired (the operator's recovery precondition).
    pub fn live_transfer_in_flight(&self) -> bool {
        let now = self.clock.unix_ns_now();
        self.requests.iter().any(|r| match Envelope::decode(&r.body) {
            Ok(env) => matches!(env.body, Body::AgentTransfer(_)) && env.header.expiry_unix_ns >= now,
            Err(_) => false,
        })
    }

    /// The durable authority claims (ACTIVE_OWNER or handoff states) of
    /// crashed nodes, read from their disks.
    pub fn durable_claim(&self, i: usize) -> Option<AuthorityState> {
        let bytes = self.disks[i].read(&format!("agents/{}/authority.json", agent())).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        serde_json::from_value(v.get("state")?.clone()).ok()
    }

    /// The safety invariants. `Err` names the invariant and the evidence.
    pub fn check(&self) -> Result<(), String> {
        // EI-1: at most one node may tick the agent at this instant.
        let t = self.tickers();
        if t.len() > 1 {
            return Err(format!("EI-1: nodes {t:?} may all tick the agent"));
        }
        // EI-5: at most one live owner (ACTIVE_OWNER or HANDOFF_INITIATED).
        let owners: Vec<usize> = (0..self.nodes.len())
            .filter(|i| {
                let st = match &self.nodes[*i] {
                    Some(_) => self.state(*i),
                    None => self.durable_claim(*i),
                };
                matches!(st, Some(AuthorityState::ActiveOwner | AuthorityState::HandoffInitiated))
            })
            .collect();
        if owners.len() > 1 {
            return Err(format!("EI-5: nodes {owners:?} all hold authority (live or on disk)"));
        }
        // EI-3: no two checkpoints with one parent (and one per tick).
        let mut children: BTreeMap<Hash32, BTreeSet<Hash32>> = BTreeMap::new();
        let mut budgets: BTreeMap<Hash32, Microcents> = BTreeMap::new();
        for (_, c, h) in self.all_checkpoints() {
            children.entry(c.prev_hash()).or_default().insert(h);
            budgets.insert(h, c.budget);
        }
        if let Some((p, kids)) = children.iter().find(|(_, k)| k.len() > 1) {
            return Err(format!("EI-3: parent {} has children {kids:?}", p.short()));
        }
        // RE-3: budget(prev) = budget + charged + paid for every commit.
        for e in &self.events {
            if let Event::CheckpointCommitted { prev_hash, budget, charged, paid, hash, .. } = &e.event {
                if *prev_hash == Hash32::ZERO {
                    continue;
                }
                let Some(before) = budgets.get(prev_hash) else { continue };
                if before.0 != budget.0 + charged.0 + paid.0 {
                    return Err(format!(
                        "RE-3: {} has budget {budget} + charged {charged} + paid {paid} but parent had {before}",
                        hash.short()
                    ));
                }
            }
            if let Event::PackageSent { hash, budget, .. } = &e.event
                && budgets.get(hash).is_some_and(|b| b != budget)
            {
                return Err(format!("RE-3: package {} carries {budget}, checkpoint says otherwise", hash.short()));
            }
        }
        // Every ambiguous handoff leaves the source RECOVERY_REQUIRED.
        let mut last_state: BTreeMap<NodeId, Option<AuthorityState>> = BTreeMap::new();
        for e in &self.events {
            match &e.event {
                Event::AuthorityChanged { to, .. } => {
                    last_state.insert(e.node.clone(), Some(*to));
                }
                Event::AgentLoaded { state, .. } => {
                    last_state.insert(e.node.clone(), Some(*state));
                }
                Event::MigrationFinished { role: Role::Source, outcome: Outcome::Ambiguous(why), .. } => {
                    let st = last_state.get(&e.node).cloned().flatten();
                    if st != Some(AuthorityState::RecoveryRequired) {
                        return Err(format!("ambiguous outcome on {} ({why}) left the agent {st:?}", e.node));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// `ManualClock` readings without importing the trait everywhere.
pub trait ClockExt {
    fn mono_ns_now(&self) -> u64;
    fn unix_ns_now(&self) -> i64;
}

impl ClockExt for ManualClock {
    fn mono_ns_now(&self) -> u64 {
        igor::env::Clock::mono_ns(self)
    }
    fn unix_ns_now(&self) -> i64 {
        igor::env::Clock::unix_ns(self)
    }
}

pub fn history_path(tick: u64) -> String {
    lineage::history_path(&agent(), igor::units::TickNumber(tick))
}
