//! Peer views: announcing this node's head to its peers, weighing what
//! they announce or acknowledge (stale, superseded, divergent), and the
//! defences every incoming request passes before it is believed.
//!
//! Invariants enforced here: EI-1/EI-5 (a proven newer owner elsewhere
//! supersedes this one: it stops ticking), EI-11 (a second head or owner at
//! the same epoch: RECOVERY_REQUIRED), defence `signed_claims` (a claim that
//! would stop an agent held here must be signed by its agent key).

use super::defence::{Defence, Guard, Rejection};
use super::*;
use crate::env::NetError;
use crate::identity::PublicKey;
use crate::wire::{Body, Envelope, HeadAnnounce, Header, MessageKind};

impl<X: Executor, D: Disk, C: Clock, R: Entropy> Node<X, D, C, R> {
    /// Tell every configured peer our epoch and head for `agent`.
    pub(super) fn announce(&mut self, agent: &AgentId) {
        let ttl = self.cfg.migration.package_ttl_ns;
        self.announce_with(agent, ttl, |agent, peer| Pending::Announce { agent, peer });
    }

    /// Send every peer this node's view of `agent` (a `HeadAnnounce`,
    /// valid for `ttl_ns`); `pending` names what each reply answers.
    pub(super) fn announce_with(&mut self, agent: &AgentId, ttl_ns: u64, pending: fn(AgentId, NodeId) -> Pending) {
        let Some(state) = self.agents.get(agent).map(|s| s.authority.state()) else { return };
        let agent_key = self.agents.get(agent).and_then(|s| s.agent_public_key()).map(|k| k.as_bytes().to_vec());
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

    /// A peer's `HeadAck` to an announcement or a recovery query: its claim
    /// is weighed by `observe_peer_view`; returns the highest epoch major
    /// it reported (`None`: no usable answer). `what` names it in faults.
    pub(super) fn head_ack(
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

    pub(super) fn stale(&mut self, agent: &AgentId, peer: &NodeId, kind: MessageKind, message_epoch: Epoch) {
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

    /// The defences every request passes before it is believed: the claim's
    /// signature and issuer, the per-peer rate, freshness.
    /// `Ok(true)`: a copy of a request seen before.
    pub(super) fn admit(&mut self, from: &NodeId, env: &Envelope, now: Now) -> Result<bool, Rejection> {
        let d = self.cfg.defences;
        Guard::check_claim(&d, &self.cfg.peer_keys, from, env)?;
        self.guard.check_rate(&d, from, env.kind(), now.mono_ns)?;
        // Expiry tolerates the protocol's clock-skew margin.
        let skew = i64::try_from(self.cfg.migration.max_clock_skew_ns).unwrap_or(i64::MAX);
        // The longest lifetime this node's own messages get (packages and
        // announcements: the package TTL; recovery queries: their window).
        let horizon = self.cfg.migration.package_ttl_ns.max(super::recovery::RECOVERY_QUERY_NS);
        let horizon = i64::try_from(horizon).unwrap_or(i64::MAX);
        self.guard.check_fresh(&d, env, now.unix_ns, skew, horizon)
    }

    /// Report a request a defence did not believe. A transfer gets a clean,
    /// sticky refusal (the source may resume: every copy is refused too);
    /// anything else gets no answer.
    pub(super) fn claim_rejected(&mut self, from: &NodeId, env: &Envelope, r: Rejection, now: Now) -> Vec<u8> {
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
        self.guard.remember_refusal(&h.issuer, h.nonce, h.expiry_unix_ns, now.unix_ns, &r.reason);
        let reason = NodeError::peer(from, &h.agent, PeerFault::Defence { defence: r.defence, reason: r.reason });
        self.refuse_transfer(from, &h.clone(), reason)
    }

    /// React to a peer's view of an agent we know: older epoch → stale;
    /// same epoch with another head at the same tick, or two owners →
    /// divergence (EI-11); newer epoch while we own → superseded.
    pub(super) fn observe_peer_view(
        &mut self,
        peer: &NodeId,
        h: &Header,
        peer_state: Option<AuthorityState>,
        agent_key: Option<PublicKey>,
        proof: Option<&[u8]>,
    ) {
        let d = self.cfg.defences;
        if let Some(st) = peer_state
            && let Some(why) = self.guard.record_view(&d, h, st, agent_key, proof, self.clock.mono_ns())
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
        let proven = s.proves_claim(h, peer_state, proof);
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
}
