//! Unit tests of `p2p` (kept apart so the module reads as code).

use super::frames::{read_frame, read_frame_within};
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

/// Serves its bytes, then never answers again (a sender that stalls).
struct Stalls(futures::io::Cursor<Vec<u8>>);

impl futures::AsyncRead for Stalls {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        if self.0.position() as usize == self.0.get_ref().len() {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

fn stalls(declared: u32, sent: &[u8]) -> Stalls {
    Stalls(frame(declared, sent))
}

/// Found 6 (an outside tester): a peer with no credentials wrote only the
/// length prefixes of a largest frame and a 16 MiB frame and trickled: the
/// one shared pool, reserved by declared length, was gone, and every
/// request to the node (migrations included) was answered busy for up to
/// 120 s. Now large frames have their own lane, and an ordinary request
/// passes while it is held.
#[test]
fn a_held_large_lane_leaves_ordinary_requests_through() {
    let budget = FrameBudget::default();
    let held = budget.reserve(MAX_FRAME_BYTES).expect("the largest frame fits its lane");
    let sixteen = 16 * 1024 * 1024;
    let mut second = frame(sixteen as u32, &vec![b'x'; sixteen]);
    assert_eq!(futures::executor::block_on(read_frame(&mut second, &budget, true)).unwrap(), BUSY);
    let migration = vec![b'm'; 200 * 1024];
    let mut small = frame(migration.len() as u32, &migration);
    assert_eq!(futures::executor::block_on(read_frame(&mut small, &budget, true)).unwrap(), migration);
    drop(held);
    assert_eq!(budget.left(), INBOUND_FRAME_BUDGET);
}

/// An ordinary frame holds only the bytes that arrived: declaring 1 MiB
/// and sending 100 bytes takes 100 bytes of the lane, and a stalled frame
/// gives them back at its deadline.
#[test]
fn an_ordinary_frame_holds_what_arrived_until_its_deadline() {
    let budget = FrameBudget::default();
    let mut peer = stalls(SMALL_FRAME_BYTES as u32, &[b'y'; 100]);
    let mut read = Box::pin(read_frame_within(&mut peer, &budget, true, Duration::from_secs(3600)));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(read.as_mut().poll(&mut cx).is_pending());
    assert_eq!(budget.left(), INBOUND_FRAME_BUDGET - 100, "the declared length reserves nothing");
    drop(read);
    assert_eq!(budget.left(), INBOUND_FRAME_BUDGET, "a dropped stream gives its bytes back");

    let mut peer = stalls(SMALL_FRAME_BYTES as u32, &[b'y'; 100]);
    let err = futures::executor::block_on(read_frame_within(&mut peer, &budget, true, Duration::from_millis(50)))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert_eq!(budget.left(), INBOUND_FRAME_BUDGET);
}

/// When the ordinary lane is full of bytes that really arrived, a request
/// is drained and answered busy and a reply is an error; nothing stays held.
#[test]
fn a_full_ordinary_lane_answers_busy() {
    let budget = FrameBudget::new(LARGE_FRAME_LANE, 1000);
    let mut hog = stalls(1000, &[b'h'; 990]);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut hold = Box::pin(read_frame_within(&mut hog, &budget, true, Duration::from_secs(3600)));
    assert!(hold.as_mut().poll(&mut cx).is_pending());
    let mut request = frame(20, &[b'r'; 20]);
    assert_eq!(futures::executor::block_on(read_frame(&mut request, &budget, true)).unwrap(), BUSY);
    assert_eq!(request.position(), 24, "drained");
    let mut reply = frame(20, &[b'r'; 20]);
    let err = futures::executor::block_on(read_frame(&mut reply, &budget, false)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{err}");
    let mut fits = frame(10, b"0123456789");
    assert_eq!(futures::executor::block_on(read_frame(&mut fits, &budget, false)).unwrap(), b"0123456789");
    drop(hold);
    assert_eq!(budget.left(), LARGE_FRAME_LANE + 1000);
}
