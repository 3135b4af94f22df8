//! The visual timeline: one self-contained HTML page (inline SVG and CSS, no
//! script, no network fetches) drawn from a canonical trace alone. A lane per
//! node; ticks, checkpoints and authority states on it; migrations as arrows
//! from the source's `package_sent` to the target's `checkpoint_adopted`;
//! faults as shaded spans; the violation as a red line. Every mark has an
//! SVG `<title>`, which browsers show on hover.

use crate::trace::{self, Parsed, SIM};
use std::collections::BTreeMap;
use std::fmt::Write;

const LANE_H: f64 = 70.0;
const TOP: f64 = 50.0;
const LEFT: f64 = 90.0;
/// Pixels per simulated second, and a cap on page width.
const PX_PER_S: f64 = 24.0;
const MAX_WIDTH: f64 = 30_000.0;

/// One trace line read back ([`trace::parse`]), with its time in seconds
/// and the raw text after the time for tooltips.
struct Line<'a> {
    t: f64,
    p: Parsed,
    rest: &'a str,
}

fn parse(line: &str) -> Option<Line<'_>> {
    let p = trace::parse(line)?;
    let rest = line.split_once(' ')?.1;
    Some(Line { t: p.at_ns as f64 / 1e9, p, rest })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn state_color(state: &str) -> &'static str {
    match state {
        "ACTIVE_OWNER" => "#2e7d32",
        "HANDOFF_INITIATED" | "HANDOFF_PENDING" => "#f9a825",
        "RETIRED" => "#9e9e9e",
        "RECOVERY_REQUIRED" => "#c62828",
        _ => "#607d8b",
    }
}

/// Render the page for a trace. Lanes come from the `# options … nodes=`
/// header line, in scenario order.
pub fn render(trace: &crate::trace::Trace, title: &str) -> String {
    let lines = trace.lines();
    let nodes: Vec<String> = lines
        .iter()
        .find_map(|l| l.strip_prefix("# options ")?.split(' ').find_map(|kv| kv.strip_prefix("nodes=")))
        .map(|v| v.split(',').filter(|n| !n.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    let lane: BTreeMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let parsed: Vec<Line<'_>> = lines.iter().filter(|l| !l.starts_with('#')).filter_map(|l| parse(l)).collect();
    let end = parsed.iter().map(|l| l.t).fold(1.0, f64::max);
    let scale = PX_PER_S.min(MAX_WIDTH / end);
    let x = |t: f64| LEFT + t * scale;
    let y = |i: usize| TOP + i as f64 * LANE_H + LANE_H / 2.0;
    let width = x(end) + 120.0; // room for the violation label
    let height = TOP + nodes.len() as f64 * LANE_H + 30.0;

    let mut faults = String::new();
    let mut bands = String::new();
    let mut marks = String::new();
    let mut arrows = String::new();
    let mut open_faults: BTreeMap<(usize, String), (f64, String)> = BTreeMap::new();
    let mut authority: BTreeMap<(usize, String), (f64, String)> = BTreeMap::new();
    let mut adopted: BTreeMap<(String, String), f64> = BTreeMap::new();
    for l in &parsed {
        if let (Some(&i), Some(h)) = (lane.get(l.p.host.as_str()), l.p.get("hash"))
            && l.p.kind == "checkpoint_adopted"
        {
            adopted.entry((nodes[i].clone(), h.to_string())).or_insert(l.t);
        }
    }
    let fault_rect = |out: &mut String, i: usize, from: f64, to: f64, what: &str| {
        let _ = write!(
            out,
            r#"<rect class="fault" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{}</title></rect>"#,
            x(from),
            y(i) - LANE_H / 2.0 + 2.0,
            (x(to) - x(from)).max(2.0),
            LANE_H - 4.0,
            esc(what)
        );
    };
    let mut violation = String::new();
    for l in &parsed {
        if l.p.host == SIM && l.p.kind == "violation" {
            let _ = write!(
                violation,
                r#"<g class="violation"><line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2:.1}"/><text x="{0:.1}" y="{3}">VIOLATION</text><title>{4}</title></g>"#,
                x(l.t),
                TOP - 10.0,
                height - 20.0,
                TOP - 14.0,
                esc(l.rest)
            );
            continue;
        }
        if l.p.host == SIM {
            sim_action(l, &lane, &mut open_faults, &mut faults, &fault_rect);
            continue;
        }
        let Some(&i) = lane.get(l.p.host.as_str()) else { continue };
        let tip = esc(&format!("{:.3}s {}", l.t, l.rest));
        match l.p.kind.as_str() {
            "tick_finished" => {
                let _ = write!(
                    marks,
                    r#"<circle class="tick" cx="{:.1}" cy="{:.1}" r="2.5"><title>{tip}</title></circle>"#,
                    x(l.t),
                    y(i) + 8.0
                );
            }
            "checkpoint_committed" | "checkpoint_adopted" => {
                let _ = write!(
                    marks,
                    r#"<rect class="checkpoint" x="{:.1}" y="{:.1}" width="6" height="6"><title>{tip}</title></rect>"#,
                    x(l.t) - 3.0,
                    y(i) - 14.0
                );
            }
            "authority_changed" => {
                let agent = l.p.get("agent").unwrap_or("?").to_string();
                let to = l.p.get("to").unwrap_or("?").to_string();
                if let Some((from_t, state)) = authority.insert((i, agent.clone()), (l.t, to)) {
                    band(&mut bands, x(from_t), x(l.t), y(i), &agent, &state);
                }
            }
            "package_sent" => {
                let target = l.p.get("target").unwrap_or_default();
                let hash = l.p.get("hash").unwrap_or_default();
                if let Some(&j) = lane.get(target) {
                    let (arrived, class) = match adopted.get(&(target.to_string(), hash.to_string())) {
                        Some(t) => (*t, "arrow"),
                        None => (l.t, "arrow undelivered"),
                    };
                    let _ = write!(
                        arrows,
                        r#"<line class="{class}" x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" marker-end="url(#head)"><title>{tip}</title></line>"#,
                        x(l.t),
                        y(i),
                        x(arrived),
                        y(j)
                    );
                }
            }
            _ => {
                let _ = write!(
                    marks,
                    r#"<circle class="event" cx="{:.1}" cy="{:.1}" r="1.5"><title>{tip}</title></circle>"#,
                    x(l.t),
                    y(i) + 20.0
                );
            }
        }
    }
    for ((i, agent), (from_t, state)) in authority {
        band(&mut bands, x(from_t), x(end), y(i), &agent, &state);
    }
    for ((i, _), (from_t, what)) in open_faults {
        fault_rect(&mut faults, i, from_t, end, &what);
    }
    let mut lanes = String::new();
    for (i, n) in nodes.iter().enumerate() {
        let _ = write!(
            lanes,
            r#"<g class="lane" data-node="{0}"><line x1="{1}" y1="{2:.1}" x2="{3:.1}" y2="{2:.1}"/><text x="10" y="{4:.1}">{0}</text></g>"#,
            esc(n),
            LEFT,
            y(i),
            width - 20.0,
            y(i) + 4.0
        );
    }
    let mut axis = String::new();
    let step = if end > 600.0 {
        60.0
    } else if end > 60.0 {
        10.0
    } else {
        1.0
    };
    let mut t = 0.0;
    while t <= end {
        let _ = write!(axis, r#"<text class="axis" x="{:.1}" y="{}">{t}s</text>"#, x(t), TOP - 30.0);
        t += step;
    }
    format!(
        r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>igor-sim: {title}</title>
<style>
body {{ font: 13px sans-serif; margin: 12px; }}
.lane line {{ stroke: #bbb; }}
.lane text, .axis {{ font-size: 12px; fill: #333; }}
.tick {{ fill: #1565c0; }}
.checkpoint {{ fill: #6a1b9a; }}
.event {{ fill: #90a4ae; }}
.fault {{ fill: #ff7043; fill-opacity: 0.18; stroke: #ff7043; stroke-opacity: 0.4; }}
.arrow {{ stroke: #00897b; stroke-width: 2; }}
.arrow.undelivered {{ stroke-dasharray: 4 3; }}
.band {{ fill-opacity: 0.35; }}
.violation line {{ stroke: #d50000; stroke-width: 3; }}
.violation text {{ fill: #d50000; font-weight: bold; }}
</style></head>
<body>
<h1>{title}</h1>
<p>Lanes are nodes; bands are authority states (green owner, amber handoff, grey retired, red recovery required); dots are ticks; squares are checkpoints; arrows are migrations; shaded spans are faults. Hover for details.</p>
<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}">
<defs><marker id="head" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#00897b"/></marker></defs>
{axis}
<g id="faults">{faults}</g>
<g id="bands">{bands}</g>
<g id="lanes">{lanes}</g>
<g id="marks">{marks}</g>
<g id="arrows">{arrows}</g>
{violation}
</svg>
</body></html>
"##,
        title = esc(title)
    )
}

fn band(out: &mut String, x1: f64, x2: f64, y: f64, agent: &str, state: &str) {
    let _ = write!(
        out,
        r#"<rect class="band" data-state="{state}" x="{x1:.1}" y="{:.1}" width="{:.1}" height="8" fill="{}"><title>{} {}</title></rect>"#,
        y - 4.0,
        (x2 - x1).max(1.0),
        state_color(state),
        esc(agent),
        esc(state)
    );
}

/// Open and close fault spans from a simulator line (`sim <kind> k=v ...`).
fn sim_action(
    l: &Line<'_>,
    lane: &BTreeMap<&str, usize>,
    open: &mut BTreeMap<(usize, String), (f64, String)>,
    out: &mut String,
    rect: &impl Fn(&mut String, usize, f64, f64, &str),
) {
    let kind = l.p.kind.as_str();
    let arg = |key: &str| l.p.get(key);
    let what = format!("{:.3}s {}", l.t, l.rest);
    let mut start = |n: Option<&str>, key: String| {
        if let Some(&i) = n.and_then(|n| lane.get(n)) {
            open.entry((i, key)).or_insert((l.t, what.clone()));
        }
    };
    match kind {
        "crash" => start(arg("node"), "crash".into()),
        "partition" => {
            let (a, b) = (arg("a"), arg("b"));
            start(a, format!("cut {}", b.unwrap_or_default()));
            start(b, format!("cut {}", a.unwrap_or_default()));
        }
        "partition_oneway" => start(arg("from"), format!("cut {}", arg("to").unwrap_or_default())),
        "hold" => start(arg("node"), "hold".into()),
        "pause" => {
            if let (Some(&i), Some(ms)) = (arg("node").and_then(|n| lane.get(n)), l.p.int("ms")) {
                rect(out, i, l.t, l.t + ms as f64 / 1000.0, &what);
            }
        }
        "buggify_fired" => {
            let node = arg("node").unwrap_or_default();
            if arg("fault") == Some("crash") {
                start(Some(node), "crash".into());
            } else if arg("fault") == Some("isolate") {
                let others: Vec<&str> = lane.keys().copied().filter(|o| *o != node).collect();
                for o in others {
                    start(Some(node), format!("cut {o}"));
                    start(Some(o), format!("cut {node}"));
                }
            }
        }
        _ => {}
    }
    let mut close = |n: Option<&str>, key: &str| {
        if let Some(&i) = n.and_then(|n| lane.get(n))
            && let Some((from, w)) = open.remove(&(i, key.to_string()))
        {
            rect(out, i, from, l.t, &w);
        }
    };
    match kind {
        "restart" => close(arg("node"), "crash"),
        "heal_all" => {
            let keys: Vec<(usize, String)> = open.keys().cloned().collect();
            for (i, key) in keys {
                if let Some((from, w)) = open.remove(&(i, key)) {
                    rect(out, i, from, l.t, &w);
                }
            }
        }
        "heal" => {
            let (a, b) = (arg("a"), arg("b"));
            close(a, &format!("cut {}", b.unwrap_or_default()));
            close(b, &format!("cut {}", a.unwrap_or_default()));
        }
        "heal_oneway" => close(arg("from"), &format!("cut {}", arg("to").unwrap_or_default())),
        "release" => close(arg("node"), "hold"),
        _ => {}
    }
}

/// Counts of the page's main elements, for tests and scripts.
pub fn count(page: &str, class: &str) -> usize {
    page.matches(&format!("class=\"{class}\"")).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Trace;

    /// The page reads the v3 dialect: fault spans from `sim` lines (a crash
    /// to its restart, a partition to its heal, an isolating BUGGIFY to the
    /// heal of everything), the verdict from `sim violation`, a migration
    /// arrow from `package_sent` to the matching `checkpoint_adopted`. A
    /// BUGGIFY disk fault cuts no link (the old reader drew it as an
    /// isolation: every fault but a crash was one).
    #[test]
    fn the_timeline_reads_v3_simulator_and_event_lines() {
        let mut t = Trace::new();
        t.note(
            "# options duration_s=5 step_ms=10 latency_ms=1..5 loss=0 nodes=a,b agents=counter timeline=2 liveness=off",
        );
        let lines = [
            "000001.000 sim crash node=a",
            "000002.000 sim restart node=a storage=intact",
            "000002.500 sim partition a=a b=b",
            "000003.000 sim heal a=a b=b",
            "000003.100 sim buggify_fired fault=disk_full node=b on=checkpoint_committed",
            "000003.200 sim buggify_fired fault=isolate node=b on=package_adopted",
            "000003.300 a package_sent agent=counter attempt=1 budget=5 expiry_ns=1 hash=2e4bdfbc051c target=b tick=5",
            "000003.400 b checkpoint_adopted agent=counter budget=5 epoch=2.0 from=a hash=2e4bdfbc051c prev_hash=000000000000 tick=5",
            "000003.500 a authority_changed agent=counter epoch=1.0 from=- reason=deployed to=ACTIVE_OWNER",
            "000004.000 sim heal_all",
            "000004.500 sim violation agent=counter invariant=EI-5 message=\"two nodes hold authority\" nodes=a,b",
        ];
        for l in lines {
            t.note(l);
        }
        let page = render(&t, "probe");
        // crash a; cut a-b both ways; isolate b: cut b-a and a-b again.
        assert_eq!(count(&page, "fault"), 1 + 2 + 2, "{page}");
        assert_eq!(count(&page, "arrow"), 1, "delivered migration arrow");
        assert_eq!(page.matches("class=\"violation\"").count(), 1);
        assert!(page.contains("data-state=\"ACTIVE_OWNER\""));
    }
}
