//! End to end (issue 6): two `igord node` processes on 127.0.0.1 with their
//! own data dirs. Deploy the counter on A, let it tick, migrate it to B, let
//! it tick; then: same DID, tick numbers continue without gap or repeat, A's
//! and B's histories verify as one chain, the budget is conserved to the
//! microcent, A is RETIRED and ticks no more. Then SIGKILL B and restart it
//! on the same data dir: it resumes as owner from its last committed
//! checkpoint.
#![allow(clippy::disallowed_methods)] // test: reads the nodes' files

mod e2e_support;

use e2e_support::*;
use igor::authority::AuthorityState;
use igor::checkpoint::{Checkpoint, Hash32};
use igor::lineage;
use igor::migration::Outcome;
use igor::node::{Event, NodeEvent};
use igor::units::{Epoch, Microcents};
use std::collections::BTreeMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const BUDGET_MICROCENTS: i64 = 1_000_000;

/// RE-3 per link: budget(prev) = budget + charged + paid, for every
/// checkpoint a node committed, with `prev` found by hash among all the
/// checkpoints either node committed or adopted.
fn check_links(all: &[NodeEvent]) -> BTreeMap<Hash32, (u64, i64)> {
    let mut budget_of: BTreeMap<Hash32, (u64, i64)> = BTreeMap::new();
    for e in all {
        match &e.event {
            Event::CheckpointCommitted { hash, tick, budget, .. }
            | Event::CheckpointAdopted { hash, tick, budget, .. } => {
                budget_of.insert(*hash, (tick.0, budget.0));
            }
            _ => {}
        }
    }
    for e in all {
        if let Event::CheckpointCommitted { prev_hash, budget, charged, paid, tick, .. } = &e.event {
            if *prev_hash == Hash32::ZERO {
                assert_eq!(budget.0, BUDGET_MICROCENTS, "genesis holds the whole budget");
                continue;
            }
            if let Some((_, prev_budget)) = budget_of.get(prev_hash) {
                assert_eq!(*prev_budget, budget.0 + charged.0 + paid.0, "RE-3 broken at tick {tick}");
            }
        }
    }
    budget_of
}

#[test]
fn counter_migrates_between_two_processes_and_survives_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = NodeProc::start("A", &dir_a, &[], &[]);
    let b = NodeProc::start("B", &dir_b, &[&a.addr], &[]);
    let b_peer_id_before = b.peer_id().to_string();

    deploy_counter(&a, "1");
    wait_until("A to run 10 ticks", T, || a.agent_status().filter(|s| s.tick.0 >= 10));
    let did_a = a.agent_status().and_then(|s| s.did).expect("A knows the DID");

    let out = igord(&["migrate", "counter", "--to", &b.addr, "--wait", "--data-dir", path(&dir_a)], T);
    assert!(out.0.success() && out.1.contains(": completed"), "migrate: {} {}", out.1, out.2);

    // B ticks on; A is RETIRED and ticks no more.
    wait_until("B to run 10 ticks", T, || b.agent_status().filter(|s| s.ticks_here >= 10));
    let sa = a.agent_status().expect("A still lists the agent");
    assert_eq!(sa.state, AuthorityState::Retired);
    let a_ticks_then = ticks(&a.events()).len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ticks(&a.events()).len(), a_ticks_then, "a RETIRED source must not tick");

    let sb = b.agent_status().expect("B lists the agent");
    assert_eq!(sb.state, AuthorityState::ActiveOwner);
    assert_eq!(sb.epoch.major, 2, "authority moved: major + 1");
    assert_eq!(sb.did.as_deref(), Some(did_a.as_str()), "same DID on both nodes");

    // Tick numbers: A ran 1..=k, sealed k; B adopted k and runs k+1.. .
    let ea = a.events();
    let ta: Vec<u64> = ticks(&ea).into_iter().map(|t| t.0).collect();
    assert_consecutive("A", &ta, 1);
    let k = *ta.last().unwrap();
    // The handoff seals a fresh checkpoint, unless A had not ticked since
    // its last one (a migrate that lands right after a commit): then that
    // commit, holding A's last tick, is the seal.
    let commits: Vec<(u64, i64, bool)> = ea
        .iter()
        .filter_map(|e| match &e.event {
            Event::CheckpointCommitted { tick, budget, handoff, .. } => Some((tick.0, budget.0, *handoff)),
            _ => None,
        })
        .collect();
    let sealed = commits
        .iter()
        .find(|c| c.2)
        .or_else(|| commits.iter().rev().find(|c| c.0 == k))
        .map(|c| (c.0, c.1))
        .expect("A sealed a handoff checkpoint (or its last commit holds its last tick)");
    assert_eq!(sealed.0, k, "the handoff checkpoint is fresh: it holds A's last tick");
    let eb = b.events();
    let adopted = eb
        .iter()
        .find_map(|e| match &e.event {
            Event::CheckpointAdopted { tick, budget, .. } => Some((tick.0, budget.0)),
            _ => None,
        })
        .expect("B adopted the package's checkpoint");
    assert_eq!(adopted, sealed, "budget in flight arrives to the microcent");
    let tb: Vec<u64> = ticks(&eb).into_iter().map(|t| t.0).collect();
    assert_consecutive("B after A", &tb, k + 1);
    let spent_a: i64 = ticks(&ea).iter().map(|t| t.1).sum();
    assert_eq!(BUDGET_MICROCENTS - spent_a, sealed.1, "A's ticks account for every microcent it spent");
    let done = ea.iter().any(|e| {
        matches!(&e.event, Event::MigrationFinished { outcome: Outcome::Completed, .. })
            && matches!(&e.event, Event::MigrationFinished { peer, .. } if peer.as_str() == b.peer_id())
    });
    assert!(done, "A saw the migration complete");

    // SIGKILL B right after a checkpoint (the next one is far off), then
    // restart it on the same data dir.
    let seen = b.events().len();
    wait_until("a checkpoint after the kill mark", T, || {
        b.events()[seen..].iter().any(|e| matches!(e.event, Event::CheckpointCommitted { .. })).then_some(())
    });
    let eb_before_kill = b.events();
    b.kill();
    let hist_b = history(&dir_b);
    let (head_name, head_bytes) = hist_b.last().expect("B has history").clone();
    let head = Checkpoint::decode(&head_bytes).unwrap();
    let head_hash = Hash32::of(&head_bytes);
    let b2 = NodeProc::start("B2", &dir_b, &[&a.addr], &[]);
    assert_eq!(b2.peer_id(), b_peer_id_before, "the peer id survives a restart (persisted libp2p key)");
    let loaded = b2.wait_event("B2 to load the agent", T, |e| matches!(e, Event::AgentLoaded { .. }));
    match loaded.event {
        Event::AgentLoaded { state, head_tick, head_hash: h, epoch, .. } => {
            assert_eq!(state, AuthorityState::ActiveOwner, "target keeps authority after restart");
            assert_eq!((head_tick, h), (head.tick, head_hash), "restored from the last committed {head_name}");
            assert!(epoch >= Epoch::new(2, 0));
        }
        _ => unreachable!(),
    }
    let first = b2.wait_event("B2 to tick", T, |e| matches!(e, Event::TickStarted { .. }));
    match first.event {
        Event::TickStarted { tick, base, .. } => {
            assert_eq!(tick.0, head.tick.0 + 1, "resumes right after the committed head");
            assert_eq!(base, head_hash, "EI-2: resumes only from a committed checkpoint");
        }
        _ => unreachable!(),
    }
    wait_until("B2 to run 5 ticks", T, || b2.agent_status().filter(|s| s.ticks_here >= 5));

    // Graceful stop: final checkpoints, exit 0.
    for (node, dir) in [(&b2, &dir_b), (&a, &dir_a)] {
        let out = igord(&["stop", "--data-dir", path(dir)], T);
        assert!(out.0.success(), "stop {}: {}", node.name, out.2);
    }
    let (mut a, mut b2) = (a, b2);
    for node in [&mut b2, &mut a] {
        node.wait_event("the node to shut down", T, |e| matches!(e, Event::NodeShutdown));
        assert!(node.wait_exit(T).success(), "{} exits cleanly after stop", node.name);
    }
    let eb2 = b2.events();
    let tb2: Vec<u64> = ticks(&eb2).into_iter().map(|t| t.0).collect();
    assert_consecutive("B after restart", &tb2, head.tick.0 + 1);

    // One chain across both nodes, same DID, budget conserved.
    let mut all = history(&dir_a);
    all.extend(history(&dir_b));
    let summary = lineage::verify_chain(&all).expect("A's and B's histories form one chain");
    assert_eq!(summary.did, did_a);
    assert_eq!(summary.first_tick.0, 0);
    assert_eq!(summary.first_budget, Microcents(BUDGET_MICROCENTS));
    let out = igord(
        &["verify", &format!("{}/history/counter", path(&dir_a)), &format!("{}/history/counter", path(&dir_b))],
        T,
    );
    assert!(out.0.success(), "igord verify: {} {}", out.1, out.2);
    let mut events = ea;
    events.extend(eb_before_kill);
    events.extend(eb2);
    let known = check_links(&events);
    // Every link of the final chain is accounted for by a committed event,
    // so the sum of charges over the chain is the whole budget spent.
    let charged: i64 = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::CheckpointCommitted { tick, charged, paid, hash, .. } if tick.0 <= summary.last_tick.0 => {
                Some((*hash, charged.0 + paid.0))
            }
            _ => None,
        })
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .filter(|(h, _)| all.iter().any(|(_, bytes)| Hash32::of(bytes) == *h))
        .map(|(_, c)| c)
        .sum();
    assert!(known.contains_key(&summary.head), "the final head was reported");
    assert_eq!(
        BUDGET_MICROCENTS,
        summary.last_budget.0 + charged,
        "RE-3: initial budget = remaining + everything charged and paid, to the microcent"
    );
}

/// SIGTERM and SIGINT are graceful: a final checkpoint of every agent
/// (holding its last tick), then exit 0; the restarted node resumes there.
#[test]
fn sigterm_and_sigint_commit_a_final_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    // Long checkpoint interval: only the shutdown commits after genesis.
    let slow = ["--checkpoint-ms", "600000"];
    let mut a = NodeProc::start("A", &dir, &[], &slow);
    deploy_counter(&a, "1");
    for (round, sig) in ["TERM", "INT"].into_iter().enumerate() {
        wait_until("ticks", T, || a.agent_status().filter(|s| s.ticks_here >= 5));
        a.signal(sig);
        a.wait_event("shutdown", T, |e| matches!(e, Event::NodeShutdown));
        assert!(a.wait_exit(T).success(), "SIG{sig}: exit 0");
        let ev = a.events();
        let last_tick = ticks(&ev).last().map(|t| t.0).expect("ticked");
        let last_commit = ev.iter().rev().find_map(|e| match &e.event {
            Event::CheckpointCommitted { tick, .. } => Some(tick.0),
            _ => None,
        });
        assert_eq!(last_commit, Some(last_tick), "SIG{sig}: the final checkpoint holds the last tick");
        let head = history(&dir).last().map(|(_, b)| igor::checkpoint::Checkpoint::decode(b).unwrap().tick.0);
        assert_eq!(head, Some(last_tick), "SIG{sig}: it is on disk");
        drop(a);
        a = NodeProc::start(&format!("A{}", round + 2), &dir, &[], &slow);
        let first = a.wait_event("resume", T, |e| matches!(e, Event::TickStarted { .. }));
        assert!(matches!(first.event, Event::TickStarted { tick, .. } if tick.0 == last_tick + 1));
    }
}
