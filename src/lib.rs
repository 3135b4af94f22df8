//! Igor: a runtime for portable, checkpointed WASM agents, built as a
//! deterministic simulation testbed. The runtime core is written once
//! against the environment traits in [`env`]; see `docs/ARCHITECTURE.md`
//! for the codemap and `../shared/spec/IGOR.md` for the facts it honours.

pub mod env;
pub mod units;

pub mod checkpoint;
pub mod executor;
pub mod identity;
pub mod lineage;

pub mod authority;
pub mod control;
pub mod driver;
pub mod lease;
pub mod migration;
pub mod node;
pub mod p2p;
pub mod wire;

pub mod audit;
pub mod eventlog;
pub mod http;
pub mod kv;
pub mod manifest;
pub mod membrane;
pub mod meter;
pub mod receipt;
pub mod replay;
pub mod sandbox;
