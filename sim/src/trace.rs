//! The canonical trace: one line per event, simulated time only (no wall
//! clock, no ports, no addresses), so the same seed gives the same bytes on
//! every machine. Its SHA-256 is the run's fingerprint for determinism
//! checks.
//!
//! This module is the ONE place that formats trace lines (dialect v3,
//! `docs/trace-format.md`): every line is `<time> <host> <kind> key=value
//! ...` with keys sorted, and every value is written by one function per
//! value type below ([`int`], [`flag`], [`word`], [`text`], [`hash`],
//! [`epoch`], [`list`], [`opt`], ...). Node events ([`event`]) and
//! simulator actions ([`action`]), in `trace/events.rs`, and the
//! simulator's own lines ([`Line`]) all go through them, and [`parse`]
//! reads a line back for every tool that reads traces (the adversary
//! audit, the HTML timeline, tests).

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Version of the trace format; bump when the header or line shape changes.
pub const TRACE_FORMAT: u32 = 3;

/// Git revision of the simulator build: `IGOR_GIT_REV` at build time, else
/// `git rev-parse` in the source tree at run time, else "unknown". Only the
/// `# build` header line carries it, so snapshots can mask that one line.
pub fn git_revision() -> &'static str {
    static REV: OnceLock<String> = OnceLock::new();
    REV.get_or_init(|| {
        if let Some(rev) = option_env!("IGOR_GIT_REV") {
            return rev.to_string();
        }
        #[allow(clippy::disallowed_methods)] // build metadata for the header, never part of a decision
        let out = std::process::Command::new("git")
            .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short=12", "HEAD"])
            .stderr(std::process::Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            _ => "unknown".to_string(),
        }
    })
}

/// The `# build` header line: crate version, git revision, wasmtime version.
pub fn build_line() -> String {
    format!(
        "# build igor-sim {} git {} wasmtime {}",
        env!("CARGO_PKG_VERSION"),
        git_revision(),
        igor::meter::WASMTIME_VERSION
    )
}

/// `SSSSSS.mmm` seconds of simulated time, fixed width so traces align.
pub fn fmt_time(ns: u64) -> String {
    format!("{:06}.{:03}", ns / 1_000_000_000, (ns / 1_000_000) % 1000)
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    lines: Vec<String>,
}

impl Trace {
    pub fn new() -> Self {
        Self::default()
    }

    /// A line without a node (header, simulator actions, verdict).
    pub fn note(&mut self, text: impl Into<String>) {
        self.lines.push(text.into());
    }

    /// A line of host `host` (a node's name, or [`SIM`]): `text` is the
    /// `<kind> key=value ...` part, from [`event`], [`action`] or [`Line`].
    pub fn event(&mut self, at_ns: u64, host: &str, text: &str) {
        self.lines.push(format!("{} {host} {text}", fmt_time(at_ns)));
    }

    /// A line of the simulator itself (host [`SIM`]).
    pub fn sim(&mut self, at_ns: u64, line: Line) {
        self.event(at_ns, SIM, &line.to_string());
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The last `n` lines (context for a violation report).
    pub fn tail(&self, n: usize) -> &[String] {
        &self.lines[self.lines.len().saturating_sub(n)..]
    }

    pub fn text(&self) -> String {
        let mut s = self.lines.join("\n");
        s.push('\n');
        s
    }

    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.text().as_bytes()))
    }

    /// First line where two traces differ: (1-based line, left, right).
    pub fn first_difference(&self, other: &Trace) -> Option<(usize, String, String)> {
        let n = self.lines.len().max(other.lines.len());
        (0..n).find_map(|i| {
            let (a, b) = (self.lines.get(i), other.lines.get(i));
            (a != b).then(|| (i + 1, a.cloned().unwrap_or_default(), b.cloned().unwrap_or_default()))
        })
    }
}

/// The host name of the simulator's own lines (actions, verify, verdict).
/// Scenario validation keeps nodes from being called this.
pub const SIM: &str = crate::scenario::RESERVED_NODE;

/// The value functions and [`Line`] are the library's (one dialect for
/// node events and simulator lines): `igor::node::event::text`.
pub use igor::node::event::text::{
    HASH_HEX, Line, NONE, epoch, flag, float, hash, hex_digest, int, list, opt, text, word,
};

/// One trace line read back: time (ns, ms precision), host, kind, and the
/// fields with quoted values unquoted (`None`: the value was [`NONE`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub at_ns: u64,
    pub host: String,
    pub kind: String,
    pub fields: BTreeMap<String, Option<String>>,
}

impl Parsed {
    /// The value of `key`, if present and not [`NONE`].
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key)?.as_deref()
    }

    /// The value of `key` as an integer.
    pub fn int(&self, key: &str) -> Option<i64> {
        self.get(key)?.parse().ok()
    }
}

/// Read a trace line (`None` for header lines and anything else that is
/// not `<time> <host> <kind> ...`). A quoted value is unescaped; a bare `-`
/// is `None` (a quoted `"-"` is the text `-`).
pub fn parse(line: &str) -> Option<Parsed> {
    let (t, rest) = line.split_once(' ')?;
    let (s, ms) = t.split_once('.')?;
    let at_ns = s.parse::<u64>().ok()?.checked_mul(1_000_000_000)?.checked_add(ms.parse::<u64>().ok()? * 1_000_000)?;
    let (host, rest) = rest.split_once(' ')?;
    let (kind, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let mut fields = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let (v, after) = unquote(quoted)?;
            (Some(v), after)
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            let v = &after[..end];
            ((v != NONE).then(|| v.to_string()), &after[end..])
        };
        fields.insert(key.to_string(), value);
        rest = after.strip_prefix(' ').unwrap_or(after);
    }
    Some(Parsed { at_ns, host: host.to_string(), kind: kind.to_string(), fields })
}

/// The inverse of [`text`]'s escaping: `s` starts after the opening quote;
/// returns the value and what follows the closing quote.
fn unquote(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = (0..4).filter_map(|_| chars.next().map(|(_, c)| c)).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

mod events;
#[cfg(test)]
mod tests;

pub use events::{action, action_line, boundary, buggify_fault, event};
