//! Swarm exploration (swarm testing, FoundationDB's randomized workloads):
//! from a template scenario and a seed, draw which fault families are on
//! and how hard they hit, and return the fully resolved scenario. Each
//! family has its own child RNG (`derive_seed(seed, "explore/<family>")`)
//! and a family that is off draws nothing more, so switching one family off
//! never reshuffles the others. The resolved scenario is plain RON: running
//! it with `igor-sim run` reproduces the run exactly.

use crate::coverage;
use crate::disk::DiskFaultKind;
use crate::scenario::{Action, Boundary, BuggifyFault, Scenario, Step, Storage, Verdict};
pub use crate::scenario::{EXTRA_FAMILIES, ExploreSpec, FAMILIES};
use igor::env::derive_seed;
use igor::lease::LeaseConfig;
use igor::migration::MigrationConfig;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::BTreeSet;

/// The clock bound S of spec §5 at the default settings: any two nodes'
/// wall clocks differ by at most this much. Lease and package safety need
/// `S + margin < grace`, where the margin is the protocol's clock-skew
/// allowance past a package's expiry (`MigrationConfig::max_clock_skew_ns`,
/// 0.5 s) and the grace is the lease's (10 s); and a package must not stay
/// acceptable on a target whose clock lags the source by more than that
/// margin, so S is the margin itself: 0.5 s. See [`clock_bound_ns`] for a
/// template's own bound (a shorter lease grace narrows it).
pub const CLOCK_BOUND_NS: u64 = 500_000_000;

/// The clock bound S for `s`: [`CLOCK_BOUND_NS`], narrowed so that
/// `S + margin < grace` holds for every node's lease grace.
pub fn clock_bound_ns(s: &Scenario) -> u64 {
    let margin = MigrationConfig::default().max_clock_skew_ns;
    let default_grace = LeaseConfig::default().grace_ns;
    let grace = s
        .nodes
        .iter()
        .map(|n| n.lease_grace_ms.map_or(default_grace, |g| g.saturating_mul(1_000_000)))
        .min()
        .unwrap_or(default_grace);
    CLOCK_BOUND_NS.min(margin).min(grace.saturating_sub(margin).saturating_sub(1))
}

/// The marks a seed range of `template` must fire: the A1 marks when the
/// A1 families are on, each wider family's marks, one adversary mark per
/// misbehaviour in the pool, and every arrow of the §5 matrix.
pub fn required_marks(template: &Scenario) -> Vec<String> {
    let spec = template.explore.clone();
    let mut out: Vec<String> = Vec::new();
    if spec.as_ref().is_none_or(|e| e.a1) {
        // With clocks within S a lease lapses only when its node is down
        // longer than lease plus grace; the explorer's outages are shorter
        // than LONGEST_OUTAGE_MS, so with longer leases the mark cannot fire.
        let beyond = spec.as_ref().is_some_and(|e| e.clock_beyond_bound);
        let lease = LeaseConfig::default();
        let shortest_lease_ms = template
            .nodes
            .iter()
            .map(|n| {
                n.lease_duration_ms.unwrap_or(lease.duration_ns / 1_000_000)
                    + n.lease_grace_ms.unwrap_or(lease.grace_ns / 1_000_000)
            })
            .min()
            .unwrap_or(u64::MAX);
        let lapse_reachable = beyond || shortest_lease_ms < LONGEST_OUTAGE_MS;
        out.extend(
            coverage::a1_required()
                .filter(|m| lapse_reachable || *m != "lease_expired_during_partition")
                .map(str::to_string),
        );
    }
    let Some(spec) = spec else {
        out.extend(coverage::transitions_required_with(&[]));
        return out;
    };
    for f in &spec.families {
        out.extend(coverage::family_marks(f).iter().map(|(m, _)| m.to_string()));
        if f == "adversary" {
            let names: BTreeSet<String> = spec.adversaries.iter().map(|(_, m)| m.name().to_string()).collect();
            out.extend(coverage::adversary_required(&names));
        }
    }
    out.extend(coverage::transitions_required_with(&spec.families));
    out
}

/// Longest a node is down in a drawn crash or disk restart (the `crashes`
/// family: restart 0.2–8 s later; `disk`, `wipe`: 0.2–5 s).
pub const LONGEST_OUTAGE_MS: u64 = 8_000;

/// Probability that a family is on in a given seed (swarm testing: most
/// seeds run a few families hard rather than all of them a little).
const ON_PROBABILITY: f64 = 0.5;

/// A family's RNG.
struct Draw {
    rng: ChaCha20Rng,
}

impl Draw {
    fn new(seed: u64, family: &str) -> Self {
        Draw { rng: ChaCha20Rng::from_seed(derive_seed(seed, &format!("explore/{family}"))) }
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in lo..=hi (one draw, none for an empty range; the network
    /// twin's mapping, which no pair of u64 bounds can make panic).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo { lo } else { crate::net::uniform_inclusive(self.rng.next_u64(), lo, hi) }
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() as u64 - 1) as usize]
    }
    /// Round to 3 decimals so the resolved RON stays readable.
    fn prob(&mut self, lo: f64, hi: f64) -> f64 {
        ((lo + (hi - lo) * self.unit()) * 1000.0).round() / 1000.0
    }
}

/// Resolve `template` for `seed`: the template's own nodes, agents and
/// timeline, plus the faults the seed turns on. The result expects `Pass`
/// (no invariant violated, live after the heal); the template's authority
/// and tick expectations are dropped, since faults change the outcome.
pub fn resolve(template: &Scenario, seed: u64) -> Scenario {
    let mut s = template.clone();
    let spec = s.explore.take();
    s.name = format!("{}-seed-{seed}", template.name);
    s.seed = seed;
    s.expect.verdict = Verdict::Pass;
    s.expect.authority.clear();
    s.expect.ticks.clear();
    let a1 = spec.as_ref().is_none_or(|e| e.a1);
    let extra: Vec<&str> = EXTRA_FAMILIES
        .iter()
        .copied()
        .filter(|f| spec.as_ref().is_some_and(|e| e.families.iter().any(|g| g == f)))
        .collect();
    // Faults land in the first 80% of the run: the rest lets them play out.
    let window_ms = s.duration_s * 800;
    let mut on = Vec::new();
    let mut add = Vec::new();
    // Configuration families first, so the timeline families aim at the
    // agents and nodes they add.
    let (config, timed): (Vec<&str>, Vec<&str>) =
        extra.iter().partition(|f| matches!(**f, "hostile" | "budget" | "adversary"));
    for family in &config {
        let mut d = Draw::new(seed, family);
        if d.unit() >= ON_PROBABILITY {
            continue;
        }
        on.push(*family);
        if let Some(e) = &spec {
            draw_config(family, &mut d, &mut s, e);
        }
    }
    let nodes: Vec<String> = s.nodes.iter().map(|n| n.name.clone()).collect();
    let agents: Vec<String> = s.agents.iter().map(|a| a.name.clone()).collect();
    let beyond = spec.as_ref().is_some_and(|e| e.clock_beyond_bound);
    let a1_families: &[&str] = if a1 { FAMILIES } else { &[] };
    for family in a1_families.iter().chain(timed.iter()) {
        let mut d = Draw::new(seed, family);
        if d.unit() >= ON_PROBABILITY {
            continue; // off: nothing more is drawn for this family
        }
        on.push(*family);
        draw_family(family, &mut d, &mut s, &nodes, &agents, window_ms, beyond, &mut add);
    }
    // A heal or restart drawn past the end happens at the end (the heal
    // window repairs everything anyway).
    let end_ms = s.duration_s * 1000;
    s.timeline.extend(add.into_iter().map(|st| Step { at_ms: st.at_ms.min(end_ms), ..st }));
    s.timeline.sort_by_key(|st| st.at_ms); // stable: template order first at equal times
    s.description = format!("explore {} --seeds {seed}..{}: {}", template.name, seed + 1, on.join(", "));
    s
}

/// Draw a configuration family: it changes agents, budgets or a node.
fn draw_config(family: &str, d: &mut Draw, s: &mut Scenario, spec: &ExploreSpec) {
    match family {
        "hostile" if !spec.hostile_agents.is_empty() && !s.nodes.is_empty() => {
            let mut agent = d.pick(&spec.hostile_agents).clone();
            agent.node = d.pick(&s.nodes).name.clone();
            s.agents.push(agent);
        }
        "budget" if !s.agents.is_empty() => {
            let (lo, hi) = spec.low_budget_microcents;
            let i = d.range(0, s.agents.len() as u64 - 1) as usize;
            s.agents[i].budget_microcents = d.range(lo.max(0) as u64, hi.max(0) as u64) as i64;
        }
        "adversary" if !spec.adversaries.is_empty() => {
            let (node, m) = d.pick(&spec.adversaries).clone();
            if let Some(n) = s.nodes.iter_mut().find(|n| n.name == node) {
                n.adversary = Some(m);
            }
        }
        _ => {}
    }
}

/// The node `agent` is deployed on (its first owner).
fn home(s: &Scenario, agent: &str) -> Option<String> {
    s.agents.iter().find(|a| a.name == agent).map(|a| a.node.clone())
}

#[allow(clippy::too_many_arguments)] // one draw context; a struct would only rename the list
fn draw_family(
    family: &str,
    d: &mut Draw,
    s: &mut Scenario,
    nodes: &[String],
    agents: &[String],
    window_ms: u64,
    beyond_bound: bool,
    add: &mut Vec<Step>,
) {
    if nodes.is_empty() || agents.is_empty() {
        return; // nothing to aim faults at (a template may have no agents)
    }
    let at = |d: &mut Draw| d.range(500, window_ms.max(500));
    let mut push = |at_ms: u64, action: Action| add.push(Step { at_ms, action });
    match family {
        "latency" => {
            let lo = d.range(1, 20);
            s.network.latency_ms = (lo, lo + d.range(0, 300));
        }
        "loss" => s.network.loss = d.prob(0.001, 0.05),
        "duplication" => {
            for _ in 0..d.range(1, 2) {
                let (t, n, p) = (at(d), d.pick(nodes).clone(), d.prob(0.1, 1.0));
                push(t, Action::Duplicate { node: n, probability: p });
            }
        }
        "reordering" => {
            for _ in 0..d.range(1, 2) {
                let (t, n, ms) = (at(d), d.pick(nodes).clone(), d.range(10, 800));
                push(t, Action::Reorder { node: n, max_delay_ms: ms });
            }
        }
        "corruption" => {
            for _ in 0..d.range(1, 2) {
                let (t, n, p) = (at(d), d.pick(nodes).clone(), d.prob(0.05, 0.5));
                push(t, Action::Corrupt { node: n.clone(), probability: p });
                let end = t + d.range(1_000, 10_000);
                push(end, Action::ClearFaults { node: n });
            }
        }
        "partitions" if nodes.len() > 1 => {
            for _ in 0..d.range(1, 3) {
                let t = at(d);
                let a = d.pick(nodes).clone();
                let others: Vec<String> = nodes.iter().filter(|n| **n != a).cloned().collect();
                let b = d.pick(&others).clone();
                let heal = t + d.range(300, 12_000);
                if d.unit() < 0.3 {
                    push(t, Action::PartitionOneway { from: a.clone(), to: b.clone() });
                    push(heal, Action::HealOneway { from: a, to: b });
                } else {
                    push(t, Action::Partition { a: a.clone(), b: b.clone() });
                    push(heal, Action::Heal { a, b });
                }
            }
        }
        "crashes" => {
            for _ in 0..d.range(1, 2) {
                let (t, n) = (at(d), d.pick(nodes).clone());
                push(t, Action::Crash { node: n.clone() });
                push(t + d.range(200, 8_000), Action::Restart { node: n, storage: Storage::Intact });
            }
        }
        "disk" => {
            let (t, n) = (at(d), d.pick(nodes).clone());
            let agent = d.pick(agents).clone();
            let storage = if d.unit() < 0.5 {
                Storage::RemoveNewest { agent, count: d.range(1, 2) as usize }
            } else {
                Storage::CorruptNewest { agent }
            };
            push(t, Action::Crash { node: n.clone() });
            push(t + d.range(200, 5_000), Action::Restart { node: n, storage });
        }
        "clock" if beyond_bound => {
            for n in nodes {
                if d.unit() < 0.5 {
                    // Mostly NTP-sized steps; sometimes a suspended VM's jump
                    // far past any lease.
                    let ms =
                        if d.unit() < 0.3 { d.range(20_000, 120_000) as i64 } else { d.range(0, 4_000) as i64 - 2_000 };
                    push(at(d), Action::Skew { node: n.clone(), ms });
                }
                if d.unit() < 0.5 {
                    let ppm = d.range(0, 2_000) as i64 - 1_000;
                    push(at(d), Action::Drift { node: n.clone(), ppm });
                }
            }
        }
        "clock" => {
            // Within the bound S (spec §5): every node's offset, skew plus
            // the drift gathered until the end of the heal window, stays
            // within ±S/2, so any two clocks differ by at most S. Half of
            // that goes to the step, half to the drift.
            let quarter_ms = (clock_bound_ns(s) / 4 / 1_000_000) as i64;
            let run_ms = s.duration_s * 1000 + s.expect.liveness.as_ref().map_or(0, |l| l.within_ms);
            let max_ppm = ((quarter_ms as u64).saturating_mul(1_000_000) / run_ms.max(1)).min(1_000) as i64;
            for n in nodes {
                if d.unit() < 0.5 {
                    let ms = d.range(0, 2 * quarter_ms as u64) as i64 - quarter_ms;
                    push(at(d), Action::Skew { node: n.clone(), ms });
                }
                if d.unit() < 0.5 {
                    let ppm = d.range(0, 2 * max_ppm as u64) as i64 - max_ppm;
                    push(at(d), Action::Drift { node: n.clone(), ppm });
                }
            }
        }
        "pause" => {
            for _ in 0..d.range(1, 2) {
                let (t, n, ms) = (at(d), d.pick(nodes).clone(), d.range(100, 6_000));
                push(t, Action::Pause { node: n, ms });
            }
        }
        "swizzle" => {
            let mut subset: Vec<String> = nodes.iter().filter(|_| d.unit() < 0.6).cloned().collect();
            if subset.is_empty() {
                subset.push(d.pick(nodes).clone());
            }
            let (t, step) = (at(d), d.range(100, 2_000));
            push(t, Action::Swizzle { nodes: subset, step_ms: step });
        }
        "buggify" => {
            const POINTS: [Boundary; 5] = [
                Boundary::PackageSent,
                Boundary::HandoffCheckpoint,
                Boundary::CheckpointCommitted,
                Boundary::PackageAdopted,
                Boundary::MigrationFinished,
            ];
            for _ in 0..d.range(1, 2) {
                let (t, n, on) = (at(d), d.pick(nodes).clone(), *d.pick(&POINTS));
                let fault = if d.unit() < 0.5 { BuggifyFault::Crash } else { BuggifyFault::Isolate };
                let for_ms = d.range(100, 8_000);
                push(t, Action::Buggify { node: n, on, fault, for_ms });
            }
        }
        "migrations" if nodes.len() > 1 => {
            // The operator asks some node to hand an agent over; asking a
            // node that does not hold it is refused, which is fine too.
            for _ in 0..d.range(1, 3) {
                let t = at(d);
                let agent = d.pick(agents).clone();
                let from = d.pick(nodes).clone();
                let others: Vec<String> = nodes.iter().filter(|n| **n != from).cloned().collect();
                let to = d.pick(&others).clone();
                push(t, Action::Migrate { agent, from, to });
            }
        }
        "recover" => {
            // The operator recovers an agent on any node at any time; a node
            // with nothing to recover refuses, which is fine too.
            for _ in 0..d.range(1, 2) {
                let (t, agent, node) = (at(d), d.pick(agents).clone(), d.pick(nodes).clone());
                push(t, Action::Recover { agent, node, anchor_tick: None, force: false });
            }
            // Sometimes the operator retires an agent, late in the window
            // (ACTIVE_OWNER -> RETIRED; a node not owning it refuses).
            if d.unit() < 0.2 {
                let t = d.range(window_ms * 2 / 3, window_ms.max(1));
                let (agent, node) = (d.pick(agents).clone(), d.pick(nodes).clone());
                let node = if d.unit() < 0.6 { home(s, &agent).unwrap_or(node) } else { node };
                push(t, Action::Retire { agent, node });
            }
        }
        "chains" if nodes.len() >= 3 => {
            // One agent handed along three or more nodes, each hop issued
            // `gap` after the last, starting from its first owner.
            let agent = d.pick(agents).clone();
            let mut path = vec![home(s, &agent).unwrap_or_else(|| nodes[0].clone())];
            let hops = d.range(2, nodes.len() as u64 + 1);
            for _ in 0..hops {
                let last = path.last().cloned().unwrap_or_default();
                let others: Vec<String> = nodes.iter().filter(|n| **n != last && !path.contains(n)).cloned().collect();
                let others =
                    if others.is_empty() { nodes.iter().filter(|n| **n != last).cloned().collect() } else { others };
                path.push(d.pick(&others).clone());
            }
            let (mut t, gap) = (d.range(500, window_ms / 3), d.range(1_000, 6_000));
            for w in path.windows(2) {
                push(t, Action::Migrate { agent: agent.clone(), from: w[0].clone(), to: w[1].clone() });
                t += gap;
            }
        }
        "double_migration" if nodes.len() >= 3 => {
            // Two migrations of one agent, issued at the same instant from
            // the same node to different targets: one must be refused.
            let agent = d.pick(agents).clone();
            let from = if d.unit() < 0.7 {
                home(s, &agent).unwrap_or_else(|| d.pick(nodes).clone())
            } else {
                d.pick(nodes).clone()
            };
            let others: Vec<String> = nodes.iter().filter(|n| **n != from).cloned().collect();
            let first = d.pick(&others).clone();
            let rest: Vec<String> = others.iter().filter(|n| **n != first).cloned().collect();
            let second = d.pick(&rest).clone();
            let t = at(d);
            push(t, Action::Migrate { agent: agent.clone(), from: from.clone(), to: first });
            push(t, Action::Migrate { agent, from, to: second });
        }
        "wipe" => {
            let (t, n) = (at(d), d.pick(nodes).clone());
            push(t, Action::Crash { node: n.clone() });
            push(t + d.range(200, 5_000), Action::Restart { node: n, storage: Storage::Wipe });
        }
        "diskfault" => {
            const KINDS: [DiskFaultKind; 2] = [DiskFaultKind::Full, DiskFaultKind::Io];
            for _ in 0..d.range(1, 2) {
                let kind = *d.pick(&KINDS);
                let for_ms = d.range(200, 10_000);
                let r = d.unit();
                if r < 0.3 {
                    // At the instant an operator migration is issued: the
                    // source's handoff checkpoint write fails.
                    let migrations: Vec<(u64, String)> = s
                        .timeline
                        .iter()
                        .filter_map(|st| match &st.action {
                            Action::Migrate { from, .. } => Some((st.at_ms, from.clone())),
                            _ => None,
                        })
                        .collect();
                    if !migrations.is_empty() {
                        let (t, node) = d.pick(&migrations).clone();
                        push(t, Action::DiskFault { node, kind, for_ms, under: None });
                        continue;
                    }
                }
                let (t, node) = (at(d), d.pick(nodes).clone());
                if r < 0.6 {
                    const POINTS: [Boundary; 3] =
                        [Boundary::CheckpointCommitted, Boundary::PackageAdopted, Boundary::MigrationFinished];
                    let on = *d.pick(&POINTS);
                    let fault = if kind == DiskFaultKind::Full { BuggifyFault::DiskFull } else { BuggifyFault::DiskIo };
                    push(t, Action::Buggify { node, on, fault, for_ms });
                } else {
                    push(t, Action::DiskFault { node, kind, for_ms, under: None });
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"Scenario(
        name: "t", seed: 0, duration_s: 30,
        nodes: [(name: "a"), (name: "b"), (name: "c")],
        agents: [(name: "counter", wasm: "counter.wat", budget_microcents: 1000, node: "a")],
        timeline: [(at_ms: 5000, action: Migrate(agent: "counter", from: "a", to: "b"))],
        expect: (verdict: Pass),
    )"#;

    #[test]
    fn resolved_scenarios_are_valid_deterministic_and_round_trip() {
        let t = Scenario::parse(TEMPLATE, "t.ron").unwrap();
        for seed in 0..50 {
            let r = resolve(&t, seed);
            assert_eq!(r, resolve(&t, seed), "seed {seed}");
            let text = r.to_ron();
            let back = Scenario::parse(&text, "resolved.ron").unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
            assert_eq!(back, r);
        }
    }

    #[test]
    fn a_template_without_agents_resolves_without_panicking() {
        let text = TEMPLATE.replace(
            r#"agents: [(name: "counter", wasm: "counter.wat", budget_microcents: 1000, node: "a")],"#,
            "agents: [],",
        );
        let text =
            text.replace(r#"timeline: [(at_ms: 5000, action: Migrate(agent: "counter", from: "a", to: "b"))],"#, "");
        let t = Scenario::parse(&text, "t.ron").unwrap();
        for seed in 0..20 {
            Scenario::parse(&resolve(&t, seed).to_ron(), "r.ron").unwrap();
        }
    }

    #[test]
    fn a_family_draws_only_from_its_own_rng() {
        // Every family's draws depend on (seed, family) alone: the loss a
        // seed draws is the same whatever the other families do.
        let t = Scenario::parse(TEMPLATE, "t.ron").unwrap();
        for seed in 0..20 {
            let mut d = Draw::new(seed, "loss");
            let expected = if d.unit() < ON_PROBABILITY { d.prob(0.001, 0.05) } else { 0.0 };
            assert_eq!(resolve(&t, seed).network.loss, expected, "seed {seed}");
        }
    }
}
