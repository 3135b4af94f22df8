//! Coverage marks (`sometimes` / `reachable`, after Antithesis and
//! FoundationDB's `TEST()` macros): named, interesting situations that a
//! seed range must reach at least once, or the range did not test them. Marks
//! are derived from the node event stream and the simulator's own actions
//! only, so the node carries no test hooks. Counting never changes a run.

use igor::authority::Reason;
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

/// Marks that a run may fire but that no seed range is required to reach:
/// EI-11 divergence needs two heads for one epoch, which a correct protocol
/// under A1 faults does not produce (it shows up with unsafe settings).
pub const OPTIONAL_MARKS: &[(&str, &str)] =
    &[("divergence_detected", "a node saw two different heads for one epoch (EI-11)")];

/// Adversary marks (A2–A4) are named at run time: `adversary_<behaviour>`
/// each time a node configured with that misbehaviour reports acting it out
/// (`misbehaved`), and `defence_<name>` each time a defence rejects a claim
/// (`claim_rejected defence=<name>`). Read from the event text, so this
/// module needs none of the adversary types.
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
            Event::DivergenceDetected { .. } => self.mark("divergence_detected"),
            Event::AuthorityChanged { reason: Reason::LeaseExpired, .. } if isolated => {
                self.mark("lease_expired_during_partition")
            }
            _ => {}
        }
        let text = event.to_string();
        match text.split(' ').next().unwrap_or_default() {
            "misbehaved" => {
                let behaviour = self.behaviours.get(node).cloned().unwrap_or_else(|| "unnamed".to_string());
                self.mark(&format!("{ADVERSARY_PREFIX}{behaviour}"));
            }
            "claim_rejected" => {
                let defence = text.split(' ').find_map(|kv| kv.strip_prefix("defence=")).unwrap_or("unnamed");
                self.mark(&format!("{DEFENCE_PREFIX}{}", defence.trim_matches('"')));
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
        let mut known = BTreeSet::new();
        for (name, meaning) in A1_MARKS.iter().chain(OPTIONAL_MARKS) {
            known.insert(*name);
            let n = self.fired.get(*name).copied().unwrap_or(0);
            let n = if n == 0 { "NEVER".to_string() } else { n.to_string() };
            s += &format!("| {name} | {n} | {meaning} |\n");
        }
        for (name, n) in &self.fired {
            if !known.contains(name.as_str()) {
                let meaning = if name.starts_with(DEFENCE_PREFIX) {
                    "a defence rejected a claim"
                } else {
                    "an adversary acted out its behaviour"
                };
                s += &format!("| {name} | {n} | {meaning} |\n");
            }
        }
        s
    }
}

/// The mark name of a misbehaviour from its Debug text
/// (`Overcharge { factor: 2 }` → `Overcharge`).
pub fn behaviour_name(debug: &str) -> &str {
    debug.split([' ', '{', '(']).next().unwrap_or_default()
}

/// The adversary marks a set of scenarios must fire: one per configured
/// misbehaviour (variant names, as given to [`Coverage::set_behaviour`]).
pub fn adversary_required(behaviours: &BTreeSet<String>) -> Vec<String> {
    behaviours.iter().map(|b| format!("{ADVERSARY_PREFIX}{b}")).collect()
}

/// Names of the required A1 marks.
pub fn a1_required() -> impl Iterator<Item = &'static str> {
    A1_MARKS.iter().map(|(n, _)| *n)
}
