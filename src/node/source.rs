//! The source side of a handoff: starting it, feeding its sans-IO machine
//! ([`crate::migration::SourceHandoff`]) and performing the actions it
//! returns (transitions, sealing, sending the package, timers, deleting the
//! local copy), and turning the target's reply into the machine's input.
//!
//! Invariants enforced here: EI-4 (a confirmed handoff leaves nothing here:
//! the local copy is deleted), EI-5 (authority is relinquished durably before
//! the package leaves), EI-7 (a forbidden transition ends the handoff in
//! doubt), spec §6 (one handoff of an agent at a time).

use super::conduct::{AfterConfirm, Deed};
use super::tick::CommitKind;
use super::*;
use crate::env::NetError;
use crate::migration::{Action, Input, Outcome, ReplyView, SendFailure};
use crate::wire::{AgentPackage, AgentTransfer, Body, Envelope, ReplayData, ReplayTick};
use std::collections::VecDeque;

impl<X: Executor, D: Disk, C: Clock, R: Entropy> Node<X, D, C, R> {
    pub(super) fn start_handoff(&mut self, agent: AgentId, to: NodeId) -> Result<(), Refused> {
        if self.stopped {
            return Err(self.refuse("migrate", Some(&agent), NodeError::operator(Some(&agent), "node is shut down")));
        }
        if to == self.cfg.node_id {
            return Err(self.refuse("migrate", Some(&agent), NodeError::operator(Some(&agent), "target is this node")));
        }
        let Some(s) = self.agents.get(&agent) else {
            return Err(self.refuse("migrate", Some(&agent), NodeError::operator(Some(&agent), "unknown agent")));
        };
        // Spec §6: a second migration while one is in flight is refused.
        if self.handoffs.contains_key(&agent) {
            let why = NodeError::operator(Some(&agent), "a handoff of this agent is already in flight");
            return Err(self.refuse("migrate", Some(&agent), why));
        }
        if !s.authority.permits(Op::StartHandoff) {
            let st = s.authority.state();
            let why = NodeError::operator(Some(&agent), format!("{st} does not permit start_handoff"));
            return Err(self.refuse("migrate", Some(&agent), why));
        }
        if s.instance.is_none() {
            let why = NodeError::operator(Some(&agent), "agent has no running instance");
            return Err(self.refuse("migrate", Some(&agent), why));
        }
        match migration::migration_policy(&s.manifest) {
            Ok(p) if p.enabled => {}
            Ok(_) => {
                let why = NodeError::guest(&agent, "migration_policy.enabled is false");
                return Err(self.refuse("migrate", Some(&agent), why));
            }
            Err(e) => return Err(self.refuse("migrate", Some(&agent), NodeError::guest(&agent, e))),
        }
        let epoch = s.authority.epoch();
        let (m, actions) = SourceHandoff::start(agent.clone(), to.clone(), epoch, self.cfg.migration);
        self.handoffs.insert(agent.clone(), m);
        self.emit(Event::HandoffStarted { agent: agent.clone(), target: to, epoch });
        self.run_actions(&agent, actions, self.clock.now());
        Ok(())
    }

    /// Feed one input to the agent's handoff machine and perform the result.
    /// An input the machine ignores is stale and counted.
    pub(super) fn feed_handoff(&mut self, agent: &AgentId, input: Input, now: Now) -> bool {
        let rand = self.entropy.next_u64();
        let Some(m) = self.handoffs.get_mut(agent) else { return false };
        let actions = m.handle(now, rand, input);
        if actions.is_empty() {
            return false;
        }
        self.run_actions(agent, actions, now);
        true
    }

    /// Perform the machine's actions at `now`, feeding it what they yield.
    fn run_actions(&mut self, agent: &AgentId, actions: Vec<Action>, now: Now) {
        let mut queue: VecDeque<Action> = actions.into();
        // The conduct decides what a confirmed handoff leaves here (EI-4:
        // honestly, nothing).
        let mut after = None;
        while let Some(action) = queue.pop_front() {
            let action = match action {
                Action::Transition { to: AuthorityState::Retired, reason: Reason::Confirmed } => {
                    let epoch = self.agents.get(agent).map(|s| s.authority.epoch()).unwrap_or_default();
                    match self.conduct.on_confirmed(agent, epoch) {
                        AfterConfirm::StayOwner { epoch, act } => {
                            after = Some(false);
                            self.perform(Deed::Own { agent: agent.clone(), from: None, epoch, act });
                            continue;
                        }
                        AfterConfirm::RetireKeepingFiles => after = Some(true),
                        AfterConfirm::Retire => {}
                    }
                    Action::Transition { to: AuthorityState::Retired, reason: Reason::Confirmed }
                }
                Action::DeleteLocalCopy if after.is_some() => continue,
                a => a,
            };
            let feed = match action {
                Action::Transition { to, reason } => match self.set_state(agent, to, reason) {
                    Ok(()) => None,
                    Err(e) if self.agents.get(agent).is_some_and(|s| s.authority.state() == to) => {
                        // Forbidden-but-applied is impossible; applied but not
                        // durable: only the relinquish matters before sending.
                        (to == AuthorityState::HandoffPending).then_some(Input::PersistFailed { error: e.to_string() })
                    }
                    Err(e) => {
                        // EI-7: a violation ends the handoff in doubt.
                        if let Some(m) = self.end_handoff(agent) {
                            self.finish_event(agent, &m.target, Role::Source, Outcome::Ambiguous(e.to_string()));
                        }
                        return;
                    }
                },
                Action::StopTicking => {
                    if let Some(s) = self.agents.get_mut(agent) {
                        s.ticking = false;
                    }
                    None
                }
                Action::ResumeTicking => {
                    if let Some(s) = self.agents.get_mut(agent) {
                        s.ticking = s.halted.is_none() && s.instance.is_some();
                        s.next_tick_ns = now.mono_ns;
                    }
                    None
                }
                Action::SealCheckpoint => Some(match self.commit(agent, CommitKind::HandoffSeal, now) {
                    Ok((tick, hash)) => Input::Sealed { tick, hash },
                    Err(e) => Input::SealFailed { error: e.to_string() },
                }),
                Action::SendPackage { attempt, nonce, expiry_unix_ns } => {
                    match self.send_package(agent, attempt, nonce, expiry_unix_ns) {
                        Ok(()) => None,
                        // Built locally and never handed to the transport.
                        Err(e) => {
                            Some(Input::SendFailed { attempt, failure: SendFailure::TooLarge, error: e.to_string() })
                        }
                    }
                }
                Action::StartTimer { timer, at_mono_ns } => {
                    let seq = self.seq;
                    self.timers.insert((at_mono_ns, seq), (agent.clone(), timer));
                    if let migration::HandoffTimer::Retry { attempt } = timer {
                        self.emit(Event::RetryScheduled { agent: agent.clone(), attempt, at_ns: at_mono_ns });
                    }
                    None
                }
                Action::DeleteLocalCopy => {
                    self.delete_local_copy(agent);
                    None
                }
                Action::Finished(outcome) => {
                    if let Some(m) = self.end_handoff(agent) {
                        debug_assert!(
                            !outcome.is_ambiguous()
                                || self.agents.get(agent).map(|s| s.authority.state())
                                    == Some(AuthorityState::RecoveryRequired),
                            "an ambiguous handoff must leave the agent RECOVERY_REQUIRED"
                        );
                        if outcome.is_ambiguous()
                            && let Some(s) = self.agents.get_mut(agent)
                        {
                            // The target may have assumed at (major + 1):
                            // a recovery here cannot rule out a live owner
                            // until the target proves otherwise (spec §5).
                            let maybe = Epoch::new(s.authority.epoch().next_major_bound(), 0);
                            s.live_elsewhere = Some((m.target.clone(), maybe));
                        }
                        self.finish_event(agent, &m.target, Role::Source, outcome);
                    }
                    None
                }
            };
            if let Some(input) = feed {
                let rand = self.entropy.next_u64();
                let Some(m) = self.handoffs.get_mut(agent) else { return };
                queue = m.handle(now, rand, input).into();
            }
        }
    }

    fn delete_local_copy(&mut self, agent: &AgentId) {
        let mut paths = vec![store::wasm_path(agent), lineage::agent_key_path(agent)];
        if let Ok(names) = self.disk.list(&store::kv_dir(agent)) {
            paths.extend(names.into_iter().map(|n| format!("{}/{n}", store::kv_dir(agent))));
        }
        for p in paths {
            if let Err(e) = store::remove_if_present(&self.disk, &p) {
                self.fault(Some(agent), format!("delete local copy: {e}"));
            }
        }
        if let Some(s) = self.agents.get_mut(agent) {
            s.instance = None;
            s.key = None;
            s.ticking = false;
        }
        self.emit(Event::LocalCopyDeleted { agent: agent.clone() });
    }

    fn send_package(&mut self, agent: &AgentId, attempt: u32, nonce: u64, expiry: i64) -> Result<(), NodeError> {
        let violation = |what: &str| NodeError::violation(agent, what);
        let target =
            self.handoffs.get(agent).map(|m| m.target.clone()).ok_or_else(|| violation("no handoff in flight"))?;
        let s = self.agents.get(agent).ok_or_else(|| violation("unknown agent"))?;
        let head = s.lineage.head().ok_or_else(|| violation("no sealed checkpoint"))?.clone();
        let hash = s.lineage.head_hash();
        let wasm = self.disk.read(&store::wasm_path(agent)).map_err(|e| NodeError::disk(agent, e))?;
        let kv = self.disk.read(&store::kv_path(agent, head.tick)).map_err(|e| NodeError::disk(agent, e))?;
        let seed = store::read_key_seed(&self.disk, agent)
            .ok_or_else(|| NodeError::disk(agent, DiskFault::Missing("agent key unreadable")))?;
        // Every tick from the head's parent to the head, when this run saw
        // them all (defence `metering_check` on the target).
        let replay_data = s.head_ticks.as_ref().filter(|r| r.ticks.last().is_some_and(|t| t.inputs.tick == head.tick));
        let replay_data = replay_data.and_then(|r| {
            let prev = self.disk.read(&lineage::history_path(agent, r.base_tick)).ok()?;
            let prev_kv = self.disk.read(&store::kv_path(agent, r.base_tick)).ok()?;
            let (first, following) = r.ticks.split_first()?;
            let following = following
                .iter()
                .map(|t| ReplayTick {
                    tick: t.inputs.tick.0,
                    now_unix_ns: t.inputs.now_unix_ns,
                    rand_seed: t.inputs.rand_seed.to_vec(),
                    budget: t.inputs.budget.0,
                    event_log: t.event_log.clone(),
                })
                .collect();
            Some(ReplayData {
                prev_checkpoint: prev,
                prev_kv,
                tick: first.inputs.tick.0,
                now_unix_ns: first.inputs.now_unix_ns,
                rand_seed: first.inputs.rand_seed.to_vec(),
                budget: first.inputs.budget.0,
                event_log: first.event_log.clone(),
                following,
            })
        });
        let package = AgentPackage {
            agent_id: agent.clone(),
            wasm_hash: head.wasm_hash.0.to_vec(),
            wasm_binary: wasm,
            checkpoint: head.encode(),
            manifest_data: s.manifest.clone(),
            budget: head.budget.0,
            price_per_second: head.price_per_second.0,
            replay_data,
            agent_identity: Some(seed.to_vec()),
            receipts: None,
            kv: Some(kv),
        };
        let header = self.header(agent, &target, nonce, expiry);
        let body = Body::AgentTransfer(Box::new(AgentTransfer { package, source_node_id: self.cfg.node_id.clone() }));
        let env = Envelope::new(header, body);
        self.push_request(env, Pending::Transfer { agent: agent.clone(), attempt, target: target.clone() });
        self.emit(Event::PackageSent {
            agent: agent.clone(),
            target,
            attempt,
            tick: head.tick,
            hash,
            budget: head.budget,
            expiry_ns: expiry,
        });
        Ok(())
    }

    pub(super) fn transfer_reply_input(
        &mut self,
        agent: &AgentId,
        target: &NodeId,
        attempt: u32,
        result: Result<Vec<u8>, NetError>,
    ) -> Input {
        let failed = |failure, error: String| Input::SendFailed { attempt, failure, error };
        let bytes = match result {
            Err(e @ NetError::Unreachable { .. }) => return failed(SendFailure::Unreachable, e.to_string()),
            Err(e @ NetError::Lost { .. }) => return failed(SendFailure::Lost, e.to_string()),
            Err(e @ NetError::TooLarge { .. }) => return failed(SendFailure::TooLarge, e.to_string()),
            Ok(b) => b,
        };
        // A reply we cannot trust means we do not know what the target did.
        let env = match Envelope::decode(&bytes) {
            Ok(env) => env,
            Err(e) => return failed(SendFailure::Lost, format!("undecodable reply: {e}")),
        };
        if !self.addressed_to_me(&env, target) || env.header.agent != *agent {
            return failed(SendFailure::Lost, "reply from the wrong peer or about another agent".into());
        }
        self.received(&env);
        match env.body {
            Body::AgentStarted(s) if s.agent_id == *agent && s.node_id == *target => Input::Reply {
                attempt,
                reply: ReplyView { success: s.success, error: s.error, target_epoch: env.header.epoch },
            },
            _ => failed(SendFailure::Lost, "reply is not a matching AgentStarted".into()),
        }
    }
}
