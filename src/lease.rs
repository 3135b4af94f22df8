//! Leases (spec §5): how long an owner's authority lasts without renewal.
//! A lease is granted with a duration, renewed from its renewal point on
//! (generation + 1 of the epoch, recorded in the next checkpoint), and once
//! it is past expiry plus grace the agent is `RECOVERY_REQUIRED`, never
//! recovered by the node itself. Pure: the time comes in as an argument.

use serde::{Deserialize, Serialize};

/// Lease timing, from the node configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseConfig {
    /// How long a grant or renewal lasts (spec: 60 s).
    pub duration_ns: u64,
    /// How long before expiry renewal becomes due (spec: half the duration).
    pub renew_before_ns: u64,
    /// After expiry, how long a late renewal is still accepted before the
    /// agent falls to RECOVERY_REQUIRED (spec: 10 s). No ticks in between.
    pub grace_ns: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig { duration_ns: 60_000_000_000, renew_before_ns: 30_000_000_000, grace_ns: 10_000_000_000 }
    }
}

/// Where a lease stands at a given wall-clock instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseStatus {
    /// Valid and not yet due for renewal.
    Valid,
    /// Valid, renewal is due (past the renewal point).
    RenewDue,
    /// Expired but within grace: no ticks, renewal still possible.
    InGrace,
    /// Expired past grace: RECOVERY_REQUIRED.
    Lapsed,
}

impl LeaseStatus {
    /// Whether an owner under this lease may tick (EI-1 is time-bounded).
    pub fn allows_ticking(self) -> bool {
        matches!(self, LeaseStatus::Valid | LeaseStatus::RenewDue)
    }
}

/// A lease: its expiry in unix ns (the value stored in checkpoints).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub expiry_unix_ns: i64,
}

fn add_ns(t: i64, ns: u64) -> i64 {
    t.saturating_add(i64::try_from(ns).unwrap_or(i64::MAX))
}

impl Lease {
    /// A fresh grant (or renewal) starting at `now_unix_ns`.
    pub fn grant(cfg: &LeaseConfig, now_unix_ns: i64) -> Lease {
        Lease { expiry_unix_ns: add_ns(now_unix_ns, cfg.duration_ns) }
    }

    pub fn status(&self, cfg: &LeaseConfig, now_unix_ns: i64) -> LeaseStatus {
        let renew_at = self.expiry_unix_ns.saturating_sub(i64::try_from(cfg.renew_before_ns).unwrap_or(i64::MAX));
        if now_unix_ns < renew_at {
            LeaseStatus::Valid
        } else if now_unix_ns < self.expiry_unix_ns {
            LeaseStatus::RenewDue
        } else if now_unix_ns < add_ns(self.expiry_unix_ns, cfg.grace_ns) {
            LeaseStatus::InGrace
        } else {
            LeaseStatus::Lapsed
        }
    }

    /// The next instant at which [`Lease::status`] changes (for timers).
    pub fn next_change(&self, cfg: &LeaseConfig, now_unix_ns: i64) -> i64 {
        let renew_at = self.expiry_unix_ns.saturating_sub(i64::try_from(cfg.renew_before_ns).unwrap_or(i64::MAX));
        let lapse_at = add_ns(self.expiry_unix_ns, cfg.grace_ns);
        [renew_at, self.expiry_unix_ns, lapse_at].into_iter().find(|t| *t > now_unix_ns).unwrap_or(lapse_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_walks_through_its_phases() {
        let cfg = LeaseConfig::default();
        let l = Lease::grant(&cfg, 1_000);
        let s = 1_000_000_000i64;
        assert_eq!(l.status(&cfg, 1_000), LeaseStatus::Valid);
        assert_eq!(l.status(&cfg, 1_000 + 30 * s), LeaseStatus::RenewDue);
        assert_eq!(l.status(&cfg, 1_000 + 60 * s), LeaseStatus::InGrace);
        assert!(!LeaseStatus::InGrace.allows_ticking());
        assert_eq!(l.status(&cfg, 1_000 + 70 * s), LeaseStatus::Lapsed);
        assert_eq!(l.next_change(&cfg, 1_000), 1_000 + 30 * s);
        assert_eq!(l.next_change(&cfg, 1_000 + 61 * s), 1_000 + 70 * s);
    }
}
