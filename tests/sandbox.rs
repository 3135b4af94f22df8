//! The sandbox against the acceptance list of issue 3: hostile agents end
//! with typed outcomes and leave the last checkpoint intact; replay is exact
//! and any flipped log byte is a divergence at its tick; fuel is the same on
//! two fresh engines; budget is conserved to the microcent.

use igor::checkpoint::{CheckpointBody, Hash32};
use igor::env::mem::{MemDisk, SeededEntropy};
use igor::executor::{ExecError, Executor, TickInputs, TickOutcome, TickReport};
use igor::http::{Hop, HttpError, HttpResponse, ScriptedHttp};
use igor::identity::Keypair;
use igor::lineage::{Lineage, verify_chain as verify_lineage};
use igor::membrane::LedgerPayments;
use igor::meter;
use igor::receipt::{Receipt, ReceiptBody};
use igor::replay::{DivergenceKind, TickRecord, verify_chain, verify_tick};
use igor::sandbox::{Instance, Sandbox, SandboxConfig};
use igor::units::{AgentId, Epoch, Microcents, NodeId, TickNumber};
use std::sync::Arc;

macro_rules! agent {
    ($name:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/agents/", $name, ".wat")).as_slice()
    };
}
macro_rules! manifest {
    ($name:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/agents/", $name, ".manifest.json")).as_slice()
    };
}

const TICK_FUEL: u64 = 2_000_000;
const PRICE: Microcents = Microcents(1_000_000);

fn config() -> SandboxConfig {
    SandboxConfig {
        tick_fuel: TICK_FUEL,
        lifecycle_fuel: 10_000_000,
        pooling_instances: Some(16),
        ..SandboxConfig::default()
    }
}

fn sandbox_with(http: ScriptedHttp, ledger: LedgerPayments) -> Sandbox {
    Sandbox::new(SandboxConfig { http: Arc::new(http), payments: Arc::new(ledger), ..config() }).unwrap()
}

fn sandbox() -> Sandbox {
    Sandbox::new(config()).unwrap()
}

fn inputs(tick: u64, budget: i64) -> TickInputs {
    TickInputs {
        tick: TickNumber(tick),
        now_unix_ns: 1_700_000_000_000_000_000 + tick as i64 * 1_000_000_000,
        rand_seed: igor::env::derive_seed(tick, "tick"),
        budget: Microcents(budget),
        price_per_second: PRICE,
        side_effects_allowed: true,
        receipts: Vec::new(),
    }
}

/// Start an agent and run `n` ticks, recording everything a verifier needs.
struct Run {
    hash: Hash32,
    manifest: Vec<u8>,
    inst: Instance,
    budget: i64,
    records: Vec<TickRecord>,
    reports: Vec<TickReport>,
}

fn start(sb: &mut Sandbox, wasm: &[u8], manifest: &[u8], budget: i64) -> Run {
    let hash = sb.prepare(wasm, manifest).unwrap();
    let inst = sb.start(&hash, manifest, &[], &[]).unwrap();
    Run { hash, manifest: manifest.to_vec(), inst, budget, records: Vec::new(), reports: Vec::new() }
}

impl Run {
    fn tick(&mut self, sb: &mut Sandbox) -> TickReport {
        let tick = self.reports.len() as u64 + 1;
        let inp = inputs(tick, self.budget);
        let r = sb.tick(&mut self.inst, &inp);
        self.budget -= r.cost.0 + r.paid.0;
        // A tick that did not complete leaves the state as it was (the
        // instance is poisoned and cannot be snapshotted).
        if let Ok((state, kv)) = sb.snapshot(&mut self.inst) {
            self.records.push(TickRecord {
                inputs: inp,
                event_log: r.event_log.clone(),
                cost: r.cost,
                state_after: state,
                kv_after: kv,
            });
        }
        self.reports.push(r.clone());
        r
    }
    fn ticks(&mut self, sb: &mut Sandbox, n: usize) {
        for _ in 0..n {
            let r = self.tick(sb);
            assert!(r.outcome.is_live(), "{:?}", r.outcome);
        }
    }
}

fn i32_at(state: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(state[at..at + 4].try_into().unwrap())
}
fn u64_at(state: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(state[at..at + 8].try_into().unwrap())
}

fn scripted_http() -> ScriptedHttp {
    let http = ScriptedHttp::new();
    http.route(
        "GET",
        "http://api.example/data",
        Ok(Hop::Response(HttpResponse { status: 200, body: b"DATA and more".to_vec() })),
    );
    http
}

#[test]
fn golden_fuel_counter_and_observer() {
    // If wasmtime or the hostcall charges change, these numbers change:
    // that is a metering change and must be a visible, reviewed diff.
    let mut sb = sandbox();
    let mut run = start(&mut sb, agent!("counter"), &[], 1_000_000);
    let r = run.tick(&mut sb);
    assert_eq!(r.fuel_used, GOLDEN_COUNTER_FUEL, "counter tick fuel");
    assert_eq!(r.cost, Microcents(1), "minimum tick fuel (1000) costs 1 µ¢ at 1 unit/s");
    let mut run = start(&mut sb, agent!("observer"), manifest!("observer"), 1_000_000);
    let r = run.tick(&mut sb);
    assert_eq!(r.fuel_used, GOLDEN_OBSERVER_FUEL, "observer tick fuel (2 hostcalls + 16 bytes)");
    assert_eq!(r.cost, meter::cost_of_fuel(GOLDEN_OBSERVER_FUEL, PRICE).unwrap());
}
const GOLDEN_COUNTER_FUEL: u64 = 8;
const GOLDEN_OBSERVER_FUEL: u64 = 2_030;

#[test]
fn same_fuel_cost_and_log_on_two_fresh_engines() {
    for (wasm, manifest) in [
        (agent!("observer"), manifest!("observer")),
        (agent!("kv"), manifest!("kv")),
        (agent!("payer"), manifest!("payer")),
        (agent!("http"), manifest!("http")),
    ] {
        let mut runs = Vec::new();
        for _ in 0..2 {
            let mut sb = sandbox_with(scripted_http(), LedgerPayments::default());
            let mut run = start(&mut sb, wasm, manifest, 10_000_000);
            run.ticks(&mut sb, 4);
            let snap = sb.snapshot(&mut run.inst).unwrap();
            runs.push((run.reports, snap));
        }
        assert_eq!(runs[0], runs[1]);
    }
}

#[test]
fn replay_is_exact_and_never_repeats_effects() {
    let ledger = LedgerPayments::default();
    let http = scripted_http();
    let mut sb = sandbox_with(http.clone(), ledger.clone());
    for (name, wasm, manifest) in [
        ("counter", agent!("counter"), &[][..]),
        ("observer", agent!("observer"), manifest!("observer")),
        ("kv", agent!("kv"), manifest!("kv")),
        ("payer", agent!("payer"), manifest!("payer")),
        ("http", agent!("http"), manifest!("http")),
    ] {
        let mut run = start(&mut sb, wasm, manifest, 10_000_000);
        run.ticks(&mut sb, 5);
        let (payments, calls) = (ledger.payments().len(), http.calls().len());
        let total = verify_chain(&mut sb, &run.hash, &run.manifest, &[], &[], &run.records)
            .unwrap_or_else(|d| panic!("{name}: {d}"));
        let live: i64 = run.reports.iter().map(|r| r.cost.0).sum();
        assert_eq!(total, Microcents(live), "{name}: replayed cost");
        assert_eq!(ledger.payments().len(), payments, "{name}: replay paid again");
        assert_eq!(http.calls().len(), calls, "{name}: replay re-sent http");
    }
    assert_eq!(ledger.payments().len(), 5);
}

#[test]
fn every_flipped_log_byte_is_a_divergence_at_that_tick() {
    for (name, wasm, manifest) in [
        ("counter", agent!("counter"), &[][..]),
        ("observer", agent!("observer"), manifest!("observer")),
        ("kv", agent!("kv"), manifest!("kv")),
        ("payer", agent!("payer"), manifest!("payer")),
    ] {
        let mut sb = sandbox();
        let mut run = start(&mut sb, wasm, manifest, 10_000_000);
        run.ticks(&mut sb, 3);
        let (before, after) = (&run.records[1], &run.records[2]);
        verify_tick(&mut sb, &run.hash, manifest, &before.state_after, &before.kv_after, after).unwrap();
        for i in 0..after.event_log.len() {
            let mut bad = after.clone();
            bad.event_log[i] ^= 0x01;
            let d = verify_tick(&mut sb, &run.hash, manifest, &before.state_after, &before.kv_after, &bad)
                .expect_err(&format!("{name}: flipped log byte {i} not detected"));
            assert_eq!(d.tick, TickNumber(3), "{name}: byte {i}: {d}");
        }
    }
}

/// A recorded payment the manifest forbids is a forged entry: the live
/// call refuses a recipient off the list (-3) or an amount over the cap
/// (-4) before paying, so a log that says it paid one lies, and replay
/// (the audit's and a migration target's metering check) must not count
/// it as money the agent spent. Here the payer's honest log (10 to
/// "alice") is replayed under manifests that would have refused it.
#[test]
fn a_recorded_payment_the_manifest_forbids_is_a_divergence() {
    let mut sb = sandbox();
    let mut run = start(&mut sb, agent!("payer"), manifest!("payer"), 10_000_000);
    run.ticks(&mut sb, 3);
    let (before, after) = (&run.records[1], &run.records[2]);
    verify_tick(&mut sb, &run.hash, manifest!("payer"), &before.state_after, &before.kv_after, after).unwrap();
    let payer = |recipients: &str, cap: i64| {
        format!(
            r#"{{"capabilities":{{"x402":{{"version":1,"options":{{"allowed_recipients":[{recipients}],"max_payment_microcents":{cap}}}}},"wallet":{{"version":1}}}}}}"#
        )
    };
    for (why, manifest) in
        [("recipient off the list", payer(r#""bob""#, 100)), ("over the cap", payer(r#""alice""#, 5))]
    {
        let d = verify_tick(&mut sb, &run.hash, manifest.as_bytes(), &before.state_after, &before.kv_after, after)
            .expect_err(why);
        assert!(matches!(d.kind, DivergenceKind::Log(_)) && d.tick == TickNumber(3), "{why}: {d}");
        assert!(d.to_string().contains("wallet_pay"), "{why}: {d}");
    }
    // No cap (0) and the recipient listed: the payment stands.
    let uncapped = payer(r#""alice""#, 0);
    verify_tick(&mut sb, &run.hash, uncapped.as_bytes(), &before.state_after, &before.kv_after, after).unwrap();
}

#[test]
fn divergent_state_names_hashes_and_first_byte() {
    let mut sb = sandbox();
    let mut run = start(&mut sb, agent!("observer"), manifest!("observer"), 10_000_000);
    run.ticks(&mut sb, 2);
    let mut bad = run.records[1].clone();
    bad.state_after[9] ^= 0xff;
    let d = verify_tick(&mut sb, &run.hash, manifest!("observer"), &run.records[0].state_after, &[], &bad).unwrap_err();
    assert!(matches!(d.kind, DivergenceKind::State { first_byte: 9, .. }), "{d}");
    assert!(d.to_string().contains("tick 2") && d.to_string().contains("first differing byte 9"), "{d}");
    let mut bad = run.records[1].clone();
    bad.cost = Microcents(bad.cost.0 + 1);
    let d = verify_tick(&mut sb, &run.hash, manifest!("observer"), &run.records[0].state_after, &[], &bad).unwrap_err();
    assert!(matches!(d.kind, DivergenceKind::Charge { .. }), "{d}");
}

#[test]
fn budget_is_conserved_to_the_microcent_until_exhaustion() {
    let ledger = LedgerPayments::default();
    let mut sb = sandbox_with(ScriptedHttp::new(), ledger.clone());
    let initial = 700;
    let mut run = start(&mut sb, agent!("payer"), manifest!("payer"), initial);
    let mut n = 0;
    loop {
        let r = run.tick(&mut sb);
        n += 1;
        assert!(run.budget >= 0, "RE-4: budget went negative at tick {n}");
        if r.outcome == TickOutcome::BudgetExhausted {
            break;
        }
        assert!(r.outcome.is_live(), "{:?}", r.outcome);
        assert!(n < 1000, "never exhausted");
    }
    let cost: i64 = run.reports.iter().map(|r| r.cost.0).sum();
    let paid: i64 = run.reports.iter().map(|r| r.paid.0).sum();
    assert_eq!(run.budget, 0);
    assert_eq!(initial, run.budget + cost + paid, "RE-3");
    assert_eq!(paid, ledger.payments().iter().map(|p| p.amount.0).sum::<i64>());
    assert!(paid > 0 && cost > 0);
}

#[test]
fn a_tick_that_cannot_be_paid_is_charged_exactly_the_rest() {
    let mut sb = sandbox();
    let mut run = start(&mut sb, agent!("hostile_loop"), &[], 3);
    let r = run.tick(&mut sb);
    assert_eq!(r.outcome, TickOutcome::BudgetExhausted);
    assert_eq!(r.cost, Microcents(3));
    assert_eq!(r.fuel_used, 3_000, "fuel was limited to what the budget buys");
}

/// A lineage with one committed checkpoint of `state`, for hostile tests.
fn committed(disk: &MemDisk, state: Vec<u8>, budget: i64) -> (AgentId, Lineage) {
    let agent = AgentId::new("hostile").unwrap();
    let key = Keypair::generate(&mut SeededEntropy::derived(1, "agent"));
    let mut l = Lineage::new(agent.clone());
    let body = CheckpointBody {
        budget: Microcents(budget),
        price_per_second: PRICE,
        tick: TickNumber(0),
        wasm_hash: Hash32::ZERO,
        epoch: Epoch::new(1, 0),
        lease_expiry_ns: 0,
        prev_hash: Hash32::ZERO,
        state,
    };
    l.commit(disk, body, &key).unwrap();
    (agent, l)
}

fn assert_head_intact(disk: &MemDisk, agent: &AgentId, before: &Lineage) {
    let l = Lineage::open(disk, agent).unwrap();
    assert_eq!(l.head_hash(), before.head_hash());
    assert!(l.damaged().is_empty());
    verify_lineage(&Lineage::archive(disk, agent).unwrap()).unwrap();
}

#[test]
fn hostile_agents_end_with_typed_outcomes_and_leave_the_checkpoint_intact() {
    let mut sb = sandbox();
    let disk = MemDisk::new();
    let (agent, lineage) = committed(&disk, vec![0; 8], 1_000_000);

    let mut run = start(&mut sb, agent!("hostile_loop"), &[], 1_000_000);
    let r = run.tick(&mut sb);
    assert_eq!(r.outcome, TickOutcome::OutOfFuel);
    assert_eq!(r.cost, meter::cost_of_fuel(TICK_FUEL, PRICE).unwrap(), "whole tick fuel charged");
    let err = sb.snapshot(&mut run.inst).unwrap_err();
    assert!(err.to_string().contains("OutOfFuel"), "{err}");
    assert!(!run.tick(&mut sb).outcome.is_live(), "a poisoned instance does not tick again");

    let mut run = start(&mut sb, agent!("hostile_membomb"), manifest!("hostile_membomb"), 1_000_000);
    let r = run.tick(&mut sb);
    assert!(
        matches!(&r.outcome, TickOutcome::Trapped { message } if message.contains("unreachable")),
        "{:?}",
        r.outcome
    );
    let mem = run.inst.memory_bytes();
    assert!(mem <= 4 << 20 && mem + (1 << 20) > 4 << 20, "memory.grow failed in the guest at the manifest cap ({mem})");

    let mut run = start(&mut sb, agent!("hostile_trap"), &[], 1_000_000);
    assert!(run.tick(&mut sb).outcome.is_live() && run.tick(&mut sb).outcome.is_live());
    let r = run.tick(&mut sb);
    assert!(
        matches!(&r.outcome, TickOutcome::Trapped { message } if message.contains("divide by zero")),
        "{:?}",
        r.outcome
    );

    let mut run = start(&mut sb, agent!("hostile_badptr"), manifest!("hostile_badptr"), 1_000_000);
    assert!(run.tick(&mut sb).outcome.is_live());
    let (state, _) = sb.snapshot(&mut run.inst).unwrap();
    assert_eq!([i32_at(&state, 8), i32_at(&state, 12), i32_at(&state, 16), i32_at(&state, 20)], [-4, -2, -1, -1]);

    let mut run = start(&mut sb, agent!("hostile_hugelog"), manifest!("hostile_hugelog"), 1_000_000);
    assert_eq!(run.tick(&mut sb).outcome, TickOutcome::OutOfFuel);
    let (logs, _dropped) = run.inst.take_logs();
    assert!(logs.iter().map(String::len).sum::<usize>() <= igor::membrane::MAX_LOG_BYTES_PER_TICK);

    let err = sb.prepare(agent!("hostile_undeclared"), &[]).unwrap_err();
    assert!(matches!(&err, ExecError::Capability(m) if m.contains("http_request") && m.contains("`http`")), "{err}");

    let mut run = start(&mut sb, agent!("hostile_liar"), &[], 1_000_000);
    assert!(run.tick(&mut sb).outcome.is_live());
    let err = sb.snapshot(&mut run.inst).unwrap_err();
    assert!(
        matches!(&err, ExecError::Lifecycle(m) if m.contains("agent_checkpoint") && m.contains("1000000")),
        "{err}"
    );

    assert_head_intact(&disk, &agent, &lineage);
}

#[test]
fn failed_tick_rolls_back_kv_writes() {
    // kv agent resumed with a full quota: kv_put fails, but a trap after a
    // successful put must undo it. Use an inline agent: put, then trap.
    let wat = r#"(module
      (import "igor" "kv_put" (func $put (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 100) "key")
      (func (export "agent_init"))
      (func (export "agent_tick") (result i32)
        (drop (call $put (i32.const 100) (i32.const 3) (i32.const 100) (i32.const 3))) unreachable)
      (func (export "agent_checkpoint") (result i32) (i32.const 0))
      (func (export "agent_checkpoint_ptr") (result i32) (i32.const 0))
      (func (export "agent_resume") (param i32 i32)))"#;
    let mut sb = sandbox();
    let mut run = start(&mut sb, wat.as_bytes(), manifest!("kv"), 1_000_000);
    assert!(matches!(run.tick(&mut sb).outcome, TickOutcome::Trapped { .. }));
    assert!(run.inst.kv().is_empty(), "the trapped tick's put was undone");
}

#[test]
fn side_effects_return_minus_3_unless_active_owner() {
    let ledger = LedgerPayments::default();
    let http = scripted_http();
    let mut sb = sandbox_with(http.clone(), ledger.clone());
    for (wasm, manifest, at) in [
        (agent!("kv"), manifest!("kv"), 8),
        (agent!("payer"), manifest!("payer"), 8),
        (agent!("http"), manifest!("http"), 8),
    ] {
        let hash = sb.prepare(wasm, manifest).unwrap();
        let mut inst = sb.start(&hash, manifest, &[], &[]).unwrap();
        let r = sb.tick(&mut inst, &TickInputs { side_effects_allowed: false, ..inputs(1, 1_000_000) });
        assert!(r.side_effects >= 1);
        let (state, kv) = sb.snapshot(&mut inst).unwrap();
        assert_eq!(i32_at(&state, at), -3);
        assert!(inst.kv().is_empty() && igor::kv::Kv::decode(&kv, Default::default()).unwrap().is_empty());
    }
    assert!(ledger.payments().is_empty(), "CM-5: no payment outside ACTIVE_OWNER");
    assert!(http.calls().is_empty(), "CM-5: no request outside ACTIVE_OWNER");
}

#[test]
fn http_responses_redirects_and_limits() {
    let http = ScriptedHttp::new();
    let mut sb = sandbox_with(http.clone(), LedgerPayments::default());
    let hash = sb.prepare(agent!("http"), manifest!("http")).unwrap();
    let mut tick = |answer: Result<Hop, HttpError>| {
        http.route("GET", "http://api.example/data", answer);
        let mut inst = sb.start(&hash, manifest!("http"), &[], &[]).unwrap();
        assert!(sb.tick(&mut inst, &inputs(1, 1_000_000)).outcome.is_live());
        let (state, _) = sb.snapshot(&mut inst).unwrap();
        (i32_at(&state, 8), i32_at(&state, 12))
    };
    assert_eq!(
        tick(Ok(Hop::Response(HttpResponse { status: 201, body: b"DATA".to_vec() }))),
        (201, i32::from_le_bytes(*b"DATA"))
    );
    let to_evil = Ok(Hop::Redirect { status: 302, location: "http://evil.example/steal".into() });
    assert_eq!(tick(to_evil).0, -3, "redirect off the allow-list");
    assert_eq!(
        tick(Ok(Hop::Response(HttpResponse { status: 200, body: vec![7; 5000] }))),
        (-5, 5000),
        "needed length hint"
    );
    assert_eq!(tick(Err(HttpError::Timeout)).0, -4);
    assert!(!http.calls().iter().any(|c| c.contains("evil")), "forbidden redirect never followed");
}

#[test]
fn kv_and_state_travel_with_the_agent() {
    let mut sb = sandbox();
    let mut run = start(&mut sb, agent!("kv"), manifest!("kv"), 1_000_000);
    run.ticks(&mut sb, 3);
    let (state, kv) = sb.snapshot(&mut run.inst).unwrap();
    assert_eq!(u64_at(&state, 0), 3);
    // Another sandbox (a migration target) resumes from the snapshot.
    let mut other = sandbox();
    let hash = other.prepare(agent!("kv"), manifest!("kv")).unwrap();
    let mut inst = other.start(&hash, manifest!("kv"), &state, &kv).unwrap();
    assert!(other.tick(&mut inst, &inputs(4, 1_000_000)).outcome.is_live());
    let (state, _) = other.snapshot(&mut inst).unwrap();
    assert_eq!((u64_at(&state, 0), i32_at(&state, 8), i32_at(&state, 12)), (4, 0, 8));
    // A kv snapshot over the manifest's quota is refused at start.
    let mut big = igor::kv::Kv::new(Default::default());
    big.put(b"x", &[0; 5000]).unwrap();
    assert!(matches!(other.start(&hash, manifest!("kv"), &state, &big.encode()), Err(ExecError::Lifecycle(_))));
}

#[test]
fn counter_resumes_where_it_stopped() {
    let mut sb = sandbox();
    let mut run = start(&mut sb, agent!("counter"), &[], 1_000_000);
    run.ticks(&mut sb, 3);
    let (state, kv) = sb.snapshot(&mut run.inst).unwrap();
    let mut inst = sb.start(&run.hash, &[], &state, &kv).unwrap();
    sb.tick(&mut inst, &inputs(4, 1_000_000));
    assert_eq!(u64_at(&sb.snapshot(&mut inst).unwrap().0, 0), 4);
}

#[test]
fn load_errors_name_the_export_and_the_manifest_field() {
    let mut sb = sandbox();
    let no_tick = r#"(module (memory (export "memory") 1) (func (export "agent_init"))
        (func (export "agent_checkpoint") (result i32) (i32.const 0))
        (func (export "agent_checkpoint_ptr") (result i32) (i32.const 0))
        (func (export "agent_resume") (param i32 i32)))"#;
    let err = sb.prepare(no_tick.as_bytes(), &[]).unwrap_err();
    assert_eq!(err, ExecError::InvalidModule("missing export `agent_tick`".into()));
    let err = sb.prepare(agent!("counter"), br#"{"capabilities": {"clock": {"version": "one"}}}"#).unwrap_err();
    assert!(matches!(&err, ExecError::Manifest(m) if m.contains("capabilities.clock.version")), "{err}");
    let err = sb.prepare(agent!("counter"), b"{not json").unwrap_err();
    assert!(matches!(err, ExecError::Manifest(_)));
    let err =
        sb.prepare(agent!("counter"), br#"{"resource_limits": {"max_memory_bytes": 1099511627776}}"#).unwrap_err();
    assert!(err.to_string().contains("max_memory_bytes"), "{err}");
    let wasi = r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))))"#;
    let err = sb.prepare(wasi.as_bytes(), &[]).unwrap_err();
    assert!(err.to_string().contains("agent_init") || err.to_string().contains("wasi_snapshot_preview1"), "{err}");
    // Resuming non-empty state needs malloc.
    let no_malloc = r#"(module (memory (export "memory") 1) (func (export "agent_init"))
        (func (export "agent_tick") (result i32) (i32.const 0))
        (func (export "agent_checkpoint") (result i32) (i32.const 0))
        (func (export "agent_checkpoint_ptr") (result i32) (i32.const 0))
        (func (export "agent_resume") (param i32 i32)))"#;
    let hash = sb.prepare(no_malloc.as_bytes(), &[]).unwrap();
    let err = sb.start(&hash, &[], b"state", &[]).unwrap_err();
    assert!(err.to_string().contains("malloc"), "{err}");
}

#[test]
fn receipts_are_readable_by_the_agent_and_verify() {
    let node = Keypair::generate(&mut SeededEntropy::derived(5, "node"));
    let receipt = ReceiptBody {
        agent: AgentId::new("reader").unwrap(),
        node: NodeId::new("node-a").unwrap(),
        epoch: Epoch::new(1, 0),
        first_tick: TickNumber(1),
        last_tick: TickNumber(9),
        cost: Microcents(90),
        budget_after: Microcents(910),
        meter_id: sandbox().meter_id(),
    }
    .sign(&node)
    .encode();
    let wat = r#"(module
      (import "igor" "wallet_receipt_count" (func $count (result i32)))
      (import "igor" "wallet_receipt" (func $get (param i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "agent_init"))
      (func (export "agent_tick") (result i32)
        (i32.store (i32.const 0) (call $count))
        (i32.store (i32.const 4) (call $get (i32.const 0) (i32.const 16) (i32.const 1024)))
        (i32.store (i32.const 8) (call $get (i32.const 1) (i32.const 16) (i32.const 1024)))
        (i32.store (i32.const 12) (call $get (i32.const 0) (i32.const 16) (i32.const 3)))
        (i32.const 0))
      (func (export "agent_checkpoint") (result i32) (i32.const 1040))
      (func (export "agent_checkpoint_ptr") (result i32) (i32.const 0))
      (func (export "agent_resume") (param i32 i32)))"#;
    let manifest = br#"{"capabilities": {"wallet": {"version": 1}}}"#;
    let mut sb = sandbox();
    let hash = sb.prepare(wat.as_bytes(), manifest).unwrap();
    let mut inst = sb.start(&hash, manifest, &[], &[]).unwrap();
    let r = sb.tick(&mut inst, &TickInputs { receipts: vec![receipt.clone()], ..inputs(10, 1_000_000) });
    assert!(r.outcome.is_live());
    let (state, _) = sb.snapshot(&mut inst).unwrap();
    let len = receipt.len();
    assert_eq!([i32_at(&state, 0), i32_at(&state, 4), i32_at(&state, 8), i32_at(&state, 12)], [1, len as i32, -1, -4]);
    let read = Receipt::parse(&state[16..16 + len]).unwrap();
    assert_eq!(read.body.cost, Microcents(90));
}
