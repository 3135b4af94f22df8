//! Operator commands that act on the node as a whole or end an agent here:
//! [`Command`] dispatch, retire, shutdown, and the deliberately unsafe
//! self-recovery on lease expiry (scenarios only). Migration starts in
//! `source`, recovery lives in `recovery`.
//!
//! Invariants enforced here: RE-8 (RETIRED only from ACTIVE_OWNER, after a
//! final checkpoint), EI-2 (shutdown commits what ran before stopping). The
//! unsafe flag deliberately breaks EI-1 so a scenario can show the checker
//! catching two tickers; it is off by default.

use super::tick::CommitKind;
use super::*;

impl<X: Executor, D: Disk, C: Clock, R: Entropy> Node<X, D, C, R> {
    /// Run an operator command.
    pub fn command(&mut self, cmd: Command) -> Result<(), Refused> {
        match cmd {
            Command::Migrate { agent, to } => self.start_handoff(agent, to),
            Command::Recover { agent, anchor, force } => self.recover(agent, anchor, force),
            Command::Retire { agent } => self.retire(agent),
            Command::Shutdown => {
                for agent in self.agent_ids() {
                    let dirty = self.agents.get(&agent).is_some_and(|s| s.ticks_since_checkpoint > 0);
                    let owned = self.agents.get(&agent).is_some_and(|s| s.authority.permits(Op::NewCheckpoint));
                    if dirty
                        && owned
                        && let Err(e) = self.commit(&agent, CommitKind::Routine, self.clock.now())
                    {
                        self.fault(Some(&agent), format!("final checkpoint: {e}"));
                    }
                }
                self.stopped = true;
                self.emit(Event::NodeShutdown);
                Ok(())
            }
        }
    }

    fn retire(&mut self, agent: AgentId) -> Result<(), Refused> {
        let Some(s) = self.agents.get(&agent) else {
            return Err(self.refuse("retire", Some(&agent), NodeError::operator(Some(&agent), "unknown agent")));
        };
        if self.handoffs.contains_key(&agent) || !s.authority.permits(Op::NewCheckpoint) {
            let state = s.authority.state();
            let why = NodeError::operator(Some(&agent), format!("agent is {state}"));
            return Err(self.refuse("retire", Some(&agent), why));
        }
        if s.ticks_since_checkpoint > 0
            && let Err(e) = self.commit(&agent, CommitKind::Routine, self.clock.now())
        {
            return Err(self.refuse("retire", Some(&agent), e));
        }
        if let Some(s) = self.agents.get_mut(&agent) {
            s.ticking = false;
            s.instance = None;
        }
        self.set_state(&agent, AuthorityState::Retired, Reason::Shutdown).map_err(|e| Refused {
            command: "retire",
            agent: Some(agent.clone()),
            reason: e,
        })
    }

    pub(super) fn unsafe_self_recover(&mut self, agent: &AgentId) {
        let now = self.clock.now();
        let lease = Lease::grant(&self.cfg.lease, now.unix_ns);
        let Some(s) = self.agents.get_mut(agent) else { return };
        let from = s.authority.state();
        let _ = s.authority.transition(AuthorityState::RecoveryRequired, Reason::LeaseExpired);
        let epoch = s.authority.epoch();
        let highest = s.highest_major_seen;
        let Ok(t) = s.authority.recover(Reason::UnsafeSelfRecovery, highest) else { return };
        s.lease = lease;
        s.highest_major_seen = t.epoch.major;
        s.ticking = s.instance.is_some() && s.halted.is_none();
        let to = AuthorityState::RecoveryRequired;
        self.emit(Event::AuthorityChanged {
            agent: agent.clone(),
            from: Some(from),
            to,
            epoch,
            reason: Reason::LeaseExpired,
        });
        self.emit(Event::AuthorityChanged {
            agent: agent.clone(),
            from: Some(to),
            to: t.to,
            epoch: t.epoch,
            reason: Reason::UnsafeSelfRecovery,
        });
        if let Err(e) = self.persist(agent) {
            self.fault(Some(agent), format!("persist authority: {e}"));
        }
    }
}

/// States from which the deliberately unsafe flag lets a former source take
/// authority back by itself (the original's behaviour): a handoff in doubt.
pub(super) fn unsafe_recoverable(state: AuthorityState, role: Role) -> bool {
    match state {
        AuthorityState::RecoveryRequired => true,
        AuthorityState::HandoffPending => role == Role::Source,
        _ => false,
    }
}
