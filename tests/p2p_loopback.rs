//! The libp2p adapter on 127.0.0.1: one request, one reply; a dial failure
//! is `Unreachable` (retry-safe); a peer that sends garbage does not stop the
//! node from serving others.

use igor::env::{NetError, Network};
use igor::p2p::P2pNetwork;
use igor::units::NodeId;
use std::time::Duration;

fn key(b: u8) -> libp2p::identity::Keypair {
    libp2p::identity::Keypair::ed25519_from_bytes([b; 32]).expect("32 bytes")
}

async fn echo_server(net: std::sync::Arc<P2pNetwork>) {
    while let Some(inc) = net.accept().await {
        let mut body = b"echo:".to_vec();
        body.extend_from_slice(&inc.body);
        let _ = inc.reply.send(body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_over_loopback_and_garbage_does_not_stop_serving() {
    let listen: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    let b = std::sync::Arc::new(P2pNetwork::start(key(2), listen.clone(), &[]).await.unwrap());
    let b_addr = b.listen_addrs[0].clone();
    #[allow(clippy::disallowed_methods)] // a test: the server side runs as its own task
    tokio::spawn(echo_server(b.clone()));
    let a = P2pNetwork::start(key(1), listen, std::slice::from_ref(&b_addr)).await.unwrap();
    let b_id = b.local_id().clone();

    let reply = tokio::time::timeout(Duration::from_secs(20), a.request(&b_id, b"hi".to_vec())).await.unwrap();
    assert_eq!(reply.unwrap(), b"echo:hi");

    // A raw TCP client speaking garbage at b's port (not noise): b must drop
    // it and keep serving.
    let port =
        b_addr.iter().find_map(|p| if let libp2p::multiaddr::Protocol::Tcp(p) = p { Some(p) } else { None }).unwrap();
    #[allow(clippy::disallowed_types)] // test plays a misbehaving peer on loopback
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let _ = s.write_all(&[0xff; 4096]).await;
    }
    let again = tokio::time::timeout(Duration::from_secs(20), a.request(&b_id, b"again".to_vec())).await.unwrap();
    assert_eq!(again.unwrap(), b"echo:again");

    // Nobody listens for this peer id anywhere: unreachable, never "lost".
    let ghost = NodeId::new(key(9).public().to_peer_id().to_string()).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(20), a.request(&ghost, b"x".to_vec())).await.unwrap();
    assert!(matches!(res, Err(NetError::Unreachable { .. })), "{res:?}");
}
