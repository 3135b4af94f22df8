//! End to end (issue 14): the Rust heartbeat (agents/rust/heartbeat, built
//! with igor-agent) on three `igord node` processes, migrated a -> b -> c.
//! Its own count (state field `beats`, mirrored in its kv store and
//! checked against it every tick, or the agent traps) must equal the
//! committed tick number in every checkpoint of the joined history, the
//! ticks must run without gap or repeat across the three nodes, and
//! `igord verify` must accept the history as one chain.
#![allow(clippy::disallowed_methods)] // test: reads the nodes' files

mod e2e_support;

use e2e_support::*;
use igor::authority::AuthorityState;
use igor::checkpoint::Checkpoint;
use igor::control::AgentStatus;
use igor::lineage;
use igor::node::{Event, NodeEvent};
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(40);
const AGENT: &str = "heartbeat";

fn heartbeat_wasm() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("agents/rust/heartbeat/heartbeat.wasm")
}

fn status(node: &NodeProc) -> Option<AgentStatus> {
    node.status().into_iter().find(|a| a.agent.as_str() == AGENT)
}

/// The heartbeat's checkpoints on `dir`: (path, bytes), oldest first.
fn heartbeat_history(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let h = dir.join("history").join(AGENT);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&h)
        .unwrap_or_else(|e| panic!("{}: {e}", h.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "ckpt"))
        .map(|p| (p.display().to_string(), std::fs::read(&p).expect("read checkpoint")))
        .collect();
    out.sort();
    out
}

/// `beats` from the heartbeat's state bytes: the igor-agent header
/// (`IGAS`, format, version, fingerprint: 17 bytes), then postcard, whose
/// first field is `beats` as a varint. Decoded by hand so the root crate
/// needs no dependency on the agent.
fn beats(state: &[u8]) -> u64 {
    assert_eq!(&state[..4], b"IGAS", "heartbeat state starts with the igor-agent header");
    let mut v = 0u64;
    for (i, b) in state[17..].iter().enumerate() {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return v;
        }
    }
    panic!("truncated varint in heartbeat state");
}

fn tick_numbers(events: &[NodeEvent]) -> Vec<u64> {
    ticks(events).into_iter().map(|t| t.0).collect()
}

fn migrate(from: &NodeProc, to: &NodeProc) {
    let out = igord(&["migrate", AGENT, "--to", &to.addr, "--wait", "--data-dir", path(&from.dir)], T);
    assert!(
        out.0.success() && out.1.contains(": completed"),
        "migrate {} -> {}: {} {}",
        from.name,
        to.name,
        out.1,
        out.2
    );
}

#[test]
fn heartbeat_migrates_a_b_c_with_its_own_count_continuous() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b, dir_c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    let a = NodeProc::start("A", &dir_a, &[], &[]);
    let b = NodeProc::start("B", &dir_b, &[&a.addr], &[]);
    let c = NodeProc::start("C", &dir_c, &[&a.addr, &b.addr], &[]);

    // The manifest is found beside the module (heartbeat.manifest.json).
    let out = igord(&["deploy", path(&heartbeat_wasm()), "--budget", "1", "--untagged", "--data-dir", path(&dir_a)], T);
    assert!(out.0.success() && out.1.contains("deployed heartbeat"), "deploy: {} {}", out.1, out.2);
    wait_until("A to run 5 ticks", T, || status(&a).filter(|s| s.tick.0 >= 5));
    migrate(&a, &b);
    wait_until("B to run 5 ticks", T, || status(&b).filter(|s| s.ticks_here >= 5));
    migrate(&b, &c);
    wait_until("C to run 5 ticks", T, || status(&c).filter(|s| s.ticks_here >= 5));
    assert_eq!(status(&c).expect("C lists the heartbeat").state, AuthorityState::ActiveOwner);
    for node in [&a, &b] {
        assert_eq!(status(node).expect("source lists the heartbeat").state, AuthorityState::Retired);
    }

    // Graceful stop: every node commits its final checkpoint.
    let mut nodes = [a, b, c];
    for n in &nodes {
        let out = igord(&["stop", "--data-dir", path(&n.dir)], T);
        assert!(out.0.success(), "stop {}: {}", n.name, out.2);
    }
    for n in &mut nodes {
        n.wait_event("the node to shut down", T, |e| matches!(e, Event::NodeShutdown));
        assert!(n.wait_exit(T).success(), "{} exits cleanly after stop", n.name);
    }
    let [a, b, c] = nodes;

    // No tick trapped (a state/kv mismatch would), and the tick numbers
    // run on from node to node without gap or repeat.
    for n in [&a, &b, &c] {
        let trapped = n
            .events()
            .into_iter()
            .find(|e| matches!(&e.event, Event::TickFinished { outcome, .. } if !outcome.is_live()));
        assert!(trapped.is_none(), "{}: {trapped:?}", n.name);
    }
    let (ta, tb, tc) = (tick_numbers(&a.events()), tick_numbers(&b.events()), tick_numbers(&c.events()));
    assert_consecutive("A", &ta, 1);
    assert_consecutive("B after A", &tb, ta.last().unwrap() + 1);
    assert_consecutive("C after B", &tc, tb.last().unwrap() + 1);

    // In every committed checkpoint, on every node, the heartbeat's own
    // count equals the checkpoint's tick.
    let mut all = Vec::new();
    for dir in [&dir_a, &dir_b, &dir_c] {
        all.extend(heartbeat_history(dir));
    }
    assert!(all.len() >= 6, "{} checkpoints", all.len());
    for (name, bytes) in &all {
        let ck = Checkpoint::decode(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(beats(&ck.state), ck.tick.0, "{name}: heartbeat count vs committed tick");
    }
    let summary = lineage::verify_chain(&all).expect("A's, B's and C's histories form one chain");
    assert_eq!(summary.first_tick.0, 0);
    assert_eq!(summary.last_tick.0, *tc.last().unwrap());
    let hist = |d: &Path| format!("{}/history/{AGENT}", path(d));
    let out = igord(&["verify", &hist(&dir_a), &hist(&dir_b), &hist(&dir_c)], T);
    assert!(out.0.success(), "igord verify: {} {}", out.1, out.2);
}
