//! The env contract as one suite, run against every implementation: the
//! real pieces (`FsDisk`, `P2pNetwork`), the in-memory twins (`MemDisk`,
//! `MemNet`) and the simulator's twins (`SimDisk`, `SimNet`, from
//! `igor-sim`'s tests with the `conformance` feature). A twin that drifts
//! from the real piece fails here, not in a scenario that happens to need
//! the difference. Each check panics with the name of the rule it found
//! broken (it is test code: built only for tests or with `conformance`).
//!
//! Disk: whole-file round trip and overwrite, empty files, parents created,
//! `NotFound` for reads and removes of absent files, sorted direct-child
//! listing without temp files and empty for a missing directory, path checks
//! on every operation (`InvalidPath`), and (for the twins that model a
//! crash) that a completed write is durable and never torn (RE-1).
//!
//! Network: one request, one reply; the transport names the sender; a
//! request sent after the previous reply arrived is accepted after it (order
//! per link); a body over [`MAX_FRAME_BYTES`] is `TooLarge` and never
//! reaches the peer; a request whose reply is dropped is `Lost` (maybe
//! delivered), never `Unreachable`; errors name the peer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::{Disk, DiskError, MAX_FRAME_BYTES, NetError, Network, TEMP_SUFFIX};
use crate::units::NodeId;
use std::collections::BTreeMap;

/// Every disk rule that needs no crash. `d` must be empty under `conf/`.
pub fn disk_contract<D: Disk>(d: &D) {
    // Round trip, overwrite, empty file, parents created.
    d.write_atomic("conf/a/b/file", b"one").expect("write creates parents");
    assert_eq!(d.read("conf/a/b/file").unwrap(), b"one", "round trip");
    d.write_atomic("conf/a/b/file", b"two, longer").unwrap();
    assert_eq!(d.read("conf/a/b/file").unwrap(), b"two, longer", "overwrite replaces the whole file");
    d.write_atomic("conf/a/b/file", b"3").unwrap();
    assert_eq!(d.read("conf/a/b/file").unwrap(), b"3", "a shorter overwrite leaves no tail");
    d.write_atomic("conf/empty", b"").unwrap();
    assert_eq!(d.read("conf/empty").unwrap(), b"", "empty file");
    d.write_secret("conf/secret", b"key").unwrap();
    assert_eq!(d.read("conf/secret").unwrap(), b"key", "secret round trip");
    assert!(d.exists("conf/empty") && !d.exists("conf/none"), "exists");

    // Not found, for reads and removes, with the path in the error.
    let e = d.read("conf/none").unwrap_err();
    assert!(e.is_not_found() && e.to_string().contains("conf/none"), "read of an absent file: {e}");
    let e = d.remove("conf/none").unwrap_err();
    assert!(e.is_not_found() && e.to_string().contains("conf/none"), "remove of an absent file: {e}");
    d.write_atomic("conf/gone", b"x").unwrap();
    d.remove("conf/gone").unwrap();
    assert!(d.read("conf/gone").unwrap_err().is_not_found(), "a removed file is gone");

    // Listing: sorted direct children (files and directories), no temp
    // files, empty for a directory that does not exist.
    for p in ["conf/l/c", "conf/l/a/deep", "conf/l/b", "conf/lx/z"] {
        d.write_atomic(p, b"").unwrap();
    }
    assert_eq!(d.list("conf/l").unwrap(), vec!["a", "b", "c"], "sorted direct children");
    assert!(d.list("conf/missing").unwrap().is_empty(), "missing directory lists empty");
    assert!(
        d.list("conf/a/b").unwrap().iter().all(|n| !n.ends_with(TEMP_SUFFIX)),
        "no temp file is listed after a completed write"
    );

    // Path checks on every operation: nothing leaves the data directory.
    for bad in ["", "/abs", "a/../b", "a//b", "./a", "a\\b", "a/."] {
        let invalid = |r: Result<(), DiskError>, op: &str| match r {
            Err(DiskError::InvalidPath { .. }) => {}
            other => panic!("{op} {bad:?}: expected InvalidPath, got {other:?}"),
        };
        invalid(d.read(bad).map(|_| ()), "read");
        invalid(d.write_atomic(bad, b"x"), "write_atomic");
        invalid(d.write_secret(bad, b"x"), "write_secret");
        invalid(d.remove(bad), "remove");
        invalid(d.list(bad).map(|_| ()), "list");
    }
}

/// RE-1 across a crash: the writes `d` completed are there, whole, on the
/// disk `crash` returns (the same storage after a crash or restart).
pub fn disk_survives_crash<D: Disk>(d: &D, crash: impl FnOnce() -> D) {
    write_before_crash(d);
    check_after_crash(&crash());
}

/// The writes [`check_after_crash`] looks for (for twins whose crash
/// happens outside the test's code, as a turmoil host's does).
pub fn write_before_crash<D: Disk>(d: &D) {
    d.write_atomic("durable/one", b"first").unwrap();
    d.write_atomic("durable/two", b"old").unwrap();
    d.write_atomic("durable/two", b"new bytes").unwrap();
}

/// After a crash that followed [`write_before_crash`].
pub fn check_after_crash<D: Disk>(after: &D) {
    assert_eq!(after.read("durable/one").unwrap(), b"first", "a completed write survives a crash");
    assert_eq!(after.read("durable/two").unwrap(), b"new bytes", "the last completed overwrite survives, whole");
    assert_eq!(after.list("durable").unwrap(), vec!["one", "two"], "no temp file after a crash");
}

/// A request body that the conformance server answers by dropping the reply.
pub const DROP_REPLY: &[u8] = b"conformance: drop the reply";

/// The server half: answer every request with `n | sender | '|' | body`,
/// `n` (8 bytes LE) counting the requests accepted from that sender so far;
/// drop the reply for [`DROP_REPLY`]. Runs until the network shuts down.
pub async fn serve<N: Network>(net: &N) {
    let mut seen: BTreeMap<NodeId, u64> = BTreeMap::new();
    while let Some(inc) = net.accept().await {
        let n = seen.entry(inc.from.clone()).or_default();
        let count = *n;
        *n += 1;
        if inc.body == DROP_REPLY {
            drop(inc.reply);
            continue;
        }
        let reply = [&count.to_le_bytes()[..], inc.from.as_str().as_bytes(), b"|", &inc.body].concat();
        let _ = inc.reply.send(reply);
    }
}

/// The client half, against [`serve`] running as `server`. `me` is the
/// name the transport authenticates this endpoint as; `unknown`, if given,
/// is a peer that does not exist (its requests are `Unreachable`).
pub async fn network_contract<N: Network>(net: &N, me: &NodeId, server: &NodeId, unknown: Option<&NodeId>) {
    let expect = |count: u64, body: &[u8]| [&count.to_le_bytes()[..], me.as_str().as_bytes(), b"|", body].concat();
    // One request, one reply, the sender named by the transport.
    assert_eq!(net.request(server, b"hello".to_vec()).await.unwrap(), expect(0, b"hello"), "request and reply");
    assert_eq!(net.request(server, Vec::new()).await.unwrap(), expect(1, b""), "empty body");
    // Order per link: each request sent after the previous reply.
    for i in 2..6u64 {
        let body = format!("in order {i}").into_bytes();
        assert_eq!(net.request(server, body.clone()).await.unwrap(), expect(i, &body), "order on the link");
    }
    // The frame limit is the env contract's, refused before sending.
    match net.request(server, vec![0u8; MAX_FRAME_BYTES + 1]).await {
        Err(NetError::TooLarge { peer, len, limit }) => {
            assert_eq!((&peer, len, limit), (server, MAX_FRAME_BYTES + 1, MAX_FRAME_BYTES), "TooLarge names it");
        }
        other => panic!("a body over MAX_FRAME_BYTES must be TooLarge, got {:?}", other.map(|b| b.len())),
    }
    // A dropped reply: maybe delivered, so Lost (never Unreachable).
    match net.request(server, DROP_REPLY.to_vec()).await {
        Err(e @ NetError::Lost { .. }) => assert!(e.to_string().contains(server.as_str()), "Lost names the peer: {e}"),
        other => panic!("a dropped reply must be Lost, got {other:?}"),
    }
    // The oversized body never reached the server; the dropped one did.
    assert_eq!(net.request(server, b"after".to_vec()).await.unwrap(), expect(7, b"after"), "nothing else delivered");
    if let Some(unknown) = unknown {
        match net.request(unknown, b"x".to_vec()).await {
            Err(e @ NetError::Unreachable { .. }) => {
                assert!(e.to_string().contains(unknown.as_str()), "Unreachable names the peer: {e}")
            }
            other => panic!("a peer that does not exist must be Unreachable, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::p2p::P2pNetwork;
    use std::sync::Arc;
    use std::time::Duration;

    fn key(b: u8) -> libp2p::identity::Keypair {
        libp2p::identity::Keypair::ed25519_from_bytes([b; 32]).expect("32 bytes")
    }

    /// The real transport meets the same contract as its twins.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn p2p_network_meets_the_network_contract() {
        let listen: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
        let b = Arc::new(P2pNetwork::start(key(2), listen.clone(), &[]).await.unwrap());
        let server = b.clone();
        #[allow(clippy::disallowed_methods)] // a test: the server side runs as its own task
        let serving = tokio::spawn(async move { serve(server.as_ref()).await });
        let a = P2pNetwork::start(key(1), listen, std::slice::from_ref(&b.listen_addrs[0])).await.unwrap();
        let ghost = NodeId::new(key(9).public().to_peer_id().to_string()).unwrap();
        let check = network_contract(&a, a.local_id(), b.local_id(), Some(&ghost));
        tokio::time::timeout(Duration::from_secs(60), check).await.expect("the contract checks finish");
        serving.abort();
    }
}
