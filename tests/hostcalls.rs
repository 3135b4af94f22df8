//! The membrane's event log as the replay input (spec §2, CM-4), on
//! `agents/allcalls.wat`, which calls every hostcall each tick (refused and
//! zero-length ones included):
//! - the log holds exactly one entry per hostcall, in call order;
//! - replay takes every result from the log alone: replayed against inputs
//!   and gateways that would answer differently, a tick reproduces its
//!   state, kv and cost, and nothing is paid or fetched again;
//! - a log with an entry deleted, added, moved or changed does not replay:
//!   a divergence naming the tick (and, for the log's shape, the entry).

use igor::eventlog::{Entry, EventLog};
use igor::executor::{Executor, TickInputs, TickReport};
use igor::http::{Hop, HttpResponse, ScriptedHttp};
use igor::membrane::{Hostcall, LedgerPayments};
use igor::meter;
use igor::replay::{TickRecord, verify_tick};
use igor::sandbox::{Instance, Sandbox, SandboxConfig};
use igor::units::{Microcents, TickNumber};
use std::sync::Arc;

const ALLCALLS: &[u8] = include_bytes!("../agents/allcalls.wat");
const ALLCALLS_MANIFEST: &[u8] = include_bytes!("../agents/allcalls.manifest.json");
const PRICE: Microcents = Microcents(1_000_000);

/// The calls `allcalls` makes each tick, in order (its header comment).
const CALLS: [Hostcall; 18] = [
    Hostcall::ClockNow,
    Hostcall::RandBytes,
    Hostcall::RandBytes,
    Hostcall::RandBytes,
    Hostcall::LogEmit,
    Hostcall::LogEmit,
    Hostcall::WalletBalance,
    Hostcall::WalletReceiptCount,
    Hostcall::WalletReceipt,
    Hostcall::NodePrice,
    Hostcall::WalletPay,
    Hostcall::WalletPay,
    Hostcall::KvGet,
    Hostcall::KvPut,
    Hostcall::KvGet,
    Hostcall::KvDelete,
    Hostcall::HttpRequest,
    Hostcall::HttpRequest,
];
/// Indices into [`CALLS`] of the entries the original dropped unnoticed.
const EMPTY_RAND: usize = 2;
const REFUSED_PAY: usize = 11;

fn sandbox(http: ScriptedHttp, ledger: LedgerPayments) -> Sandbox {
    let cfg = SandboxConfig {
        tick_fuel: 2_000_000,
        lifecycle_fuel: 10_000_000,
        pooling_instances: Some(4),
        http: Arc::new(http),
        payments: Arc::new(ledger),
        ..SandboxConfig::default()
    };
    Sandbox::new(cfg).unwrap()
}

fn inputs(tick: u64) -> TickInputs {
    TickInputs {
        tick: TickNumber(tick),
        now_unix_ns: 1_700_000_000_000_000_000 + tick as i64 * 1_000_000_000,
        rand_seed: igor::env::derive_seed(tick, "tick"),
        budget: Microcents(10_000_000),
        price_per_second: PRICE,
        side_effects_allowed: true,
        receipts: vec![b"receipt0".to_vec()],
    }
}

/// Inputs for the same tick under which every hostcall would answer
/// differently: another time, seed, budget, receipts, and no authority.
fn other_inputs(tick: u64) -> TickInputs {
    TickInputs {
        now_unix_ns: 1_800_000_000_000_000_000,
        rand_seed: [0xa5; 32],
        budget: Microcents(7_777_777),
        side_effects_allowed: false,
        receipts: Vec::new(),
        ..inputs(tick)
    }
}

/// A gateway answering the same url differently.
fn other_http() -> ScriptedHttp {
    let http = ScriptedHttp::new();
    http.route(
        "GET",
        "http://api.example/data",
        Ok(Hop::Response(HttpResponse { status: 203, body: b"another world".to_vec() })),
    );
    http
}

/// (state, kv) before a tick.
type Before = (Vec<u8>, Vec<u8>);

struct Recorded {
    sb: Sandbox,
    ledger: LedgerPayments,
    http: ScriptedHttp,
    hash: igor::checkpoint::Hash32,
    inst: Instance,
    /// (state, kv) before each tick, and the tick's record.
    ticks: Vec<(Before, TickRecord, TickReport)>,
}

/// Run `n` live allcalls ticks, recording what a verifier needs.
fn record(n: u64) -> Recorded {
    let (http, ledger) = (ScriptedHttp::simulated_world(), LedgerPayments::default());
    let mut sb = sandbox(http.clone(), ledger.clone());
    let hash = sb.prepare(ALLCALLS, ALLCALLS_MANIFEST).unwrap();
    let mut inst = sb.start(&hash, ALLCALLS_MANIFEST, &[], &[]).unwrap();
    let mut ticks = Vec::new();
    for t in 1..=n {
        let before = sb.snapshot(&mut inst).unwrap();
        let inp = inputs(t);
        let report = sb.tick(&mut inst, &inp);
        assert!(report.outcome.is_live(), "tick {t}: {:?}", report.outcome);
        let (state_after, kv_after) = sb.snapshot(&mut inst).unwrap();
        let record =
            TickRecord { inputs: inp, event_log: report.event_log.clone(), cost: report.cost, state_after, kv_after };
        ticks.push((before, record, report));
    }
    Recorded { sb, ledger, http, hash, inst, ticks }
}

fn i32_at(state: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(state[at..at + 4].try_into().unwrap())
}

fn log_of(report: &TickReport) -> EventLog {
    EventLog::decode(&report.event_log).unwrap()
}

fn ids(log: &EventLog) -> Vec<u8> {
    log.entries.iter().map(|e| e.id).collect()
}

fn with_entries(tick: u64, entries: Vec<Entry>) -> Vec<u8> {
    EventLog { tick: TickNumber(tick), entries }.encode()
}

#[test]
fn the_log_holds_one_entry_per_hostcall_in_call_order() {
    let mut rec = record(2);
    let expected: Vec<u8> = CALLS.iter().map(|c| c.id()).collect();
    let (_, record, report) = &rec.ticks[1];
    let log = log_of(report);
    assert_eq!(log.tick, TickNumber(2));
    assert_eq!(ids(&log), expected, "one entry per call, in call order");
    let e = |i: usize| log.entries[i].payload.as_slice();
    // Zero-length and failing calls are entries like any other.
    assert_eq!(e(EMPTY_RAND), 0i32.to_le_bytes(), "rand_bytes(0): ok, no bytes");
    assert_eq!(e(3), (-2i32).to_le_bytes(), "rand_bytes(70000): -2");
    assert_eq!(e(5), 0u32.to_le_bytes(), "log_emit of 0 bytes");
    assert_eq!(e(7), 1i32.to_le_bytes(), "one receipt held");
    assert_eq!(&e(8)[4..], b"receipt0", "wallet_receipt(0) returns its bytes");
    assert_eq!(e(9), PRICE.0.to_le_bytes());
    assert_eq!(e(10)[0], 1, "paid alice");
    assert_eq!(e(REFUSED_PAY), [&[0u8][..], &(-3i32).to_le_bytes()].concat(), "mallory refused (-3)");
    assert_eq!(e(14), (-5i32).to_le_bytes(), "kv_get(missing): -5");
    assert_eq!(&e(16)[..3], &[1, 200, 0], "http 200 from the script");
    assert_eq!(e(17), [&[0u8][..], &(-3i32).to_le_bytes()].concat(), "evil.example refused (-3)");
    // What the guest saw is what the log says.
    let s = &record.state_after;
    assert_eq!([i32_at(s, 32), i32_at(s, 132), i32_at(s, 64), i32_at(s, 84), i32_at(s, 92)], [0, -2, -3, -5, 200]);
    assert_eq!(&s[96..109], b"igor-sim data");

    // Without authority (CM-5) every side effect is refused, and each
    // refusal is still one entry in its place.
    let r = rec.sb.tick(&mut rec.inst, &TickInputs { side_effects_allowed: false, ..inputs(3) });
    let log = log_of(&r);
    assert_eq!(ids(&log), expected);
    for i in [10, 11, 13, 15, 16, 17] {
        let code = &log.entries[i].payload;
        assert!(code.ends_with(&(-3i32).to_le_bytes()), "entry {i} ({}): {code:?}", CALLS[i]);
    }

    // Bad pointers and absurd lengths: error codes, one entry per call.
    let manifest = include_bytes!("../agents/hostile_badptr.manifest.json");
    let hash = rec.sb.prepare(include_bytes!("../agents/hostile_badptr.wat"), manifest).unwrap();
    let mut inst = rec.sb.start(&hash, manifest, &[], &[]).unwrap();
    let r = rec.sb.tick(&mut inst, &inputs(1));
    let (rand, log_emit, kv_get, kv_put) =
        (Hostcall::RandBytes.id(), Hostcall::LogEmit.id(), Hostcall::KvGet.id(), Hostcall::KvPut.id());
    assert_eq!(ids(&log_of(&r)), [rand, rand, log_emit, log_emit, kv_get, kv_put]);
}

#[test]
fn replay_takes_every_result_from_the_log_alone() {
    let rec = record(3);
    let (payments, calls) = (rec.ledger.payments().len(), rec.http.calls().len());
    assert_eq!((payments, calls), (3, 3), "live: one payment and one http hop per tick (the refused ones never leave)");
    // A replaying node with another gateway script and another ledger.
    let other_ledger = LedgerPayments::default();
    let other = other_http();
    let mut verifier = sandbox(other.clone(), other_ledger.clone());
    verifier.prepare(ALLCALLS, ALLCALLS_MANIFEST).unwrap();
    for ((state, kv), record, report) in &rec.ticks {
        let t = record.inputs.tick.0;
        // The other inputs really answer differently: a live tick under
        // them ends in another state.
        let mut probe = verifier.start(&rec.hash, ALLCALLS_MANIFEST, state, kv).unwrap();
        verifier.tick(&mut probe, &other_inputs(t));
        assert_ne!(verifier.snapshot(&mut probe).unwrap().0, record.state_after, "tick {t}: inputs must matter");

        let r = verifier
            .replay_tick(&rec.hash, ALLCALLS_MANIFEST, state, kv, &other_inputs(t), &record.event_log)
            .unwrap_or_else(|d| panic!("tick {t}: {d}"));
        assert_eq!(r.state, record.state_after, "tick {t}: state");
        assert_eq!(r.kv, record.kv_after, "tick {t}: kv");
        assert_eq!((r.cost, r.paid, r.fuel_used), (report.cost, report.paid, report.fuel_used), "tick {t}: bill");
        assert_eq!(r.outcome, report.outcome);

        // Another price bills the same fuel at that price, and node_price
        // still answers what the log says (the state would record it).
        let dearer = Microcents(PRICE.0 * 3);
        let pricier = TickInputs { price_per_second: dearer, ..other_inputs(t) };
        let r = verifier
            .replay_tick(&rec.hash, ALLCALLS_MANIFEST, state, kv, &pricier, &record.event_log)
            .unwrap_or_else(|d| panic!("tick {t}: {d}"));
        assert_eq!((r.state.as_slice(), r.fuel_used), (record.state_after.as_slice(), report.fuel_used));
        assert_eq!(r.cost, meter::cost_of_fuel(report.fuel_used, dearer).unwrap());
    }
    // Effects are never re-run, on either gateway.
    assert!(other_ledger.payments().is_empty() && other.calls().is_empty(), "replay reached the world");
    assert_eq!((rec.ledger.payments().len(), rec.http.calls().len()), (payments, calls));
}

/// Replay `log` for the last recorded tick; the divergence text.
fn replay_err(rec: &mut Recorded, log: Vec<u8>) -> String {
    let ((state, kv), record, _) = rec.ticks.last().unwrap().clone();
    let bad = TickRecord { event_log: log, ..record };
    let d =
        verify_tick(&mut rec.sb, &rec.hash, ALLCALLS_MANIFEST, &state, &kv, &bad).expect_err("a doctored log replayed");
    assert_eq!(d.tick, bad.inputs.tick, "{d}");
    d.to_string()
}

#[test]
fn a_missing_extra_or_moved_entry_is_a_divergence_naming_tick_and_entry() {
    let mut rec = record(2);
    let entries = log_of(&rec.ticks[1].2).entries;
    assert_eq!(entries[EMPTY_RAND].payload, 0i32.to_le_bytes(), "the empty rand_bytes");
    assert_eq!(entries[REFUSED_PAY].payload[0], 0, "the refused payment");
    for i in 0..entries.len() {
        let mut fewer = entries.clone();
        fewer.remove(i);
        let msg = replay_err(&mut rec, with_entries(2, fewer));
        assert!(msg.contains("tick 2") && msg.contains("entry"), "entry {i} ({}) deleted: {msg}", CALLS[i]);

        let mut more = entries.clone();
        more.insert(i, entries[i].clone());
        let msg = replay_err(&mut rec, with_entries(2, more));
        assert!(msg.contains("tick 2") && msg.contains("entry"), "entry {i} ({}) doubled: {msg}", CALLS[i]);
    }
    // The first mismatch is named: without the refused payment, the
    // guest's second wallet_pay (entry 11) finds the kv_get entry.
    let mut fewer = entries.clone();
    fewer.remove(REFUSED_PAY);
    let msg = replay_err(&mut rec, with_entries(2, fewer));
    assert!(msg.contains("entry 11: guest called wallet_pay but the log recorded id 10 (kv_get)"), "{msg}");
    let mut fewer = entries.clone();
    fewer.remove(EMPTY_RAND);
    // Without the empty rand_bytes, rand_bytes(0) is handed the next
    // rand_bytes answer (-2) and the one after finds log_emit.
    let msg = replay_err(&mut rec, with_entries(2, fewer));
    assert!(msg.contains("entry 3: guest called rand_bytes but the log recorded id 3 (log_emit)"), "{msg}");
    // An entry appended after the last call.
    let mut more = entries.clone();
    more.push(entries[0].clone());
    let msg = replay_err(&mut rec, with_entries(2, more));
    assert!(msg.contains("entry 18 (clock_now)"), "{msg}");
    // Moved: every swap of two neighbours of different hostcalls.
    for i in 0..entries.len() - 1 {
        if entries[i].id == entries[i + 1].id {
            continue;
        }
        let mut moved = entries.clone();
        moved.swap(i, i + 1);
        let msg = replay_err(&mut rec, with_entries(2, moved));
        assert!(msg.contains(&format!("entry {i}:")), "entries {i} and {} swapped: {msg}", i + 1);
    }
    // The log of another tick.
    let msg = replay_err(&mut rec, with_entries(1, entries));
    assert!(msg.contains("tick 1") && msg.contains("tick 2"), "{msg}");
}

#[test]
fn a_changed_entry_is_a_divergence() {
    let mut rec = record(2);
    let entries = log_of(&rec.ticks[1].2).entries;
    for i in 0..entries.len() {
        // One more byte in the answer: a different, longer answer.
        let mut changed = entries.clone();
        changed[i].payload.push(0x5a);
        let msg = replay_err(&mut rec, with_entries(2, changed));
        assert!(msg.contains("tick 2"), "entry {i} ({}) lengthened: {msg}", CALLS[i]);
        // The same length, another value (where there is a byte to change).
        if let Some(last) = entries[i].payload.len().checked_sub(1) {
            let mut changed = entries.clone();
            changed[i].payload[last] ^= 0x01;
            let msg = replay_err(&mut rec, with_entries(2, changed));
            assert!(msg.contains("tick 2"), "entry {i} ({}) altered: {msg}", CALLS[i]);
        }
    }
    // A forged kv answer contradicts the agent's own kv, and is named.
    let mut forged = entries.clone();
    forged[12].payload = (-5i32).to_le_bytes().to_vec();
    let msg = replay_err(&mut rec, with_entries(2, forged));
    assert!(msg.contains("entry 12 (kv_get)") && msg.contains("own kv"), "{msg}");
}
