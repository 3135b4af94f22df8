//! Execution receipts (issue 3 §5): a node's signed statement that it ran
//! ticks `first_tick..=last_tick` of an agent in one authority epoch, what
//! that cost and what budget was left, under which meter. Agents read them
//! through `wallet_receipt*`; anyone can check one against a replay of the
//! ticks it covers. Pure data: no disk, no clock.
//!
//! Encoding (little-endian): `"IGRC"`, version `1`, agent id (u8 length +
//! bytes), node id (u8 length + bytes), epoch major `u64`, generation `u64`,
//! first tick `u64`, last tick `u64`, cost `i64`, budget after `i64`, meter
//! id (32), node public key (32), signature (64) over everything before it.

use crate::identity::{Keypair, PublicKey, Signature};
use crate::units::{AgentId, Epoch, Microcents, NodeId, TickNumber};

const MAGIC: &[u8; 4] = b"IGRC";
const VERSION: u8 = 1;

/// What a receipt states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptBody {
    pub agent: AgentId,
    pub node: NodeId,
    pub epoch: Epoch,
    pub first_tick: TickNumber,
    pub last_tick: TickNumber,
    /// Execution charge over the range (payments are not included).
    pub cost: Microcents,
    pub budget_after: Microcents,
    /// `meter::meter_id` of the node that billed these ticks.
    pub meter_id: [u8; 32],
}

/// A signed receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub body: ReceiptBody,
    pub node_key: PublicKey,
    pub signature: Signature,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("receipt: {0}")]
    Malformed(String),
    #[error("receipt for agent {agent} ticks {first}..={last}: bad signature by node {node}")]
    BadSignature { agent: AgentId, node: NodeId, first: TickNumber, last: TickNumber },
}

impl ReceiptBody {
    fn encode_unsigned(&self, key: &PublicKey) -> Vec<u8> {
        let mut out = Vec::with_capacity(200);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        for id in [self.agent.as_str(), self.node.as_str()] {
            // Ids are at most MAX_ID_LEN (64) bytes: the length fits a u8.
            out.push(id.len() as u8);
            out.extend_from_slice(id.as_bytes());
        }
        for v in [self.epoch.major, self.epoch.generation, self.first_tick.0, self.last_tick.0] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.cost.0.to_le_bytes());
        out.extend_from_slice(&self.budget_after.0.to_le_bytes());
        out.extend_from_slice(&self.meter_id);
        out.extend_from_slice(key.as_bytes());
        out
    }

    pub fn sign(self, node_key: &Keypair) -> Receipt {
        let public = node_key.public();
        let signature = node_key.sign(&self.encode_unsigned(&public));
        Receipt { body: self, node_key: public, signature }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ReceiptError> {
        let s = self
            .bytes
            .get(self.at..self.at + n)
            .ok_or_else(|| ReceiptError::Malformed(format!("truncated {what} at byte {}", self.at)))?;
        self.at += n;
        Ok(s)
    }
    fn u64(&mut self, what: &str) -> Result<u64, ReceiptError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("took 8 bytes")))
    }
    fn id(&mut self, what: &str) -> Result<String, ReceiptError> {
        let len = self.take(1, what)?[0] as usize;
        let s = self.take(len, what)?;
        String::from_utf8(s.to_vec()).map_err(|_| ReceiptError::Malformed(format!("{what} is not UTF-8")))
    }
}

impl Receipt {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.body.encode_unsigned(&self.node_key);
        out.extend_from_slice(&self.signature.0);
        out
    }

    /// Decode without checking the signature (see [`Receipt::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Receipt, ReceiptError> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(4, "magic")? != MAGIC || r.take(1, "version")?[0] != VERSION {
            return Err(ReceiptError::Malformed("bad magic or version".into()));
        }
        let bad = |e: crate::units::InvalidId| ReceiptError::Malformed(e.to_string());
        let agent = AgentId::new(r.id("agent id")?).map_err(bad)?;
        let node = NodeId::new(r.id("node id")?).map_err(bad)?;
        let epoch = Epoch::new(r.u64("epoch major")?, r.u64("epoch generation")?);
        let first_tick = TickNumber(r.u64("first tick")?);
        let last_tick = TickNumber(r.u64("last tick")?);
        let cost = Microcents(r.u64("cost")? as i64);
        let budget_after = Microcents(r.u64("budget after")? as i64);
        let meter_id: [u8; 32] = r.take(32, "meter id")?.try_into().expect("took 32 bytes");
        let key: [u8; 32] = r.take(32, "node key")?.try_into().expect("took 32 bytes");
        let node_key = PublicKey::from_bytes(key).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
        let signature = Signature(r.take(64, "signature")?.try_into().expect("took 64 bytes"));
        if r.at != bytes.len() {
            return Err(ReceiptError::Malformed(format!("{} trailing bytes", bytes.len() - r.at)));
        }
        if cost.is_negative() || budget_after.is_negative() || last_tick < first_tick {
            return Err(ReceiptError::Malformed("negative amount or empty tick range".into()));
        }
        let body = ReceiptBody { agent, node, epoch, first_tick, last_tick, cost, budget_after, meter_id };
        Ok(Receipt { body, node_key, signature })
    }

    pub fn verify(&self) -> Result<(), ReceiptError> {
        if self.node_key.verify(&self.body.encode_unsigned(&self.node_key), &self.signature) {
            Ok(())
        } else {
            Err(ReceiptError::BadSignature {
                agent: self.body.agent.clone(),
                node: self.body.node.clone(),
                first: self.body.first_tick,
                last: self.body.last_tick,
            })
        }
    }

    /// Decode and verify.
    pub fn parse(bytes: &[u8]) -> Result<Receipt, ReceiptError> {
        let r = Receipt::decode(bytes)?;
        r.verify()?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::mem::SeededEntropy;

    fn receipt() -> Receipt {
        ReceiptBody {
            agent: AgentId::new("counter").unwrap(),
            node: NodeId::new("node-a").unwrap(),
            epoch: Epoch::new(2, 1),
            first_tick: TickNumber(1),
            last_tick: TickNumber(5),
            cost: Microcents(42),
            budget_after: Microcents(958),
            meter_id: crate::meter::meter_id(1 << 20),
        }
        .sign(&Keypair::generate(&mut SeededEntropy::derived(1, "node")))
    }

    #[test]
    fn roundtrip_and_verify() {
        let r = receipt();
        let bytes = r.encode();
        assert_eq!(Receipt::parse(&bytes).unwrap(), r);
    }

    #[test]
    fn any_flipped_byte_is_rejected() {
        let bytes = receipt().encode();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(Receipt::parse(&b).is_err(), "flip at byte {i} accepted");
        }
        assert!(Receipt::parse(&bytes[..bytes.len() - 1]).is_err());
    }
}
