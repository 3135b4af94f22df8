//! Migration latency on loopback: from the operator's `Migrate` command to
//! the first tick on the target, for the counter agent, over the real
//! backend (libp2p TCP+noise+yamux on 127.0.0.1, `FsDisk` with fsync, the
//! wasmtime sandbox), with the module already compiled on both nodes
//! (cached). Two nodes in one process, each run by the one driver loop; the
//! agent ping-pongs between them. Prints p50/p99 over the timed migrations
//! and the ratio to the 360 ms the original reported for the same step.
//! Run: `cargo bench --bench migration` (`-- N` for another count).
#![allow(clippy::disallowed_methods)] // a benchmark reads the wall clock and makes temp dirs

use igor::driver::{self, Control};
use igor::env::real::{FsDisk, OsEntropy, SystemClock};
use igor::node::{Command, Event, Node, NodeConfig, NodeEvent};
use igor::p2p::P2pNetwork;
use igor::sandbox::{Sandbox, SandboxConfig, WallClockNet, wasm_binary};
use igor::units::{AgentId, Microcents, NodeId};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const COUNTER: &[u8] = include_bytes!("../agents/counter.wat");
/// The original (Go, v0) reported this for the same step.
const ORIGINAL_MS: f64 = 360.0;
const DEFAULT_MIGRATIONS: usize = 50;
/// Untimed round trips first: each node compiles the module once.
const WARMUP_MIGRATIONS: usize = 2;
/// Any single step slower than this is a failure, not a measurement.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

type RealNode = Node<Sandbox, FsDisk, SystemClock, OsEntropy>;

struct Side {
    id: NodeId,
    control: mpsc::UnboundedSender<Control>,
    events: mpsc::UnboundedReceiver<NodeEvent>,
    /// Recent events, printed if a step fails.
    recent: std::collections::VecDeque<String>,
}

/// Events kept per side for a failure report.
const RECENT_EVENTS: usize = 40;

fn report(sides: [&mut Side; 2], what: &str) -> ! {
    for s in sides {
        while let Ok(e) = s.events.try_recv() {
            if s.recent.len() == RECENT_EVENTS {
                s.recent.pop_front();
            }
            s.recent.push_back(e.to_string());
        }
        eprintln!("---- last events of {} ----", s.id);
        for e in &s.recent {
            eprintln!("{e}");
        }
    }
    panic!("{what}");
}

async fn next_event(side: &mut Side, other: &mut Side, what: &str, f: impl Fn(&Event) -> bool) {
    let wait = async {
        while let Some(e) = side.events.recv().await {
            if side.recent.len() == RECENT_EVENTS {
                side.recent.pop_front();
            }
            side.recent.push_back(e.to_string());
            if f(&e.event) {
                return true;
            }
        }
        false
    };
    let id = side.id.clone();
    match tokio::time::timeout(STEP_TIMEOUT, wait).await {
        Ok(true) => {}
        Ok(false) => report([side, other], &format!("{id}: event stream closed while waiting for {what}")),
        Err(_) => report([side, other], &format!("{id}: no {what} within {STEP_TIMEOUT:?}")),
    }
}

/// Migrate `agent` from `from` to `to`; the latency to the first tick on
/// `to`, then wait for `from` to retire (so the next hop starts clean).
async fn hop(agent: &AgentId, from: &mut Side, to: &mut Side) -> Duration {
    let cmd = Command::Migrate { agent: agent.clone(), to: to.id.clone() };
    let start = Instant::now();
    from.control.send(Control::Command(cmd)).expect("source driver running");
    next_event(to, from, "first tick", |e| matches!(e, Event::TickStarted { agent: a, .. } if a == agent)).await;
    let latency = start.elapsed();
    next_event(from, to, "end of the handoff", |e| matches!(e, Event::MigrationFinished { .. })).await;
    if !from.recent.back().is_some_and(|e| e.contains("outcome={\"kind\":\"completed\"}")) {
        report([from, to], "migration did not complete");
    }
    latency
}

fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    let i = ((sorted_ms.len() as f64 - 1.0) * p).round() as usize;
    sorted_ms[i.min(sorted_ms.len() - 1)]
}

async fn start_node(dir: &std::path::Path, seed: u8, peers: &[libp2p::Multiaddr]) -> (RealNode, P2pNetwork) {
    let key = libp2p::identity::Keypair::ed25519_from_bytes([seed; 32]).expect("32-byte seed");
    let listen = "/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr");
    let net = P2pNetwork::start(key, listen, peers).await.expect("listen on loopback");
    let mut cfg = NodeConfig::new(net.local_id().clone());
    for p in peers {
        cfg.peers.push(net.add_peer(p.clone()).expect("peer address"));
    }
    // The benchmark bounces one agent back and forth as fast as it can,
    // which is exactly the churn the per-peer rate limit (an A3 defence)
    // refuses; it measures the migration path, so the limit is off here.
    cfg.defences.rate_limit = false;
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
    let node = Node::open(cfg, FsDisk::new(dir), SystemClock::default(), OsEntropy, sandbox);
    (node, net)
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(DEFAULT_MIGRATIONS);
    let tmp = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let samples = rt.block_on(async {
        let (mut na, net_a) = start_node(&tmp.path().join("a"), 1, &[]).await;
        let (mut nb, net_b) = start_node(&tmp.path().join("b"), 2, &net_a.listen_addrs).await;
        net_a.add_peer(net_b.listen_addrs[0].clone()).expect("peer address");
        let _wall_a = WallClockNet::start(na.executor().engine().clone());
        let _wall_b = WallClockNet::start(nb.executor().engine().clone());
        let (ca, mut rx_a) = mpsc::unbounded_channel();
        let (cb, mut rx_b) = mpsc::unbounded_channel();
        let (ea_tx, ea) = mpsc::unbounded_channel();
        let (eb_tx, eb) = mpsc::unbounded_channel();
        let mut a = Side { id: na.id().clone(), control: ca, events: ea, recent: Default::default() };
        let mut b = Side { id: nb.id().clone(), control: cb, events: eb, recent: Default::default() };
        let agent = AgentId::new("counter").expect("valid id");
        let script = async {
            let wasm = wasm_binary(COUNTER).expect("counter compiles");
            let deploy = Control::Deploy {
                agent: agent.clone(),
                key: None,
                wasm,
                manifest: b"{}".to_vec(),
                budget: Microcents(1_000_000_000),
            };
            a.control.send(deploy).expect("driver A running");
            next_event(&mut a, &mut b, "first tick", |e| matches!(e, Event::TickStarted { .. })).await;
            let mut samples = Vec::with_capacity(n);
            for i in 0..WARMUP_MIGRATIONS + n {
                let latency =
                    if i % 2 == 0 { hop(&agent, &mut a, &mut b).await } else { hop(&agent, &mut b, &mut a).await };
                if i >= WARMUP_MIGRATIONS {
                    samples.push(latency);
                }
            }
            for side in [&a, &b] {
                let _ = side.control.send(Control::Stop);
            }
            samples
        };
        let (samples, (), ()) = tokio::join!(
            script,
            driver::run(&mut na, &net_a, &mut rx_a, &ea_tx),
            driver::run(&mut nb, &net_b, &mut rx_b, &eb_tx),
        );
        samples
    });
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(|x, y| x.total_cmp(y));
    let (p50, p99) = (percentile(&ms, 0.50), percentile(&ms, 0.99));
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    println!("migration latency, command -> first tick on target (loopback libp2p, fsync'd disk, cached module)");
    println!("migrations: {}", ms.len());
    println!(
        "p50 {p50:.2} ms  p99 {p99:.2} ms  mean {mean:.2} ms  min {:.2} ms  max {:.2} ms",
        ms[0],
        ms[ms.len() - 1]
    );
    println!(
        "vs original {ORIGINAL_MS} ms: p50 is {:.1}x faster ({:.3} of it), p99 is {:.1}x faster ({:.3} of it)",
        ORIGINAL_MS / p50,
        p50 / ORIGINAL_MS,
        ORIGINAL_MS / p99,
        p99 / ORIGINAL_MS
    );
}
