//! The Rust example agents (agents/rust/, built with igor-agent) on the
//! real sandbox and in the simulator (issue 14):
//! - the committed `.wasm` files are exactly what the sources build to
//!   (refresh with `agents/rust/build.sh`), so no scenario runs a stale
//!   artifact;
//! - the heartbeat's own count equals the number of ticks the node ran,
//!   read back from its checkpointed state with the SDK's decoder;
//! - a checkpoint written by a changed state struct is refused on resume
//!   (the agent traps in `agent_resume`; the node never ticks on misread
//!   state), and the SDK names the version mismatch;
//! - the price watcher's http goes only to its manifest's hosts: with
//!   another allow-list every poll is refused (-3) and the gateway is never
//!   contacted; its simulator run is exact (same trace twice).
//!
//! Agent-level properties are read from the agent's state here, on the
//! sandbox the node uses, because the scenario runner reports traces and
//! authority, not agent state; inside scenarios the agents check their own
//! continuity (state against kv) and trap when it breaks, which the
//! verdict shows.
#![allow(clippy::disallowed_methods)] // test: reads the committed wasm files and runs cargo

use heartbeat::Heartbeat;
use igor::executor::{Executor, TickInputs};
use igor::http::ScriptedHttp;
use igor::sandbox::{Sandbox, SandboxConfig};
use igor::units::{Microcents, TickNumber};
use igor_agent::state::{self, StateError};
use igor_sim::runner;
use igor_sim::scenario::Scenario;
use price_watcher::PriceWatcher;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> Vec<u8> {
    let p = root().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const AGENTS: [(&str, &str); 4] = [
    ("heartbeat", "heartbeat"),
    ("kv-counter", "kv_counter"),
    ("price-watcher", "price_watcher"),
    ("sentinel", "sentinel"),
];

#[test]
fn committed_wasm_matches_a_fresh_build() {
    // Its own target dir (shared with agents_docs.rs): the outer `cargo test`
    // holds the main one.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("agent-builds");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(root())
        .args(["build", "--locked", "--profile", "agent", "--target", "wasm32-unknown-unknown", "--target-dir"])
        .arg(&target);
    for (pkg, _) in AGENTS {
        cmd.args(["-p", pkg]);
    }
    let out = cmd.output().expect("run cargo");
    assert!(
        out.status.success(),
        "building the example agents for wasm32 failed (is the target installed? \
         `rustup target add wasm32-unknown-unknown`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (dir, name) in AGENTS {
        let fresh = std::fs::read(target.join(format!("wasm32-unknown-unknown/agent/{name}.wasm"))).unwrap();
        let committed = read(&format!("agents/rust/{dir}/{name}.wasm"));
        assert!(
            fresh == committed,
            "agents/rust/{dir}/{name}.wasm is stale ({} bytes committed, {} built): run agents/rust/build.sh",
            committed.len(),
            fresh.len()
        );
    }
}

fn sandbox(http: ScriptedHttp) -> Sandbox {
    let cfg = SandboxConfig { pooling_instances: Some(4), http: Arc::new(http), ..SandboxConfig::default() };
    Sandbox::new(cfg).unwrap()
}

fn inputs(tick: u64) -> TickInputs {
    TickInputs {
        tick: TickNumber(tick),
        now_unix_ns: 1_700_000_000_000_000_000 + tick as i64 * 1_000_000_000,
        rand_seed: igor::env::derive_seed(tick, "tick"),
        budget: Microcents(50_000_000),
        price_per_second: Microcents(1_000),
        side_effects_allowed: true,
        receipts: Vec::new(),
    }
}

/// Run `ticks` live ticks of an agent from (state, kv); return its (state, kv).
fn run(
    sb: &mut Sandbox,
    wasm: &[u8],
    manifest: &[u8],
    from: (&[u8], &[u8]),
    ticks: std::ops::RangeInclusive<u64>,
) -> (Vec<u8>, Vec<u8>) {
    let hash = sb.prepare(wasm, manifest).unwrap();
    let mut inst = sb.start(&hash, manifest, from.0, from.1).unwrap();
    for t in ticks {
        let r = sb.tick(&mut inst, &inputs(t));
        assert!(r.outcome.is_live(), "tick {t}: {:?}", r.outcome);
    }
    sb.snapshot(&mut inst).unwrap()
}

#[test]
fn heartbeat_count_equals_ticks_run_across_a_resume() {
    let wasm = read("agents/rust/heartbeat/heartbeat.wasm");
    let manifest = read("agents/rust/heartbeat/heartbeat.manifest.json");
    let mut sb = sandbox(ScriptedHttp::new());
    let (state, kv) = run(&mut sb, &wasm, &manifest, (&[], &[]), 1..=4);
    let hb: Heartbeat = state::decode(&state, 1).unwrap();
    assert_eq!(hb.beats, 4);
    assert_eq!(hb.first_ns, inputs(1).now_unix_ns);
    // A fresh instance from (state, kv), as after a migration.
    let (state, _) = run(&mut sb, &wasm, &manifest, (&state, &kv), 5..=7);
    let hb: Heartbeat = state::decode(&state, 1).unwrap();
    assert_eq!((hb.beats, hb.last_ns), (7, inputs(7).now_unix_ns));
}

#[test]
fn heartbeat_traps_on_a_state_without_its_kv() {
    let wasm = read("agents/rust/heartbeat/heartbeat.wasm");
    let manifest = read("agents/rust/heartbeat/heartbeat.manifest.json");
    let mut sb = sandbox(ScriptedHttp::new());
    let (state, _kv) = run(&mut sb, &wasm, &manifest, (&[], &[]), 1..=2);
    let hash = sb.prepare(&wasm, &manifest).unwrap();
    let mut inst = sb.start(&hash, &manifest, &state, &[]).unwrap();
    let r = sb.tick(&mut inst, &inputs(3));
    assert!(matches!(r.outcome, igor::executor::TickOutcome::Trapped { .. }), "{:?}", r.outcome);
}

/// The heartbeat's state struct with a field added: what a new build of the
/// agent would checkpoint.
#[derive(serde::Serialize, serde::Deserialize)]
struct HeartbeatV2 {
    beats: u64,
    first_ns: i64,
    last_ns: i64,
    refused: u64,
    missed: u64,
}

#[test]
fn a_changed_state_struct_fails_to_resume_naming_the_version_mismatch() {
    let wasm = read("agents/rust/heartbeat/heartbeat.wasm");
    let manifest = read("agents/rust/heartbeat/heartbeat.manifest.json");
    let changed = state::encode(&HeartbeatV2 { beats: 3, first_ns: 1, last_ns: 2, refused: 0, missed: 0 }, 1).unwrap();
    // The SDK names it...
    let err = state::decode::<Heartbeat>(&changed, 1).unwrap_err();
    assert!(matches!(err, StateError::VersionMismatch { .. }));
    let text = err.to_string();
    assert!(text.starts_with("state version mismatch for `heartbeat::Heartbeat`"), "{text}");
    // ...and the wasm agent refuses it: resume traps, and the node's
    // lifecycle error names the version mismatch (the agent exports the
    // version and shape it expects), so it never ticks on it.
    let mut sb = sandbox(ScriptedHttp::new());
    let hash = sb.prepare(&wasm, &manifest).unwrap();
    let Err(err) = sb.start(&hash, &manifest, &changed, &[]) else { panic!("resume must fail") };
    let text = err.to_string();
    assert!(text.contains("agent_resume refused the state: state version mismatch"), "{text}");
    assert!(text.contains("version 1 shape"), "{text}");
    // The same bytes re-encoded by the agent's own struct resume fine.
    let same = state::encode(&Heartbeat { beats: 3, first_ns: 1, last_ns: 2, refused: 0 }, 1).unwrap();
    let kv = igor_kv_with_beats(3);
    let mut inst = sb.start(&hash, &manifest, &same, &kv).unwrap();
    assert!(sb.tick(&mut inst, &inputs(4)).outcome.is_live());
}

/// The canonical kv encoding (docs/sandbox.md: `"IGKV" 1 count (klen key
/// vlen value)*`) holding `beats` = n, as the heartbeat writes it.
fn igor_kv_with_beats(n: u64) -> Vec<u8> {
    let mut kv = igor::kv::Kv::new(igor::kv::KvLimits::default());
    kv.put(heartbeat::KEY, &n.to_le_bytes()).unwrap();
    kv.encode()
}

#[test]
fn price_watcher_http_is_refused_for_a_host_outside_its_manifest() {
    let wasm = read("agents/rust/price-watcher/price_watcher.wasm");
    // Allowed: every poll reaches the scripted world.
    let http = ScriptedHttp::simulated_world();
    let mut sb = sandbox(http.clone());
    let manifest = read("agents/rust/price-watcher/price_watcher.manifest.json");
    let (state, _) = run(&mut sb, &wasm, &manifest, (&[], &[]), 1..=3);
    let pw: PriceWatcher = state::decode(&state, 1).unwrap();
    assert_eq!((pw.polls, pw.ok, pw.refused, pw.unparsable, pw.last_code), (3, 3, 0, 3, 200));
    assert_eq!(http.calls().len(), 3);
    // Another allow-list: refused by the membrane, the gateway never called.
    let http = ScriptedHttp::simulated_world();
    let mut sb = sandbox(http.clone());
    let other = read("agents/rust/price-watcher/other-host.manifest.json");
    let (state, _) = run(&mut sb, &wasm, &other, (&[], &[]), 1..=3);
    let pw: PriceWatcher = state::decode(&state, 1).unwrap();
    assert_eq!((pw.polls, pw.ok, pw.refused, pw.last_code), (3, 0, 3, -3));
    assert!(http.calls().is_empty(), "{:?}", http.calls());
}

#[test]
fn price_watcher_simulation_is_exact() {
    let path = root().join("scenarios/agents/price-watcher-migrate.ron");
    let scenario = Scenario::load(&path).unwrap();
    let base = Scenario::base_dir(&path);
    let a = runner::run(&scenario, &base, None).unwrap();
    let b = runner::run(&scenario, &base, None).unwrap();
    assert!(a.matches_expectation(), "{}", a.summary("price-watcher-migrate"));
    assert_eq!(a.trace.first_difference(&b.trace), None);
    assert_eq!(a.trace.hash(), b.trace.hash());
}

/// The size budget chosen for the example agents (docs/agents.md).
const SIZE_BUDGET: usize = 64 * 1024;

#[test]
fn example_agents_fit_the_size_budget() {
    for (dir, name) in AGENTS {
        let n = read(&format!("agents/rust/{dir}/{name}.wasm")).len();
        assert!(n < SIZE_BUDGET, "agents/rust/{dir}/{name}.wasm is {n} bytes, over the {SIZE_BUDGET}-byte budget");
    }
}

#[test]
fn sentinel_pays_each_intent_once_with_its_key_as_memo() {
    let wasm = read("agents/rust/sentinel/sentinel.wasm");
    let manifest = read("agents/rust/sentinel/sentinel.manifest.json");
    let ledger = igor::membrane::LedgerPayments::default();
    let cfg =
        SandboxConfig { pooling_instances: Some(4), payments: Arc::new(ledger.clone()), ..SandboxConfig::default() };
    let mut sb = Sandbox::new(cfg).unwrap();
    let (state, _) = run(&mut sb, &wasm, &manifest, (&[], &[]), 1..=10);
    let s: sentinel::Sentinel = state::decode(&state, 1).unwrap();
    assert_eq!((s.payments, s.paid, s.refused), (3, 3 * sentinel::AMOUNT, 0));
    let memos: Vec<String> = ledger.payments().iter().map(|p| String::from_utf8_lossy(&p.memo).into_owned()).collect();
    assert_eq!(memos, ["intent-1", "intent-2", "intent-3"]);
}

/// (tick, paid) of every tick_finished line for `agent` in a trace.
fn paying_ticks(trace: &igor_sim::trace::Trace, agent: &str) -> Vec<(u64, u64)> {
    trace
        .lines()
        .iter()
        .filter_map(|l| igor_sim::trace::parse(l))
        .filter(|l| l.kind == "tick_finished" && l.get("agent") == Some(agent))
        .filter_map(|l| Some((u64::try_from(l.int("tick")?).ok()?, u64::try_from(l.int("paid")?).ok()?)))
        .filter(|(_, paid)| *paid > 0)
        .collect()
}

#[test]
fn sentinel_crash_between_checkpoints_pays_no_tick_twice() {
    // Found by the sdk helper: before, a paying tick was only committed at
    // the next checkpoint interval, so a crash in between re-ran it and
    // paid intent-2 twice (ticks 7 at 6.000 and again at 11.000). Now a
    // tick that paid or called out is committed before the next one.
    let path = root().join("scenarios/agents/sentinel-crash-restart.ron");
    let scenario = Scenario::load(&path).unwrap();
    let report = runner::run(&scenario, &Scenario::base_dir(&path), None).unwrap();
    assert!(report.matches_expectation(), "{}", report.summary("sentinel-crash-restart"));
    let paid = paying_ticks(&report.trace, "sentinel");
    assert!(paid.len() >= 3, "{paid:?}");
    let mut ticks: Vec<u64> = paid.iter().map(|p| p.0).collect();
    ticks.dedup();
    assert_eq!(ticks.len(), paid.len(), "a tick paid twice across the crash: {paid:?}");
}

#[test]
fn sentinel_migration_pays_no_tick_twice() {
    let path = root().join("scenarios/agents/sentinel-migrate-chain.ron");
    let scenario = Scenario::load(&path).unwrap();
    let report = runner::run(&scenario, &Scenario::base_dir(&path), None).unwrap();
    assert!(report.matches_expectation(), "{}", report.summary("sentinel-migrate-chain"));
    let paid = paying_ticks(&report.trace, "sentinel");
    assert!(paid.len() >= 5, "{paid:?}");
    let mut ticks: Vec<u64> = paid.iter().map(|p| p.0).collect();
    ticks.dedup();
    assert_eq!(ticks.len(), paid.len(), "a tick paid twice across the handoffs: {paid:?}");
    assert!(paid.iter().all(|p| p.1 == sentinel::AMOUNT as u64), "{paid:?}");
    // Intent k is recorded at tick 3k and paid at tick 3k + 1.
    assert!(paid.iter().all(|p| p.0 % sentinel::PERIOD == 1), "{paid:?}");
}

fn igor_sim(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_igor-sim"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run igor-sim")
}

#[test]
fn explore_runs_a_template_on_a_users_agent() {
    let out = igor_sim(&[
        "explore",
        "scenarios/templates/a1-swarm.ron",
        "--seeds",
        "0..2",
        "--allow-gaps",
        "--agent",
        "agents/rust/heartbeat/heartbeat.wasm",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("explored 2 seeds") && text.contains("2 passed, 0 failed"), "{text}");
    // The override reaches the runner: the heartbeat imports kv, which the
    // price watcher's manifest does not grant, so it is never deployed and
    // never ticks (LIVENESS), where the same seed passes with its own manifest.
    let out = igor_sim(&[
        "explore",
        "scenarios/templates/a1-swarm.ron",
        "--seeds",
        "0..1",
        "--allow-gaps",
        "--agent",
        "agents/rust/heartbeat/heartbeat.wasm",
        "--manifest",
        "agents/rust/price-watcher/price_watcher.manifest.json",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("FAIL seed 0: LIVENESS"), "{text}");
    assert!(text.contains("--agent agents/rust/heartbeat/heartbeat.wasm --manifest"), "reproduce line: {text}");
}

/// Live ticks as a node runs them (a snapshot before each), then every tick
/// replayed on a fresh instance from its starting (state, kv) and log: the
/// replay must use the same fuel (hence cost), and give the same state and
/// kv. A guest heap whose layout depends on the instance's history (what
/// ran before, snapshots taken) would change the fuel of later ticks and
/// fail the targets' metering check on migration.
fn assert_replays_exactly(dir: &str, name: &str, ticks: u64, cfg: SandboxConfig) {
    let wasm = read(&format!("agents/rust/{dir}/{name}.wasm"));
    let manifest = read(&format!("agents/rust/{dir}/{name}.manifest.json"));
    let mut sb = Sandbox::new(cfg).unwrap();
    let hash = sb.prepare(&wasm, &manifest).unwrap();
    let mut inst = sb.start(&hash, &manifest, &[], &[]).unwrap();
    for t in 1..=ticks {
        let (state, kv) = sb.snapshot(&mut inst).unwrap();
        let inp = inputs(t);
        let live = sb.tick(&mut inst, &inp);
        assert!(live.outcome.is_live(), "{name} tick {t}: {:?}", live.outcome);
        let (state_after, kv_after) = sb.snapshot(&mut inst).unwrap();
        let r = sb.replay_tick(&hash, &manifest, &state, &kv, &inp, &live.event_log).unwrap();
        assert_eq!(r.fuel_used, live.fuel_used, "{name} tick {t}: replay fuel");
        assert_eq!((r.state, r.kv), (state_after, kv_after), "{name} tick {t}: replay state and kv");
    }
}

#[test]
fn every_example_agent_tick_replays_with_the_same_fuel() {
    let base = || SandboxConfig { pooling_instances: Some(4), ..SandboxConfig::default() };
    assert_replays_exactly("heartbeat", "heartbeat", 30, base());
    assert_replays_exactly("kv-counter", "kv_counter", 30, base());
    let http = SandboxConfig { http: Arc::new(ScriptedHttp::simulated_world()), ..base() };
    assert_replays_exactly("price-watcher", "price_watcher", 30, http);
    assert_replays_exactly("sentinel", "sentinel", 30, base());
}
