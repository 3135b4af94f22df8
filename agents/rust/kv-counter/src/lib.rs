//! kv counter: its data lives in the agent's kv store, not in its state.
//!
//! Each tick reads `n` (u64 LE), writes `n + 1`, appends `journal/<n+1>`
//! and deletes the entry [`JOURNAL`] ticks older, so the store stays
//! bounded under the manifest's `quota_bytes`. The kv store travels with
//! the agent, sealed with its checkpoint (docs/sandbox.md, "KV"); the
//! state keeps only how many ticks wrote successfully, and each tick
//! checks that `n` equals it (a kv from another tick than the state traps).
//!
//! Capabilities: `kv`, `log`.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;
use igor_agent::{Agent, Ctx, KvError, Tick};
use serde::{Deserialize, Serialize};

/// Journal entries kept.
pub const JOURNAL: u64 = 8;

/// The kv counter's state.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct KvCounter {
    /// Ticks whose writes succeeded (equals kv `n`).
    pub writes: u64,
    /// Ticks refused a write, by reason.
    pub not_owner: u64,
    /// Writes refused for the quota.
    pub quota: u64,
}

fn key(n: u64) -> Vec<u8> {
    format!("journal/{n:010}").into_bytes()
}

fn read_n(cx: &mut Ctx<'_>) -> u64 {
    match cx.kv_get(b"n") {
        Ok(None) => 0,
        Ok(Some(v)) => match <[u8; 8]>::try_from(v.as_slice()) {
            Ok(b) => u64::from_le_bytes(b),
            Err(_) => panic!("kv-counter: kv `n` holds {} bytes, not 8", v.len()),
        },
        Err(e) => panic!("kv-counter: {e}"),
    }
}

impl Agent for KvCounter {
    fn init() -> Self {
        KvCounter::default()
    }

    fn tick(&mut self, cx: &mut Ctx<'_>) -> Tick {
        let n = read_n(cx);
        assert_eq!(n, self.writes, "kv-counter: kv n = {n}, state says {} writes", self.writes);
        let next = n + 1;
        let stamp = next.to_le_bytes();
        let result = cx.kv_put(&key(next), &stamp).and_then(|()| cx.kv_put(b"n", &stamp));
        match result {
            Ok(()) => self.writes = next,
            Err(KvError::NotOwner) => {
                self.not_owner += 1;
                return Tick::Idle;
            }
            Err(KvError::QuotaExceeded) => {
                // Undo the journal entry so `n` and the journal agree.
                let _ = cx.kv_delete(&key(next));
                self.quota += 1;
                return Tick::Idle;
            }
            Err(e) => panic!("kv-counter: {e}"),
        }
        if next > JOURNAL
            && let Err(e) = cx.kv_delete(&key(next - JOURNAL))
        {
            panic!("kv-counter: {e}");
        }
        cx.log(&format!("kv-counter n={next}"));
        Tick::Idle
    }
}

igor_agent::export!(KvCounter);

#[cfg(test)]
mod tests {
    use super::*;
    use igor_agent::mock::{Harness, MockHost};

    #[test]
    fn counts_in_kv_and_keeps_a_bounded_journal() {
        let mut h = Harness::<KvCounter>::new(MockHost::new());
        h.ticks(20);
        assert_eq!(h.agent().writes, 20);
        let kv = h.host().kv();
        assert_eq!(kv.get(&b"n"[..]).map(Vec::as_slice), Some(&20u64.to_le_bytes()[..]));
        // `n` plus the last JOURNAL entries.
        assert_eq!(kv.len() as u64, 1 + JOURNAL);
        assert!(kv.contains_key(&key(20)) && !kv.contains_key(&key(12)));
    }

    #[test]
    fn quota_refusal_leaves_n_and_the_journal_consistent() {
        // Room for `n` (9 B) and about two journal entries (27 B each).
        let mut h = Harness::<KvCounter>::new(MockHost::new().with_kv_quota(70));
        h.ticks(4);
        let (writes, quota) = (h.agent().writes, h.agent().quota);
        assert!(writes >= 1 && quota >= 1, "writes {writes} quota {quota}");
        assert_eq!(h.host().kv().len() as u64, 1 + writes.min(JOURNAL));
        h.tick(); // and the next tick still agrees with kv
    }

    #[test]
    fn survives_migration_with_its_kv() {
        let mut a = Harness::<KvCounter>::new(MockHost::new());
        a.ticks(3);
        let mut b = a.migrate(MockHost::new()).unwrap();
        b.ticks(3);
        assert_eq!(b.agent().writes, 6);
    }
}
