//! Per-tick overhead of the Igor runtime relative to calling the same
//! `agent_tick` export on bare wasmtime, measured in the same process run
//! (so the ratios hold on any machine). Run: `cargo bench --bench sandbox`.
//! Prints ns per operation and the ratio to the bare call.
#![allow(clippy::disallowed_methods)] // a benchmark reads the wall clock by definition

use igor::checkpoint::{CheckpointBody, Hash32};
use igor::env::mem::{MemDisk, SeededEntropy};
use igor::executor::{Executor, TickInputs};
use igor::identity::Keypair;
use igor::lineage::Lineage;
use igor::sandbox::{Sandbox, SandboxConfig};
use igor::units::{AgentId, Epoch, Microcents, TickNumber};
use std::hint::black_box;
use std::time::Instant;

const COUNTER: &[u8] = include_bytes!("../agents/counter.wat");
const OBSERVER: &[u8] = include_bytes!("../agents/observer.wat");
const OBSERVER_MANIFEST: &[u8] = include_bytes!("../agents/observer.manifest.json");

fn time(n: u64, mut f: impl FnMut(u64)) -> f64 {
    for i in 0..n.min(1000) {
        f(i); // warm up
    }
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn inputs(tick: u64) -> TickInputs {
    TickInputs {
        tick: TickNumber(tick),
        now_unix_ns: 1_700_000_000_000_000_000,
        rand_seed: [7; 32],
        budget: Microcents(i64::MAX / 2),
        price_per_second: Microcents(1_000_000),
        side_effects_allowed: true,
        receipts: Vec::new(),
    }
}

fn bare_tick_ns(wat: &[u8], n: u64) -> f64 {
    use wasmtime::{Engine, Linker, Module, Store};
    let engine = Engine::default();
    let module = Module::new(&engine, wat).expect("bench agent compiles");
    let mut linker = Linker::new(&engine);
    linker.func_wrap("igor", "clock_now", || 0i64).expect("link");
    linker.func_wrap("igor", "rand_bytes", |_: i32, _: i32| 0i32).expect("link");
    let mut store = Store::new(&engine, ());
    let inst = linker.instantiate(&mut store, &module).expect("instantiate");
    let tick = inst.get_typed_func::<(), i32>(&mut store, "agent_tick").expect("agent_tick");
    time(n, |_| {
        black_box(tick.call(&mut store, ()).expect("tick"));
    })
}

fn main() {
    let n = 200_000;
    let cfg = SandboxConfig { pooling_instances: Some(16), ..SandboxConfig::default() };
    let mut sb = Sandbox::new(cfg).expect("sandbox");
    for (name, wat, manifest) in [("counter", COUNTER, &[][..]), ("observer", OBSERVER, OBSERVER_MANIFEST)] {
        let bare = bare_tick_ns(wat, n);
        let hash = sb.prepare(wat, manifest).expect("prepare");
        let mut inst = sb.start(&hash, manifest, &[], &[]).expect("start");
        let tick = time(n, |i| {
            black_box(sb.tick(&mut inst, &inputs(i + 1)));
        });
        let snap = time(n, |i| {
            black_box(sb.tick(&mut inst, &inputs(i + 1)));
            black_box(sb.snapshot(&mut inst).expect("snapshot"));
        });
        let disk = MemDisk::new();
        let key = Keypair::generate(&mut SeededEntropy::derived(1, "bench"));
        let mut lineage = Lineage::new(AgentId::new(name).expect("id"));
        let mut t = 0u64;
        let ckpt = time(n / 20, |_| {
            t += 1;
            black_box(sb.tick(&mut inst, &inputs(t)));
            let (state, _) = sb.snapshot(&mut inst).expect("snapshot");
            let body = CheckpointBody {
                budget: Microcents(1_000_000_000 - t as i64),
                price_per_second: Microcents(1_000_000),
                tick: TickNumber(t),
                wasm_hash: hash,
                epoch: Epoch::new(1, 0),
                lease_expiry_ns: 0,
                prev_hash: Hash32::ZERO,
                state,
            };
            lineage.commit(&disk, body, &key).expect("commit");
        });
        let (state, kv) = sb.snapshot(&mut inst).expect("snapshot");
        let r = sb.tick(&mut inst, &inputs(1));
        let replay = time(n / 20, |_| {
            black_box(sb.replay_tick(&hash, manifest, &state, &kv, &inputs(1), &r.event_log).expect("replay"));
        });
        let start = time(n / 20, |_| {
            black_box(sb.start(&hash, manifest, &state, &kv).expect("start"));
        });
        println!("{name}: bare wasmtime agent_tick          {bare:>10.0} ns   1.0x");
        println!("{name}: igor tick (fuel, event log)        {tick:>10.0} ns {:>6.1}x", tick / bare);
        println!("{name}: + state capture (snapshot)         {snap:>10.0} ns {:>6.1}x", snap / bare);
        println!("{name}: + signed checkpoint (MemDisk)      {ckpt:>10.0} ns {:>6.1}x", ckpt / bare);
        println!("{name}: replay one tick (fresh instance)   {replay:>10.0} ns {:>6.1}x live tick", replay / tick);
        println!("{name}: instantiate from cache + resume    {start:>10.0} ns");
    }
}
