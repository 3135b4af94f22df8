//! The canonical trace: one line per event, `<time> <node> <event>`, with
//! simulated time only (no wall clock, no ports, no addresses), so the same
//! seed gives the same bytes on every machine. Its SHA-256 is the run's
//! fingerprint for determinism checks.

use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// Version of the trace format; bump when the header or line shape changes.
pub const TRACE_FORMAT: u32 = 2;

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

    pub fn event(&mut self, at_ns: u64, node: &str, text: &str) {
        self.lines.push(format!("{} {node} {text}", fmt_time(at_ns)));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_fixed_width_and_trace_diff_finds_first_line() {
        assert_eq!(fmt_time(12_345_678_901), "000012.345");
        let mut a = Trace::new();
        a.event(0, "a", "x");
        a.event(1_000_000, "a", "y");
        let mut b = a.clone();
        assert_eq!(a.first_difference(&b), None);
        b.note("extra");
        assert_eq!(a.first_difference(&b), Some((3, String::new(), "extra".into())));
        assert_ne!(a.hash(), b.hash());
    }
}
