//! The bytes nodes exchange (spec §6, protocol `/igor/migrate/1.0.0`): one
//! [`Envelope`] per request or reply, JSON, byte fields in standard base64,
//! the spec's field names (`AgentTransfer`, `AgentPackage`, `AgentStarted`)
//! plus the head announcements the authority protocol needs. Every envelope
//! carries a [`Header`] naming issuer, audience, agent, epoch, checkpoint
//! head, nonce and expiry, so a stale or replayed claim can be recognised.
//! Decoding never panics: oversized or malformed input is a [`WireError`].
//! Pure data: no I/O.

use crate::checkpoint::{HEADER_V4, Hash32, MAX_STATE_BYTES};
use crate::units::{AgentId, Epoch, NodeId, TickNumber};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Protocol name carried in every envelope.
pub const PROTOCOL: &str = "/igor/migrate/1.0.0";

/// Largest wasm module accepted in a package. Agents are small, long-lived
/// programs; 16 MiB is well above any agent we build and bounds compile time.
pub const MAX_WASM_BYTES: usize = 16 * 1024 * 1024;
/// Largest manifest: a JSON document of capability options.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// Largest checkpoint: a v4 header plus the largest state (64 MiB memory cap).
pub const MAX_CHECKPOINT_BYTES: usize = HEADER_V4 + MAX_STATE_BYTES;
/// Largest sealed kv snapshot (the kv quota is far below this).
pub const MAX_KV_BYTES: usize = 16 * 1024 * 1024;
/// Largest per-tick event log in replay data (log_emit is capped at 1 MiB
/// per call; a tick that logs more is not worth replaying on transfer).
pub const MAX_EVENT_LOG_BYTES: usize = 4 * 1024 * 1024;
/// Receipts travelling with an agent: count and size of each.
pub const MAX_RECEIPTS: usize = 1024;
pub const MAX_RECEIPT_BYTES: usize = 4 * 1024;
/// Largest error text in a reply.
pub const MAX_ERROR_BYTES: usize = 1024;
/// Largest encoded envelope: base64 (4/3) of the largest package (wasm,
/// manifest, checkpoint, previous checkpoint for replay, kv twice, event
/// log, receipts) plus 64 KiB of JSON overhead. Checked *before* parsing.
pub const MAX_MESSAGE_BYTES: usize = (MAX_WASM_BYTES
    + MAX_MANIFEST_BYTES
    + 2 * MAX_CHECKPOINT_BYTES
    + 2 * MAX_KV_BYTES
    + MAX_EVENT_LOG_BYTES
    + MAX_RECEIPTS * MAX_RECEIPT_BYTES)
    / 3
    * 4
    + 64 * 1024;

/// Why bytes are not a valid envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message too large: {len} bytes (limit {limit})")]
    TooLarge { len: usize, limit: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("wrong protocol {found:?} (expected {PROTOCOL})")]
    WrongProtocol { found: String },
    #[error("field {field} too large: {len} (limit {limit})")]
    FieldTooLarge { field: &'static str, len: usize, limit: usize },
    #[error("field {field}: {reason}")]
    BadField { field: &'static str, reason: String },
}

/// Base64 (standard) byte fields, shared by every JSON message we speak.
pub(crate) mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom)
    }

    pub mod opt {
        use super::*;
        pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
            match bytes {
                Some(b) => super::serialize(b, s),
                None => s.serialize_none(),
            }
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
            let s = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
            s.map(|s| STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom)).transpose()
        }
    }

    pub mod list {
        use super::*;
        use serde::Serialize;
        pub fn serialize<S: Serializer>(v: &Option<Vec<Vec<u8>>>, s: S) -> Result<S::Ok, S::Error> {
            v.as_ref().map(|v| v.iter().map(|b| STANDARD.encode(b)).collect::<Vec<_>>()).serialize(s)
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Vec<u8>>>, D::Error> {
            let v = <Option<Vec<String>>>::deserialize(d)?;
            v.map(|v| v.iter().map(|s| STANDARD.decode(s).map_err(serde::de::Error::custom)).collect()).transpose()
        }
    }
}

mod hash_hex {
    use crate::checkpoint::Hash32;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(h: &Hash32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&h.to_hex())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash32, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Hash32::from_hex(&s).ok_or_else(|| serde::de::Error::custom("not a 32-byte hex digest"))
    }
}

/// What every message says about who sends it, to whom, and about which
/// agent under which epoch and head. Nonce and expiry make replays of old
/// genuine messages recognisable (NOTES: authority claims need issuer,
/// audience, agent, epoch, nonce, expiry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    #[serde(rename = "Issuer")]
    pub issuer: NodeId,
    #[serde(rename = "Audience")]
    pub audience: NodeId,
    #[serde(rename = "AgentID")]
    pub agent: AgentId,
    #[serde(rename = "Epoch")]
    pub epoch: Epoch,
    /// Tick of the issuer's newest checkpoint of the agent (0 = none).
    #[serde(rename = "HeadTick")]
    pub head_tick: TickNumber,
    /// Hash of that checkpoint (zeros = none).
    #[serde(rename = "HeadHash", with = "hash_hex")]
    pub head_hash: Hash32,
    #[serde(rename = "Nonce")]
    pub nonce: u64,
    /// Unix ns at which the issuer wrote the message (its clock). A node
    /// refuses a package issued before it (re)started: a node that lost its
    /// disk knows nothing, so a package it may have accepted before must not
    /// be accepted again (spec §5, wiped nodes).
    #[serde(rename = "Issued")]
    pub issued_unix_ns: i64,
    /// Unix ns after which the receiver must not act on the message.
    #[serde(rename = "Expiry")]
    pub expiry_unix_ns: i64,
}

/// The agent and everything it needs to run elsewhere (spec §6).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPackage {
    #[serde(rename = "AgentID")]
    pub agent_id: AgentId,
    #[serde(rename = "WASMBinary", with = "b64")]
    pub wasm_binary: Vec<u8>,
    #[serde(rename = "WASMHash", with = "b64")]
    pub wasm_hash: Vec<u8>,
    /// The encoded handoff checkpoint (v4).
    #[serde(rename = "Checkpoint", with = "b64")]
    pub checkpoint: Vec<u8>,
    #[serde(rename = "ManifestData", with = "b64")]
    pub manifest_data: Vec<u8>,
    /// Microcents; must equal the checkpoint's budget (money in flight).
    #[serde(rename = "Budget")]
    pub budget: i64,
    #[serde(rename = "PricePerSecond")]
    pub price_per_second: i64,
    #[serde(rename = "ReplayData", default, skip_serializing_if = "Option::is_none")]
    pub replay_data: Option<ReplayData>,
    /// The agent's Ed25519 secret seed (32 bytes): the target signs the
    /// next checkpoints with the same identity. Confidential in transit:
    /// the transport (noise) encrypts it.
    #[serde(rename = "AgentIdentity", default, skip_serializing_if = "Option::is_none", with = "b64::opt")]
    pub agent_identity: Option<Vec<u8>>,
    #[serde(rename = "Receipts", default, skip_serializing_if = "Option::is_none", with = "b64::list")]
    pub receipts: Option<Vec<Vec<u8>>>,
    /// The sealed kv snapshot (agent-key signature ++ kv bytes).
    #[serde(rename = "KV", default, skip_serializing_if = "Option::is_none", with = "b64::opt")]
    pub kv: Option<Vec<u8>>,
}

impl fmt::Debug for AgentPackage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentPackage")
            .field("agent_id", &self.agent_id)
            .field("wasm_binary", &self.wasm_binary.len())
            .field("checkpoint", &self.checkpoint.len())
            .field("budget", &self.budget)
            .field("replay_data", &self.replay_data.is_some())
            .field("agent_identity", &self.agent_identity.as_ref().map(|_| "<secret>"))
            .finish_non_exhaustive()
    }
}

/// What a target needs to re-run the ticks that led to the handoff
/// checkpoint from its parent: the parent (also proves the signature
/// chain), the first tick's inputs and recorded event log, then each
/// following tick's ([`ReplayTick`]), in order. The target re-runs them all
/// (defence `metering_check`), so a host cannot hide an overcharge or a
/// budget edit among several ticks between checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayData {
    #[serde(rename = "PrevCheckpoint", with = "b64")]
    pub prev_checkpoint: Vec<u8>,
    #[serde(rename = "PrevKV", with = "b64")]
    pub prev_kv: Vec<u8>,
    #[serde(rename = "Tick")]
    pub tick: u64,
    #[serde(rename = "NowUnixNs")]
    pub now_unix_ns: i64,
    #[serde(rename = "RandSeed", with = "b64")]
    pub rand_seed: Vec<u8>,
    #[serde(rename = "Budget")]
    pub budget: i64,
    #[serde(rename = "EventLog", with = "b64")]
    pub event_log: Vec<u8>,
    /// The ticks after the first, up to the handoff checkpoint.
    #[serde(rename = "Following", default, skip_serializing_if = "Vec::is_empty")]
    pub following: Vec<ReplayTick>,
}

impl ReplayData {
    /// Every tick it carries, in order: the first (kept flat in the
    /// message for wire compatibility) then the following ones.
    pub fn ticks(&self) -> Vec<ReplayTick> {
        let first = ReplayTick {
            tick: self.tick,
            now_unix_ns: self.now_unix_ns,
            rand_seed: self.rand_seed.clone(),
            budget: self.budget,
            event_log: self.event_log.clone(),
        };
        std::iter::once(first).chain(self.following.iter().cloned()).collect()
    }
}

/// One more tick of a [`ReplayData`]: its inputs and recorded event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayTick {
    #[serde(rename = "Tick")]
    pub tick: u64,
    #[serde(rename = "NowUnixNs")]
    pub now_unix_ns: i64,
    #[serde(rename = "RandSeed", with = "b64")]
    pub rand_seed: Vec<u8>,
    #[serde(rename = "Budget")]
    pub budget: i64,
    #[serde(rename = "EventLog", with = "b64")]
    pub event_log: Vec<u8>,
}

/// Request: hand an agent over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentTransfer {
    #[serde(rename = "Package")]
    pub package: AgentPackage,
    #[serde(rename = "SourceNodeID")]
    pub source_node_id: NodeId,
}

/// Reply to [`AgentTransfer`]. `Success: false` is a *definitive* refusal:
/// the target has not taken authority from this package and never will.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentStarted {
    #[serde(rename = "AgentID")]
    pub agent_id: AgentId,
    #[serde(rename = "NodeID")]
    pub node_id: NodeId,
    #[serde(rename = "Success")]
    pub success: bool,
    #[serde(rename = "Error", default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An owner announcing its epoch and head (after taking authority and on
/// lease renewal), so that peers holding a stale or divergent copy notice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadAnnounce {
    #[serde(rename = "State")]
    pub state: crate::authority::AuthorityState,
    /// The agent's public key (32 bytes) as the announcer knows it, so peers
    /// can check identity continuity of later transfers (defence
    /// `transfer_identity_checks`). Absent from announcers that lack it.
    #[serde(rename = "AgentKey", default, skip_serializing_if = "Option::is_none", with = "b64::opt")]
    pub agent_key: Option<Vec<u8>>,
    /// The announcer's claim ([`agent_claim_bytes`]) signed by the agent's
    /// own key, present when the announcer holds the key. A node holding the
    /// agent acts on a claim (superseded, divergence) only when this
    /// signature verifies under the key it knows from its own history: an
    /// anonymous peer cannot stop a running agent.
    #[serde(rename = "AgentSignature", default, skip_serializing_if = "Option::is_none", with = "b64::opt")]
    pub agent_signature: Option<Vec<u8>>,
}

/// What an agent-signed claim covers: the whole header (issuer, audience,
/// agent, epoch, head, nonce, issue and expiry times) and the claimed state.
pub fn agent_claim_bytes(h: &Header, state: Option<crate::authority::AuthorityState>) -> Vec<u8> {
    // Plain structs with string keys: serialisation cannot fail.
    let header = serde_json::to_vec(h).expect("header serialisation is infallible");
    let state = serde_json::to_vec(&state).expect("state serialisation is infallible");
    [b"igor/agent-claim/v1\0".as_slice(), &(header.len() as u64).to_le_bytes(), &header, &state].concat()
}

/// Reply to anything that is not a transfer: the replier's own view of the
/// agent in its header, and its authority state (if it knows the agent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadAck {
    #[serde(rename = "State", default, skip_serializing_if = "Option::is_none")]
    pub state: Option<crate::authority::AuthorityState>,
    /// As [`HeadAnnounce::agent_signature`], over the replier's header.
    #[serde(rename = "AgentSignature", default, skip_serializing_if = "Option::is_none", with = "b64::opt")]
    pub agent_signature: Option<Vec<u8>>,
    /// The highest epoch major the replier knows the agent was (or may have
    /// been) held under: its own, any a proven claim showed it, and the
    /// major a target of its own handoff takes. An operator recovery
    /// elsewhere stays above it (spec §5: a major no node has used). Covered
    /// by the envelope's node signature, not the agent's: a liar can only
    /// push a recovery to a higher major, never make it reuse one.
    #[serde(rename = "HighestMajor", default, skip_serializing_if = "Option::is_none")]
    pub highest_major: Option<u64>,
}

/// The message itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Body {
    /// Boxed: a package is large, the other bodies are a few words.
    AgentTransfer(Box<AgentTransfer>),
    AgentStarted(AgentStarted),
    HeadAnnounce(HeadAnnounce),
    HeadAck(HeadAck),
}

/// Message kinds, for events and traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MessageKind {
    AgentTransfer,
    AgentStarted,
    HeadAnnounce,
    HeadAck,
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Body {
    pub fn kind(&self) -> MessageKind {
        match self {
            Body::AgentTransfer(_) => MessageKind::AgentTransfer,
            Body::AgentStarted(_) => MessageKind::AgentStarted,
            Body::HeadAnnounce(_) => MessageKind::HeadAnnounce,
            Body::HeadAck(_) => MessageKind::HeadAck,
        }
    }
}

/// One request or reply on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    #[serde(rename = "Protocol")]
    pub protocol: String,
    #[serde(rename = "Header")]
    pub header: Header,
    #[serde(rename = "Body")]
    pub body: Body,
    /// Ed25519 signature by the issuer's node key over [`Envelope::signing_bytes`]
    /// (defence `signed_claims`): binds issuer, audience, agent, epoch,
    /// head, nonce and expiry to the body, so a claim cannot be forged or
    /// altered by whoever forwards it. Absent from unkeyed nodes.
    #[serde(rename = "Signature", default, skip_serializing_if = "Option::is_none", with = "b64::opt")]
    pub signature: Option<Vec<u8>>,
}

fn limit(field: &'static str, len: usize, limit: usize) -> Result<(), WireError> {
    if len > limit { Err(WireError::FieldTooLarge { field, len, limit }) } else { Ok(()) }
}

impl Envelope {
    pub fn new(header: Header, body: Body) -> Self {
        Envelope { protocol: PROTOCOL.to_string(), header, body, signature: None }
    }

    /// What the issuer signs: a domain tag, the canonical header JSON and
    /// the SHA-256 of the canonical body JSON.
    pub fn signing_bytes(&self) -> Vec<u8> {
        // Plain structs with string keys: serialisation cannot fail.
        let header = serde_json::to_vec(&self.header).expect("header serialisation is infallible");
        let body = serde_json::to_vec(&self.body).expect("body serialisation is infallible");
        let mut out = b"igor/envelope/v1\0".to_vec();
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&Hash32::of(&body).0);
        out
    }

    /// Sign as the issuer (replaces any previous signature).
    pub fn sign(&mut self, key: &crate::identity::Keypair) {
        self.signature = Some(key.sign(&self.signing_bytes()).0.to_vec());
    }

    /// Whether the envelope carries a valid signature by `key`.
    pub fn verify(&self, key: &crate::identity::PublicKey) -> bool {
        let Some(sig) = self.signature.as_deref().and_then(|s| <[u8; 64]>::try_from(s).ok()) else { return false };
        key.verify(&self.signing_bytes(), &crate::identity::Signature(sig))
    }

    pub fn kind(&self) -> MessageKind {
        self.body.kind()
    }

    /// Canonical JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising these plain structs to a Vec cannot fail: no maps
        // with non-string keys, no custom serialisers that error.
        serde_json::to_vec(self).expect("envelope serialisation is infallible")
    }

    /// Parse and check limits. Never panics on any input.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, WireError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(WireError::TooLarge { len: bytes.len(), limit: MAX_MESSAGE_BYTES });
        }
        let env: Envelope = serde_json::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
        if env.protocol != PROTOCOL {
            return Err(WireError::WrongProtocol { found: env.protocol.chars().take(64).collect() });
        }
        env.validate()?;
        Ok(env)
    }

    fn validate(&self) -> Result<(), WireError> {
        match &self.body {
            Body::AgentTransfer(t) => {
                let p = &t.package;
                if p.agent_id != self.header.agent {
                    return Err(WireError::BadField {
                        field: "AgentID",
                        reason: format!("package names {}, header names {}", p.agent_id, self.header.agent),
                    });
                }
                if t.source_node_id != self.header.issuer {
                    return Err(WireError::BadField {
                        field: "SourceNodeID",
                        reason: format!("{} is not the issuer {}", t.source_node_id, self.header.issuer),
                    });
                }
                limit("WASMBinary", p.wasm_binary.len(), MAX_WASM_BYTES)?;
                if p.wasm_hash.len() != 32 {
                    return Err(WireError::BadField { field: "WASMHash", reason: "not 32 bytes".into() });
                }
                limit("Checkpoint", p.checkpoint.len(), MAX_CHECKPOINT_BYTES)?;
                limit("ManifestData", p.manifest_data.len(), MAX_MANIFEST_BYTES)?;
                if p.budget < 0 || p.price_per_second < 0 {
                    return Err(WireError::BadField { field: "Budget", reason: "negative money".into() });
                }
                if p.agent_identity.as_ref().is_some_and(|id| id.len() != 32) {
                    return Err(WireError::BadField { field: "AgentIdentity", reason: "not 32 bytes".into() });
                }
                if let Some(r) = &p.receipts {
                    limit("Receipts", r.len(), MAX_RECEIPTS)?;
                    for x in r {
                        limit("Receipts[]", x.len(), MAX_RECEIPT_BYTES)?;
                    }
                }
                if let Some(kv) = &p.kv {
                    limit("KV", kv.len(), MAX_KV_BYTES)?;
                }
                if let Some(r) = &p.replay_data {
                    limit("PrevCheckpoint", r.prev_checkpoint.len(), MAX_CHECKPOINT_BYTES)?;
                    limit("PrevKV", r.prev_kv.len(), MAX_KV_BYTES)?;
                    limit("EventLog", r.event_log.len(), MAX_EVENT_LOG_BYTES)?;
                    if r.rand_seed.len() != 32 {
                        return Err(WireError::BadField { field: "RandSeed", reason: "not 32 bytes".into() });
                    }
                }
            }
            Body::AgentStarted(s) => {
                limit("Error", s.error.as_ref().map_or(0, String::len), MAX_ERROR_BYTES)?;
            }
            Body::HeadAnnounce(a) => {
                if a.agent_key.as_ref().is_some_and(|k| k.len() != 32) {
                    return Err(WireError::BadField { field: "AgentKey", reason: "not 32 bytes".into() });
                }
            }
            Body::HeadAck(_) => {}
        }
        if self.signature.as_ref().is_some_and(|s| s.len() != 64) {
            return Err(WireError::BadField { field: "Signature", reason: "not 64 bytes".into() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
