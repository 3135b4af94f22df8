//! Who may do what with one agent on one node (spec §5): the five authority
//! states, the permission matrix as the one function every caller asks
//! ([`permits`]), and the transition table. A forbidden transition is an
//! error that *also* moves the agent to `RECOVERY_REQUIRED` (EI-7 fail-stop),
//! never a silent no-op. Pure data: no clock, no disk, no randomness.

use crate::units::Epoch;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The authority a node holds over one agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthorityState {
    ActiveOwner,
    HandoffInitiated,
    HandoffPending,
    Retired,
    RecoveryRequired,
}

impl fmt::Display for AuthorityState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthorityState::ActiveOwner => "ACTIVE_OWNER",
            AuthorityState::HandoffInitiated => "HANDOFF_INITIATED",
            AuthorityState::HandoffPending => "HANDOFF_PENDING",
            AuthorityState::Retired => "RETIRED",
            AuthorityState::RecoveryRequired => "RECOVERY_REQUIRED",
        })
    }
}

/// Which side of a handoff this node is on. Only meaningful in the handoff
/// states; an owner is a `Source` of any handoff it may start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Source,
    Target,
}

/// What a caller wants to do with an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Tick,
    /// A routine checkpoint (cadence, budget exhausted, lease renewal).
    NewCheckpoint,
    /// The one fresh checkpoint a source commits in `HANDOFF_INITIATED` to
    /// seal what it hands over (spec §6). The §5 table forbids *new*
    /// checkpoints in that state; this is the single, named exception, kept
    /// in the matrix so that the matrix stays the one source of truth.
    SealHandoff,
    StartHandoff,
    AcceptHandoff,
    SideEffects,
}

/// The permission matrix of spec §5, plus [`Op::SealHandoff`]. Every caller
/// asks this function; nobody re-derives a permission from the state.
pub fn permits(state: AuthorityState, role: Role, op: Op) -> bool {
    use AuthorityState::*;
    match (state, op) {
        (ActiveOwner, Op::Tick | Op::NewCheckpoint | Op::StartHandoff | Op::SideEffects) => true,
        (HandoffInitiated, Op::SealHandoff) => role == Role::Source,
        (HandoffPending, Op::AcceptHandoff) => role == Role::Target,
        _ => false,
    }
}

/// Why authority changed. Part of every transition event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Operator deployed a new agent here (genesis owner).
    Deployed,
    /// Operator asked to migrate the agent (source).
    HandoffStarted,
    /// Source committed the handoff checkpoint and gave up authority.
    Relinquished,
    /// Target received a package and is validating it.
    PackageReceived,
    /// Target validated and stored the package and took authority.
    Assumed,
    /// Source received the target's confirmation.
    Confirmed,
    /// The handoff provably did not happen (refused, never delivered, or the
    /// handoff checkpoint could not be written): the agent stays here.
    HandoffAborted,
    /// Operator shut the agent down here.
    Shutdown,
    /// The outcome of a transfer is unknown (lost reply, timeout after send).
    Ambiguous,
    /// The lease ran out past its grace period.
    LeaseExpired,
    /// A peer holds the agent under a newer epoch.
    Superseded,
    /// EI-11: two different heads for one epoch.
    Divergence,
    /// The node restarted in a state it cannot trust (handoff in flight,
    /// stale or damaged checkpoint).
    RestartInDoubt,
    /// A local fault (disk, executor) left the agent's state unknown.
    Fault,
    /// A forbidden transition was attempted (EI-7).
    Violation,
    /// Operator recovery from a named anchor checkpoint.
    Recovery,
    /// UNSAFE test mode: the node recovered itself on lease expiry.
    UnsafeSelfRecovery,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string));
        f.write_str(s.as_deref().unwrap_or("?"))
    }
}

/// The transition table of spec §5, made total. Besides the listed arrows
/// it allows the abort arrows a handoff needs so that "a failed or refused
/// transfer leaves the agent on the source" (§6): `HANDOFF_INITIATED ->
/// ACTIVE_OWNER` (nothing relinquished yet) and `HANDOFF_PENDING ->
/// ACTIVE_OWNER` for the *source* only with [`Reason::HandoffAborted`],
/// which the migration machine gives only for provably negative outcomes.
pub fn allowed(from: AuthorityState, role: Role, to: AuthorityState, reason: &Reason) -> bool {
    use AuthorityState::*;
    match (from, to) {
        (_, RecoveryRequired) => true,
        (ActiveOwner, HandoffInitiated) => role == Role::Source,
        (HandoffInitiated, HandoffPending) => role == Role::Source,
        (HandoffInitiated, ActiveOwner) => *reason == Reason::HandoffAborted,
        (HandoffPending, ActiveOwner) => match role {
            Role::Target => *reason == Reason::Assumed,
            Role::Source => *reason == Reason::HandoffAborted,
        },
        (HandoffPending, Retired) => role == Role::Source && *reason == Reason::Confirmed,
        (ActiveOwner, Retired) => *reason == Reason::Shutdown,
        (RecoveryRequired, ActiveOwner) => matches!(reason, Reason::Recovery | Reason::UnsafeSelfRecovery),
        _ => false,
    }
}

/// A forbidden transition. The authority is already `RECOVERY_REQUIRED`
/// when the caller sees this.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("EI-7: forbidden authority transition {from} -> {to} ({reason}, role {role:?}); now RECOVERY_REQUIRED")]
pub struct Violation {
    pub from: AuthorityState,
    pub to: AuthorityState,
    pub role: Role,
    pub reason: Reason,
}

/// A completed transition, for the event stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: AuthorityState,
    pub to: AuthorityState,
    pub epoch: Epoch,
    pub reason: Reason,
}

/// One node's authority over one agent: state, role and epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authority {
    state: AuthorityState,
    role: Role,
    epoch: Epoch,
}

impl Authority {
    /// The genesis owner of a freshly deployed agent: epoch (1, 0).
    pub fn genesis() -> Self {
        Authority { state: AuthorityState::ActiveOwner, role: Role::Source, epoch: Epoch::new(1, 0) }
    }

    /// A target that received a package sealed at `source_epoch`: pending,
    /// at the source's epoch until it assumes.
    pub fn incoming(source_epoch: Epoch) -> Self {
        Authority { state: AuthorityState::HandoffPending, role: Role::Target, epoch: source_epoch }
    }

    /// Rebuild from a persisted record (restart).
    pub fn restore(state: AuthorityState, role: Role, epoch: Epoch) -> Self {
        Authority { state, role, epoch }
    }

    pub fn state(&self) -> AuthorityState {
        self.state
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Ask the permission matrix.
    pub fn permits(&self, op: Op) -> bool {
        permits(self.state, self.role, op)
    }

    /// Move to `to`. A forbidden move is fail-stop: the state becomes
    /// `RECOVERY_REQUIRED` and the violation is returned (EI-7).
    pub fn transition(&mut self, to: AuthorityState, reason: Reason) -> Result<Transition, Violation> {
        let from = self.state;
        if !allowed(from, self.role, to, &reason) {
            self.state = AuthorityState::RecoveryRequired;
            return Err(Violation { from, to, role: self.role, reason });
        }
        self.state = to;
        if to == AuthorityState::HandoffInitiated {
            self.role = Role::Source;
        }
        Ok(Transition { from, to, epoch: self.epoch, reason })
    }

    /// Target side: take authority under epoch (major+1, 0) of the package.
    pub fn assume(&mut self) -> Result<Transition, Violation> {
        let t = self.transition(AuthorityState::ActiveOwner, Reason::Assumed)?;
        self.epoch = Epoch::new(self.epoch.major.saturating_add(1), 0);
        self.role = Role::Source;
        Ok(Transition { epoch: self.epoch, ..t })
    }

    /// Explicit recovery (or the unsafe self-recovery test mode): one owner
    /// again, under a major strictly above every major this node knows of.
    pub fn recover(&mut self, reason: Reason, highest_known_major: u64) -> Result<Transition, Violation> {
        debug_assert!(matches!(reason, Reason::Recovery | Reason::UnsafeSelfRecovery));
        let t = self.transition(AuthorityState::ActiveOwner, reason)?;
        self.epoch = Epoch::new(highest_known_major.max(self.epoch.major).saturating_add(1), 0);
        self.role = Role::Source;
        Ok(Transition { epoch: self.epoch, ..t })
    }

    /// Lease renewal: same owner, generation + 1 (spec §5). Only an owner
    /// renews; the caller checks [`Op::NewCheckpoint`] first.
    pub fn renew(&mut self) -> Epoch {
        debug_assert_eq!(self.state, AuthorityState::ActiveOwner, "only an owner renews its lease");
        self.epoch = Epoch::new(self.epoch.major, self.epoch.generation.saturating_add(1));
        self.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::AuthorityState::*;
    use super::*;

    const STATES: [AuthorityState; 5] = [ActiveOwner, HandoffInitiated, HandoffPending, Retired, RecoveryRequired];

    #[test]
    fn matrix_matches_spec_table() {
        let yes = |s, r, op| permits(s, r, op);
        for op in [Op::Tick, Op::NewCheckpoint, Op::StartHandoff, Op::SideEffects] {
            assert!(yes(ActiveOwner, Role::Source, op));
            for s in [HandoffInitiated, HandoffPending, Retired, RecoveryRequired] {
                assert!(!yes(s, Role::Source, op) && !yes(s, Role::Target, op), "{s} {op:?}");
            }
        }
        for s in STATES {
            assert_eq!(yes(s, Role::Target, Op::AcceptHandoff), s == HandoffPending);
            assert!(!yes(s, Role::Source, Op::AcceptHandoff));
        }
        assert!(yes(HandoffInitiated, Role::Source, Op::SealHandoff));
        assert!(!yes(ActiveOwner, Role::Source, Op::SealHandoff));
    }

    #[test]
    fn forbidden_transition_is_fail_stop() {
        let mut a = Authority::genesis();
        a.transition(Retired, Reason::Shutdown).unwrap();
        let err = a.transition(ActiveOwner, Reason::Assumed).unwrap_err();
        assert_eq!((err.from, err.to), (Retired, ActiveOwner));
        assert_eq!(a.state(), RecoveryRequired);
        assert!(err.to_string().contains("RECOVERY_REQUIRED"), "{err}");
    }

    #[test]
    fn every_state_may_fall_to_recovery_and_only_recovery_leaves_it() {
        for s in STATES {
            assert!(allowed(s, Role::Source, RecoveryRequired, &Reason::Ambiguous));
        }
        for r in [Reason::Assumed, Reason::HandoffAborted, Reason::Confirmed] {
            assert!(!allowed(RecoveryRequired, Role::Target, ActiveOwner, &r));
        }
        let mut a = Authority::restore(RecoveryRequired, Role::Source, Epoch::new(3, 7));
        let t = a.recover(Reason::Recovery, 5).unwrap();
        assert_eq!(t.epoch, Epoch::new(6, 0));
    }

    #[test]
    fn target_assumes_with_next_major() {
        let mut a = Authority::incoming(Epoch::new(4, 9));
        assert!(a.permits(Op::AcceptHandoff));
        let t = a.assume().unwrap();
        assert_eq!((t.from, t.to, t.epoch), (HandoffPending, ActiveOwner, Epoch::new(5, 0)));
        assert!(a.permits(Op::Tick));
        assert_eq!(a.renew(), Epoch::new(5, 1));
    }

    #[test]
    fn source_cannot_assume_and_target_cannot_abort() {
        let mut s = Authority::genesis();
        s.transition(HandoffInitiated, Reason::HandoffStarted).unwrap();
        s.transition(HandoffPending, Reason::Relinquished).unwrap();
        assert!(s.clone().transition(ActiveOwner, Reason::Assumed).is_err());
        assert!(s.clone().transition(ActiveOwner, Reason::HandoffAborted).is_ok());
        let mut t = Authority::incoming(Epoch::new(1, 0));
        assert!(t.transition(ActiveOwner, Reason::HandoffAborted).is_err());
        assert_eq!(t.state(), RecoveryRequired);
    }

    const ROLES: [Role; 2] = [Role::Source, Role::Target];
    const OPS: [Op; 6] =
        [Op::Tick, Op::NewCheckpoint, Op::SealHandoff, Op::StartHandoff, Op::AcceptHandoff, Op::SideEffects];
    const REASONS: [Reason; 17] = [
        Reason::Deployed,
        Reason::HandoffStarted,
        Reason::Relinquished,
        Reason::PackageReceived,
        Reason::Assumed,
        Reason::Confirmed,
        Reason::HandoffAborted,
        Reason::Shutdown,
        Reason::Ambiguous,
        Reason::LeaseExpired,
        Reason::Superseded,
        Reason::Divergence,
        Reason::RestartInDoubt,
        Reason::Fault,
        Reason::Violation,
        Reason::Recovery,
        Reason::UnsafeSelfRecovery,
    ];

    /// Spec §5 permission table, written out cell by cell as the spec reads
    /// (plus the one named `SealHandoff` exception). Every (state, role, op)
    /// not listed is forbidden.
    const PERMITTED: [(AuthorityState, Role, Op); 10] = [
        (ActiveOwner, Role::Source, Op::Tick),
        (ActiveOwner, Role::Target, Op::Tick),
        (ActiveOwner, Role::Source, Op::NewCheckpoint),
        (ActiveOwner, Role::Target, Op::NewCheckpoint),
        (ActiveOwner, Role::Source, Op::StartHandoff),
        (ActiveOwner, Role::Target, Op::StartHandoff),
        (ActiveOwner, Role::Source, Op::SideEffects),
        (ActiveOwner, Role::Target, Op::SideEffects),
        (HandoffInitiated, Role::Source, Op::SealHandoff),
        (HandoffPending, Role::Target, Op::AcceptHandoff),
    ];

    #[test]
    fn every_cell_of_the_permission_matrix() {
        for s in STATES {
            for r in ROLES {
                for op in OPS {
                    let want = PERMITTED.contains(&(s, r, op));
                    assert_eq!(permits(s, r, op), want, "permits({s}, {r:?}, {op:?})");
                    assert_eq!(Authority::restore(s, r, Epoch::new(2, 3)).permits(op), want, "{s} {r:?} {op:?}");
                }
            }
        }
    }

    /// Whether spec §5 (made total for the abort arrows, see [`allowed`])
    /// allows `from -> to` for this role and reason. Rows of the table, not
    /// a copy of the match: one row per arrow with the roles and reasons
    /// that may take it.
    fn table(from: AuthorityState, role: Role, to: AuthorityState, reason: &Reason) -> bool {
        let any_role = |_: Role| true;
        let source = |r: Role| r == Role::Source;
        let target = |r: Role| r == Role::Target;
        let any_reason = |_: &Reason| true;
        type Row<'a> = (AuthorityState, AuthorityState, &'a dyn Fn(Role) -> bool, &'a dyn Fn(&Reason) -> bool);
        let rows: [Row<'_>; 8] = [
            (ActiveOwner, HandoffInitiated, &source, &any_reason),
            (HandoffInitiated, HandoffPending, &source, &any_reason),
            (HandoffInitiated, ActiveOwner, &any_role, &|r| *r == Reason::HandoffAborted),
            (HandoffPending, ActiveOwner, &target, &|r| *r == Reason::Assumed),
            (HandoffPending, ActiveOwner, &source, &|r| *r == Reason::HandoffAborted),
            (HandoffPending, Retired, &source, &|r| *r == Reason::Confirmed),
            (ActiveOwner, Retired, &any_role, &|r| *r == Reason::Shutdown),
            (RecoveryRequired, ActiveOwner, &any_role, &|r| matches!(r, Reason::Recovery | Reason::UnsafeSelfRecovery)),
        ];
        to == RecoveryRequired || rows.iter().any(|(f, t, ro, re)| *f == from && *t == to && ro(role) && re(reason))
    }

    #[test]
    fn every_cell_of_the_transition_table() {
        let mut allowed_cells = 0;
        for from in STATES {
            for role in ROLES {
                for to in STATES {
                    for reason in REASONS {
                        let want = table(from, role, to, &reason);
                        allowed_cells += usize::from(want);
                        assert_eq!(allowed(from, role, to, &reason), want, "{from} -> {to} ({role:?}, {reason})");
                        // Through the stateful API: an allowed move lands on `to`,
                        // a forbidden one is fail-stop (EI-7) and names the move.
                        let mut a = Authority::restore(from, role, Epoch::new(4, 1));
                        match a.transition(to, reason.clone()) {
                            Ok(t) => {
                                assert!(want, "{from} -> {to} ({role:?}, {reason}) must be refused");
                                assert_eq!(t, Transition { from, to, epoch: Epoch::new(4, 1), reason: reason.clone() });
                                assert_eq!(a.state(), to);
                            }
                            Err(v) => {
                                assert!(!want, "{from} -> {to} ({role:?}, {reason}) must be allowed");
                                assert_eq!(v, Violation { from, to, role, reason: reason.clone() });
                                assert_eq!(a.state(), RecoveryRequired);
                            }
                        }
                        assert_eq!(a.epoch(), Epoch::new(4, 1), "a plain transition keeps the epoch");
                    }
                }
            }
        }
        // 5 * 2 * 17 arrows into RECOVERY_REQUIRED plus the listed ones.
        assert_eq!(allowed_cells, 170 + 17 + 17 + 2 + 1 + 1 + 1 + 2 + 4);
    }

    #[test]
    fn roles_survive_transitions_except_entering_a_handoff() {
        // A target that falls to RECOVERY_REQUIRED is still recorded as the
        // target: the persisted record (and unsafe self-recovery) read it.
        let mut t = Authority::incoming(Epoch::new(2, 0));
        t.transition(RecoveryRequired, Reason::Ambiguous).unwrap();
        assert_eq!(t.role(), Role::Target);
        let mut t = Authority::restore(HandoffPending, Role::Target, Epoch::new(2, 0));
        t.transition(ActiveOwner, Reason::Assumed).unwrap();
        assert_eq!(t.role(), Role::Target, "transition alone does not change the side; assume() does");
        // Starting a handoff makes this node the source.
        let mut s = Authority::genesis();
        s.transition(HandoffInitiated, Reason::HandoffStarted).unwrap();
        assert_eq!((s.state(), s.role()), (HandoffInitiated, Role::Source));
        assert!(s.permits(Op::SealHandoff) && !s.permits(Op::Tick));
    }

    #[test]
    fn epochs_of_genesis_assume_recover_and_renew() {
        let g = Authority::genesis();
        assert_eq!((g.state(), g.role(), g.epoch()), (ActiveOwner, Role::Source, Epoch::new(1, 0)));
        let mut a = Authority::incoming(Epoch::new(7, 3));
        assert_eq!((a.state(), a.role(), a.epoch()), (HandoffPending, Role::Target, Epoch::new(7, 3)));
        a.assume().unwrap();
        assert_eq!((a.role(), a.epoch()), (Role::Source, Epoch::new(8, 0)));
        assert_eq!(a.renew(), Epoch::new(8, 1));
        assert_eq!(a.renew(), Epoch::new(8, 2));
        assert_eq!(a.epoch(), Epoch::new(8, 2));
        // A source cannot assume: fail-stop, epoch unchanged.
        let mut s = Authority::restore(HandoffPending, Role::Source, Epoch::new(3, 0));
        assert!(s.assume().is_err());
        assert_eq!((s.state(), s.epoch()), (RecoveryRequired, Epoch::new(3, 0)));
        // Recovery goes strictly above both the local major and every known one.
        let mut r = Authority::restore(RecoveryRequired, Role::Target, Epoch::new(9, 4));
        let t = r.recover(Reason::UnsafeSelfRecovery, 2).unwrap();
        assert_eq!((t.from, t.to, t.epoch), (RecoveryRequired, ActiveOwner, Epoch::new(10, 0)));
        assert_eq!((r.role(), r.epoch()), (Role::Source, Epoch::new(10, 0)));
        // Recovery is refused from anywhere but RECOVERY_REQUIRED.
        let mut o = Authority::genesis();
        assert!(o.recover(Reason::Recovery, 5).is_err());
        assert_eq!((o.state(), o.epoch()), (RecoveryRequired, Epoch::new(1, 0)));
    }

    #[test]
    fn names_in_events_and_errors() {
        let names: Vec<String> = STATES.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["ACTIVE_OWNER", "HANDOFF_INITIATED", "HANDOFF_PENDING", "RETIRED", "RECOVERY_REQUIRED"]);
        assert_eq!(Reason::HandoffAborted.to_string(), "handoff_aborted");
        assert_eq!(Reason::UnsafeSelfRecovery.to_string(), "unsafe_self_recovery");
        let v = Violation { from: Retired, to: ActiveOwner, role: Role::Target, reason: Reason::Assumed };
        assert_eq!(
            v.to_string(),
            "EI-7: forbidden authority transition RETIRED -> ACTIVE_OWNER (assumed, role Target); now RECOVERY_REQUIRED"
        );
    }
}
