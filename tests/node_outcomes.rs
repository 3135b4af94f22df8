//! One test per failure outcome of spec §6 (and the §5 rules they lean
//! on), each on a hand-driven cluster of real nodes with the counter
//! executor. Every test also checks the cluster invariants at the end.

#[path = "node_harness.rs"]
mod harness;

use harness::{COST, Cluster, agent};
use igor::authority::{AuthorityState, Reason};
use igor::checkpoint::Hash32;
use igor::env::Disk;
use igor::env::mem::WriteStep;
use igor::identity::Keypair;
use igor::migration::Outcome;
use igor::node::fake::CounterExecutor;
use igor::node::{Command, Event, NodeConfig};
use igor::units::{Epoch, TickNumber};
use igor::wire::{Body, Envelope, HeadAnnounce, Header, agent_claim_bytes};

const S: u64 = 1_000_000_000;

fn quick(cfg: &mut NodeConfig) {
    cfg.checkpoint_interval_ns = 2 * S;
}

/// Deploy on n0 and let it run a little.
fn running(n: usize) -> Cluster {
    let mut c = Cluster::new(n, 7, quick);
    c.deploy(0, 1_000_000);
    c.advance(5 * S);
    c.settle();
    assert_eq!(c.tickers(), vec![0]);
    c
}

fn migrate(c: &mut Cluster, from: usize, to: usize) {
    let to = c.ids[to].clone();
    c.node(from).command(Command::Migrate { agent: agent(), to }).unwrap();
    c.pump();
}

fn transfer_index(c: &Cluster) -> usize {
    c.requests
        .iter()
        .position(|r| matches!(Envelope::decode(&r.body).map(|e| e.body), Ok(Body::AgentTransfer(_))))
        .expect("a transfer is in flight")
}

fn outcomes(c: &Cluster, node: usize) -> Vec<Outcome> {
    c.events
        .iter()
        .filter(|e| e.node == c.ids[node])
        .filter_map(|e| match &e.event {
            Event::MigrationFinished { outcome, .. } => Some(outcome.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn happy_path_moves_the_agent_and_retires_the_source() {
    let mut c = running(2);
    migrate(&mut c, 0, 1);
    assert_eq!(c.state(0), Some(AuthorityState::HandoffPending));
    assert!(c.tickers().is_empty(), "nobody ticks while the package is in flight");
    c.settle();
    assert_eq!(c.state(0), Some(AuthorityState::Retired));
    assert_eq!(c.state(1), Some(AuthorityState::ActiveOwner));
    let v = c.node(1).agent(&agent()).unwrap();
    assert_eq!(v.epoch, Epoch::new(2, 0), "target epoch is (major+1, 0)");
    assert!(!c.disks[0].exists("agents/counter/agent.wasm"), "source deleted its copy");
    assert!(!c.disks[0].exists("agents/counter/agent.key"), "source deleted the agent key");
    let before = c.ticks_by(1);
    c.advance(3 * S);
    assert!(c.ticks_by(1) > before, "target ticks");
    assert_eq!(outcomes(&c, 0), vec![Outcome::Completed]);
    c.check().unwrap();
}

#[test]
fn handoff_seals_a_fresh_checkpoint_not_an_old_one() {
    fn rare(cfg: &mut NodeConfig) {
        cfg.checkpoint_interval_ns = 100 * S;
    }
    let mut c = Cluster::new(2, 5, rare);
    c.deploy(0, 1_000_000);
    c.advance(5 * S); // ticks after the genesis checkpoint, none committed
    let tick = c.node(0).agent(&agent()).unwrap().tick;
    migrate(&mut c, 0, 1);
    let head = c.node(0).agent(&agent()).unwrap().head_tick;
    assert_eq!(head, Some(tick), "the handoff checkpoint holds every tick run");
    assert!(c.events.iter().any(|e| matches!(e.event, Event::CheckpointCommitted { handoff: true, .. })));
    c.settle();
    c.check().unwrap();
}

#[test]
fn source_crash_before_relinquishing_keeps_authority() {
    fn every_tick(cfg: &mut NodeConfig) {
        cfg.checkpoint_interval_ns = 1; // the head is always fresh: sealing writes nothing
    }
    let mut c = Cluster::new(2, 4, every_tick);
    c.deploy(0, 1_000_000);
    c.advance(3 * S);
    // The relinquish (HANDOFF_PENDING) write dies: as a crash at that point.
    c.disks[0].interrupt_next_write("authority.json", WriteStep::Rename);
    migrate(&mut c, 0, 1);
    c.crash(0);
    c.restart(0);
    assert_eq!(c.state(0), Some(AuthorityState::ActiveOwner));
    assert!(
        c.requests.iter().all(|r| !matches!(Envelope::decode(&r.body).map(|e| e.body), Ok(Body::AgentTransfer(_))))
    );
    let before = c.ticks_by(0);
    c.advance(3 * S);
    c.settle();
    assert!(c.ticks_by(0) > before, "source keeps ticking after restart");
    c.check().unwrap();
}

#[test]
fn source_crash_after_relinquishing_without_confirmation_is_recovery_required() {
    let mut c = running(2);
    migrate(&mut c, 0, 1);
    c.requests.clear(); // the package never arrives
    c.crash(0);
    c.restart(0);
    assert_eq!(c.state(0), Some(AuthorityState::RecoveryRequired));
    assert_eq!(c.state(1), None);
    c.advance(10 * S);
    c.settle();
    assert!(c.tickers().is_empty());
    // The operator recovers on n0 from its newest checkpoint: one owner,
    // under a major above every one seen plus one skipped (the target may
    // have assumed at major 2 unheard: spec §5, recovery epochs).
    let head = c.node(0).agent(&agent()).unwrap().head_hash;
    let wrong = Hash32::of(b"not the head");
    assert!(c.node(0).command(Command::Recover { agent: agent(), anchor: wrong, force: false }).is_err());
    c.node(0).command(Command::Recover { agent: agent(), anchor: head, force: false }).unwrap();
    // The recovery asks n1 first (spec §5): the answer completes it.
    c.pump();
    assert_eq!(c.state(0), Some(AuthorityState::RecoveryRequired), "waits for the peers' answers");
    c.settle();
    c.pump();
    let v = c.node(0).agent(&agent()).unwrap();
    assert_eq!((v.state, v.epoch.major), (AuthorityState::ActiveOwner, 3));
    let before = c.ticks_by(0);
    c.advance(3 * S);
    c.settle();
    assert!(c.ticks_by(0) > before);
    c.check().unwrap();
}

#[test]
fn target_crash_after_assuming_keeps_authority_and_source_is_ambiguous() {
    let mut c = running(2);
    migrate(&mut c, 0, 1);
    let k = transfer_index(&c);
    c.deliver(k, false);
    assert_eq!(c.state(1), Some(AuthorityState::ActiveOwner));
    c.crash(1); // before its confirmation reaches the source
    c.restart(1);
    assert_eq!(c.state(1), Some(AuthorityState::ActiveOwner), "target keeps authority");
    // The confirmation is lost: the source cannot know, so it pauses.
    let k = c.replies.iter().position(|r| r.to == 0).unwrap();
    c.deliver_reply(k, true);
    assert_eq!(c.state(0), Some(AuthorityState::RecoveryRequired));
    assert!(outcomes(&c, 0)[0].is_ambiguous());
    c.advance(3 * S);
    c.settle();
    assert_eq!(c.tickers(), vec![1]);
    c.check().unwrap();
}

#[test]
fn reply_timeout_after_send_is_ambiguous_never_a_retry() {
    let mut c = running(2);
    migrate(&mut c, 0, 1);
    let k = transfer_index(&c);
    c.deliver(k, false); // target assumes
    c.replies.clear(); // but the source hears nothing, not even an error
    c.advance(6 * S);
    assert_eq!(c.state(0), Some(AuthorityState::RecoveryRequired));
    let sent = c.events.iter().filter(|e| matches!(e.event, Event::PackageSent { .. })).count();
    assert_eq!(sent, 1, "no blind retry after an ambiguous send");
    c.settle();
    assert_eq!(c.tickers(), vec![1]);
    c.check().unwrap();
}

#[test]
fn partition_before_send_retries_with_backoff_then_stays_on_source() {
    let mut c = running(2);
    migrate(&mut c, 0, 1);
    for attempt in 1..=5 {
        let k = transfer_index(&c);
        c.drop_request(k, true, true); // Unreachable: never delivered
        let r = c.replies.len() - 1;
        c.deliver_reply(r, false);
        if attempt < 5 {
            assert!(c.tickers().is_empty(), "no ticking while the handoff is pending");
        }
        c.advance(S); // past the backoff (capped, 0.8 s at most here), before the reply deadline
    }
    let retries = c.events.iter().filter(|e| matches!(e.event, Event::RetryScheduled { .. })).count();
    assert_eq!(retries, 4, "max_attempts = 5 sends, so 4 retries");
    assert!(matches!(outcomes(&c, 0).last(), Some(Outcome::FailedBeforeSend(_))));
    assert_eq!(c.state(0), Some(AuthorityState::ActiveOwner));
    assert_eq!(c.tickers(), vec![0]);
    c.check().unwrap();
}

#[test]
fn partition_after_send_never_gives_two_tickers() {
    let mut c = running(3);
    migrate(&mut c, 0, 1);
    let k = transfer_index(&c);
    c.deliver(k, false);
    let k = c.replies.iter().position(|r| r.to == 0).unwrap();
    c.drop_request(0, false, false);
    c.replies.remove(k); // the reply is cut by the partition
    for _ in 0..10 {
        c.advance(S);
        c.check().unwrap();
    }
    assert_eq!(c.state(0), Some(AuthorityState::RecoveryRequired));
    assert_eq!(c.tickers(), vec![1]);
}

#[test]
fn second_migration_while_in_flight_is_refused() {
    let mut c = running(3);
    migrate(&mut c, 0, 1);
    let to = c.ids[2].clone();
    let err = c.node(0).command(Command::Migrate { agent: agent(), to }).unwrap_err();
    assert!(err.reason.to_string().contains("already in flight"), "{err}");
    assert!(matches!(err.reason, igor::node::NodeError::Operator { .. }), "the operator's request: {err:?}");
    c.pump();
    assert!(c.events.iter().any(|e| matches!(e.event, Event::CommandRefused { .. })));
    c.settle();
    assert_eq!(c.state(1), Some(AuthorityState::ActiveOwner));
    assert_eq!(c.state(2), None);
    c.check().unwrap();
}

fn refusing_target(i: usize) -> CounterExecutor {
    let mut x = CounterExecutor::new(COST);
    if i == 1 {
        x.unsupported.insert("capabilities".into());
    }
    x
}

#[test]
fn refused_transfer_leaves_the_agent_on_the_source_after_the_package_expires() {
    let mut c = Cluster::with_executors(2, 9, quick, refusing_target);
    c.deploy(0, 1_000_000);
    c.advance(3 * S);
    migrate(&mut c, 0, 1);
    c.settle();
    assert_eq!(c.state(1), None, "the target refused and kept nothing");
    assert_eq!(c.state(0), Some(AuthorityState::HandoffPending), "waits out duplicates of the package");
    c.advance(6 * S);
    assert_eq!(c.state(0), Some(AuthorityState::ActiveOwner));
    assert!(matches!(outcomes(&c, 0).last(), Some(Outcome::Refused(r)) if r.contains("capability")));
    let before = c.ticks_by(0);
    c.advance(3 * S);
    assert!(c.ticks_by(0) > before);
    c.check().unwrap();
}

#[test]
fn price_policy_refuses_an_expensive_target() {
    fn pricey(cfg: &mut NodeConfig) {
        quick(cfg);
        if cfg.node_id.as_str() == "n1" {
            cfg.price_per_second = igor::units::Microcents(5_000);
        }
    }
    let mut c = Cluster::new(2, 3, pricey);
    let manifest = br#"{"migration_policy":{"enabled":true,"max_price_per_second":2000}}"#;
    c.node(0).deploy(agent(), b"m".to_vec(), manifest.to_vec(), igor::units::Microcents(100_000)).unwrap();
    c.pump();
    migrate(&mut c, 0, 1);
    c.settle();
    c.advance(6 * S);
    assert!(matches!(outcomes(&c, 0).last(), Some(Outcome::Refused(r)) if r.contains("max_price_per_second")));
    assert_eq!(c.state(0), Some(AuthorityState::ActiveOwner));
    c.check().unwrap();
}

#[test]
fn duplicated_package_is_confirmed_again_never_a_second_owner() {
    let mut c = running(2);
    migrate(&mut c, 0, 1);
    let k = transfer_index(&c);
    c.deliver(k, true);
    c.deliver(k, false);
    c.settle();
    assert_eq!(c.state(0), Some(AuthorityState::Retired));
    assert_eq!(c.tickers(), vec![1]);
    assert!(c.node(1).stale_messages() >= 1, "the duplicate is counted");
    c.check().unwrap();
}

#[test]
fn stale_checkpoint_on_restart_must_not_tick() {
    let mut c = running(2);
    c.advance(4 * S);
    let head = c.node(0).agent(&agent()).unwrap().head_tick.unwrap();
    c.crash(0);
    c.disks[0].remove(&harness::history_path(head.0)).unwrap(); // the newest checkpoint is lost
    c.restart(0);
    assert_eq!(c.state(0), Some(AuthorityState::RecoveryRequired));
    assert!(c.tickers().is_empty());
    let loaded = c.events.iter().rev().find(|e| matches!(e.event, Event::AuthorityChanged { .. })).unwrap();
    assert!(matches!(&loaded.event, Event::AuthorityChanged { reason: Reason::RestartInDoubt, .. }), "{loaded}");
}

#[test]
fn damaged_newest_checkpoint_on_restart_must_not_tick() {
    let mut c = running(1);
    let head = c.node(0).agent(&agent()).unwrap().head_tick.unwrap();
    c.crash(0);
    c.disks[0].flip_bit(&harness::history_path(head.0), 30, 1).unwrap();
    c.restart(0);
    assert_eq!(c.state(0), Some(AuthorityState::RecoveryRequired));
}

#[test]
fn restart_from_a_rolled_back_disk_that_ticked_is_caught_by_a_peer() {
    let mut c = running(2);
    // Keep a full copy of n0's disk as it is now (an old backup).
    let backup = igor::env::mem::MemDisk::new();
    for p in c.disks[0].paths() {
        backup.write_atomic(&p, &c.disks[0].read(&p).unwrap()).unwrap();
    }
    migrate(&mut c, 0, 1);
    c.settle();
    assert_eq!(c.state(1), Some(AuthorityState::ActiveOwner));
    // n0 comes back from the backup: locally it looks like a valid owner.
    c.crash(0);
    c.disks[0] = backup;
    c.restart(0);
    c.settle(); // its head announcement meets n1's newer epoch
    assert_eq!(c.state(0), Some(AuthorityState::RecoveryRequired));
    assert!(c.events.iter().any(|e| e.node == c.ids[1] && matches!(e.event, Event::StaleMessageIgnored { .. })));
    assert_eq!(c.tickers(), vec![1]);
}

#[test]
fn lease_expiry_is_recovery_required_never_self_recovery() {
    let mut c = running(1);
    c.clock.skew_unix_ns(80 * S as i64); // the wall clock jumps past expiry + grace
    c.advance(S);
    assert_eq!(c.state(0), Some(AuthorityState::RecoveryRequired));
    assert!(c.events.iter().any(|e| matches!(e.event, Event::AuthorityChanged { reason: Reason::LeaseExpired, .. })));
}

#[test]
fn unsafe_self_recovery_flag_recovers_on_lease_expiry() {
    fn unsafe_mode(cfg: &mut NodeConfig) {
        quick(cfg);
        cfg.unsafe_self_recover_on_lease_expiry = true;
    }
    let mut c = Cluster::new(1, 2, unsafe_mode);
    c.deploy(0, 1_000_000);
    c.advance(3 * S);
    c.clock.skew_unix_ns(80 * S as i64);
    c.advance(S);
    assert_eq!(c.state(0), Some(AuthorityState::ActiveOwner));
    assert!(
        c.events.iter().any(|e| matches!(e.event, Event::AuthorityChanged { reason: Reason::UnsafeSelfRecovery, .. }))
    );
}

#[test]
fn lease_renewal_bumps_generation_and_is_recorded_in_the_next_checkpoint() {
    let mut c = running(1);
    c.advance(31 * S);
    let v = c.node(0).agent(&agent()).unwrap();
    assert_eq!(v.epoch, Epoch::new(1, 1));
    c.advance(3 * S);
    let last = c.all_checkpoints().into_iter().max_by_key(|(_, ck, _)| ck.tick).unwrap().1;
    assert_eq!(last.epoch, Epoch::new(1, 1));
    assert_eq!(last.lease_expiry_ns, c.node(0).agent(&agent()).unwrap().lease_expiry_ns);
}

fn announce(c: &Cluster, from: usize, to: usize, epoch: Epoch, tick: u64, hash: Hash32) -> Vec<u8> {
    claim(c, from, to, epoch, tick, hash, None)
}

/// A head announcement, signed with `agent_key` (the agent's own key) when given.
fn claim(
    c: &Cluster,
    from: usize,
    to: usize,
    epoch: Epoch,
    tick: u64,
    hash: Hash32,
    agent_key: Option<&Keypair>,
) -> Vec<u8> {
    // A fresh nonce per claim: a repeated one is a replay (defence `replay_window`).
    static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let h = Header {
        issuer: c.ids[from].clone(),
        audience: c.ids[to].clone(),
        agent: agent(),
        epoch,
        head_tick: TickNumber(tick),
        head_hash: hash,
        nonce: NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        issued_unix_ns: 0,
        expiry_unix_ns: soon(c),
    };
    head_announce(h, AuthorityState::ActiveOwner, agent_key, false)
}

/// A `HeadAnnounce` of `h` in `state`, signed with `key` when given, which
/// it also offers as the agent key if `offer_key`.
fn head_announce(h: Header, state: AuthorityState, key: Option<&Keypair>, offer_key: bool) -> Vec<u8> {
    let agent_signature = key.map(|k| k.sign(&agent_claim_bytes(&h, Some(state))).0.to_vec());
    let agent_key = key.filter(|_| offer_key).map(|k| k.public().as_bytes().to_vec());
    Envelope::new(h, Body::HeadAnnounce(HeadAnnounce { state, agent_key, agent_signature })).encode()
}

/// The agent's key, as the owner n0 stored it.
fn agent_key(c: &mut Cluster) -> Keypair {
    Keypair::load(c.node(0).disk(), &igor::lineage::agent_key_path(&agent())).unwrap()
}

#[test]
fn older_epoch_messages_are_ignored_and_counted() {
    let mut c = running(2);
    migrate(&mut c, 0, 1);
    c.settle();
    let from = c.ids[0].clone();
    let msg = announce(&c, 0, 1, Epoch::new(1, 0), 1, Hash32::of(b"old"));
    let before = c.node(1).stale_messages();
    c.node(1).handle_request(&from, &msg);
    assert_eq!(c.node(1).stale_messages(), before + 1);
    assert_eq!(c.state(1), Some(AuthorityState::ActiveOwner));
}

#[test]
fn conflicting_head_for_the_same_epoch_is_divergence_only_when_the_agent_signed_it() {
    let mut c = running(2);
    let v = c.node(0).agent(&agent()).unwrap();
    let from = c.ids[1].clone();
    // Any peer can claim a fork; only one signed by the agent key proves it.
    let msg = announce(&c, 1, 0, v.epoch, v.head_tick.unwrap().0, Hash32::of(b"a fork"));
    c.node(0).handle_request(&from, &msg);
    c.pump();
    assert_eq!(c.state(0), Some(AuthorityState::ActiveOwner), "an unsigned fork claim stops nothing");
    assert!(
        c.events.iter().any(|e| matches!(&e.event, Event::ClaimRejected { defence, .. } if *defence == igor::node::defence::Defence::SignedClaims))
    );
    let key = agent_key(&mut c);
    let msg = claim(&c, 1, 0, v.epoch, v.head_tick.unwrap().0, Hash32::of(b"a fork"), Some(&key));
    c.node(0).handle_request(&from, &msg);
    c.pump();
    assert_eq!(c.state(0), Some(AuthorityState::RecoveryRequired));
    assert!(c.events.iter().any(|e| matches!(e.event, Event::DivergenceDetected { .. })));
}

#[test]
fn an_unsigned_claim_of_a_newer_epoch_does_not_stop_a_running_agent() {
    // Issue 12: any peer could stop an owner by claiming a newer epoch.
    let mut c = running(2);
    let from = c.ids[1].clone();
    let forged = claim(&c, 1, 0, Epoch::new(9, 0), 99, Hash32::of(b"forged"), None);
    let wrong_key = Keypair::from_seed([3; 32]);
    let other = claim(&c, 1, 0, Epoch::new(9, 0), 99, Hash32::of(b"forged"), Some(&wrong_key));
    for msg in [forged, other] {
        c.node(0).handle_request(&from, &msg);
        c.pump();
        assert_eq!(c.state(0), Some(AuthorityState::ActiveOwner));
    }
    let before = c.ticks_by(0);
    c.advance(3 * S);
    c.settle();
    assert!(c.ticks_by(0) > before, "the owner keeps ticking");
    // The same claim signed by the agent key is believed: superseded.
    let key = agent_key(&mut c);
    let proven = claim(&c, 1, 0, Epoch::new(9, 0), 99, Hash32::of(b"forged"), Some(&key));
    c.node(0).handle_request(&from, &proven);
    c.pump();
    assert_eq!(c.state(0), Some(AuthorityState::RecoveryRequired));
    c.check().unwrap();
}

#[test]
fn malformed_requests_get_no_answer_and_change_nothing() {
    let mut c = running(2);
    let from = c.ids[1].clone();
    for junk in [&b""[..], b"{", b"\xff\xfe", &[b'a'; 10_000]] {
        assert!(c.node(0).handle_request(&from, junk).is_empty());
    }
    assert_eq!(c.state(0), Some(AuthorityState::ActiveOwner));
}

#[test]
fn replay_data_is_checked_by_the_target() {
    fn every_tick(cfg: &mut NodeConfig) {
        cfg.checkpoint_interval_ns = 1;
    }
    let mut c = Cluster::new(2, 11, every_tick);
    c.deploy(0, 1_000_000);
    c.advance(3 * S);
    migrate(&mut c, 0, 1);
    let k = transfer_index(&c);
    let Ok(Body::AgentTransfer(t)) = Envelope::decode(&c.requests[k].body).map(|e| e.body) else { unreachable!() };
    assert!(t.package.replay_data.is_some(), "one tick since the previous checkpoint: replayable");
    c.settle();
    assert_eq!(c.state(1), Some(AuthorityState::ActiveOwner));
    c.check().unwrap();
}

#[test]
fn budget_is_conserved_across_migrations_to_the_microcent() {
    let mut c = running(3);
    for (from, to) in [(0, 1), (1, 2), (2, 0)] {
        c.advance(3 * S);
        migrate(&mut c, from, to);
        c.settle();
        c.check().unwrap();
    }
    c.advance(5 * S);
    let v = c.node(0).agent(&agent()).unwrap();
    let charged: i64 = c
        .events
        .iter()
        .filter_map(|e| match &e.event {
            Event::CheckpointCommitted { charged, paid, .. } => Some(charged.0 + paid.0),
            _ => None,
        })
        .sum();
    let head = c.all_checkpoints().into_iter().max_by_key(|(_, ck, _)| ck.tick).unwrap().1;
    assert_eq!(head.budget.0 + charged, 1_000_000, "initial = remaining + charged + paid");
    assert_eq!(v.epoch.major, 4, "three transfers, three majors");
}

#[test]
fn a_package_whose_replay_base_is_not_the_parent_is_refused() {
    fn every_tick(cfg: &mut NodeConfig) {
        cfg.checkpoint_interval_ns = 1;
    }
    let mut c = Cluster::new(2, 12, every_tick);
    c.deploy(0, 1_000_000);
    c.advance(3 * S);
    migrate(&mut c, 0, 1);
    let k = transfer_index(&c);
    let mut env = Envelope::decode(&c.requests[k].body).unwrap();
    let Body::AgentTransfer(t) = &mut env.body else { unreachable!() };
    let r = t.package.replay_data.as_mut().unwrap();
    let last = r.prev_checkpoint.len() - 1;
    r.prev_checkpoint[last] ^= 1; // a different (forged) base state
    c.requests[k].body = env.encode();
    c.settle();
    assert_eq!(c.state(1), None, "target refused");
    let refused = c.events.iter().any(|e| {
        e.node == c.ids[1]
            && matches!(&e.event, Event::MigrationFinished { outcome: Outcome::Refused(r), .. } if r.contains("replay base"))
    });
    assert!(refused, "{}", c.trace_tail(10));
    c.advance(6 * S);
    assert_eq!(c.state(0), Some(AuthorityState::ActiveOwner), "stays on the source");
    c.check().unwrap();
}

#[test]
fn recovery_after_a_chain_whose_last_hop_was_wiped_takes_a_fresh_major() {
    // Explore disk-swarm seeds 816 and 1043: a -> b ends in doubt (a is
    // RECOVERY_REQUIRED, b assumed 2.0), b -> c completes (c at 3.0, ticks),
    // c loses its disk. a never heard of c; before, it recovered into major
    // 3 and ticked tick numbers c had ticked (EI-1 per epoch). Now it asks
    // b, which counts the major its own target took.
    let mut c = running(3);
    migrate(&mut c, 0, 1);
    let k = transfer_index(&c);
    c.deliver(k, false);
    let k = c.replies.iter().position(|r| r.to == 0).unwrap();
    c.deliver_reply(k, true); // the confirmation is lost: a in doubt
    assert_eq!(c.state(0), Some(AuthorityState::RecoveryRequired));
    // No claim of b or c reaches a (as in the explore seeds: a was cut off).
    let settle_without_c_to_a = |c: &mut Cluster| {
        for _ in 0..1000 {
            c.requests.retain(|r| !(r.from != 0 && r.to == 0));
            if !c.requests.is_empty() {
                c.deliver(0, false);
            } else if !c.replies.is_empty() {
                c.deliver_reply(0, false);
            } else {
                return;
            }
        }
    };
    c.advance(3 * S);
    settle_without_c_to_a(&mut c);
    migrate(&mut c, 1, 2);
    settle_without_c_to_a(&mut c);
    c.advance(3 * S);
    settle_without_c_to_a(&mut c);
    assert_eq!(c.tickers(), vec![2]);
    assert_eq!(c.node(2).agent(&agent()).unwrap().epoch.major, 3);
    c.crash(2);
    c.disks[2] = igor::env::mem::MemDisk::new();
    c.restart(2);
    assert_eq!(c.state(2), None, "a wiped node knows nothing");
    let head = c.node(0).agent(&agent()).unwrap().head_hash;
    // b proves nothing about a live owner but a's handoff to b is in doubt:
    // a plain recovery is refused and says why.
    c.node(0).command(Command::Recover { agent: agent(), anchor: head, force: false }).unwrap();
    c.pump();
    c.settle();
    c.pump();
    assert_eq!(c.state(0), Some(AuthorityState::RecoveryRequired));
    let refused = c.events.iter().rev().find_map(|e| match &e.event {
        Event::CommandRefused { command, reason, .. } if command == "recover" => Some(reason.clone()),
        _ => None,
    });
    assert!(refused.as_deref().is_some_and(|r| r.contains("n1")), "{refused:?}");
    // Forced (the operator checked c lost its disk): above b's knowledge.
    c.node(0).command(Command::Recover { agent: agent(), anchor: head, force: true }).unwrap();
    c.pump();
    c.settle();
    c.pump();
    let v = c.node(0).agent(&agent()).unwrap();
    assert_eq!(v.state, AuthorityState::ActiveOwner);
    assert!(v.epoch.major > 3, "recovered at {} (c ticked in major 3)", v.epoch);
}

#[test]
fn a_recovery_with_a_silent_peer_is_refused_unless_forced() {
    let mut c = running(2);
    migrate(&mut c, 0, 1);
    c.requests.clear(); // the package never arrives
    c.crash(0);
    c.restart(0);
    let head = c.node(0).agent(&agent()).unwrap().head_hash;
    c.node(0).command(Command::Recover { agent: agent(), anchor: head, force: false }).unwrap();
    let again = c.node(0).command(Command::Recover { agent: agent(), anchor: head, force: false });
    assert!(again.is_err_and(|r| r.reason.to_string().contains("already asking")), "one recovery at a time");
    c.pump();
    c.requests.clear(); // n1 never hears the question
    c.advance(4 * S);
    c.pump();
    assert_eq!(c.state(0), Some(AuthorityState::RecoveryRequired));
    let refused = c.events.iter().rev().find_map(|e| match &e.event {
        Event::CommandRefused { command, reason, .. } if command == "recover" => Some(reason.clone()),
        _ => None,
    });
    assert!(refused.as_deref().is_some_and(|r| r.contains("did not answer") && r.contains("n1")), "{refused:?}");
}

#[test]
fn two_plain_recoveries_of_one_agent_at_once_both_refuse() {
    // Both nodes hold the agent in RECOVERY_REQUIRED (the source's handoff
    // in doubt, the target lost its lease while down) and two operators
    // recover it at the same instant: each asks the other and sees
    // RECOVERY_REQUIRED. Without this rule both would take authority.
    let mut c = running(2);
    migrate(&mut c, 0, 1);
    let k = transfer_index(&c);
    c.deliver(k, false);
    let k = c.replies.iter().position(|r| r.to == 0).unwrap();
    c.deliver_reply(k, true);
    c.crash(1);
    c.advance(120 * S);
    c.restart(1);
    c.requests.clear();
    assert_eq!(c.state(0), Some(AuthorityState::RecoveryRequired));
    assert_eq!(c.state(1), Some(AuthorityState::RecoveryRequired));
    for i in [0, 1] {
        let head = c.node(i).agent(&agent()).unwrap().head_hash;
        c.node(i).command(Command::Recover { agent: agent(), anchor: head, force: false }).unwrap();
    }
    c.pump();
    c.settle();
    c.pump();
    assert_eq!(c.state(0), Some(AuthorityState::RecoveryRequired));
    assert_eq!(c.state(1), Some(AuthorityState::RecoveryRequired));
    let refused = c
        .events
        .iter()
        .filter(|e| matches!(&e.event, Event::CommandRefused { command, reason, .. } if command == "recover" && reason.contains("may be recovering it too")))
        .count();
    assert_eq!(refused, 2, "both refuse:\n{}", c.trace_tail(20));
}

fn tofu(cfg: &mut NodeConfig) {
    quick(cfg);
    cfg.defences.self_certifying_ids = false;
}

/// An announcement of `agent` at epoch 9.0 from n2 to n1, as a poisoner
/// makes it: offering `key` (its own) as the agent key and signed by it, or
/// anonymous (no key, no agent signature).
fn poisoned_claim(c: &Cluster, agent: &igor::units::AgentId, key: Option<&Keypair>, nonce: u64) -> Vec<u8> {
    let h = Header {
        issuer: c.ids[2].clone(),
        audience: c.ids[1].clone(),
        agent: agent.clone(),
        epoch: Epoch::new(9, 0),
        head_tick: TickNumber(99),
        head_hash: Hash32::of(b"poisoned head"),
        nonce,
        issued_unix_ns: 0,
        expiry_unix_ns: soon(c),
    };
    head_announce(h, AuthorityState::ActiveOwner, key, true)
}

/// The honest package `honest` (n0 to n1) turned into n2's forgery: the
/// same agent and state at epoch 9.0, re-signed by `key` (with its seed as
/// the AgentIdentity and the kv resealed), sent by n2.
fn forged_package(c: &Cluster, honest: &[u8], owner: &igor::identity::PublicKey, seed: [u8; 32]) -> Vec<u8> {
    use igor::checkpoint::{Checkpoint, CheckpointBody};
    let env = Envelope::decode(honest).unwrap();
    let Body::AgentTransfer(mut t) = env.body else { panic!("not a transfer") };
    let agent = env.header.agent.clone();
    let key = Keypair::from_seed(seed);
    let ckpt = Checkpoint::decode(&t.package.checkpoint).unwrap();
    let epoch = Epoch::new(9, 0);
    let body = CheckpointBody {
        budget: ckpt.budget,
        price_per_second: ckpt.price_per_second,
        tick: ckpt.tick,
        wasm_hash: ckpt.wasm_hash,
        epoch,
        lease_expiry_ns: ckpt.lease_expiry_ns,
        prev_hash: ckpt.prev_hash(),
        state: ckpt.state.clone(),
    };
    let forged = body.sign(&key);
    let kv = t.package.kv.as_ref().map(|sealed| {
        let plain = igor::node::store::open_kv(owner, &agent, &ckpt, sealed).unwrap();
        igor::node::store::seal_kv(&key, &agent, forged.tick, &forged.state, &plain)
    });
    let bytes = forged.encode();
    t.package.checkpoint = bytes.clone();
    t.package.agent_identity = Some(seed.to_vec());
    t.package.replay_data = None;
    t.package.kv = kv;
    t.source_node_id = c.ids[2].clone();
    let mut h = env.header;
    (h.issuer, h.epoch, h.head_hash, h.nonce) = (c.ids[2].clone(), epoch, Hash32::of(&bytes), 4242);
    Envelope::new(h, Body::AgentTransfer(t)).encode()
}

#[test]
fn a_poisoned_view_of_a_self_certifying_agent_blocks_nothing_and_admits_no_forgery() {
    // Issue 12: a node that does not host an agent learned its key from the
    // first announcement. A poisoner (n2) that reaches n1 before the owner
    // (n0) does, with its own key and an inflated epoch, made n1 refuse the
    // real agent and accept a forgery signed by the poisoned key. With a
    // self-certifying id the poisoner's key is refused (it does not carry
    // the id's tag) and its unsigned claim moves nothing.
    let manifest = br#"{"capabilities":{},"migration_policy":{"enabled":true,"max_price_per_second":0}}"#;
    for defended in [true, false] {
        let mut c = Cluster::new(3, 7, if defended { quick } else { tofu });
        let owner = Keypair::from_seed([21; 32]);
        let owner_pub = owner.public();
        let id = igor::identity::tagged_agent_id("counter", &owner_pub).unwrap();
        // The tag binds the key: another key cannot deploy this id.
        let other = Keypair::from_seed([22; 32]);
        let wrong = c.node(0).deploy_with_key(
            id.clone(),
            other,
            b"counter-module".to_vec(),
            manifest.to_vec(),
            igor::units::Microcents(1),
        );
        assert_eq!(wrong.is_err(), defended, "{wrong:?}");
        if !defended {
            c = Cluster::new(3, 7, tofu);
        }
        let budget = igor::units::Microcents(1_000_000);
        c.node(0).deploy_with_key(id.clone(), owner, b"counter-module".to_vec(), manifest.to_vec(), budget).unwrap();
        c.pump();
        // The poisoner's claims reach n1 before the owner's announcement.
        let poison_seed = [66; 32];
        let poison = Keypair::from_seed(poison_seed);
        let n2 = c.ids[2].clone();
        for (key, nonce) in [(Some(&poison), 1), (None, 2)] {
            let msg = poisoned_claim(&c, &id, key, nonce);
            c.node(1).handle_request(&n2, &msg);
            c.pump();
        }
        c.settle();
        c.advance(5 * S);
        c.settle();
        let to = c.ids[1].clone();
        c.node(0).command(Command::Migrate { agent: id.clone(), to }).unwrap();
        c.pump();
        let k = transfer_index(&c);
        // The forgery arrives first, then the real package.
        let forged = forged_package(&c, &c.requests[k].body, &owner_pub, poison_seed);
        c.node(1).handle_request(&n2, &forged);
        c.pump();
        c.settle();
        c.advance(3 * S);
        c.settle();
        let rejected = |kind: igor::wire::MessageKind| {
            c.events.iter().any(|e| {
                e.node == c.ids[1]
                    && matches!(&e.event, Event::ClaimRejected { defence, kind: k, .. } if *defence == igor::node::defence::Defence::SelfCertifyingIds && *k == kind)
            })
        };
        let (announce, transfer) =
            (rejected(igor::wire::MessageKind::HeadAnnounce), rejected(igor::wire::MessageKind::AgentTransfer));
        let n1 = c.node(1).agent(&id).map(|v| (v.state, v.epoch.major));
        if defended {
            assert!(announce && transfer, "both refused by the tag:\n{}", c.trace_tail(30));
            assert_eq!(n1, Some((AuthorityState::ActiveOwner, 2)), "the real agent moved:\n{}", c.trace_tail(30));
            assert_eq!(c.node(0).agent(&id).map(|v| v.state), Some(AuthorityState::Retired));
        } else {
            // Trust on first use: the forgery took the agent's place on n1
            // and the real package was refused (n1 answers it in doubt:
            // the owner pauses, RECOVERY_REQUIRED).
            assert!(!announce && !transfer);
            assert!(n1.is_some_and(|(s, major)| s == AuthorityState::ActiveOwner && major > 9), "{n1:?}");
            assert_eq!(c.node(0).agent(&id).map(|v| v.state), Some(AuthorityState::RecoveryRequired));
        }
    }
}

#[test]
fn a_self_certifying_agent_whose_local_key_is_not_its_own_does_not_tick_after_restart() {
    // The tag is checked against the local history too: a key file swapped
    // for another key (by hand, or by a disk the id does not belong to).
    let mut c = Cluster::new(1, 7, quick);
    let owner = Keypair::from_seed([31; 32]);
    let id = igor::identity::tagged_agent_id("counter", &owner.public()).unwrap();
    let manifest = br#"{"capabilities":{},"migration_policy":{"enabled":true}}"#.to_vec();
    let budget = igor::units::Microcents(1_000_000);
    c.node(0).deploy_with_key(id.clone(), owner, b"counter-module".to_vec(), manifest, budget).unwrap();
    c.pump();
    c.advance(3 * S);
    c.crash(0);
    Keypair::from_seed([32; 32]).save(&c.disks[0], &igor::lineage::agent_key_path(&id)).unwrap();
    c.restart(0);
    assert_eq!(c.node(0).agent(&id).map(|v| v.state), Some(AuthorityState::RecoveryRequired));
    let fault = c.events.iter().any(|e| {
        matches!(&e.event, Event::FaultObserved { fault, .. } if fault.contains("agent key file") && fault.contains(id.as_str()))
    });
    assert!(fault, "{}", c.trace_tail(10));
}

/// Typed faults (issue 13): a refused command names its culprit by type,
/// and its text is what the trace's `command_refused` says. A retire the
/// disk fails names the disk (with the path it could not write); a
/// command this node cannot carry out now names the operator's request.
#[test]
fn a_refused_command_names_its_culprit() {
    fn every_tick(cfg: &mut NodeConfig) {
        cfg.checkpoint_interval_ns = 1; // the head is always fresh: retire commits nothing
    }
    let mut c = Cluster::new(1, 4, every_tick);
    c.deploy(0, 1_000_000);
    c.advance(3 * S);
    let stranger = igor::units::AgentId::new("nobody").unwrap();
    let unknown = c.node(0).command(Command::Retire { agent: stranger }).unwrap_err();
    assert!(matches!(unknown.reason, igor::node::NodeError::Operator { .. }), "{unknown:?}");
    assert_eq!(unknown.reason.to_string(), "unknown agent");
    // The RETIRED record's write dies: the retire is refused, by the disk.
    c.disks[0].interrupt_next_write("authority.json", WriteStep::Rename);
    let refused = c.node(0).command(Command::Retire { agent: agent() }).unwrap_err();
    let igor::node::NodeError::Disk { source, .. } = &refused.reason else { panic!("{refused:?}") };
    assert!(matches!(**source, igor::node::DiskFault::Store(_)), "the authority record's write failed: {refused:?}");
    assert!(refused.reason.to_string().contains("authority.json"), "{refused}");
}

/// EI-5: a target takes authority at (major + 1, 0) of the package's
/// epoch. A package at the last major (signed with the agent's own key, as
/// a node that held the agent can make one) leaves no newer epoch: it is
/// refused cleanly and the source keeps the agent. Before, the target's
/// `major + 1` saturated and it assumed at the package's own epoch.
#[test]
fn a_package_at_the_last_major_is_refused_cleanly() {
    use igor::checkpoint::{Checkpoint, CheckpointBody};
    fn every_tick(cfg: &mut NodeConfig) {
        cfg.checkpoint_interval_ns = 1;
    }
    let mut c = Cluster::new(2, 12, every_tick);
    c.deploy(0, 1_000_000);
    c.advance(3 * S);
    migrate(&mut c, 0, 1);
    let k = transfer_index(&c);
    let env = Envelope::decode(&c.requests[k].body).unwrap();
    let Body::AgentTransfer(mut t) = env.body else { unreachable!() };
    let seed: [u8; 32] = t.package.agent_identity.clone().unwrap().try_into().unwrap();
    let ckpt = Checkpoint::decode(&t.package.checkpoint).unwrap();
    let last = Epoch::new(u64::MAX, 0);
    let body = CheckpointBody {
        budget: ckpt.budget,
        price_per_second: ckpt.price_per_second,
        tick: ckpt.tick,
        wasm_hash: ckpt.wasm_hash,
        epoch: last,
        lease_expiry_ns: ckpt.lease_expiry_ns,
        prev_hash: ckpt.prev_hash(),
        state: ckpt.state.clone(),
    };
    let bytes = body.sign(&Keypair::from_seed(seed)).encode();
    t.package.checkpoint = bytes.clone();
    t.package.replay_data = None;
    let mut h = env.header;
    (h.epoch, h.head_hash) = (last, Hash32::of(&bytes));
    c.requests[k].body = Envelope::new(h, Body::AgentTransfer(t)).encode();
    c.settle();
    assert_eq!(c.state(1), None, "the target took nothing: {}", c.trace_tail(10));
    let refused = c.events.iter().any(|e| {
        e.node == c.ids[1]
            && matches!(&e.event, Event::MigrationFinished { outcome: Outcome::Refused(r), .. }
                if r.contains("leaves no newer epoch"))
    });
    assert!(refused, "{}", c.trace_tail(10));
    c.advance(6 * S);
    assert_eq!(c.state(0), Some(AuthorityState::ActiveOwner), "stays on the source");
    c.check().unwrap();
}

/// Spec §5, EI-1 per epoch: a recovery takes a major above every major
/// seen. When a proven claim (signed with the agent key) names the last
/// major, none is left, and even a forced recovery is refused. Before, the
/// recovery's `major + 1` saturated and it took the very epoch the peer had
/// proved it owns.
#[test]
fn a_recovery_with_no_major_left_is_refused_even_when_forced() {
    let mut c = running(3);
    let seed = igor::node::store::read_key_seed(&c.disks[0], &agent()).unwrap();
    let key = Keypair::from_seed(seed);
    let h = Header {
        issuer: c.ids[2].clone(),
        audience: c.ids[0].clone(),
        agent: agent(),
        epoch: Epoch::new(u64::MAX, 0),
        head_tick: TickNumber(99),
        head_hash: Hash32::of(b"a head elsewhere"),
        nonce: 77,
        issued_unix_ns: 0,
        expiry_unix_ns: soon(&c),
    };
    let state = AuthorityState::ActiveOwner;
    let agent_signature = Some(key.sign(&agent_claim_bytes(&h, Some(state))).0.to_vec());
    let agent_key = Some(key.public().as_bytes().to_vec());
    let claim = Envelope::new(h, Body::HeadAnnounce(HeadAnnounce { state, agent_key, agent_signature })).encode();
    let n2 = c.ids[2].clone();
    c.node(0).handle_request(&n2, &claim);
    c.pump();
    assert_eq!(c.state(0), Some(AuthorityState::RecoveryRequired), "superseded: {}", c.trace_tail(10));
    let head = c.node(0).agent(&agent()).unwrap().head_hash;
    c.node(0).command(Command::Recover { agent: agent(), anchor: head, force: true }).unwrap();
    c.pump();
    c.settle();
    let refused = c.events.iter().any(|e| {
        e.node == c.ids[0]
            && matches!(&e.event, Event::CommandRefused { command, reason, .. }
                if command == "recover" && reason.contains("no epoch major above"))
    });
    assert!(refused, "{}", c.trace_tail(12));
    assert_eq!(c.state(0), Some(AuthorityState::RecoveryRequired), "nothing recovered");
    assert!(c.tickers().is_empty());
}

/// An expiry an honest sender could give a message now (one second ahead:
/// a node refuses expiries past its package TTL plus the skew margin).
fn soon(c: &Cluster) -> i64 {
    igor::env::Clock::unix_ns(&c.clock) + 1_000_000_000
}

/// A RECOVERY_REQUIRED announcement of the agent from `from` to `to`,
/// signed with `agent_key` when given.
fn recovery_claim(c: &Cluster, from: usize, to: usize, agent_key: Option<&Keypair>, nonce: u64) -> Vec<u8> {
    let h = Header {
        issuer: c.ids[from].clone(),
        audience: c.ids[to].clone(),
        agent: agent(),
        epoch: Epoch::new(1, 0),
        head_tick: TickNumber(0),
        head_hash: Hash32::of(b"any head"),
        nonce,
        issued_unix_ns: 0,
        expiry_unix_ns: soon(c),
    };
    head_announce(h, AuthorityState::RecoveryRequired, agent_key, false)
}

/// Found by an outside tester's reading: while an operator's recovery asked
/// its peers, any admitted peer's *unsigned* RECOVERY_REQUIRED claim made
/// the recovery refuse ("they may be recovering it too") unless forced. A
/// node that may really be recovering the agent holds its key and signs its
/// claim; only such a claim contests a recovery now.
#[test]
fn only_a_claim_signed_with_the_agent_key_contests_a_recovery() {
    for signed in [false, true] {
        let mut c = running(3);
        let key = Keypair::from_seed(igor::node::store::read_key_seed(&c.disks[0], &agent()).unwrap());
        migrate(&mut c, 0, 1);
        c.requests.clear(); // the package never arrives: a's handoff is in doubt
        c.crash(0);
        c.restart(0);
        assert_eq!(c.state(0), Some(AuthorityState::RecoveryRequired));
        let head = c.node(0).agent(&agent()).unwrap().head_hash;
        c.node(0).command(Command::Recover { agent: agent(), anchor: head, force: false }).unwrap();
        let from = c.ids[2].clone();
        let msg = recovery_claim(&c, 2, 0, signed.then_some(&key), 4242);
        c.node(0).handle_request(&from, &msg);
        c.pump();
        c.settle();
        c.pump();
        let refused = c.events.iter().any(|e| {
            matches!(&e.event, Event::CommandRefused { command, reason, .. } if command == "recover" && reason.contains("may be recovering it too"))
        });
        if signed {
            assert!(refused, "a claim signed with the agent key contests:\n{}", c.trace_tail(20));
            assert_eq!(c.state(0), Some(AuthorityState::RecoveryRequired));
        } else {
            assert!(!refused, "an unsigned claim contests nothing:\n{}", c.trace_tail(20));
            assert_eq!(c.state(0), Some(AuthorityState::ActiveOwner), "{}", c.trace_tail(20));
        }
    }
}
