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

    const S: i64 = 1_000_000_000;

    #[test]
    fn defaults_are_the_spec_values() {
        // Spec §5: 60 s duration, renewal at half of it, 10 s grace.
        let cfg = LeaseConfig::default();
        assert_eq!((cfg.duration_ns, cfg.renew_before_ns, cfg.grace_ns), (60 * S as u64, 30 * S as u64, 10 * S as u64));
    }

    #[test]
    fn grant_starts_the_duration_now() {
        let cfg = LeaseConfig::default();
        assert_eq!(Lease::grant(&cfg, 0).expiry_unix_ns, 60 * S);
        assert_eq!(Lease::grant(&cfg, -5).expiry_unix_ns, 60 * S - 5);
        assert_eq!(Lease::grant(&cfg, 7 * S).expiry_unix_ns, 67 * S);
        // A duration beyond i64 saturates instead of wrapping into the past.
        let forever = LeaseConfig { duration_ns: u64::MAX, ..cfg };
        assert_eq!(Lease::grant(&forever, 1).expiry_unix_ns, i64::MAX);
        assert_eq!(Lease::grant(&forever, 1).status(&forever, 1_000 * S), LeaseStatus::Valid);
    }

    /// Every phase boundary is half-open: the phase changes exactly at the
    /// instant (renewal point, expiry, expiry + grace), not one ns later.
    #[test]
    fn status_at_every_boundary() {
        let cfg = LeaseConfig { duration_ns: 100, renew_before_ns: 40, grace_ns: 10 };
        let l = Lease::grant(&cfg, 1_000); // expiry 1100, renew at 1060, lapse at 1110
        let cases = [
            (i64::MIN, LeaseStatus::Valid),
            (1_000, LeaseStatus::Valid),
            (1_059, LeaseStatus::Valid),
            (1_060, LeaseStatus::RenewDue),
            (1_099, LeaseStatus::RenewDue),
            (1_100, LeaseStatus::InGrace),
            (1_109, LeaseStatus::InGrace),
            (1_110, LeaseStatus::Lapsed),
            (i64::MAX, LeaseStatus::Lapsed),
        ];
        for (now, want) in cases {
            assert_eq!(l.status(&cfg, now), want, "status at {now}");
        }
    }

    #[test]
    fn only_a_live_lease_allows_ticking() {
        // EI-1 is time-bounded: no ticks in grace or after lapse.
        assert!(LeaseStatus::Valid.allows_ticking());
        assert!(LeaseStatus::RenewDue.allows_ticking());
        assert!(!LeaseStatus::InGrace.allows_ticking());
        assert!(!LeaseStatus::Lapsed.allows_ticking());
    }

    /// `next_change` is the first instant strictly after `now` at which the
    /// status differs; once lapsed, it stays at the lapse instant (nothing
    /// changes any more, and a timer at a past instant fires at once).
    #[test]
    fn next_change_at_every_boundary() {
        let cfg = LeaseConfig { duration_ns: 100, renew_before_ns: 40, grace_ns: 10 };
        let l = Lease::grant(&cfg, 1_000);
        let cases = [
            (i64::MIN, 1_060),
            (1_059, 1_060),
            (1_060, 1_100),
            (1_099, 1_100),
            (1_100, 1_110),
            (1_109, 1_110),
            (1_110, 1_110),
            (5_000, 1_110),
        ];
        for (now, want) in cases {
            assert_eq!(l.next_change(&cfg, now), want, "next change after {now}");
            let (before, after) = (l.status(&cfg, now), l.status(&cfg, want));
            assert!(now >= 1_110 || before != after, "status must change at {want} (from {before:?} at {now})");
        }
    }

    #[test]
    fn renewal_window_wider_than_the_lease_is_due_at_once() {
        // renew_before beyond i64 saturates: renewal is due from the start.
        let cfg = LeaseConfig { duration_ns: 100, renew_before_ns: u64::MAX, grace_ns: 10 };
        let l = Lease::grant(&cfg, 0);
        assert_eq!(l.status(&cfg, 0), LeaseStatus::RenewDue);
        assert_eq!(l.next_change(&cfg, 0), 100);
    }
}
