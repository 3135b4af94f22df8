//! The effect-intent log: side effects (payments, http calls that change
//! something) written down *before* they happen, with a stable idempotency
//! key, and walked through a state machine that never loses track of one.
//!
//! ```text
//!   record ──▶ Recorded ──begin──▶ InFlight ──confirm──▶ Confirmed
//!                 │  ▲                │
//!                 │  └─────fail───────┤  (refused before acting: safe to retry)
//!                 │                   └──unknown──▶ Unresolved ──confirm──▶ Confirmed
//!                 └──────compensate──────────────────────┴──compensate──▶ Compensated
//! ```
//!
//! * `Recorded`: decided, not attempted. Record in one tick, act in a later
//!   one: the intent is then in a checkpoint before anything happens.
//! * `InFlight`: attempted in this tick. Within the tick the agent ends it
//!   with `confirm` (it happened), `fail` (it was refused before acting,
//!   e.g. `PayError::Refused`), or `unknown` (the outcome is unknowable
//!   now: a timeout, a network error after sending). An intent still
//!   `InFlight` when a tick starts was left open by a tick that ended
//!   early; [`IntentLog::open_in_flight`] turns those into `Unresolved`.
//! * `Unresolved`: may or may not have happened. Reconcile with the other
//!   side by the intent's key, then `confirm` or `compensate`.
//! * `Confirmed` and `Compensated` are final: no intent is ever both (a
//!   refund of a confirmed payment is a new intent).
//!
//! Deterministic and replay-safe: every transition is an explicit call in
//! a tick, made from state and hostcall answers only; nothing changes on
//! checkpoint or resume. The node may lose the ticks after its last
//! checkpoint in a crash and run them again, so an effect can be attempted
//! twice across a crash (at least once); the [`Intent::key`] is the same
//! both times, so the receiving side can deduplicate (put it in the
//! payment memo or an `Idempotency-Key` header).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};

/// Where an intent is in its life.
///
/// ```
/// assert!(igor_agent::intent::Status::Compensated.is_final());
/// ```
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Decided, not attempted.
    Recorded,
    /// Being attempted in this tick.
    InFlight,
    /// It happened.
    Confirmed,
    /// It may or may not have happened.
    Unresolved,
    /// It was called off or undone.
    Compensated,
}

impl Status {
    /// `Confirmed` or `Compensated`.
    ///
    /// ```
    /// assert!(!igor_agent::intent::Status::Unresolved.is_final());
    /// ```
    pub fn is_final(self) -> bool {
        matches!(self, Status::Confirmed | Status::Compensated)
    }
}

/// One intended side effect.
///
/// ```
/// let mut log = igor_agent::intent::IntentLog::default();
/// let id = log.record("pay", b"alice:10".to_vec());
/// assert_eq!(log.get(id).unwrap().key(), "intent-1");
/// ```
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    /// Sequence number, from 1.
    pub id: u64,
    /// What kind of effect (the agent's own label).
    pub kind: String,
    /// What to do (the agent's own encoding).
    pub payload: Vec<u8>,
    /// Where it is.
    pub status: Status,
    /// Times it went `InFlight`.
    pub attempts: u32,
    /// What confirmed it (e.g. a payment receipt) or why it was compensated.
    pub outcome: Vec<u8>,
}

impl Intent {
    /// The idempotency key: `intent-<id>`, the same on every attempt.
    ///
    /// ```
    /// let mut log = igor_agent::intent::IntentLog::default();
    /// let id = log.record("x", vec![]);
    /// assert_eq!(log.get(id).unwrap().key(), format!("intent-{id}"));
    /// ```
    pub fn key(&self) -> String {
        format!("intent-{}", self.id)
    }
}

/// A transition the state machine does not allow.
///
/// ```
/// use igor_agent::intent::{IntentLog, IntentError, Status};
/// let mut log = IntentLog::default();
/// let id = log.record("x", vec![]);
/// assert_eq!(log.confirm(id, vec![]), Err(IntentError::BadTransition { id, from: Status::Recorded, op: "confirm" }));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntentError {
    /// No intent with that id (never recorded, or pruned).
    Unknown(u64),
    /// `op` is not allowed from `from`.
    BadTransition {
        /// The intent.
        id: u64,
        /// Its status.
        from: Status,
        /// The refused operation.
        op: &'static str,
    },
}

impl fmt::Display for IntentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntentError::Unknown(id) => write!(f, "intent {id}: unknown"),
            IntentError::BadTransition { id, from, op } => write!(f, "intent {id}: cannot {op} from {from:?}"),
        }
    }
}

impl core::error::Error for IntentError {}

/// The log: part of the agent's state (serde), so it is checkpointed,
/// migrated and replayed with it.
///
/// ```
/// use igor_agent::intent::{IntentLog, Status};
/// let mut log = IntentLog::default();
/// let id = log.record("pay", b"alice:10".to_vec());   // tick k
/// log.begin(id).unwrap();                             // tick k+1 ...
/// log.confirm(id, b"receipt".to_vec()).unwrap();      // ... same tick
/// assert_eq!(log.get(id).unwrap().status, Status::Confirmed);
/// ```
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct IntentLog {
    next: u64,
    intents: BTreeMap<u64, Intent>,
}

impl IntentLog {
    /// Write down a new intent; returns its id.
    ///
    /// ```
    /// let mut log = igor_agent::intent::IntentLog::default();
    /// assert_eq!(log.record("a", vec![]), 1);
    /// assert_eq!(log.record("b", vec![]), 2);
    /// ```
    pub fn record(&mut self, kind: &str, payload: Vec<u8>) -> u64 {
        self.next += 1;
        let id = self.next;
        self.intents.insert(
            id,
            Intent { id, kind: kind.into(), payload, status: Status::Recorded, attempts: 0, outcome: Vec::new() },
        );
        id
    }

    /// One intent.
    ///
    /// ```
    /// assert!(igor_agent::intent::IntentLog::default().get(1).is_none());
    /// ```
    pub fn get(&self, id: u64) -> Option<&Intent> {
        self.intents.get(&id)
    }

    /// Every intent with `status`, oldest first.
    ///
    /// ```
    /// use igor_agent::intent::{IntentLog, Status};
    /// let mut log = IntentLog::default();
    /// log.record("a", vec![]);
    /// assert_eq!(log.with_status(Status::Recorded).count(), 1);
    /// ```
    pub fn with_status(&self, status: Status) -> impl Iterator<Item = &Intent> {
        self.intents.values().filter(move |i| i.status == status)
    }

    /// The oldest `Recorded` intent's id.
    ///
    /// ```
    /// let mut log = igor_agent::intent::IntentLog::default();
    /// let id = log.record("a", vec![]);
    /// assert_eq!(log.next_recorded(), Some(id));
    /// ```
    pub fn next_recorded(&self) -> Option<u64> {
        self.with_status(Status::Recorded).next().map(|i| i.id)
    }

    fn step(&mut self, id: u64, op: &'static str, from: &[Status], to: Status) -> Result<&mut Intent, IntentError> {
        let intent = self.intents.get_mut(&id).ok_or(IntentError::Unknown(id))?;
        if !from.contains(&intent.status) {
            return Err(IntentError::BadTransition { id, from: intent.status, op });
        }
        intent.status = to;
        Ok(intent)
    }

    /// `Recorded` → `InFlight`: about to act, in this tick.
    ///
    /// ```
    /// let mut log = igor_agent::intent::IntentLog::default();
    /// let id = log.record("a", vec![]);
    /// log.begin(id).unwrap();
    /// assert!(log.begin(id).is_err());
    /// ```
    pub fn begin(&mut self, id: u64) -> Result<&Intent, IntentError> {
        let i = self.step(id, "begin", &[Status::Recorded], Status::InFlight)?;
        i.attempts = i.attempts.saturating_add(1);
        Ok(i)
    }

    /// `InFlight` or `Unresolved` → `Confirmed`, with what proves it.
    ///
    /// ```
    /// let mut log = igor_agent::intent::IntentLog::default();
    /// let id = log.record("a", vec![]);
    /// log.begin(id).unwrap();
    /// log.confirm(id, b"ok".to_vec()).unwrap();
    /// assert_eq!(log.get(id).unwrap().outcome, b"ok");
    /// ```
    pub fn confirm(&mut self, id: u64, outcome: Vec<u8>) -> Result<(), IntentError> {
        self.step(id, "confirm", &[Status::InFlight, Status::Unresolved], Status::Confirmed)?.outcome = outcome;
        Ok(())
    }

    /// `InFlight` → `Recorded`: refused before anything happened; may be
    /// attempted again.
    ///
    /// ```
    /// let mut log = igor_agent::intent::IntentLog::default();
    /// let id = log.record("a", vec![]);
    /// log.begin(id).unwrap();
    /// log.fail(id).unwrap();
    /// assert_eq!(log.next_recorded(), Some(id));
    /// ```
    pub fn fail(&mut self, id: u64) -> Result<(), IntentError> {
        self.step(id, "fail", &[Status::InFlight], Status::Recorded).map(|_| ())
    }

    /// `InFlight` → `Unresolved`: the outcome cannot be known now.
    ///
    /// ```
    /// let mut log = igor_agent::intent::IntentLog::default();
    /// let id = log.record("a", vec![]);
    /// log.begin(id).unwrap();
    /// log.unknown(id).unwrap();
    /// assert_eq!(log.get(id).unwrap().status, igor_agent::intent::Status::Unresolved);
    /// ```
    pub fn unknown(&mut self, id: u64) -> Result<(), IntentError> {
        self.step(id, "mark unknown", &[Status::InFlight], Status::Unresolved).map(|_| ())
    }

    /// `Recorded` or `Unresolved` → `Compensated`: called off, or undone
    /// after reconciling. A `Confirmed` intent cannot be compensated.
    ///
    /// ```
    /// let mut log = igor_agent::intent::IntentLog::default();
    /// let id = log.record("a", vec![]);
    /// log.compensate(id, b"cancelled".to_vec()).unwrap();
    /// assert!(log.confirm(id, vec![]).is_err());
    /// ```
    pub fn compensate(&mut self, id: u64, why: Vec<u8>) -> Result<(), IntentError> {
        self.step(id, "compensate", &[Status::Recorded, Status::Unresolved], Status::Compensated)?.outcome = why;
        Ok(())
    }

    /// Call at the start of a tick: an intent still `InFlight` was left
    /// open by a tick that ended without settling it, so its outcome is
    /// unknown: it becomes `Unresolved`. Returns how many.
    ///
    /// ```
    /// let mut log = igor_agent::intent::IntentLog::default();
    /// let id = log.record("a", vec![]);
    /// log.begin(id).unwrap();
    /// assert_eq!(log.open_in_flight(), 1);
    /// ```
    pub fn open_in_flight(&mut self) -> usize {
        let mut n = 0;
        for i in self.intents.values_mut().filter(|i| i.status == Status::InFlight) {
            i.status = Status::Unresolved;
            n += 1;
        }
        n
    }

    /// Drop final intents, keeping the newest `keep` of them (the state
    /// stays bounded). Ids are never reused.
    ///
    /// ```
    /// use igor_agent::intent::IntentLog;
    /// let mut log = IntentLog::default();
    /// for _ in 0..5 { let id = log.record("a", vec![]); log.compensate(id, vec![]).unwrap(); }
    /// log.prune(2);
    /// assert_eq!(log.len(), 2);
    /// assert_eq!(log.record("b", vec![]), 6);
    /// ```
    pub fn prune(&mut self, keep: usize) {
        let finals: Vec<u64> = self.intents.values().filter(|i| i.status.is_final()).map(|i| i.id).collect();
        for id in finals.iter().take(finals.len().saturating_sub(keep)) {
            self.intents.remove(id);
        }
    }

    /// Intents held.
    ///
    /// ```
    /// assert_eq!(igor_agent::intent::IntentLog::default().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.intents.len()
    }

    /// No intents held.
    ///
    /// ```
    /// assert!(igor_agent::intent::IntentLog::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.intents.is_empty()
    }
}
