//! Unit tests of `p2p` (kept apart so the module reads as code).

use super::frames::read_frame;
use super::*;

fn frame(declared: u32, body: &[u8]) -> futures::io::Cursor<Vec<u8>> {
    futures::io::Cursor::new([declared.to_be_bytes().as_slice(), body].concat())
}

/// Found 5: four streams each declaring ~240 MiB were all buffered at
/// once. With one frame of that size in flight, another is refused
/// before a byte of its body is read; once it is done, the budget is back.
#[test]
fn frames_share_one_budget() {
    let budget = FrameBudget::default();
    let big = 240 * 1024 * 1024;
    let held = budget.reserve(big).expect("one large frame fits");
    // A reply that does not fit is refused before its body is read.
    let mut second = frame(big as u32, b"not read");
    let err = futures::executor::block_on(read_frame(&mut second, &budget, false)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{err}");
    assert_eq!(second.position(), 4, "only the length prefix was read");
    // A request that does not fit is read, dropped and answered BUSY.
    let over = 32 * 1024 * 1024;
    let mut request = frame(over as u32, &vec![b'x'; over]);
    assert_eq!(futures::executor::block_on(read_frame(&mut request, &budget, true)).unwrap(), BUSY);
    assert_eq!(request.position() as usize, 4 + over, "drained, so the sender can read the answer");
    // Small frames still fit beside it.
    let mut small = frame(5, b"hello");
    assert_eq!(futures::executor::block_on(read_frame(&mut small, &budget, true)).unwrap(), b"hello");
    assert_eq!(budget.left(), INBOUND_FRAME_BUDGET - big);
    drop(held);
    assert_eq!(budget.left(), INBOUND_FRAME_BUDGET);
    // A truncated frame gives its share back too.
    let mut short = frame(100, b"only ten b");
    assert!(futures::executor::block_on(read_frame(&mut short, &budget, true)).is_err());
    assert_eq!(budget.left(), INBOUND_FRAME_BUDGET);
}

/// Found 4: the pending limit was global only. One address now gets at
/// most `MAX_PENDING_INCOMING_PER_IP` of the slots; others still get in,
/// and a slot comes back when its connection fails or is established.
#[test]
fn pending_connections_are_limited_per_ip() {
    let mut limits = IpLimits::default();
    let local: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
    let flood: Multiaddr = "/ip4/127.0.0.2/tcp/5000".parse().unwrap();
    let honest: Multiaddr = "/ip4/127.0.0.1/tcp/6000".parse().unwrap();
    for i in 0..MAX_PENDING_INCOMING_PER_IP {
        let id = ConnectionId::new_unchecked(i as usize);
        assert!(limits.handle_pending_inbound_connection(id, &local, &flood).is_ok());
    }
    let over = ConnectionId::new_unchecked(1000);
    assert!(limits.handle_pending_inbound_connection(over, &local, &flood).is_err());
    let ok = ConnectionId::new_unchecked(1001);
    assert!(limits.handle_pending_inbound_connection(ok, &local, &honest).is_ok());
    limits.release(ConnectionId::new_unchecked(0));
    let ip: IpAddr = "127.0.0.2".parse().unwrap();
    assert_eq!(limits.pending_from(&ip), MAX_PENDING_INCOMING_PER_IP - 1);
    assert!(limits.handle_pending_inbound_connection(over, &local, &flood).is_ok());
    // Established connections from one address are bounded too.
    let peer = libp2p::identity::Keypair::generate_ed25519().public().to_peer_id();
    for i in 0..MAX_ESTABLISHED_INCOMING_PER_IP {
        let id = ConnectionId::new_unchecked(2000 + i as usize);
        assert!(limits.handle_established_inbound_connection(id, peer, &local, &flood).is_ok());
    }
    let id = ConnectionId::new_unchecked(3000);
    assert!(limits.handle_established_inbound_connection(id, peer, &local, &flood).is_err());
}
