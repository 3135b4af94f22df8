//! Heartbeat: counts its own ticks and must never lose or repeat one.
//!
//! The count lives twice: in the agent's state (`beats`) and in its kv
//! store (`beats`, u64 LE). Both travel with the agent (the checkpoint
//! carries the state, the sealed kv snapshot carries the kv, EI-1/RE-3),
//! so at the start of every tick they must agree; a package that paired a
//! state with another tick's kv, or a resume from a stale copy of only one
//! of them, makes the agent trap, and the trap shows in the run's verdict.
//! The count also equals the committed tick number (each completed tick
//! adds one): tests read it back from the checkpoint (`tests/e2e_agents.rs`).
//!
//! Capabilities: `clock`, `log`, `kv`.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use igor_agent::{Agent, Ctx, KvError, Tick};
use serde::{Deserialize, Serialize};

/// The kv key that mirrors `beats`.
pub const KEY: &[u8] = b"beats";

/// The heartbeat's state.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// Completed ticks.
    pub beats: u64,
    /// Node clock at the first beat, unix ns.
    pub first_ns: i64,
    /// Node clock at the last beat, unix ns.
    pub last_ns: i64,
    /// Ticks refused a kv write (not the active owner): none expected.
    pub refused: u64,
}

impl Agent for Heartbeat {
    fn init() -> Self {
        Heartbeat::default()
    }

    fn tick(&mut self, cx: &mut Ctx<'_>) -> Tick {
        let mirrored = match cx.kv_get(KEY) {
            Ok(Some(v)) if v.len() == 8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&v);
                u64::from_le_bytes(b)
            }
            Ok(None) => 0,
            Ok(Some(v)) => panic!("heartbeat: kv `beats` holds {} bytes, not 8", v.len()),
            Err(e) => panic!("heartbeat: {e}"),
        };
        // Continuity: state and kv come from the same tick, or the node
        // handed us a mismatched pair.
        assert_eq!(mirrored, self.beats, "heartbeat: kv says {mirrored} beats, state says {}", self.beats);
        match cx.kv_put(KEY, &(self.beats + 1).to_le_bytes()) {
            Ok(()) => {}
            Err(KvError::NotOwner) => {
                self.refused += 1;
                return Tick::Idle;
            }
            Err(e) => panic!("heartbeat: {e}"),
        }
        self.beats += 1;
        let now = cx.now_ns();
        if self.beats == 1 {
            self.first_ns = now;
        }
        self.last_ns = now;
        cx.log(&format!("heartbeat {}", self.beats));
        Tick::Idle
    }
}

igor_agent::export!(Heartbeat);

#[cfg(test)]
mod tests {
    use super::*;
    use igor_agent::mock::{Harness, MockHost};

    #[test]
    fn counts_ticks_and_mirrors_them_in_kv() {
        let mut h = Harness::<Heartbeat>::new(MockHost::new().with_clock(100, 10));
        h.ticks(3);
        assert_eq!(h.agent().beats, 3);
        assert_eq!(h.agent().first_ns, 100);
        assert_eq!(h.host().kv().get(KEY).map(Vec::as_slice), Some(&3u64.to_le_bytes()[..]));
        assert_eq!(h.host().logs(), ["heartbeat 1", "heartbeat 2", "heartbeat 3"]);
    }

    #[test]
    fn migrates_a_b_c_with_a_continuous_count() {
        let mut a = Harness::<Heartbeat>::new(MockHost::new());
        a.ticks(2);
        let mut b = a.migrate(MockHost::new()).unwrap();
        b.ticks(2);
        let mut c = b.migrate(MockHost::new()).unwrap();
        c.tick();
        assert_eq!(c.agent().beats, 5);
    }

    #[test]
    #[should_panic(expected = "kv says 0 beats, state says 2")]
    fn a_state_without_its_kv_traps() {
        let mut a = Harness::<Heartbeat>::new(MockHost::new());
        a.ticks(2);
        let saved = a.checkpoint().unwrap();
        // Resume the state on a host whose kv was lost: a mismatched pair.
        let mut b = Harness::<Heartbeat>::new(MockHost::new());
        b.resume(&saved).unwrap();
        b.tick();
    }

    #[test]
    fn not_the_owner_does_not_count() {
        let mut h = Harness::<Heartbeat>::new(MockHost::new().not_owner());
        h.tick();
        assert_eq!((h.agent().beats, h.agent().refused), (0, 1));
    }
}
