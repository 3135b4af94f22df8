//! An agent's life on this node: deploy (genesis owner, genesis
//! checkpoint), starting an instance from the committed head, halting it,
//! discarding a poisoned one, and the authority transitions every role uses
//! (`set_state`, `fall_to_recovery`) with the end of a handoff.
//!
//! Invariants enforced here: EI-2 (an instance starts only from the
//! committed head; whatever ran since is discarded when authority falls to
//! RECOVERY_REQUIRED or a tick does not finish), EI-6/EI-7 (doubt or a
//! forbidden transition: pause in RECOVERY_REQUIRED and wait for the
//! operator), RE-8 (lifecycle order: transitions go through `Authority`).

use super::tick::CommitKind;
use super::*;

/// Why an agent with no budget left stopped: the reason of every budget
/// halt, here and in tick.rs (the simulator's observer reads the prefix as
/// "for budget").
pub(super) const BUDGET_EXHAUSTED: &str = "budget exhausted";

impl<X: Executor, D: Disk, C: Clock, R: Entropy> Node<X, D, C, R> {
    /// Apply a transition, report it and persist it (HANDOFF_INITIATED is
    /// never persisted). Returns `Err` with the reason if the transition was
    /// forbidden (the agent is then RECOVERY_REQUIRED) or could not be made
    /// durable.
    pub(super) fn set_state(&mut self, agent: &AgentId, to: AuthorityState, reason: Reason) -> Result<(), NodeError> {
        let Some(s) = self.agents.get_mut(agent) else {
            return Err(NodeError::violation(agent, format!("unknown agent {agent}")));
        };
        let from = s.authority.state();
        let epoch_before = s.authority.epoch();
        let result = s.authority.transition(to, reason.clone());
        let epoch = s.authority.epoch();
        // The epoch never decreases on a node (spec §5: epochs order
        // authority; a transition keeps it, only assume/recover/renew raise).
        debug_assert!(epoch >= epoch_before, "epoch fell from {epoch_before} to {epoch} on {from} -> {to}");
        if result.is_ok() && to == AuthorityState::HandoffPending && reason == Reason::Relinquished {
            // The target assumes at (major + 1): a recovery anywhere that
            // asks this node must stay above it, even after it retires.
            s.highest_major_seen = s.highest_major_seen.max(epoch.next_major_bound());
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
            Some(v) => Err(NodeError::violation(agent, v.to_string())),
            None => Ok(()),
        }
    }

    /// Doubt: stop, and wait for the operator (EI-6/EI-7). Ends any handoff
    /// this node was running for the agent as ambiguous.
    pub(super) fn fall_to_recovery(&mut self, agent: &AgentId, reason: Reason) {
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
    pub(super) fn end_handoff(&mut self, agent: &AgentId) -> Option<SourceHandoff> {
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

    pub(super) fn finish_event(&mut self, agent: &AgentId, peer: &NodeId, role: Role, outcome: migration::Outcome) {
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

    /// (Re)start the instance from the newest committed checkpoint (EI-2).
    pub(super) fn start_instance(&mut self, agent: &AgentId) -> Result<(), NodeError> {
        let wasm = self.disk.read(&store::wasm_path(agent)).map_err(|e| NodeError::disk(agent, e))?;
        let s = self.agents.get_mut(agent).ok_or_else(|| NodeError::violation(agent, "unknown agent"))?;
        let head = s.lineage.head().ok_or_else(|| NodeError::violation(agent, "no checkpoint to start from"))?.clone();
        let key =
            s.key.as_ref().ok_or_else(|| NodeError::disk(agent, DiskFault::Missing("agent key missing")))?.public();
        let sealed = self.disk.read(&store::kv_path(agent, head.tick)).map_err(|e| NodeError::disk(agent, e))?;
        let kv = store::open_kv(&key, agent, &head, &sealed).map_err(|e| NodeError::disk(agent, e))?;
        let hash = self.exec.prepare(&wasm, &s.manifest).map_err(|e| NodeError::guest(agent, e))?;
        if hash != head.wasm_hash {
            let why = format!("module hash {} differs from checkpoint's {}", hash.short(), head.wasm_hash.short());
            return Err(NodeError::guest(agent, why));
        }
        let instance = self.exec.start(&hash, &s.manifest, &head.state, &kv).map_err(|e| NodeError::guest(agent, e))?;
        let now = self.clock.now();
        s.instance = Some(instance);
        s.wasm_hash = hash;
        s.rewind_to_head();
        s.last_checkpoint_ns = now.mono_ns;
        s.next_tick_ns = now.mono_ns;
        s.ticking = true;
        s.halted = None;
        // Spec §3: an instance started at budget 0 (loaded, adopted or
        // recovered that way) is stopped for budget at once, and says so
        // like one that ran out mid-run: the runner's liveness check and
        // the checker learn of halts only from the event.
        self.halt_if_spent(agent, head.budget);
        Ok(())
    }

    /// Spec §3: an agent with no budget left never ticks. Halt it, with
    /// its event, unless it is halted already (one event per halt). Its
    /// final checkpoint (budget 0) is the committed head it stands on.
    fn halt_if_spent(&mut self, agent: &AgentId, budget: Microcents) {
        let halted = self.agents.get(agent).is_none_or(|s| s.halted.is_some());
        if budget == Microcents::ZERO && !halted {
            self.halt(agent, BUDGET_EXHAUSTED.to_string());
        }
    }

    pub(super) fn halt(&mut self, agent: &AgentId, reason: String) {
        if let Some(s) = self.agents.get_mut(agent) {
            s.halted = Some(reason.clone());
            s.ticking = false;
        }
        self.emit(Event::AgentHalted { agent: agent.clone(), reason });
    }

    /// A tick that did not run to its end left the instance poisoned
    /// (NOTES: never snapshot it). Drop it and every tick since the last
    /// checkpoint, as a crash would (EI-2: the agent resumes only from its
    /// committed head), and halt the agent: a deterministic fault would only
    /// recur. Nothing is left due, so the node cannot spin on it.
    pub(super) fn discard_instance(&mut self, agent: &AgentId, why: &str) {
        let Some(s) = self.agents.get_mut(agent) else { return };
        let discarded = s.ticks_since_checkpoint;
        s.rewind_to_head();
        s.instance = None;
        self.halt(agent, format!("{why}; {discarded} uncommitted tick(s) discarded"));
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
            return Err(self.refuse("deploy", Some(&agent), NodeError::operator(Some(&agent), "node is shut down")));
        }
        if self.agents.contains_key(&agent) || self.disk.exists(&store::authority_path(&agent)) {
            let why = NodeError::operator(Some(&agent), "agent already known on this node");
            return Err(self.refuse("deploy", Some(&agent), why));
        }
        if budget.is_negative() {
            let why = NodeError::operator(Some(&agent), format!("negative budget {budget}"));
            return Err(self.refuse("deploy", Some(&agent), why));
        }
        if let Err(e) = migration::migration_policy(&manifest) {
            return Err(self.refuse("deploy", Some(&agent), NodeError::guest(&agent, e)));
        }
        let hash = match self.exec.prepare(&wasm, &manifest) {
            Ok(h) => h,
            Err(e) => return Err(self.refuse("deploy", Some(&agent), NodeError::guest(&agent, e))),
        };
        // Drawn here, after every check, as before keys could be given:
        // a refused deploy draws nothing (simulator traces stay put).
        let key = key.unwrap_or_else(|| Keypair::generate(&mut self.entropy));
        if let Err(r) = defence::Guard::check_agent_key(&self.cfg.defences, &agent, &key.public(), "deploy key") {
            return Err(self.refuse("deploy", Some(&agent), NodeError::operator(Some(&agent), r.reason)));
        }
        let stored = key
            .save(&self.disk, &lineage::agent_key_path(&agent))
            .map_err(DiskFault::from)
            .and_then(|_| self.disk.write_atomic(&store::wasm_path(&agent), &wasm).map_err(DiskFault::from))
            .and_then(|_| self.disk.write_atomic(&store::manifest_path(&agent), &manifest).map_err(DiskFault::from));
        if let Err(e) = stored {
            return Err(self.refuse("deploy", Some(&agent), NodeError::disk_in(&agent, "disk", e)));
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
            Err(e) => return Err(self.refuse("deploy", Some(&agent), NodeError::guest(&agent, e))),
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
        let genesis = self.persist(&agent).and_then(|_| self.commit(&agent, CommitKind::Genesis, now));
        if let Err(e) = genesis {
            self.fault(Some(&agent), format!("genesis: {e}"));
            self.fall_to_recovery(&agent, Reason::Fault);
            return Err(self.refuse("deploy", Some(&agent), e));
        }
        if let Some(s) = self.agents.get_mut(&agent) {
            s.ticking = true;
        }
        // Deployed with nothing to spend: the genesis checkpoint is also
        // the final one (spec §3), and the halt is reported like any other.
        self.halt_if_spent(&agent, budget);
        self.announce(&agent);
        Ok(())
    }
}
