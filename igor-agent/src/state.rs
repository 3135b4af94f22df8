//! Versioned state encoding: what `agent_checkpoint` writes and
//! `agent_resume` reads.
//!
//! ```text
//! "IGAS" | format u8 = 1 | version u32 LE | fingerprint u64 LE | postcard(value)
//! ```
//!
//! `version` is the agent's [`crate::Agent::VERSION`]; `fingerprint` is an
//! FNV-1a hash of the type's shape (struct, field, enum and variant names
//! and leaf types, walked through its own `Deserialize`), so adding,
//! removing, renaming, reordering or retyping a field changes it without
//! anyone remembering to bump a number. Decoding checks both before it
//! reads a byte of the body: a checkpoint from another schema is
//! [`StateError::VersionMismatch`], never a silent misread. The body must
//! be consumed exactly.

use crate::shape::shape_of;
use alloc::vec::Vec;
use core::fmt;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The first four bytes of every state.
///
/// ```
/// assert!(igor_agent::state::encode(&0u8, 1).unwrap().starts_with(&igor_agent::state::MAGIC));
/// ```
pub const MAGIC: [u8; 4] = *b"IGAS";
/// The header layout version (this file's format).
///
/// ```
/// assert_eq!(igor_agent::state::encode(&0u8, 1).unwrap()[4], igor_agent::state::FORMAT);
/// ```
pub const FORMAT: u8 = 1;
/// Header length in bytes.
///
/// ```
/// assert_eq!(igor_agent::state::encode(&(), 1).unwrap().len(), igor_agent::state::HEADER_LEN);
/// ```
pub const HEADER_LEN: usize = 17;

/// Why state bytes could not be encoded or decoded.
///
/// ```
/// use igor_agent::state::{decode, encode, StateError};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct V1 { n: u32 }
/// #[derive(serde::Serialize, serde::Deserialize, Debug)]
/// struct V2 { n: u32, m: u32 }
/// let bytes = encode(&V1 { n: 1 }, 1).unwrap();
/// let err = decode::<V2>(&bytes, 1).unwrap_err();
/// assert!(matches!(err, StateError::VersionMismatch { .. }));
/// assert!(err.to_string().contains("state version mismatch"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    /// Fewer bytes than the header.
    TooShort {
        /// Bytes given.
        len: usize,
    },
    /// The bytes do not start with `IGAS`: not written by this SDK.
    BadMagic,
    /// A header format this SDK does not know.
    UnknownFormat(u8),
    /// The checkpoint was written by another schema (version or shape).
    VersionMismatch {
        /// The Rust type that tried to read it.
        type_name: &'static str,
        /// Version in the checkpoint.
        found_version: u32,
        /// Shape fingerprint in the checkpoint.
        found_fingerprint: u64,
        /// Version this agent reads.
        expected_version: u32,
        /// Shape fingerprint of this agent's state type.
        expected_fingerprint: u64,
    },
    /// Same schema, but the body does not decode (corrupt bytes).
    Body(postcard::Error),
    /// The body decoded with bytes left over.
    TrailingBytes {
        /// Bytes left.
        extra: usize,
    },
    /// Serializing failed (e.g. a map with a non-serializable key).
    Encode(postcard::Error),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::TooShort { len } => {
                write!(f, "agent state: {len} bytes, shorter than the {HEADER_LEN}-byte header")
            }
            StateError::BadMagic => {
                f.write_str("agent state: does not start with \"IGAS\" (not written by igor-agent)")
            }
            StateError::UnknownFormat(v) => {
                write!(f, "agent state: unknown header format {v} (this SDK reads {FORMAT})")
            }
            StateError::VersionMismatch {
                type_name,
                found_version,
                found_fingerprint,
                expected_version,
                expected_fingerprint,
            } => write!(
                f,
                "state version mismatch for `{type_name}`: the checkpoint holds schema v{found_version} \
                 (fingerprint {found_fingerprint:016x}), this agent reads v{expected_version} \
                 (fingerprint {expected_fingerprint:016x})"
            ),
            StateError::Body(e) => write!(f, "agent state: body does not decode: {e}"),
            StateError::TrailingBytes { extra } => write!(f, "agent state: {extra} bytes left after the body"),
            StateError::Encode(e) => write!(f, "agent state: cannot encode: {e}"),
        }
    }
}

impl core::error::Error for StateError {}

/// FNV-1a, 64 bits: small, dependency-free, stable across builds.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The shape fingerprint of `T` (see the module docs).
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct A { x: u32 }
/// #[derive(serde::Deserialize)]
/// struct B { x: u64 }
/// assert_ne!(igor_agent::state::fingerprint::<A>(), igor_agent::state::fingerprint::<B>());
/// ```
pub fn fingerprint<T: DeserializeOwned>() -> u64 {
    fnv1a(shape_of::<T>().as_bytes())
}

/// The shape text behind [`fingerprint`], for diagnosing a mismatch.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct A { x: u32, tags: Vec<String> }
/// assert_eq!(igor_agent::state::shape::<A>(), "A{x;tags;|u32,[str,],},");
/// ```
pub fn shape<T: DeserializeOwned>() -> alloc::string::String {
    shape_of::<T>()
}

/// Encode `value` with the header for `version` (fingerprint computed here).
///
/// ```
/// let bytes = igor_agent::state::encode(&7u32, 1).unwrap();
/// assert_eq!(&bytes[..4], b"IGAS");
/// ```
pub fn encode<T: Serialize + DeserializeOwned>(value: &T, version: u32) -> Result<Vec<u8>, StateError> {
    encode_with(value, version, fingerprint::<T>())
}

/// [`encode`] with a precomputed fingerprint (the wasm runtime caches it).
///
/// ```
/// let fp = igor_agent::state::fingerprint::<u8>();
/// assert_eq!(igor_agent::state::encode_with(&1u8, 1, fp).unwrap(), igor_agent::state::encode(&1u8, 1).unwrap());
/// ```
pub fn encode_with<T: Serialize>(value: &T, version: u32, fingerprint: u64) -> Result<Vec<u8>, StateError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&fingerprint.to_le_bytes());
    postcard::to_extend(value, out).map_err(StateError::Encode)
}

/// Decode state written by [`encode`] for the same `version` and type.
///
/// ```
/// let bytes = igor_agent::state::encode(&(1u8, 2u16), 3).unwrap();
/// assert_eq!(igor_agent::state::decode::<(u8, u16)>(&bytes, 3).unwrap(), (1, 2));
/// assert!(igor_agent::state::decode::<(u8, u16)>(&bytes, 4).is_err());
/// ```
pub fn decode<T: DeserializeOwned>(bytes: &[u8], version: u32) -> Result<T, StateError> {
    decode_with(bytes, version, fingerprint::<T>())
}

/// [`decode`] with a precomputed fingerprint.
///
/// ```
/// let fp = igor_agent::state::fingerprint::<u8>();
/// let bytes = igor_agent::state::encode(&9u8, 1).unwrap();
/// assert_eq!(igor_agent::state::decode_with::<u8>(&bytes, 1, fp).unwrap(), 9);
/// ```
pub fn decode_with<T: DeserializeOwned>(bytes: &[u8], version: u32, fingerprint: u64) -> Result<T, StateError> {
    let h = read_header(bytes)?;
    if h.version != version || h.fingerprint != fingerprint {
        return Err(StateError::VersionMismatch {
            type_name: core::any::type_name::<T>(),
            found_version: h.version,
            found_fingerprint: h.fingerprint,
            expected_version: version,
            expected_fingerprint: fingerprint,
        });
    }
    let (value, rest) = postcard::take_from_bytes::<T>(&bytes[HEADER_LEN..]).map_err(StateError::Body)?;
    if !rest.is_empty() {
        return Err(StateError::TrailingBytes { extra: rest.len() });
    }
    Ok(value)
}

/// A state header.
///
/// ```
/// let bytes = igor_agent::state::encode(&1u8, 5).unwrap();
/// assert_eq!(igor_agent::state::read_header(&bytes).unwrap().version, 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Schema version.
    pub version: u32,
    /// Shape fingerprint.
    pub fingerprint: u64,
}

/// Read and check the header of state bytes (magic, format).
///
/// ```
/// assert!(igor_agent::state::read_header(b"nope").is_err());
/// ```
pub fn read_header(bytes: &[u8]) -> Result<Header, StateError> {
    if bytes.len() < HEADER_LEN {
        return Err(StateError::TooShort { len: bytes.len() });
    }
    if bytes[..4] != MAGIC {
        return Err(StateError::BadMagic);
    }
    if bytes[4] != FORMAT {
        return Err(StateError::UnknownFormat(bytes[4]));
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&bytes[5..9]);
    let mut fp = [0u8; 8];
    fp.copy_from_slice(&bytes[9..17]);
    Ok(Header { version: u32::from_le_bytes(v), fingerprint: u64::from_le_bytes(fp) })
}
