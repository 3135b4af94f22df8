//! Operator recovery (spec §5 clarifications): RECOVERY_REQUIRED →
//! ACTIVE_OWNER only on the operator's word, under an epoch major no node
//! has used, and only when no live owner elsewhere can be ruled in.
//!
//! A recovery runs in two steps, sans-IO like the rest of the node:
//! 1. [`Node::recover`] checks what it can locally (state, anchor, key) and
//!    asks every configured peer for its view of the agent (a
//!    [`HeadAnnounce`] from this node in RECOVERY_REQUIRED; each peer's
//!    [`HeadAck`] carries its state, an agent-signed claim if it holds the
//!    key, and the highest major it knows the agent under).
//! 2. When every peer has answered, or [`RECOVERY_QUERY_NS`] has passed,
//!    the recovery completes or is refused. It is refused, unless forced,
//!    when a peer proved it owns the agent under a newer epoch, when this
//!    node's own handoff to a peer is in doubt and that peer did not prove
//!    otherwise, or when a peer did not answer (it may be the live owner).
//!    A forced recovery is logged with what it overrode.
//!
//! The new major is above every major this node has seen or any peer
//! reported (a source that relinquished counts the major its target takes,
//! so a chain a→b→c is covered by asking b even when c lost its disk): EI-1
//! per epoch, two nodes never tick one agent in one epoch. The outcome reaches the operator as
//! [`Event::Recovered`] or [`Event::CommandRefused`] (`command=recover`).

use super::*;
use std::collections::BTreeSet;

/// How long a recovery waits for the peers' answers before it decides with
/// the answers it has (peers that did not answer count as silent).
pub const RECOVERY_QUERY_NS: u64 = 3_000_000_000;

/// A peer's reported major is believed only this far above what this node
/// knows: an honest major grows by one per handoff or recovery, and a liar
/// must not push the recovery to the end of the range.
const MAX_MAJOR_JUMP: u64 = 1 << 32;

/// A recovery waiting for the peers' answers.
#[derive(Clone, Debug)]
pub(super) struct RecoveryQuery {
    anchor: Hash32,
    force: bool,
    deadline_mono_ns: u64,
    /// Asked and not yet answered.
    waiting: BTreeSet<NodeId>,
    /// The request failed or the answer could not be read.
    silent: BTreeSet<NodeId>,
    /// The highest major any peer reported for the agent.
    reported_major: u64,
    /// Peers that asked about the agent in RECOVERY_REQUIRED while this
    /// recovery was asking: they may be recovering it at the same time.
    contested: BTreeSet<NodeId>,
}

impl<X: Executor, D: Disk, C: Clock, R: Entropy> Node<X, D, C, R> {
    /// Start an operator recovery of `agent` from `anchor` (see the module
    /// docs). `Ok`: refused nothing yet, the peers are being asked (or there
    /// are none and the recovery is done); the outcome is an event.
    pub(super) fn recover(&mut self, agent: AgentId, anchor: Hash32, force: bool) -> Result<(), Refused> {
        if self.recoveries.contains_key(&agent) {
            let why = "a recovery of this agent is already asking its peers".to_string();
            return Err(self.refuse("recover", Some(&agent), NodeError::operator(Some(&agent), why)));
        }
        self.recovery_preconditions(&agent, anchor)?;
        let peers: BTreeSet<NodeId> = self.cfg.peers.iter().filter(|p| **p != self.cfg.node_id).cloned().collect();
        if peers.is_empty() {
            return self.complete_recovery(agent, anchor, force, 0, &BTreeSet::new());
        }
        let deadline_mono_ns = self.clock.mono_ns().saturating_add(RECOVERY_QUERY_NS);
        let query = RecoveryQuery {
            anchor,
            force,
            deadline_mono_ns,
            waiting: peers.clone(),
            silent: BTreeSet::new(),
            reported_major: 0,
            contested: BTreeSet::new(),
        };
        self.recoveries.insert(agent.clone(), query);
        // The agent is RECOVERY_REQUIRED here (checked above): the
        // announcement asks every peer for its view.
        self.announce_with(&agent, RECOVERY_QUERY_NS, |agent, peer| Pending::Query { agent, peer });
        Ok(())
    }

    /// What a recovery needs locally: the agent in RECOVERY_REQUIRED, the
    /// anchor its newest checkpoint, the agent key at hand.
    fn recovery_preconditions(&mut self, agent: &AgentId, anchor: Hash32) -> Result<(), Refused> {
        let Some(s) = self.agents.get(agent) else {
            return Err(self.refuse("recover", Some(agent), NodeError::operator(Some(agent), "unknown agent")));
        };
        if s.authority.state() != AuthorityState::RecoveryRequired {
            let st = s.authority.state();
            let why = NodeError::operator(Some(agent), format!("agent is {st}, not RECOVERY_REQUIRED"));
            return Err(self.refuse("recover", Some(agent), why));
        }
        let head = s.lineage.head_hash();
        if head != anchor || s.lineage.head().is_none() {
            let why = format!(
                "anchor {} is not this node's newest checkpoint {} (recovery resumes only from the local head)",
                anchor.short(),
                head.short()
            );
            return Err(self.refuse("recover", Some(agent), NodeError::operator(Some(agent), why)));
        }
        if s.key.is_none() {
            let why = NodeError::operator(Some(agent), "this node no longer holds the agent key");
            return Err(self.refuse("recover", Some(agent), why));
        }
        Ok(())
    }

    /// One peer's answer to a recovery query: `Some(major)` the highest
    /// major it reported (0 if none), `None` no usable answer. The claim in
    /// the answer was already weighed by `observe_peer_view`.
    pub(super) fn recovery_answer(&mut self, agent: &AgentId, peer: &NodeId, answer: Option<u64>) {
        let known = self.agents.get(agent).map_or(0, |s| s.highest_major_seen.max(s.authority.epoch().major));
        let Some(q) = self.recoveries.get_mut(agent) else { return };
        if !q.waiting.remove(peer) {
            return;
        }
        match answer {
            Some(major) if major <= known.saturating_add(MAX_MAJOR_JUMP) => {
                q.reported_major = q.reported_major.max(major);
            }
            Some(major) => {
                q.silent.insert(peer.clone());
                let why = format!("recovery: {peer} reported epoch major {major}, implausibly far above {known}");
                self.fault(Some(agent), why);
            }
            None => {
                q.silent.insert(peer.clone());
            }
        }
        if self.recoveries.get(agent).is_some_and(|q| q.waiting.is_empty()) {
            self.finish_recovery(agent);
        }
    }

    /// A peer announced the agent in RECOVERY_REQUIRED while this node's
    /// recovery of it is asking: two operators may be recovering one agent
    /// on two nodes at once, and each would see the other in
    /// RECOVERY_REQUIRED. Both refuse (unless forced); one retries.
    pub(super) fn recovery_contested(&mut self, agent: &AgentId, peer: &NodeId) {
        if let Some(q) = self.recoveries.get_mut(agent) {
            q.contested.insert(peer.clone());
        }
    }

    /// Decide the recoveries whose peers ran out of time.
    pub(super) fn expire_recoveries(&mut self, now_mono_ns: u64) {
        let due: Vec<AgentId> =
            self.recoveries.iter().filter(|(_, q)| q.deadline_mono_ns <= now_mono_ns).map(|(a, _)| a.clone()).collect();
        for agent in due {
            if let Some(q) = self.recoveries.get_mut(&agent) {
                let waiting = std::mem::take(&mut q.waiting);
                q.silent.extend(waiting);
            }
            self.finish_recovery(&agent);
        }
    }

    /// The earliest deadline of a recovery waiting for its peers.
    pub(super) fn next_recovery_deadline(&self) -> Option<u64> {
        self.recoveries.values().map(|q| q.deadline_mono_ns).min()
    }

    fn finish_recovery(&mut self, agent: &AgentId) {
        let Some(q) = self.recoveries.remove(agent) else { return };
        // Things may have changed while the peers were asked (a package
        // arrived, another command ran): check again.
        if self.recovery_preconditions(agent, q.anchor).is_err() {
            return;
        }
        if !q.contested.is_empty() {
            let names: Vec<&str> = q.contested.iter().map(NodeId::as_str).collect();
            let why = format!(
                "peers [{}] asked about the agent in RECOVERY_REQUIRED meanwhile: they may be recovering it too \
                 (recover it on one node only, then retry there; or force)",
                names.join(", ")
            );
            if !q.force {
                let _ = self.refuse("recover", Some(agent), NodeError::operator(Some(agent), why));
                return;
            }
            self.fault(Some(agent), format!("forced recovery: {why}"));
        }
        // The refusal is reported as an event; nothing else to do with it.
        let _ = self.complete_recovery(agent.clone(), q.anchor, q.force, q.reported_major, &q.silent);
    }

    /// Take authority back under a fresh major, once the peers have been
    /// heard (or there are none): the refusals of spec §5, then the
    /// re-anchoring record, the instance, the authority record.
    fn complete_recovery(
        &mut self,
        agent: AgentId,
        anchor: Hash32,
        force: bool,
        reported_major: u64,
        silent: &BTreeSet<NodeId>,
    ) -> Result<(), Refused> {
        let Some(s) = self.agents.get(&agent) else {
            return Err(self.refuse("recover", Some(&agent), NodeError::operator(Some(&agent), "unknown agent")));
        };
        // Spec §5: recovery refuses when it cannot rule out a live owner.
        let mut doubts = Vec::new();
        if let Some((peer, epoch)) = s.live_elsewhere.clone().filter(|(_, e)| *e > s.authority.epoch()) {
            doubts.push(format!(
                "peer {peer} may hold the agent as ACTIVE_OWNER at epoch {epoch} (it proved it, or a handoff to it \
                 is in doubt): recovering here could fork it (check {peer}; retire this copy instead, or force \
                 once {peer} does not hold it)"
            ));
        }
        if !silent.is_empty() {
            let names: Vec<&str> = silent.iter().map(NodeId::as_str).collect();
            doubts.push(format!(
                "peers [{}] did not answer within {} ms: one of them may own the agent (check them, or force)",
                names.join(", "),
                RECOVERY_QUERY_NS / 1_000_000
            ));
        }
        if !doubts.is_empty() {
            let why = doubts.join("; ");
            if !force {
                return Err(self.refuse("recover", Some(&agent), NodeError::operator(Some(&agent), why)));
            }
            self.fault(Some(&agent), format!("forced recovery: {why}"));
        }
        let Some(s) = self.agents.get(&agent) else { unreachable!("checked above") };
        let anchor_tick = s.lineage.head().map(|c| c.tick).unwrap_or_default();
        let anchor_major = s.lineage.head().map(|c| c.epoch.major).unwrap_or(0);
        let now = self.clock.now();
        let lease = Lease::grant(&self.cfg.lease, now.unix_ns);
        let Some(s) = self.agents.get_mut(&agent) else { unreachable!("checked above") };
        let before = (s.authority.clone(), s.lease);
        // Spec §5: recovery takes a major no node has used (EI-1 per
        // epoch: two nodes never tick one agent in one epoch), above every
        // major this node has seen, including (major + 1) for its own
        // handoffs (raised when it relinquished), and every major a peer
        // reported, which covers their handoffs. A recovery forced past
        // silent peers skips one more: a silent peer's last handoff may have
        // been assumed under a major nobody reported (safety beyond that
        // rests on the operator's check, and the log says it was forced).
        let skip = u64::from(!silent.is_empty());
        let highest = s.highest_major_seen.max(anchor_major).max(reported_major).saturating_add(skip);
        let t = match s.authority.recover(Reason::Recovery, highest) {
            Ok(t) => t,
            Err(v) => return Err(self.refuse("recover", Some(&agent), NodeError::violation(&agent, v.to_string()))),
        };
        // Spec §5 / EI-1 per epoch: the recovered major must be above every
        // major this node has seen or any peer reported. Only at the end of
        // the range (a proven claim can name any major) is none left.
        if t.epoch.major <= highest {
            (s.authority, s.lease) = before;
            let why = format!("no epoch major above {highest} is left to recover under");
            return Err(self.refuse("recover", Some(&agent), NodeError::violation(&agent, why)));
        }
        s.lease = lease;
        s.highest_major_seen = t.epoch.major;
        let reanchored = self.record_recovery(&agent, anchor_tick, anchor, t.epoch);
        if let Err(e) = reanchored.and_then(|_| self.start_instance(&agent)).and_then(|_| self.persist(&agent)) {
            if let Some(s) = self.agents.get_mut(&agent) {
                (s.authority, s.lease) = before;
                s.instance = None;
                s.ticking = false;
            }
            // A record of a recovery that did not happen must not abandon
            // a branch later.
            let _ = store::remove_if_present(&self.disk, &lineage::recovery_path(&agent, anchor_tick, t.epoch.major));
            return Err(self.refuse("recover", Some(&agent), e));
        }
        self.emit(Event::AuthorityChanged {
            agent: agent.clone(),
            from: Some(t.from),
            to: t.to,
            epoch: t.epoch,
            reason: Reason::Recovery,
        });
        let budget = self.agents.get(&agent).map(|s| s.budget).unwrap_or_default();
        self.emit(Event::Recovered { agent: agent.clone(), anchor, anchor_tick, epoch: t.epoch, budget });
        self.announce(&agent);
        Ok(())
    }

    /// Re-anchor the lineage before the recovered node may commit (spec §5
    /// clarifications): a signed [`RecoveryRecord`] names the anchor, the
    /// new epoch and the newest head known before (from the authority
    /// record or a damaged file), so `verify` reports "recovered at tick N
    /// from anchor H" instead of a fork; damaged checkpoints newer than the
    /// anchor are moved aside (kept with [`lineage::ABANDONED_SUFFIX`]).
    fn record_recovery(
        &mut self,
        agent: &AgentId,
        anchor_tick: TickNumber,
        anchor: Hash32,
        epoch: Epoch,
    ) -> Result<(), NodeError> {
        let recorded = store::read_record(&self.disk, agent).ok().and_then(|r| r.head_tick.zip(r.head_hash));
        let Some(s) = self.agents.get_mut(agent) else { return Err(NodeError::violation(agent, "unknown agent")) };
        let damaged: Vec<String> = s.lineage.damaged().iter().map(|(p, _)| p.clone()).collect();
        let newest_damaged =
            damaged.iter().filter_map(|p| lineage::history_tick(p).map(|t| (t, format!("damaged {p}")))).max();
        let abandoned = recorded.into_iter().chain(newest_damaged).filter(|(t, _)| *t > anchor_tick).max();
        let key = s.key.as_ref().ok_or_else(|| NodeError::disk(agent, DiskFault::Missing("agent key missing")))?;
        let record =
            RecoveryRecord { agent: agent.clone(), anchor_tick, anchor, epoch, abandoned, signature: String::new() };
        let record = record.sign(key);
        let path = lineage::recovery_path(agent, anchor_tick, epoch.major);
        self.disk
            .write_atomic(&path, &record.encode())
            .map_err(|e| NodeError::disk_in(agent, format!("recovery record {path}"), e))?;
        for path in damaged {
            if let Ok(bytes) = self.disk.read(&path) {
                let aside = format!("{path}{}", lineage::ABANDONED_SUFFIX);
                self.disk
                    .write_atomic(&aside, &bytes)
                    .map_err(|e| NodeError::disk_in(agent, format!("moving {path} aside"), e))?;
            }
            store::remove_if_present(&self.disk, &path)
                .map_err(|e| NodeError::disk_in(agent, format!("moving {path} aside"), e))?;
        }
        if let Some(s) = self.agents.get_mut(agent) {
            s.lineage.forget_damaged();
        }
        Ok(())
    }
}
