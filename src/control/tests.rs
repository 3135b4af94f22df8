//! Unit tests of `control` (kept apart so the module reads as code).

use super::*;
use crate::authority::Reason;
use crate::node::Refused;

fn ev(event: Event) -> NodeEvent {
    NodeEvent { at_ns: 0, node: NodeId::new("n").unwrap(), seq: 0, event }
}

#[test]
fn requests_roundtrip_and_unknown_fields_are_errors() {
    let r = Request::Deploy {
        tag: false,
        agent: AgentId::new("counter").unwrap(),
        wasm: b"\0asm".to_vec(),
        manifest: b"{}".to_vec(),
        budget: Microcents(5),
    };
    let line = serde_json::to_string(&r).unwrap();
    assert_eq!(line, r#"{"op":"deploy","agent":"counter","wasm":"AGFzbQ==","manifest":"e30=","budget":5}"#);
    assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
    assert_eq!(serde_json::from_str::<Request>(r#"{"op":"agents"}"#).unwrap(), Request::Agents { all: false });
    assert_eq!(serde_json::from_str::<Request>(r#"{"op":"stop"}"#).unwrap(), Request::Stop {});
    assert!(serde_json::from_str::<Request>(r#"{"op":"launch"}"#).is_err());
    assert!(serde_json::from_str::<Request>(r#"{"op":"launch"}"#).is_err());
    let m = serde_json::from_str::<Request>(r#"{"op":"migrate","agent":"c","to":"x"}"#).unwrap();
    assert!(matches!(m, Request::Migrate { wait: false, .. }));
}

#[test]
fn the_board_follows_an_agent_through_a_handoff() {
    let a = AgentId::new("counter").unwrap();
    let mut board = StatusBoard::default();
    board.apply(&ev(Event::AgentDeployed { agent: a.clone(), wasm_hash: Hash32::ZERO, budget: Microcents(100) }));
    board.apply(&ev(Event::AuthorityChanged {
        agent: a.clone(),
        from: None,
        to: AuthorityState::ActiveOwner,
        epoch: Epoch::new(1, 0),
        reason: Reason::Deployed,
    }));
    board.apply(&ev(Event::TickFinished {
        agent: a.clone(),
        tick: TickNumber(1),
        epoch: Epoch::new(1, 0),
        cost: Microcents(3),
        paid: Microcents::ZERO,
        budget: Microcents(97),
        outcome: crate::executor::TickOutcome::Completed { more_work: false },
        side_effects: 0,
        side_effects_allowed: true,
    }));
    let to = NodeId::new("b").unwrap();
    board.apply(&ev(Event::HandoffStarted { agent: a.clone(), target: to.clone(), epoch: Epoch::new(1, 0) }));
    assert_eq!(board.get(&a).unwrap().handoff_to, Some(to.clone()));
    board.apply(&ev(Event::MigrationFinished {
        agent: a.clone(),
        peer: to,
        role: Role::Source,
        outcome: Outcome::Completed,
        budget: Microcents(97),
        tick: TickNumber(1),
        hash: Hash32::ZERO,
    }));
    let s = board.get(&a).unwrap();
    assert_eq!((s.tick, s.budget, s.ticks_here, s.handoff_to.clone()), (TickNumber(1), Microcents(97), 1, None));
    assert_eq!(s.state, AuthorityState::ActiveOwner);
}

#[test]
fn refusals_about_unknown_agents_list_nothing() {
    let mut board = StatusBoard::default();
    board.apply(&ev(Event::CommandRefused {
        command: "migrate".into(),
        agent: Some(AgentId::new("ghost").unwrap()),
        reason: "unknown agent".into(),
    }));
    assert!(board.agents().is_empty());
}

/// Found 7: `{"op":"agents","x":1}` and `{"op":"stop","x":1}` were
/// accepted (serde ignores `deny_unknown_fields` on unit variants).
#[test]
fn unknown_fields_are_errors_on_every_op() {
    let ops = [
        r#"{"op":"agents","bogus":1}"#,
        r#"{"op":"agents","all":true,"bogus":1}"#,
        r#"{"op":"stop","bogus":1}"#,
        r#"{"op":"deploy","agent":"c","wasm":"","manifest":"","budget":1,"bogus":1}"#,
        r#"{"op":"migrate","agent":"c","to":"x","bogus":1}"#,
        r#"{"op":"recover","agent":"c","anchor":"","bogus":1}"#,
        r#"{"op":"retire","agent":"c","force":true}"#,
    ];
    for op in ops {
        let err = serde_json::from_str::<Request>(op).expect_err(op);
        assert!(err.to_string().contains("unknown field"), "{op}: {err}");
    }
}

#[test]
fn error_texts_are_bounded() {
    let huge = "é".repeat(3 * 1024 * 1024);
    let Reply::Error { error } = Reply::error(format!("agent id {huge:?}: too long")) else { unreachable!() };
    assert!(error.len() <= MAX_ERROR_BYTES, "{} bytes", error.len());
    assert!(error.ends_with("bytes cut)"), "{error}");
    let Reply::Error { error } = Reply::error("short") else { unreachable!() };
    assert_eq!(error, "short");
}

fn answer(result: Result<(), Refused>, events: Vec<Event>, from_seq: u64) -> Answer {
    let events =
        events.into_iter().enumerate().map(|(i, event)| NodeEvent { seq: from_seq + i as u64, ..ev(event) }).collect();
    Answer { result, events, from_seq }
}

fn finished(agent: &AgentId, role: Role, outcome: Outcome, seq: u64) -> NodeEvent {
    let event = Event::MigrationFinished {
        agent: agent.clone(),
        peer: NodeId::new("b").unwrap(),
        role,
        outcome,
        budget: Microcents(1),
        tick: TickNumber(1),
        hash: Hash32::ZERO,
    };
    NodeEvent { seq, ..ev(event) }
}

/// Found 3: replies were matched by (command, agent) from the event
/// stream, so a refused second request took the first one's answer.
/// Now the node's own result decides, and only completions are waited
/// for, from the request's own point in the stream.
#[test]
fn each_request_is_answered_by_its_own_result() {
    let a = AgentId::new("counter").unwrap();
    let deploy = |budget| Request::Deploy { agent: a.clone(), tag: false, wasm: vec![], manifest: vec![], budget };
    let deployed = Event::AgentDeployed { agent: a.clone(), wasm_hash: Hash32::ZERO, budget: Microcents(7) };
    let ok = answer(Ok(()), vec![deployed], 3);
    assert_eq!(
        first_reply(&deploy(Microcents(7)), &ok),
        Ok(Reply::Deployed { agent: a.clone(), wasm_hash: Hash32::ZERO, budget: Microcents(7) })
    );
    let refused = Refused {
        command: "deploy",
        agent: Some(a.clone()),
        reason: crate::node::NodeError::operator(Some(&a), "agent already known"),
    };
    let no = answer(Err(refused), vec![], 4);
    assert!(matches!(first_reply(&deploy(Microcents(9)), &no), Ok(Reply::Error { .. })));

    let wait = Request::Migrate { agent: a.clone(), to: "b".into(), wait: true };
    let started =
        Event::HandoffStarted { agent: a.clone(), target: NodeId::new("b").unwrap(), epoch: Epoch::default() };
    let pending = first_reply(&wait, &answer(Ok(()), vec![started], 10)).unwrap_err();
    // An older handoff's end, still in the stream, is not this one's.
    assert_eq!(completes(&pending, &finished(&a, Role::Source, Outcome::Completed, 9)), None);
    assert_eq!(completes(&pending, &finished(&a, Role::Target, Outcome::Completed, 12)), None);
    let failed = Outcome::FailedBeforeSend("unreachable".into());
    let reply = completes(&pending, &finished(&a, Role::Source, failed, 12)).unwrap();
    assert!(matches!(reply, Reply::MigrationFinished { .. }));
    assert!(!reply.succeeded(), "failed_before_send must not count as success");
    assert!(completes(&pending, &finished(&a, Role::Source, Outcome::Completed, 13)).unwrap().succeeded());

    let recover = Request::Recover { agent: a.clone(), anchor: String::new(), force: false };
    let pending = first_reply(&recover, &answer(Ok(()), vec![], 20)).unwrap_err();
    let other = AgentId::new("other").unwrap();
    let refused_for = |agent: &AgentId, command: &str| NodeEvent {
        seq: 21,
        ..ev(Event::CommandRefused { command: command.into(), agent: Some(agent.clone()), reason: "no".into() })
    };
    assert_eq!(completes(&pending, &refused_for(&other, "recover")), None);
    assert_eq!(completes(&pending, &refused_for(&a, "migrate")), None);
    assert!(matches!(completes(&pending, &refused_for(&a, "recover")), Some(Reply::Error { .. })));
}

#[test]
fn retired_agents_are_listed_only_with_all() {
    let a = AgentId::new("gone").unwrap();
    let mut board = StatusBoard::default();
    board.apply(&ev(Event::AuthorityChanged {
        agent: a.clone(),
        from: Some(AuthorityState::ActiveOwner),
        to: AuthorityState::Retired,
        epoch: Epoch::new(1, 0),
        reason: Reason::Shutdown,
    }));
    assert!(board.listed(false).is_empty());
    assert_eq!(board.listed(true).len(), 1);
}

#[test]
fn a_label_names_its_one_self_certifying_agent() {
    use crate::identity::{Keypair, tagged_agent_id};
    let id = |s: &str| AgentId::new(s).unwrap();
    let one = tagged_agent_id("counter", &Keypair::from_seed([1; 32]).public()).unwrap();
    let two = tagged_agent_id("counter", &Keypair::from_seed([2; 32]).public()).unwrap();
    let legacy = id("legacy");
    assert_eq!(resolve_agent(&id("counter"), [&one, &legacy]), Ok(one.clone()));
    assert_eq!(resolve_agent(&one, [&one, &two]), Ok(one.clone()), "a full id is itself");
    assert_eq!(resolve_agent(&legacy, [&one, &legacy]), Ok(legacy.clone()));
    assert_eq!(resolve_agent(&id("other"), [&one]), Ok(id("other")), "unknown: the node says so");
    let e = resolve_agent(&id("counter"), [&one, &two]).unwrap_err();
    assert!(e.contains(one.as_str()) && e.contains(two.as_str()), "{e}");
    // A legacy agent literally named like the label wins over the label.
    assert_eq!(resolve_agent(&id("counter"), [&one, &id("counter")]), Ok(id("counter")));
}
