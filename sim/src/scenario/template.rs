//! What an explore template adds to a scenario: the `explore` field
//! ([`ExploreSpec`]) and the names of the fault families it may ask for.
//! Schema, not drawing: `crate::explore` draws the families (and reads
//! these names); keeping them here lets the scenario validate a template
//! without importing the explorer.

use super::AgentSpec;
use crate::byzantine::Misbehaviour;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The fault families, in the order they are drawn and documented.
pub const FAMILIES: &[&str] = &[
    "latency",
    "loss",
    "duplication",
    "reordering",
    "corruption",
    "partitions",
    "crashes",
    "disk",
    "clock",
    "pause",
    "swizzle",
    "buggify",
    "migrations",
];

/// The wider families a template can ask for (`explore: (families: [...])`),
/// drawn after the A1 ones, each from its own RNG. `hostile`, `budget` and
/// `adversary` change the scenario's configuration (agents, budgets, a
/// node's misbehaviour); the others add timeline actions. Marks per family:
/// `coverage::FAMILY_MARKS`.
pub const EXTRA_FAMILIES: &[&str] =
    &["hostile", "budget", "adversary", "recover", "chains", "double_migration", "wipe", "diskfault"];

/// What an explore template asks for beyond the A1 families: the `explore`
/// field of a template scenario. Resolved scenarios drop it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExploreSpec {
    /// Draw the A1 families ([`FAMILIES`]) too.
    #[serde(default = "super::yes")]
    pub a1: bool,
    /// Wider families to draw, from [`EXTRA_FAMILIES`].
    #[serde(default)]
    pub families: Vec<String>,
    /// Agents the `hostile` family deploys (one per seed that draws it, on
    /// a node it draws; the entry's `node` is the default). Add an agent
    /// here to put it in the draw.
    #[serde(default)]
    pub hostile_agents: Vec<AgentSpec>,
    /// The `budget` family gives one agent a budget in this range
    /// (microcents): low enough to run out within the run.
    #[serde(default = "default_low_budget")]
    pub low_budget_microcents: (i64, i64),
    /// (node, misbehaviour) pairs; the `adversary` family configures one.
    /// Defences stay on, so the expected verdict stays Pass.
    #[serde(default)]
    pub adversaries: Vec<(String, Misbehaviour)>,
    /// DELIBERATELY OUTSIDE the clock bound S: the `clock` family draws
    /// ±2 s skews and far jumps (a suspended VM), as explore did before S
    /// was stated. Such runs may lose safety (spec §5): a violation there
    /// is the price of the broken assumption, reported, not a node bug.
    #[serde(default)]
    pub clock_beyond_bound: bool,
}

fn default_low_budget() -> (i64, i64) {
    (5, 40)
}

impl ExploreSpec {
    /// Names resolve against the template's nodes and agents.
    pub fn validate(&self, nodes: &BTreeSet<&str>, agents: &BTreeSet<&str>) -> Result<(), String> {
        for f in &self.families {
            if !EXTRA_FAMILIES.contains(&f.as_str()) {
                return Err(format!("explore.families: unknown family {f:?} (known: {})", EXTRA_FAMILIES.join(", ")));
            }
        }
        let mut seen = BTreeSet::new();
        for a in &self.hostile_agents {
            igor::units::AgentId::new(a.name.clone()).map_err(|e| format!("explore.hostile_agents: {e}"))?;
            if agents.contains(a.name.as_str()) || !seen.insert(a.name.as_str()) {
                return Err(format!("explore.hostile_agents: agent {:?} is defined twice", a.name));
            }
            if !nodes.contains(a.node.as_str()) {
                return Err(format!("explore.hostile_agents[{}].node: unknown node {:?}", a.name, a.node));
            }
            if a.budget_microcents < 0 {
                return Err(format!("explore.hostile_agents[{}].budget_microcents: negative", a.name));
            }
        }
        let (lo, hi) = self.low_budget_microcents;
        if lo < 0 || lo > hi {
            return Err(format!("explore.low_budget_microcents: ({lo}, {hi}) is not a range of budgets"));
        }
        for (n, _) in &self.adversaries {
            if !nodes.contains(n.as_str()) {
                return Err(format!("explore.adversaries: unknown node {n:?}"));
            }
        }
        Ok(())
    }
}
