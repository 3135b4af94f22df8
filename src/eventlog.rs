//! The per-tick event log (spec §2): every hostcall result the guest saw, in
//! call order, as `{tick, entries: [{id, payload}]}`, with one canonical
//! byte encoding. It is the replay input: a replayed tick is handed these
//! results instead of touching the world. Pure data: no wasm, no disk.
//!
//! Encoding (little-endian): `"IGEL"`, version `1`, tick `u64`, entry count
//! `u32`, then per entry: id `u8`, payload length `u32`, payload. Decoding
//! accepts exactly that and nothing else (no trailing bytes), so one log has
//! one encoding and its hash identifies it.

use crate::units::TickNumber;

const MAGIC: &[u8; 4] = b"IGEL";
const VERSION: u8 = 1;
const HEADER: usize = 4 + 1 + 8 + 4;

/// One observed hostcall result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Event-log id of the hostcall (spec §2 table; see `membrane::Hostcall`).
    pub id: u8,
    pub payload: Vec<u8>,
}

/// One tick's log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventLog {
    pub tick: TickNumber,
    pub entries: Vec<Entry>,
}

/// Bytes that are not an event log; the offset says where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventLogError {
    #[error("event log: bad magic or version")]
    BadHeader,
    #[error("event log: truncated at byte {at} (needed {needed} more)")]
    Truncated { at: usize, needed: usize },
    #[error("event log: {extra} trailing bytes after {count} entries")]
    Trailing { count: u32, extra: usize },
}

impl EventLog {
    pub fn new(tick: TickNumber) -> Self {
        EventLog { tick, entries: Vec::new() }
    }

    pub fn push(&mut self, id: u8, payload: Vec<u8>) {
        self.entries.push(Entry { id, payload });
    }

    pub fn encoded_len(&self) -> usize {
        HEADER + self.entries.iter().map(|e| 5 + e.payload.len()).sum::<usize>()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.tick.0.to_le_bytes());
        // Entry count and payload sizes are bounded by the tick's fuel
        // (every hostcall and every byte costs fuel), far below u32::MAX.
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            out.push(e.id);
            out.extend_from_slice(&(e.payload.len() as u32).to_le_bytes());
            out.extend_from_slice(&e.payload);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<EventLog, EventLogError> {
        if bytes.len() < HEADER || &bytes[..4] != MAGIC || bytes[4] != VERSION {
            return Err(EventLogError::BadHeader);
        }
        let tick = TickNumber(u64::from_le_bytes(bytes[5..13].try_into().expect("header length checked")));
        let count = u32::from_le_bytes(bytes[13..17].try_into().expect("header length checked"));
        let mut at = HEADER;
        // No pre-allocation from an untrusted count: entries are pushed as read.
        let mut entries = Vec::new();
        for _ in 0..count {
            let need = |at: usize, n: usize| {
                if bytes.len() - at < n {
                    Err(EventLogError::Truncated { at, needed: n - (bytes.len() - at) })
                } else {
                    Ok(())
                }
            };
            need(at, 5)?;
            let id = bytes[at];
            let len = u32::from_le_bytes(bytes[at + 1..at + 5].try_into().expect("length checked")) as usize;
            at += 5;
            need(at, len)?;
            entries.push(Entry { id, payload: bytes[at..at + len].to_vec() });
            at += len;
        }
        if at != bytes.len() {
            return Err(EventLogError::Trailing { count, extra: bytes.len() - at });
        }
        Ok(EventLog { tick, entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn roundtrip_is_canonical(tick in any::<u64>(), entries in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..8)) {
            let mut log = EventLog::new(TickNumber(tick));
            for (id, p) in entries { log.push(id, p); }
            let bytes = log.encode();
            prop_assert_eq!(bytes.len(), log.encoded_len());
            prop_assert_eq!(EventLog::decode(&bytes).unwrap(), log);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = EventLog::decode(&bytes);
        }
    }

    #[test]
    fn truncation_and_trailing_bytes_are_errors() {
        let mut log = EventLog::new(TickNumber(3));
        log.push(1, 7i64.to_le_bytes().to_vec());
        let bytes = log.encode();
        assert!(matches!(EventLog::decode(&bytes[..bytes.len() - 1]), Err(EventLogError::Truncated { .. })));
        let mut more = bytes.clone();
        more.push(0);
        assert!(matches!(EventLog::decode(&more), Err(EventLogError::Trailing { .. })));
        assert_eq!(EventLog::decode(b"nope"), Err(EventLogError::BadHeader));
    }
}
