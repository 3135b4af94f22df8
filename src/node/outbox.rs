//! The node's wire side: the entry points for incoming bytes (requests
//! from peers, replies to this node's requests) routed to the source,
//! target and peer roles, and the outbox: headers, signing, queueing
//! requests and encoding replies, each reported as an event.
//!
//! Invariants enforced here: every request gets exactly one result (a
//! pending entry per request id; results for unknown ids are stale), and a
//! reply is believed only from the peer it was sent to, about the agent it
//! concerns.

use super::defence::Guard;
use super::*;
use crate::env::NetError;
use crate::identity::PublicKey;
use crate::wire::{AgentStarted, Body, Envelope, HeadAck, Header, MessageKind};

impl<X: Executor, D: Disk, C: Clock, R: Entropy> Node<X, D, C, R> {
    /// Answer one incoming request. Malformed, misaddressed or unexpected
    /// requests get an empty reply (the requester treats it as no answer).
    pub fn handle_request(&mut self, from: &NodeId, body: &[u8]) -> Vec<u8> {
        if self.stopped {
            return Vec::new();
        }
        // The request is judged at one instant (freshness, rate, package
        // expiry, the lease a target grants).
        let now = self.clock.now();
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
        // Reply kinds sent as requests are dropped before any defence
        // remembers anything about them (nonce, mark, bucket): found by an
        // outside tester, a flood of unsigned `HeadAck` requests, each about
        // a new agent, grew the node's memory without bound.
        if matches!(env.body, Body::AgentStarted(_) | Body::HeadAck(_)) {
            self.fault(
                Some(&env.header.agent),
                format!("{} from {from} is a reply, not a request", env_kind(&env.header)),
            );
            return Vec::new();
        }
        let copy = match self.admit(from, &env, now) {
            Ok(copy) => copy,
            Err(r) => return self.claim_rejected(from, &env, r, now),
        };
        self.received(&env);
        let header = env.header;
        match env.body {
            Body::AgentTransfer(t) => self.accept_transfer(from, &header, *t, now),
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
                    return self.claim_rejected(from, &env, r, now);
                }
                // Only a claim signed with the agent's key contests a
                // recovery: a node that may be recovering the agent too holds
                // its key (it could not start it otherwise). Found by an
                // outside tester's reading: any admitted peer's unsigned
                // RECOVERY_REQUIRED claim made the operator's recovery refuse.
                let signed = |s: &Slot<X::Instance>| s.proves_claim(&header, a.state, a.agent_signature.as_deref());
                if a.state == AuthorityState::RecoveryRequired && self.agents.get(&header.agent).is_some_and(signed) {
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
            // Refused above, before admission.
            Body::AgentStarted(_) | Body::HeadAck(_) => Vec::new(),
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
                if !self.feed_handoff(&agent, input, self.clock.now()) {
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

    pub(super) fn addressed_to_me(&self, env: &Envelope, from: &NodeId) -> bool {
        env.header.audience == self.cfg.node_id && env.header.issuer == *from
    }

    pub(super) fn received(&mut self, env: &Envelope) {
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

    pub(super) fn reply_bytes(&mut self, env: Envelope) -> Vec<u8> {
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

    pub(super) fn started_reply(
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
}

fn env_kind(h: &Header) -> String {
    format!("message about {}", h.agent)
}
