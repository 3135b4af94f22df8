//! The node: hosts many agents, drives their tick loops, commits their
//! checkpoints, keeps their authority and leases, and runs migration both
//! ways and recovery. Written once against the environment traits
//! ([`Disk`], [`Clock`], [`Entropy`]) and the [`Executor`] seam; it never
//! touches a socket: outgoing requests go to an outbox, incoming requests and
//! replies are handed in as bytes ([`crate::driver`] is the one adapter
//! loop). Everything it does is reported, in order, as [`NodeEvent`]s.
//!
//! Driving it (what the driver and the simulator do):
//! 1. [`Node::open`] on a disk (fresh or left by a crash: restart is open).
//! 2. [`Node::deploy`] agents, issue [`Command`]s.
//! 3. Call [`Node::advance`] whenever the clock reaches the returned deadline.
//! 4. Send every [`Outgoing`] from [`Node::take_outbox`]; give each its one
//!    result with [`Node::handle_reply`]; answer each incoming request with
//!    the bytes [`Node::handle_request`] returns.
//! 5. Collect [`Node::drain_events`].
//!
//! This file owns the node's state (config, [`Node`], the per-agent `Slot`)
//! and its queries; the behaviour is split by role, one `impl Node` block per
//! file: `lifecycle` (deploy, instances, authority transitions), `tick` (the
//! tick loop, leases, checkpoint commits), `restart` (agents found on disk),
//! `operator` (commands, retire), `recovery` (operator recovery), `source`
//! and `target` (the two sides of a handoff), `peers` (announcements, peer
//! views, request defences), `outbox` (incoming bytes and the outbox).

pub mod conduct;
pub mod defence;
mod error;
pub mod event;
pub mod fake;
mod lifecycle;
mod operator;
mod outbox;
mod peers;
mod recovery;
mod restart;
mod source;
pub mod store;
mod target;
mod tick;

pub use conduct::{Conduct, Honest};
pub use defence::Defences;
pub use error::{DiskFault, NodeError, PeerFault};
pub use event::{Event, NodeEvent};

use crate::authority::{Authority, AuthorityState, Op, Reason, Role};
use crate::checkpoint::{Checkpoint, CheckpointBody, Hash32};
use crate::env::{Clock, Disk, Entropy, Now};
use crate::executor::{Executor, TickInputs, TickOutcome};
use crate::identity::Keypair;
use crate::lease::{Lease, LeaseConfig, LeaseStatus};
use crate::lineage::{self, Lineage, RecoveryRecord};
use crate::migration::{self, HandoffTimer, MigrationConfig, SourceHandoff};
use crate::units::{AgentId, Epoch, Microcents, NodeId, TickNumber};
use std::collections::BTreeMap;
use store::AuthorityRecord;

/// Everything a node is configured with. [`NodeConfig::new`] gives the
/// spec's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub node_id: NodeId,
    /// What this node charges, microcents per second (written into
    /// checkpoints; checked against an incoming agent's migration policy).
    pub price_per_second: Microcents,
    /// Tick cadence when the agent reports no more work (spec: 1 s).
    pub tick_idle_ns: u64,
    /// Tick cadence when the agent reports more work (spec: 10 ms).
    pub tick_fast_ns: u64,
    /// Commit a checkpoint at most this long after the last one, if the
    /// agent ticked since (spec: 5 s).
    pub checkpoint_interval_ns: u64,
    pub lease: LeaseConfig,
    pub migration: MigrationConfig,
    /// Nodes to announce heads to (after taking authority, after renewal,
    /// after a restart as owner), so stale copies and divergence surface.
    pub peers: Vec<NodeId>,
    /// Replay the last tick of an incoming package when it carries
    /// `ReplayData`, and refuse it if the replay diverges.
    pub replay_on_accept: bool,
    /// UNSAFE, for scenarios only: on lease expiry the node recovers itself
    /// (the original's behaviour) instead of falling to RECOVERY_REQUIRED.
    /// Lets a scenario show the checker catching two tickers.
    pub unsafe_self_recover_on_lease_expiry: bool,
    /// The defences against A2–A4 (all on by default; see `defence`).
    pub defences: Defences,
    /// This node's Ed25519 key seed: envelopes are signed with it when set.
    pub node_key_seed: Option<[u8; 32]>,
    /// The key directory: peers' node keys. When it is empty, claims are
    /// bound to the authenticated transport peer instead of a signature.
    pub peer_keys: BTreeMap<NodeId, crate::identity::PublicKey>,
}

impl NodeConfig {
    pub fn new(node_id: NodeId) -> Self {
        NodeConfig {
            node_id,
            price_per_second: Microcents(1_000),
            tick_idle_ns: 1_000_000_000,
            tick_fast_ns: 10_000_000,
            checkpoint_interval_ns: 5_000_000_000,
            lease: LeaseConfig::default(),
            migration: MigrationConfig::default(),
            peers: Vec::new(),
            replay_on_accept: true,
            unsafe_self_recover_on_lease_expiry: false,
            defences: Defences::default(),
            node_key_seed: None,
            peer_keys: BTreeMap::new(),
        }
    }

    /// Reject settings under which the node could not keep its promises:
    /// a zero interval or lease would make the node due again at the same
    /// instant forever (a livelock: found with `lease_duration_ms: 0`), and
    /// the clock bound of spec §5 (`max_clock_skew` S below the lease grace)
    /// must hold for leases and package expiry to be safe. The message names
    /// the field and its value.
    pub fn validate(&self) -> Result<(), NodeError> {
        let positive = [
            ("tick_idle_ns", self.tick_idle_ns),
            ("tick_fast_ns", self.tick_fast_ns),
            ("checkpoint_interval_ns", self.checkpoint_interval_ns),
            ("lease.duration_ns", self.lease.duration_ns),
            ("migration.package_ttl_ns", self.migration.package_ttl_ns),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(NodeError::operator(
                None,
                format!("{field} must be > 0 (0 would make the node due again at the same instant forever)"),
            ));
        }
        if self.lease.renew_before_ns >= self.lease.duration_ns {
            return Err(NodeError::operator(
                None,
                format!(
                    "lease.renew_before_ns {} must be below lease.duration_ns {} (a renewal must leave the lease \
                     valid)",
                    self.lease.renew_before_ns, self.lease.duration_ns
                ),
            ));
        }
        if self.migration.max_clock_skew_ns >= self.lease.grace_ns {
            return Err(NodeError::operator(
                None,
                format!(
                    "migration.max_clock_skew_ns {} must be below lease.grace_ns {} (spec §5 clock bound S < grace)",
                    self.migration.max_clock_skew_ns, self.lease.grace_ns
                ),
            ));
        }
        if self.price_per_second.is_negative() {
            return Err(NodeError::operator(None, format!("price_per_second {} is negative", self.price_per_second)));
        }
        Ok(())
    }
}

/// Operator commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Hand the agent to another node.
    Migrate { agent: AgentId, to: NodeId },
    /// Re-establish this node as the one owner, resuming from `anchor`,
    /// which must be this node's newest checkpoint of the agent. The
    /// operator asserts that no other node holds or can still obtain
    /// authority (e.g. every package has expired).
    /// `force`: recover even though a peer proved it owns the agent under
    /// a newer epoch (the operator checked that it no longer does); logged.
    Recover { agent: AgentId, anchor: Hash32, force: bool },
    /// ACTIVE_OWNER -> RETIRED for one agent, after a final checkpoint.
    Retire { agent: AgentId },
    /// Stop the node gracefully: checkpoint every owned agent that ticked
    /// since its last checkpoint. Authority is kept for the next start.
    Shutdown,
}

/// Identifies an outgoing request so its result can be handed back.
pub type RequestId = u64;

/// A request the node wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub id: RequestId,
    pub to: NodeId,
    pub body: Vec<u8>,
}

/// A command or deployment that was refused (also reported as an event).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{command} refused{}: {reason}", agent.as_ref().map(|a| format!(" for agent {a}")).unwrap_or_default())]
pub struct Refused {
    pub command: &'static str,
    pub agent: Option<AgentId>,
    pub reason: NodeError,
}

/// A snapshot of one agent as the node sees it (for the simulator and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentView {
    pub agent: AgentId,
    pub state: AuthorityState,
    pub epoch: Epoch,
    pub budget: Microcents,
    pub tick: TickNumber,
    pub head_tick: Option<TickNumber>,
    pub head_hash: Hash32,
    pub lease_expiry_ns: i64,
    pub halted: Option<String>,
    /// A live instance exists (it can tick once authority allows).
    pub running: bool,
    pub handoff_in_flight: bool,
    /// EI-6: checkpoints cannot be written (since unix ns, why); paused.
    pub degraded: Option<(i64, String)>,
}

/// A tick since the head (its inputs and event log), kept for the
/// observation log committed with the next checkpoint and for the replay
/// data a handoff ships.
type TickRecord = crate::audit::ticklog::LoggedTick;

/// At most this many ticks between two checkpoints: their records are kept
/// for the replay a target runs (defence `metering_check`), so a commit is
/// forced when they reach it, whatever the checkpoint interval.
pub const MAX_TICKS_PER_CHECKPOINT: u64 = 1024;

/// The ticks that led from one checkpoint to the next, for replay.
struct TickRecords {
    /// The checkpoint the first tick ran from.
    base_tick: TickNumber,
    ticks: Vec<TickRecord>,
}

struct Slot<I> {
    authority: Authority,
    lease: Lease,
    lineage: Lineage,
    key: Option<Keypair>,
    manifest: Vec<u8>,
    wasm_hash: Hash32,
    instance: Option<I>,
    /// Budget and tick of the running instance (ahead of the head by the
    /// ticks since the last checkpoint).
    budget: Microcents,
    tick: TickNumber,
    ticking: bool,
    halted: Option<String>,
    next_tick_ns: u64,
    last_checkpoint_ns: u64,
    charged: Microcents,
    paid: Microcents,
    ticks_since_checkpoint: u64,
    /// Every tick since the head, in order (bounded by
    /// [`MAX_TICKS_PER_CHECKPOINT`]).
    ticks: Vec<TickRecord>,
    /// The ticks that led to the head from its parent, when this run saw
    /// them all: a package of the head carries them for replay. Memory
    /// only (a restart forgets them; the package then has no replay data).
    head_ticks: Option<TickRecords>,
    highest_major_seen: u64,
    /// A tick since the head reached outside (http, pay): commit before
    /// the next tick, so a crash re-runs at most the tick that acted.
    acted_since_checkpoint: bool,
    /// EI-6 under doubt: checkpoints of this agent fail to write (since
    /// unix ns, why). The agent does not tick until one is written again.
    degraded: Option<(i64, String)>,
    /// A peer proved (agent-signed claim) it holds the agent as
    /// ACTIVE_OWNER under a newer epoch, or is the target of a handoff whose
    /// outcome is unknown: recovery here could fork it. Memory only: a
    /// restart forgets it (the operator's check stays).
    live_elsewhere: Option<(NodeId, Epoch)>,
}

impl<I> Slot<I> {
    /// The agent key this node knows from its own history: its copy of the
    /// key, or the one its head checkpoint names.
    fn agent_public_key(&self) -> Option<crate::identity::PublicKey> {
        self.key.as_ref().map(|k| k.public()).or_else(|| self.lineage.head().and_then(|c| c.agent_key().copied()))
    }

    /// `proof` is a signature of the claim `(h, state)` by that agent key
    /// (defence `signed_claims`, agent half: node identity alone proves
    /// nothing about the agent, any peer has one).
    fn proves_claim(&self, h: &crate::wire::Header, state: AuthorityState, proof: Option<&[u8]>) -> bool {
        let sig = proof.and_then(|p| <[u8; 64]>::try_from(p).ok());
        self.agent_public_key().zip(sig).is_some_and(|(key, sig)| {
            key.verify(&crate::wire::agent_claim_bytes(h, Some(state)), &crate::identity::Signature(sig))
        })
    }

    /// Back to the committed head: the running budget and tick are the
    /// head's, and nothing is charged or pending since (EI-2).
    fn rewind_to_head(&mut self) {
        if let Some(head) = self.lineage.head() {
            self.budget = head.budget;
            self.tick = head.tick;
        }
        self.charged = Microcents::ZERO;
        self.paid = Microcents::ZERO;
        self.ticks_since_checkpoint = 0;
        self.ticks.clear();
        self.acted_since_checkpoint = false;
    }

    fn new(authority: Authority, lineage: Lineage, now: Now) -> Self {
        let head = lineage.head();
        let (budget, tick, wasm_hash) =
            head.map(|c| (c.budget, c.tick, c.wasm_hash)).unwrap_or((Microcents::ZERO, TickNumber(0), Hash32::ZERO));
        Slot {
            lease: Lease { expiry_unix_ns: 0 },
            highest_major_seen: authority.epoch().major,
            degraded: None,
            live_elsewhere: None,
            authority,
            lineage,
            key: None,
            manifest: Vec::new(),
            wasm_hash,
            instance: None,
            budget,
            tick,
            ticking: false,
            halted: None,
            next_tick_ns: now.mono_ns,
            last_checkpoint_ns: now.mono_ns,
            charged: Microcents::ZERO,
            paid: Microcents::ZERO,
            ticks_since_checkpoint: 0,
            ticks: Vec::new(),
            head_ticks: None,
            acted_since_checkpoint: false,
        }
    }

    fn record(&self) -> AuthorityRecord {
        AuthorityRecord {
            state: self.authority.state(),
            role: self.authority.role(),
            epoch: self.authority.epoch(),
            lease_expiry_unix_ns: self.lease.expiry_unix_ns,
            head_tick: self.lineage.head().map(|c| c.tick),
            head_hash: self.lineage.head().map(|_| self.lineage.head_hash().to_hex()),
            highest_major_seen: self.highest_major_seen,
        }
    }
}

enum Pending {
    Transfer {
        agent: AgentId,
        attempt: u32,
        target: NodeId,
    },
    /// A transfer whose handoff has ended: its late reply is stale (and must
    /// never reach a later handoff of the same agent).
    Orphan {
        agent: AgentId,
        target: NodeId,
    },
    Announce {
        agent: AgentId,
        peer: NodeId,
    },
    /// A recovery's question to one peer (`recovery`): its answer, or the
    /// failure to get one, is counted by the waiting recovery.
    Query {
        agent: AgentId,
        peer: NodeId,
    },
}

/// One Igor node. Generic over the sandbox ([`Executor`]) and the
/// environment, so the same code runs for real, in the simulator and in
/// protocol tests with [`fake::CounterExecutor`].
pub struct Node<X: Executor, D: Disk, C: Clock, R: Entropy> {
    cfg: NodeConfig,
    disk: D,
    clock: C,
    entropy: R,
    exec: X,
    agents: BTreeMap<AgentId, Slot<X::Instance>>,
    handoffs: BTreeMap<AgentId, SourceHandoff>,
    timers: BTreeMap<(u64, u64), (AgentId, HandoffTimer)>,
    pending: BTreeMap<RequestId, Pending>,
    outbox: Vec<Outgoing>,
    events: Vec<NodeEvent>,
    next_request: RequestId,
    seq: u64,
    stale_messages: u64,
    stopped: bool,
    guard: defence::Guard,
    node_key: Option<Keypair>,
    /// The node's conduct: [`Honest`] unless a simulator replaced it.
    conduct: Box<dyn Conduct + Send>,
    /// Wall clock when this node (re)started: packages issued before it
    /// are refused (spec §5: a node that lost its disk knows nothing).
    started_unix_ns: i64,
    /// Operator recoveries waiting for their peers' answers (`recovery`).
    recoveries: BTreeMap<AgentId, recovery::RecoveryQuery>,
}

impl<X: Executor, D: Disk, C: Clock, R: Entropy> Node<X, D, C, R> {
    /// Open a node on `disk`: a fresh node on an empty disk, or a restart on
    /// the disk a crashed or stopped node left. Every agent found is
    /// restored conservatively: a handoff in flight, a stale or damaged
    /// checkpoint, a lapsed lease or missing files put it in
    /// RECOVERY_REQUIRED; an owner whose state checks out resumes ticking
    /// from its newest checkpoint.
    pub fn open(cfg: NodeConfig, disk: D, clock: C, entropy: R, exec: X) -> Self {
        let mut node = Node {
            cfg,
            disk,
            clock,
            entropy,
            exec,
            agents: BTreeMap::new(),
            handoffs: BTreeMap::new(),
            timers: BTreeMap::new(),
            pending: BTreeMap::new(),
            outbox: Vec::new(),
            events: Vec::new(),
            next_request: 1,
            seq: 0,
            stale_messages: 0,
            stopped: false,
            guard: defence::Guard::default(),
            node_key: None,
            conduct: Box::new(Honest),
            started_unix_ns: 0,
            recoveries: BTreeMap::new(),
        };
        node.started_unix_ns = node.clock.unix_ns();
        node.node_key = node.cfg.node_key_seed.map(Keypair::from_seed);
        let names = match node.disk.list(store::AGENTS_DIR) {
            Ok(n) => n,
            Err(e) => {
                node.fault(None, format!("cannot list agents: {e}"));
                Vec::new()
            }
        };
        node.emit(Event::NodeStarted { restarted: !names.is_empty(), agents: names.len() as u32 });
        for name in names {
            match AgentId::new(name.clone()) {
                Ok(agent) => node.load_agent(agent),
                Err(e) => node.fault(None, format!("agents/{name}: {e}")),
            }
        }
        node
    }

    pub fn id(&self) -> &NodeId {
        &self.cfg.node_id
    }

    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    /// The node's current time, read through its clock.
    pub fn now(&self) -> Now {
        self.clock.now()
    }

    pub fn disk(&self) -> &D {
        &self.disk
    }

    pub fn executor(&self) -> &X {
        &self.exec
    }

    /// Events since the last call, in order.
    pub fn drain_events(&mut self) -> Vec<NodeEvent> {
        std::mem::take(&mut self.events)
    }

    /// Requests to send since the last call. Each must get exactly one
    /// [`Node::handle_reply`] (a reply, or the transport's error).
    pub fn take_outbox(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.outbox)
    }

    /// Messages ignored as stale or duplicate so far.
    pub fn stale_messages(&self) -> u64 {
        self.stale_messages
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    pub fn agent_ids(&self) -> Vec<AgentId> {
        self.agents.keys().cloned().collect()
    }

    pub fn agent(&self, agent: &AgentId) -> Option<AgentView> {
        let s = self.agents.get(agent)?;
        Some(AgentView {
            agent: agent.clone(),
            state: s.authority.state(),
            epoch: s.authority.epoch(),
            budget: s.budget,
            tick: s.tick,
            head_tick: s.lineage.head().map(|c| c.tick),
            head_hash: s.lineage.head_hash(),
            lease_expiry_ns: s.lease.expiry_unix_ns,
            halted: s.halted.clone(),
            running: s.instance.is_some(),
            degraded: s.degraded.clone(),
            handoff_in_flight: self.handoffs.contains_key(agent),
        })
    }

    /// EI-1's predicate: whether this node is entitled to tick `agent` now
    /// (authority permits it and the lease allows it at the node's clock).
    /// An operator recovery of `agent` is waiting for its peers' answers.
    pub fn recovering(&self, agent: &AgentId) -> bool {
        self.recoveries.contains_key(agent)
    }

    pub fn may_tick(&self, agent: &AgentId) -> bool {
        self.agents.get(agent).is_some_and(|s| {
            s.authority.permits(Op::Tick) && s.lease.status(&self.cfg.lease, self.clock.unix_ns()).allows_ticking()
        })
    }

    fn emit(&mut self, event: Event) {
        let e = NodeEvent { at_ns: self.clock.mono_ns(), node: self.cfg.node_id.clone(), seq: self.seq, event };
        self.seq += 1;
        self.events.push(e);
    }

    fn fault(&mut self, agent: Option<&AgentId>, fault: String) {
        self.emit(Event::FaultObserved { agent: agent.cloned(), fault });
    }

    fn refuse(&mut self, command: &'static str, agent: Option<&AgentId>, reason: NodeError) -> Refused {
        self.emit(Event::CommandRefused {
            command: command.to_string(),
            agent: agent.cloned(),
            reason: reason.to_string(),
        });
        Refused { command, agent: agent.cloned(), reason }
    }

    fn persist(&mut self, agent: &AgentId) -> Result<(), NodeError> {
        let Some(s) = self.agents.get(agent) else { return Ok(()) };
        store::write_record(&self.disk, agent, &s.record()).map_err(|e| NodeError::disk(agent, e))
    }
}
