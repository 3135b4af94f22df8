//! The protocol core through its public API, one state machine at a time:
//! the source side of a handoff ([`SourceHandoff`], spec §6) event by event,
//! the retry backoff, the reply deadline, and the manifest's migration
//! policy. Every comparison the machines make (attempt numbers, epochs,
//! expiries, the retry limit) is tested on both sides of its boundary, so
//! that flipping it (`>=` to `>`, `==` to `true`) fails a test; see
//! `scripts/mutants.sh`. The authority matrix and the lease phases are
//! tested cell by cell next to their code (`src/authority.rs`,
//! `src/lease.rs`).

use igor::authority::{AuthorityState, Reason};
use igor::checkpoint::{Checkpoint, CheckpointBody, Hash32};
use igor::env::Now;
use igor::identity::Keypair;
use igor::migration::{
    Action, HandoffTimer, Input, JudgeChecks, JudgeClock, Judgement, LocalView, MigrationConfig, Outcome, PackageFacts,
    ReplyView, SendFailure, SourceHandoff, SourceState, check_price_policy, judge_package, judge_package_with,
    migration_policy,
};
use igor::units::{AgentId, Epoch, Microcents, NodeId, TickNumber};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
/// Unix time at mono 0: the two clocks differ on purpose, so a test notices
/// one used for the other.
const UNIX0: i64 = 1_700_000_000_000_000_000;

fn at(mono_ns: u64) -> Now {
    Now { mono_ns, unix_ns: UNIX0 + mono_ns as i64 }
}

fn cfg() -> MigrationConfig {
    MigrationConfig {
        package_ttl_ns: 5 * SEC,
        max_clock_skew_ns: 500 * MS,
        max_attempts: 3,
        backoff_base_ns: 100 * MS,
        backoff_cap_ns: 1_000 * MS,
    }
}

const EPOCH: Epoch = Epoch::new(4, 2);

fn transition(to: AuthorityState, reason: Reason) -> Action {
    Action::Transition { to, reason }
}

/// The three actions that put the agent back to work on the source.
fn resumed(outcome: Outcome) -> Vec<Action> {
    vec![
        transition(AuthorityState::ActiveOwner, Reason::HandoffAborted),
        Action::ResumeTicking,
        Action::Finished(outcome),
    ]
}

fn ambiguous(reason: Reason, why: &str) -> Vec<Action> {
    vec![transition(AuthorityState::RecoveryRequired, reason), Action::Finished(Outcome::Ambiguous(why.into()))]
}

fn sent(attempt: u32, nonce: u64, now: Now) -> Vec<Action> {
    vec![
        Action::SendPackage { attempt, nonce, expiry_unix_ns: now.unix_ns + 5 * SEC as i64 },
        Action::StartTimer { timer: HandoffTimer::ReplyDeadline { attempt }, at_mono_ns: now.mono_ns + 5_500 * MS },
    ]
}

fn start() -> SourceHandoff {
    let (m, actions) =
        SourceHandoff::start(AgentId::new("agent-1").unwrap(), NodeId::new("node-b").unwrap(), EPOCH, cfg());
    assert_eq!(
        actions,
        [
            transition(AuthorityState::HandoffInitiated, Reason::HandoffStarted),
            Action::StopTicking,
            Action::SealCheckpoint
        ]
    );
    assert_eq!(m.state(), &SourceState::ExpectSealed);
    assert!(!m.is_finished());
    assert_eq!(m.sealed, None);
    m
}

/// Started, sealed at `at(0)` and attempt 1 sent (nonce 11).
fn sent_once() -> SourceHandoff {
    let mut m = start();
    let a = m.handle(at(0), 11, Input::Sealed { tick: TickNumber(9), hash: Hash32::of(b"head") });
    let mut want = vec![transition(AuthorityState::HandoffPending, Reason::Relinquished)];
    want.extend(sent(1, 11, at(0)));
    assert_eq!(a, want);
    assert_eq!(m.sealed, Some((TickNumber(9), Hash32::of(b"head"))));
    assert_eq!(m.state(), &SourceState::ExpectReply { attempt: 1, expiry_unix_ns: UNIX0 + 5 * SEC as i64 });
    assert!(!m.is_finished());
    m
}

fn unreachable(attempt: u32) -> Input {
    Input::SendFailed { attempt, failure: SendFailure::Unreachable, error: "no route".into() }
}

fn reply(attempt: u32, success: bool, target_epoch: Epoch) -> Input {
    Input::Reply { attempt, reply: ReplyView { success, error: Some("busy".into()), target_epoch } }
}

/// Everything that is not a live input for `m` right now must produce no
/// action and leave the machine as it was.
fn assert_ignored(m: &mut SourceHandoff, inputs: Vec<Input>) {
    for input in inputs {
        let before = m.state().clone();
        let shown = format!("{input:?}");
        assert_eq!(m.handle(at(3 * SEC), 99, input), [], "{shown} in {before:?}");
        assert_eq!(m.state(), &before, "{shown} changed the state");
    }
}

// ---- the source machine, event by event ----

#[test]
fn confirmed_handoff_retires_the_source() {
    let mut m = sent_once();
    let a = m.handle(at(SEC), 0, reply(1, true, Epoch::new(5, 0)));
    assert_eq!(
        a,
        [
            transition(AuthorityState::Retired, Reason::Confirmed),
            Action::DeleteLocalCopy,
            Action::Finished(Outcome::Completed)
        ]
    );
    assert!(m.is_finished());
    assert_eq!(m.state(), &SourceState::Finished(Outcome::Completed));
    // A duplicate confirmation (or anything else) after the end is stale.
    assert_ignored(&mut m, vec![reply(1, true, Epoch::new(5, 0)), unreachable(1)]);
}

#[test]
fn seal_failure_aborts_before_anything_is_relinquished() {
    let mut m = start();
    let a = m.handle(at(0), 0, Input::SealFailed { error: "disk full".into() });
    assert_eq!(a, resumed(Outcome::Aborted("disk full".into())));
    assert!(m.is_finished());
    assert_eq!(m.sealed, None);
}

#[test]
fn persist_failure_of_the_relinquish_aborts() {
    let mut m = sent_once();
    let a = m.handle(at(0), 0, Input::PersistFailed { error: "fsync".into() });
    assert_eq!(a, resumed(Outcome::Aborted("fsync".into())));
    assert!(m.is_finished());
}

#[test]
fn inputs_that_do_not_fit_the_state_are_ignored() {
    // Waiting for the seal: only Sealed / SealFailed count.
    let mut m = start();
    assert_ignored(
        &mut m,
        vec![
            Input::PersistFailed { error: "x".into() },
            unreachable(1),
            reply(1, true, Epoch::default()),
            Input::Timer(HandoffTimer::ReplyDeadline { attempt: 1 }),
            Input::Timer(HandoffTimer::Retry { attempt: 1 }),
            Input::Timer(HandoffTimer::PackageExpired),
        ],
    );
    assert!(!m.is_finished());
    // Waiting for reply 1: a second seal, a seal failure, timers of other
    // kinds are not for this state.
    let mut m = sent_once();
    assert_ignored(
        &mut m,
        vec![
            Input::Sealed { tick: TickNumber(10), hash: Hash32::of(b"other") },
            Input::SealFailed { error: "late".into() },
            Input::Timer(HandoffTimer::Retry { attempt: 1 }),
            Input::Timer(HandoffTimer::PackageExpired),
        ],
    );
    assert_eq!(m.sealed, Some((TickNumber(9), Hash32::of(b"head"))));
}

/// Replies, send failures and deadlines name the attempt they belong to;
/// anything for another attempt (an earlier one, a duplicate, a guess) is
/// stale and changes nothing.
#[test]
fn events_of_another_attempt_are_stale() {
    let mut m = sent_once();
    assert_eq!(m.handle(at(SEC), 5, unreachable(1)).len(), 1);
    let a = m.handle(at(2 * SEC), 6, Input::Timer(HandoffTimer::Retry { attempt: 2 }));
    assert_eq!(a, sent(2, 6, at(2 * SEC)));
    assert_eq!(
        m.state(),
        &SourceState::ExpectReply { attempt: 2, expiry_unix_ns: at(2 * SEC).unix_ns + 5 * SEC as i64 }
    );
    for stale in [1, 3] {
        assert_ignored(
            &mut m,
            vec![
                reply(stale, true, Epoch::default()),
                reply(stale, false, Epoch::default()),
                unreachable(stale),
                Input::SendFailed { attempt: stale, failure: SendFailure::Lost, error: "x".into() },
                Input::SendFailed { attempt: stale, failure: SendFailure::TooLarge, error: "x".into() },
                Input::Timer(HandoffTimer::ReplyDeadline { attempt: stale }),
                Input::Timer(HandoffTimer::Retry { attempt: stale }),
            ],
        );
    }
    // A persist failure is only about the first relinquish.
    assert_ignored(&mut m, vec![Input::PersistFailed { error: "late".into() }]);
    // The live attempt still completes.
    let a = m.handle(at(3 * SEC), 0, reply(2, true, Epoch::new(5, 0)));
    assert_eq!(a.last(), Some(&Action::Finished(Outcome::Completed)));
}

#[test]
fn retry_timer_of_another_attempt_is_stale() {
    let mut m = sent_once();
    m.handle(at(SEC), 5, unreachable(1));
    assert_eq!(m.state(), &SourceState::ExpectRetry { attempt: 2 });
    assert_ignored(
        &mut m,
        vec![
            Input::Timer(HandoffTimer::Retry { attempt: 1 }),
            Input::Timer(HandoffTimer::Retry { attempt: 3 }),
            Input::Timer(HandoffTimer::ReplyDeadline { attempt: 1 }),
            Input::Timer(HandoffTimer::PackageExpired),
            reply(1, true, Epoch::default()),
            unreachable(2),
        ],
    );
}

#[test]
fn lost_send_is_ambiguous_never_retried() {
    let mut m = sent_once();
    let a = m.handle(at(SEC), 0, Input::SendFailed { attempt: 1, failure: SendFailure::Lost, error: "reset".into() });
    assert_eq!(a, ambiguous(Reason::Ambiguous, "attempt 1: reset"));
    assert!(m.is_finished());
}

#[test]
fn too_large_fails_before_send_without_retry() {
    let mut m = sent_once();
    let a =
        m.handle(at(SEC), 0, Input::SendFailed { attempt: 1, failure: SendFailure::TooLarge, error: "9 MiB".into() });
    assert_eq!(a, resumed(Outcome::FailedBeforeSend("9 MiB".into())));
}

#[test]
fn reply_deadline_is_ambiguous() {
    let mut m = sent_once();
    let a = m.handle(at(5_500 * MS), 0, Input::Timer(HandoffTimer::ReplyDeadline { attempt: 1 }));
    assert_eq!(a, ambiguous(Reason::Ambiguous, "attempt 1: no reply before the deadline"));
    assert!(m.is_finished());
}

/// `max_attempts` counts sends, the first included: with 3, attempts 1 and
/// 2 are retried after a backoff, attempt 3 gives up on the source.
#[test]
fn unreachable_is_retried_up_to_max_attempts_then_stays_on_source() {
    let mut m = sent_once();
    let mut now = 0;
    for attempt in 1..3u32 {
        now += SEC;
        let rand = 0; // jitter 0: the shortest delay, half the backoff
        let a = m.handle(at(now), rand, unreachable(attempt));
        let next = attempt + 1;
        let delay = cfg().backoff_ns(next, rand);
        assert_eq!(a, [Action::StartTimer { timer: HandoffTimer::Retry { attempt: next }, at_mono_ns: now + delay }]);
        assert_eq!(m.state(), &SourceState::ExpectRetry { attempt: next });
        now += delay;
        assert_eq!(
            m.handle(at(now), 40 + u64::from(next), Input::Timer(HandoffTimer::Retry { attempt: next })),
            sent(next, 40 + u64::from(next), at(now))
        );
    }
    let a = m.handle(at(now + 1), 0, unreachable(3));
    assert_eq!(a, resumed(Outcome::FailedBeforeSend("3 attempts: no route".into())));
    assert!(m.is_finished());
}

#[test]
fn a_single_attempt_config_never_retries() {
    let (mut m, _) = SourceHandoff::start(
        AgentId::new("a").unwrap(),
        NodeId::new("b").unwrap(),
        EPOCH,
        MigrationConfig { max_attempts: 1, ..cfg() },
    );
    m.handle(at(0), 0, Input::Sealed { tick: TickNumber(1), hash: Hash32::of(b"h") });
    let a = m.handle(at(1), 0, unreachable(1));
    assert_eq!(a, resumed(Outcome::FailedBeforeSend("1 attempts: no route".into())));
}

/// A refusal is definitive only from a target that holds the agent at an
/// older epoch than the package's; a target at the same or a newer epoch
/// has its own claim, which is a conflict: pause (EI-6).
#[test]
fn refusal_versus_conflict_at_the_epoch_boundary() {
    for (target_epoch, conflict) in [
        (Epoch::default(), false),
        (Epoch::new(4, 1), false),
        (Epoch::new(3, 9), false),
        (EPOCH, true),
        (Epoch::new(4, 3), true),
        (Epoch::new(5, 0), true),
    ] {
        let mut m = sent_once();
        let a = m.handle(at(SEC), 0, reply(1, false, target_epoch));
        if conflict {
            let why = format!("target holds epoch {target_epoch} >= {EPOCH}: busy");
            assert_eq!(a, ambiguous(Reason::Superseded, &why), "{target_epoch}");
            assert!(m.is_finished());
        } else {
            assert_eq!(a.len(), 1, "{target_epoch}: {a:?}");
            assert!(matches!(a[0], Action::StartTimer { timer: HandoffTimer::PackageExpired, .. }), "{a:?}");
            assert_eq!(m.state(), &SourceState::ExpectPackageExpiry { refusal: "busy".into() });
            assert!(!m.is_finished());
        }
    }
}

/// After a refusal the agent must not tick here until every copy of the
/// package has expired everywhere: expiry (sent + ttl), seen from this
/// node's monotonic clock, plus the clock-skew margin.
#[test]
fn refusal_waits_for_expiry_plus_skew_then_resumes() {
    let mut m = sent_once(); // sent at 0: expires at unix 0 + 5 s
    let a = m.handle(at(SEC), 0, reply(1, false, Epoch::default()));
    assert_eq!(a, [Action::StartTimer { timer: HandoffTimer::PackageExpired, at_mono_ns: 5 * SEC + 500 * MS }]);
    assert_ignored(
        &mut m,
        vec![
            reply(1, true, Epoch::default()),
            unreachable(1),
            Input::Timer(HandoffTimer::ReplyDeadline { attempt: 1 }),
            Input::Timer(HandoffTimer::Retry { attempt: 1 }),
        ],
    );
    let a = m.handle(at(5 * SEC + 500 * MS), 0, Input::Timer(HandoffTimer::PackageExpired));
    assert_eq!(a, resumed(Outcome::Refused("busy".into())));
    assert!(m.is_finished());
    assert_ignored(&mut m, vec![Input::Timer(HandoffTimer::PackageExpired)]);
}

#[test]
fn refusal_after_expiry_still_waits_the_skew() {
    let mut m = sent_once();
    let late = at(7 * SEC);
    let a = m.handle(
        late,
        0,
        Input::Reply { attempt: 1, reply: ReplyView { success: false, error: None, target_epoch: Epoch::default() } },
    );
    assert_eq!(a, [Action::StartTimer { timer: HandoffTimer::PackageExpired, at_mono_ns: 7 * SEC + 500 * MS }]);
    let a = m.handle(at(8 * SEC), 0, Input::Timer(HandoffTimer::PackageExpired));
    assert_eq!(a, resumed(Outcome::Refused("no reason given".into())));
}

// ---- timing ----

#[test]
fn reply_timeout_is_package_ttl_plus_skew() {
    assert_eq!(cfg().reply_timeout_ns(), 5_500 * MS);
    assert_eq!(MigrationConfig::default().reply_timeout_ns(), 5_500 * MS);
    let huge = MigrationConfig { package_ttl_ns: u64::MAX, ..cfg() };
    assert_eq!(huge.reply_timeout_ns(), u64::MAX);
}

/// Retry `k` waits between half and all of `base * 2^(k-2)` (capped): the
/// jitter draw picks where, and both ends are reachable.
#[test]
fn backoff_doubles_per_attempt_up_to_the_cap_with_equal_jitter() {
    let c = cfg(); // base 100 ms, cap 1 s
    let cases: [(u32, u64); 7] =
        [(1, 100 * MS), (2, 100 * MS), (3, 200 * MS), (4, 400 * MS), (5, 800 * MS), (6, 1_000 * MS), (90, 1_000 * MS)];
    for (attempt, delay) in cases {
        let half = delay / 2;
        assert_eq!(c.backoff_ns(attempt, 0), half, "attempt {attempt}, no jitter");
        assert_eq!(c.backoff_ns(attempt, 1), half + 1, "attempt {attempt}, jitter 1");
        assert_eq!(c.backoff_ns(attempt, delay - half), delay, "attempt {attempt}, largest jitter");
        assert_eq!(c.backoff_ns(attempt, delay - half + 1), half, "attempt {attempt}, jitter wraps");
        for r in [2, 12_345, u64::MAX] {
            let d = c.backoff_ns(attempt, r);
            assert!((half..=delay).contains(&d), "attempt {attempt}, rand {r}: {d} not in {half}..={delay}");
        }
    }
    // Odd delays round the lower half down; a zero base still waits 0 or 1 ns.
    let odd = MigrationConfig { backoff_base_ns: 5, backoff_cap_ns: 1_000, ..cfg() };
    assert_eq!((odd.backoff_ns(2, 0), odd.backoff_ns(2, 3), odd.backoff_ns(2, 4)), (2, 5, 2));
    let zero = MigrationConfig { backoff_base_ns: 0, ..cfg() };
    assert_eq!((zero.backoff_ns(2, 0), zero.backoff_ns(2, 1), zero.backoff_ns(2, 2)), (0, 1, 0));
}

#[test]
fn outcome_names_and_ambiguity() {
    let cases = [
        (Outcome::Completed, "completed", false),
        (Outcome::Refused("r".into()), "refused(r)", false),
        (Outcome::FailedBeforeSend("f".into()), "failed_before_send(f)", false),
        (Outcome::Aborted("a".into()), "aborted(a)", false),
        (Outcome::Ambiguous("x".into()), "ambiguous(x)", true),
    ];
    for (o, shown, amb) in cases {
        assert_eq!(o.to_string(), shown);
        assert_eq!(o.is_ambiguous(), amb, "{o}");
    }
}

// ---- manifest policy ----

#[test]
fn migration_policy_defaults_allow_migration() {
    for manifest in [&b"{}"[..], br#"{"migration_policy":{}}"#] {
        let p = migration_policy(manifest).unwrap();
        assert!(p.enabled, "{}", String::from_utf8_lossy(manifest));
        assert_eq!(p.max_price_per_second, None);
    }
    // A policy that only sets a cap still allows migration under it.
    let capped = br#"{"migration_policy":{"max_price_per_second":50}}"#;
    assert!(migration_policy(capped).unwrap().enabled);
    assert!(check_price_policy(capped, Microcents(50)).is_ok());
    assert!(check_price_policy(capped, Microcents(51)).is_err());
    let off = migration_policy(br#"{"migration_policy":{"enabled":false,"max_price_per_second":9}}"#).unwrap();
    assert_eq!((off.enabled, off.max_price_per_second), (false, Some(9)));
    assert!(migration_policy(b"[1,2").unwrap_err().starts_with("manifest: "));
}

/// One strict parser (`Manifest::parse`): what the old lenient reader let
/// through silently is an error naming the field. A typo'd `enable: false`
/// used to leave migration enabled.
#[test]
fn migration_policy_is_parsed_strictly() {
    for (manifest, field) in [
        (&br#"{"migration_policy":{"enable":false}}"#[..], "migration_policy.enable"),
        (br#"{"migration_policy":null}"#, "migration_policy"),
        (br#"{"migration_policy":{"enabled":"no"}}"#, "migration_policy.enabled"),
        (br#"{"migration_policy":{"max_price_per_second":-1}}"#, "migration_policy.max_price_per_second"),
    ] {
        let e = migration_policy(manifest).unwrap_err();
        assert!(e.contains(field), "{}: {e}", String::from_utf8_lossy(manifest));
        assert!(check_price_policy(manifest, Microcents(0)).is_err(), "{e}");
    }
}

#[test]
fn price_cap_boundary_and_no_cap() {
    let m = br#"{"migration_policy":{"max_price_per_second":100}}"#;
    assert_eq!(check_price_policy(m, Microcents(99)), Ok(()));
    assert_eq!(check_price_policy(m, Microcents(100)), Ok(()));
    assert_eq!(
        check_price_policy(m, Microcents(101)),
        Err("price 101 above the agent's max_price_per_second 100".to_string())
    );
    // 0 means no cap at all (a negative cap is a manifest error, see
    // `migration_policy_is_parsed_strictly`).
    let uncapped = br#"{"migration_policy":{"max_price_per_second":0}}"#;
    assert_eq!(check_price_policy(uncapped, Microcents(i64::MAX)), Ok(()));
    assert_eq!(check_price_policy(uncapped, Microcents(1)), Ok(()));
    let off = br#"{"migration_policy":{"enabled":false}}"#;
    assert_eq!(
        check_price_policy(off, Microcents(0)),
        Err("migration disabled by the agent's migration_policy".into())
    );
    assert!(check_price_policy(b"not json", Microcents(0)).is_err());
}

// ---- the target's judgement of a package ----

const WASM: &[u8] = b"agent.wasm";
const NOW: i64 = 50_000;
const EXPIRY: i64 = 60_000;
const ISSUED: i64 = 40_000;

/// The target's clock at `now`, started long before the package was issued.
fn clock(now_unix_ns: i64) -> JudgeClock {
    JudgeClock { now_unix_ns, started_unix_ns: 0 }
}

fn agent_key() -> Keypair {
    Keypair::from_seed([7; 32])
}

/// The package's checkpoint: tick 10 at `epoch`, signed by the agent key.
fn checkpoint(epoch: Epoch) -> Checkpoint {
    CheckpointBody {
        budget: Microcents(9_000),
        price_per_second: Microcents(3),
        tick: TickNumber(10),
        wasm_hash: Hash32::of(WASM),
        epoch,
        lease_expiry_ns: 0,
        prev_hash: Hash32::of(b"parent"),
        state: b"state".to_vec(),
    }
    .sign(&agent_key())
}

/// Facts of an honest package carrying `c` (header agrees with the checkpoint).
fn facts<'a>(c: &'a Checkpoint, wasm_field: &'a [u8]) -> PackageFacts<'a> {
    PackageFacts {
        epoch: c.epoch,
        expiry_unix_ns: EXPIRY,
        checkpoint: c,
        checkpoint_hash: c.hash(),
        head_tick: c.tick,
        head_hash: c.hash(),
        wasm_hash_field: wasm_field,
        wasm_hash_actual: Hash32::of(WASM),
        budget: c.budget,
        identity: Some(agent_key().public()),
        issued_unix_ns: ISSUED,
    }
}

/// A node that knows the agent from an earlier stay: retired at `epoch`,
/// head at tick 5, same agent key.
fn former_host(epoch: Epoch) -> LocalView {
    LocalView {
        state: AuthorityState::Retired,
        epoch,
        head_tick: Some(TickNumber(5)),
        agent_key: Some(agent_key().public()),
        has_checkpoint: false,
    }
}

fn refused(j: &Judgement) -> bool {
    matches!(j, Judgement::Refuse(_))
}

/// The text of a refusal (what reaches the wire and the traces), if `j`
/// is one.
fn refusal_text(j: &Judgement) -> Option<String> {
    match j {
        Judgement::Refuse(r) => Some(r.to_string()),
        _ => None,
    }
}

const ALL_OFF: JudgeChecks = JudgeChecks { replay_window: false, divergence_detection: false, identity: false };

#[test]
fn honest_package_is_accepted_by_a_new_or_former_host() {
    let c = checkpoint(Epoch::new(3, 1));
    let wasm_field = Hash32::of(WASM).0;
    let p = facts(&c, &wasm_field);
    assert_eq!(judge_package(None, &p, clock(NOW)), Judgement::Accept);
    assert_eq!(judge_package(Some(&former_host(Epoch::new(2, 4))), &p, clock(NOW)), Judgement::Accept);
    assert_eq!(judge_package_with(None, &p, clock(NOW), ALL_OFF), Judgement::Accept);
}

/// Each header field that disagrees with the checkpoint it carries is a
/// refusal on its own (the `||` of the consistency check), whatever
/// defences are switched on.
#[test]
fn header_must_agree_with_the_checkpoint_field_by_field() {
    let c = checkpoint(Epoch::new(3, 1));
    let wasm_field = Hash32::of(WASM).0;
    let honest = facts(&c, &wasm_field);
    let cases: [(&str, PackageFacts<'_>); 3] = [
        ("epoch", PackageFacts { epoch: Epoch::new(3, 2), ..honest.clone() }),
        ("tick", PackageFacts { head_tick: TickNumber(11), ..honest.clone() }),
        ("hash", PackageFacts { head_hash: Hash32::of(b"another head"), ..honest.clone() }),
    ];
    for (field, p) in cases {
        for checks in [JudgeChecks::default(), ALL_OFF] {
            let j = judge_package_with(None, &p, clock(NOW), checks);
            let Some(why) = refusal_text(&j) else { panic!("{field}: {j:?}") };
            assert!(why.starts_with("header claims"), "{field}: {why}");
        }
    }
}

#[test]
fn wasm_hash_field_and_binary_must_match_the_checkpoint() {
    let c = checkpoint(Epoch::new(3, 1));
    let right = Hash32::of(WASM).0;
    let wrong = Hash32::of(b"other.wasm").0;
    let j = judge_package(None, &facts(&c, &wrong), clock(NOW));
    assert_eq!(
        refusal_text(&j),
        Some(format!("WASMHash field does not match the binary ({})", Hash32::of(WASM).short()))
    );
    // Field and binary agree with each other but not with the checkpoint.
    let p = PackageFacts { wasm_hash_actual: Hash32::of(b"other.wasm"), ..facts(&c, &wrong) };
    assert!(refused(&judge_package_with(None, &p, clock(NOW), ALL_OFF)));
    assert_eq!(judge_package_with(None, &facts(&c, &right), clock(NOW), ALL_OFF), Judgement::Accept);
}

/// RE-3: the money in flight is the checkpoint's budget, to the microcent.
#[test]
fn budget_must_be_the_checkpoints() {
    let c = checkpoint(Epoch::new(3, 1));
    let wasm_field = Hash32::of(WASM).0;
    for budget in [Microcents(8_999), Microcents(9_001)] {
        let p = PackageFacts { budget, ..facts(&c, &wasm_field) };
        assert_eq!(
            refusal_text(&judge_package_with(None, &p, clock(NOW), ALL_OFF)),
            Some(format!("Budget {budget} differs from the checkpoint's {}", c.budget))
        );
    }
}

#[test]
fn unsigned_or_forged_checkpoints_are_refused_when_identity_checks_are_on() {
    let wasm_field = Hash32::of(WASM).0;
    let mut unsigned = checkpoint(Epoch::new(3, 1));
    unsigned.seal = None;
    let mut forged = checkpoint(Epoch::new(3, 1));
    forged.state = b"tampered".to_vec(); // signature no longer covers the state
    for c in [&unsigned, &forged] {
        let p = PackageFacts { identity: c.agent_key().copied(), ..facts(c, &wasm_field) };
        assert!(refused(&judge_package(None, &p, clock(NOW))), "{p:?}");
        let identity_off = JudgeChecks { identity: false, ..JudgeChecks::default() };
        assert_eq!(judge_package_with(None, &p, clock(NOW), identity_off), Judgement::Accept, "defence off: {p:?}");
    }
}

/// The package's AgentIdentity must be the key that signed its checkpoint,
/// and the key this node already knows for the agent (continuity).
#[test]
fn identity_must_be_the_signing_key_and_continue_the_local_one() {
    let c = checkpoint(Epoch::new(3, 1));
    let wasm_field = Hash32::of(WASM).0;
    let stranger = Keypair::from_seed([8; 32]).public();
    let identity_off = JudgeChecks { identity: false, ..JudgeChecks::default() };
    for identity in [None, Some(stranger)] {
        let p = PackageFacts { identity, ..facts(&c, &wasm_field) };
        assert_eq!(
            refusal_text(&judge_package(None, &p, clock(NOW))),
            Some("AgentIdentity missing or not the checkpoint's signing key".into()),
            "{identity:?}"
        );
        assert_eq!(judge_package_with(None, &p, clock(NOW), identity_off), Judgement::Accept);
    }
    let p = facts(&c, &wasm_field);
    let known_other = LocalView { agent_key: Some(stranger), ..former_host(Epoch::new(2, 0)) };
    assert_eq!(
        refusal_text(&judge_package(Some(&known_other), &p, clock(NOW))),
        Some("identity discontinuity: agent key differs from local history".into())
    );
    assert_eq!(judge_package_with(Some(&known_other), &p, clock(NOW), identity_off), Judgement::Accept);
    let key_unknown = LocalView { agent_key: None, ..former_host(Epoch::new(2, 0)) };
    assert_eq!(judge_package(Some(&key_unknown), &p, clock(NOW)), Judgement::Accept);
}

/// A package must move the agent forward past what this node already holds.
#[test]
fn checkpoint_tick_must_be_after_the_local_head() {
    let c = checkpoint(Epoch::new(3, 1)); // tick 10
    let wasm_field = Hash32::of(WASM).0;
    let p = facts(&c, &wasm_field);
    for (head, accept) in [(None, true), (Some(0), true), (Some(9), true), (Some(10), false), (Some(11), false)] {
        let local = LocalView { head_tick: head.map(TickNumber), ..former_host(Epoch::new(2, 0)) };
        let j = judge_package_with(Some(&local), &p, clock(NOW), ALL_OFF);
        if accept {
            assert_eq!(j, Judgement::Accept, "head {head:?}");
        } else {
            let expected = format!("checkpoint tick 10 not after local head tick {}", head.unwrap());
            assert_eq!(refusal_text(&j), Some(expected));
        }
    }
}

/// The package expires at its expiry instant exclusive: still good at it.
#[test]
fn expiry_boundary() {
    let c = checkpoint(Epoch::new(3, 1));
    let wasm_field = Hash32::of(WASM).0;
    let p = facts(&c, &wasm_field);
    assert_eq!(judge_package(None, &p, clock(EXPIRY - 1)), Judgement::Accept);
    assert_eq!(judge_package(None, &p, clock(EXPIRY)), Judgement::Accept);
    assert_eq!(
        refusal_text(&judge_package(None, &p, clock(EXPIRY + 1))),
        Some(format!("package expired at {EXPIRY} (now {})", EXPIRY + 1))
    );
    let no_window = JudgeChecks { replay_window: false, ..JudgeChecks::default() };
    assert_eq!(judge_package_with(None, &p, clock(EXPIRY + 1), no_window), Judgement::Accept);
}

fn local(state: AuthorityState, epoch: Epoch) -> LocalView {
    LocalView { state, ..former_host(epoch) }
}

/// Step 1 of the judgement: this node assumed from this very package (it
/// holds the checkpoint and a newer major): confirm again, even if the
/// duplicate has expired meanwhile. Anything short of that is no duplicate.
#[test]
fn duplicate_of_an_accepted_package_is_confirmed_again() {
    let c = checkpoint(Epoch::new(3, 1));
    let wasm_field = Hash32::of(WASM).0;
    let p = facts(&c, &wasm_field);
    let assumed = LocalView {
        has_checkpoint: true,
        head_tick: Some(TickNumber(12)),
        ..local(AuthorityState::ActiveOwner, Epoch::new(4, 0))
    };
    assert_eq!(judge_package(Some(&assumed), &p, clock(NOW)), Judgement::AlreadyAccepted);
    assert_eq!(judge_package(Some(&assumed), &p, clock(EXPIRY + 1)), Judgement::AlreadyAccepted, "expired duplicate");
    // Same major with the checkpoint: not a duplicate of an accepted package.
    let same_major = LocalView { has_checkpoint: true, ..local(AuthorityState::Retired, Epoch::new(3, 0)) };
    assert_ne!(judge_package(Some(&same_major), &p, clock(NOW)), Judgement::AlreadyAccepted);
    // Newer major without the checkpoint: a stale package, refused.
    let newer = local(AuthorityState::ActiveOwner, Epoch::new(4, 0));
    assert!(refused(&judge_package(Some(&newer), &p, clock(NOW))));
}

/// A node that (re)started after the package was issued must not act on it
/// (spec §5: a node that lost its disk knows nothing).
#[test]
fn package_issued_before_this_node_started_is_refused() {
    let c = checkpoint(Epoch::new(3, 1));
    let wasm_field = Hash32::of(WASM).0;
    let p = facts(&c, &wasm_field); // issued at ISSUED
    let at = |started| JudgeClock { now_unix_ns: NOW, started_unix_ns: started };
    assert_eq!(judge_package(None, &p, at(ISSUED - 1)), Judgement::Accept);
    assert_eq!(judge_package(None, &p, at(ISSUED)), Judgement::Accept);
    assert_eq!(
        refusal_text(&judge_package(None, &p, at(ISSUED + 1))),
        Some(format!("package issued at {ISSUED} before this node started at {}", ISSUED + 1))
    );
}

/// Step 4, the local authority: what a verified package at each epoch
/// relative to the local one means in each state.
#[test]
fn verified_package_against_every_local_state_and_epoch() {
    use AuthorityState::*;
    use Judgement::*;
    let local_epoch = Epoch::new(3, 1);
    let older = [Epoch::new(2, 9), Epoch::new(3, 0)];
    let newer = [Epoch::new(3, 2), Epoch::new(4, 0)];
    for state in [ActiveOwner, HandoffInitiated, HandoffPending, Retired, RecoveryRequired] {
        for (epoch, relation) in older
            .iter()
            .map(|e| (*e, "older"))
            .chain([(local_epoch, "same")])
            .chain(newer.iter().map(|e| (*e, "newer")))
        {
            let c = checkpoint(epoch);
            let wasm_field = Hash32::of(WASM).0;
            let p = facts(&c, &wasm_field);
            let l = local(state, local_epoch);
            let j = judge_package(Some(&l), &p, clock(NOW));
            let holds = matches!(state, ActiveOwner | HandoffInitiated | HandoffPending);
            let ok = match (state, relation) {
                (RecoveryRequired, _) => matches!(&j, Refuse(w) if w.to_string().contains("RECOVERY_REQUIRED")),
                (_, "older") => matches!(&j, Refuse(w) if w.to_string().starts_with("stale package")),
                (_, "same") if holds => matches!(&j, Conflict { reason: Reason::Divergence, .. }),
                (_, "newer") if holds => matches!(&j, Conflict { reason: Reason::Superseded, .. }),
                _ => j == Accept,
            };
            assert!(ok, "{state} at {local_epoch}, package {epoch} ({relation}): {j:?}");
        }
    }
}

/// A same-epoch package whose checkpoint this node already holds is a
/// refusal (nothing to take over), not a divergence.
#[test]
fn same_epoch_package_already_held_is_refused_not_divergent() {
    let c = checkpoint(Epoch::new(3, 1));
    let wasm_field = Hash32::of(WASM).0;
    let p = facts(&c, &wasm_field);
    let held = LocalView { has_checkpoint: true, ..local(AuthorityState::ActiveOwner, Epoch::new(3, 1)) };
    assert_eq!(
        refusal_text(&judge_package(Some(&held), &p, clock(NOW))),
        Some("this node already holds checkpoint 10 at 3.1".into())
    );
}

/// Switching a defence off lets through exactly what it stops (scenarios
/// show the attack): the replay window stops stale epochs, divergence
/// detection stops same-epoch takeovers.
#[test]
fn defences_switched_off_let_their_attack_through() {
    use AuthorityState::*;
    let c = checkpoint(Epoch::new(3, 1));
    let wasm_field = Hash32::of(WASM).0;
    let p = facts(&c, &wasm_field);
    let no_window = JudgeChecks { replay_window: false, ..JudgeChecks::default() };
    let retired_newer = local(Retired, Epoch::new(3, 5));
    assert_eq!(judge_package_with(Some(&retired_newer), &p, clock(NOW), no_window), Judgement::Accept);
    let owner_same = local(ActiveOwner, Epoch::new(3, 1));
    let no_divergence = JudgeChecks { divergence_detection: false, ..JudgeChecks::default() };
    assert_eq!(judge_package_with(Some(&owner_same), &p, clock(NOW), no_divergence), Judgement::Accept);
    // Divergence detection off does not hide a newer verified claim.
    let owner_older = local(ActiveOwner, Epoch::new(3, 0));
    assert!(matches!(
        judge_package_with(Some(&owner_older), &p, clock(NOW), no_divergence),
        Judgement::Conflict { reason: Reason::Superseded, .. }
    ));
}

/// Authentication comes before authority: an unsigned or forged package
/// never knocks a running owner over (it is refused, not a conflict).
#[test]
fn unauthenticated_package_never_conflicts_with_a_running_owner() {
    let wasm_field = Hash32::of(WASM).0;
    let mut unsigned = checkpoint(Epoch::new(5, 0));
    unsigned.seal = None;
    let p = PackageFacts { identity: None, ..facts(&unsigned, &wasm_field) };
    let owner = local(AuthorityState::ActiveOwner, Epoch::new(3, 1));
    assert!(refused(&judge_package(Some(&owner), &p, clock(NOW))));
    let c = checkpoint(Epoch::new(5, 0));
    let p = PackageFacts { budget: Microcents(1), ..facts(&c, &wasm_field) };
    assert!(refused(&judge_package(Some(&owner), &p, clock(NOW))));
}
