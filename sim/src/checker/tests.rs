//! The checker's unit tests: one per invariant, each showing a run the
//! checker accepts and the smallest one it must reject.

use super::*;
use State::*;

fn n(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}
fn ag() -> AgentId {
    AgentId::new("counter").unwrap()
}
fn h(b: u8) -> Hash32 {
    Hash32([b; 32])
}
fn e(major: u64) -> Epoch {
    Epoch::new(major, 0)
}
fn auth(
    c: &mut Checker,
    node: &str,
    from: Option<State>,
    to: State,
    major: u64,
    reason: Reason,
) -> Result<(), Violation> {
    c.observe(0, &n(node), &Obs::Authority { agent: ag(), from, to, epoch: e(major), reason })
}
fn owner(c: &mut Checker, node: &str) {
    auth(c, node, None, ActiveOwner, 1, Reason::Deployed).unwrap();
}
fn tick_in(c: &mut Checker, node: &str, tick: u64, cost: i64, major: u64) -> Result<(), Violation> {
    let start = Obs::TickStarted { agent: ag(), tick, epoch: e(major), budget: 100, base: Hash32::ZERO };
    c.observe(0, &n(node), &start)?;
    let obs = Obs::Ticked { agent: ag(), tick, epoch: e(major), cost, paid: 0, side_effects: 0, exhausted: false };
    c.observe(0, &n(node), &obs)
}
fn tick(c: &mut Checker, node: &str, tick: u64, cost: i64) -> Result<(), Violation> {
    tick_in(c, node, tick, cost, 1)
}

fn deployed(node: &str) -> Checker {
    let mut c = Checker::new();
    c.observe(0, &n(node), &Obs::Deployed { agent: ag(), budget: 100 }).unwrap();
    owner(&mut c, node);
    c
}
fn commit(tick: u64, hash: Hash32, prev: Hash32, budget: i64, charged: i64) -> Obs {
    Obs::Committed { agent: ag(), tick, hash, prev, budget, charged: Some(charged), handoff: false, source: None }
}

#[test]
fn conserved_chain_passes_and_leak_is_re3() {
    let mut c = deployed("a");
    tick(&mut c, "a", 1, 10).unwrap();
    tick(&mut c, "a", 2, 5).unwrap();
    c.observe(3, &n("a"), &commit(2, h(1), Hash32::ZERO, 85, 15)).unwrap();
    tick(&mut c, "a", 3, 5).unwrap();
    assert_eq!(c.observe(5, &n("a"), &commit(3, h(2), h(1), 81, 5)).unwrap_err().invariant, "RE-3");
}

#[test]
fn node_accounting_that_disagrees_with_its_ticks_is_re3() {
    let mut c = deployed("a");
    tick(&mut c, "a", 1, 10).unwrap();
    let err = c.observe(3, &n("a"), &commit(1, h(1), Hash32::ZERO, 91, 9)).unwrap_err();
    assert_eq!(err.invariant, "RE-3");
}

#[test]
fn two_owners_are_ei5_and_a_second_live_ticker_is_ei1() {
    let mut c = deployed("a");
    let err = auth(&mut c, "b", None, ActiveOwner, 1, Reason::Deployed).unwrap_err();
    assert_eq!(err.invariant, "EI-5");
    let mut c2 = deployed("a");
    let rec = Record { state: ActiveOwner, epoch: e(2), target: false, uncertain: false };
    c2.agents.get_mut(&ag()).unwrap().records.insert(n("b"), rec);
    let err = tick_in(&mut c2, "b", 1, 1, 2).unwrap_err();
    assert_eq!(err.invariant, "EI-1");
    assert_eq!(err.nodes, vec![n("b"), n("a")]);
    // A crashed owner cannot tick: not a second ticker.
    c2.observe(3, &n("a"), &Obs::Crashed).unwrap();
    tick_in(&mut c2, "b", 1, 1, 2).unwrap();
}

#[test]
fn fork_is_ei3_tick_outside_owner_is_ei1_unstarted_tick_is_re8() {
    let mut c = deployed("a");
    c.observe(1, &n("a"), &commit(0, h(1), Hash32::ZERO, 100, 0)).unwrap();
    assert_eq!(c.observe(2, &n("b"), &commit(0, h(2), Hash32::ZERO, 100, 0)).unwrap_err().invariant, "EI-3");
    // c has no record at all: a tick there runs without authority.
    assert_eq!(tick(&mut c, "c", 1, 1).unwrap_err().invariant, "EI-1");
    let start = Obs::TickStarted { agent: ag(), tick: 5, epoch: e(1), budget: 100, base: h(9) };
    assert_eq!(c.observe(4, &n("a"), &start).unwrap_err().invariant, "EI-2");
    let finish = Obs::Ticked { agent: ag(), tick: 7, epoch: e(1), cost: 1, paid: 0, side_effects: 0, exhausted: false };
    assert_eq!(c.observe(5, &n("a"), &finish).unwrap_err().invariant, "RE-8");
}

#[test]
fn re8_commits_increase_and_ticks_start_above_the_head() {
    let mut c = deployed("a");
    c.observe(0, &n("a"), &commit(0, h(1), Hash32::ZERO, 100, 0)).unwrap();
    tick(&mut c, "a", 1, 1).unwrap();
    c.observe(1, &n("a"), &commit(1, h(2), h(1), 99, 1)).unwrap();
    // A tick at the committed head (a replay of tick 1 as new work).
    let again = Obs::TickStarted { agent: ag(), tick: 1, epoch: e(1), budget: 99, base: h(2) };
    let err = c.observe(2, &n("a"), &again).unwrap_err();
    assert_eq!(err.invariant, "RE-8", "{err}");
    // A new link that does not move the tick forward on the same run.
    let mut c = deployed("a");
    c.observe(0, &n("a"), &commit(0, h(1), Hash32::ZERO, 100, 0)).unwrap();
    tick(&mut c, "a", 1, 1).unwrap();
    c.observe(1, &n("a"), &commit(1, h(2), h(1), 99, 1)).unwrap();
    let err = c.observe(2, &n("a"), &commit(1, h(3), h(2), 99, 0)).unwrap_err();
    assert_eq!(err.invariant, "RE-8", "{err}");
    // After a crash the new run starts from what it loads.
    c.observe(3, &n("a"), &Obs::Crashed).unwrap();
    let load = Obs::Loaded { agent: ag(), state: ActiveOwner, epoch: e(1), head_tick: 1, head: h(2) };
    c.observe(4, &n("a"), &load).unwrap();
    tick(&mut c, "a", 2, 1).unwrap();
}

/// Brings node "x" to `from` by allowed steps; returns the checker.
/// `PendingTarget`/`PendingSource` distinguish the two HANDOFF_PENDING roles.
#[derive(Clone, Copy, Debug)]
enum Start {
    Absent,
    Owner,
    Initiated,
    PendingSource,
    PendingTarget,
    Retired,
    Recovery,
}

fn reach(start: Start) -> Checker {
    let mut c = Checker::new();
    c.observe(0, &n("x"), &Obs::Deployed { agent: ag(), budget: 100 }).unwrap();
    let steps: &[(Option<State>, State, Reason)] = match start {
        Start::Absent => &[],
        Start::Owner => &[(None, ActiveOwner, Reason::Deployed)],
        Start::Initiated => {
            &[(None, ActiveOwner, Reason::Deployed), (Some(ActiveOwner), HandoffInitiated, Reason::HandoffStarted)]
        }
        Start::PendingSource => &[
            (None, ActiveOwner, Reason::Deployed),
            (Some(ActiveOwner), HandoffInitiated, Reason::HandoffStarted),
            (Some(HandoffInitiated), HandoffPending, Reason::Relinquished),
        ],
        Start::PendingTarget => &[(None, HandoffPending, Reason::PackageReceived)],
        Start::Retired => &[
            (None, ActiveOwner, Reason::Deployed),
            (Some(ActiveOwner), HandoffInitiated, Reason::HandoffStarted),
            (Some(HandoffInitiated), HandoffPending, Reason::Relinquished),
            (Some(HandoffPending), Retired, Reason::Confirmed),
        ],
        Start::Recovery => {
            &[(None, ActiveOwner, Reason::Deployed), (Some(ActiveOwner), RecoveryRequired, Reason::LeaseExpired)]
        }
    };
    for (from, to, reason) in steps {
        auth(&mut c, "x", *from, *to, 1, reason.clone()).unwrap_or_else(|v| panic!("{start:?}: {v}"));
    }
    c
}

fn current(start: Start) -> Option<State> {
    match start {
        Start::Absent => None,
        Start::Owner => Some(ActiveOwner),
        Start::Initiated => Some(HandoffInitiated),
        Start::PendingSource | Start::PendingTarget => Some(HandoffPending),
        Start::Retired => Some(Retired),
        Start::Recovery => Some(RecoveryRequired),
    }
}

#[test]
fn every_forbidden_transition_of_the_table_is_auth_transition() {
    // Each forbidden arrow of spec §5 (with its reasons), written out
    // by hand: (from, to, reason, epoch major of the new state).
    let forbidden: &[(Start, State, Reason, u64)] = &[
        // A node without a record may only be deployed to or receive a package.
        (Start::Absent, HandoffInitiated, Reason::HandoffStarted, 1),
        (Start::Absent, Retired, Reason::Shutdown, 1),
        (Start::Absent, ActiveOwner, Reason::Assumed, 2),
        (Start::Absent, ActiveOwner, Reason::Recovery, 2),
        (Start::Absent, HandoffPending, Reason::Relinquished, 1),
        // ACTIVE_OWNER: only -> HI (handoff), -> RETIRED (shutdown), -> RR.
        (Start::Owner, HandoffPending, Reason::Relinquished, 1),
        (Start::Owner, HandoffPending, Reason::PackageReceived, 2), // an owner adopting a package
        (Start::Owner, ActiveOwner, Reason::Recovery, 2),
        (Start::Owner, Retired, Reason::Confirmed, 1),
        (Start::Owner, HandoffInitiated, Reason::Recovery, 1),
        // HANDOFF_INITIATED: only -> HP (relinquished), -> AO (aborted), -> RR.
        (Start::Initiated, Retired, Reason::Confirmed, 1),
        (Start::Initiated, ActiveOwner, Reason::Recovery, 2),
        (Start::Initiated, HandoffInitiated, Reason::HandoffStarted, 1),
        (Start::Initiated, HandoffPending, Reason::PackageReceived, 1),
        // HANDOFF_PENDING, source: -> RETIRED (confirmed), -> AO (aborted), -> RR.
        (Start::PendingSource, ActiveOwner, Reason::Assumed, 2),
        (Start::PendingSource, Retired, Reason::Shutdown, 1),
        (Start::PendingSource, HandoffInitiated, Reason::HandoffStarted, 1),
        // HANDOFF_PENDING, target: -> AO (assumed), -> RR.
        (Start::PendingTarget, ActiveOwner, Reason::HandoffAborted, 1),
        (Start::PendingTarget, Retired, Reason::Confirmed, 1),
        (Start::PendingTarget, HandoffPending, Reason::PackageReceived, 2),
        // RETIRED is terminal; only a fresh package at a higher epoch replaces it.
        (Start::Retired, ActiveOwner, Reason::Recovery, 2),
        (Start::Retired, HandoffInitiated, Reason::HandoffStarted, 1),
        (Start::Retired, HandoffPending, Reason::PackageReceived, 1),
        // RECOVERY_REQUIRED: -> AO only by recovery; never accepts a handoff (defect 6).
        (Start::Recovery, HandoffPending, Reason::PackageReceived, 2),
        (Start::Recovery, ActiveOwner, Reason::Assumed, 3),
        (Start::Recovery, ActiveOwner, Reason::HandoffAborted, 1),
        (Start::Recovery, Retired, Reason::Confirmed, 1),
        (Start::Recovery, HandoffInitiated, Reason::HandoffStarted, 1),
    ];
    for (start, to, reason, major) in forbidden {
        let mut c = reach(*start);
        let err = auth(&mut c, "x", current(*start), *to, *major, reason.clone())
            .expect_err(&format!("{start:?} -> {to:?} ({reason}) must be forbidden"));
        assert_eq!(err.invariant, AUTH_TRANSITION, "{start:?} -> {to:?}: {err}");
        assert!(err.message.contains(to.name()) && err.message.contains(&reason.to_string()), "{err}");
    }
    // And every allowed arrow passes.
    let allowed: &[(Start, State, Reason, u64)] = &[
        (Start::Absent, ActiveOwner, Reason::Deployed, 1),
        (Start::Absent, HandoffPending, Reason::PackageReceived, 1),
        (Start::Owner, HandoffInitiated, Reason::HandoffStarted, 1),
        (Start::Owner, Retired, Reason::Shutdown, 1),
        (Start::Initiated, HandoffPending, Reason::Relinquished, 1),
        (Start::Initiated, ActiveOwner, Reason::HandoffAborted, 1),
        (Start::PendingSource, Retired, Reason::Confirmed, 1),
        (Start::PendingSource, ActiveOwner, Reason::HandoffAborted, 1),
        (Start::PendingTarget, ActiveOwner, Reason::Assumed, 2),
        (Start::Retired, HandoffPending, Reason::PackageReceived, 3),
        (Start::Recovery, ActiveOwner, Reason::Recovery, 2),
        (Start::Recovery, ActiveOwner, Reason::UnsafeSelfRecovery, 2),
    ];
    for (start, to, reason, major) in allowed {
        let mut c = reach(*start);
        auth(&mut c, "x", current(*start), *to, *major, reason.clone())
            .unwrap_or_else(|v| panic!("{start:?} -> {to:?} ({reason}): {v}"));
    }
    for start in [Start::Owner, Start::Initiated, Start::PendingSource, Start::PendingTarget, Start::Retired] {
        let mut c = reach(start);
        auth(&mut c, "x", current(start), RecoveryRequired, 1, Reason::Ambiguous).unwrap();
    }
}

#[test]
fn a_from_that_is_not_the_last_reported_state_is_auth_transition() {
    let mut c = reach(Start::Owner);
    let err = auth(&mut c, "x", Some(RecoveryRequired), ActiveOwner, 2, Reason::Recovery).unwrap_err();
    assert_eq!(err.invariant, AUTH_TRANSITION);
}

#[test]
fn an_agent_is_a_hostage_only_when_every_holder_misbehaved() {
    // x owns it and hands it to b; b adopts: two holders.
    let mut c = reach(Start::Owner);
    c.agents.get_mut(&ag()).unwrap().copies.insert(n("x")); // x's genesis
    assert_eq!(c.hostage_holders(&ag()), None, "an honest holder");
    c.observe(1, &n("x"), &Obs::Distrusted).unwrap();
    assert_eq!(c.hostage_holders(&ag()), Some(vec![n("x")]), "the only holder misbehaved");
    auth(&mut c, "b", None, HandoffPending, 1, Reason::PackageReceived).unwrap();
    assert_eq!(c.hostage_holders(&ag()), Some(vec![n("x")]), "a package not yet adopted is no copy");
    c.agents.get_mut(&ag()).unwrap().copies.insert(n("b")); // b's adopt commit
    assert_eq!(c.hostage_holders(&ag()), None, "b holds an honest copy, even in HANDOFF_PENDING");
    // No copy anywhere is LOST's business (a wipe), not a hostage.
    assert_eq!(Checker::new().hostage_holders(&ag()), None);
}

#[test]
fn an_agent_is_lost_only_when_a_wipe_destroyed_its_last_holder() {
    // x owns the agent, hands it to b, retires; b is wiped: lost on b.
    let mut c = reach(Start::Owner);
    assert_eq!(c.lost(&ag()), None);
    auth(&mut c, "b", None, HandoffPending, 1, Reason::PackageReceived).unwrap();
    auth(&mut c, "x", Some(ActiveOwner), HandoffInitiated, 1, Reason::HandoffStarted).unwrap();
    auth(&mut c, "x", Some(HandoffInitiated), HandoffPending, 1, Reason::Relinquished).unwrap();
    auth(&mut c, "b", Some(HandoffPending), ActiveOwner, 2, Reason::Assumed).unwrap();
    c.agents.get_mut(&ag()).unwrap().copies.insert(n("b")); // b's adopt commit
    // While x still holds it in HANDOFF_PENDING, wiping b loses nothing.
    let mut early = reach(Start::Owner);
    auth(&mut early, "x", Some(ActiveOwner), RecoveryRequired, 1, Reason::Ambiguous).unwrap();
    early.observe(1, &n("b"), &Obs::Forgot { agent: ag() }).unwrap();
    assert_eq!(early.lost(&ag()), None, "x still holds a copy");
    auth(&mut c, "x", Some(HandoffPending), Retired, 1, Reason::Confirmed).unwrap();
    // Wiping a node that holds only a RETIRED record loses nothing.
    c.observe(3, &n("x"), &Obs::Forgot { agent: ag() }).unwrap();
    assert_eq!(c.lost(&ag()), None);
    c.observe(5, &n("b"), &Obs::Crashed).unwrap();
    c.observe(5, &n("b"), &Obs::Forgot { agent: ag() }).unwrap();
    assert_eq!(c.lost(&ag()), Some((n("b"), 5)));
    // A node that holds it again (a replayed package, say) clears it,
    // once it adopted the checkpoint.
    auth(&mut c, "x", None, HandoffPending, 3, Reason::PackageReceived).unwrap();
    assert_eq!(c.lost(&ag()), Some((n("b"), 5)), "a package not yet adopted is no copy");
    c.agents.get_mut(&ag()).unwrap().copies.insert(n("x")); // x's adopt commit
    auth(&mut c, "x", Some(HandoffPending), ActiveOwner, 4, Reason::Assumed).unwrap();
    assert_eq!(c.lost(&ag()), None);

    // Explore disk-swarm 1588: the source deleted its copy after the
    // confirmation, but its RETIRED record did not persist and reloads
    // as RECOVERY_REQUIRED. That record holds nothing: wiping the new
    // owner loses the agent.
    let mut c = reach(Start::Owner);
    auth(&mut c, "b", None, HandoffPending, 1, Reason::PackageReceived).unwrap();
    auth(&mut c, "x", Some(ActiveOwner), HandoffInitiated, 1, Reason::HandoffStarted).unwrap();
    auth(&mut c, "x", Some(HandoffInitiated), HandoffPending, 1, Reason::Relinquished).unwrap();
    auth(&mut c, "b", Some(HandoffPending), ActiveOwner, 2, Reason::Assumed).unwrap();
    c.agents.get_mut(&ag()).unwrap().copies.insert(n("b")); // b's adopt commit
    auth(&mut c, "x", Some(HandoffPending), Retired, 1, Reason::Confirmed).unwrap();
    c.observe(4, &n("x"), &Obs::CopyDeleted { agent: ag() }).unwrap();
    c.observe(4, &n("x"), &Obs::Crashed).unwrap();
    c.observe(5, &n("x"), &Obs::Booted).unwrap();
    auth(&mut c, "x", Some(Retired), RecoveryRequired, 1, Reason::RestartInDoubt).unwrap();
    // Its reload names the head its record kept; the key is gone.
    let reload =
        Obs::Loaded { agent: ag(), state: RecoveryRequired, epoch: Epoch::new(1, 0), head_tick: 0, head: h(9) };
    c.observe(5, &n("x"), &reload).unwrap();
    c.observe(6, &n("b"), &Obs::Forgot { agent: ag() }).unwrap();
    assert_eq!(c.lost(&ag()), Some((n("b"), 6)));

    // Explore disk-swarm 1685: the target's adopt failed on a full disk
    // (RECOVERY_REQUIRED with no checkpoint), then the source was wiped:
    // the target's record holds nothing a recovery could resume.
    let mut c = reach(Start::Owner);
    auth(&mut c, "b", None, HandoffPending, 1, Reason::PackageReceived).unwrap();
    auth(&mut c, "b", Some(HandoffPending), RecoveryRequired, 1, Reason::Fault).unwrap();
    auth(&mut c, "x", Some(ActiveOwner), RecoveryRequired, 1, Reason::Superseded).unwrap();
    c.observe(7, &n("x"), &Obs::Forgot { agent: ag() }).unwrap();
    assert_eq!(c.lost(&ag()), Some((n("x"), 7)));
}

#[test]
fn ei1_per_epoch_across_crash_restart_and_wipe() {
    // Defect 3: b assumes 2.0 and ticks, b is wiped, a is recovered and
    // takes 2.0 again: a second node ticking epoch major 2 is EI-1.
    let mut c = reach(Start::Owner);
    tick_in(&mut c, "x", 1, 1, 1).unwrap();
    auth(&mut c, "b", None, HandoffPending, 1, Reason::PackageReceived).unwrap();
    auth(&mut c, "x", Some(ActiveOwner), RecoveryRequired, 1, Reason::Ambiguous).unwrap();
    auth(&mut c, "b", Some(HandoffPending), ActiveOwner, 2, Reason::Assumed).unwrap();
    tick_in(&mut c, "b", 2, 1, 2).unwrap();
    c.observe(1, &n("b"), &Obs::Crashed).unwrap();
    c.observe(1, &n("b"), &Obs::Forgot { agent: ag() }).unwrap();
    c.observe(2, &n("b"), &Obs::Booted).unwrap();
    auth(&mut c, "x", Some(RecoveryRequired), ActiveOwner, 2, Reason::Recovery).unwrap();
    let err = tick_in(&mut c, "x", 2, 1, 2).unwrap_err();
    assert_eq!(err.invariant, "EI-1");
    assert_eq!(err.nodes, vec![n("x"), n("b")]);
    assert!(err.message.contains("epoch major 2") && err.message.contains("b already ticked"), "{err}");

    // The same after a plain crash and restart (no wipe): still EI-1.
    let mut c = reach(Start::Owner);
    tick_in(&mut c, "x", 1, 1, 1).unwrap();
    auth(&mut c, "x", Some(ActiveOwner), RecoveryRequired, 1, Reason::LeaseExpired).unwrap();
    auth(&mut c, "b", None, HandoffPending, 0, Reason::PackageReceived).unwrap();
    auth(&mut c, "b", Some(HandoffPending), ActiveOwner, 1, Reason::Assumed).unwrap();
    c.observe(1, &n("x"), &Obs::Crashed).unwrap();
    let err = tick_in(&mut c, "b", 1, 1, 1).unwrap_err();
    assert_eq!(err.invariant, "EI-1", "{err}");

    // Renewal bumps only the generation on the same node: fine; a
    // later major on another node: fine.
    let mut c = reach(Start::Owner);
    tick_in(&mut c, "x", 1, 1, 1).unwrap();
    let start = Obs::TickStarted { agent: ag(), tick: 2, epoch: Epoch::new(1, 3), budget: 99, base: Hash32::ZERO };
    c.observe(0, &n("x"), &start).unwrap();
    let fin = Obs::Ticked {
        agent: ag(),
        tick: 2,
        epoch: Epoch::new(1, 3),
        cost: 1,
        paid: 0,
        side_effects: 0,
        exhausted: false,
    };
    c.observe(0, &n("x"), &fin).unwrap();
    auth(&mut c, "x", Some(ActiveOwner), RecoveryRequired, 1, Reason::LeaseExpired).unwrap();
    auth(&mut c, "b", None, HandoffPending, 1, Reason::PackageReceived).unwrap();
    auth(&mut c, "b", Some(HandoffPending), ActiveOwner, 2, Reason::Assumed).unwrap();
    tick_in(&mut c, "b", 3, 1, 2).unwrap();
    assert_eq!(c.tickers(&ag()), BTreeMap::from([(1, n("x")), (2, n("b"))]));
}

#[test]
fn a_cut_tick_bills_the_remainder_and_a_budget_halt_leaves_a_final_checkpoint() {
    let run = |cost: i64, exhausted: bool, final_budget: Option<i64>| -> Result<(), Violation> {
        let mut c = deployed("a");
        c.observe(0, &n("a"), &commit(0, h(1), Hash32::ZERO, 100, 0))?;
        let start = Obs::TickStarted { agent: ag(), tick: 1, epoch: e(1), budget: 100, base: h(1) };
        c.observe(1, &n("a"), &start)?;
        let fin = Obs::Ticked { agent: ag(), tick: 1, epoch: e(1), cost, paid: 0, side_effects: 0, exhausted };
        c.observe(2, &n("a"), &fin)?;
        if let Some(b) = final_budget {
            c.observe(3, &n("a"), &commit(1, h(2), h(1), b, cost))?;
        }
        c.observe(4, &n("a"), &Obs::Halted { agent: ag(), budget: true })
    };
    // Defect 4: cut for budget, billed 0 of the 100 left.
    assert_eq!(run(0, true, Some(100)).unwrap_err().invariant, BUDGET_CUT);
    assert_eq!(run(101, false, None).unwrap_err().invariant, BUDGET_CUT);
    // Billed right, but no final checkpoint: stranded.
    assert_eq!(run(100, true, None).unwrap_err().invariant, BUDGET_FINAL);
    run(100, true, Some(0)).unwrap();
    // A fault in between (the final write failed) excuses it.
    let mut c = deployed("a");
    let start = Obs::TickStarted { agent: ag(), tick: 1, epoch: e(1), budget: 100, base: Hash32::ZERO };
    c.observe(1, &n("a"), &start).unwrap();
    let fin = Obs::Ticked { agent: ag(), tick: 1, epoch: e(1), cost: 100, paid: 0, side_effects: 0, exhausted: true };
    c.observe(2, &n("a"), &fin).unwrap();
    c.observe(3, &n("a"), &Obs::Fault { agent: ag() }).unwrap();
    c.observe(4, &n("a"), &Obs::Halted { agent: ag(), budget: true }).unwrap();
    // And a halted agent ticks no more on that run (RE-8).
    assert_eq!(tick(&mut c, "a", 2, 0).unwrap_err().invariant, "RE-8");
}

#[test]
fn a_handoff_that_drops_finished_ticks_is_handoff_lost_ticks() {
    let mut c = deployed("a");
    c.observe(0, &n("a"), &commit(0, h(1), Hash32::ZERO, 100, 0)).unwrap();
    tick(&mut c, "a", 1, 1).unwrap();
    tick(&mut c, "a", 2, 1).unwrap();
    auth(&mut c, "a", Some(ActiveOwner), HandoffInitiated, 1, Reason::HandoffStarted).unwrap();
    // Sealing tick 1 while tick 2 finished loses tick 2.
    let seal = Obs::Committed {
        agent: ag(),
        tick: 1,
        hash: h(2),
        prev: h(1),
        budget: 99,
        charged: Some(1),
        handoff: true,
        source: None,
    };
    assert_eq!(c.observe(1, &n("a"), &seal).unwrap_err().invariant, HANDOFF_LOST_TICKS);
    // Relinquishing with a finished tick uncommitted loses it too.
    let mut c = deployed("a");
    c.observe(0, &n("a"), &commit(0, h(1), Hash32::ZERO, 100, 0)).unwrap();
    tick(&mut c, "a", 1, 1).unwrap();
    auth(&mut c, "a", Some(ActiveOwner), HandoffInitiated, 1, Reason::HandoffStarted).unwrap();
    let err = auth(&mut c, "a", Some(HandoffInitiated), HandoffPending, 1, Reason::Relinquished).unwrap_err();
    assert_eq!(err.invariant, HANDOFF_LOST_TICKS);
    // A target adopting another tick than the one sealed.
    let mut c = deployed("a");
    c.observe(0, &n("a"), &commit(0, h(1), Hash32::ZERO, 100, 0)).unwrap();
    tick(&mut c, "a", 1, 1).unwrap();
    auth(&mut c, "a", Some(ActiveOwner), HandoffInitiated, 1, Reason::HandoffStarted).unwrap();
    let seal = Obs::Committed {
        agent: ag(),
        tick: 1,
        hash: h(2),
        prev: h(1),
        budget: 99,
        charged: Some(1),
        handoff: true,
        source: None,
    };
    c.observe(1, &n("a"), &seal).unwrap();
    auth(&mut c, "a", Some(HandoffInitiated), HandoffPending, 1, Reason::Relinquished).unwrap();
    auth(&mut c, "b", None, HandoffPending, 1, Reason::PackageReceived).unwrap();
    let adopt = |tick, hash, prev, budget| Obs::Committed {
        agent: ag(),
        tick,
        hash,
        prev,
        budget,
        charged: None,
        handoff: false,
        source: Some(n("a")),
    };
    let err = c.observe(2, &n("b"), &adopt(0, h(1), Hash32::ZERO, 100)).unwrap_err();
    assert_eq!(err.invariant, HANDOFF_LOST_TICKS);
    c.observe(2, &n("b"), &adopt(1, h(2), h(1), 99)).unwrap();
}

#[test]
fn reloads_must_match_the_last_report_and_a_wiped_disk_loads_nothing() {
    let load = |state, major| Obs::Loaded { agent: ag(), state, epoch: e(major), head_tick: 0, head: Hash32::ZERO };
    let mut c = reach(Start::Retired);
    c.observe(0, &n("x"), &Obs::Crashed).unwrap();
    assert_eq!(c.observe(1, &n("x"), &load(ActiveOwner, 1)).unwrap_err().invariant, AUTH_RELOAD);
    let mut c = reach(Start::Retired);
    c.observe(1, &n("x"), &load(Retired, 1)).unwrap();
    c.observe(1, &n("x"), &load(RecoveryRequired, 1)).unwrap();
    // HANDOFF_INITIATED is never persisted: it reloads as the owner.
    let mut c = reach(Start::Initiated);
    c.observe(1, &n("x"), &load(ActiveOwner, 1)).unwrap();
    // Defect 5: a wiped node loads a phantom record.
    let mut c = reach(Start::Owner);
    c.observe(1, &n("x"), &Obs::Forgot { agent: ag() }).unwrap();
    assert_eq!(c.observe(2, &n("x"), &load(RecoveryRequired, 0)).unwrap_err().invariant, AUTH_RELOAD);
    // A node that never reported the agent loads nothing either.
    let mut c = reach(Start::Owner);
    assert_eq!(c.observe(2, &n("y"), &load(ActiveOwner, 1)).unwrap_err().invariant, AUTH_RELOAD);
}

#[test]
fn a_returning_agent_archives_a_retired_record_but_no_live_one() {
    let mut c = deployed("a");
    auth(&mut c, "a", Some(ActiveOwner), Retired, 1, Reason::Shutdown).unwrap();
    // Spec §5: the RETIRED record is archived; the event shows a new one.
    auth(&mut c, "a", None, HandoffPending, 3, Reason::PackageReceived).unwrap();
    // A live record is never silently replaced.
    let mut live = deployed("a");
    let err = auth(&mut live, "a", None, HandoffPending, 3, Reason::PackageReceived).unwrap_err();
    assert_eq!(err.invariant, AUTH_TRANSITION, "{err}");
}

#[test]
fn a_recorded_recovery_may_re_anchor_once_and_abandons_the_other_branch() {
    let mut c = deployed("a");
    c.observe(1, &n("a"), &commit(0, h(1), Hash32::ZERO, 100, 0)).unwrap();
    c.observe(2, &n("a"), &commit(1, h(2), h(1), 100, 0)).unwrap();
    // Without a recorded recovery, a second child of h(1) is a fork.
    let mut forked = deployed("a");
    forked.observe(1, &n("a"), &commit(0, h(1), Hash32::ZERO, 100, 0)).unwrap();
    forked.observe(2, &n("a"), &commit(1, h(2), h(1), 100, 0)).unwrap();
    assert_eq!(forked.observe(3, &n("a"), &commit(2, h(3), h(1), 100, 0)).unwrap_err().invariant, "EI-3");
    // A recovery on a from anchor h(1): its next commit re-anchors there.
    let rec = Obs::Recovered { agent: ag(), anchor: h(1), epoch: e(5) };
    c.observe(3, &n("a"), &rec).unwrap();
    c.observe(4, &n("a"), &commit(2, h(3), h(1), 100, 0)).unwrap();
    // Once only, and nothing may extend the abandoned branch.
    assert_eq!(c.observe(5, &n("a"), &commit(3, h(4), h(1), 100, 0)).unwrap_err().invariant, "EI-3");
    let mut c2 = deployed("a");
    c2.observe(1, &n("a"), &commit(0, h(1), Hash32::ZERO, 100, 0)).unwrap();
    c2.observe(2, &n("b"), &commit(1, h(2), h(1), 100, 0)).unwrap();
    c2.observe(3, &n("a"), &rec).unwrap();
    c2.observe(4, &n("a"), &commit(2, h(3), h(1), 100, 0)).unwrap();
    let err = c2.observe(5, &n("b"), &commit(3, h(6), h(2), 100, 0)).unwrap_err();
    assert!(err.invariant == "EI-3" && err.message.contains("abandoned"), "{err}");
}
