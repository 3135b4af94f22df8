//! The local control interface of `igord node`: the JSON requests an
//! operator (or the `igord agents|deploy|migrate|recover|retire|stop` clients)
//! sends to a running node, the replies, and the [`StatusBoard`] the node
//! answers `agents` from, kept by folding the node's own event stream.
//! Pure data: no I/O, no decisions (commands go to the node unchanged); the
//! Unix socket lives in the binary. Wire format: one JSON request line, one
//! JSON reply line per connection (see `docs/control-api.md`).

use crate::authority::{AuthorityState, Role};
use crate::checkpoint::Hash32;
use crate::driver::Answer;
use crate::migration::Outcome;
use crate::node::event::{epoch_text, hex32};
use crate::node::{Event, NodeEvent};
use crate::units::{AgentId, Epoch, Microcents, NodeId, TickNumber};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The socket's file name inside the node's data dir (default location).
pub const SOCKET_FILE: &str = "control.sock";

/// Largest request line: a deploy carries the module and manifest in
/// base64 (4/3), bounded by what a package may carry, plus JSON slack.
pub const MAX_REQUEST_BYTES: usize =
    (crate::wire::MAX_WASM_BYTES + crate::wire::MAX_MANIFEST_BYTES) / 3 * 4 + 64 * 1024;

/// Largest reply line a client reads: a status of up to this many agents.
pub const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;

/// How long the node waits for the event that answers a command (deploy
/// compiles the module, so this is generous); a migration waited for with
/// `wait` may take up to its reply deadline plus retries.
pub const COMMAND_TIMEOUT_MS: u64 = 30_000;

/// Longest error text in a reply: an error names the field and the reason,
/// never the whole input (a bad 47 MB deploy must not come back as a 47 MB
/// reply).
pub const MAX_ERROR_BYTES: usize = 512;
pub const MIGRATION_WAIT_TIMEOUT_MS: u64 = 120_000;

/// One request to a running node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The node's identity, addresses and every agent it knows, except
    /// RETIRED ones unless `all`. (A struct variant even when empty: serde
    /// checks `deny_unknown_fields` only on struct variants.)
    Agents {
        #[serde(default)]
        all: bool,
    },
    /// Deploy a new agent here with a fresh identity. `wasm` is a wasm
    /// binary (base64); `manifest` the manifest JSON (base64; `{}` grants
    /// nothing). With `tag`, `agent` is a label and the agent gets the
    /// self-certifying id `<label>.<tag>` of its fresh key
    /// (`identity::tagged_agent_id`; the reply names it); without, `agent`
    /// is the id as is (a legacy id: peers trust its key on first use).
    Deploy {
        agent: AgentId,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        tag: bool,
        #[serde(with = "crate::wire::b64")]
        wasm: Vec<u8>,
        #[serde(with = "crate::wire::b64")]
        manifest: Vec<u8>,
        budget: Microcents,
    },
    /// Hand the agent to another node: `to` is a multiaddr ending in
    /// `/p2p/<peer id>` or a bare peer id the node already knows.
    /// With `wait`, reply only once the handoff has ended.
    Migrate {
        agent: AgentId,
        to: String,
        #[serde(default)]
        wait: bool,
    },
    /// Operator recovery of a RECOVERY_REQUIRED agent from `anchor` (hex of
    /// the node's newest checkpoint of it; the node refuses any other).
    Recover {
        agent: AgentId,
        anchor: String,
        /// Recover even though a peer proved it owns the agent (logged).
        #[serde(default)]
        force: bool,
    },
    /// Final checkpoint, then RETIRED (the agent ends here).
    Retire { agent: AgentId },
    /// Graceful stop: final checkpoint of every agent, then exit.
    Stop {},
}

/// The agent an operator means by `name`: the agent with exactly that id,
/// else the one self-certifying agent whose label it is (so `counter`
/// names `counter.<tag>`). Several agents under one label are an error
/// naming them; an unknown name is returned as is (the node refuses it
/// with its own reason).
pub fn resolve_agent<'a>(name: &AgentId, known: impl IntoIterator<Item = &'a AgentId>) -> Result<AgentId, String> {
    let known: Vec<&AgentId> = known.into_iter().collect();
    if known.contains(&name) {
        return Ok(name.clone());
    }
    let labelled: Vec<&AgentId> = known
        .into_iter()
        .filter(|a| crate::identity::agent_id_tag(a).is_some() && crate::identity::agent_label(a) == name.as_str())
        .collect();
    match labelled.as_slice() {
        [] => Ok(name.clone()),
        [one] => Ok((*one).clone()),
        many => {
            let ids: Vec<&str> = many.iter().map(|a| a.as_str()).collect();
            Err(format!("agent {name}: the label names {} agents ({}); give the full id", ids.len(), ids.join(", ")))
        }
    }
}

/// The one reply to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    Agents {
        node: NodeId,
        listen: Vec<String>,
        agents: Vec<AgentStatus>,
    },
    Deployed {
        agent: AgentId,
        #[serde(with = "hex32")]
        wasm_hash: Hash32,
        budget: Microcents,
    },
    /// The handoff started (the source stopped ticking and seals).
    MigrationStarted {
        agent: AgentId,
        to: NodeId,
    },
    /// The handoff ended (only with `wait`).
    MigrationFinished {
        agent: AgentId,
        to: NodeId,
        outcome: Outcome,
    },
    Recovered {
        agent: AgentId,
        #[serde(with = "epoch_text")]
        epoch: Epoch,
        anchor_tick: TickNumber,
    },
    Retired {
        agent: AgentId,
    },
    Stopping,
    /// The request was refused or failed; `error` says why.
    Error {
        error: String,
    },
}

impl Reply {
    /// An error reply, its text cut to [`MAX_ERROR_BYTES`].
    pub fn error(text: impl Into<String>) -> Reply {
        Reply::Error { error: bounded(text.into()) }
    }

    /// Did the request end the way it asked for? (`igord` exits 0 only
    /// then: a migration waited for must have completed.)
    pub fn succeeded(&self) -> bool {
        match self {
            Reply::Error { .. } => false,
            Reply::MigrationFinished { outcome, .. } => *outcome == Outcome::Completed,
            _ => true,
        }
    }
}

/// `text` cut to at most [`MAX_ERROR_BYTES`] (on a character boundary),
/// saying how much was cut.
pub fn bounded(mut text: String) -> String {
    if text.len() <= MAX_ERROR_BYTES {
        return text;
    }
    let total = text.len();
    let mut cut = MAX_ERROR_BYTES - 40;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(&format!("… ({} of {total} bytes cut)", total - cut));
    text
}

/// One agent as the node last reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentStatus {
    pub agent: AgentId,
    /// `did:key:z…` of the agent's identity (from its newest checkpoint).
    pub did: Option<String>,
    pub state: AuthorityState,
    #[serde(with = "epoch_text")]
    pub epoch: Epoch,
    /// Last tick run here (may be ahead of `head_tick`).
    pub tick: TickNumber,
    /// Budget after `tick`.
    pub budget: Microcents,
    /// Newest committed checkpoint here.
    pub head_tick: Option<TickNumber>,
    #[serde(with = "hex32")]
    pub head_hash: Hash32,
    /// Ticks run here since the node started (for liveness checks).
    pub ticks_here: u64,
    pub halted: Option<String>,
    /// EI-6: checkpoints cannot be written; the agent is paused. The text
    /// names since when (node time, unix ns) and the disk error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
    /// Target of the handoff in flight, if any.
    pub handoff_to: Option<NodeId>,
    /// How the last handoff this node took part in ended.
    pub last_migration: Option<String>,
}

impl AgentStatus {
    fn new(agent: AgentId) -> Self {
        AgentStatus {
            agent,
            did: None,
            state: AuthorityState::RecoveryRequired,
            epoch: Epoch::default(),
            tick: TickNumber(0),
            budget: Microcents::ZERO,
            head_tick: None,
            head_hash: Hash32::ZERO,
            ticks_here: 0,
            halted: None,
            degraded: None,
            handoff_to: None,
            last_migration: None,
        }
    }
}

/// The node's agents as its event stream describes them. A read model
/// only: it never decides anything and the node never reads it back.
#[derive(Clone, Debug, Default)]
pub struct StatusBoard {
    agents: BTreeMap<AgentId, AgentStatus>,
}

impl StatusBoard {
    pub fn agents(&self) -> Vec<AgentStatus> {
        self.agents.values().cloned().collect()
    }

    /// The agents `igord agents` lists: RETIRED ones only with `all` (an
    /// agent that left or ended stays on disk as history, not as a worry).
    pub fn listed(&self, all: bool) -> Vec<AgentStatus> {
        self.agents.values().filter(|s| all || s.state != AuthorityState::Retired).cloned().collect()
    }

    pub fn get(&self, agent: &AgentId) -> Option<&AgentStatus> {
        self.agents.get(agent)
    }

    /// Record the agent's DID once learned (from its checkpoint on disk).
    pub fn set_did(&mut self, agent: &AgentId, did: String) {
        if let Some(s) = self.agents.get_mut(agent) {
            s.did = Some(did);
        }
    }

    /// Fold one event in.
    pub fn apply(&mut self, e: &NodeEvent) {
        let Some(agent) = e.event.agent() else { return };
        // Only these prove the node holds (or held) the agent; a refused
        // command or package about an unknown agent lists nothing.
        let known =
            matches!(e.event, Event::AgentDeployed { .. } | Event::AgentLoaded { .. } | Event::AuthorityChanged { .. });
        let s = match self.agents.get_mut(agent) {
            Some(s) => s,
            None if known => self.agents.entry(agent.clone()).or_insert_with(|| AgentStatus::new(agent.clone())),
            None => return,
        };
        match &e.event {
            Event::AgentDeployed { budget, .. } => {
                s.budget = *budget;
                s.halted = None;
            }
            Event::AgentLoaded { state, epoch, head_tick, head_hash, budget, .. } => {
                (s.state, s.epoch, s.tick, s.budget) = (*state, *epoch, *head_tick, *budget);
                (s.head_tick, s.head_hash) = (Some(*head_tick), *head_hash);
            }
            Event::TickFinished { tick, epoch, budget, .. } => {
                (s.tick, s.epoch, s.budget) = (*tick, *epoch, *budget);
                s.ticks_here += 1;
            }
            Event::CheckpointCommitted { tick, epoch, hash, .. } => {
                (s.head_tick, s.head_hash, s.epoch) = (Some(*tick), *hash, *epoch);
            }
            Event::CheckpointAdopted { tick, hash, budget, .. } => {
                (s.head_tick, s.head_hash, s.tick, s.budget) = (Some(*tick), *hash, *tick, *budget);
            }
            Event::AuthorityChanged { to, epoch, .. } => (s.state, s.epoch) = (*to, *epoch),
            Event::HandoffStarted { target, .. } => s.handoff_to = Some(target.clone()),
            Event::MigrationFinished { peer, role, outcome, .. } => {
                if *role == Role::Source {
                    s.handoff_to = None;
                }
                let side = if *role == Role::Source { "source" } else { "target" };
                s.last_migration = Some(format!("{side} with {peer}: {outcome}"));
            }
            Event::AgentHalted { reason, .. } => s.halted = Some(reason.clone()),
            Event::PersistFailing { since_unix_ns, error, .. } => {
                let secs = since_unix_ns.div_euclid(1_000_000_000);
                s.degraded = Some(format!("cannot persist since unix time {secs} s: {error}"));
            }
            Event::PersistRestored { .. } => s.degraded = None,
            Event::Recovered { anchor_tick, epoch, budget, .. } => {
                (s.tick, s.epoch, s.budget, s.halted) = (*anchor_tick, *epoch, *budget, None);
            }
            _ => {}
        }
    }
}

/// What an accepted request still waits for: the asynchronous completion
/// of a migration waited for, or of a recovery (which asks peers first).
/// The node allows at most one of each in flight per agent, so the first
/// matching event at or after `from_seq` is this request's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    Migration { agent: AgentId, from_seq: u64 },
    Recovery { agent: AgentId, from_seq: u64 },
}

/// The reply to `req` from the node's own answer to it, or the
/// completion still to wait for.
pub fn first_reply(req: &Request, answer: &Answer) -> Result<Reply, Completion> {
    if let Err(refused) = &answer.result {
        return Ok(Reply::error(refused.to_string()));
    }
    let from_seq = answer.from_seq;
    let caused = || answer.events.iter();
    match req {
        Request::Deploy { agent, .. } => Ok(caused()
            .find_map(|e| match &e.event {
                Event::AgentDeployed { agent: a, wasm_hash, budget } if a == agent => {
                    Some(Reply::Deployed { agent: agent.clone(), wasm_hash: *wasm_hash, budget: *budget })
                }
                _ => None,
            })
            .unwrap_or_else(|| Reply::error(format!("deploy of {agent}: accepted without an agent_deployed event")))),
        Request::Migrate { agent, wait: false, .. } => Ok(caused()
            .find_map(|e| match &e.event {
                Event::HandoffStarted { agent: a, target, .. } if a == agent => {
                    Some(Reply::MigrationStarted { agent: agent.clone(), to: target.clone() })
                }
                _ => None,
            })
            .unwrap_or_else(|| Reply::error(format!("migrate of {agent}: accepted without a handoff_started event")))),
        Request::Migrate { agent, wait: true, .. } => {
            let c = Completion::Migration { agent: agent.clone(), from_seq };
            caused().find_map(|e| completes(&c, e)).ok_or(c)
        }
        Request::Recover { agent, .. } => {
            let c = Completion::Recovery { agent: agent.clone(), from_seq };
            caused().find_map(|e| completes(&c, e)).ok_or(c)
        }
        Request::Retire { agent } => Ok(Reply::Retired { agent: agent.clone() }),
        Request::Agents { .. } | Request::Stop {} => Ok(Reply::error("agents and stop are not node commands")),
    }
}

/// The reply `e` gives to a request waiting for `c`, if it is its completion.
pub fn completes(c: &Completion, e: &NodeEvent) -> Option<Reply> {
    match (c, &e.event) {
        (Completion::Migration { from_seq, .. } | Completion::Recovery { from_seq, .. }, _) if e.seq < *from_seq => {
            None
        }
        (Completion::Migration { agent, .. }, Event::MigrationFinished { agent: a, peer, role, outcome, .. })
            if a == agent && *role == Role::Source =>
        {
            Some(Reply::MigrationFinished { agent: agent.clone(), to: peer.clone(), outcome: outcome.clone() })
        }
        (Completion::Recovery { agent, .. }, Event::Recovered { agent: a, epoch, anchor_tick, .. }) if a == agent => {
            Some(Reply::Recovered { agent: agent.clone(), epoch: *epoch, anchor_tick: *anchor_tick })
        }
        (Completion::Recovery { agent, .. }, Event::CommandRefused { command, agent: Some(a), reason })
            if command == "recover" && a == agent =>
        {
            Some(Reply::error(format!("recover refused for agent {agent}: {reason}")))
        }
        _ => None,
    }
}

/// Events a waiting request may be completed by (the control server
/// forwards only these to its waiters, so ticks cannot make them lag).
pub fn is_completion(e: &Event) -> bool {
    matches!(e, Event::MigrationFinished { .. } | Event::Recovered { .. } | Event::CommandRefused { .. })
}

#[cfg(test)]
mod tests {
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
            outcome: "Completed".into(),
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
        let events = events
            .into_iter()
            .enumerate()
            .map(|(i, event)| NodeEvent { seq: from_seq + i as u64, ..ev(event) })
            .collect();
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
}
