//! The migration protocol (spec §6) as sans-IO logic. The source side is a
//! state machine ([`SourceHandoff`]): events in (checkpoint sealed or not,
//! send failed, reply, timer), the current time and one random draw as
//! arguments, [`Action`]s out (transition, stop/resume ticking, seal a
//! checkpoint, send the package, start a timer, retire). The target side is
//! a pure judgement ([`judge_package`], [`check_price_policy`]). Nothing
//! here reads a clock, touches a disk or socket, or draws randomness: see
//! the imports.
//!
//! Length: ~665 lines of code (both sides of the protocol share their
//! types and are checked together by the mutation tests) and ~340 of unit
//! tests; over 600 only with the tests.

use crate::authority::{AuthorityState, Reason};
use crate::checkpoint::{Checkpoint, Hash32};
use crate::env::Now;
use crate::identity::PublicKey;
use crate::units::{AgentId, Epoch, Microcents, NodeId, TickNumber};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Protocol timing and retry limits, from the node configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationConfig {
    /// How long a package stays acceptable after it is sent (its expiry).
    pub package_ttl_ns: u64,
    /// Largest wall-clock skew between nodes the protocol tolerates: a
    /// source waits this much past a package's expiry before it trusts that
    /// no copy of the package can still be accepted.
    pub max_clock_skew_ns: u64,
    /// Sends per handoff, first one included. Only sends that provably
    /// never reached the target are retried.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `backoff_cap_ns`.
    pub backoff_base_ns: u64,
    pub backoff_cap_ns: u64,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        MigrationConfig {
            package_ttl_ns: 5_000_000_000,
            max_clock_skew_ns: 500_000_000,
            max_attempts: 5,
            backoff_base_ns: 100_000_000,
            backoff_cap_ns: 5_000_000_000,
        }
    }
}

impl MigrationConfig {
    /// Time after a send by which the reply must have come: the package's
    /// expiry plus the skew margin. Past it, no copy of the package can be
    /// accepted any more, so declaring the outcome ambiguous is final.
    pub fn reply_timeout_ns(&self) -> u64 {
        self.package_ttl_ns.saturating_add(self.max_clock_skew_ns)
    }

    /// Delay before retry `attempt` (2, 3, …): capped exponential backoff
    /// with "equal jitter" drawn from `rand`; always within the cap.
    pub fn backoff_ns(&self, attempt: u32, rand: u64) -> u64 {
        let exp = attempt.saturating_sub(2).min(63);
        let delay = self.backoff_base_ns.saturating_mul(1u64 << exp).min(self.backoff_cap_ns).max(1);
        let half = delay / 2;
        half + rand % (delay - half + 1)
    }
}

/// How a send failed, as the transport reports it (see `env::NetError`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendFailure {
    /// Not delivered: safe to retry.
    Unreachable,
    /// Maybe delivered, no reply: ambiguous.
    Lost,
    /// Refused by the transport before sending: not delivered, not retried.
    TooLarge,
}

/// Timers the source machine asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoffTimer {
    /// No reply for `attempt` by now: ambiguous.
    ReplyDeadline { attempt: u32 },
    /// Backoff over: send `attempt`.
    Retry { attempt: u32 },
    /// A refused package has expired everywhere: resume on the source.
    PackageExpired,
}

/// The target's reply as the machine needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyView {
    pub success: bool,
    pub error: Option<String>,
    /// The epoch the target holds the agent under (0.0 if unknown to it).
    pub target_epoch: Epoch,
}

/// Events the source machine consumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The handoff checkpoint is durably committed.
    Sealed {
        tick: TickNumber,
        hash: Hash32,
    },
    /// The handoff checkpoint could not be committed (nothing relinquished).
    SealFailed {
        error: String,
    },
    /// The relinquish (HANDOFF_PENDING) could not be persisted: nothing was
    /// sent.
    PersistFailed {
        error: String,
    },
    SendFailed {
        attempt: u32,
        failure: SendFailure,
        error: String,
    },
    Reply {
        attempt: u32,
        reply: ReplyView,
    },
    Timer(HandoffTimer),
}

/// How a handoff ended, from the source's side.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Outcome {
    /// The target confirmed: source retired.
    Completed,
    /// The target definitively refused: the agent stays on the source.
    Refused(String),
    /// Nothing ever reached the target (retries exhausted or not
    /// retryable): the agent stays on the source.
    FailedBeforeSend(String),
    /// Local failure before relinquishing: the agent stays on the source.
    Aborted(String),
    /// Unknown whether the target took over: RECOVERY_REQUIRED.
    Ambiguous(String),
}

impl Outcome {
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, Outcome::Ambiguous(_))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Completed => f.write_str("completed"),
            Outcome::Refused(r) => write!(f, "refused({r})"),
            Outcome::FailedBeforeSend(r) => write!(f, "failed_before_send({r})"),
            Outcome::Aborted(r) => write!(f, "aborted({r})"),
            Outcome::Ambiguous(r) => write!(f, "ambiguous({r})"),
        }
    }
}

/// What the node must do, in order. If a `Transition` cannot be persisted
/// the node stops and feeds [`Input::PersistFailed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Transition {
        to: AuthorityState,
        reason: Reason,
    },
    StopTicking,
    ResumeTicking,
    /// Commit the fresh handoff checkpoint (authority op `SealHandoff`).
    SealCheckpoint,
    /// Build the package from the sealed checkpoint and send it.
    SendPackage {
        attempt: u32,
        nonce: u64,
        expiry_unix_ns: i64,
    },
    StartTimer {
        timer: HandoffTimer,
        at_mono_ns: u64,
    },
    /// Delete the local copy (wasm, key, kv); keep history and the
    /// RETIRED record so stale messages are still recognised.
    DeleteLocalCopy,
    /// The handoff is over.
    Finished(Outcome),
}

/// What the source is waiting for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceState {
    /// HANDOFF_INITIATED: the handoff checkpoint is being committed.
    ExpectSealed,
    /// HANDOFF_PENDING: `attempt` is out; waiting for its reply.
    ExpectReply {
        attempt: u32,
        expiry_unix_ns: i64,
    },
    /// HANDOFF_PENDING: `attempt - 1` was provably not delivered; backoff.
    ExpectRetry {
        attempt: u32,
    },
    /// HANDOFF_PENDING: refused; waiting until no copy can be accepted.
    ExpectPackageExpiry {
        refusal: String,
    },
    Finished(Outcome),
}

/// The source side of one handoff of one agent.
#[derive(Clone, Debug)]
pub struct SourceHandoff {
    pub agent: AgentId,
    pub target: NodeId,
    /// The source's epoch when it started (the package's epoch).
    pub epoch: Epoch,
    pub sealed: Option<(TickNumber, Hash32)>,
    state: SourceState,
    cfg: MigrationConfig,
}

impl SourceHandoff {
    /// Start a handoff. The caller has checked `Op::StartHandoff` and that
    /// no other handoff of this agent is in flight.
    pub fn start(agent: AgentId, target: NodeId, epoch: Epoch, cfg: MigrationConfig) -> (Self, Vec<Action>) {
        let m = SourceHandoff { agent, target, epoch, sealed: None, state: SourceState::ExpectSealed, cfg };
        let actions = vec![
            Action::Transition { to: AuthorityState::HandoffInitiated, reason: Reason::HandoffStarted },
            Action::StopTicking,
            Action::SealCheckpoint,
        ];
        (m, actions)
    }

    pub fn state(&self) -> &SourceState {
        &self.state
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.state, SourceState::Finished(_))
    }

    /// Feed one event. `rand` is a fresh draw from the node's entropy (used
    /// for nonces and backoff jitter). Returns no actions if the event is
    /// stale (an old attempt, a superseded timer): the caller counts it.
    pub fn handle(&mut self, now: Now, rand: u64, input: Input) -> Vec<Action> {
        use SourceState as S;
        match (&self.state, input) {
            (S::ExpectSealed, Input::Sealed { tick, hash }) => {
                self.sealed = Some((tick, hash));
                let mut out =
                    vec![Action::Transition { to: AuthorityState::HandoffPending, reason: Reason::Relinquished }];
                out.extend(self.send(now, rand, 1));
                out
            }
            (S::ExpectSealed, Input::SealFailed { error }) => self.resume(Outcome::Aborted(error)),
            (S::ExpectReply { attempt: 1, .. }, Input::PersistFailed { error }) if self.sealed.is_some() => {
                // The relinquish never became durable and nothing was sent.
                self.resume(Outcome::Aborted(error))
            }
            (S::ExpectReply { attempt, .. }, Input::SendFailed { attempt: a, failure, error }) if *attempt == a => {
                let attempt = *attempt;
                match failure {
                    SendFailure::Lost => self.ambiguous(Reason::Ambiguous, format!("attempt {attempt}: {error}")),
                    SendFailure::TooLarge => self.resume(Outcome::FailedBeforeSend(error)),
                    SendFailure::Unreachable if attempt >= self.cfg.max_attempts => {
                        self.resume(Outcome::FailedBeforeSend(format!("{attempt} attempts: {error}")))
                    }
                    SendFailure::Unreachable => {
                        let next = attempt + 1;
                        self.state = S::ExpectRetry { attempt: next };
                        let at = now.mono_ns.saturating_add(self.cfg.backoff_ns(next, rand));
                        vec![Action::StartTimer { timer: HandoffTimer::Retry { attempt: next }, at_mono_ns: at }]
                    }
                }
            }
            (S::ExpectReply { attempt, .. }, Input::Reply { attempt: a, reply }) if *attempt == a => {
                self.on_reply(now, reply)
            }
            (S::ExpectReply { attempt, .. }, Input::Timer(HandoffTimer::ReplyDeadline { attempt: a }))
                if *attempt == a =>
            {
                self.ambiguous(Reason::Ambiguous, format!("attempt {a}: no reply before the deadline"))
            }
            (S::ExpectRetry { attempt }, Input::Timer(HandoffTimer::Retry { attempt: a })) if *attempt == a => {
                self.send(now, rand, a)
            }
            (S::ExpectPackageExpiry { refusal }, Input::Timer(HandoffTimer::PackageExpired)) => {
                let refusal = refusal.clone();
                self.resume(Outcome::Refused(refusal))
            }
            _ => Vec::new(),
        }
    }

    fn send(&mut self, now: Now, nonce: u64, attempt: u32) -> Vec<Action> {
        let ttl = i64::try_from(self.cfg.package_ttl_ns).unwrap_or(i64::MAX);
        let expiry_unix_ns = now.unix_ns.saturating_add(ttl);
        self.state = SourceState::ExpectReply { attempt, expiry_unix_ns };
        let deadline = now.mono_ns.saturating_add(self.cfg.reply_timeout_ns());
        vec![
            Action::SendPackage { attempt, nonce, expiry_unix_ns },
            Action::StartTimer { timer: HandoffTimer::ReplyDeadline { attempt }, at_mono_ns: deadline },
        ]
    }

    fn on_reply(&mut self, now: Now, reply: ReplyView) -> Vec<Action> {
        if reply.success {
            self.state = SourceState::Finished(Outcome::Completed);
            return vec![
                Action::Transition { to: AuthorityState::Retired, reason: Reason::Confirmed },
                Action::DeleteLocalCopy,
                Action::Finished(Outcome::Completed),
            ];
        }
        let why = reply.error.unwrap_or_else(|| "no reason given".into());
        if reply.target_epoch >= self.epoch {
            // The target holds its own claim at an epoch not below ours: this
            // is not a clean refusal but a conflict. Doubt: pause (EI-6).
            return self.ambiguous(
                Reason::Superseded,
                format!("target holds epoch {} >= {}: {why}", reply.target_epoch, self.epoch),
            );
        }
        // A definitive refusal. Copies of the package (duplicates in the
        // network) must expire before the agent may tick here again.
        let SourceState::ExpectReply { expiry_unix_ns, .. } = self.state else {
            debug_assert!(false, "on_reply only in ExpectReply");
            return Vec::new();
        };
        let wait = expiry_unix_ns.saturating_sub(now.unix_ns).max(0) as u64;
        let at = now.mono_ns.saturating_add(wait).saturating_add(self.cfg.max_clock_skew_ns);
        self.state = SourceState::ExpectPackageExpiry { refusal: why };
        vec![Action::StartTimer { timer: HandoffTimer::PackageExpired, at_mono_ns: at }]
    }

    fn resume(&mut self, outcome: Outcome) -> Vec<Action> {
        self.state = SourceState::Finished(outcome.clone());
        vec![
            Action::Transition { to: AuthorityState::ActiveOwner, reason: Reason::HandoffAborted },
            Action::ResumeTicking,
            Action::Finished(outcome),
        ]
    }

    fn ambiguous(&mut self, reason: Reason, why: String) -> Vec<Action> {
        let outcome = Outcome::Ambiguous(why);
        self.state = SourceState::Finished(outcome.clone());
        vec![Action::Transition { to: AuthorityState::RecoveryRequired, reason }, Action::Finished(outcome)]
    }
}

/// What the target knows about the agent before judging a package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalView {
    pub state: AuthorityState,
    pub epoch: Epoch,
    pub head_tick: Option<TickNumber>,
    pub agent_key: Option<PublicKey>,
    /// The package's checkpoint is already in the local history: this node
    /// accepted this very package before (a duplicate).
    pub has_checkpoint: bool,
}

/// Why a target refuses a package outright (the package is at fault, or
/// this node's state rules it out; nothing changes locally). The Display
/// text is the reason the refusal carries on the wire and in traces.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Defence `replay_window`: the package's expiry has passed.
    #[error("package expired at {expiry_unix_ns} (now {now_unix_ns})")]
    Expired { expiry_unix_ns: i64, now_unix_ns: i64 },
    /// Issued before this node (re)started (spec §5: a wiped node knows
    /// nothing of what it accepted before).
    #[error("package issued at {issued_unix_ns} before this node started at {started_unix_ns}")]
    IssuedBeforeStart { issued_unix_ns: i64, started_unix_ns: i64 },
    /// Identity checks on: the checkpoint has no agent signature.
    #[error("checkpoint v{version} carries no signature")]
    Unsigned { version: u8 },
    /// The checkpoint's agent signature does not verify, or its wasm hash is
    /// not the binary's.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// The header's epoch, head tick or head hash is not the checkpoint's.
    #[error(
        "header claims epoch {epoch} head {}@{head_tick} but checkpoint is epoch {checkpoint_epoch} tick \
         {checkpoint_tick} hash {}",
        head_hash.short(),
        checkpoint_hash.short()
    )]
    HeaderMismatch {
        epoch: Epoch,
        head_hash: Hash32,
        head_tick: TickNumber,
        checkpoint_epoch: Epoch,
        checkpoint_tick: TickNumber,
        checkpoint_hash: Hash32,
    },
    /// The package's WASMHash field is not the hash of its binary.
    #[error("WASMHash field does not match the binary ({})", actual.short())]
    WasmHashField { actual: Hash32 },
    /// RE-3: the money in flight is the checkpoint's budget.
    #[error("Budget {package} differs from the checkpoint's {checkpoint}")]
    Budget { package: Microcents, checkpoint: Microcents },
    /// Identity checks on: AgentIdentity absent or not the signing key.
    #[error("AgentIdentity missing or not the checkpoint's signing key")]
    IdentityNotSigningKey,
    /// Identity checks on: the agent key differs from the local history.
    #[error("identity discontinuity: agent key differs from local history")]
    IdentityDiscontinuity,
    /// Spec §5: RECOVERY_REQUIRED never accepts a handoff.
    #[error("agent is RECOVERY_REQUIRED here at {local}: the operator must recover or retire it first")]
    RecoveryRequired { local: Epoch },
    /// Defence `replay_window`: the package's epoch is below this node's.
    #[error("stale package: epoch {package} but this node holds {local}")]
    StaleEpoch { package: Epoch, local: Epoch },
    /// This node already holds the package's checkpoint at its own epoch.
    #[error("this node already holds checkpoint {tick} at {local}")]
    AlreadyHeld { tick: TickNumber, local: Epoch },
    /// The chain must move forward past the local head.
    #[error("checkpoint tick {tick} not after local head tick {local_head}")]
    NotAfterHead { tick: TickNumber, local_head: TickNumber },
}

/// The target's verdict on a package (before executor checks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    Accept,
    /// Duplicate of a package this node already accepted: confirm again.
    AlreadyAccepted,
    /// Definitive refusal; nothing changes locally.
    Refuse(Refusal),
    /// This node believed it held authority at an epoch the package does
    /// not supersede cleanly: it must fall to RECOVERY_REQUIRED, and refuse.
    Conflict {
        reason: Reason,
        detail: String,
    },
}

/// Facts about a package the judgement needs, already decoded.
#[derive(Clone, Debug)]
pub struct PackageFacts<'a> {
    pub epoch: Epoch,
    pub expiry_unix_ns: i64,
    pub checkpoint: &'a Checkpoint,
    pub checkpoint_hash: Hash32,
    pub head_tick: TickNumber,
    pub head_hash: Hash32,
    pub wasm_hash_field: &'a [u8],
    pub wasm_hash_actual: Hash32,
    pub budget: Microcents,
    pub identity: Option<PublicKey>,
    /// The issuer's clock when it wrote the envelope.
    pub issued_unix_ns: i64,
}

/// The target's clock as the judgement needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JudgeClock {
    pub now_unix_ns: i64,
    /// When this node (re)started: packages issued before are refused.
    pub started_unix_ns: i64,
}

/// Which of the judgement's defences are on (all by default). Switching
/// one off exists only so a scenario can show the attack it stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JudgeChecks {
    /// Expiry and epoch high-water marks (defence `replay_window`).
    pub replay_window: bool,
    /// Same-epoch conflict with a local claim (defence `divergence_detection`).
    pub divergence_detection: bool,
    /// Checkpoint signature, identity = signing key, local key continuity
    /// (defence `transfer_identity_checks`).
    pub identity: bool,
}

impl Default for JudgeChecks {
    fn default() -> Self {
        JudgeChecks { replay_window: true, divergence_detection: true, identity: true }
    }
}

/// Judge a package against the local view (spec §6 target checks that need
/// no executor): expiry, header/checkpoint consistency, signature, wasm
/// hash, money in flight, identity continuity, epochs.
pub fn judge_package(local: Option<&LocalView>, p: &PackageFacts<'_>, clock: JudgeClock) -> Judgement {
    judge_package_with(local, p, clock, JudgeChecks::default())
}

/// [`judge_package`] with some defences switched off (scenarios only).
pub fn judge_package_with(
    local: Option<&LocalView>,
    p: &PackageFacts<'_>,
    clock: JudgeClock,
    checks: JudgeChecks,
) -> Judgement {
    // THE JUDGEMENT ORDER (one place, in this order; issue: an unsigned
    // forged transfer once knocked a running owner over because the
    // conflict check ran before the signature check):
    //   1. duplicate of a package accepted here: confirm, change nothing;
    //   2. freshness: expiry, issued before this node (re)started;
    //   3. authenticity: signature, header = checkpoint, wasm, money,
    //      identity = signing key, identity continuity with local history;
    //   4. authority: only a verified claim reaches here; RECOVERY_REQUIRED
    //      refuses, an older or equal epoch is refused, a verified newer
    //      epoch supersedes, an equal epoch with another head is divergence;
    //   5. the chain moves forward: checkpoint tick after the local head.
    // Steps 1-3 never change local state: nothing a peer sends moves an
    // agent's authority until it has verified.
    if let Some(j) = duplicate(local, p) {
        return j;
    }
    if let Some(j) = stale_in_time(p, clock, checks) {
        return j;
    }
    if let Some(j) = unauthentic(local, p, checks) {
        return j;
    }
    if let Some(l) = local {
        if let Some(j) = authority_conflict(l, p, checks) {
            return j;
        }
        if let Some(t) = l.head_tick.filter(|t| *t >= p.checkpoint.tick) {
            return Judgement::Refuse(Refusal::NotAfterHead { tick: p.checkpoint.tick, local_head: t });
        }
    }
    Judgement::Accept
}

/// Step 1: this node holds the package's checkpoint and has moved past its
/// epoch (it assumed from it): a duplicate, confirmed again.
fn duplicate(local: Option<&LocalView>, p: &PackageFacts<'_>) -> Option<Judgement> {
    local.filter(|l| l.epoch.major > p.epoch.major && l.has_checkpoint).map(|_| Judgement::AlreadyAccepted)
}

/// Step 2: an expired package is dead whatever it says, and a node that
/// (re)started after the package was issued must not act on it (a wiped
/// node knows nothing of what it accepted before).
fn stale_in_time(p: &PackageFacts<'_>, clock: JudgeClock, checks: JudgeChecks) -> Option<Judgement> {
    if checks.replay_window && clock.now_unix_ns > p.expiry_unix_ns {
        return Some(Judgement::Refuse(Refusal::Expired {
            expiry_unix_ns: p.expiry_unix_ns,
            now_unix_ns: clock.now_unix_ns,
        }));
    }
    if p.issued_unix_ns < clock.started_unix_ns {
        return Some(Judgement::Refuse(Refusal::IssuedBeforeStart {
            issued_unix_ns: p.issued_unix_ns,
            started_unix_ns: clock.started_unix_ns,
        }));
    }
    None
}

/// Step 3: everything that proves the package is the agent's own, signed
/// checkpoint, consistent with its header and with the local history.
fn unauthentic(local: Option<&LocalView>, p: &PackageFacts<'_>, checks: JudgeChecks) -> Option<Judgement> {
    let c = p.checkpoint;
    let refuse = |why: Refusal| Some(Judgement::Refuse(why));
    if checks.identity && c.seal.is_none() {
        return refuse(Refusal::Unsigned { version: c.version });
    }
    if let (true, Err(e)) = (checks.identity, c.verify_signature()) {
        return refuse(e.into());
    }
    if c.epoch != p.epoch || c.tick != p.head_tick || p.checkpoint_hash != p.head_hash {
        return refuse(Refusal::HeaderMismatch {
            epoch: p.epoch,
            head_hash: p.head_hash,
            head_tick: p.head_tick,
            checkpoint_epoch: c.epoch,
            checkpoint_tick: c.tick,
            checkpoint_hash: p.checkpoint_hash,
        });
    }
    if p.wasm_hash_field != p.wasm_hash_actual.0.as_slice() {
        return refuse(Refusal::WasmHashField { actual: p.wasm_hash_actual });
    }
    if let Err(e) = c.check_wasm(&p.wasm_hash_actual) {
        return refuse(e.into());
    }
    if p.budget != c.budget {
        return refuse(Refusal::Budget { package: p.budget, checkpoint: c.budget });
    }
    if checks.identity && (p.identity.is_none() || p.identity.as_ref() != c.agent_key()) {
        return refuse(Refusal::IdentityNotSigningKey);
    }
    if checks.identity && local.is_some_and(|l| l.agent_key.is_some() && l.agent_key.as_ref() != c.agent_key()) {
        return refuse(Refusal::IdentityDiscontinuity);
    }
    None
}

/// Step 4: what a verified package means for the local authority record.
fn authority_conflict(l: &LocalView, p: &PackageFacts<'_>, checks: JudgeChecks) -> Option<Judgement> {
    use AuthorityState::*;
    // Spec §5: RECOVERY_REQUIRED never accepts a handoff; the operator
    // resolves it first (recover or retire).
    if l.state == RecoveryRequired {
        return Some(Judgement::Refuse(Refusal::RecoveryRequired { local: l.epoch }));
    }
    // Defence `replay_window`: a package at or below the local epoch is
    // stale (a returning agent always carries a higher epoch). Whole
    // epochs compare: 2.0 is older than 2.3.
    if checks.replay_window && p.epoch < l.epoch {
        return Some(Judgement::Refuse(Refusal::StaleEpoch { package: p.epoch, local: l.epoch }));
    }
    if !matches!(l.state, ActiveOwner | HandoffInitiated | HandoffPending) {
        return None;
    }
    if p.epoch == l.epoch {
        if l.has_checkpoint {
            return Some(Judgement::Refuse(Refusal::AlreadyHeld { tick: p.head_tick, local: l.epoch }));
        }
        if !checks.divergence_detection {
            return None;
        }
    }
    // EI-11 (same epoch, another head) or a verified newer claim
    // (superseded): this node's claim cannot stand either way.
    let reason = if l.epoch == p.epoch { Reason::Divergence } else { Reason::Superseded };
    Some(Judgement::Conflict {
        reason,
        detail: format!("package at epoch {} while this node is {} at {}", p.epoch, l.state, l.epoch),
    })
}

pub use crate::manifest::MigrationPolicy;

/// Read `migration_policy` from a manifest with the one, strict manifest
/// parser ([`crate::manifest::Manifest::parse`]). A manifest that is not
/// valid JSON or not a valid manifest is an error (never silently `{}`);
/// an absent policy allows migration.
pub fn migration_policy(manifest: &[u8]) -> Result<MigrationPolicy, String> {
    crate::manifest::Manifest::parse(manifest).map(|m| m.migration).map_err(|e| format!("manifest: {e}"))
}

/// Target-side price check: may this agent move to a node charging `price`?
pub fn check_price_policy(manifest: &[u8], price: Microcents) -> Result<(), String> {
    let p = migration_policy(manifest)?;
    if !p.enabled {
        return Err("migration disabled by the agent's migration_policy".into());
    }
    if let Some(max) = p.max_price_per_second.filter(|m| *m > 0)
        && price.0 > max
    {
        return Err(format!("price {} above the agent's max_price_per_second {max}", price.0));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now(s: u64) -> Now {
        Now { mono_ns: s * 1_000_000_000, unix_ns: 1_000_000_000_000 + (s * 1_000_000_000) as i64 }
    }

    fn started() -> SourceHandoff {
        let (mut m, a) = SourceHandoff::start(
            AgentId::new("x").unwrap(),
            NodeId::new("b").unwrap(),
            Epoch::new(1, 2),
            MigrationConfig::default(),
        );
        assert_eq!(a[2], Action::SealCheckpoint);
        let a = m.handle(now(0), 7, Input::Sealed { tick: TickNumber(3), hash: Hash32::of(b"c") });
        assert!(matches!(a[1], Action::SendPackage { attempt: 1, nonce: 7, .. }), "{a:?}");
        m
    }

    fn last_outcome(a: &[Action]) -> Option<&Outcome> {
        a.iter().rev().find_map(|x| if let Action::Finished(o) = x { Some(o) } else { None })
    }

    #[test]
    fn lost_send_and_reply_timeout_are_ambiguous() {
        let mut m = started();
        let a =
            m.handle(now(1), 0, Input::SendFailed { attempt: 1, failure: SendFailure::Lost, error: "closed".into() });
        assert!(last_outcome(&a).unwrap().is_ambiguous());
        assert!(a.contains(&Action::Transition { to: AuthorityState::RecoveryRequired, reason: Reason::Ambiguous }));
        let mut m = started();
        let a = m.handle(now(9), 0, Input::Timer(HandoffTimer::ReplyDeadline { attempt: 1 }));
        assert!(last_outcome(&a).unwrap().is_ambiguous());
    }

    #[test]
    fn unreachable_retries_with_capped_backoff_then_gives_up_on_source() {
        let mut m = started();
        let cfg = MigrationConfig::default();
        for attempt in 1..cfg.max_attempts {
            let a = m.handle(
                now(1),
                u64::MAX,
                Input::SendFailed { attempt, failure: SendFailure::Unreachable, error: "down".into() },
            );
            let Action::StartTimer { timer, at_mono_ns } = a[0] else { panic!("{a:?}") };
            assert_eq!(timer, HandoffTimer::Retry { attempt: attempt + 1 });
            assert!(at_mono_ns - now(1).mono_ns <= cfg.backoff_cap_ns);
            let a = m.handle(now(2), 1, Input::Timer(timer));
            assert!(matches!(a[0], Action::SendPackage { .. }));
        }
        let a = m.handle(
            now(3),
            0,
            Input::SendFailed { attempt: cfg.max_attempts, failure: SendFailure::Unreachable, error: "down".into() },
        );
        assert!(matches!(last_outcome(&a), Some(Outcome::FailedBeforeSend(_))));
        assert_eq!(a[0], Action::Transition { to: AuthorityState::ActiveOwner, reason: Reason::HandoffAborted });
    }

    #[test]
    fn refusal_waits_for_package_expiry_then_resumes() {
        let mut m = started();
        let reply = ReplyView { success: false, error: Some("price".into()), target_epoch: Epoch::default() };
        let a = m.handle(now(1), 0, Input::Reply { attempt: 1, reply });
        assert!(matches!(a[..], [Action::StartTimer { timer: HandoffTimer::PackageExpired, .. }]));
        let a = m.handle(now(9), 0, Input::Timer(HandoffTimer::PackageExpired));
        assert_eq!(last_outcome(&a), Some(&Outcome::Refused("price".into())));
    }

    #[test]
    fn refusal_from_a_target_with_a_newer_claim_is_ambiguous() {
        let mut m = started();
        let reply = ReplyView { success: false, error: None, target_epoch: Epoch::new(2, 0) };
        let a = m.handle(now(1), 0, Input::Reply { attempt: 1, reply });
        assert!(last_outcome(&a).unwrap().is_ambiguous());
    }

    #[test]
    fn stale_inputs_produce_no_actions() {
        let mut m = started();
        let reply = ReplyView { success: true, error: None, target_epoch: Epoch::new(2, 0) };
        assert!(m.handle(now(1), 0, Input::Reply { attempt: 2, reply: reply.clone() }).is_empty());
        assert!(m.handle(now(1), 0, Input::Timer(HandoffTimer::Retry { attempt: 1 })).is_empty());
        let a = m.handle(now(1), 0, Input::Reply { attempt: 1, reply: reply.clone() });
        assert_eq!(last_outcome(&a), Some(&Outcome::Completed));
        assert!(m.handle(now(1), 0, Input::Reply { attempt: 1, reply }).is_empty(), "duplicate reply");
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let cfg = MigrationConfig::default();
        assert!((50_000_000..=100_000_000).contains(&cfg.backoff_ns(2, 12345)));
        for attempt in 2..80 {
            for r in [0, 1, u64::MAX] {
                assert!(cfg.backoff_ns(attempt, r) <= cfg.backoff_cap_ns);
            }
        }
        assert_ne!(cfg.backoff_ns(3, 1), cfg.backoff_ns(3, 2));
    }

    #[test]
    fn price_policy_from_manifest() {
        let m = br#"{"migration_policy":{"enabled":true,"max_price_per_second":100}}"#;
        assert!(check_price_policy(m, Microcents(100)).is_ok());
        assert!(check_price_policy(m, Microcents(101)).is_err());
        assert!(check_price_policy(br#"{"migration_policy":{"enabled":false}}"#, Microcents(0)).is_err());
        assert!(check_price_policy(b"{}", Microcents(i64::MAX)).is_ok());
        assert!(check_price_policy(b"not json", Microcents(0)).is_err());
    }
}

/// The target's judgement: the order of its checks and the defects outside
/// testing found (issue 11 §6, issue 12 §1).
#[cfg(test)]
mod judgement_tests {
    use super::*;
    use crate::checkpoint::CheckpointBody;
    use crate::identity::Keypair;
    use AuthorityState::*;

    const NOW: i64 = 1_000_000;

    fn key() -> Keypair {
        Keypair::from_seed([7; 32])
    }

    fn checkpoint(epoch: Epoch, tick: u64, k: &Keypair) -> Checkpoint {
        CheckpointBody {
            budget: Microcents(100),
            price_per_second: Microcents(1),
            tick: TickNumber(tick),
            wasm_hash: Hash32::of(b"wasm"),
            epoch,
            lease_expiry_ns: 0,
            prev_hash: Hash32::ZERO,
            state: vec![1, 2, 3],
        }
        .sign(k)
    }

    fn facts<'a>(c: &'a Checkpoint, wasm: &'a [u8], k: &Keypair) -> PackageFacts<'a> {
        let hash = Hash32::of(&c.encode());
        PackageFacts {
            epoch: c.epoch,
            expiry_unix_ns: NOW + 10,
            checkpoint: c,
            checkpoint_hash: hash,
            head_tick: c.tick,
            head_hash: hash,
            wasm_hash_field: wasm,
            wasm_hash_actual: Hash32::of(b"wasm"),
            budget: c.budget,
            identity: Some(k.public()),
            issued_unix_ns: NOW - 10,
        }
    }

    fn view(state: AuthorityState, epoch: Epoch) -> LocalView {
        LocalView {
            state,
            epoch,
            head_tick: Some(TickNumber(3)),
            agent_key: Some(key().public()),
            has_checkpoint: false,
        }
    }

    fn clock() -> JudgeClock {
        JudgeClock { now_unix_ns: NOW, started_unix_ns: 0 }
    }

    fn judge(local: Option<&LocalView>, p: &PackageFacts<'_>) -> Judgement {
        judge_package(local, p, clock())
    }

    fn refused(j: &Judgement) -> bool {
        matches!(j, Judgement::Refuse(_))
    }

    #[test]
    fn a_verified_newer_package_for_an_absent_agent_is_accepted() {
        let k = key();
        let c = checkpoint(Epoch::new(2, 0), 9, &k);
        let wasm = Hash32::of(b"wasm").0;
        assert_eq!(judge(None, &facts(&c, &wasm, &k)), Judgement::Accept);
    }

    #[test]
    fn an_owner_refuses_a_package_at_its_own_or_an_older_epoch() {
        let k = key();
        let wasm = Hash32::of(b"wasm").0;
        let local = view(ActiveOwner, Epoch::new(2, 3));
        // Older major, older generation of the same major (2.0 < 2.3): stale.
        for e in [Epoch::new(1, 9), Epoch::new(2, 0), Epoch::new(2, 2)] {
            let c = checkpoint(e, 9, &k);
            let j = judge(Some(&local), &facts(&c, &wasm, &k));
            assert!(refused(&j), "{e}: {j:?}");
        }
        // The same epoch with a checkpoint it already holds: refused.
        let c = checkpoint(Epoch::new(2, 3), 9, &k);
        let held = LocalView { has_checkpoint: true, ..local.clone() };
        assert!(refused(&judge(Some(&held), &facts(&c, &wasm, &k))));
        // The same epoch with another head: divergence (EI-11), not adoption.
        let j = judge(Some(&local), &facts(&c, &wasm, &k));
        assert!(matches!(j, Judgement::Conflict { reason: Reason::Divergence, .. }), "{j:?}");
        // Only a verified newer epoch supersedes.
        let c = checkpoint(Epoch::new(3, 0), 9, &k);
        let j = judge(Some(&local), &facts(&c, &wasm, &k));
        assert!(matches!(j, Judgement::Conflict { reason: Reason::Superseded, .. }), "{j:?}");
    }

    #[test]
    fn recovery_required_never_accepts_a_handoff() {
        let k = key();
        let wasm = Hash32::of(b"wasm").0;
        let c = checkpoint(Epoch::new(5, 0), 9, &k);
        for local_epoch in [Epoch::new(1, 0), Epoch::new(5, 0), Epoch::new(9, 0)] {
            let j = judge(Some(&view(RecoveryRequired, local_epoch)), &facts(&c, &wasm, &k));
            assert!(matches!(&j, Judgement::Refuse(r) if r.to_string().contains("RECOVERY_REQUIRED")), "{j:?}");
        }
    }

    #[test]
    fn nothing_unverified_reaches_the_authority_checks() {
        // Issue 12: an anonymous peer sent a transfer with a broken checkpoint
        // signature and a lower epoch; the owner fell to RECOVERY_REQUIRED.
        let k = key();
        let wasm = Hash32::of(b"wasm").0;
        let local = view(ActiveOwner, Epoch::new(2, 3));
        for epoch in [Epoch::new(2, 0), Epoch::new(2, 3), Epoch::new(7, 0)] {
            let c = checkpoint(epoch, 9, &k);
            let mut bytes = c.encode();
            let last = bytes.len() - 1;
            bytes[last] ^= 1; // state byte: the signature no longer holds
            let forged = Checkpoint::decode(&bytes).unwrap();
            let mut p = facts(&forged, &wasm, &k);
            p.checkpoint_hash = Hash32::of(&bytes);
            p.head_hash = p.checkpoint_hash;
            assert!(refused(&judge(Some(&local), &p)), "forged at {epoch}");
            // Signed by another key, claiming to be the agent.
            let other = Keypair::from_seed([9; 32]);
            let c = checkpoint(epoch, 9, &other);
            assert!(refused(&judge(Some(&local), &facts(&c, &wasm, &other))), "other key at {epoch}");
            // Unsigned header lies: header epoch differs from the checkpoint's.
            let c = checkpoint(Epoch::new(1, 0), 9, &k);
            let mut p = facts(&c, &wasm, &k);
            p.epoch = epoch;
            assert!(refused(&judge(Some(&local), &p)), "header epoch {epoch}");
        }
    }

    #[test]
    fn a_node_refuses_a_package_issued_before_it_started() {
        // Issue 11 §2: a wiped node accepted a replayed, unexpired package.
        let k = key();
        let wasm = Hash32::of(b"wasm").0;
        let c = checkpoint(Epoch::new(2, 0), 9, &k);
        let mut p = facts(&c, &wasm, &k);
        let started = JudgeClock { now_unix_ns: NOW, started_unix_ns: NOW - 5 };
        p.issued_unix_ns = NOW - 6;
        assert!(refused(&judge_package(None, &p, started)));
        p.issued_unix_ns = NOW - 5;
        assert_eq!(judge_package(None, &p, started), Judgement::Accept);
    }

    #[test]
    fn a_retired_record_accepts_only_a_returning_agent_with_a_higher_epoch() {
        let k = key();
        let wasm = Hash32::of(b"wasm").0;
        let local = view(Retired, Epoch::new(2, 1));
        let back = checkpoint(Epoch::new(4, 0), 9, &k);
        assert_eq!(judge(Some(&local), &facts(&back, &wasm, &k)), Judgement::Accept);
        let stale = checkpoint(Epoch::new(2, 0), 9, &k);
        assert!(refused(&judge(Some(&local), &facts(&stale, &wasm, &k))));
    }

    /// The refusal texts reach the wire (`AgentStarted.Error`) and the
    /// traces: typing them must not change a byte of what they said as
    /// strings (the formats below are the ones the judgement used before).
    #[test]
    fn refusal_texts_are_the_judgements_former_strings() {
        let (a, b) = (Hash32::of(b"a"), Hash32::of(b"b"));
        let cases = [
            (Refusal::Expired { expiry_unix_ns: 5, now_unix_ns: 6 }, "package expired at 5 (now 6)".to_string()),
            (
                Refusal::IssuedBeforeStart { issued_unix_ns: 1, started_unix_ns: 2 },
                "package issued at 1 before this node started at 2".into(),
            ),
            (Refusal::Unsigned { version: 3 }, "checkpoint v3 carries no signature".into()),
            (
                Refusal::HeaderMismatch {
                    epoch: Epoch::new(3, 2),
                    head_hash: a,
                    head_tick: TickNumber(11),
                    checkpoint_epoch: Epoch::new(3, 1),
                    checkpoint_tick: TickNumber(10),
                    checkpoint_hash: b,
                },
                format!(
                    "header claims epoch 3.2 head {}@11 but checkpoint is epoch 3.1 tick 10 hash {}",
                    a.short(),
                    b.short()
                ),
            ),
            (Refusal::WasmHashField { actual: a }, format!("WASMHash field does not match the binary ({})", a.short())),
            (
                Refusal::Budget { package: Microcents(1), checkpoint: Microcents(2) },
                format!("Budget {} differs from the checkpoint's {}", Microcents(1), Microcents(2)),
            ),
            (Refusal::IdentityNotSigningKey, "AgentIdentity missing or not the checkpoint's signing key".into()),
            (Refusal::IdentityDiscontinuity, "identity discontinuity: agent key differs from local history".into()),
            (
                Refusal::RecoveryRequired { local: Epoch::new(2, 1) },
                "agent is RECOVERY_REQUIRED here at 2.1: the operator must recover or retire it first".into(),
            ),
            (
                Refusal::StaleEpoch { package: Epoch::new(2, 0), local: Epoch::new(2, 3) },
                "stale package: epoch 2.0 but this node holds 2.3".into(),
            ),
            (
                Refusal::AlreadyHeld { tick: TickNumber(10), local: Epoch::new(3, 1) },
                "this node already holds checkpoint 10 at 3.1".into(),
            ),
            (
                Refusal::NotAfterHead { tick: TickNumber(10), local_head: TickNumber(12) },
                "checkpoint tick 10 not after local head tick 12".into(),
            ),
        ];
        for (refusal, text) in cases {
            assert_eq!(refusal.to_string(), text, "{refusal:?}");
        }
    }
}
