//! The target side of a handoff: judging an incoming package
//! ([`crate::migration::judge_package_with`] plus the defences), checking it
//! with the executor (capabilities, price, kv seal, replay of its ticks),
//! storing it, adopting its checkpoint and assuming authority; and the
//! refusal replies.
//!
//! Invariants enforced here: EI-5 (authority is taken at (major + 1, 0) only
//! once durable), EI-11 (a divergent package: RECOVERY_REQUIRED), CM-4 and
//! RE-3 (defence `metering_check`: every tick of the package replays to its
//! checkpoint's state and budget), EI-6 (a failure after HANDOFF_PENDING
//! leaves the agent RECOVERY_REQUIRED and the refusal in doubt).

use super::defence::Defence;
use super::*;
use crate::env::DiskError;
use crate::migration::{Judgement, LocalView, Outcome, PackageFacts};
use crate::replay::{self, DivergenceKind, LoggedTick};
use crate::wire::{AgentPackage, AgentStarted, AgentTransfer, Body, Envelope, Header, MessageKind, ReplayData};

impl<X: Executor, D: Disk, C: Clock, R: Entropy> Node<X, D, C, R> {
    pub(super) fn accept_transfer(&mut self, from: &NodeId, h: &Header, t: AgentTransfer, now: Now) -> Vec<u8> {
        let agent = h.agent.clone();
        let pkg = t.package;
        let ckpt = match Checkpoint::decode(&pkg.checkpoint) {
            Ok(c) => c,
            Err(e) => return self.refuse_transfer(from, h, NodeError::peer(from, &agent, format!("checkpoint: {e}"))),
        };
        let seed: Option<[u8; 32]> = pkg.agent_identity.as_deref().and_then(|s| s.try_into().ok());
        let key = seed.map(Keypair::from_seed);
        let facts = PackageFacts {
            epoch: h.epoch,
            expiry_unix_ns: h.expiry_unix_ns,
            checkpoint: &ckpt,
            checkpoint_hash: Hash32::of(&pkg.checkpoint),
            head_tick: h.head_tick,
            head_hash: h.head_hash,
            wasm_hash_field: &pkg.wasm_hash,
            wasm_hash_actual: Hash32::of(&pkg.wasm_binary),
            budget: Microcents(pkg.budget),
            identity: key.as_ref().map(|k| k.public()),
            issued_unix_ns: h.issued_unix_ns,
        };
        let clock = migration::JudgeClock { now_unix_ns: now.unix_ns, started_unix_ns: self.started_unix_ns };
        let local = self.local_view(&agent, &ckpt, facts.checkpoint_hash);
        let d = self.cfg.defences;
        let checks = migration::JudgeChecks {
            replay_window: d.replay_window,
            divergence_detection: d.divergence_detection,
            identity: d.transfer_identity_checks,
        };
        let judgement = migration::judge_package_with(local.as_ref(), &facts, clock, checks);
        if judgement != Judgement::AlreadyAccepted {
            if let Some(reason) = self.guard.sticky_refusal(&h.issuer, h.nonce) {
                let why = NodeError::peer(from, &agent, format!("refused before: {reason}"));
                return self.refuse_transfer(from, h, why);
            }
            let env_kind = MessageKind::AgentTransfer;
            if let Err(r) = self.guard.check_package(&d, &agent, h.epoch, ckpt.agent_key()) {
                self.guard.rejected += 1;
                self.emit(Event::ClaimRejected {
                    agent: agent.clone(),
                    peer: from.clone(),
                    kind: env_kind,
                    defence: r.defence,
                    reason: r.reason.clone(),
                });
                self.guard.remember_refusal(&h.issuer, h.nonce, h.expiry_unix_ns, now.unix_ns, &r.reason);
                let why = NodeError::peer(from, &agent, PeerFault::Defence { defence: r.defence, reason: r.reason });
                return self.refuse_transfer(from, h, why);
            }
        }
        match judgement {
            Judgement::AlreadyAccepted => {
                self.stale(&agent, from, MessageKind::AgentTransfer, h.epoch);
                self.started_reply(&agent, from, h, true, None)
            }
            Judgement::Refuse(reason) => {
                // Name the defence that refused, if one did: the judgement
                // with that one switch off would not have refused.
                let blame = [
                    (Defence::ReplayWindow, migration::JudgeChecks { replay_window: false, ..checks }),
                    (Defence::TransferIdentityChecks, migration::JudgeChecks { identity: false, ..checks }),
                ]
                .into_iter()
                .find(|(_, c)| {
                    *c != checks
                        && !matches!(
                            migration::judge_package_with(local.as_ref(), &facts, clock, *c),
                            Judgement::Refuse(_)
                        )
                });
                if let Some((defence, _)) = blame {
                    self.emit(Event::ClaimRejected {
                        agent: agent.clone(),
                        peer: from.clone(),
                        kind: MessageKind::AgentTransfer,
                        defence,
                        reason: reason.to_string(),
                    });
                }
                self.refuse_transfer(from, h, NodeError::peer(from, &agent, reason))
            }
            Judgement::Conflict { reason, detail } => {
                if reason == Reason::Divergence {
                    let s = self.agents.get(&agent);
                    let local_tick = s.and_then(|s| s.lineage.head().map(|c| c.tick)).unwrap_or_default();
                    let local_head = s.map(|s| s.lineage.head_hash()).unwrap_or_default();
                    self.emit(Event::DivergenceDetected {
                        agent: agent.clone(),
                        peer: from.clone(),
                        epoch: h.epoch,
                        local_tick,
                        local_head,
                        remote_tick: h.head_tick,
                        remote_head: h.head_hash,
                    });
                }
                self.fall_to_recovery(&agent, reason);
                // Not a clean refusal: once this node is RECOVERY_REQUIRED a
                // duplicate of the package could be accepted, so the source
                // must not resume. Claim at least the package's epoch.
                self.refuse_transfer_in_doubt(from, h, NodeError::peer(from, &agent, detail))
            }
            Judgement::Accept => {
                // Checked by judge_package: the identity is present.
                let Some(key) = key else {
                    return self.refuse_transfer(from, h, NodeError::peer(from, &agent, "AgentIdentity missing"));
                };
                // EI-5: the target assumes at (major + 1, 0), above the
                // package. A package at the last major (its signer chose it)
                // leaves none: refused cleanly, before anything changes here.
                if h.epoch.next_major().is_none() {
                    let why = format!("package epoch {} leaves no newer epoch to assume", h.epoch);
                    return self.refuse_transfer(from, h, NodeError::peer(from, &agent, why));
                }
                match self.check_with_executor(&agent, &pkg, &ckpt, &key) {
                    Err(fault) => {
                        if let PeerFault::Defence { defence: Defence::MeteringCheck, reason } = &fault {
                            self.emit(Event::ClaimRejected {
                                agent: agent.clone(),
                                peer: from.clone(),
                                kind: MessageKind::AgentTransfer,
                                defence: Defence::MeteringCheck,
                                reason: reason.clone(),
                            });
                        }
                        self.refuse_transfer(from, h, NodeError::peer(from, &agent, fault))
                    }
                    Ok((hash, kv)) => self.assume(from, h, pkg, ckpt, key, hash, kv, now),
                }
            }
        }
    }

    fn local_view(&self, agent: &AgentId, c: &Checkpoint, hash: Hash32) -> Option<LocalView> {
        let s = self.agents.get(agent)?;
        let has_checkpoint =
            self.disk.read(&lineage::history_path(agent, c.tick)).map(|b| Hash32::of(&b) == hash).unwrap_or(false);
        Some(LocalView {
            state: s.authority.state(),
            epoch: s.authority.epoch(),
            head_tick: s.lineage.head().map(|c| c.tick),
            agent_key: s.lineage.head().and_then(|c| c.agent_key().copied()),
            has_checkpoint,
        })
    }

    /// Capabilities (prepare), price policy, kv seal and optional replay of
    /// the last tick. Any failure is a clean refusal.
    fn check_with_executor(
        &mut self,
        agent: &AgentId,
        pkg: &AgentPackage,
        ckpt: &Checkpoint,
        key: &Keypair,
    ) -> Result<(Hash32, Vec<u8>), PeerFault> {
        migration::check_price_policy(&pkg.manifest_data, self.cfg.price_per_second)?;
        let hash = self.exec.prepare(&pkg.wasm_binary, &pkg.manifest_data).map_err(|e| e.to_string())?;
        ckpt.check_wasm(&hash).map_err(|e| e.to_string())?;
        let public = key.public();
        let kv = match &pkg.kv {
            Some(sealed) => store::open_kv(&public, agent, ckpt, sealed).map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        let metering = self.cfg.defences.metering_check;
        if let (true, true, Some(r)) = (self.cfg.replay_on_accept, metering, &pkg.replay_data) {
            self.check_replay(agent, pkg, r, ckpt, &hash, &kv)?;
        }
        Ok((hash, kv))
    }

    fn check_replay(
        &mut self,
        agent: &AgentId,
        pkg: &AgentPackage,
        r: &ReplayData,
        ckpt: &Checkpoint,
        hash: &Hash32,
        kv: &[u8],
    ) -> Result<(), PeerFault> {
        let prev = Checkpoint::parse(&r.prev_checkpoint, Some(hash))
            .map_err(|e| PeerFault::Package(format!("replay base: {e}")))?;
        if Hash32::of(&r.prev_checkpoint) != ckpt.prev_hash() {
            return Err("signature chain broken: replay base is not the checkpoint's parent".into());
        }
        if prev.agent_key() != ckpt.agent_key() || prev.agent_key().is_none() {
            return Err("identity discontinuity between replay base and checkpoint".into());
        }
        // Bounded before any work: an honest source commits at least every
        // MAX_TICKS_PER_CHECKPOINT ticks.
        if r.following.len() as u64 >= super::MAX_TICKS_PER_CHECKPOINT {
            return Err(PeerFault::Package(format!(
                "replay data holds {} ticks, more than a checkpoint may span",
                r.following.len() + 1
            )));
        }
        let key = prev.agent_key().copied().ok_or("replay base unsigned")?;
        let kv_before = store::open_kv(&key, agent, &prev, &r.prev_kv).map_err(|e| e.to_string())?;
        // The ticks ran on the source, at the price its handoff checkpoint
        // names (the parent may come from another node).
        let mut ticks = Vec::with_capacity(r.following.len() + 1);
        for t in r.ticks() {
            let inputs = TickInputs {
                tick: TickNumber(t.tick),
                now_unix_ns: t.now_unix_ns,
                rand_seed: t.rand_seed.as_slice().try_into().map_err(|_| "RandSeed not 32 bytes")?,
                budget: Microcents(t.budget),
                price_per_second: ckpt.price_per_second,
                side_effects_allowed: true,
                receipts: Vec::new(),
            };
            ticks.push(LoggedTick { inputs, event_log: t.event_log });
        }
        // Defence `metering_check`: every tick is re-run from the parent,
        // by the one replay check (`replay::check_link`, the audit's), and
        // must charge exactly its replayed cost plus the payments its log
        // records (RE-3): a node lying about metering, or editing the
        // budget, is caught here.
        let mut instance = self
            .exec
            .start(hash, &pkg.manifest_data, &prev.state, &kv_before)
            .map_err(|e| metering(format!("replay base: {e}")))?;
        let link = replay::Link {
            parent_tick: prev.tick,
            parent_budget: prev.budget,
            ticks: &ticks,
            tick: ckpt.tick,
            budget: ckpt.budget,
            state: &ckpt.state,
            kv: Some(kv),
        };
        let charge = replay::Charge::Exact;
        replay::check_link(&mut self.exec, hash, &pkg.manifest_data, &mut instance, &link, charge).map_err(|d| {
            match d.kind {
                // Not the link the checkpoint closes: a malformed package.
                DivergenceKind::Shape(_) | DivergenceKind::BudgetStart { .. } => {
                    PeerFault::Package(format!("replay data inconsistent with the chain: {d}"))
                }
                _ => metering(d.to_string()),
            }
        })?;
        Ok(())
    }

    /// The commit sequence of a target: record HANDOFF_PENDING, store the
    /// agent's files, adopt the checkpoint, take authority at (major+1, 0)
    /// durably, start ticking, confirm. A failure before authority is
    /// durable leaves this node RECOVERY_REQUIRED at the package's epoch;
    /// the refusal then carries that epoch, so the source treats the
    /// outcome as ambiguous too (both pause; the operator recovers).
    #[allow(clippy::too_many_arguments)]
    fn assume(
        &mut self,
        from: &NodeId,
        h: &Header,
        pkg: AgentPackage,
        ckpt: Checkpoint,
        key: Keypair,
        hash: Hash32,
        kv: Vec<u8>,
        now: Now,
    ) -> Vec<u8> {
        let agent = h.agent.clone();
        // Spec §5: a RETIRED record is terminal for its epoch; a returning
        // agent arrives as a fresh incoming handoff (the old record is
        // archived, not transitioned). Judgement lets no other local state
        // get here (RECOVERY_REQUIRED refuses, live states conflict).
        let previous = self.agents.get(&agent).map(|s| s.authority.state()).filter(|s| *s != AuthorityState::Retired);
        let lineage = match self.agents.remove(&agent) {
            Some(s) => s.lineage,
            None => Lineage::open(&self.disk, &agent).unwrap_or_else(|_| Lineage::new(agent.clone())),
        };
        let mut slot: Slot<X::Instance> = Slot::new(Authority::incoming(h.epoch), lineage, now);
        slot.highest_major_seen = h.epoch.next_major_bound();
        slot.manifest = pkg.manifest_data.clone();
        slot.wasm_hash = hash;
        self.agents.insert(agent.clone(), slot);
        self.emit(Event::AuthorityChanged {
            agent: agent.clone(),
            from: previous,
            to: AuthorityState::HandoffPending,
            epoch: h.epoch,
            reason: Reason::PackageReceived,
        });
        let result = self.store_and_adopt(&agent, from, &pkg, &ckpt, &key, &kv);
        let result = result.and_then(|()| {
            let s = self.agents.get_mut(&agent).ok_or_else(|| NodeError::violation(&agent, "slot vanished"))?;
            debug_assert!(s.authority.permits(Op::AcceptHandoff), "only a pending target accepts");
            let before = s.authority.clone();
            let t = s.authority.assume().map_err(|v| NodeError::violation(&agent, v.to_string()))?;
            // EI-5: the target takes authority under an epoch above the
            // package's (a package at the last major was refused before),
            // so the source's claim is superseded everywhere.
            debug_assert!(t.epoch > h.epoch, "assumed at {} from a package at {}", t.epoch, h.epoch);
            s.lease = Lease::grant(&self.cfg.lease, now.unix_ns);
            s.key = Some(key);
            if let Err(e) = self.persist(&agent) {
                if let Some(s) = self.agents.get_mut(&agent) {
                    s.authority = before;
                }
                return Err(e);
            }
            Ok(t)
        });
        let t = match result {
            Ok(t) => t,
            Err(e) => {
                self.fall_to_recovery(&agent, Reason::Fault);
                return self.refuse_transfer_in_doubt(from, h, e.context("target could not store the agent"));
            }
        };
        self.emit(Event::AuthorityChanged {
            agent: agent.clone(),
            from: Some(t.from),
            to: t.to,
            epoch: t.epoch,
            reason: Reason::Assumed,
        });
        if let Err(e) = self.start_instance(&agent) {
            self.halt(&agent, format!("cannot start after transfer: {e}"));
        }
        let head_hash = self.agents.get(&agent).map(|s| s.lineage.head_hash()).unwrap_or_default();
        self.emit(Event::MigrationFinished {
            agent: agent.clone(),
            peer: from.clone(),
            role: Role::Target,
            outcome: Outcome::Completed,
            budget: ckpt.budget,
            tick: ckpt.tick,
            hash: head_hash,
        });
        self.announce(&agent);
        self.started_reply(&agent, from, h, true, None)
    }

    fn store_and_adopt(
        &mut self,
        agent: &AgentId,
        from: &NodeId,
        pkg: &AgentPackage,
        ckpt: &Checkpoint,
        key: &Keypair,
        kv: &[u8],
    ) -> Result<(), NodeError> {
        let disk = |e: DiskError| NodeError::disk(agent, e);
        self.persist(agent)?;
        key.save(&self.disk, &lineage::agent_key_path(agent)).map_err(|e| NodeError::disk(agent, e))?;
        self.disk.write_atomic(&store::wasm_path(agent), &pkg.wasm_binary).map_err(disk)?;
        self.disk.write_atomic(&store::manifest_path(agent), &pkg.manifest_data).map_err(disk)?;
        let sealed = store::seal_kv(key, agent, ckpt.tick, &ckpt.state, kv);
        self.disk.write_atomic(&store::kv_path(agent, ckpt.tick), &sealed).map_err(disk)?;
        // The link's observation log travels with the package: keep it
        // beside the checkpoint, as the source did (`igord audit`).
        if let Some(log) = pkg.replay_data.as_ref().and_then(|r| store::received_tick_log(agent, ckpt, r)) {
            let path = crate::audit::ticklog::ticks_path(agent, ckpt.tick);
            self.disk.write_atomic(&path, &log.seal(key)).map_err(disk)?;
        }
        let s = self.agents.get_mut(agent).ok_or_else(|| NodeError::violation(agent, "slot vanished"))?;
        let c = s.lineage.adopt(&self.disk, ckpt.clone()).map_err(|e| NodeError::lineage(agent, e))?;
        let hash = s.lineage.head_hash();
        self.emit(Event::CheckpointAdopted {
            agent: agent.clone(),
            from: from.clone(),
            tick: c.tick,
            epoch: c.epoch,
            hash,
            prev_hash: c.prev_hash(),
            budget: c.budget,
        });
        Ok(())
    }

    pub(super) fn refuse_transfer(&mut self, from: &NodeId, h: &Header, reason: NodeError) -> Vec<u8> {
        self.refusal(from, h, reason, false)
    }

    fn refuse_transfer_in_doubt(&mut self, from: &NodeId, h: &Header, reason: NodeError) -> Vec<u8> {
        self.refusal(from, h, reason, true)
    }

    /// A refusal is *clean* (the source may resume once the package has
    /// expired) only if it is sticky: every copy of this package would be
    /// refused too. Otherwise the reply claims at least the package's epoch,
    /// which the source reads as a conflict (ambiguous).
    fn refusal(&mut self, from: &NodeId, h: &Header, reason: NodeError, in_doubt: bool) -> Vec<u8> {
        let reason = reason.to_string();
        let (budget, tick, hash) = (Microcents::ZERO, h.head_tick, h.head_hash);
        self.emit(Event::MigrationFinished {
            agent: h.agent.clone(),
            peer: from.clone(),
            role: Role::Target,
            outcome: Outcome::Refused(reason.clone()),
            budget,
            tick,
            hash,
        });
        let reason: String = reason.chars().take(crate::wire::MAX_ERROR_BYTES / 4).collect();
        let body = AgentStarted {
            agent_id: h.agent.clone(),
            node_id: self.cfg.node_id.clone(),
            success: false,
            error: Some(reason),
        };
        let mut header = self.header(&h.agent, from, h.nonce, h.expiry_unix_ns);
        if in_doubt {
            header.epoch = header.epoch.max(h.epoch);
        }
        self.reply_bytes(Envelope::new(header, Body::AgentStarted(body)))
    }
}

/// A `metering_check` refusal (the replay of the package's ticks does not
/// bear out its budget or state).
fn metering(reason: String) -> PeerFault {
    PeerFault::Defence { defence: Defence::MeteringCheck, reason }
}
