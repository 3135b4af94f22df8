//! Swarm exploration (swarm testing, FoundationDB's randomized workloads):
//! from a template scenario and a seed, draw which fault families are on
//! and how hard they hit, and return the fully resolved scenario. Each
//! family has its own child RNG (`derive_seed(seed, "explore/<family>")`)
//! and a family that is off draws nothing more, so switching one family off
//! never reshuffles the others. The resolved scenario is plain RON: running
//! it with `igor-sim run` reproduces the run exactly.

use crate::scenario::{Action, Boundary, BuggifyFault, Scenario, Step, Storage, Verdict};
use igor::env::derive_seed;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

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
    /// Uniform in lo..=hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo { lo } else { lo + self.rng.next_u64() % (hi - lo + 1) }
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
    s.name = format!("{}-seed-{seed}", template.name);
    s.seed = seed;
    s.expect.verdict = Verdict::Pass;
    s.expect.authority.clear();
    s.expect.ticks.clear();
    let nodes: Vec<String> = s.nodes.iter().map(|n| n.name.clone()).collect();
    let agents: Vec<String> = s.agents.iter().map(|a| a.name.clone()).collect();
    // Faults land in the first 80% of the run: the rest lets them play out.
    let window_ms = s.duration_s * 800;
    let mut on = Vec::new();
    let mut add = Vec::new();
    for family in FAMILIES {
        let mut d = Draw::new(seed, family);
        if d.unit() >= ON_PROBABILITY {
            continue; // off: nothing more is drawn for this family
        }
        on.push(*family);
        draw_family(family, &mut d, &mut s, &nodes, &agents, window_ms, &mut add);
    }
    // A heal or restart drawn past the end happens at the end (the heal
    // window repairs everything anyway).
    let end_ms = s.duration_s * 1000;
    s.timeline.extend(add.into_iter().map(|st| Step { at_ms: st.at_ms.min(end_ms), ..st }));
    s.timeline.sort_by_key(|st| st.at_ms); // stable: template order first at equal times
    s.description = format!("explore {} --seeds {seed}..{}: {}", template.name, seed + 1, on.join(", "));
    s
}

fn draw_family(
    family: &str,
    d: &mut Draw,
    s: &mut Scenario,
    nodes: &[String],
    agents: &[String],
    window_ms: u64,
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
        "clock" => {
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
