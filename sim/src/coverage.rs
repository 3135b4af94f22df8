//! Coverage marks (`sometimes` / `reachable`, after Antithesis and
//! FoundationDB's `TEST()` macros): named, interesting situations that a
//! seed range must reach at least once, or the range did not test them. Marks
//! are derived from the node event stream and the simulator's own actions
//! only, so the node carries no test hooks. Counting never changes a run.

use crate::disk::DiskFaultKind;
use crate::scenario::{Action, Storage};
use igor::authority::{AuthorityState, Reason};
use igor::migration::Outcome;
use igor::node::Event;
use std::collections::{BTreeMap, BTreeSet};

/// The A1 (fault-tolerance) marks every exploration of the A1 template must
/// fire, with what each one means.
pub const A1_MARKS: &[(&str, &str)] = &[
    ("handoff_completed", "a migration completed: the target confirmed and the source retired"),
    ("migration_raced_crash", "a node crashed while a handoff it takes part in was in flight"),
    ("ambiguous_transfer", "a source could not tell whether the target took over (RECOVERY_REQUIRED)"),
    ("stale_message_dropped", "a message about an older epoch or request was ignored"),
    ("lease_expired_during_partition", "a lease ran out while its node was cut off or held"),
    ("recovered_after_heal", "liveness needed the one operator recovery, and it worked"),
    ("corrupt_frame_rejected", "the network twin's checksum rejected a corrupted frame"),
    ("duplicate_request_sent", "a request went out twice"),
    ("restart_with_damaged_disk", "a node restarted on a stale or corrupted disk"),
    ("buggify_crash", "a crash fired at a protocol boundary (Buggify Crash)"),
    ("buggify_isolate", "a node was cut off at a protocol boundary (Buggify Isolate)"),
    ("node_paused", "a node's links were held (Pause or Swizzle)"),
];

/// The arrows of the spec §5 permission matrix (plus the handoff abort
/// arrow `authority::allowed` adds for "a failed transfer leaves the agent
/// on the source"), as (from, to) state names. Every `authority_changed`
/// fires `transition_<FROM>_to_<TO>`; these are the ones a sweep should
/// reach. An arrow outside this list fires its mark too, and the report
/// flags it as forbidden (the checker names the violation).
pub const MATRIX_TRANSITIONS: &[(&str, &str)] = &[
    ("ACTIVE_OWNER", "HANDOFF_INITIATED"),
    ("HANDOFF_INITIATED", "HANDOFF_PENDING"),
    ("HANDOFF_INITIATED", "ACTIVE_OWNER"),
    ("HANDOFF_PENDING", "ACTIVE_OWNER"),
    ("HANDOFF_PENDING", "RETIRED"),
    ("ACTIVE_OWNER", "RETIRED"),
    ("ACTIVE_OWNER", "RECOVERY_REQUIRED"),
    ("HANDOFF_INITIATED", "RECOVERY_REQUIRED"),
    ("HANDOFF_PENDING", "RECOVERY_REQUIRED"),
    ("RETIRED", "RECOVERY_REQUIRED"),
    ("RECOVERY_REQUIRED", "ACTIVE_OWNER"),
    ("RECOVERY_REQUIRED", "RECOVERY_REQUIRED"),
];

/// Arrows the matrix allows that this node never takes, so no seed range
/// is required to reach them, each with the reason.
pub const UNREACHED_TRANSITIONS: &[(&str, &str, &str)] = &[
    (
        "HANDOFF_INITIATED",
        "RECOVERY_REQUIRED",
        "HANDOFF_INITIATED never outlives the step that enters it: the seal and the send follow at once, so a doubt finds the source in HANDOFF_PENDING",
    ),
    (
        "RETIRED",
        "RECOVERY_REQUIRED",
        "a RETIRED record is terminal for its epoch (spec §5 clarifications): the node archives it, never transitions it",
    ),
    (
        "RECOVERY_REQUIRED",
        "RECOVERY_REQUIRED",
        "a second doubt about an agent already in RECOVERY_REQUIRED changes nothing: the node keeps the first (fall_to_recovery is idempotent)",
    ),
];

/// Arrows only a wider explore family can reach, with the family and why:
/// a template that does not draw the family is not required to reach them.
pub const FAMILY_TRANSITIONS: &[(&str, &str, &str, &str)] = &[
    ("ACTIVE_OWNER", "RETIRED", "recover", "only an operator retire takes it (the operator family draws retires)"),
    (
        "HANDOFF_INITIATED",
        "ACTIVE_OWNER",
        "diskfault",
        "the abort arrow: the seal checkpoint's write fails and the source keeps the agent",
    ),
];

/// The mark of one authority transition.
pub fn transition_mark(from: &str, to: &str) -> String {
    format!("transition_{from}_to_{to}")
}

/// Marks of the wider explore families (`explore::EXTRA_FAMILIES`), by
/// family: what each must reach in a seed range that draws it.
pub const FAMILY_MARKS: &[(&str, &[(&str, &str)])] = &[
    (
        "hostile",
        &[
            ("agent_trapped", "an agent's tick trapped and the agent halted"),
            ("agent_budget_exhausted", "an agent's budget ran out and the agent halted"),
        ],
    ),
    (
        "recover",
        &[
            ("operator_recover_issued", "the timeline asked a node to recover an agent"),
            ("operator_recovery_took", "a node recovered an agent (`recovered` event)"),
        ],
    ),
    ("chains", &[("migration_chain_3_nodes", "one agent was owned by three or more nodes in one run")]),
    (
        "double_migration",
        &[
            ("concurrent_migrations_issued", "two migrations of one agent to different targets at one instant"),
            ("migration_refused", "a node refused a migrate command"),
        ],
    ),
    (
        "wipe",
        &[
            ("node_wiped", "a node restarted on an empty disk"),
            ("wiped_node_took_agent", "a wiped node later received or took an agent"),
        ],
    ),
    (
        "diskfault",
        &[
            ("disk_fault_started", "a node's disk started refusing writes (DiskFault)"),
            ("disk_write_refused", "a faulty disk refused a write"),
            ("disk_fault_seen_by_node", "the node reported a refused write (fault_observed)"),
        ],
    ),
];

/// The marks of `family` (empty for the A1 families, see [`A1_MARKS`]).
pub fn family_marks(family: &str) -> &'static [(&'static str, &'static str)] {
    FAMILY_MARKS.iter().find(|(f, _)| *f == family).map(|(_, m)| *m).unwrap_or(&[])
}

/// Marks that a run may fire but that no seed range is required to reach:
/// EI-11 divergence needs two heads for one epoch, which a correct protocol
/// under A1 faults does not produce (it shows up with unsafe settings).
pub const OPTIONAL_MARKS: &[(&str, &str)] = &[
    ("divergence_detected", "a node saw two different heads for one epoch (EI-11)"),
    ("agent_lost_with_its_disk", "the drawn wipes destroyed every copy of an agent (verdict LOST)"),
    ("agent_held_hostage", "only misbehaving nodes held an agent after the heal (verdict LOST)"),
    ("operator_retire_issued", "the timeline asked a node to retire an agent"),
];

/// Adversary marks (A2–A4) are named at run time: `adversary_<behaviour>`
/// each time a node configured with that misbehaviour reports acting it out
/// (`misbehaved`), and `defence_<name>` each time a defence rejects a claim
/// (`claim_rejected defence=<name>`). Read from the events themselves (not
/// their trace text), so this module needs none of the adversary types.
pub const ADVERSARY_PREFIX: &str = "adversary_";
pub const DEFENCE_PREFIX: &str = "defence_";

/// Marks fired in one run (or summed over many), with counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    pub fired: BTreeMap<String, u64>,
    /// (agent, source, target) handoffs in flight, from the source's view.
    inflight: BTreeSet<(String, String, String)>,
    /// Configured misbehaviour per node (its variant name), for marks.
    behaviours: BTreeMap<String, String>,
    /// Nodes that took authority over each agent (for migration chains).
    owners: BTreeMap<String, BTreeSet<String>>,
    /// Nodes restarted with a wiped disk.
    wiped: BTreeSet<String>,
    /// The last timeline migration: (time, agent, target).
    last_migrate: Option<(u64, String, String)>,
}

impl Coverage {
    /// Name `node`'s configured misbehaviour (e.g. `Overcharge`): its
    /// `misbehaved` events fire `adversary_<name>`.
    pub fn set_behaviour(&mut self, node: &str, behaviour: &str) {
        self.behaviours.insert(node.to_string(), behaviour.to_string());
    }

    pub fn mark(&mut self, name: &str) {
        *self.fired.entry(name.to_string()).or_default() += 1;
    }

    /// Derive marks from one node event. `isolated`: the node is cut off
    /// (partitioned from a peer, or its links are held) right now.
    pub fn observe(&mut self, node: &str, event: &Event, isolated: bool) {
        match event {
            Event::HandoffStarted { agent, target, .. } => {
                self.inflight.insert((agent.to_string(), node.to_string(), target.to_string()));
            }
            Event::MigrationFinished { agent, outcome, .. } => {
                self.inflight.retain(|(a, s, _)| !(a == agent.as_str() && s == node));
                match outcome {
                    Outcome::Completed => self.mark("handoff_completed"),
                    Outcome::Ambiguous(_) => self.mark("ambiguous_transfer"),
                    _ => {}
                }
            }
            Event::StaleMessageIgnored { .. } => self.mark("stale_message_dropped"),
            Event::AuthorityChanged { agent, from, to, reason, .. } => {
                if *reason == Reason::LeaseExpired && isolated {
                    self.mark("lease_expired_during_partition");
                }
                if let Some(from) = from {
                    self.mark(&transition_mark(state_name(*from), state_name(*to)));
                }
                if matches!(to, AuthorityState::ActiveOwner) {
                    let owners = self.owners.entry(agent.to_string()).or_default();
                    if owners.insert(node.to_string()) && owners.len() == 3 {
                        self.mark("migration_chain_3_nodes");
                    }
                }
                if matches!(to, AuthorityState::ActiveOwner | AuthorityState::HandoffPending)
                    && self.wiped.contains(node)
                {
                    self.mark("wiped_node_took_agent");
                }
            }
            Event::AgentHalted { reason, .. } => {
                if reason.starts_with("trapped") {
                    self.mark("agent_trapped");
                } else if reason.starts_with("budget exhausted") {
                    self.mark("agent_budget_exhausted");
                }
            }
            Event::Recovered { .. } => self.mark("operator_recovery_took"),
            Event::CommandRefused { command, .. } if command.contains("migrate") => self.mark("migration_refused"),
            Event::FaultObserved { fault, .. }
                if [DiskFaultKind::Full, DiskFaultKind::Io].iter().any(|k| fault.contains(k.reason())) =>
            {
                self.mark("disk_fault_seen_by_node")
            }
            Event::DivergenceDetected { .. } => self.mark("divergence_detected"),
            _ => {}
        }
        match event {
            Event::Misbehaved { .. } => {
                let behaviour = self.behaviours.get(node).cloned().unwrap_or_else(|| "unnamed".to_string());
                self.mark(&format!("{ADVERSARY_PREFIX}{behaviour}"));
            }
            Event::ClaimRejected { defence, .. } => self.mark(&format!("{DEFENCE_PREFIX}{}", defence.name())),
            _ => {}
        }
    }

    /// The runner applies a timeline action at `now_ns`.
    pub fn action(&mut self, now_ns: u64, action: &Action) {
        match action {
            Action::Recover { .. } => self.mark("operator_recover_issued"),
            Action::Retire { .. } => self.mark("operator_retire_issued"),
            Action::Restart { node, storage: Storage::Wipe } => {
                self.wiped.insert(node.clone());
                self.mark("node_wiped");
            }
            Action::DiskFault { .. } => self.mark("disk_fault_started"),
            Action::Migrate { agent, to, .. } => {
                if let Some((t, a, other)) = &self.last_migrate
                    && *t == now_ns
                    && a == agent
                    && other != to
                {
                    self.mark("concurrent_migrations_issued");
                }
                self.last_migrate = Some((now_ns, agent.clone(), to.clone()));
            }
            _ => {}
        }
    }

    /// The simulator crashed `node` (timeline or BUGGIFY).
    pub fn crashed(&mut self, node: &str) {
        if self.inflight.iter().any(|(_, s, t)| s == node || t == node) {
            self.mark("migration_raced_crash");
        }
        // A crashed source forgets its handoff; a restarted one reports anew.
        self.inflight.retain(|(_, s, _)| s != node);
    }

    /// Add another run's counts.
    pub fn merge(&mut self, other: &Coverage) {
        for (k, v) in &other.fired {
            *self.fired.entry(k.clone()).or_default() += v;
        }
    }

    /// Required marks (A1 plus every adversary kind in `expected_adversary`)
    /// that never fired.
    pub fn unfired<'a>(&self, required: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        required.into_iter().filter(|m| !self.fired.contains_key(*m)).collect()
    }

    /// A report table: every known mark with its count, then extra marks.
    pub fn report(&self) -> String {
        let mut s = String::from("| mark | fired | meaning |\n|---|---|---|\n");
        let mut known: BTreeSet<String> = BTreeSet::new();
        let transitions: Vec<(String, String)> = MATRIX_TRANSITIONS
            .iter()
            .map(|(f, t)| {
                let unreached = UNREACHED_TRANSITIONS.iter().find(|(uf, ut, _)| uf == f && ut == t);
                let meaning = match unreached {
                    Some((_, _, why)) => format!("§5 arrow {f} -> {t} (not required: {why})"),
                    None => format!("§5 arrow {f} -> {t}"),
                };
                (transition_mark(f, t), meaning)
            })
            .collect();
        let families = FAMILY_MARKS.iter().flat_map(|(_, m)| m.iter());
        let rows = A1_MARKS.iter().chain(OPTIONAL_MARKS).chain(families).map(|(n, m)| (n.to_string(), m.to_string()));
        for (name, meaning) in rows.chain(transitions) {
            let n = self.fired.get(&name).copied().unwrap_or(0);
            let n = if n == 0 { "NEVER".to_string() } else { n.to_string() };
            s += &format!("| {name} | {n} | {meaning} |\n");
            known.insert(name);
        }
        for (name, n) in &self.fired {
            if !known.contains(name) {
                let meaning = if name.starts_with(DEFENCE_PREFIX) {
                    "a defence rejected a claim"
                } else if name.starts_with("transition_") {
                    "FORBIDDEN by the §5 matrix (the checker should name it)"
                } else if name.starts_with("buggify_") || name.starts_with("disk_") {
                    "a fault fired"
                } else {
                    "an adversary acted out its behaviour"
                };
                s += &format!("| {name} | {n} | {meaning} |\n");
            }
        }
        s
    }
}

/// The adversary marks a set of scenarios must fire: one per configured
/// misbehaviour (variant names, as given to [`Coverage::set_behaviour`]).
pub fn adversary_required(behaviours: &BTreeSet<String>) -> Vec<String> {
    behaviours.iter().map(|b| format!("{ADVERSARY_PREFIX}{b}")).collect()
}

/// Names of the transition marks a sweep should reach.
pub fn transitions_required() -> Vec<String> {
    transitions_required_with(&[])
}

/// [`transitions_required`] for a template that draws `families`: the
/// arrows of [`FAMILY_TRANSITIONS`] only when their family is drawn.
pub fn transitions_required_with(families: &[String]) -> Vec<String> {
    MATRIX_TRANSITIONS
        .iter()
        .filter(|(f, t)| !UNREACHED_TRANSITIONS.iter().any(|(uf, ut, _)| uf == f && ut == t))
        .filter(|(f, t)| {
            FAMILY_TRANSITIONS
                .iter()
                .find(|(ff, ft, _, _)| ff == f && ft == t)
                .is_none_or(|(_, _, family, _)| families.iter().any(|g| g == family))
        })
        .map(|(f, t)| transition_mark(f, t))
        .collect()
}

fn state_name(s: AuthorityState) -> &'static str {
    match s {
        AuthorityState::ActiveOwner => "ACTIVE_OWNER",
        AuthorityState::HandoffInitiated => "HANDOFF_INITIATED",
        AuthorityState::HandoffPending => "HANDOFF_PENDING",
        AuthorityState::Retired => "RETIRED",
        AuthorityState::RecoveryRequired => "RECOVERY_REQUIRED",
    }
}

/// Names of the required A1 marks.
pub fn a1_required() -> impl Iterator<Item = &'static str> {
    A1_MARKS.iter().map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use igor::units::{AgentId, Epoch};

    fn changed(from: Option<AuthorityState>, to: AuthorityState) -> Event {
        Event::AuthorityChanged {
            agent: AgentId::new("counter").unwrap(),
            from,
            to,
            epoch: Epoch::new(1, 0),
            reason: Reason::Assumed,
        }
    }

    #[test]
    fn every_authority_change_fires_its_transition_mark_and_forbidden_ones_are_flagged() {
        use AuthorityState::*;
        let mut c = Coverage::default();
        c.observe("a", &changed(None, ActiveOwner), false);
        c.observe("a", &changed(Some(ActiveOwner), HandoffInitiated), false);
        c.observe("a", &changed(Some(RecoveryRequired), HandoffPending), false);
        assert_eq!(c.fired.get("transition_ACTIVE_OWNER_to_HANDOFF_INITIATED"), Some(&1));
        assert!(!c.fired.keys().any(|k| k.contains("None")), "no arrow from an absent record: {:?}", c.fired);
        let required = transitions_required();
        let gaps = c.unfired(required.iter().map(String::as_str));
        assert_eq!(gaps.len(), required.len() - 1, "{gaps:?}");
        assert_eq!(required.len(), MATRIX_TRANSITIONS.len() - UNREACHED_TRANSITIONS.len() - FAMILY_TRANSITIONS.len());
        let with = transitions_required_with(&["recover".to_string(), "diskfault".to_string()]);
        assert!(with.contains(&"transition_ACTIVE_OWNER_to_RETIRED".to_string()), "{with:?}");
        assert_eq!(with.len(), required.len() + FAMILY_TRANSITIONS.len());
        assert!(!required.contains(&"transition_RETIRED_to_RECOVERY_REQUIRED".to_string()));
        let report = c.report();
        assert!(
            report.contains("| transition_RECOVERY_REQUIRED_to_HANDOFF_PENDING | 1 | FORBIDDEN"),
            "the §5 matrix forbids RECOVERY_REQUIRED -> HANDOFF_PENDING:\n{report}"
        );
        assert!(report.contains("| transition_HANDOFF_PENDING_to_RETIRED | NEVER |"), "{report}");
        c.observe("a", &changed(Some(RecoveryRequired), RecoveryRequired), false);
        assert!(
            c.report().contains("| transition_RECOVERY_REQUIRED_to_RECOVERY_REQUIRED | 1 | §5 arrow"),
            "any -> RECOVERY_REQUIRED is allowed, the self-loop too:\n{}",
            c.report()
        );
    }

    #[test]
    fn owners_on_three_nodes_make_a_chain_and_same_instant_migrations_are_concurrent() {
        use AuthorityState::*;
        let mut c = Coverage::default();
        for n in ["a", "b", "a", "c"] {
            c.observe(n, &changed(Some(HandoffPending), ActiveOwner), false);
        }
        assert_eq!(c.fired.get("migration_chain_3_nodes"), Some(&1));
        let m = |to: &str| Action::Migrate { agent: "counter".into(), from: "a".into(), to: to.into() };
        c.action(5, &m("b"));
        c.action(6, &m("c"));
        assert_eq!(c.fired.get("concurrent_migrations_issued"), None, "different instants");
        c.action(6, &m("b"));
        assert_eq!(c.fired.get("concurrent_migrations_issued"), Some(&1));
        c.action(7, &Action::Restart { node: "b".into(), storage: Storage::Wipe });
        c.observe("b", &changed(Some(HandoffPending), ActiveOwner), false);
        assert_eq!(c.fired.get("wiped_node_took_agent"), Some(&1));
    }
}
