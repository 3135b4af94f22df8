//! The local control interface of `igord node`: the JSON requests an
//! operator (or the `igord agents|deploy|migrate|recover|stop` clients)
//! sends to a running node, the replies, and the [`StatusBoard`] the node
//! answers `agents` from, kept by folding the node's own event stream.
//! Pure data: no I/O, no decisions (commands go to the node unchanged); the
//! Unix socket lives in the binary. Wire format: one JSON request line, one
//! JSON reply line per connection (see `docs/control-api.md`).

use crate::authority::{AuthorityState, Role};
use crate::checkpoint::Hash32;
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
pub const MIGRATION_WAIT_TIMEOUT_MS: u64 = 120_000;

/// One request to a running node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The node's identity, addresses and every agent it knows.
    Agents,
    /// Deploy a new agent here with a fresh identity. `wasm` is a wasm
    /// binary (base64); `manifest` the manifest JSON (base64; `{}` grants
    /// nothing).
    Deploy {
        agent: AgentId,
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
    Stop,
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

/// What a command waits for in the event stream: the event that answers
/// it, or `None` if this event is about something else.
pub fn answer(req: &Request, e: &Event) -> Option<Reply> {
    let refused = |cmd: &str, agent: &AgentId| match e {
        Event::CommandRefused { command, agent: Some(a), reason } if command == cmd && a == agent => {
            Some(Reply::Error { error: format!("{cmd} refused for agent {agent}: {reason}") })
        }
        _ => None,
    };
    match (req, e) {
        (Request::Deploy { agent, .. }, Event::AgentDeployed { agent: a, wasm_hash, budget }) if a == agent => {
            Some(Reply::Deployed { agent: agent.clone(), wasm_hash: *wasm_hash, budget: *budget })
        }
        (Request::Deploy { agent, .. }, _) => refused("deploy", agent),
        (Request::Migrate { agent, wait: false, .. }, Event::HandoffStarted { agent: a, target, .. }) if a == agent => {
            Some(Reply::MigrationStarted { agent: agent.clone(), to: target.clone() })
        }
        (
            Request::Migrate { agent, wait: true, .. },
            Event::MigrationFinished { agent: a, peer, role, outcome, .. },
        ) if a == agent && *role == Role::Source => {
            Some(Reply::MigrationFinished { agent: agent.clone(), to: peer.clone(), outcome: outcome.clone() })
        }
        (Request::Migrate { agent, .. }, _) => refused("migrate", agent),
        (Request::Recover { agent, .. }, Event::Recovered { agent: a, epoch, anchor_tick, .. }) if a == agent => {
            Some(Reply::Recovered { agent: agent.clone(), epoch: *epoch, anchor_tick: *anchor_tick })
        }
        (Request::Recover { agent, .. }, _) => refused("recover", agent),
        (Request::Retire { agent }, Event::AuthorityChanged { agent: a, to: AuthorityState::Retired, .. })
            if a == agent =>
        {
            Some(Reply::Retired { agent: agent.clone() })
        }
        (Request::Retire { agent }, _) => refused("retire", agent),
        (Request::Agents | Request::Stop, _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::Reason;

    fn ev(event: Event) -> NodeEvent {
        NodeEvent { at_ns: 0, node: NodeId::new("n").unwrap(), seq: 0, event }
    }

    #[test]
    fn requests_roundtrip_and_unknown_fields_are_errors() {
        let r = Request::Deploy {
            agent: AgentId::new("counter").unwrap(),
            wasm: b"\0asm".to_vec(),
            manifest: b"{}".to_vec(),
            budget: Microcents(5),
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(line, r#"{"op":"deploy","agent":"counter","wasm":"AGFzbQ==","manifest":"e30=","budget":5}"#);
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        assert_eq!(serde_json::from_str::<Request>(r#"{"op":"agents"}"#).unwrap(), Request::Agents);
        assert!(serde_json::from_str::<Request>(r#"{"op":"retire","agent":"c","force":true}"#).is_err());
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

    #[test]
    fn commands_are_answered_by_their_own_events_only() {
        let a = AgentId::new("counter").unwrap();
        let other = AgentId::new("other").unwrap();
        let req = Request::Recover { agent: a.clone(), anchor: String::new(), force: false };
        let refused = |agent: &AgentId, command: &str| Event::CommandRefused {
            command: command.into(),
            agent: Some(agent.clone()),
            reason: "no".into(),
        };
        assert_eq!(answer(&req, &refused(&other, "recover")), None);
        assert_eq!(answer(&req, &refused(&a, "migrate")), None);
        assert!(matches!(answer(&req, &refused(&a, "recover")), Some(Reply::Error { .. })));
    }
}
