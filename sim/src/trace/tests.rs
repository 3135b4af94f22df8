//! Tests of the trace dialect: the quoting rule and `parse` as its
//! inverse, every node event kind's keys, tick outcomes, actions.

use super::*;
use crate::disk::DiskFaultKind;
use crate::scenario::{Action, Storage};
use igor::authority::Role;
use igor::authority::{AuthorityState, Reason};
use igor::checkpoint::Hash32;
use igor::executor::TickOutcome;
use igor::migration::Outcome;
use igor::node::Event;
use igor::node::defence::Defence;
use igor::node::event::text::tick_outcome;
use igor::units::Epoch;
use igor::units::{AgentId, Microcents, NodeId, TickNumber};
use igor::wire::MessageKind;

#[test]
fn time_is_fixed_width_and_trace_diff_finds_first_line() {
    assert_eq!(fmt_time(12_345_678_901), "000012.345");
    let mut a = Trace::new();
    a.event(0, "a", "x");
    a.event(1_000_000, "a", "y");
    let mut b = a.clone();
    assert_eq!(a.first_difference(&b), None);
    b.note("extra");
    assert_eq!(a.first_difference(&b), Some((3, String::new(), "extra".into())));
    assert_ne!(a.hash(), b.hash());
}

/// One quoting rule: bare words stay bare; anything else (spaces, the
/// none marker, the empty string, quotes, newlines) is quoted and
/// escaped, and `parse` gives back exactly the original text.
#[test]
fn values_have_one_quoting_rule_and_parse_reads_them_back() {
    assert_eq!(text("ACTIVE_OWNER"), "ACTIVE_OWNER");
    assert_eq!(text("history/a.ckpt:1-2"), "history/a.ckpt:1-2");
    assert_eq!(text("budget exhausted"), "\"budget exhausted\"");
    assert_eq!(text("-"), "\"-\"", "a text that is the none marker is quoted");
    assert_eq!(text(""), "\"\"");
    assert_eq!(text("say \"hi\"\\\n\u{1}µ¢"), "\"say \\\"hi\\\"\\\\\\n\\u0001µ¢\"");
    assert_eq!(hash(&Hash32([0xab; 32])), "abababababab");
    assert_eq!(opt(None::<u64>, int), NONE);
    assert_eq!(list(Vec::new()), NONE);
    assert_eq!(list(["a".to_string(), "b".to_string()]), "a,b");
    // DEL, a C1 control (CSI, which some terminals obey), NEL and the
    // Unicode line and paragraph separators never appear raw: a peer's
    // text cannot split a line or drive a terminal.
    assert_eq!(text("x\u{7f}\u{9b}\u{85}\u{2028}\u{2029}y"), "\"x\\u007f\\u009b\\u0085\\u2028\\u2029y\"");
    let odd = ["budget exhausted", "-", "", "say \"hi\"\\\n\u{1}µ¢ k=v", "\u{9b}2J\u{2028}"];
    let mut line = Line::new("probe").with("n", int(-5)).with("none", opt(None::<u64>, int));
    for (k, v) in ["a", "b", "c", "d", "e"].into_iter().zip(odd) {
        line = line.with(k, text(v));
    }
    let mut t = Trace::new();
    t.sim(1_500_000_000, line);
    let p = parse(&t.lines()[0]).expect("a trace line parses");
    assert_eq!((p.at_ns, p.host.as_str(), p.kind.as_str()), (1_500_000_000, SIM, "probe"));
    for (k, v) in ["a", "b", "c", "d", "e"].into_iter().zip(odd) {
        assert_eq!(p.fields[k].as_deref(), Some(v), "{k}");
    }
    assert_eq!((p.int("n"), p.get("none"), p.get("b")), (Some(-5), None, Some("-")));
    assert!(parse("# igor-sim trace v3").is_none());
}

fn a() -> AgentId {
    AgentId::new("counter").unwrap()
}
fn n(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

/// One of every node event, with every optional field absent.
fn every_event() -> Vec<Event> {
    let (h, e, m) = (Hash32([0x3f; 32]), Epoch::new(2, 1), Microcents(7));
    vec![
        Event::NodeStarted { restarted: true, agents: 1 },
        Event::AgentDeployed { agent: a(), wasm_hash: h, budget: m },
        Event::AgentLoaded {
            agent: a(),
            state: AuthorityState::RecoveryRequired,
            epoch: e,
            head_tick: TickNumber(3),
            head_hash: h,
            budget: m,
        },
        Event::TickStarted { agent: a(), tick: TickNumber(4), epoch: e, budget: m, base: h },
        Event::TickFinished {
            agent: a(),
            tick: TickNumber(4),
            epoch: e,
            cost: m,
            paid: m,
            budget: m,
            outcome: TickOutcome::Completed { more_work: true },
            side_effects: 0,
            side_effects_allowed: true,
        },
        Event::CheckpointCommitted {
            agent: a(),
            tick: TickNumber(4),
            epoch: e,
            hash: h,
            prev_hash: Hash32::ZERO,
            budget: m,
            charged: m,
            paid: m,
            lease_expiry_ns: 9,
            handoff: false,
        },
        Event::CheckpointAdopted {
            agent: a(),
            from: n("a"),
            tick: TickNumber(4),
            epoch: e,
            hash: h,
            prev_hash: h,
            budget: m,
        },
        Event::AuthorityChanged {
            agent: a(),
            from: None,
            to: AuthorityState::ActiveOwner,
            epoch: e,
            reason: Reason::Deployed,
        },
        Event::LeaseRenewed { agent: a(), epoch: e, expiry_ns: 9 },
        Event::MessageSent {
            kind: MessageKind::HeadAck,
            peer: n("b"),
            agent: a(),
            epoch: e,
            head_tick: TickNumber(4),
            head_hash: h,
            request: None,
        },
        Event::MessageReceived {
            kind: MessageKind::HeadAnnounce,
            peer: n("b"),
            agent: a(),
            epoch: e,
            head_tick: TickNumber(4),
            head_hash: h,
        },
        Event::HandoffStarted { agent: a(), target: n("b"), epoch: e },
        Event::PackageSent {
            agent: a(),
            target: n("b"),
            attempt: 1,
            tick: TickNumber(4),
            hash: h,
            budget: m,
            expiry_ns: 9,
        },
        Event::RetryScheduled { agent: a(), attempt: 2, at_ns: 9 },
        Event::MigrationFinished {
            agent: a(),
            peer: n("b"),
            role: Role::Source,
            outcome: Outcome::Refused("rate_limit: too many".into()),
            budget: m,
            tick: TickNumber(4),
            hash: h,
        },
        Event::LocalCopyDeleted { agent: a() },
        Event::StaleMessageIgnored {
            agent: a(),
            peer: n("b"),
            kind: MessageKind::AgentTransfer,
            message_epoch: e,
            local_epoch: e,
            total: 1,
        },
        Event::DivergenceDetected {
            agent: a(),
            peer: n("b"),
            epoch: e,
            local_tick: TickNumber(4),
            local_head: h,
            remote_tick: TickNumber(5),
            remote_head: h,
        },
        Event::FaultObserved { agent: None, fault: "disk full".into() },
        Event::CommandRefused { command: "recover".into(), agent: None, reason: "no such agent".into() },
        Event::AgentHalted { agent: a(), reason: "budget exhausted".into() },
        Event::PersistFailing { agent: a(), since_unix_ns: 9, error: "write x: EIO".into() },
        Event::PersistRestored { agent: a() },
        Event::Recovered { agent: a(), anchor: h, anchor_tick: TickNumber(3), epoch: e, budget: m },
        Event::NodeShutdown,
        Event::ClaimRejected {
            agent: a(),
            peer: n("m"),
            kind: MessageKind::AgentTransfer,
            defence: Defence::RateLimit,
            reason: "above burst".into(),
        },
        Event::Misbehaved { agent: None, act: "bounces counter on to n".into() },
    ]
}

/// Every event's line keeps the event's own kind and field names (its
/// serde names, as the control API's JSON has them), adds only the
/// documented flattening keys (`more_work`, `detail`, and `outcome` for a
/// tick), and writes no Rust `Debug`, JSON, `null` or full-length hash.
#[test]
fn every_event_keeps_the_nodes_kind_and_keys_in_the_v3_dialect() {
    let events = every_event();
    for e in &events {
        let ours = event(e);
        let p = parse(&format!("000000.000 a {ours}")).expect("parses");
        let json = serde_json::to_value(e).unwrap();
        let (tag, fields) = match &json {
            serde_json::Value::String(tag) => (tag.clone(), Vec::new()),
            serde_json::Value::Object(m) => {
                let (tag, inner) = m.iter().next().expect("one tag");
                let keys = inner.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
                (tag.clone(), keys)
            }
            other => panic!("{other}"),
        };
        assert_eq!(p.kind, tag, "{ours}");
        let mut keys: Vec<String> = fields;
        if matches!(e, Event::TickFinished { .. }) {
            keys.extend(["more_work".to_string(), "detail".to_string()]);
        }
        if matches!(e, Event::MigrationFinished { .. }) {
            keys.push("detail".to_string());
        }
        keys.sort_unstable();
        let mine: Vec<String> = p.fields.keys().cloned().collect();
        assert_eq!(mine, keys, "{ours}");
        // Written back from the parsed map (sorted keys), the line is
        // the same: keys were sorted and every value reads back.
        let again: String = p.fields.iter().map(|(k, v)| format!(" {k}={}", opt(v.as_deref(), text))).collect();
        assert_eq!(format!("{}{again}", p.kind), ours);
        for bad in ["null", "Some(", "None", "{", "}", &"3f".repeat(32)] {
            assert!(!ours.contains(bad), "{bad} in {ours}");
        }
    }
    // One sample per variant: `event` matches every variant by name, so
    // a new one fails to compile there before it can miss this list.
    let kinds: std::collections::BTreeSet<String> =
        events.iter().map(|e| event(e).split(' ').next().unwrap_or_default().to_string()).collect();
    assert_eq!((kinds.len(), events.len()), (27, 27), "27 distinct event kinds");
}

/// Every executor outcome flattens to a word and its field.
#[test]
fn tick_outcomes_flatten_to_a_word_and_its_field() {
    let cases = [
        (TickOutcome::Completed { more_work: false }, "completed", "false", "-"),
        (TickOutcome::Completed { more_work: true }, "completed", "true", "-"),
        (TickOutcome::OutOfFuel, "out_of_fuel", "-", "-"),
        (TickOutcome::WallClockTimeout, "wall_clock_timeout", "-", "-"),
        (TickOutcome::BudgetExhausted, "budget_exhausted", "-", "-"),
        (TickOutcome::Trapped { message: "wasm trap: \"x\"\n".into() }, "trapped", "-", "wasm trap: \"x\"\n"),
    ];
    for (o, outcome, more_work, detail) in cases {
        let line = tick_outcome(Line::new("t"), &o).to_string();
        let p = parse(&format!("000000.000 a {line}")).expect("parses");
        let get = |k: &str| p.fields[k].clone().unwrap_or_else(|| NONE.to_string());
        assert_eq!((get("outcome").as_str(), get("more_work").as_str()), (outcome, more_work), "{o:?}");
        assert_eq!(get("detail"), detail, "{o:?}");
    }
}

#[test]
fn actions_are_kind_and_sorted_keys_with_flattened_storage() {
    let restart =
        Action::Restart { node: "a".into(), storage: Storage::RemoveNewest { agent: "counter".into(), count: 2 } };
    assert_eq!(action(&restart), "restart agent=counter count=2 node=a storage=remove_newest");
    let fault =
        Action::DiskFault { node: "a".into(), kind: DiskFaultKind::Full, for_ms: 3000, under: Some("history/".into()) };
    assert_eq!(action(&fault), "disk_fault for_ms=3000 kind=full node=a under=history/");
    let recover = Action::Recover { agent: "counter".into(), node: "b".into(), anchor_tick: None, force: true };
    assert_eq!(
        action_line("liveness_", &recover).to_string(),
        "liveness_recover agent=counter anchor_tick=- force=true node=b"
    );
    let swizzle = Action::Swizzle { nodes: vec!["a".into(), "b".into()], step_ms: 700 };
    assert_eq!(action(&swizzle), "swizzle nodes=a,b step_ms=700");
}
