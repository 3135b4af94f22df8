//! Defences against Byzantine nodes, griefers and forgers (spec §8, A2–A4).
//! The attacks that test them live in `igor-sim` (see [`super::conduct`]).
//! Each defence is one mechanism with its own switch in [`Defences`] (all on
//! by default); switching one off exists only so a scenario can show the
//! damage it prevents. The [`Guard`] holds what the defences remember:
//! per-(issuer, agent) epoch high-water marks, recent nonces, the peers'
//! announced views of every agent (hosted here or not), sticky refusals and
//! per-peer token buckets. Pure data and decisions: time comes in as
//! arguments, effects go out as results (`docs/threat-model.md`).
//!
//! Length: ~465 lines of code and ~145 of unit tests; over 600 only with
//! the tests, which stay beside the one data structure they exercise.

use crate::authority::AuthorityState;
use crate::checkpoint::Hash32;
use crate::identity::PublicKey;
use crate::units::{AgentId, Epoch, NodeId};
use crate::wire::{Envelope, Header, MessageKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The defences, each with its switch. All on by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Defences {
    /// Every envelope is signed by its issuer's node key over issuer,
    /// audience, agent, epoch, head, nonce, expiry and the body; a request
    /// is believed only if the signature verifies against the issuer's known
    /// key (or, on a node with no key directory, if the issuer is the
    /// authenticated transport peer). Off: the header's issuer is believed.
    pub signed_claims: bool,
    /// Expiry of every request, per-(issuer, agent) epoch high-water marks,
    /// a nonce window for announcements, and the highest epoch any peer
    /// announced for an agent: a package below it is stale.
    pub replay_window: bool,
    /// Two owners or two heads for one epoch, seen across peers (also by a
    /// node that does not host the agent): RECOVERY_REQUIRED if held here,
    /// and no transfer of the agent is accepted any more.
    pub divergence_detection: bool,
    /// A target re-runs the shipped last tick and requires the checkpoint
    /// to charge no more than its cost (plus the agent's declared payment
    /// allowance per tick, as payments are settled, not re-run).
    pub metering_check: bool,
    /// Per-peer token buckets on incoming transfers and announcements.
    pub rate_limit: bool,
    /// Checkpoint signature, AgentIdentity = signing key, and continuity
    /// with the agent key held locally or announced by peers.
    pub transfer_identity_checks: bool,
    /// Self-certifying agent ids (`<label>.<tag>`, `identity::agent_tag`):
    /// every key met for such an agent (package checkpoint, announced
    /// `AgentKey`, a deploy's key) must carry the id's tag, or the message
    /// is refused before it touches a view or any state; and a peer view of
    /// such an agent changes only on a claim signed by that key. Off: the
    /// agent key a view holds is trusted on first use, as for legacy ids.
    pub self_certifying_ids: bool,
}

impl Default for Defences {
    fn default() -> Self {
        Defences {
            signed_claims: true,
            replay_window: true,
            divergence_detection: true,
            metering_check: true,
            rate_limit: true,
            transfer_identity_checks: true,
            self_certifying_ids: true,
        }
    }
}

/// One defence, named as in [`Defences`], traces (`claim_rejected
/// defence=…`), scenarios (`attack.defence`) and the attack matrix: the one
/// list of them, so a name is never rediscovered from a string.
/// Written as its name (a string in JSON and in RON scenario files).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum Defence {
    SignedClaims,
    ReplayWindow,
    DivergenceDetection,
    MeteringCheck,
    RateLimit,
    TransferIdentityChecks,
    SelfCertifyingIds,
}

impl Defence {
    pub const ALL: [Defence; 7] = [
        Defence::SignedClaims,
        Defence::ReplayWindow,
        Defence::DivergenceDetection,
        Defence::MeteringCheck,
        Defence::RateLimit,
        Defence::TransferIdentityChecks,
        Defence::SelfCertifyingIds,
    ];

    /// The name of its switch in [`Defences`] (and in traces).
    pub fn name(self) -> &'static str {
        match self {
            Defence::SignedClaims => "signed_claims",
            Defence::ReplayWindow => "replay_window",
            Defence::DivergenceDetection => "divergence_detection",
            Defence::MeteringCheck => "metering_check",
            Defence::RateLimit => "rate_limit",
            Defence::TransferIdentityChecks => "transfer_identity_checks",
            Defence::SelfCertifyingIds => "self_certifying_ids",
        }
    }

    pub fn from_name(name: &str) -> Option<Defence> {
        Defence::ALL.into_iter().find(|d| d.name() == name)
    }
}

impl From<Defence> for &'static str {
    fn from(d: Defence) -> &'static str {
        d.name()
    }
}

impl TryFrom<String> for Defence {
    type Error = String;
    fn try_from(name: String) -> Result<Defence, String> {
        Defence::from_name(&name).ok_or_else(|| {
            let known: Vec<&str> = Defence::ALL.iter().map(|d| d.name()).collect();
            format!("unknown defence {name:?} (known: {})", known.join(", "))
        })
    }
}

impl std::fmt::Display for Defence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Defences {
    /// Whether `defence` is switched on.
    pub fn is_on(&self, defence: Defence) -> bool {
        let mut copy = *self;
        *copy.slot(defence)
    }

    fn slot(&mut self, defence: Defence) -> &mut bool {
        match defence {
            Defence::SignedClaims => &mut self.signed_claims,
            Defence::ReplayWindow => &mut self.replay_window,
            Defence::DivergenceDetection => &mut self.divergence_detection,
            Defence::MeteringCheck => &mut self.metering_check,
            Defence::RateLimit => &mut self.rate_limit,
            Defence::TransferIdentityChecks => &mut self.transfer_identity_checks,
            Defence::SelfCertifyingIds => &mut self.self_certifying_ids,
        }
    }

    /// Switch one defence on or off.
    pub fn switch(&mut self, defence: Defence, on: bool) {
        *self.slot(defence) = on;
    }
}

/// Sustained incoming transfers per peer: one per `TRANSFER_REFILL_NS`
/// (12/min) after a burst of `TRANSFER_BURST`. A transfer costs the target a
/// compile and a replay; an honest source sends one per handoff.
pub const TRANSFER_BURST: u64 = 8;
pub const TRANSFER_REFILL_NS: u64 = 5_000_000_000;
/// Announcements per peer: burst 64, then one per 500 ms (120/min): an
/// honest owner announces each agent once per lease renewal (30 s) and on
/// takeover, recovery and restart.
pub const ANNOUNCE_BURST: u64 = 64;
pub const ANNOUNCE_REFILL_NS: u64 = 500_000_000;
/// Nonces remembered (each until its message expires): bounds memory.
pub const MAX_NONCES: usize = 4096;
/// Sticky refusals remembered, for the same reason.
pub const MAX_STICKY: usize = 1024;
/// Agents whose peer view is kept (hosted or not). When full, a new agent's
/// view replaces the one no claim has moved for longest, if that one has
/// been still for [`VIEW_KEEP_NS`] and is not divergent; otherwise the new
/// agent gets no view. Found by outside testers: views were never dropped,
/// so 4096 claims about made-up agents left every later agent without a
/// view, for good; and evicting the stalest view at once let a cheap
/// unsigned flood push out a live agent's pinned (first-seen) key and then
/// poison it. A live owner re-announces at every lease renewal, so its view
/// is never that still; made-up views must be kept moving to hold room.
pub const MAX_VIEWS: usize = 4096;
/// How long a peer view must have been still before it may make room.
pub const VIEW_KEEP_NS: u64 = 10 * 60 * 1_000_000_000;
/// Owner claims kept per view, the highest majors (divergence is judged per
/// major; an agent's key holder could otherwise sign a claim at every major).
pub const MAX_OWNERS_PER_VIEW: usize = 64;
/// Epoch high-water marks kept, one per (issuer, agent): bounds memory.
/// When full, the mark raised longest ago makes room for a new pair.
pub const MAX_MARKS: usize = 4096;
/// Token buckets kept, one per (peer, kind); when full, buckets that have
/// refilled (the same as no bucket) are dropped, or else the one closest
/// to refilled: a new peer is never refused for the table's size, and a
/// drained bucket (a flooding peer's) is the last to go.
pub const MAX_BUCKETS: usize = 4096;

/// The token bucket of a kind of request: (burst, refill interval), or
/// `None` for kinds that are not rate limited.
fn bucket_limits(kind: MessageKind) -> Option<(u64, u64)> {
    match kind {
        MessageKind::AgentTransfer => Some((TRANSFER_BURST, TRANSFER_REFILL_NS)),
        MessageKind::HeadAnnounce => Some((ANNOUNCE_BURST, ANNOUNCE_REFILL_NS)),
        _ => None,
    }
}

/// Remove the entry `rank` ranks lowest (the first of equals, in key
/// order), among those it ranks at all (`None`: never evicted). `false`:
/// nothing could go. One eviction rule for every bounded defence table.
fn evict_lowest<K: Ord + Clone, V, T: Ord>(map: &mut BTreeMap<K, V>, rank: impl Fn(&K, &V) -> Option<T>) -> bool {
    let lowest = map.iter().filter_map(|(k, v)| Some((rank(k, v)?, k))).min_by(|a, b| a.0.cmp(&b.0));
    match lowest.map(|(_, k)| k.clone()) {
        Some(k) => map.remove(&k).is_some(),
        None => false,
    }
}

/// What peers announced about one agent.
#[derive(Clone, Debug, Default)]
pub struct PeerView {
    /// Highest epoch any peer claimed to own the agent under.
    pub highest: Epoch,
    /// Owner claims per epoch major: who, and the head it announced.
    pub owners: BTreeMap<u64, (NodeId, Hash32)>,
    /// The agent key peers announced: for a self-certifying id (with
    /// `self_certifying_ids`) only a key carrying the id's tag; for a
    /// legacy id the first one seen (trust on first use).
    pub agent_key: Option<PublicKey>,
    /// Set once two owners or two heads were claimed for one major.
    pub divergent: Option<String>,
    /// When a claim last moved this view (monotonic ns): only a view no
    /// claim has moved for [`VIEW_KEEP_NS`] may make room for another.
    touched_ns: u64,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: u64,
    at_ns: u64,
}

/// Why a request was not believed: the defence and the detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub defence: Defence,
    pub reason: String,
}

fn reject(defence: Defence, reason: String) -> Rejection {
    Rejection { defence, reason }
}

/// The defences' memory on one node.
#[derive(Debug, Default)]
pub struct Guard {
    /// The mark, and when it was last raised (`mark_clock`).
    marks: BTreeMap<(NodeId, AgentId), (Epoch, u64)>,
    mark_clock: u64,
    nonces: BTreeMap<(NodeId, u64), i64>,
    sticky: BTreeMap<(NodeId, u64), (i64, String)>,
    buckets: BTreeMap<(NodeId, MessageKind), Bucket>,
    pub views: BTreeMap<AgentId, PeerView>,
    /// Requests not believed so far.
    pub rejected: u64,
}

impl Guard {
    /// Signature and issuer check (`signed_claims`). `keys` is the node's
    /// key directory; an empty one falls back to the transport's identity.
    pub fn check_claim(
        d: &Defences,
        keys: &BTreeMap<NodeId, PublicKey>,
        from: &NodeId,
        env: &Envelope,
    ) -> Result<(), Rejection> {
        if !d.signed_claims {
            return Ok(());
        }
        let issuer = &env.header.issuer;
        if keys.is_empty() {
            if issuer != from {
                return Err(reject(Defence::SignedClaims, format!("peer {from} sent a claim issued by {issuer}")));
            }
            return Ok(());
        }
        let Some(key) = keys.get(issuer) else {
            return Err(reject(Defence::SignedClaims, format!("issuer {issuer} (via {from}) has no known node key")));
        };
        if !env.verify(key) {
            let what = if env.signature.is_some() { "invalid" } else { "missing" };
            return Err(reject(Defence::SignedClaims, format!("{what} signature for issuer {issuer} (via {from})")));
        }
        Ok(())
    }

    /// Expiry, epoch high-water mark and nonce window (`replay_window`).
    /// `Ok(true)`: a copy of a message seen before (the network duplicates
    /// messages): the caller answers it without acting on it again (a
    /// transfer's judgement is idempotent by itself).
    /// `skew_ns`: the clock-skew margin the protocol tolerates past expiry;
    /// `horizon_ns`: the longest lifetime an honest sender gives a message.
    /// A nonce is remembered until its message expires, but never past
    /// `now + skew + horizon`: found by an outside tester, messages expiring
    /// at `i64::MAX` filled the nonce window for good, so later copies went
    /// unrecognised. (Such messages are not refused: a node whose clock
    /// jumped ahead sends them honestly, and its recovery queries must be
    /// answered, `a1/lease-expiry-partition`.)
    pub fn check_fresh(
        &mut self,
        d: &Defences,
        env: &Envelope,
        now_unix_ns: i64,
        skew_ns: i64,
        horizon_ns: i64,
    ) -> Result<bool, Rejection> {
        if !d.replay_window {
            return Ok(false);
        }
        let h = &env.header;
        if now_unix_ns.saturating_sub(skew_ns) > h.expiry_unix_ns {
            return Err(reject(
                Defence::ReplayWindow,
                format!("{} expired at {} (now {now_unix_ns}, skew margin {skew_ns})", env.kind(), h.expiry_unix_ns),
            ));
        }
        let key = (h.issuer.clone(), h.agent.clone());
        if let Some((mark, _)) = self.marks.get(&key)
            && h.epoch.major < mark.major
        {
            return Err(reject(
                Defence::ReplayWindow,
                format!(
                    "{} from {} about {} at epoch {} below its high-water mark {mark}",
                    env.kind(),
                    h.issuer,
                    h.agent,
                    h.epoch
                ),
            ));
        }
        let nonce = (h.issuer.clone(), h.nonce);
        if self.nonces.contains_key(&nonce) {
            return Ok(true);
        }
        self.nonces.retain(|_, exp| *exp >= now_unix_ns);
        if self.nonces.len() < MAX_NONCES {
            let latest = now_unix_ns.saturating_add(skew_ns).saturating_add(horizon_ns);
            self.nonces.insert(nonce, h.expiry_unix_ns.min(latest));
        }
        self.mark_clock += 1;
        let raised = self.mark_clock;
        if !self.marks.contains_key(&key) && self.marks.len() >= MAX_MARKS {
            // The mark raised longest ago makes room (found by an outside
            // reviewer: a full table gave every later pair no mark, for good).
            evict_lowest(&mut self.marks, |_, (_, at)| Some(*at));
        }
        let (mark, at) = self.marks.entry(key).or_insert((h.epoch, raised));
        (*mark, *at) = ((*mark).max(h.epoch), raised);
        Ok(false)
    }

    /// Token bucket per (peer, kind) (`rate_limit`).
    pub fn check_rate(
        &mut self,
        d: &Defences,
        from: &NodeId,
        kind: MessageKind,
        now_mono_ns: u64,
    ) -> Result<(), Rejection> {
        if !d.rate_limit {
            return Ok(());
        }
        let Some((burst, refill)) = bucket_limits(kind) else { return Ok(()) };
        let key = (from.clone(), kind);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= MAX_BUCKETS {
            // Tokens missing from each bucket now (0: refilled, the same as
            // no bucket).
            let deficit = |(_, k): &(NodeId, MessageKind), b: &Bucket| {
                let (burst, refill) = bucket_limits(*k).unwrap_or((ANNOUNCE_BURST, ANNOUNCE_REFILL_NS));
                burst.saturating_sub(b.tokens.saturating_add(now_mono_ns.saturating_sub(b.at_ns) / refill))
            };
            self.buckets.retain(|k, b| deficit(k, b) > 0);
            if self.buckets.len() >= MAX_BUCKETS {
                evict_lowest(&mut self.buckets, |k, b| Some(deficit(k, b)));
            }
        }
        let b = self.buckets.entry(key).or_insert(Bucket { tokens: burst, at_ns: now_mono_ns });
        let earned = now_mono_ns.saturating_sub(b.at_ns) / refill;
        if earned > 0 {
            b.tokens = (b.tokens + earned).min(burst);
            b.at_ns = b.at_ns.saturating_add(earned * refill);
        }
        if b.tokens == 0 {
            return Err(reject(
                Defence::RateLimit,
                format!("{kind} from {from} above {burst} burst, one per {} ms", refill / 1_000_000),
            ));
        }
        b.tokens -= 1;
        Ok(())
    }

    /// A transfer refused earlier stays refused: every copy of it gets the
    /// same answer, so the refusal is clean for the source.
    pub fn sticky_refusal(&self, issuer: &NodeId, nonce: u64) -> Option<String> {
        self.sticky.get(&(issuer.clone(), nonce)).map(|(_, r)| r.clone())
    }

    pub fn remember_refusal(
        &mut self,
        issuer: &NodeId,
        nonce: u64,
        expiry_unix_ns: i64,
        now_unix_ns: i64,
        reason: &str,
    ) {
        self.sticky.retain(|_, (exp, _)| *exp >= now_unix_ns);
        if self.sticky.len() < MAX_STICKY {
            self.sticky.insert((issuer.clone(), nonce), (expiry_unix_ns, reason.to_string()));
        }
    }

    /// Defence `self_certifying_ids`: a key offered for `agent` (by a
    /// package's checkpoint, an announcement's `AgentKey`, a deploy) must
    /// be the one its self-certifying id names. Legacy ids pass (their key
    /// is trusted on first use). `what` names the key's source.
    pub fn check_agent_key(d: &Defences, agent: &AgentId, key: &PublicKey, what: &str) -> Result<(), Rejection> {
        if !d.self_certifying_ids {
            return Ok(());
        }
        crate::identity::check_agent_key(agent, key)
            .map_err(|e| reject(Defence::SelfCertifyingIds, format!("{what}: {e}")))
    }

    /// Before a view of `agent` is made: `true` if there is room, making it
    /// by dropping the view no claim has moved for longest when that one has
    /// been still for [`VIEW_KEEP_NS`] and is not divergent.
    fn make_room_for(&mut self, agent: &AgentId, now_mono_ns: u64) -> bool {
        if self.views.contains_key(agent) || self.views.len() < MAX_VIEWS {
            return true;
        }
        evict_lowest(&mut self.views, |_, v| {
            let still = now_mono_ns.saturating_sub(v.touched_ns) >= VIEW_KEEP_NS;
            (v.divergent.is_none() && still).then_some(v.touched_ns)
        })
    }

    /// Record a peer's announced view of `agent`. Returns a divergence
    /// description the first time two owners or two heads are claimed for
    /// one epoch major (only with `divergence_detection`).
    ///
    /// `proof` is the claim's `AgentSignature`. For a self-certifying id
    /// (with `self_certifying_ids`) the view changes only if it verifies
    /// under the agent's proven key (the announced one, already checked
    /// against the id's tag by [`Guard::check_agent_key`], or the one the
    /// view holds): an unproven claim moves neither the key, nor the
    /// highest epoch, nor the owners. Legacy ids: the first key seen is
    /// kept, any signed peer's claim counts.
    pub fn record_view(
        &mut self,
        d: &Defences,
        h: &Header,
        state: AuthorityState,
        agent_key: Option<PublicKey>,
        proof: Option<&[u8]>,
        now_mono_ns: u64,
    ) -> Option<String> {
        let (agent, issuer, epoch, head) = (&h.agent, &h.issuer, h.epoch, h.head_hash);
        let self_certifying = d.self_certifying_ids && crate::identity::agent_id_tag(agent).is_some();
        // A self-certifying id's claim counts only if proven (returns here
        // otherwise), and its key is then the proven one.
        let proven = if self_certifying {
            let known = self.views.get(agent).and_then(|v| v.agent_key);
            let key = agent_key.filter(|k| crate::identity::check_agent_key(agent, k).is_ok()).or(known);
            Some(key.filter(|k| {
                proof.and_then(|p| <[u8; 64]>::try_from(p).ok()).is_some_and(|sig| {
                    k.verify(&crate::wire::agent_claim_bytes(h, Some(state)), &crate::identity::Signature(sig))
                })
            })?)
        } else {
            None
        };
        // Only a claim that will be recorded makes room: an unproven one
        // (returned above) evicts nothing.
        if !self.make_room_for(agent, now_mono_ns) {
            return None;
        }
        let v = self.views.entry(agent.clone()).or_default();
        v.touched_ns = now_mono_ns;
        if proven.is_some() {
            v.agent_key = proven;
        }
        if v.agent_key.is_none() {
            v.agent_key = agent_key;
        }
        if state != AuthorityState::ActiveOwner {
            return None;
        }
        v.highest = v.highest.max(epoch);
        match v.owners.get(&epoch.major) {
            None => {
                v.owners.insert(epoch.major, (issuer.clone(), head));
                while v.owners.len() > MAX_OWNERS_PER_VIEW {
                    v.owners.pop_first();
                }
                None
            }
            Some((owner, _)) if owner == issuer => {
                v.owners.insert(epoch.major, (issuer.clone(), head));
                None
            }
            Some((owner, _)) if d.divergence_detection && v.divergent.is_none() => {
                let why = format!("{owner} and {issuer} both claim {agent} at epoch major {}", epoch.major);
                v.divergent = Some(why.clone());
                Some(why)
            }
            Some(_) => None,
        }
    }

    /// Checks of a package: its key against a self-certifying id
    /// (`self_certifying_ids`), then against the peers' views: stale epoch
    /// (`replay_window`), known divergence (`divergence_detection`), agent
    /// key continuity (`transfer_identity_checks`).
    pub fn check_package(
        &self,
        d: &Defences,
        agent: &AgentId,
        epoch: Epoch,
        key: Option<&PublicKey>,
    ) -> Result<(), Rejection> {
        match key {
            Some(k) => Self::check_agent_key(d, agent, k, "package")?,
            None if d.self_certifying_ids && crate::identity::agent_id_tag(agent).is_some() => {
                return Err(reject(Defence::SelfCertifyingIds, format!("package for {agent} carries no agent key")));
            }
            None => {}
        }
        let Some(v) = self.views.get(agent) else { return Ok(()) };
        if d.replay_window && epoch.major < v.highest.major {
            return Err(reject(
                Defence::ReplayWindow,
                format!("package at epoch {epoch} but a peer announced {agent} at {}", v.highest),
            ));
        }
        if let (true, Some(why)) = (d.divergence_detection, &v.divergent) {
            return Err(reject(Defence::DivergenceDetection, format!("{agent} is divergent: {why}")));
        }
        if let (true, Some(known)) = (d.transfer_identity_checks, &v.agent_key)
            && key != Some(known)
        {
            return Err(reject(
                Defence::TransferIdentityChecks,
                format!("package for {agent} not signed by its announced agent key"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Hash32;
    use crate::units::TickNumber;
    use crate::wire::{Body, HeadAnnounce};

    fn n(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn announce(issuer: &str, major: u64, nonce: u64, expiry: i64) -> Envelope {
        let h = Header {
            issuer: n(issuer),
            audience: n("b"),
            agent: AgentId::new("counter").unwrap(),
            epoch: Epoch::new(major, 0),
            head_tick: TickNumber(1),
            head_hash: Hash32::of(b"h"),
            nonce,
            issued_unix_ns: 0,
            expiry_unix_ns: expiry,
        };
        Envelope::new(
            h,
            Body::HeadAnnounce(HeadAnnounce {
                state: AuthorityState::ActiveOwner,
                agent_key: None,
                agent_signature: None,
            }),
        )
    }

    #[test]
    fn replay_window_refuses_expired_duplicate_and_below_mark() {
        let d = Defences::default();
        let mut g = Guard::default();
        assert!(!g.check_fresh(&d, &announce("a", 2, 1, 100), 50, 0, 100).unwrap());
        assert!(g.check_fresh(&d, &announce("a", 2, 1, 100), 60, 0, 100).unwrap(), "a copy is recognised");
        assert!(g.check_fresh(&d, &announce("a", 1, 2, 100), 60, 0, 100).is_err(), "below the mark");
        assert!(g.check_fresh(&d, &announce("a", 3, 3, 100), 101, 0, 100).is_err(), "expired");
        assert!(!g.check_fresh(&d, &announce("a", 3, 4, 100), 100, 0, 100).unwrap(), "at its expiry: still fresh");
        assert!(!g.check_fresh(&d, &announce("a", 3, 5, 100), 110, 10, 100).unwrap(), "within the skew margin");
        assert!(g.check_fresh(&d, &announce("a", 3, 6, 100), 111, 10, 100).is_err(), "past the skew margin");
        let off = Defences { replay_window: false, ..d };
        g.check_fresh(&off, &announce("a", 1, 1, 0), 60, 0, 100).unwrap();
    }

    /// Found by an outside tester: unsigned messages (an `igord` without a
    /// key directory admits any issuer that is its own transport peer), each
    /// about a new agent and expiring at `i64::MAX`, grew the marks without
    /// bound (RSS 16 → 58 MB after 140k) and filled the nonce window for
    /// good. Now a nonce is kept no longer than an honest message lives, and
    /// the marks and buckets are bounded.
    #[test]
    fn far_future_expiry_is_forgotten_at_the_horizon_and_marks_and_buckets_stay_bounded() {
        let d = Defences::default();
        let mut g = Guard::default();
        for i in 0..(MAX_NONCES as u64) {
            let env = announce(&format!("agent{i}"), 1, i, i64::MAX);
            assert!(!g.check_fresh(&d, &env, 50, 10, 100).unwrap());
        }
        assert_eq!(g.nonces.len(), MAX_NONCES, "the window is full");
        assert!(
            g.check_fresh(&d, &announce("agent7", 1, 7, i64::MAX), 160, 10, 100).unwrap(),
            "a copy, at the horizon"
        );
        // Past now + skew + horizon, the window has room again: a new
        // message is remembered, and so its copy is recognised.
        assert!(!g.check_fresh(&d, &announce("late", 1, 99_999, 500), 161, 10, 100).unwrap());
        assert!(g.check_fresh(&d, &announce("late", 1, 99_999, 500), 162, 10, 100).unwrap(), "a copy");
        assert!(g.nonces.len() <= 2, "{} nonces left", g.nonces.len());
        for i in 0..(MAX_MARKS as u64 + 100) {
            let env = announce(&format!("agent{i}"), 1, 1_000_000 + i, 400);
            g.check_fresh(&d, &env, 200, 10, 100).unwrap();
            assert!(g.marks.len() <= MAX_MARKS && g.nonces.len() <= MAX_NONCES);
        }
        // A full table of marks: the one raised longest ago makes room, so a
        // new pair still gets its mark and a freshly raised one stays.
        g.check_fresh(&d, &announce("agent4195", 5, 3_000_000, 400), 200, 10, 100).unwrap();
        g.check_fresh(&d, &announce("newcomer", 7, 3_000_001, 400), 200, 10, 100).unwrap();
        assert_eq!(g.marks.len(), MAX_MARKS);
        assert!(g.check_fresh(&d, &announce("newcomer", 6, 3_000_002, 400), 200, 10, 100).is_err(), "marked");
        assert!(g.check_fresh(&d, &announce("agent4195", 4, 3_000_003, 400), 200, 10, 100).is_err(), "kept");
        assert!(!g.marks.keys().any(|(issuer, _)| issuer.as_str() == "agent100"), "the stalest went");
        // Recency, not key order, decides: the first key, freshly raised, stays.
        let first = g.marks.keys().next().expect("marks").clone();
        g.check_fresh(&d, &announce(first.0.as_str(), 9, 3_000_010, 400), 200, 10, 100).unwrap();
        g.check_fresh(&d, &announce("another-newcomer", 1, 3_000_011, 400), 200, 10, 100).unwrap();
        assert!(g.marks.contains_key(&first), "a freshly raised mark stays, whatever its key");
    }

    /// Found by an outside reviewer: a full table of rate buckets, all in
    /// use, refused every new peer. Now refilled buckets go first, or else
    /// the one closest to refilled; a drained bucket (a flooding peer's)
    /// stays, so it earns no fresh burst.
    #[test]
    fn a_full_bucket_table_makes_room_and_keeps_drained_buckets() {
        let d = Defences::default();
        let mut g = Guard::default();
        let flooder = n("flooder");
        for _ in 0..ANNOUNCE_BURST {
            g.check_rate(&d, &flooder, MessageKind::HeadAnnounce, 0).unwrap();
        }
        for i in 0..(MAX_BUCKETS as u64 - 1) {
            g.check_rate(&d, &n(&format!("peer{i}")), MessageKind::HeadAnnounce, 0).unwrap();
        }
        assert_eq!(g.buckets.len(), MAX_BUCKETS);
        // 1 ns later nothing has refilled: one bucket makes room, not all.
        g.check_rate(&d, &n("newcomer"), MessageKind::HeadAnnounce, 1).unwrap();
        assert_eq!(g.buckets.len(), MAX_BUCKETS);
        assert!(g.check_rate(&d, &flooder, MessageKind::HeadAnnounce, 2).is_err(), "the drained bucket stayed");
        // A peer already in the full table is limited as usual.
        g.check_rate(&d, &n("peer7"), MessageKind::HeadAnnounce, 3).unwrap();
        assert_eq!(g.buckets.len(), MAX_BUCKETS);
        // Once they have refilled they are the same as none.
        g.check_rate(&d, &n("late"), MessageKind::HeadAnnounce, ANNOUNCE_REFILL_NS).unwrap();
        assert!(g.buckets.len() < 10, "{} buckets left", g.buckets.len());
    }

    #[test]
    fn signed_claims_need_the_issuers_key() {
        let d = Defences::default();
        let ka = crate::identity::Keypair::from_seed([1; 32]);
        let km = crate::identity::Keypair::from_seed([2; 32]);
        let keys: BTreeMap<NodeId, PublicKey> = [(n("a"), ka.public()), (n("m"), km.public())].into();
        let mut forged = announce("a", 9, 1, 100);
        forged.sign(&km);
        assert!(Guard::check_claim(&d, &keys, &n("m"), &forged).is_err());
        let mut genuine = announce("a", 9, 1, 100);
        genuine.sign(&ka);
        Guard::check_claim(&d, &keys, &n("m"), &genuine).expect("a relayed genuine claim is believed");
        assert!(Guard::check_claim(&d, &BTreeMap::new(), &n("m"), &genuine).is_err(), "no keys: transport identity");
        let off = Defences { signed_claims: false, ..d };
        Guard::check_claim(&off, &keys, &n("m"), &forged).unwrap();
    }

    #[test]
    fn rate_limit_bounds_a_burst_and_refills() {
        let d = Defences::default();
        let mut g = Guard::default();
        let m = n("m");
        for _ in 0..TRANSFER_BURST {
            g.check_rate(&d, &m, MessageKind::AgentTransfer, 0).unwrap();
        }
        assert!(g.check_rate(&d, &m, MessageKind::AgentTransfer, 1).is_err());
        g.check_rate(&d, &m, MessageKind::AgentTransfer, TRANSFER_REFILL_NS).unwrap();
        assert!(g.check_rate(&d, &m, MessageKind::AgentTransfer, TRANSFER_REFILL_NS).is_err());
        // Two refills earn two tokens, and the next one is a whole refill
        // after the second, not earlier.
        let r = TRANSFER_REFILL_NS;
        g.check_rate(&d, &m, MessageKind::AgentTransfer, 3 * r).unwrap();
        g.check_rate(&d, &m, MessageKind::AgentTransfer, 3 * r).unwrap();
        assert!(g.check_rate(&d, &m, MessageKind::AgentTransfer, 4 * r - 1).is_err());
        g.check_rate(&d, &m, MessageKind::AgentTransfer, 4 * r).unwrap();
    }

    #[test]
    fn a_view_of_a_self_certifying_agent_moves_only_on_a_claim_signed_by_its_key() {
        use crate::identity::{Keypair, Signature, tagged_agent_id};
        let d = Defences::default();
        let owner = Keypair::from_seed([5; 32]);
        let poisoner = Keypair::from_seed([6; 32]);
        let agent = tagged_agent_id("counter", &owner.public()).unwrap();
        let own = AuthorityState::ActiveOwner;
        let header = |major: u64| {
            let mut h = announce("m", major, 0, 0).header;
            h.agent = agent.clone();
            h
        };
        let sign = |k: &Keypair, h: &Header| k.sign(&crate::wire::agent_claim_bytes(h, Some(own))).0;
        // The poisoner's key is not the id's: refused outright.
        let e = Guard::check_agent_key(&d, &agent, &poisoner.public(), "announced AgentKey").unwrap_err();
        assert_eq!(e.defence, Defence::SelfCertifyingIds, "{e:?}");
        Guard::check_agent_key(&d, &agent, &owner.public(), "announced AgentKey").unwrap();
        let mut g = Guard::default();
        // Unsigned, or signed by a key that is not the id's: no view at all.
        let h9 = header(9);
        assert!(g.record_view(&d, &h9, own, None, None, 0).is_none());
        let forged = sign(&poisoner, &h9);
        g.record_view(&d, &h9, own, Some(poisoner.public()), Some(&forged), 0);
        assert!(g.views.get(&agent).is_none_or(|v| v.agent_key.is_none() && v.highest == Epoch::default()));
        g.check_package(&d, &agent, Epoch::new(2, 0), Some(&owner.public())).expect("nothing poisoned the view");
        let e = g.check_package(&d, &agent, Epoch::new(9, 0), Some(&poisoner.public())).unwrap_err();
        assert_eq!(e.defence, Defence::SelfCertifyingIds);
        // The owner's signed claim sets key and epoch; a later claim signed
        // by the key the view holds counts without repeating the key.
        let h2 = header(2);
        g.record_view(&d, &h2, own, Some(owner.public()), Some(&sign(&owner, &h2)), 0);
        let h3 = header(3);
        g.record_view(&d, &h3, own, None, Some(&sign(&owner, &h3)), 0);
        let v = &g.views[&agent];
        assert_eq!((v.agent_key, v.highest), (Some(owner.public()), Epoch::new(3, 0)));
        assert!(owner.public().verify(&crate::wire::agent_claim_bytes(&h3, Some(own)), &Signature(sign(&owner, &h3))));
        // Off: the first key heard is believed (trust on first use).
        let off = Defences { self_certifying_ids: false, ..d };
        let mut g = Guard::default();
        g.record_view(&off, &h9, own, Some(poisoner.public()), Some(&forged), 0);
        assert_eq!(g.views[&agent].agent_key, Some(poisoner.public()));
        assert_eq!(
            g.check_package(&off, &agent, Epoch::new(2, 0), Some(&owner.public())).unwrap_err().defence,
            Defence::ReplayWindow
        );
    }

    #[test]
    fn two_owners_for_one_major_are_divergent() {
        let d = Defences::default();
        let mut g = Guard::default();
        let agent = AgentId::new("counter").unwrap();
        let own = AuthorityState::ActiveOwner;
        let claim = |issuer: &str, major: u64, generation: u64, head: &[u8]| {
            let mut h = announce(issuer, major, 0, 0).header;
            (h.epoch, h.head_hash) = (Epoch::new(major, generation), Hash32::of(head));
            h
        };
        assert!(g.record_view(&d, &claim("b", 2, 0, b"x"), own, None, None, 0).is_none());
        assert!(g.record_view(&d, &claim("b", 2, 1, b"y"), own, None, None, 0).is_none());
        assert!(g.record_view(&d, &claim("a", 2, 1, b"z"), own, None, None, 0).is_some());
        assert!(g.record_view(&d, &claim("c", 2, 1, b"w"), own, None, None, 0).is_none(), "reported once");
        let off = Defences { divergence_detection: false, ..d };
        let mut quiet = Guard::default();
        assert!(quiet.record_view(&off, &claim("b", 2, 0, b"x"), own, None, None, 0).is_none());
        assert!(quiet.record_view(&off, &claim("a", 2, 1, b"z"), own, None, None, 0).is_none(), "off: no divergence");
        assert!(quiet.views.values().all(|v| v.divergent.is_none()));
        assert_eq!(
            g.check_package(&d, &agent, Epoch::new(2, 3), None).unwrap_err().defence,
            Defence::DivergenceDetection
        );
        assert_eq!(g.check_package(&d, &agent, Epoch::new(1, 3), None).unwrap_err().defence, Defence::ReplayWindow);
    }

    /// Found by outside testers: views were never dropped, so claims about
    /// 4096 made-up agents left every later agent without a view, for good;
    /// and a first fix that evicted the stalest view at once let a cheap
    /// unsigned flood push out a live legacy agent's first-seen key and then
    /// poison it. Now only a view still for `VIEW_KEEP_NS` (and not
    /// divergent) makes room; and a view keeps its 64 highest majors.
    #[test]
    fn views_make_room_only_from_long_still_views_and_keep_their_highest_majors() {
        let d = Defences::default();
        let mut g = Guard::default();
        let own = AuthorityState::ActiveOwner;
        let claim = |agent: &str, major: u64| {
            let mut h = announce("b", major, 0, 0).header;
            h.agent = AgentId::new(agent).unwrap();
            h
        };
        let id = |a: &str| AgentId::new(a).unwrap();
        let real_key = crate::identity::Keypair::from_seed([9; 32]).public();
        g.record_view(&d, &claim("real", 1), own, Some(real_key), None, 0);
        g.record_view(&d, &claim("split", 1), own, None, None, 0);
        let mut fork = claim("split", 1);
        fork.issuer = n("c");
        assert!(g.record_view(&d, &fork, own, None, None, 0).is_some(), "divergent");
        for i in 0..(MAX_VIEWS - 2) {
            g.record_view(&d, &claim(&format!("made-up-{i}"), 1), own, None, None, 1);
        }
        assert_eq!(g.views.len(), MAX_VIEWS);
        // A flood right away evicts nothing: every view moved recently.
        g.record_view(&d, &claim("flood", 1), own, None, None, 2);
        assert!(!g.views.contains_key(&id("flood")));
        assert_eq!(g.views[&id("real")].agent_key, Some(real_key), "the pinned key stays");
        // The live owner re-announces within the keep time; much later a new
        // agent takes the room of a still made-up view, never the live one's
        // or the divergent one's.
        g.record_view(&d, &claim("real", 2), own, None, None, VIEW_KEEP_NS - 1);
        g.record_view(&d, &claim("newcomer", 1), own, None, None, VIEW_KEEP_NS + 1);
        assert!(g.views.contains_key(&id("newcomer")), "a new agent gets a view again");
        assert!(!g.views.contains_key(&id("made-up-0")), "a view still for the keep time made room");
        assert!(g.views.contains_key(&id("real")) && g.views.contains_key(&id("split")));
        assert_eq!(g.views.len(), MAX_VIEWS);
        let real = id("real");
        for major in 3..200 {
            g.record_view(&d, &claim("real", major), own, None, None, VIEW_KEEP_NS + 2);
        }
        let v = &g.views[&real];
        assert_eq!(v.owners.len(), MAX_OWNERS_PER_VIEW);
        assert_eq!(v.highest.major, 199);
        assert_eq!(v.owners.keys().next(), Some(&(200 - MAX_OWNERS_PER_VIEW as u64)), "the lowest majors go");
        assert_eq!(g.check_package(&d, &real, Epoch::new(150, 0), None).unwrap_err().defence, Defence::ReplayWindow);
        for i in 0..(MAX_VIEWS as u64 + 10) {
            g.record_view(&d, &claim(&format!("later-{i}"), 1), own, None, None, 3 * VIEW_KEEP_NS);
        }
        assert!(g.views[&id("split")].divergent.is_some(), "a divergent view is never evicted");
        assert!(!g.views.contains_key(&real), "a view still for twice the keep time made room");
    }
}
