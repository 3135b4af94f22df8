//! The node's side of the wire: running the source handoff machine's
//! actions, building packages, judging and assuming incoming packages,
//! announcing heads and reacting to peers' views (stale, superseded,
//! divergent). The protocol decisions live in [`crate::migration`]; this
//! file performs them against the disk, the executor and the outbox.

use super::conduct::{AfterConfirm, Deed};
use super::defence::{Defence, Guard, Rejection};
use super::{Node, Outgoing, Pending, Refused, Slot, store};
use crate::authority::{Authority, AuthorityState, Op, Reason, Role};
use crate::checkpoint::{Checkpoint, Hash32};
use crate::env::{Clock, Disk, Entropy, NetError};
use crate::executor::{Executor, TickInputs};
use crate::identity::Keypair;
use crate::identity::PublicKey;
use crate::lease::Lease;
use crate::lineage::{self, Lineage};
use crate::migration::{
    self, Action, Input, Judgement, LocalView, Outcome, PackageFacts, ReplyView, SendFailure, SourceHandoff,
};
use crate::node::event::Event;
use crate::units::{AgentId, Epoch, Microcents, NodeId, TickNumber};
use crate::wire::{
    AgentPackage, AgentStarted, AgentTransfer, Body, Envelope, HeadAck, HeadAnnounce, Header, MessageKind, ReplayData,
    ReplayTick,
};
use std::collections::VecDeque;

impl<X: Executor, D: Disk, C: Clock, R: Entropy> Node<X, D, C, R> {
    pub(super) fn start_handoff(&mut self, agent: AgentId, to: NodeId) -> Result<(), Refused> {
        if self.stopped {
            return Err(self.refuse("migrate", Some(&agent), "node is shut down".into()));
        }
        if to == self.cfg.node_id {
            return Err(self.refuse("migrate", Some(&agent), "target is this node".into()));
        }
        let Some(s) = self.agents.get(&agent) else {
            return Err(self.refuse("migrate", Some(&agent), "unknown agent".into()));
        };
        // Spec §6: a second migration while one is in flight is refused.
        if self.handoffs.contains_key(&agent) {
            return Err(self.refuse("migrate", Some(&agent), "a handoff of this agent is already in flight".into()));
        }
        if !s.authority.permits(Op::StartHandoff) {
            let st = s.authority.state();
            return Err(self.refuse("migrate", Some(&agent), format!("{st} does not permit start_handoff")));
        }
        if s.instance.is_none() {
            return Err(self.refuse("migrate", Some(&agent), "agent has no running instance".into()));
        }
        match migration::migration_policy(&s.manifest) {
            Ok(p) if p.enabled => {}
            Ok(_) => return Err(self.refuse("migrate", Some(&agent), "migration_policy.enabled is false".into())),
            Err(e) => return Err(self.refuse("migrate", Some(&agent), e)),
        }
        let epoch = s.authority.epoch();
        let (m, actions) = SourceHandoff::start(agent.clone(), to.clone(), epoch, self.cfg.migration);
        self.handoffs.insert(agent.clone(), m);
        self.emit(Event::HandoffStarted { agent: agent.clone(), target: to, epoch });
        self.run_actions(&agent, actions);
        Ok(())
    }

    /// Feed one input to the agent's handoff machine and perform the result.
    /// An input the machine ignores is stale and counted.
    pub(super) fn feed_handoff(&mut self, agent: &AgentId, input: Input) -> bool {
        let now = self.clock.now();
        let rand = self.entropy.next_u64();
        let Some(m) = self.handoffs.get_mut(agent) else { return false };
        let actions = m.handle(now, rand, input);
        if actions.is_empty() {
            return false;
        }
        self.run_actions(agent, actions);
        true
    }

    fn run_actions(&mut self, agent: &AgentId, actions: Vec<Action>) {
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
                        (to == AuthorityState::HandoffPending).then_some(Input::PersistFailed { error: e })
                    }
                    Err(e) => {
                        // EI-7: a violation ends the handoff in doubt.
                        if let Some(m) = self.end_handoff(agent) {
                            self.finish_event(agent, &m.target, Role::Source, Outcome::Ambiguous(e));
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
                    let now = self.clock.mono_ns();
                    if let Some(s) = self.agents.get_mut(agent) {
                        s.ticking = s.halted.is_none() && s.instance.is_some();
                        s.next_tick_ns = now;
                    }
                    None
                }
                Action::SealCheckpoint => Some(match self.commit(agent, Op::SealHandoff, true, false) {
                    Ok((tick, hash)) => Input::Sealed { tick, hash },
                    Err(error) => Input::SealFailed { error },
                }),
                Action::SendPackage { attempt, nonce, expiry_unix_ns } => {
                    match self.send_package(agent, attempt, nonce, expiry_unix_ns) {
                        Ok(()) => None,
                        // Built locally and never handed to the transport.
                        Err(error) => Some(Input::SendFailed { attempt, failure: SendFailure::TooLarge, error }),
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
                            let maybe = Epoch::new(s.authority.epoch().major.saturating_add(1), 0);
                            s.live_elsewhere = Some((m.target.clone(), maybe));
                        }
                        self.finish_event(agent, &m.target, Role::Source, outcome);
                    }
                    None
                }
            };
            if let Some(input) = feed {
                let now = self.clock.now();
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

    /// This node's claim about `agent` signed with the agent's own key, if
    /// it holds the key (see [`HeadAnnounce::agent_signature`]).
    pub(super) fn agent_claim_signature(
        &self,
        agent: &AgentId,
        h: &Header,
        state: Option<AuthorityState>,
    ) -> Option<Vec<u8>> {
        let key = self.agents.get(agent)?.key.as_ref()?;
        Some(key.sign(&crate::wire::agent_claim_bytes(h, state)).0.to_vec())
    }

    /// Our view of `agent`, as a header addressed to `audience`.
    pub(super) fn header(&self, agent: &AgentId, audience: &NodeId, nonce: u64, expiry_unix_ns: i64) -> Header {
        let (epoch, head_tick, head_hash) = self
            .agents
            .get(agent)
            .map(|s| (s.authority.epoch(), s.lineage.head().map(|c| c.tick).unwrap_or_default(), s.lineage.head_hash()))
            .unwrap_or((Epoch::default(), TickNumber(0), Hash32::ZERO));
        Header {
            issuer: self.cfg.node_id.clone(),
            audience: audience.clone(),
            agent: agent.clone(),
            epoch,
            head_tick,
            head_hash,
            nonce,
            issued_unix_ns: self.clock.unix_ns(),
            expiry_unix_ns,
        }
    }

    /// Sign as this node (defence `signed_claims`), if it has a key.
    fn seal(&self, mut env: Envelope) -> Envelope {
        if let Some(k) = &self.node_key {
            env.sign(k);
        }
        env
    }

    pub(super) fn push_request(&mut self, env: Envelope, pending: Pending) -> u64 {
        let env = self.seal(env);
        let id = self.next_request;
        self.next_request += 1;
        self.emit_sent(&env, Some(id));
        self.outbox.push(Outgoing { id, to: env.header.audience.clone(), body: env.encode() });
        self.pending.insert(id, pending);
        id
    }

    fn reply_bytes(&mut self, env: Envelope) -> Vec<u8> {
        let env = self.seal(env);
        self.emit_sent(&env, None);
        env.encode()
    }

    /// The `MessageSent` event for an envelope leaving this node: `request`
    /// is the id of a request, `None` for a reply.
    fn emit_sent(&mut self, env: &Envelope, request: Option<u64>) {
        let h = &env.header;
        self.emit(Event::MessageSent {
            kind: env.kind(),
            peer: h.audience.clone(),
            agent: h.agent.clone(),
            epoch: h.epoch,
            head_tick: h.head_tick,
            head_hash: h.head_hash,
            request,
        });
    }

    fn send_package(&mut self, agent: &AgentId, attempt: u32, nonce: u64, expiry: i64) -> Result<(), String> {
        let target = self.handoffs.get(agent).map(|m| m.target.clone()).ok_or("no handoff in flight")?;
        let s = self.agents.get(agent).ok_or("unknown agent")?;
        let head = s.lineage.head().ok_or("no sealed checkpoint")?.clone();
        let hash = s.lineage.head_hash();
        let wasm = self.disk.read(&store::wasm_path(agent)).map_err(|e| e.to_string())?;
        let kv = self.disk.read(&store::kv_path(agent, head.tick)).map_err(|e| e.to_string())?;
        let seed = store::read_key_seed(&self.disk, agent).ok_or("agent key unreadable")?;
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

    /// Tell every configured peer our epoch and head for `agent`.
    pub(super) fn announce(&mut self, agent: &AgentId) {
        let ttl = self.cfg.migration.package_ttl_ns;
        self.announce_with(agent, ttl, |agent, peer| Pending::Announce { agent, peer });
    }

    /// Send every peer this node's view of `agent` (a `HeadAnnounce`,
    /// valid for `ttl_ns`); `pending` names what each reply answers.
    pub(super) fn announce_with(&mut self, agent: &AgentId, ttl_ns: u64, pending: fn(AgentId, NodeId) -> Pending) {
        let Some(state) = self.agents.get(agent).map(|s| s.authority.state()) else { return };
        let agent_key = self.agents.get(agent).and_then(|s| {
            s.key.as_ref().map(|k| k.public()).or_else(|| s.lineage.head().and_then(|c| c.agent_key().copied()))
        });
        let agent_key = agent_key.map(|k| k.as_bytes().to_vec());
        let ttl = i64::try_from(ttl_ns).unwrap_or(i64::MAX);
        let expiry = self.clock.unix_ns().saturating_add(ttl);
        for peer in self.cfg.peers.clone() {
            if peer == self.cfg.node_id {
                continue;
            }
            let nonce = self.entropy.next_u64();
            let header = self.header(agent, &peer, nonce, expiry);
            let agent_signature = self.agent_claim_signature(agent, &header, Some(state));
            let env = Envelope::new(
                header,
                Body::HeadAnnounce(HeadAnnounce { state, agent_key: agent_key.clone(), agent_signature }),
            );
            self.push_request(env, pending(agent.clone(), peer));
        }
    }

    /// The one result of an earlier [`Outgoing`] request: the reply bytes,
    /// or the transport's error (`Unreachable`: never delivered; `Lost`:
    /// maybe delivered). Results for unknown or finished requests are stale.
    pub fn handle_reply(&mut self, id: super::RequestId, result: Result<Vec<u8>, NetError>) {
        if self.stopped {
            return;
        }
        let Some(pending) = self.pending.remove(&id) else { return };
        match pending {
            Pending::Transfer { agent, attempt, target } => {
                let input = self.transfer_reply_input(&agent, &target, attempt, result);
                let epoch = self.agents.get(&agent).map(|s| s.authority.epoch()).unwrap_or_default();
                if !self.feed_handoff(&agent, input) {
                    self.stale(&agent, &target, MessageKind::AgentStarted, epoch);
                }
            }
            Pending::Orphan { agent, target } => {
                let epoch = self.agents.get(&agent).map(|s| s.authority.epoch()).unwrap_or_default();
                self.stale(&agent, &target, MessageKind::AgentStarted, epoch);
            }
            Pending::Query { agent, peer } => {
                let answer = self.head_ack(&agent, &peer, result, "recovery answer");
                self.recovery_answer(&agent, &peer, answer);
            }
            Pending::Announce { agent, peer } => {
                self.head_ack(&agent, &peer, result, "head ack");
            }
        }
    }

    /// A peer's `HeadAck` to an announcement or a recovery query: its claim
    /// is weighed by `observe_peer_view`; returns the highest epoch major
    /// it reported (`None`: no usable answer). `what` names it in faults.
    fn head_ack(
        &mut self,
        agent: &AgentId,
        peer: &NodeId,
        result: Result<Vec<u8>, NetError>,
        what: &str,
    ) -> Option<u64> {
        let env = match Envelope::decode(&result.ok()?) {
            Ok(env) if self.addressed_to_me(&env, peer) && env.header.agent == *agent => env,
            Ok(_) => {
                self.fault(Some(agent), format!("misaddressed {what} from {peer}"));
                return None;
            }
            Err(e) => {
                self.fault(Some(agent), format!("bad {what} from {peer}: {e}"));
                return None;
            }
        };
        self.received(&env);
        let Body::HeadAck(ack) = env.body else { return None };
        let proof = ack.agent_signature.as_deref();
        self.observe_peer_view(peer, &env.header, ack.state, None, proof);
        Some(ack.highest_major.unwrap_or(0).max(env.header.epoch.major))
    }

    fn transfer_reply_input(
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

    fn addressed_to_me(&self, env: &Envelope, from: &NodeId) -> bool {
        env.header.audience == self.cfg.node_id && env.header.issuer == *from
    }

    fn received(&mut self, env: &Envelope) {
        let h = &env.header;
        self.emit(Event::MessageReceived {
            kind: env.kind(),
            peer: h.issuer.clone(),
            agent: h.agent.clone(),
            epoch: h.epoch,
            head_tick: h.head_tick,
            head_hash: h.head_hash,
        });
    }

    fn stale(&mut self, agent: &AgentId, peer: &NodeId, kind: MessageKind, message_epoch: Epoch) {
        self.stale_messages += 1;
        let local_epoch = self.agents.get(agent).map(|s| s.authority.epoch()).unwrap_or_default();
        self.emit(Event::StaleMessageIgnored {
            agent: agent.clone(),
            peer: peer.clone(),
            kind,
            message_epoch,
            local_epoch,
            total: self.stale_messages,
        });
    }

    /// Answer one incoming request. Malformed, misaddressed or unexpected
    /// requests get an empty reply (the requester treats it as no answer).
    pub fn handle_request(&mut self, from: &NodeId, body: &[u8]) -> Vec<u8> {
        if self.stopped {
            return Vec::new();
        }
        let env = match Envelope::decode(body) {
            Ok(env) => env,
            Err(e) => {
                self.fault(None, format!("malformed request from {from}: {e}"));
                return Vec::new();
            }
        };
        if env.header.audience != self.cfg.node_id {
            self.fault(Some(&env.header.agent), format!("request from {from} is addressed to {}", env.header.audience));
            return Vec::new();
        }
        let copy = match self.admit(from, &env) {
            Ok(copy) => copy,
            Err(r) => return self.claim_rejected(from, &env, r),
        };
        self.received(&env);
        let header = env.header;
        match env.body {
            Body::AgentTransfer(t) => self.accept_transfer(from, &header, *t),
            Body::HeadAnnounce(a) => {
                let key = a.agent_key.as_deref().and_then(|k| <[u8; 32]>::try_from(k).ok());
                let key = key.and_then(|k| PublicKey::from_bytes(k).ok());
                // Defence `self_certifying_ids`: an announcement offering a
                // key its agent's id does not name is someone else's agent
                // key; it is refused before it touches any view or state.
                if let Some(k) = &key
                    && let Err(r) = Guard::check_agent_key(&self.cfg.defences, &header.agent, k, "announced AgentKey")
                {
                    let env = Envelope::new(header, Body::HeadAnnounce(a));
                    return self.claim_rejected(from, &env, r);
                }
                if a.state == AuthorityState::RecoveryRequired {
                    self.recovery_contested(&header.agent, from);
                }
                if !copy {
                    self.observe_peer_view(from, &header, Some(a.state), key, a.agent_signature.as_deref());
                }
                let state = self.agents.get(&header.agent).map(|s| s.authority.state());
                let reply = self.header(&header.agent, from, header.nonce, header.expiry_unix_ns);
                let agent_signature = self.agent_claim_signature(&header.agent, &reply, state);
                let highest_major =
                    self.agents.get(&header.agent).map(|s| s.highest_major_seen.max(s.authority.epoch().major));
                let ack = HeadAck { state, agent_signature, highest_major };
                self.reply_bytes(Envelope::new(reply, Body::HeadAck(ack)))
            }
            Body::AgentStarted(_) | Body::HeadAck(_) => {
                self.fault(Some(&header.agent), format!("{} from {from} is a reply, not a request", env_kind(&header)));
                Vec::new()
            }
        }
    }

    /// The defences every request passes before it is believed: the claim's
    /// signature and issuer, the per-peer rate, freshness.
    /// `Ok(true)`: a copy of a request seen before.
    fn admit(&mut self, from: &NodeId, env: &Envelope) -> Result<bool, Rejection> {
        let d = self.cfg.defences;
        Guard::check_claim(&d, &self.cfg.peer_keys, from, env)?;
        self.guard.check_rate(&d, from, env.kind(), self.clock.mono_ns())?;
        // Expiry tolerates the protocol's clock-skew margin.
        let skew = i64::try_from(self.cfg.migration.max_clock_skew_ns).unwrap_or(i64::MAX);
        self.guard.check_fresh(&d, env, self.clock.unix_ns(), skew)
    }

    /// Report a request a defence did not believe. A transfer gets a clean,
    /// sticky refusal (the source may resume: every copy is refused too);
    /// anything else gets no answer.
    fn claim_rejected(&mut self, from: &NodeId, env: &Envelope, r: Rejection) -> Vec<u8> {
        self.guard.rejected += 1;
        let h = &env.header;
        self.emit(Event::ClaimRejected {
            agent: h.agent.clone(),
            peer: from.clone(),
            kind: env.kind(),
            defence: r.defence,
            reason: r.reason.clone(),
        });
        if env.kind() != MessageKind::AgentTransfer || r.defence == Defence::SignedClaims {
            return Vec::new();
        }
        let now = self.clock.unix_ns();
        self.guard.remember_refusal(&h.issuer, h.nonce, h.expiry_unix_ns, now, &r.reason);
        let reason = format!("{}: {}", r.defence, r.reason);
        self.refuse_transfer(from, &h.clone(), reason)
    }

    /// React to a peer's view of an agent we know: older epoch → stale;
    /// same epoch with another head at the same tick, or two owners →
    /// divergence (EI-11); newer epoch while we own → superseded.
    fn observe_peer_view(
        &mut self,
        peer: &NodeId,
        h: &Header,
        peer_state: Option<AuthorityState>,
        agent_key: Option<PublicKey>,
        proof: Option<&[u8]>,
    ) {
        let d = self.cfg.defences;
        if let Some(st) = peer_state
            && let Some(why) = self.guard.record_view(&d, h, st, agent_key, proof)
            && !self.agents.contains_key(&h.agent)
        {
            // Divergence seen by a node that does not host the agent: no
            // transfer of it is accepted here any more.
            self.emit(Event::ClaimRejected {
                agent: h.agent.clone(),
                peer: peer.clone(),
                kind: MessageKind::HeadAnnounce,
                defence: Defence::DivergenceDetection,
                reason: why,
            });
        }
        // The conduct may ignore every sign that the agent moved on
        // (honestly, a newer or divergent claim is acted on below).
        if !self.conduct.heeds_peer_claims() {
            return;
        }
        let Some(s) = self.agents.get_mut(&h.agent) else { return };
        let Some(peer_state) = peer_state else { return };
        let (local, state) = (s.authority.epoch(), s.authority.state());
        let local_tick = s.lineage.head().map(|c| c.tick).unwrap_or_default();
        let local_head = s.lineage.head_hash();
        let holding = matches!(
            state,
            AuthorityState::ActiveOwner | AuthorityState::HandoffInitiated | AuthorityState::HandoffPending
        );
        // Defence `signed_claims`, agent half: a claim that would stop an
        // agent held here (a newer epoch, or a second head or owner at ours)
        // must be signed by the agent key this node knows from its own
        // history. Node identity alone is not enough: any peer has one.
        let known_key =
            s.key.as_ref().map(|k| k.public()).or_else(|| s.lineage.head().and_then(|c| c.agent_key().copied()));
        let proven = known_key.is_some_and(|k| {
            proof.and_then(|p| <[u8; 64]>::try_from(p).ok()).is_some_and(|sig| {
                k.verify(&crate::wire::agent_claim_bytes(h, Some(peer_state)), &crate::identity::Signature(sig))
            })
        });
        // Only proven claims raise the majors a recovery must stay above: an
        // anonymous peer cannot push them to the end of the range.
        if proven {
            s.highest_major_seen = s.highest_major_seen.max(h.epoch.major);
            if peer_state == AuthorityState::ActiveOwner && h.epoch > local {
                s.live_elsewhere = Some((peer.clone(), h.epoch));
            } else if s.live_elsewhere.as_ref().is_some_and(|(p, _)| p == peer) {
                // The same peer proves it no longer owns the agent.
                s.live_elsewhere = None;
            }
        }
        let fork = h.head_tick == local_tick && h.head_hash != local_head && h.head_hash != Hash32::ZERO;
        let two_owners = peer_state == AuthorityState::ActiveOwner && state == AuthorityState::ActiveOwner;
        let superseding =
            h.epoch > local && matches!(state, AuthorityState::ActiveOwner | AuthorityState::HandoffInitiated);
        let diverging = h.epoch == local && (fork || two_owners) && d.divergence_detection;
        if holding && (superseding || diverging) && !proven && d.signed_claims {
            self.guard.rejected += 1;
            self.emit(Event::ClaimRejected {
                agent: h.agent.clone(),
                peer: peer.clone(),
                kind: MessageKind::HeadAnnounce,
                defence: Defence::SignedClaims,
                reason: format!("claim of {} at {} is not signed by the agent key", peer_state, h.epoch),
            });
            return;
        }
        if h.epoch < local {
            self.stale(&h.agent, peer, MessageKind::HeadAnnounce, h.epoch);
        } else if h.epoch == local {
            if diverging {
                self.emit(Event::DivergenceDetected {
                    agent: h.agent.clone(),
                    peer: peer.clone(),
                    epoch: h.epoch,
                    local_tick,
                    local_head,
                    remote_tick: h.head_tick,
                    remote_head: h.head_hash,
                });
                if holding {
                    self.fall_to_recovery(&h.agent, Reason::Divergence);
                }
            }
        } else if superseding {
            // Someone holds the agent under a newer epoch: we must not tick.
            self.fall_to_recovery(&h.agent, Reason::Superseded);
        }
    }

    fn started_reply(
        &mut self,
        agent: &AgentId,
        to: &NodeId,
        h: &Header,
        success: bool,
        error: Option<String>,
    ) -> Vec<u8> {
        // Our own epoch for the agent: a refusal is clean (the source may
        // resume) only if it is below the source's epoch.
        let header = self.header(agent, to, h.nonce, h.expiry_unix_ns);
        let body = AgentStarted { agent_id: agent.clone(), node_id: self.cfg.node_id.clone(), success, error };
        self.reply_bytes(Envelope::new(header, Body::AgentStarted(body)))
    }

    fn refuse_transfer(&mut self, from: &NodeId, h: &Header, reason: String) -> Vec<u8> {
        self.refusal(from, h, reason, false)
    }

    fn refuse_transfer_in_doubt(&mut self, from: &NodeId, h: &Header, reason: String) -> Vec<u8> {
        self.refusal(from, h, reason, true)
    }

    /// A refusal is *clean* (the source may resume once the package has
    /// expired) only if it is sticky: every copy of this package would be
    /// refused too. Otherwise the reply claims at least the package's epoch,
    /// which the source reads as a conflict (ambiguous).
    fn refusal(&mut self, from: &NodeId, h: &Header, reason: String, in_doubt: bool) -> Vec<u8> {
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

    fn accept_transfer(&mut self, from: &NodeId, h: &Header, t: AgentTransfer) -> Vec<u8> {
        let agent = h.agent.clone();
        let pkg = t.package;
        let ckpt = match Checkpoint::decode(&pkg.checkpoint) {
            Ok(c) => c,
            Err(e) => return self.refuse_transfer(from, h, format!("checkpoint: {e}")),
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
        let clock = migration::JudgeClock { now_unix_ns: self.clock.unix_ns(), started_unix_ns: self.started_unix_ns };
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
                return self.refuse_transfer(from, h, format!("refused before: {reason}"));
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
                let now = self.clock.unix_ns();
                self.guard.remember_refusal(&h.issuer, h.nonce, h.expiry_unix_ns, now, &r.reason);
                return self.refuse_transfer(from, h, format!("{}: {}", r.defence, r.reason));
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
                        reason: reason.clone(),
                    });
                }
                self.refuse_transfer(from, h, reason)
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
                self.refuse_transfer_in_doubt(from, h, detail)
            }
            Judgement::Accept => {
                // Checked by judge_package: the identity is present.
                let Some(key) = key else { return self.refuse_transfer(from, h, "AgentIdentity missing".into()) };
                match self.check_with_executor(&agent, &pkg, &ckpt, &key) {
                    Err(reason) => {
                        if let Some(detail) = reason.strip_prefix("metering_check: ") {
                            self.emit(Event::ClaimRejected {
                                agent: agent.clone(),
                                peer: from.clone(),
                                kind: MessageKind::AgentTransfer,
                                defence: Defence::MeteringCheck,
                                reason: detail.to_string(),
                            });
                        }
                        self.refuse_transfer(from, h, reason)
                    }
                    Ok((hash, kv)) => self.assume(from, h, pkg, ckpt, key, hash, kv),
                }
            }
        }
    }

    /// Capabilities (prepare), price policy, kv seal and optional replay of
    /// the last tick. Any failure is a clean refusal.
    fn check_with_executor(
        &mut self,
        agent: &AgentId,
        pkg: &AgentPackage,
        ckpt: &Checkpoint,
        key: &Keypair,
    ) -> Result<(Hash32, Vec<u8>), String> {
        migration::check_price_policy(&pkg.manifest_data, self.cfg.price_per_second)?;
        let hash = self.exec.prepare(&pkg.wasm_binary, &pkg.manifest_data).map_err(|e| e.to_string())?;
        ckpt.check_wasm(&hash).map_err(|e| e.to_string())?;
        let public = key.public();
        let kv = match &pkg.kv {
            Some(sealed) => store::open_kv(&public, agent, ckpt, sealed)?,
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
    ) -> Result<(), String> {
        let prev = Checkpoint::parse(&r.prev_checkpoint, Some(hash)).map_err(|e| format!("replay base: {e}"))?;
        if Hash32::of(&r.prev_checkpoint) != ckpt.prev_hash() {
            return Err("signature chain broken: replay base is not the checkpoint's parent".into());
        }
        if prev.agent_key() != ckpt.agent_key() || prev.agent_key().is_none() {
            return Err("identity discontinuity between replay base and checkpoint".into());
        }
        // Bounded before any work: an honest source commits at least every
        // MAX_TICKS_PER_CHECKPOINT ticks.
        if r.following.len() as u64 >= super::MAX_TICKS_PER_CHECKPOINT {
            return Err(format!("replay data holds {} ticks, more than a checkpoint may span", r.following.len() + 1));
        }
        let ticks = r.ticks();
        let consecutive = ticks.iter().enumerate().all(|(i, t)| prev.tick.0.checked_add(i as u64 + 1) == Some(t.tick));
        if !consecutive || ticks.last().map(|t| t.tick) != Some(ckpt.tick.0) || r.budget != prev.budget.0 {
            return Err(format!(
                "replay data names ticks {}..={} from budget {}, inconsistent with the chain (parent tick {}, \
                 checkpoint tick {})",
                r.tick,
                ticks.last().map_or(r.tick, |t| t.tick),
                r.budget,
                prev.tick,
                ckpt.tick
            ));
        }
        let key = prev.agent_key().copied().ok_or("replay base unsigned")?;
        let mut kv_now = store::open_kv(&key, agent, &prev, &r.prev_kv)?;
        let mut state = prev.state.clone();
        // Defence `metering_check`: every tick is re-run from the parent.
        // Each may charge its re-run cost and no more than what the agent
        // may pay in one tick on top (payments are settled, not re-run): a
        // node lying about metering, or editing the budget, is caught here.
        let allowance = migration::payment_allowance(&pkg.manifest_data);
        let mut available = prev.budget.0;
        for t in &ticks {
            if t.budget > available || t.budget < available.saturating_sub(allowance) {
                return Err(format!(
                    "metering_check: tick {} started with budget {}, the ticks before it left {available} \
                     (payment allowance {allowance})",
                    t.tick, t.budget
                ));
            }
            let inputs = TickInputs {
                tick: TickNumber(t.tick),
                now_unix_ns: t.now_unix_ns,
                rand_seed: t.rand_seed.as_slice().try_into().map_err(|_| "RandSeed not 32 bytes")?,
                budget: Microcents(t.budget),
                // The ticks ran on the source, at the price its handoff
                // checkpoint names (the parent may come from another node).
                price_per_second: ckpt.price_per_second,
                side_effects_allowed: true,
                receipts: Vec::new(),
            };
            let (next, next_kv, cost) = self
                .exec
                .replay(hash, &pkg.manifest_data, &state, &kv_now, &inputs, &t.event_log)
                .map_err(|e| format!("metering_check: replay of tick {}: {e}", t.tick))?;
            if cost.0 < 0 || cost.0 > t.budget {
                return Err(format!("metering_check: tick {} replays at cost {}, budget {}", t.tick, cost.0, t.budget));
            }
            (state, kv_now) = (next, next_kv);
            available = t.budget - cost.0;
        }
        let spent = prev.budget.0 - ckpt.budget.0;
        if state != ckpt.state || kv_now != kv {
            return Err(format!(
                "metering_check: replay of ticks {}..={} diverged from the package's checkpoint",
                r.tick, ckpt.tick
            ));
        }
        if ckpt.budget.0 > available || ckpt.budget.0 < available.saturating_sub(allowance) {
            return Err(format!(
                "metering_check: ticks {}..={} charged {spent}, their replay leaves budget {available}, the \
                 checkpoint says {} (payment allowance {allowance})",
                r.tick, ckpt.tick, ckpt.budget
            ));
        }
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
    ) -> Vec<u8> {
        let agent = h.agent.clone();
        let now = self.clock.now();
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
        slot.highest_major_seen = h.epoch.major.saturating_add(1);
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
            let s = self.agents.get_mut(&agent).ok_or("slot vanished")?;
            debug_assert!(s.authority.permits(Op::AcceptHandoff), "only a pending target accepts");
            let before = s.authority.clone();
            let t = s.authority.assume().map_err(|v| v.to_string())?;
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
                return self.refuse_transfer_in_doubt(from, h, format!("target could not store the agent: {e}"));
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
    ) -> Result<(), String> {
        self.persist(agent)?;
        key.save(&self.disk, &lineage::agent_key_path(agent)).map_err(|e| e.to_string())?;
        self.disk.write_atomic(&store::wasm_path(agent), &pkg.wasm_binary).map_err(|e| e.to_string())?;
        self.disk.write_atomic(&store::manifest_path(agent), &pkg.manifest_data).map_err(|e| e.to_string())?;
        let sealed = store::seal_kv(key, agent, ckpt.tick, &ckpt.state, kv);
        self.disk.write_atomic(&store::kv_path(agent, ckpt.tick), &sealed).map_err(|e| e.to_string())?;
        // The link's observation log travels with the package: keep it
        // beside the checkpoint, as the source did (`igord audit`).
        if let Some(log) = pkg.replay_data.as_ref().and_then(|r| store::received_tick_log(agent, ckpt, r)) {
            let path = crate::audit::ticklog::ticks_path(agent, ckpt.tick);
            self.disk.write_atomic(&path, &log.seal(key)).map_err(|e| e.to_string())?;
        }
        let s = self.agents.get_mut(agent).ok_or("slot vanished")?;
        let c = s.lineage.adopt(&self.disk, ckpt.clone()).map_err(|e| e.to_string())?;
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
}

fn env_kind(h: &Header) -> String {
    format!("message about {}", h.agent)
}
