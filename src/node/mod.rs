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

pub mod conduct;
pub mod defence;
pub mod event;
pub mod fake;
mod recovery;
pub mod store;
mod transfer;

pub use conduct::{Conduct, Honest};
pub use defence::Defences;
pub use event::{Event, NodeEvent};

use crate::audit::ticklog::LinkBinding;
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
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("tick_idle_ns", self.tick_idle_ns),
            ("tick_fast_ns", self.tick_fast_ns),
            ("checkpoint_interval_ns", self.checkpoint_interval_ns),
            ("lease.duration_ns", self.lease.duration_ns),
            ("migration.package_ttl_ns", self.migration.package_ttl_ns),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{field} must be > 0 (0 would make the node due again at the same instant forever)"));
        }
        if self.lease.renew_before_ns >= self.lease.duration_ns {
            return Err(format!(
                "lease.renew_before_ns {} must be below lease.duration_ns {} (a renewal must leave the lease valid)",
                self.lease.renew_before_ns, self.lease.duration_ns
            ));
        }
        if self.migration.max_clock_skew_ns >= self.lease.grace_ns {
            return Err(format!(
                "migration.max_clock_skew_ns {} must be below lease.grace_ns {} (spec §5 clock bound S < grace)",
                self.migration.max_clock_skew_ns, self.lease.grace_ns
            ));
        }
        if self.price_per_second.is_negative() {
            return Err(format!("price_per_second {} is negative", self.price_per_second));
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
    pub reason: String,
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

    fn refuse(&mut self, command: &'static str, agent: Option<&AgentId>, reason: String) -> Refused {
        self.emit(Event::CommandRefused {
            command: command.to_string(),
            agent: agent.cloned(),
            reason: reason.clone(),
        });
        Refused { command, agent: agent.cloned(), reason }
    }

    fn persist(&mut self, agent: &AgentId) -> Result<(), String> {
        let Some(s) = self.agents.get(agent) else { return Ok(()) };
        store::write_record(&self.disk, agent, &s.record()).map_err(|e| e.to_string())
    }

    /// Apply a transition, report it and persist it (HANDOFF_INITIATED is
    /// never persisted). Returns `Err` with the reason if the transition was
    /// forbidden (the agent is then RECOVERY_REQUIRED) or could not be made
    /// durable.
    fn set_state(&mut self, agent: &AgentId, to: AuthorityState, reason: Reason) -> Result<(), String> {
        let Some(s) = self.agents.get_mut(agent) else { return Err(format!("unknown agent {agent}")) };
        let from = s.authority.state();
        let result = s.authority.transition(to, reason.clone());
        let epoch = s.authority.epoch();
        if result.is_ok() && to == AuthorityState::HandoffPending && reason == Reason::Relinquished {
            // The target assumes at (major + 1): a recovery anywhere that
            // asks this node must stay above it, even after it retires.
            s.highest_major_seen = s.highest_major_seen.max(epoch.major.saturating_add(1));
        }
        let now_state = s.authority.state();
        if now_state == AuthorityState::RecoveryRequired {
            // EI-2: whatever ran since the last checkpoint is discarded;
            // only explicit recovery resumes, from a committed checkpoint.
            s.instance = None;
            s.ticking = false;
        }
        let violation = result.err();
        if let Some(v) = &violation {
            self.fault(Some(agent), v.to_string());
            self.emit(Event::AuthorityChanged {
                agent: agent.clone(),
                from: Some(from),
                to: AuthorityState::RecoveryRequired,
                epoch,
                reason: Reason::Violation,
            });
        } else {
            self.emit(Event::AuthorityChanged { agent: agent.clone(), from: Some(from), to, epoch, reason });
        }
        if now_state != AuthorityState::HandoffInitiated
            && let Err(e) = self.persist(agent)
        {
            self.fault(Some(agent), format!("persist authority: {e}"));
            return Err(e);
        }
        match violation {
            Some(v) => Err(v.to_string()),
            None => Ok(()),
        }
    }

    /// Doubt: stop, and wait for the operator (EI-6/EI-7). Ends any handoff
    /// this node was running for the agent as ambiguous.
    fn fall_to_recovery(&mut self, agent: &AgentId, reason: Reason) {
        let Some(s) = self.agents.get(agent) else { return };
        if s.authority.state() == AuthorityState::RecoveryRequired {
            return;
        }
        let _ = self.set_state(agent, AuthorityState::RecoveryRequired, reason.clone());
        if let Some(m) = self.end_handoff(agent) {
            let outcome = migration::Outcome::Ambiguous(format!("authority fell to RECOVERY_REQUIRED ({reason})"));
            self.finish_event(agent, &m.target, Role::Source, outcome);
        }
    }

    /// Remove the agent's handoff machine with its timers, and orphan its
    /// outstanding requests: nothing of this handoff may feed the next one.
    fn end_handoff(&mut self, agent: &AgentId) -> Option<SourceHandoff> {
        let m = self.handoffs.remove(agent)?;
        self.timers.retain(|_, (a, _)| a != agent);
        for p in self.pending.values_mut() {
            if let Pending::Transfer { agent: a, target, .. } = p
                && a == agent
            {
                *p = Pending::Orphan { agent: a.clone(), target: target.clone() };
            }
        }
        Some(m)
    }

    fn finish_event(&mut self, agent: &AgentId, peer: &NodeId, role: Role, outcome: migration::Outcome) {
        let (budget, tick, hash) = self
            .agents
            .get(agent)
            .and_then(|s| s.lineage.head().map(|c| (c.budget, c.tick, s.lineage.head_hash())))
            .unwrap_or((Microcents::ZERO, TickNumber(0), Hash32::ZERO));
        self.emit(Event::MigrationFinished {
            agent: agent.clone(),
            peer: peer.clone(),
            role,
            outcome,
            budget,
            tick,
            hash,
        });
    }

    fn load_agent(&mut self, agent: AgentId) {
        let now = self.clock.now();
        let record = store::read_record(&self.disk, &agent);
        let lineage = Lineage::open(&self.disk, &agent);
        // Nothing to recover from (no authority record, no checkpoint: a
        // deploy that never committed, or a directory a lost disk left
        // behind): the agent is absent here, not a phantom RECOVERY_REQUIRED
        // record at epoch 0.0 that could absorb a recovery or a package.
        let has_head = lineage.as_ref().is_ok_and(|l| l.head().is_some());
        if !has_head && !self.disk.exists(&store::authority_path(&agent)) {
            self.fault(Some(&agent), "restart: agent directory without record or checkpoint ignored".into());
            return;
        }
        let (rec, lineage) = match (record, lineage) {
            (Ok(r), Ok(l)) => (r, l),
            (r, l) => {
                let why = [r.err().map(|e| e.to_string()), l.as_ref().err().map(|e| e.to_string())];
                let why = why.into_iter().flatten().collect::<Vec<_>>().join("; ");
                self.fault(Some(&agent), format!("restart: {why}"));
                let lineage = l.unwrap_or_else(|_| Lineage::new(agent.clone()));
                let authority = Authority::restore(AuthorityState::RecoveryRequired, Role::Source, Epoch::default());
                self.agents.insert(agent.clone(), Slot::new(authority, lineage, now));
                self.loaded_event(&agent);
                return;
            }
        };
        let mut slot = Slot::new(Authority::restore(rec.state, rec.role, rec.epoch), lineage, now);
        slot.lease = Lease { expiry_unix_ns: rec.lease_expiry_unix_ns };
        slot.highest_major_seen = rec.highest_major_seen.max(rec.epoch.major);
        if rec.state == AuthorityState::HandoffPending && rec.role == Role::Source {
            // Relinquished: the target may have assumed at (major + 1)
            // (records written before `set_state` raised it themselves).
            slot.highest_major_seen = slot.highest_major_seen.max(rec.epoch.major.saturating_add(1));
        }
        slot.key = store::load_key(&self.disk, &agent);
        slot.manifest = self.disk.read(&store::manifest_path(&agent)).unwrap_or_default();
        let doubt = self.restart_doubt(&agent, &rec, &slot, now);
        self.agents.insert(agent.clone(), slot);
        if let Some((reason, why)) = doubt {
            self.fault(Some(&agent), format!("restart in doubt: {why}"));
            if reason == Reason::LeaseExpired && self.cfg.unsafe_self_recover_on_lease_expiry {
                self.unsafe_self_recover(&agent);
            } else {
                self.fall_to_recovery(&agent, reason);
            }
        }
        if self.agents.get(&agent).is_some_and(|s| s.authority.state() == AuthorityState::ActiveOwner) {
            if let Err(e) = self.start_instance(&agent) {
                self.halt(&agent, format!("cannot start after restart: {e}"));
            }
            self.announce(&agent);
        }
        self.loaded_event(&agent);
    }

    /// Why an agent restored from disk must not tick, if it must not.
    fn restart_doubt(
        &self,
        agent: &AgentId,
        rec: &AuthorityRecord,
        slot: &Slot<X::Instance>,
        now: Now,
    ) -> Option<(Reason, String)> {
        use AuthorityState::*;
        match rec.state {
            Retired | RecoveryRequired => return None,
            HandoffInitiated | HandoffPending => {
                return Some((Reason::RestartInDoubt, format!("{} ({:?}) when the node stopped", rec.state, rec.role)));
            }
            ActiveOwner => {}
        }
        let head_tick = slot.lineage.head().map(|c| c.tick);
        if let Some((path, e)) = slot.lineage.damaged().first() {
            return Some((Reason::RestartInDoubt, format!("damaged checkpoint {path}: {e}")));
        }
        let stale = match (rec.head_tick, head_tick) {
            (Some(r), Some(h)) => {
                r > h || (r == h && rec.head_hash.as_deref() != Some(&slot.lineage.head_hash().to_hex()))
            }
            (Some(_), None) => true,
            (None, _) => false,
        };
        if stale {
            return Some((
                Reason::RestartInDoubt,
                format!("stale checkpoint: record names head {:?}, disk has {:?}", rec.head_tick, head_tick),
            ));
        }
        if slot.key.is_none() || !self.disk.exists(&store::wasm_path(agent)) {
            return Some((Reason::Fault, "agent key or module missing".into()));
        }
        // `self_certifying_ids`: the local history must hold the key the
        // id names, in the key file and in the head checkpoint alike.
        let key_file = slot.key.as_ref().map(|k| k.public());
        let head_key = slot.lineage.head().and_then(|c| c.agent_key().copied());
        for (what, key) in [("agent key file", key_file), ("head checkpoint key", head_key)] {
            if let Some(key) = key
                && let Err(r) = defence::Guard::check_agent_key(&self.cfg.defences, agent, &key, what)
            {
                return Some((Reason::Fault, r.reason));
            }
        }
        if slot.lease.status(&self.cfg.lease, now.unix_ns) == LeaseStatus::Lapsed {
            return Some((Reason::LeaseExpired, format!("lease expired at {}", slot.lease.expiry_unix_ns)));
        }
        None
    }

    fn loaded_event(&mut self, agent: &AgentId) {
        let Some(s) = self.agents.get(agent) else { return };
        let e = Event::AgentLoaded {
            agent: agent.clone(),
            state: s.authority.state(),
            epoch: s.authority.epoch(),
            head_tick: s.lineage.head().map(|c| c.tick).unwrap_or_default(),
            head_hash: s.lineage.head_hash(),
            budget: s.budget,
        };
        self.emit(e);
    }

    /// (Re)start the instance from the newest committed checkpoint (EI-2).
    fn start_instance(&mut self, agent: &AgentId) -> Result<(), String> {
        let wasm = self.disk.read(&store::wasm_path(agent)).map_err(|e| e.to_string())?;
        let s = self.agents.get_mut(agent).ok_or("unknown agent")?;
        let head = s.lineage.head().ok_or("no checkpoint to start from")?.clone();
        let key = s.key.as_ref().ok_or("agent key missing")?.public();
        let sealed = self.disk.read(&store::kv_path(agent, head.tick)).map_err(|e| e.to_string())?;
        let kv = store::open_kv(&key, agent, &head, &sealed)?;
        let hash = self.exec.prepare(&wasm, &s.manifest).map_err(|e| e.to_string())?;
        if hash != head.wasm_hash {
            return Err(format!("module hash {} differs from checkpoint's {}", hash.short(), head.wasm_hash.short()));
        }
        let instance = self.exec.start(&hash, &s.manifest, &head.state, &kv).map_err(|e| e.to_string())?;
        let now = self.clock.now();
        s.instance = Some(instance);
        s.wasm_hash = hash;
        s.rewind_to_head();
        s.last_checkpoint_ns = now.mono_ns;
        s.next_tick_ns = now.mono_ns;
        s.ticking = head.budget > Microcents::ZERO;
        s.halted = None;
        if head.budget == Microcents::ZERO {
            s.halted = Some("budget exhausted".into());
        }
        Ok(())
    }

    fn halt(&mut self, agent: &AgentId, reason: String) {
        if let Some(s) = self.agents.get_mut(agent) {
            s.halted = Some(reason.clone());
            s.ticking = false;
        }
        self.emit(Event::AgentHalted { agent: agent.clone(), reason });
    }

    /// Deploy a new agent here: genesis owner at epoch (1, 0) with a fresh
    /// identity, a genesis checkpoint (tick 0) holding the whole budget.
    /// A self-certifying id names its key, so it cannot get a fresh one:
    /// deploy it with [`Node::deploy_with_key`].
    pub fn deploy(
        &mut self,
        agent: AgentId,
        wasm: Vec<u8>,
        manifest: Vec<u8>,
        budget: Microcents,
    ) -> Result<(), Refused> {
        self.deploy_inner(agent, None, wasm, manifest, budget)
    }

    /// [`Node::deploy`] with the agent key given: for a self-certifying id
    /// (`identity::tagged_agent_id`) it must be the key the id names
    /// (`self_certifying_ids`).
    pub fn deploy_with_key(
        &mut self,
        agent: AgentId,
        key: Keypair,
        wasm: Vec<u8>,
        manifest: Vec<u8>,
        budget: Microcents,
    ) -> Result<(), Refused> {
        self.deploy_inner(agent, Some(key), wasm, manifest, budget)
    }

    fn deploy_inner(
        &mut self,
        agent: AgentId,
        key: Option<Keypair>,
        wasm: Vec<u8>,
        manifest: Vec<u8>,
        budget: Microcents,
    ) -> Result<(), Refused> {
        if self.stopped {
            return Err(self.refuse("deploy", Some(&agent), "node is shut down".into()));
        }
        if self.agents.contains_key(&agent) || self.disk.exists(&store::authority_path(&agent)) {
            return Err(self.refuse("deploy", Some(&agent), "agent already known on this node".into()));
        }
        if budget.is_negative() {
            return Err(self.refuse("deploy", Some(&agent), format!("negative budget {budget}")));
        }
        if let Err(e) = migration::migration_policy(&manifest) {
            return Err(self.refuse("deploy", Some(&agent), e));
        }
        let hash = match self.exec.prepare(&wasm, &manifest) {
            Ok(h) => h,
            Err(e) => return Err(self.refuse("deploy", Some(&agent), e.to_string())),
        };
        // Drawn here, after every check, as before keys could be given:
        // a refused deploy draws nothing (simulator traces stay put).
        let key = key.unwrap_or_else(|| Keypair::generate(&mut self.entropy));
        if let Err(r) = defence::Guard::check_agent_key(&self.cfg.defences, &agent, &key.public(), "deploy key") {
            return Err(self.refuse("deploy", Some(&agent), r.reason));
        }
        let stored = key
            .save(&self.disk, &lineage::agent_key_path(&agent))
            .map_err(|e| e.to_string())
            .and_then(|_| self.disk.write_atomic(&store::wasm_path(&agent), &wasm).map_err(|e| e.to_string()))
            .and_then(|_| self.disk.write_atomic(&store::manifest_path(&agent), &manifest).map_err(|e| e.to_string()));
        if let Err(e) = stored {
            return Err(self.refuse("deploy", Some(&agent), format!("disk: {e}")));
        }
        let now = self.clock.now();
        let mut slot = Slot::new(Authority::genesis(), Lineage::new(agent.clone()), now);
        slot.lease = Lease::grant(&self.cfg.lease, now.unix_ns);
        slot.key = Some(key);
        slot.manifest = manifest;
        slot.wasm_hash = hash;
        slot.budget = budget;
        let instance = match self.exec.start(&hash, &slot.manifest, &[], &[]) {
            Ok(i) => i,
            Err(e) => return Err(self.refuse("deploy", Some(&agent), e.to_string())),
        };
        slot.instance = Some(instance);
        self.agents.insert(agent.clone(), slot);
        self.emit(Event::AgentDeployed { agent: agent.clone(), wasm_hash: hash, budget });
        let epoch = Epoch::new(1, 0);
        self.emit(Event::AuthorityChanged {
            agent: agent.clone(),
            from: None,
            to: AuthorityState::ActiveOwner,
            epoch,
            reason: Reason::Deployed,
        });
        let genesis = self.persist(&agent).and_then(|_| self.commit(&agent, Op::NewCheckpoint, false, true));
        if let Err(e) = genesis {
            self.fault(Some(&agent), format!("genesis: {e}"));
            self.fall_to_recovery(&agent, Reason::Fault);
            return Err(self.refuse("deploy", Some(&agent), e));
        }
        if let Some(s) = self.agents.get_mut(&agent) {
            s.ticking = budget > Microcents::ZERO;
        }
        self.announce(&agent);
        Ok(())
    }

    /// Run an operator command.
    pub fn command(&mut self, cmd: Command) -> Result<(), Refused> {
        match cmd {
            Command::Migrate { agent, to } => self.start_handoff(agent, to),
            Command::Recover { agent, anchor, force } => self.recover(agent, anchor, force),
            Command::Retire { agent } => self.retire(agent),
            Command::Shutdown => {
                for agent in self.agent_ids() {
                    let dirty = self.agents.get(&agent).is_some_and(|s| s.ticks_since_checkpoint > 0);
                    let owned = self.agents.get(&agent).is_some_and(|s| s.authority.permits(Op::NewCheckpoint));
                    if dirty
                        && owned
                        && let Err(e) = self.commit(&agent, Op::NewCheckpoint, false, false)
                    {
                        self.fault(Some(&agent), format!("final checkpoint: {e}"));
                    }
                }
                self.stopped = true;
                self.emit(Event::NodeShutdown);
                Ok(())
            }
        }
    }

    fn retire(&mut self, agent: AgentId) -> Result<(), Refused> {
        let Some(s) = self.agents.get(&agent) else {
            return Err(self.refuse("retire", Some(&agent), "unknown agent".into()));
        };
        if self.handoffs.contains_key(&agent) || !s.authority.permits(Op::NewCheckpoint) {
            let state = s.authority.state();
            return Err(self.refuse("retire", Some(&agent), format!("agent is {state}")));
        }
        if s.ticks_since_checkpoint > 0
            && let Err(e) = self.commit(&agent, Op::NewCheckpoint, false, false)
        {
            return Err(self.refuse("retire", Some(&agent), e));
        }
        if let Some(s) = self.agents.get_mut(&agent) {
            s.ticking = false;
            s.instance = None;
        }
        self.set_state(&agent, AuthorityState::Retired, Reason::Shutdown).map_err(|e| Refused {
            command: "retire",
            agent: Some(agent.clone()),
            reason: e,
        })
    }

    fn unsafe_self_recover(&mut self, agent: &AgentId) {
        let now = self.clock.now();
        let lease = Lease::grant(&self.cfg.lease, now.unix_ns);
        let Some(s) = self.agents.get_mut(agent) else { return };
        let from = s.authority.state();
        let _ = s.authority.transition(AuthorityState::RecoveryRequired, Reason::LeaseExpired);
        let epoch = s.authority.epoch();
        let highest = s.highest_major_seen;
        let Ok(t) = s.authority.recover(Reason::UnsafeSelfRecovery, highest) else { return };
        s.lease = lease;
        s.highest_major_seen = t.epoch.major;
        s.ticking = s.instance.is_some() && s.halted.is_none();
        let to = AuthorityState::RecoveryRequired;
        self.emit(Event::AuthorityChanged {
            agent: agent.clone(),
            from: Some(from),
            to,
            epoch,
            reason: Reason::LeaseExpired,
        });
        self.emit(Event::AuthorityChanged {
            agent: agent.clone(),
            from: Some(to),
            to: t.to,
            epoch: t.epoch,
            reason: Reason::UnsafeSelfRecovery,
        });
        if let Err(e) = self.persist(agent) {
            self.fault(Some(agent), format!("persist authority: {e}"));
        }
    }

    /// Run everything due at the clock's current time (handoff timers, lease
    /// renewal or expiry, ticks, checkpoints) and return the next deadline
    /// on the node's monotonic clock (`None`: nothing scheduled). Call it
    /// again no later than that deadline.
    pub fn advance(&mut self) -> Option<u64> {
        if self.stopped {
            return None;
        }
        let now = self.clock.now();
        let due: Vec<_> = self.timers.range(..=(now.mono_ns, u64::MAX)).map(|(k, v)| (*k, v.clone())).collect();
        for (key, (agent, timer)) in due {
            self.timers.remove(&key);
            self.feed_handoff(&agent, migration::Input::Timer(timer));
        }
        self.expire_recoveries(now.mono_ns);
        for agent in self.agent_ids() {
            self.check_lease(&agent);
            self.maybe_tick(&agent);
            self.maybe_checkpoint(&agent);
        }
        self.act_out(now.mono_ns);
        self.next_deadline()
    }

    /// The next instant (monotonic ns) at which [`Node::advance`] has work.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.stopped {
            return None;
        }
        let now = self.clock.now();
        let mut next = self.timers.keys().next().map(|(at, _)| *at);
        let mut consider = |t: u64| next = Some(next.map_or(t, |n: u64| n.min(t)));
        if let Some(t) = self.next_recovery_deadline() {
            consider(t);
        }
        if let Some(t) = self.conduct.next_ns() {
            consider(t);
        }
        for s in self.agents.values() {
            if s.authority.state() != AuthorityState::ActiveOwner {
                if self.cfg.unsafe_self_recover_on_lease_expiry
                    && unsafe_recoverable(s.authority.state(), s.authority.role())
                {
                    let change = s.lease.next_change(&self.cfg.lease, now.unix_ns);
                    consider(now.mono_ns.saturating_add(change.saturating_sub(now.unix_ns).max(0) as u64));
                }
                continue;
            }
            let change = s.lease.next_change(&self.cfg.lease, now.unix_ns);
            consider(now.mono_ns.saturating_add(change.saturating_sub(now.unix_ns).max(0) as u64));
            if s.ticking && s.halted.is_none() && s.instance.is_some() && s.degraded.is_none() {
                consider(s.next_tick_ns);
            }
            if s.ticks_since_checkpoint > 0 {
                consider(s.last_checkpoint_ns.saturating_add(self.cfg.checkpoint_interval_ns));
            }
        }
        next
    }

    fn check_lease(&mut self, agent: &AgentId) {
        let now = self.clock.now();
        let Some(s) = self.agents.get_mut(agent) else { return };
        if s.authority.state() != AuthorityState::ActiveOwner {
            // UNSAFE, scenarios only: the original also took authority back
            // when a source in doubt saw its lease run out, which allows two
            // tickers once the target has assumed. Off by default.
            let lapsed = s.lease.status(&self.cfg.lease, now.unix_ns) == LeaseStatus::Lapsed;
            if self.cfg.unsafe_self_recover_on_lease_expiry
                && lapsed
                && unsafe_recoverable(s.authority.state(), s.authority.role())
            {
                self.unsafe_self_recover(agent);
            }
            return;
        }
        match s.lease.status(&self.cfg.lease, now.unix_ns) {
            LeaseStatus::Valid => {}
            LeaseStatus::RenewDue | LeaseStatus::InGrace => {
                let before = (s.authority.clone(), s.lease);
                let epoch = s.authority.renew();
                s.lease = Lease::grant(&self.cfg.lease, now.unix_ns);
                let expiry_ns = s.lease.expiry_unix_ns;
                if let Err(e) = self.persist(agent) {
                    // Renewal exists only once durable.
                    if let Some(s) = self.agents.get_mut(agent) {
                        (s.authority, s.lease) = before;
                    }
                    self.fault(Some(agent), format!("lease renewal not persisted: {e}"));
                    return;
                }
                self.emit(Event::LeaseRenewed { agent: agent.clone(), epoch, expiry_ns });
                self.announce(agent);
            }
            LeaseStatus::Lapsed => {
                if self.cfg.unsafe_self_recover_on_lease_expiry {
                    self.unsafe_self_recover(agent);
                } else {
                    self.fall_to_recovery(agent, Reason::LeaseExpired);
                }
            }
        }
    }

    fn maybe_tick(&mut self, agent: &AgentId) {
        let now = self.clock.now();
        let lease_cfg = self.cfg.lease;
        let Some(s) = self.agents.get_mut(agent) else { return };
        // EI-1: only ACTIVE_OWNER under a live lease ticks.
        let may = s.authority.permits(Op::Tick) && s.lease.status(&lease_cfg, now.unix_ns).allows_ticking();
        let paused = s.degraded.is_some();
        if !may || paused || !s.ticking || s.halted.is_some() || s.instance.is_none() || s.next_tick_ns > now.mono_ns {
            return;
        }
        let mut rand_seed = [0u8; 32];
        self.entropy.fill(&mut rand_seed);
        let inputs = TickInputs {
            tick: TickNumber(s.tick.0 + 1),
            now_unix_ns: now.unix_ns,
            rand_seed,
            budget: s.budget,
            price_per_second: self.cfg.price_per_second,
            // CM-5: side effects only as ACTIVE_OWNER.
            side_effects_allowed: s.authority.permits(Op::SideEffects),
            receipts: Vec::new(),
        };
        let (epoch, base) = (s.authority.epoch(), s.lineage.head_hash());
        let start = Event::TickStarted { agent: agent.clone(), tick: inputs.tick, epoch, budget: s.budget, base };
        self.emit(start);
        let Some(s) = self.agents.get_mut(agent) else { return };
        let Some(instance) = s.instance.as_mut() else { return };
        let report = self.exec.tick(instance, &inputs);
        // The executor promises cost + paid <= budget; enforce it (RE-3,
        // budget never negative) rather than trust it.
        let cost = report.cost.max(Microcents::ZERO).min(s.budget);
        let left = Microcents(s.budget.0 - cost.0);
        let paid = report.paid.max(Microcents::ZERO).min(left);
        let overcharged = cost != report.cost || paid != report.paid;
        s.budget = Microcents(left.0 - paid.0);
        s.tick = inputs.tick;
        s.charged = Microcents(s.charged.0.saturating_add(cost.0));
        // The conduct's surcharge (honestly none), capped by the budget.
        let (lie, act) = self.conduct.surcharge(agent, cost);
        let lie = lie.0.min(s.budget.0).max(0);
        s.budget = Microcents(s.budget.0 - lie);
        s.charged = Microcents(s.charged.0.saturating_add(lie));
        s.paid = Microcents(s.paid.0.saturating_add(paid.0));
        s.ticks_since_checkpoint += 1;
        // Bounded: a commit is forced at MAX_TICKS_PER_CHECKPOINT.
        s.ticks.push(TickRecord { inputs: inputs.clone(), event_log: report.event_log.clone() });
        s.acted_since_checkpoint |= acted_outside(&report.event_log);
        let more_work = matches!(report.outcome, TickOutcome::Completed { more_work: true });
        s.next_tick_ns =
            now.mono_ns.saturating_add(if more_work { self.cfg.tick_fast_ns } else { self.cfg.tick_idle_ns });
        let budget = s.budget;
        let side_effects_allowed = inputs.side_effects_allowed;
        if overcharged {
            self.fault(
                Some(agent),
                format!("executor charged {} + {} against {}", report.cost, report.paid, inputs.budget),
            );
        }
        if lie > 0
            && let Some(act) = act
        {
            self.emit(Event::Misbehaved { agent: Some(agent.clone()), act });
        }
        self.emit(Event::TickFinished {
            agent: agent.clone(),
            tick: inputs.tick,
            epoch,
            cost,
            paid,
            budget,
            outcome: format!("{:?}", report.outcome),
            side_effects: report.side_effects,
            side_effects_allowed,
        });
        let tick = inputs.tick;
        match &report.outcome {
            TickOutcome::Completed { .. } if budget > Microcents::ZERO => {}
            // Spec §3: budget exhausted: stop ticking, save a final
            // checkpoint (the sandbox restarts a tick the budget cut from
            // the state before it, so the instance can be snapshotted).
            TickOutcome::Completed { .. } | TickOutcome::BudgetExhausted => {
                if let Err(e) = self.commit(agent, Op::NewCheckpoint, false, false) {
                    self.fault(Some(agent), format!("final checkpoint: {e}"));
                }
                self.halt(agent, "budget exhausted".to_string());
            }
            TickOutcome::Trapped { message } => {
                let why = format!("trapped in tick {tick}: {message}");
                self.discard_instance(agent, &why);
            }
            TickOutcome::OutOfFuel => {
                let why = format!("ran out of fuel in tick {tick}");
                self.discard_instance(agent, &why);
            }
            // Not deterministic: the node's own fault, never committed.
            TickOutcome::WallClockTimeout => {
                self.discard_instance(agent, "wall-clock safety net fired");
            }
        }
    }

    /// A tick that did not run to its end left the instance poisoned
    /// (NOTES: never snapshot it). Drop it and every tick since the last
    /// checkpoint, as a crash would (EI-2: the agent resumes only from its
    /// committed head), and halt the agent: a deterministic fault would only
    /// recur. Nothing is left due, so the node cannot spin on it.
    fn discard_instance(&mut self, agent: &AgentId, why: &str) {
        let Some(s) = self.agents.get_mut(agent) else { return };
        let discarded = s.ticks_since_checkpoint;
        s.rewind_to_head();
        s.instance = None;
        self.halt(agent, format!("{why}; {discarded} uncommitted tick(s) discarded"));
    }

    fn maybe_checkpoint(&mut self, agent: &AgentId) {
        let now = self.clock.mono_ns();
        let Some(s) = self.agents.get(agent) else { return };
        let interval = now.saturating_sub(s.last_checkpoint_ns) >= self.cfg.checkpoint_interval_ns;
        let full = s.ticks_since_checkpoint >= MAX_TICKS_PER_CHECKPOINT;
        // A retry after a failed write waits its interval, even after an act.
        let acted = s.acted_since_checkpoint && s.degraded.is_none();
        let due = s.ticks_since_checkpoint > 0 && (interval || full || acted) && s.authority.permits(Op::NewCheckpoint);
        if due && let Err(e) = self.commit(agent, Op::NewCheckpoint, false, false) {
            // Retry one interval later, never at once: a commit that keeps
            // failing must not keep the deadline in the past (livelock).
            // EI-6: meanwhile the agent pauses instead of ticking unpersisted.
            let unix = self.clock.unix_ns();
            let Some(s) = self.agents.get_mut(agent) else { return };
            s.last_checkpoint_ns = now;
            if s.degraded.is_none() {
                s.degraded = Some((unix, e.clone()));
                self.emit(Event::PersistFailing { agent: agent.clone(), since_unix_ns: unix, error: e.clone() });
                self.fault(Some(agent), format!("checkpoint: {e}"));
            }
        }
    }

    /// Commit the running state as the next link. With nothing new since
    /// the head (and not genesis), the head itself is the answer.
    fn commit(
        &mut self,
        agent: &AgentId,
        op: Op,
        handoff: bool,
        genesis: bool,
    ) -> Result<(TickNumber, Hash32), String> {
        let now = self.clock.now();
        let Some(s) = self.agents.get_mut(agent) else { return Err(format!("unknown agent {agent}")) };
        if !s.authority.permits(op) {
            return Err(format!("{} does not permit {op:?}", s.authority.state()));
        }
        if !genesis
            && s.ticks_since_checkpoint == 0
            && let Some(c) = s.lineage.head()
        {
            return Ok((c.tick, s.lineage.head_hash()));
        }
        let instance = s.instance.as_mut().ok_or("no running instance")?;
        let (state, kv) = self.exec.snapshot(instance).map_err(|e| e.to_string())?;
        let key = s.key.as_ref().ok_or("agent key missing")?;
        let sealed = store::seal_kv(key, agent, s.tick, &state, &kv);
        self.disk.write_atomic(&store::kv_path(agent, s.tick), &sealed).map_err(|e| e.to_string())?;
        // The observation log of the ticks since the parent, written before
        // the checkpoint (like the kv) so a committed link always has it.
        if let Some(parent) = s.lineage.head() {
            let link = LinkBinding {
                agent: agent.clone(),
                parent_tick: parent.tick,
                parent_hash: s.lineage.head_hash(),
                tick: s.tick,
                state_hash: Hash32::of(&state),
                budget: s.budget,
            };
            store::write_tick_log(&self.disk, key, &link, &s.ticks).map_err(|e| format!("agent {agent}: {e}"))?;
        }
        let body = CheckpointBody {
            budget: s.budget,
            price_per_second: self.cfg.price_per_second,
            tick: s.tick,
            wasm_hash: s.wasm_hash,
            epoch: s.authority.epoch(),
            lease_expiry_ns: s.lease.expiry_unix_ns,
            prev_hash: Hash32::ZERO,
            state,
        };
        let prev_hash = s.lineage.head_hash();
        let base_tick = s.lineage.head().map(|c| c.tick);
        let c: Checkpoint = s.lineage.commit(&self.disk, body, key).map_err(|e| e.to_string())?;
        let hash = s.lineage.head_hash();
        // The records of the ticks that led here from the parent.
        let ticks = std::mem::take(&mut s.ticks);
        // Every tick since the head pushes a record, and whatever resets the
        // count (a commit, a rewind, a restart's fresh slot) clears them too.
        debug_assert_eq!(ticks.len() as u64, s.ticks_since_checkpoint, "one record per tick since the head");
        s.head_ticks = base_tick.map(|base_tick| TickRecords { base_tick, ticks });
        let event = Event::CheckpointCommitted {
            agent: agent.clone(),
            tick: c.tick,
            epoch: c.epoch,
            hash,
            prev_hash,
            budget: c.budget,
            charged: s.charged,
            paid: s.paid,
            lease_expiry_ns: c.lease_expiry_ns,
            handoff,
        };
        s.charged = Microcents::ZERO;
        s.paid = Microcents::ZERO;
        s.ticks_since_checkpoint = 0;
        s.acted_since_checkpoint = false;
        s.last_checkpoint_ns = now.mono_ns;
        let restored = s.degraded.take().is_some();
        self.emit(event);
        if restored {
            self.emit(Event::PersistRestored { agent: agent.clone() });
        }
        if let Err(e) = self.persist(agent) {
            // The lineage is ahead of the record: harmless on restart.
            self.fault(Some(agent), format!("persist head: {e}"));
        }
        Ok((c.tick, hash))
    }
}

/// Whether a tick's event log shows a call that reached outside the agent
/// (an http request or a payment): such a tick is checkpointed before the
/// next, so a crash re-runs at most the one tick that acted (the SDK's
/// effect log then finds its intent in flight). kv writes are state, rolled
/// back with it, and need no early commit. The log is the executor's own
/// (the sandbox's encoding; test executors write other bytes, no calls).
fn acted_outside(event_log: &[u8]) -> bool {
    use crate::membrane::Hostcall;
    crate::eventlog::EventLog::decode(event_log).is_ok_and(|log| {
        log.entries.iter().any(|e| matches!(Hostcall::from_id(e.id), Some(Hostcall::HttpRequest | Hostcall::WalletPay)))
    })
}

/// States from which the deliberately unsafe flag lets a former source take
/// authority back by itself (the original's behaviour): a handoff in doubt.
fn unsafe_recoverable(state: AuthorityState, role: Role) -> bool {
    match state {
        AuthorityState::RecoveryRequired => true,
        AuthorityState::HandoffPending => role == Role::Source,
        _ => false,
    }
}
