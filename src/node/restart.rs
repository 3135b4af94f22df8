//! Restart: an agent found on disk when the node opens. It is restored
//! conservatively: anything that cannot be shown safe (a handoff in flight,
//! a damaged or stale checkpoint, a missing key or module, a lapsed lease)
//! leaves it RECOVERY_REQUIRED; an owner whose state checks out resumes from
//! its newest checkpoint.
//!
//! Invariants enforced here: EI-2 (resume only from the committed head),
//! EI-6 (restart in doubt: pause), RE-1 (a damaged checkpoint is never
//! resumed from), defence `self_certifying_ids` on the local history.

use super::*;

impl<X: Executor, D: Disk, C: Clock, R: Entropy> Node<X, D, C, R> {
    pub(super) fn load_agent(&mut self, agent: AgentId) {
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
            slot.highest_major_seen = slot.highest_major_seen.max(rec.epoch.next_major_bound());
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
        // Loaded first: a halt at start (budget 0, a module that no longer
        // starts) follows it, so the checker's record of this run holds the
        // halt and flags any tick after it.
        self.loaded_event(&agent);
        if self.agents.get(&agent).is_some_and(|s| s.authority.state() == AuthorityState::ActiveOwner) {
            if let Err(e) = self.start_instance(&agent) {
                self.halt(&agent, format!("cannot start after restart: {e}"));
            }
            self.announce(&agent);
        }
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
                return Some((
                    Reason::RestartInDoubt,
                    format!("{} (as {}) when the node stopped", rec.state, role_word(rec.role)),
                ));
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
                format!(
                    "stale checkpoint: record names head tick {}, disk has {}",
                    tick_word(rec.head_tick),
                    tick_word(head_tick)
                ),
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
}

/// A role in a message: `source` or `target` (no Rust `Debug` in texts
/// that reach traces and operators).
fn role_word(role: Role) -> &'static str {
    match role {
        Role::Source => "source",
        Role::Target => "target",
    }
}

/// A head tick in a message, `none` for no head.
fn tick_word(tick: Option<TickNumber>) -> String {
    tick.map_or_else(|| "none".to_string(), |t| t.to_string())
}
