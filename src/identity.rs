//! Ed25519 identities of agents and nodes: key generation from the entropy
//! trait, signing, `did:key` encoding and parsing, and key files written
//! through the disk trait as owner-only secrets (mode 0600). No I/O of its own.

use crate::env::{Disk, DiskError, Entropy};
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use std::fmt;

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

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..4]))
    }
}

/// A verified-to-be-a-curve-point Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.did())
    }
}

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, IdentityError> {
        VerifyingKey::from_bytes(&bytes).map_err(|_| IdentityError::BadPublicKey)?;
        Ok(PublicKey(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `did:key:z` + base58btc(0xed 0x01 ++ key).
    pub fn did(&self) -> String {
        let mut b = Vec::with_capacity(34);
        b.extend_from_slice(&ED25519_MULTICODEC);
        b.extend_from_slice(&self.0);
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
        let Ok(vk) = VerifyingKey::from_bytes(&self.0) else { return false };
        let msg = parts.concat();
        vk.verify(&msg, &ed25519_dalek::Signature::from_bytes(&sig.0)).is_ok()
    }

    pub fn verify(&self, msg: &[u8], sig: &Signature) -> bool {
        self.verify_parts(&[msg], sig)
    }
}

/// A secret key with its public half.
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
        PublicKey(self.0.verifying_key().to_bytes())
    }

    pub fn did(&self) -> String {
        self.public().did()
    }

    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.0.sign(msg).to_bytes())
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
