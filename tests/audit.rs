//! `igord audit` against real histories: a node (the real `Node` on the
//! wasmtime sandbox and the real filesystem, driven by a manual clock)
//! runs the observer agent (it reads the clock and random bytes every
//! tick, so its state depends on every observation) for 10,000 ticks with
//! a checkpoint about every 50. Each tampering is made in its own copy of
//! the data dir, the way a host holding the agent key could: the audit
//! names the tick and what differs and exits 1; the untouched history and
//! a history spanning a migration exit 0.
#![allow(clippy::disallowed_methods)] // the test edits real files the way a host holding the agent key would

use igor::audit::ticklog::{SignedTickLog, TickLog, ticks_file_tick};
use igor::authority::AuthorityState;
use igor::checkpoint::{Checkpoint, CheckpointBody, Hash32};
use igor::env::mem::{ManualClock, SeededEntropy};
use igor::env::real::FsDisk;
use igor::eventlog::EventLog;
use igor::identity::Keypair;
use igor::lineage;
use igor::node::{Command, Node, NodeConfig};
use igor::sandbox::{Sandbox, SandboxConfig};
use igor::units::{AgentId, Microcents, NodeId, TickNumber};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::OnceLock;

const OBSERVER: &[u8] = include_bytes!("../agents/observer.wat");
const BUDGET_EATER: &[u8] = include_bytes!("../agents/budget_eater.wat");
const MANIFEST: &[u8] = br#"{"capabilities": {"clock": {"version": 1}, "rand": {"version": 1}},
  "migration_policy": {"enabled": true, "max_price_per_second": 0}}"#;
const MS: u64 = 1_000_000;
const TICKS: u64 = 10_000;

type RealNode = Node<Sandbox, FsDisk, ManualClock, SeededEntropy>;

fn agent() -> AgentId {
    AgentId::new("observer").unwrap()
}

fn node(dir: &Path, id: &str, clock: &ManualClock) -> RealNode {
    node_priced(dir, id, clock, NodeConfig::new(NodeId::new(id).unwrap()).price_per_second)
}

fn node_priced(dir: &Path, id: &str, clock: &ManualClock, price: Microcents) -> RealNode {
    let mut cfg = NodeConfig::new(NodeId::new(id).unwrap());
    cfg.price_per_second = price;
    cfg.tick_idle_ns = MS;
    cfg.tick_fast_ns = MS;
    // About 50 ticks per link.
    cfg.checkpoint_interval_ns = 50 * MS;
    let sandbox = Sandbox::new(SandboxConfig { pooling_instances: Some(4), ..SandboxConfig::default() }).unwrap();
    Node::open(cfg, FsDisk::new(dir), clock.clone(), SeededEntropy::derived(7, id), sandbox)
}

/// Advance the clock a millisecond at a time until the node's agent has
/// run to `tick`.
fn run_to(n: &mut RealNode, clock: &ManualClock, tick: u64) {
    // Bounded: a node that stops ticking fails the test instead of hanging it.
    let start = n.agent(&agent()).unwrap().tick.0;
    let mut steps = 0u64;
    while n.agent(&agent()).unwrap().tick.0 < tick {
        steps += 1;
        assert!(
            steps <= tick.saturating_sub(start).saturating_mul(4) + 1_000,
            "the node stopped ticking at {:?}",
            n.agent(&agent())
        );
        clock.advance_ns(MS);
        n.advance();
        n.drain_events();
    }
}

/// Every request of `from`'s outbox is answered by `to` (two nodes only).
fn exchange(a: &mut RealNode, b: &mut RealNode) {
    for _ in 0..10 {
        let (out_a, out_b) = (a.take_outbox(), b.take_outbox());
        if out_a.is_empty() && out_b.is_empty() {
            return;
        }
        for o in out_a {
            let reply = b.handle_request(a.id(), &o.body);
            a.handle_reply(o.id, Ok(reply));
        }
        for o in out_b {
            let reply = a.handle_request(b.id(), &o.body);
            b.handle_reply(o.id, Ok(reply));
        }
    }
}

/// Hand `agent` from `a` to `b`, advancing both until `b` owns it.
fn migrate(a: &mut RealNode, b: &mut RealNode, clock: &ManualClock, agent: &AgentId) {
    a.command(Command::Migrate { agent: agent.clone(), to: b.id().clone() }).unwrap();
    for _ in 0..1000 {
        if b.agent(agent).is_some_and(|v| v.state == AuthorityState::ActiveOwner) {
            return;
        }
        clock.advance_ns(MS);
        a.advance();
        b.advance();
        exchange(a, b);
    }
    let id = b.id().clone();
    panic!("{id} refused {agent}: {:#?}", b.drain_events().into_iter().map(|e| e.event).collect::<Vec<_>>());
}

/// The one long history, built once: `<tmp>/n0` (agent `observer`).
fn history() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = tempfile::tempdir().unwrap().keep();
        let dir = root.join("n0");
        let clock = ManualClock::new(1_700_000_000_000_000_000);
        let mut n = node(&dir, "n0", &clock);
        n.deploy(agent(), OBSERVER.to_vec(), MANIFEST.to_vec(), Microcents(1_000_000)).unwrap();
        run_to(&mut n, &clock, TICKS);
        n.command(Command::Shutdown).unwrap();
        dir
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() { copy_dir(&p, &target) } else { std::fs::copy(&p, &target).map(drop).unwrap() }
    }
}

/// A private copy of the long history.
fn copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n0");
    copy_dir(history(), &dir);
    (tmp, dir)
}

fn hist(data: &Path) -> PathBuf {
    data.join("history/observer")
}

/// `igord audit <dirs>`: (exit code, stdout).
fn audit(dirs: &[PathBuf], extra: &[&str]) -> (i32, String) {
    let out = Process::new(env!("CARGO_BIN_EXE_igord")).arg("audit").args(dirs).args(extra).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

/// The checkpoint files of a history, by tick.
fn checkpoints(data: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<_> = std::fs::read_dir(hist(data))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| lineage::history_tick(&p.to_string_lossy()).map(|t| (t.0, p)))
        .collect();
    v.sort();
    v
}

fn agent_key(data: &Path) -> Keypair {
    Keypair::load(&FsDisk::new(data), &lineage::agent_key_path(&agent())).unwrap()
}

fn ticks_path(data: &Path, tick: u64) -> PathBuf {
    hist(data).join(format!("{tick:010}.ticks"))
}

fn read_log(data: &Path, tick: u64) -> TickLog {
    SignedTickLog::open(&std::fs::read(ticks_path(data, tick)).unwrap()).unwrap().log
}

/// What a host holding the agent key does to hide an edit of the
/// checkpoint at index `k` from `igord verify`: edit it, re-sign it, and
/// re-link and re-sign every later checkpoint and every log bound to them.
fn rewrite_from(data: &Path, k: usize, edit: impl Fn(&mut CheckpointBody)) {
    let key = agent_key(data);
    let ckpts = checkpoints(data);
    let mut prev_hash = Hash32::of(&std::fs::read(&ckpts[k - 1].1).unwrap());
    for (tick, path) in &ckpts[k..] {
        let old = Checkpoint::decode(&std::fs::read(path).unwrap()).unwrap();
        let mut body = Checkpoint::body(&old);
        if *tick == ckpts[k].0 {
            edit(&mut body);
        }
        body.prev_hash = prev_hash;
        let c = body.sign(&key);
        let bytes = c.encode();
        std::fs::write(path, &bytes).unwrap();
        if ticks_path(data, *tick).exists() {
            let mut log = read_log(data, *tick);
            log.link.parent_hash = prev_hash;
            log.link.state_hash = Hash32::of(&c.state);
            log.link.budget = c.budget;
            std::fs::write(ticks_path(data, *tick), log.seal(&key)).unwrap();
        }
        prev_hash = Hash32::of(&bytes);
    }
    let (code, out) = verify(data);
    assert_eq!(code, 0, "the rewrite must pass igord verify: {out}");
}

fn verify(data: &Path) -> (i32, String) {
    let out = Process::new(env!("CARGO_BIN_EXE_igord")).arg("verify").arg(hist(data)).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).to_string())
}

/// A link in the middle of the chain: (index, tick, parent tick).
fn middle(data: &Path) -> (usize, u64, u64) {
    let ckpts = checkpoints(data);
    let k = ckpts.len() / 2;
    (k, ckpts[k].0, ckpts[k - 1].0)
}

#[test]
fn an_untouched_long_history_audits_clean_from_genesis_and_from_an_anchor() {
    let (_tmp, data) = copy();
    let ckpts = checkpoints(&data);
    assert!(ckpts.len() > 150, "a checkpoint about every 50 ticks: {}", ckpts.len());
    assert_eq!(ckpts.last().unwrap().0, TICKS);
    let (code, out) = audit(&[hist(&data)], &[]);
    assert_eq!(code, 0, "{out}");
    let links = ckpts.len() - 1;
    assert!(
        out.contains(&format!("clean: {links} links audited of {links}, ticks 0..{TICKS} (from genesis)")),
        "{out}"
    );
    assert!(out.contains(&format!("{TICKS} ticks replayed")), "{out}");
    assert!(!out.contains("no log"), "{out}");
    // From an anchor in the middle: fewer ticks, same verdict.
    let (_, tick, _) = middle(&data);
    let (code, out) = audit(&[hist(&data)], &["--from", &tick.to_string(), "--progress"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("ticks {tick}..{TICKS} (from an anchor)")), "{out}");
    assert!(out.contains(&format!("{} ticks replayed", TICKS - tick)), "{out}");
    assert!(
        out.contains(&format!("\raudit: link 0/{}, tick {tick}, 0 ticks replayed", ckpts.len() - 1 - middle(&data).0)),
        "{out}"
    );
}

/// (a) A stored observation log edited in the middle: an edit without the
/// agent key breaks its signature; one re-signed with it changes what the
/// replayed guest observes, so the state at the link's checkpoint differs.
#[test]
fn an_edited_observation_log_is_named() {
    let (_tmp, data) = copy();
    let (_, tick, parent) = middle(&data);
    let path = ticks_path(&data, tick);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 200;
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(verify(&data).0, 0, "checkpoints are untouched");
    let (code, out) = audit(&[hist(&data)], &[]);
    assert_eq!(code, 1, "{out}");
    let file = format!("{tick:010}.ticks");
    assert!(out.contains(&format!("DIVERGENCE at tick {}: observation log rejected: ", parent + 1)), "{out}");
    assert!(out.contains("signature does not verify") && out.contains(&file), "{out}");

    // Re-signed: the clock reading of the link's last tick moves by 1 ns
    // (the observer keeps only the last reading: an edit of an earlier one
    // changes nothing the replay can see, and only the signature holds it).
    let (_tmp, data) = copy();
    let mut log = read_log(&data, tick);
    let t = log.ticks.last_mut().unwrap();
    let mut events = EventLog::decode(&t.event_log).unwrap();
    assert_eq!(events.entries[0].id, 1, "the observer's first call reads the clock");
    events.entries[0].payload[0] ^= 0x01;
    t.event_log = events.encode();
    std::fs::write(ticks_path(&data, tick), log.seal(&agent_key(&data))).unwrap();
    let (code, out) = audit(&[hist(&data)], &[]);
    assert_eq!(code, 1, "{out}");
    // The observer keeps the clock at bytes 8..16 of its state.
    assert!(out.contains(&format!("DIVERGENCE at tick {tick}: state differs")), "{out}");
    assert!(out.contains("first differing byte 8"), "{out}");
    assert!(out.contains(&format!("{tick:010}.ckpt")), "{out}");
}

/// (b) A state byte of a middle checkpoint, re-signed with the agent key
/// and the chain re-linked after it: only the replay can see it.
#[test]
fn an_edited_checkpoint_state_is_named() {
    let (_tmp, data) = copy();
    let (k, tick, _) = middle(&data);
    rewrite_from(&data, k, |b| b.state[3] ^= 0x40);
    let (code, out) = audit(&[hist(&data)], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("DIVERGENCE at tick {tick}: state differs")), "{out}");
    assert!(out.contains("first differing byte 3"), "{out}");
    assert!(out.contains(&format!("{tick:010}.ckpt")) && out.contains("epoch 1.0"), "{out}");
}

/// (c) The budget of a middle checkpoint lowered by one microcent (an
/// overcharge), re-signed and re-linked: the last tick of its link charged
/// one more than its replay costs.
#[test]
fn an_edited_checkpoint_budget_is_named() {
    let (_tmp, data) = copy();
    let (k, tick, _) = middle(&data);
    rewrite_from(&data, k, |b| b.budget = Microcents(b.budget.0 - 1));
    let (code, out) = audit(&[hist(&data)], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("DIVERGENCE at tick {tick}: charged ")), "{out}");
    assert!(out.contains("its replay costs"), "{out}");
}

/// Links without a log (a history from before logs existed) are listed,
/// not replayed, and not a crash; the replay resumes after them.
#[test]
fn links_without_a_log_are_reported_not_fatal() {
    let (_tmp, data) = copy();
    let (_, tick, parent) = middle(&data);
    std::fs::remove_file(ticks_path(&data, tick)).unwrap();
    let (code, out) = audit(&[hist(&data)], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("no log: ticks {}..={tick} (link not replayed)", parent + 1)), "{out}");
    assert!(out.contains(&format!("{} ticks replayed", TICKS - (tick - parent))), "{out}");
    // A history without any log at all.
    for (t, _) in checkpoints(&data) {
        let _ = std::fs::remove_file(ticks_path(&data, t));
    }
    let (code, out) = audit(&[hist(&data)], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 ticks replayed") && out.contains("more links not replayed"), "{out}");
}

#[test]
fn usage_and_unreadable_input_exit_2() {
    let (_tmp, data) = copy();
    let (code, out) = audit(&[hist(&data)], &["--from", "3"]);
    assert_eq!(code, 2, "no checkpoint at tick 3: {out}");
    let (code, out) = audit(&[hist(&data)], &["--wasm", "agents/counter.wat"]);
    assert_eq!(code, 2, "another module: {out}");
    assert!(out.contains("sha256"), "{out}");
    let (code, _) = audit(&[data.join("nowhere")], &[]);
    assert_eq!(code, 2);
}

/// A history that spans a migration (n0 -> n1): the chain joins across the
/// two nodes' histories, the handoff link's log is on both, and it audits
/// clean. The target's history alone audits from the adopted checkpoint.
#[test]
fn a_history_spanning_a_migration_audits_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000_000_000);
    let (da, db) = (tmp.path().join("n0"), tmp.path().join("n1"));
    let (mut a, mut b) = (node(&da, "n0", &clock), node(&db, "n1", &clock));
    // The binary, not the text: a package carries the stored module, which
    // must hash to the checkpoint's wasm hash.
    let wasm = igor::sandbox::wasm_binary(OBSERVER).unwrap();
    a.deploy(agent(), wasm, MANIFEST.to_vec(), Microcents(1_000_000)).unwrap();
    run_to(&mut a, &clock, 300);
    migrate(&mut a, &mut b, &clock, &agent());
    let handoff = b.agent(&agent()).unwrap().tick.0;
    run_to(&mut b, &clock, 600);
    b.command(Command::Shutdown).unwrap();
    a.command(Command::Shutdown).unwrap();
    let log = ticks_file_tick(&format!("{handoff:010}.ticks")).unwrap();
    assert_eq!(log, TickNumber(handoff));
    assert!(ticks_path(&db, handoff).exists(), "the target keeps the handoff link's log it received");
    assert_eq!(
        std::fs::read(ticks_path(&db, handoff)).unwrap(),
        std::fs::read(ticks_path(&da, handoff)).unwrap(),
        "source and target hold the same log"
    );
    let (code, out) = audit(&[hist(&da), hist(&db)], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ticks 0..600 (from genesis), 600 ticks replayed"), "{out}");
    assert!(!out.contains("no log"), "{out}");
    let (code, out) = audit(&[hist(&db)], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("ticks {handoff}..600 (from an anchor)")), "{out}");
}

/// A history that ends with the budget: the last tick is cut mid-run (it
/// cannot buy its fuel), charged what was left, and the final checkpoint
/// holds the state before it. The replay cuts it the same way, restarts
/// from the state before it, and agrees.
#[test]
fn a_history_ending_in_budget_exhaustion_audits_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000_000_000);
    let data = tmp.path().join("n0");
    let mut cfg = NodeConfig::new(NodeId::new("n0").unwrap());
    cfg.tick_idle_ns = MS;
    cfg.tick_fast_ns = MS;
    cfg.checkpoint_interval_ns = 5 * MS;
    // ~100 microcents per tick: 1,050 last ten ticks and a cut eleventh.
    cfg.price_per_second = Microcents(1_000_000);
    let sandbox = Sandbox::new(SandboxConfig { pooling_instances: Some(4), ..SandboxConfig::default() }).unwrap();
    let mut n = Node::open(cfg, FsDisk::new(&data), clock.clone(), SeededEntropy::derived(7, "n0"), sandbox);
    let eater = AgentId::new("budget_eater").unwrap();
    n.deploy(eater.clone(), BUDGET_EATER.to_vec(), b"{}".to_vec(), Microcents(1_050)).unwrap();
    for _ in 0..100 {
        clock.advance_ns(MS);
        n.advance();
    }
    let view = n.agent(&eater).unwrap();
    assert_eq!(view.budget, Microcents(0), "{view:?}");
    assert_eq!(view.halted.as_deref(), Some("budget exhausted"), "{view:?}");
    let (code, out) = audit(&[data.join("history/budget_eater")], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("ticks 0..{} (from genesis)", view.tick)), "{out}");
    assert!(out.contains("budget 1050 -> 0 microcents"), "{out}");
}

/// Two hops between nodes of different prices, the second before the
/// agent's first checkpoint on the middle node: the ticks of that link ran
/// at the middle node's price, while its parent checkpoint (adopted from
/// the first node) names the first node's. The target's metering check
/// replayed them at the parent's price and refused an honest package
/// ("metering_check: tick 22 started with budget ..."); it now replays at
/// the price of the handoff checkpoint, as the audit does, and the history
/// across the three nodes audits clean.
#[test]
fn a_second_hop_from_a_node_with_another_price_is_accepted_and_audits_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000_000_000);
    let dirs: Vec<PathBuf> = ["a", "b", "c"].iter().map(|n| tmp.path().join(n)).collect();
    let mut a = node_priced(&dirs[0], "a", &clock, Microcents(1_000));
    let mut b = node_priced(&dirs[1], "b", &clock, Microcents(1_000_000));
    let mut c = node_priced(&dirs[2], "c", &clock, Microcents(1_000));
    let eater = AgentId::new("eater").unwrap();
    let wasm = igor::sandbox::wasm_binary(BUDGET_EATER).unwrap();
    a.deploy(eater.clone(), wasm, b"{}".to_vec(), Microcents(1_000_000_000)).unwrap();
    for _ in 0..20 {
        clock.advance_ns(MS);
        a.advance();
    }
    migrate(&mut a, &mut b, &clock, &eater);
    let adopted = b.agent(&eater).unwrap().tick.0;
    for _ in 0..3 {
        clock.advance_ns(MS);
        b.advance();
    }
    assert!(b.agent(&eater).unwrap().tick.0 > adopted, "b ticked at its own price");
    migrate(&mut b, &mut c, &clock, &eater);
    for _ in 0..20 {
        clock.advance_ns(MS);
        c.advance();
    }
    c.command(Command::Shutdown).unwrap();
    let hists: Vec<PathBuf> = dirs.iter().map(|d| d.join("history/eater")).collect();
    let (code, out) = audit(&hists, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(from genesis)") && !out.contains("no log"), "{out}");
}
