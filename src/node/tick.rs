//! The tick loop: what [`Node::advance`] runs when the clock reaches a
//! deadline (handoff timers, lease renewal or expiry, ticks, checkpoints),
//! the next deadline, and the commit of a checkpoint.
//!
//! Invariants enforced here: EI-1 (only ACTIVE_OWNER under a live lease
//! ticks), CM-5 (side effects only as ACTIVE_OWNER), RE-3/RE-4 (the budget
//! is conserved and never rises: what a tick charges and pays is taken from
//! it, capped by it), RE-1 (a checkpoint is written whole, after its kv and
//! tick log), EI-6 (a checkpoint that cannot be written pauses the agent).

use super::operator::unsafe_recoverable;
use super::*;
use crate::executor::{TickEnd, settle};
use crate::lineage::CommitError;

/// What a checkpoint commit is for: it decides the authority operation that
/// must be permitted and whether an empty commit (no tick since the head)
/// may answer with the head itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CommitKind {
    /// The ticks since the head, as owner: the interval, the tick limit, an
    /// act outside, a final checkpoint (budget exhausted, retire, shutdown).
    /// Nothing new since the head: the head is the answer.
    Routine,
    /// The source seals the checkpoint a handoff ships (HANDOFF_INITIATED
    /// permits it; the event marks it `handoff`). Nothing new since the
    /// head: the head is the package.
    HandoffSeal,
    /// Deploy: the first link (tick 0, no parent), written even though
    /// nothing has ticked.
    Genesis,
}

impl CommitKind {
    /// The authority operation this commit needs (EI-1/CM-5: only the
    /// holder commits; a seal only in HANDOFF_INITIATED).
    fn op(self) -> Op {
        match self {
            CommitKind::Routine | CommitKind::Genesis => Op::NewCheckpoint,
            CommitKind::HandoffSeal => Op::SealHandoff,
        }
    }
}

impl<X: Executor, D: Disk, C: Clock, R: Entropy> Node<X, D, C, R> {
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
            self.feed_handoff(&agent, migration::Input::Timer(timer), now);
        }
        self.expire_recoveries(now.mono_ns);
        for agent in self.agent_ids() {
            // Each agent's steps run at one instant, read here: on a real
            // clock time passes while the agents before it tick, and its
            // lease is judged at the instant it is considered (EI-1).
            let now = self.clock.now();
            self.check_lease(&agent, now);
            self.maybe_tick(&agent, now);
            self.maybe_checkpoint(&agent, now);
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

    fn check_lease(&mut self, agent: &AgentId, now: Now) {
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
                // A renewal raises the generation: the epoch only grows.
                debug_assert!(epoch > before.0.epoch(), "renewal from {} to {epoch}", before.0.epoch());
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

    fn maybe_tick(&mut self, agent: &AgentId, now: Now) {
        let lease_cfg = self.cfg.lease;
        let Some(s) = self.agents.get_mut(agent) else { return };
        // EI-1: only ACTIVE_OWNER under a live lease ticks.
        let may = s.authority.permits(Op::Tick) && s.lease.status(&lease_cfg, now.unix_ns).allows_ticking();
        let paused = s.degraded.is_some();
        if !may || paused || !s.ticking || s.halted.is_some() || s.instance.is_none() || s.next_tick_ns > now.mono_ns {
            return;
        }
        // Tick numbers increase by one per tick: the end of the range stops
        // the agent rather than wrap to a tick it already ran.
        let Some(tick) = s.tick.next() else {
            let last = s.tick;
            self.halt(agent, format!("tick number {last} is the last one"));
            return;
        };
        let mut rand_seed = [0u8; 32];
        self.entropy.fill(&mut rand_seed);
        let inputs = TickInputs {
            tick,
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
        let settled = settle(s.budget, report.cost, report.paid);
        // The conduct's surcharge (honestly none), capped by the budget.
        let (lie, act) = self.conduct.surcharge(agent, settled.cost);
        let lie = lie.clamp_to(settled.left);
        let money = settled.left.checked_sub(lie).and_then(|budget| {
            let charged = s.charged.checked_add(settled.cost)?.checked_add(lie)?;
            Ok((budget, charged, s.paid.checked_add(settled.paid)?))
        });
        let Ok((budget, charged, paid_total)) = money else {
            // RE-3 bounds what is charged and paid since the head by the
            // head's budget, so this cannot overflow; if our own accounting
            // ever breaks, stop the agent rather than commit wrapped money.
            self.discard_instance(agent, &format!("money arithmetic overflow in tick {tick}"));
            return;
        };
        let (cost, paid) = (settled.cost, settled.paid);
        let overcharged = cost != report.cost || paid != report.paid;
        // RE-4: the budget never rises across a tick.
        debug_assert!(budget <= inputs.budget, "RE-4: tick {tick} raised the budget {} to {budget}", inputs.budget);
        // RE-3: what left the budget is exactly what this tick charged
        // (cost and surcharge) and paid, to the microcent.
        debug_assert_eq!(
            inputs.budget.checked_sub(budget).ok(),
            cost.checked_add(lie).and_then(|c| c.checked_add(paid)).ok(),
            "RE-3: tick {tick} moved money it did not charge or pay"
        );
        s.budget = budget;
        s.tick = tick;
        s.charged = charged;
        s.paid = paid_total;
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
        if lie > Microcents::ZERO
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
            outcome: report.outcome.clone(),
            side_effects: report.side_effects,
            side_effects_allowed,
        });
        let tick = inputs.tick;
        // The one rule for what an outcome means (shared with `igord run`).
        match report.outcome.end(tick, budget) {
            TickEnd::Go { .. } => {}
            // Spec §3: budget exhausted: stop ticking, save a final
            // checkpoint (the sandbox restarts a tick the budget cut from
            // the state before it, so the instance can be snapshotted).
            TickEnd::Exhausted => {
                if let Err(e) = self.commit(agent, CommitKind::Routine, now) {
                    self.fault(Some(agent), format!("final checkpoint: {e}"));
                }
                self.halt(agent, super::lifecycle::BUDGET_EXHAUSTED.to_string());
            }
            TickEnd::Fault(why) => self.discard_instance(agent, &why),
        }
    }

    fn maybe_checkpoint(&mut self, agent: &AgentId, at: Now) {
        let now = at.mono_ns;
        let Some(s) = self.agents.get(agent) else { return };
        let interval = now.saturating_sub(s.last_checkpoint_ns) >= self.cfg.checkpoint_interval_ns;
        let full = s.ticks_since_checkpoint >= MAX_TICKS_PER_CHECKPOINT;
        // A retry after a failed write waits its interval, even after an act.
        let acted = s.acted_since_checkpoint && s.degraded.is_none();
        let due = s.ticks_since_checkpoint > 0 && (interval || full || acted) && s.authority.permits(Op::NewCheckpoint);
        if due && let Err(e) = self.commit(agent, CommitKind::Routine, at) {
            // Retry one interval later, never at once: a commit that keeps
            // failing must not keep the deadline in the past (livelock).
            // EI-6: meanwhile the agent pauses instead of ticking unpersisted.
            let unix = at.unix_ns;
            let Some(s) = self.agents.get_mut(agent) else { return };
            s.last_checkpoint_ns = now;
            if s.degraded.is_none() {
                s.degraded = Some((unix, e.to_string()));
                self.emit(Event::PersistFailing { agent: agent.clone(), since_unix_ns: unix, error: e.to_string() });
                self.fault(Some(agent), format!("checkpoint: {e}"));
            }
        }
    }

    /// Commit the running state as the next link. With nothing new since
    /// the head (and not genesis), the head itself is the answer.
    pub(super) fn commit(
        &mut self,
        agent: &AgentId,
        kind: CommitKind,
        now: Now,
    ) -> Result<(TickNumber, Hash32), NodeError> {
        let op = kind.op();
        let Some(s) = self.agents.get_mut(agent) else {
            return Err(NodeError::violation(agent, format!("unknown agent {agent}")));
        };
        if !s.authority.permits(op) {
            return Err(NodeError::violation(agent, format!("{} does not permit {op:?}", s.authority.state())));
        }
        if kind != CommitKind::Genesis
            && s.ticks_since_checkpoint == 0
            && let Some(c) = s.lineage.head()
        {
            return Ok((c.tick, s.lineage.head_hash()));
        }
        let instance = s.instance.as_mut().ok_or_else(|| NodeError::violation(agent, "no running instance"))?;
        let (state, kv) = self.exec.snapshot(instance).map_err(|e| NodeError::guest(agent, e))?;
        let key = s.key.as_ref().ok_or_else(|| NodeError::disk(agent, DiskFault::Missing("agent key missing")))?;
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
        let base_budget = s.lineage.head().map(|c| c.budget);
        // The one commit path (kv sealed, then the observation log of the
        // ticks since the parent, then the checkpoint), shared with `igord run`.
        let c: Checkpoint = s.lineage.commit_link(&self.disk, body, &kv, &s.ticks, key).map_err(|e| match e {
            CommitError::Kv { source, .. } => NodeError::disk(agent, source),
            CommitError::Log { source, .. } => NodeError::disk_in(agent, format!("agent {agent}"), source),
            CommitError::Lineage(e) => NodeError::lineage(agent, e),
        })?;
        let hash = s.lineage.head_hash();
        // EI-3: the new link's parent is the head it was committed on.
        debug_assert_eq!(c.prev_hash(), prev_hash, "EI-3: commit of tick {} is not on the head", c.tick);
        if let (Some(base_tick), Some(base_budget)) = (base_tick, base_budget) {
            // Tick numbers increase by one per tick: the link spans exactly
            // the ticks run since its parent.
            debug_assert_eq!(
                base_tick.checked_add(s.ticks_since_checkpoint),
                Some(c.tick),
                "tick {} committed on parent tick {base_tick} after {} tick(s)",
                c.tick,
                s.ticks_since_checkpoint
            );
            // RE-3 per link: the parent's budget is the child's plus
            // everything charged and paid in between, to the microcent.
            debug_assert_eq!(
                base_budget.checked_sub(c.budget).ok(),
                s.charged.checked_add(s.paid).ok(),
                "RE-3: link {base_tick}->{} loses money it did not charge or pay",
                c.tick
            );
        }
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
            handoff: kind == CommitKind::HandoffSeal,
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
