//! Ed25519 identities of agents and nodes: key generation from the entropy
//! trait, signing, `did:key` encoding and parsing, key files written
//! through the disk trait as owner-only secrets (mode 0600), and
//! self-certifying agent ids (`<label>.<tag>`, the tag a hash of the agent
//! key: [`agent_tag`], [`check_agent_key`]). No I/O of its own.

use crate::env::{Disk, DiskError, Entropy};
use crate::units::{AgentId, InvalidId, MAX_ID_LEN};
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use std::fmt;

pub mod memo;

/// Multicodec prefix of an Ed25519 public key (varint 0xed).
const ED25519_MULTICODEC: [u8; 2] = [0xed, 0x01];
const DID_PREFIX: &str = "did:key:z";
/// First line of a key file: names the format so a wrong file is rejected.
const KEY_FILE_MAGIC: &str = "igor-ed25519-secret-v1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("not a did:key: {did:?}: {reason}")]
    BadDid { did: String, reason: &'static str },
    #[error("invalid Ed25519 public key")]
    BadPublicKey,
    #[error("key file {path}: {reason}")]
    BadKeyFile { path: String, reason: &'static str },
    #[error(transparent)]
    Disk(#[from] DiskError),
}

/// Bytes of SHA-256(agent public key) a self-certifying agent id carries:
/// 120 bits. Finding a second key whose hash starts with a given 120 bits
/// costs ~2^120 key generations (a second preimage, not a birthday
/// collision: the attacker must match an id that already exists), far out
/// of reach; 80 bits would already be, 120 leaves a margin at 9 more
/// characters than 80 would need.
pub const AGENT_TAG_BYTES: usize = 15;
/// Characters of the tag: lowercase RFC 4648 base32, no padding
/// (15 bytes = 120 bits = exactly 24 five-bit characters).
pub const AGENT_TAG_CHARS: usize = AGENT_TAG_BYTES * 8 / 5;
/// Longest label of a self-certifying id: the id (label, '.', tag) must
/// still be a valid id of at most [`MAX_ID_LEN`] bytes.
pub const MAX_AGENT_LABEL_LEN: usize = MAX_ID_LEN - 1 - AGENT_TAG_CHARS;
const BASE32_LOWER: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A key offered for a self-certifying agent id that the id does not name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("agent {agent}: key {key} has tag {actual}, the id requires {expected}")]
pub struct KeyMismatch {
    pub agent: AgentId,
    pub key: String,
    pub expected: String,
    pub actual: String,
}

/// The tag of an agent key: lowercase base32 of the first
/// [`AGENT_TAG_BYTES`] bytes of SHA-256 of the 32 public-key bytes.
pub fn agent_tag(key: &PublicKey) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(AGENT_TAG_CHARS);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in &digest[..AGENT_TAG_BYTES] {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32_LOWER[((acc >> bits) & 31) as usize]));
        }
    }
    debug_assert_eq!((out.len(), bits), (AGENT_TAG_CHARS, 0), "120 bits are exactly 24 characters");
    out
}

/// The self-certifying id of `key` under `label`: `<label>.<tag>`. The
/// label is the operator's name for it (any valid id that is not itself
/// tagged, at most [`MAX_AGENT_LABEL_LEN`] bytes).
pub fn tagged_agent_id(label: &str, key: &PublicKey) -> Result<AgentId, InvalidId> {
    let bad = |reason| InvalidId { kind: "agent label", value: label.to_string(), reason };
    if label.len() > MAX_AGENT_LABEL_LEN {
        return Err(bad("longer than 39 bytes (the tag takes 25 of an id's 64)"));
    }
    let label_id = AgentId::new(label).map_err(|e| InvalidId { kind: "agent label", ..e })?;
    if agent_id_tag(&label_id).is_some() {
        return Err(bad("already ends in a tag"));
    }
    AgentId::new(format!("{label}.{}", agent_tag(key)))
}

/// The tag a self-certifying id carries, `None` for a legacy id. An id is
/// self-certifying exactly when its part after the last '.' is
/// [`AGENT_TAG_CHARS`] lowercase base32 characters and a non-empty label
/// precedes it; anything else (a shorter or uppercase "tag" included) is a
/// legacy id, whose key is trusted on first use.
pub fn agent_id_tag(agent: &AgentId) -> Option<&str> {
    let (label, tag) = agent.as_str().rsplit_once('.')?;
    let is_tag = tag.len() == AGENT_TAG_CHARS && tag.bytes().all(|c| BASE32_LOWER.contains(&c));
    (is_tag && !label.is_empty()).then_some(tag)
}

/// The label of an id: the part before the tag of a self-certifying id,
/// the whole id otherwise.
pub fn agent_label(agent: &AgentId) -> &str {
    match agent_id_tag(agent) {
        Some(tag) => &agent.as_str()[..agent.as_str().len() - tag.len() - 1],
        None => agent.as_str(),
    }
}

/// Whether `key` may be `agent`'s key: for a self-certifying id, only the
/// key whose tag the id carries; for a legacy id, any key (the caller
/// applies trust on first use).
pub fn check_agent_key(agent: &AgentId, key: &PublicKey) -> Result<(), KeyMismatch> {
    let Some(expected) = agent_id_tag(agent) else { return Ok(()) };
    let actual = agent_tag(key);
    if actual == expected {
        return Ok(());
    }
    Err(KeyMismatch { agent: agent.clone(), key: key.did(), expected: expected.to_string(), actual })
}

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..4]))
    }
}

/// A verified-to-be-a-curve-point Ed25519 public key. It keeps the
/// decompressed point beside its 32 bytes: decompressing costs about a
/// third of a verification, and a node verifies many messages and
/// checkpoints under few keys. Equality, order and hash are the bytes'.
#[derive(Clone, Copy)]
pub struct PublicKey {
    bytes: [u8; 32],
    key: VerifyingKey,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for PublicKey {}

impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bytes.cmp(&other.bytes)
    }
}

impl std::hash::Hash for PublicKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes.hash(state)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.did())
    }
}

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, IdentityError> {
        let key = memo::decode_key(&bytes).map_err(|_| IdentityError::BadPublicKey)?;
        Ok(PublicKey { bytes, key })
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// `did:key:z` + base58btc(0xed 0x01 ++ key).
    pub fn did(&self) -> String {
        let mut b = Vec::with_capacity(34);
        b.extend_from_slice(&ED25519_MULTICODEC);
        b.extend_from_slice(&self.bytes);
        format!("{DID_PREFIX}{}", bs58::encode(b).into_string())
    }

    pub fn from_did(did: &str) -> Result<Self, IdentityError> {
        let bad = |reason| IdentityError::BadDid { did: did.to_string(), reason };
        let body = did.strip_prefix(DID_PREFIX).ok_or(bad("must start with did:key:z"))?;
        let bytes = bs58::decode(body).into_vec().map_err(|_| bad("not base58btc"))?;
        let key = bytes.strip_prefix(&ED25519_MULTICODEC[..]).ok_or(bad("not an Ed25519 multicodec key"))?;
        let key: [u8; 32] = key.try_into().map_err(|_| bad("key is not 32 bytes"))?;
        PublicKey::from_bytes(key).map_err(|_| bad("not a valid Ed25519 point"))
    }

    /// Verify a signature over the concatenation of `parts`.
    pub fn verify_parts(&self, parts: &[&[u8]], sig: &Signature) -> bool {
        if memo::known_valid(&self.bytes, &sig.0, parts) {
            return true;
        }
        let msg = parts.concat();
        let ok = self.key.verify(&msg, &ed25519_dalek::Signature::from_bytes(&sig.0)).is_ok();
        if ok {
            memo::remember(&self.bytes, &sig.0, parts);
        }
        ok
    }

    pub fn verify(&self, msg: &[u8], sig: &Signature) -> bool {
        self.verify_parts(&[msg], sig)
    }
}

/// A secret key with its public half.
#[derive(Clone, PartialEq, Eq)]
pub struct Keypair(SigningKey);

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.public().did())
    }
}

impl Keypair {
    pub fn generate(entropy: &mut impl Entropy) -> Self {
        let mut seed = [0u8; 32];
        entropy.fill(&mut seed);
        Keypair(SigningKey::from_bytes(&seed))
    }

    pub fn from_seed(seed: [u8; 32]) -> Self {
        Keypair(SigningKey::from_bytes(&seed))
    }

    pub fn public(&self) -> PublicKey {
        let key = self.0.verifying_key();
        PublicKey { bytes: key.to_bytes(), key }
    }

    pub fn did(&self) -> String {
        self.public().did()
    }

    pub fn sign(&self, msg: &[u8]) -> Signature {
        let sig = Signature(self.0.sign(msg).to_bytes());
        memo::remember(self.0.verifying_key().as_bytes(), &sig.0, &[msg]);
        sig
    }

    /// Sign the concatenation of `parts` (avoids building a header++state copy
    /// at every call site).
    pub fn sign_parts(&self, parts: &[&[u8]]) -> Signature {
        self.sign(&parts.concat())
    }

    /// Write the key as an owner-only file, atomically.
    pub fn save(&self, disk: &impl Disk, path: &str) -> Result<(), IdentityError> {
        let text = format!("{KEY_FILE_MAGIC}\n{}\n", hex::encode(self.0.to_bytes()));
        disk.write_secret(path, text.as_bytes())?;
        Ok(())
    }

    pub fn load(disk: &impl Disk, path: &str) -> Result<Self, IdentityError> {
        let bad = |reason| IdentityError::BadKeyFile { path: path.to_string(), reason };
        let bytes = disk.read(path)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| bad("not UTF-8"))?;
        let mut lines = text.lines();
        if lines.next() != Some(KEY_FILE_MAGIC) {
            return Err(bad("missing igor-ed25519-secret-v1 header"));
        }
        let seed = hex::decode(lines.next().unwrap_or("").trim()).map_err(|_| bad("secret is not hex"))?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| bad("secret is not 32 bytes"))?;
        Ok(Keypair::from_seed(seed))
    }

    /// Load the key at `path`, or make one and save it if there is none.
    pub fn load_or_create(disk: &impl Disk, path: &str, entropy: &mut impl Entropy) -> Result<Self, IdentityError> {
        match Self::load(disk, path) {
            Err(IdentityError::Disk(e)) if e.is_not_found() => {
                let k = Self::generate(entropy);
                k.save(disk, path)?;
                Ok(k)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::mem::{MemDisk, SeededEntropy};

    /// Test vector from the W3C did:key specification (Ed25519 section):
    /// public key bytes and the did:key they must encode to.
    #[test]
    fn did_key_matches_published_vector() {
        let did = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp";
        let pk = PublicKey::from_did(did).unwrap();
        assert_eq!(pk.did(), did);
        assert_eq!(hex::encode(pk.as_bytes()), "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29");
    }

    #[test]
    fn rfc8032_test_1_key_maps_to_its_did() {
        // RFC 8032 §7.1 TEST 1: secret key -> public key.
        let seed = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
        let k = Keypair::from_seed(seed.try_into().unwrap());
        assert_eq!(
            hex::encode(k.public().as_bytes()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(PublicKey::from_did(&k.did()).unwrap(), k.public());
    }

    #[test]
    fn bad_dids_are_rejected_with_reason() {
        for bad in ["did:web:x", "did:key:zzzz0", "did:key:z6Mk", "did:key:z"] {
            assert!(PublicKey::from_did(bad).is_err(), "{bad}");
        }
    }

    /// The tag is SHA-256(key)[..15] in lowercase base32: pinned for the
    /// RFC 8032 TEST 1 key, so a change of encoding cannot go unnoticed.
    #[test]
    fn agent_tag_is_pinned_and_binds_the_key() {
        let seed = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
        let k = Keypair::from_seed(seed.try_into().unwrap());
        let tag = agent_tag(&k.public());
        assert_eq!(tag.len(), AGENT_TAG_CHARS);
        assert_eq!(tag, PINNED_TAG);
        let id = tagged_agent_id("counter", &k.public()).unwrap();
        assert_eq!(id.as_str(), format!("counter.{tag}"));
        assert_eq!((agent_id_tag(&id), agent_label(&id)), (Some(tag.as_str()), "counter"));
        check_agent_key(&id, &k.public()).expect("the id's own key");
        let other = Keypair::from_seed([9; 32]).public();
        let e = check_agent_key(&id, &other).unwrap_err();
        assert!(e.to_string().contains(&tag) && e.to_string().contains(&other.did()), "{e}");
    }

    /// `base64.b32encode(sha256(pk)[:15]).lower()` in Python for that key.
    const PINNED_TAG: &str = "eh7ddx5bksrgcytl7bkai36s";

    #[test]
    fn only_a_full_lowercase_tag_makes_an_id_self_certifying() {
        let k = Keypair::from_seed([3; 32]).public();
        let tag = agent_tag(&k);
        let id = |s: &str| AgentId::new(s).unwrap();
        // A truncated, uppercase or over-long tag is no tag: a legacy id.
        for legacy in [
            format!("counter.{}", &tag[..AGENT_TAG_CHARS - 1]),
            format!("counter.{}", tag.to_uppercase()),
            format!("counter.{tag}a"),
            format!("counter-{tag}"),
            "counter".to_string(),
        ] {
            assert_eq!(agent_id_tag(&id(&legacy)), None, "{legacy}");
            check_agent_key(&id(&legacy), &k).expect("legacy ids accept any key (TOFU is the caller's)");
        }
        // No label: not a valid id at all.
        assert!(AgentId::new(format!(".{tag}")).is_err());
        // A dotted label keeps its dots; the tag is the last part.
        let dotted = tagged_agent_id("team.counter", &k).unwrap();
        assert_eq!(agent_label(&dotted), "team.counter");
        // Another key's tag under the same label is refused.
        let forged = id(&format!("counter.{}", agent_tag(&Keypair::from_seed([4; 32]).public())));
        assert!(check_agent_key(&forged, &k).is_err());
    }

    #[test]
    fn labels_are_checked() {
        let k = Keypair::from_seed([3; 32]).public();
        assert!(tagged_agent_id("", &k).is_err(), "empty label");
        assert!(tagged_agent_id("a/b", &k).is_err(), "not an id");
        assert!(tagged_agent_id(&"a".repeat(MAX_AGENT_LABEL_LEN + 1), &k).is_err(), "no room for the tag");
        let longest = tagged_agent_id(&"a".repeat(MAX_AGENT_LABEL_LEN), &k).unwrap();
        assert_eq!(longest.as_str().len(), MAX_ID_LEN);
        let once = tagged_agent_id("counter", &k).unwrap();
        assert!(tagged_agent_id(once.as_str(), &k).is_err(), "a label that is already tagged");
    }

    #[test]
    fn key_file_roundtrips_and_is_secret() {
        let disk = MemDisk::new();
        let mut e = SeededEntropy::derived(1, "k");
        let k = Keypair::load_or_create(&disk, "keys/agent.key", &mut e).unwrap();
        assert!(disk.is_secret("keys/agent.key"));
        let again = Keypair::load_or_create(&disk, "keys/agent.key", &mut e).unwrap();
        assert_eq!(k.public(), again.public());
        let sig = k.sign(b"msg");
        assert!(k.public().verify(b"msg", &sig));
        assert!(!k.public().verify(b"msh", &sig));
        disk.write_atomic("keys/bad.key", b"garbage").unwrap();
        assert!(matches!(Keypair::load(&disk, "keys/bad.key"), Err(IdentityError::BadKeyFile { .. })));
    }
}
