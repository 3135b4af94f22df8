//! An adversarial suite against real `igord node` processes on loopback,
//! driven by a raw libp2p client built here (its own noise identity, yamux,
//! and frames written by hand on `/igor/migrate/1.0.0`): forged, unsigned,
//! lower-epoch, replayed and oversized transfers against a running agent;
//! idle-connection, stream and frame floods; concurrent control requests.
//! After each attack the agent still ticks, `igord verify` accepts its
//! history, and the node's peak RSS (VmHWM) stays under a stated bound.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // real processes, sockets, clocks

mod e2e_support;

use e2e_support::{NodeProc, agent, deploy_counter, igord, path, wait_until};
use igor::authority::AuthorityState;
use igor::checkpoint::{Checkpoint, Hash32};
use igor::control::AgentStatus;
use igor::units::{Epoch, NodeId};
use igor::wire::{AgentPackage, AgentTransfer, Body, Envelope, Header};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const T: Duration = Duration::from_secs(30);

mod raw {
    //! A libp2p peer that writes frames of its choosing, many at once.
    use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
    use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ProtocolSupport};
    use libp2p::swarm::SwarmEvent;
    use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, noise, tcp, yamux};
    use std::collections::BTreeMap;
    use std::io;
    use std::time::Duration;

    /// What to write on one stream: a length prefix (which may lie), then
    /// `body`, then `fill_len` bytes of `fill` (generated, not held), then
    /// close, or hang forever with the stream open if `hang`.
    #[derive(Clone, Debug, Default)]
    pub struct Frame {
        pub declared_len: u32,
        pub body: Vec<u8>,
        pub fill: u8,
        pub fill_len: usize,
        pub hang: bool,
    }

    impl Frame {
        pub fn of(body: Vec<u8>) -> Frame {
            Frame { declared_len: u32::try_from(body.len()).expect("small frame"), body, ..Frame::default() }
        }
    }

    #[derive(Clone, Default)]
    pub struct RawCodec;

    const MAX_REPLY: usize = 1 << 20;

    impl request_response::Codec for RawCodec {
        type Protocol = StreamProtocol;
        type Request = Frame;
        type Response = Vec<u8>;

        async fn read_request<T: futures::AsyncRead + Unpin + Send>(
            &mut self,
            _: &StreamProtocol,
            _: &mut T,
        ) -> io::Result<Frame> {
            Err(io::Error::other("this peer serves nothing"))
        }
        async fn read_response<T: futures::AsyncRead + Unpin + Send>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
        ) -> io::Result<Vec<u8>> {
            let mut len = [0u8; 4];
            io.read_exact(&mut len).await?;
            let len = u32::from_be_bytes(len) as usize;
            if len > MAX_REPLY {
                return Err(io::Error::other("reply too large"));
            }
            let mut body = vec![0u8; len];
            io.read_exact(&mut body).await?;
            Ok(body)
        }
        async fn write_request<T: futures::AsyncWrite + Unpin + Send>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            f: Frame,
        ) -> io::Result<()> {
            io.write_all(&f.declared_len.to_be_bytes()).await?;
            io.write_all(&f.body).await?;
            let chunk = vec![f.fill; 64 * 1024];
            let mut left = f.fill_len;
            while left > 0 {
                let n = left.min(chunk.len());
                io.write_all(&chunk[..n]).await?;
                left -= n;
            }
            io.flush().await?;
            if f.hang {
                futures::future::pending::<()>().await;
            }
            io.close().await
        }
        async fn write_response<T: futures::AsyncWrite + Unpin + Send>(
            &mut self,
            _: &StreamProtocol,
            _: &mut T,
            _: Vec<u8>,
        ) -> io::Result<()> {
            Err(io::Error::other("this peer serves nothing"))
        }
    }

    /// What came back for one frame.
    #[derive(Debug)]
    pub enum Answer {
        Reply(Vec<u8>),
        Failed(OutboundFailure),
    }

    pub struct Peer {
        pub swarm: Swarm<request_response::Behaviour<RawCodec>>,
        pub target: PeerId,
    }

    impl Peer {
        pub fn new(key: libp2p::identity::Keypair, target: &Multiaddr, timeout: Duration) -> Peer {
            let (peer, base) = igor::p2p::split_peer_addr(target).expect("address with /p2p/");
            let cfg =
                request_response::Config::default().with_request_timeout(timeout).with_max_concurrent_streams(1024);
            let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
                .with_tokio()
                .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
                .expect("tcp transport")
                .with_behaviour(|_| {
                    request_response::Behaviour::with_codec(
                        RawCodec,
                        [(StreamProtocol::new("/igor/migrate/1.0.0"), ProtocolSupport::Outbound)],
                        cfg,
                    )
                })
                .expect("behaviour")
                .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
                .build();
            swarm.add_peer_address(peer, base);
            Peer { swarm, target: peer }
        }

        /// Send every frame at once (one stream each, one connection);
        /// collect the answers in frame order.
        pub async fn send_all(&mut self, frames: Vec<Frame>) -> Vec<Answer> {
            let mut ids: BTreeMap<OutboundRequestId, usize> = BTreeMap::new();
            for (i, f) in frames.into_iter().enumerate() {
                ids.insert(self.swarm.behaviour_mut().send_request(&self.target, f), i);
            }
            let mut answers: Vec<Option<Answer>> = (0..ids.len()).map(|_| None).collect();
            while answers.iter().any(Option::is_none) {
                let (id, answer) = match self.swarm.select_next_some().await {
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Response { request_id, response },
                        ..
                    }) => (request_id, Answer::Reply(response)),
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure { request_id, error, .. }) => {
                        (request_id, Answer::Failed(error))
                    }
                    _ => continue,
                };
                if let Some(i) = ids.get(&id) {
                    answers[*i] = Some(answer);
                }
            }
            answers.into_iter().map(|a| a.expect("every answer collected")).collect()
        }
    }
}

fn unix_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn status_of(node: &NodeProc) -> AgentStatus {
    node.agent_status().expect("the node lists the agent")
}

/// The agent on `node` is still its ACTIVE_OWNER under the same major
/// epoch (lease renewals move only the generation) and ticks on.
fn assert_still_ticking(node: &NodeProc, epoch: Epoch, what: &str) {
    let before = status_of(node);
    assert_eq!((before.state, before.epoch.major), (AuthorityState::ActiveOwner, epoch.major), "{what}: {before:?}");
    wait_until(&format!("{what}: the agent to keep ticking"), T, || {
        node.agent_status().filter(|s| s.ticks_here >= before.ticks_here + 3)
    });
}

/// `igord verify` accepts the agent's history on `dir`.
fn assert_history_verifies(dir: &Path, what: &str) {
    let out = igord(&["verify", path(&dir.join("history/counter"))], T);
    assert!(out.0.success(), "{what}: igord verify: {} {}", out.1, out.2);
}

/// The newest checkpoint in `dir/history/counter`: (bytes, decoded).
fn newest_checkpoint(dir: &Path) -> (Vec<u8>, Checkpoint) {
    let (_, bytes) = e2e_support::history(dir).pop().expect("a checkpoint");
    let c = Checkpoint::decode(&bytes).expect("own checkpoint decodes");
    (bytes, c)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Forged (claims another issuer), unsigned, lower-epoch, replayed and
/// oversized transfers of the agent B runs, from an anonymous peer. None
/// may stop, fork or pause it.
#[test]
fn forged_unsigned_stale_replayed_and_oversized_transfers_leave_the_agent_running() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let b = NodeProc::start("B", &dir, &[], &[]);
    deploy_counter(&b, "1");
    wait_until("B to checkpoint", T, || b.agent_status().filter(|s| s.head_tick.is_some_and(|t| t.0 >= 2)));
    let epoch = status_of(&b).epoch;
    let base_rss = b.peak_rss_kib();

    let key = libp2p::identity::Keypair::generate_ed25519();
    let me = NodeId::new(key.public().to_peer_id().to_string()).unwrap();
    let someone = NodeId::new(libp2p::identity::Keypair::generate_ed25519().public().to_peer_id().to_string()).unwrap();
    let target: libp2p::Multiaddr = b.addr.parse().unwrap();
    let audience = NodeId::new(b.peer_id()).unwrap();
    let (ckpt_bytes, ckpt) = newest_checkpoint(&dir);
    let wasm = igor::sandbox::wasm_binary(&std::fs::read(e2e_support::counter_wat()).unwrap()).unwrap();
    let transfer = |issuer: &NodeId, epoch: Epoch, nonce: u64, wasm: Vec<u8>| {
        let header = Header {
            issuer: issuer.clone(),
            audience: audience.clone(),
            agent: agent(),
            epoch,
            head_tick: ckpt.tick,
            head_hash: Hash32::of(&ckpt_bytes),
            nonce,
            issued_unix_ns: unix_ns(),
            expiry_unix_ns: unix_ns() + 10_000_000_000,
        };
        let package = AgentPackage {
            agent_id: agent(),
            wasm_hash: Hash32::of(&wasm).0.to_vec(),
            wasm_binary: wasm,
            checkpoint: ckpt_bytes.clone(),
            manifest_data: b"{}".to_vec(),
            budget: ckpt.budget.0,
            price_per_second: ckpt.price_per_second.0,
            replay_data: None,
            agent_identity: None,
            receipts: None,
            kv: None,
        };
        let body = Body::AgentTransfer(Box::new(AgentTransfer { package, source_node_id: issuer.clone() }));
        raw::Frame::of(Envelope::new(header, body).encode())
    };
    let higher = Epoch::new(epoch.major + 1, 0);
    let unsigned = transfer(&me, higher, 7, wasm.clone());
    let frames = vec![
        ("forged issuer", transfer(&someone, higher, 1, wasm.clone())),
        ("unsigned, higher epoch", unsigned.clone()),
        ("lower epoch", transfer(&me, Epoch::new(0, 0), 2, wasm.clone())),
        ("replayed", unsigned.clone()),
        ("replayed again", unsigned),
        ("genuine checkpoint, same epoch", transfer(&me, epoch, 3, wasm.clone())),
        ("oversized wasm field", transfer(&me, higher, 4, vec![0u8; igor::wire::MAX_WASM_BYTES + 1])),
        (
            "oversized frame",
            raw::Frame {
                declared_len: u32::try_from(igor::p2p::MAX_FRAME_BYTES + 1).unwrap(),
                body: vec![b'{'; 4096],
                ..raw::Frame::default()
            },
        ),
    ];
    let answers = rt().block_on(async {
        let mut peer = raw::Peer::new(key, &target, Duration::from_secs(30));
        let mut out = Vec::new();
        for (what, f) in &frames {
            let a = tokio::time::timeout(Duration::from_secs(60), peer.send_all(vec![f.clone()]))
                .await
                .unwrap_or_else(|_| panic!("{what}: no answer or reset within 60 s"));
            out.extend(a);
        }
        out
    });
    for ((what, _), answer) in frames.iter().zip(&answers) {
        if let raw::Answer::Failed(libp2p::request_response::OutboundFailure::Timeout) = answer {
            panic!("{what}: the node left the stream hanging");
        }
        if let raw::Answer::Reply(body) = answer {
            let text = String::from_utf8_lossy(body);
            let error = text.split("\"Error\":").nth(1).unwrap_or("-");
            eprintln!("{what}: refused: {error}");
            assert!(text.contains("\"Success\":false"), "{what}: must be refused: {text}");
        }
    }
    assert_still_ticking(&b, epoch, "after the bad transfers");
    assert_history_verifies(&dir, "after the bad transfers");
    let peak = b.peak_rss_kib();
    eprintln!("bad transfers: VmHWM {} MiB (before {} MiB)", peak / 1024, base_rss / 1024);
    assert!(peak < base_rss + 256 * 1024, "peak RSS {peak} KiB grew by more than 256 MiB over {base_rss} KiB");
}

/// Found 4: 16 idle TCP connections locked every new peer out (the pending
/// limit was global and nothing timed a silent handshake out); a migration
/// to the node then failed. Now 80 silent sockets from another loopback
/// address (kept open and reopened for the whole test) leave room for A.
#[test]
fn idle_connection_flood_from_one_address_does_not_lock_out_a_migration() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = NodeProc::start("A", &dir_a, &[], &[]);
    let b = NodeProc::start("B", &dir_b, &[], &[]);
    let port: u16 = b.addr.split("/tcp/").nth(1).and_then(|p| p.split('/').next()).unwrap().parse().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let mut held: Vec<tokio::net::TcpStream> = Vec::new();
                let mut opened = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && opened < 5_000 {
                    held.retain(|s| s.peer_addr().is_ok());
                    while held.len() < 80 {
                        let sock = tokio::net::TcpSocket::new_v4().unwrap();
                        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                        match tokio::time::timeout(Duration::from_secs(2), sock.connect(([127, 0, 0, 1], port).into()))
                            .await
                        {
                            Ok(Ok(s)) => held.push(s),
                            _ => break,
                        }
                        opened += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                opened
            })
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    deploy_counter(&a, "1");
    wait_until("A to tick", T, || a.agent_status().filter(|s| s.tick.0 >= 3));
    let out =
        igord(&["migrate", "counter", "--to", &b.addr, "--wait", "--data-dir", path(&dir_a)], Duration::from_secs(150));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = flood.join().unwrap();
    eprintln!("idle sockets opened from 127.0.0.2: {opened}");
    assert!(out.0.success() && out.1.contains(": completed"), "migration under an idle-connection flood: {out:?}");
    let epoch = wait_until("B to own", T, || b.agent_status().filter(|s| s.ticks_here >= 2)).epoch;
    assert_still_ticking(&b, epoch, "after the idle flood");
    assert_history_verifies(&dir_b, "after the idle flood");
}

/// 16 silent sockets from 127.0.0.1 (the address every local peer shares,
/// so the per-IP limit does not help here) are closed by the node once
/// `p2p::HANDSHAKE_TIMEOUT` (5 s) passes, and a migration from 127.0.0.1
/// then completes. (The node before this change closed them after 10 s.)
#[test]
fn silent_sockets_are_closed_after_the_handshake_timeout() {
    use std::io::Read;
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = NodeProc::start("A", &dir_a, &[], &[]);
    let b = NodeProc::start("B", &dir_b, &[], &[]);
    let port: u16 = b.addr.split("/tcp/").nth(1).and_then(|p| p.split('/').next()).unwrap().parse().unwrap();
    let mut silent: Vec<std::net::TcpStream> =
        (0..16).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect")).collect();
    let limit = igor::p2p::HANDSHAKE_TIMEOUT + Duration::from_secs(3);
    for s in &mut silent {
        s.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 256];
        // The node speaks first (multistream-select) or not at all; either
        // way the socket must end (EOF or reset) within the timeout.
        let start = std::time::Instant::now();
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            assert!(start.elapsed() < limit, "a silent socket stayed open past the handshake timeout");
        }
        assert!(start.elapsed() < limit, "a silent socket stayed open past the handshake timeout");
    }
    deploy_counter(&a, "1");
    wait_until("A to tick", T, || a.agent_status().filter(|s| s.tick.0 >= 3));
    let out =
        igord(&["migrate", "counter", "--to", &b.addr, "--wait", "--data-dir", path(&dir_a)], Duration::from_secs(150));
    assert!(out.0.success() && out.1.contains(": completed"), "migration after silent sockets: {out:?}");
}

/// Found 5: one connection with four streams each declaring ~240 MiB took
/// the node from 10 MB to 420 MB RSS in 2 s (frames were buffered whole,
/// with no overall cap). Now frames share one budget
/// (`p2p::INBOUND_FRAME_BUDGET`); a stream declaring more than is left is
/// dropped before its body is read (the budget logic itself is unit-tested
/// in `p2p::tests`). Here: the peak RSS while the four streams push as fast
/// as they can for 40 s is printed and bounded, and the agent ticks on.
#[test]
fn frame_flood_on_four_streams_stays_within_the_inbound_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let b = NodeProc::start("B", &dir, &[], &[]);
    deploy_counter(&b, "1");
    let epoch = wait_until("B to tick", T, || b.agent_status().filter(|s| s.ticks_here >= 3)).epoch;
    let base_rss = b.peak_rss_kib();
    let target: libp2p::Multiaddr = b.addr.parse().unwrap();
    let declared = 240 * 1024 * 1024u32;
    let frames: Vec<raw::Frame> = (0..4)
        .map(|i| raw::Frame {
            declared_len: declared,
            fill: b'a' + i,
            fill_len: declared as usize,
            ..raw::Frame::default()
        })
        .collect();
    let answers = rt().block_on(async {
        let mut peer = raw::Peer::new(libp2p::identity::Keypair::generate_ed25519(), &target, Duration::from_secs(40));
        tokio::time::timeout(Duration::from_secs(60), peer.send_all(frames)).await.expect("the flood ends within 60 s")
    });
    for (i, a) in answers.iter().enumerate() {
        match a {
            raw::Answer::Reply(r) => eprintln!("stream {i}: reply {:?}", String::from_utf8_lossy(r)),
            raw::Answer::Failed(f) => eprintln!("stream {i}: failed: {f}"),
        }
    }
    let peak = b.peak_rss_kib();
    let budget_kib = (igor::p2p::INBOUND_FRAME_BUDGET as u64) / 1024;
    eprintln!(
        "frame flood: VmHWM {} MiB (before {} MiB, budget {} MiB)",
        peak / 1024,
        base_rss / 1024,
        budget_kib / 1024
    );
    // One frame's worth at most (it is read, then refused as not JSON),
    // plus 64 MiB for yamux windows and allocator slack.
    let bound = base_rss + budget_kib + 64 * 1024;
    assert!(peak < bound, "peak RSS {peak} KiB over {bound} KiB");
    // One frame fits the budget (and is then refused as not an envelope:
    // a closed stream); the other three are drained and answered busy.
    let busy = answers.iter().filter(|a| matches!(a, raw::Answer::Reply(r) if r == igor::p2p::BUSY)).count();
    assert_eq!(busy, 3, "three of four 240 MiB frames do not fit the budget at once");
    assert!(
        answers.iter().all(|a| !matches!(a, raw::Answer::Reply(r) if r != igor::p2p::BUSY)),
        "no frame is believed"
    );
    assert_still_ticking(&b, epoch, "after the frame flood");
    assert_history_verifies(&dir, "after the frame flood");
}

/// 600 streams on one connection that declare a frame and then hang, while
/// A migrates the agent in: the extra streams are reset, the hung ones
/// time out, the migration completes and the agent ticks on B.
#[test]
fn stream_flood_does_not_stop_a_migration_or_the_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = NodeProc::start("A", &dir_a, &[], &[]);
    let b = NodeProc::start("B", &dir_b, &[], &[]);
    let base_rss = b.peak_rss_kib();
    deploy_counter(&a, "1");
    wait_until("A to tick", T, || a.agent_status().filter(|s| s.tick.0 >= 3));
    let target: libp2p::Multiaddr = b.addr.parse().unwrap();
    let rt = rt();
    let flood = rt.spawn(async move {
        let mut peer = raw::Peer::new(libp2p::identity::Keypair::generate_ed25519(), &target, Duration::from_secs(20));
        let frames =
            (0..600).map(|_| raw::Frame { declared_len: 1024, body: vec![b'{'; 16], hang: true, ..Default::default() });
        tokio::time::timeout(Duration::from_secs(60), peer.send_all(frames.collect())).await
    });
    std::thread::sleep(Duration::from_secs(2));
    let out =
        igord(&["migrate", "counter", "--to", &b.addr, "--wait", "--data-dir", path(&dir_a)], Duration::from_secs(150));
    assert!(out.0.success() && out.1.contains(": completed"), "migration under a stream flood: {out:?}");
    let answers = rt.block_on(flood).unwrap().expect("the flood ends within 60 s");
    let replied = answers.iter().filter(|a| matches!(a, raw::Answer::Reply(_))).count();
    assert_eq!(replied, 0, "hung frames get no answer");
    let epoch = wait_until("B to own", T, || b.agent_status().filter(|s| s.ticks_here >= 2)).epoch;
    assert_still_ticking(&b, epoch, "after the stream flood");
    assert_history_verifies(&dir_b, "after the stream flood");
    let peak = b.peak_rss_kib();
    eprintln!("stream flood: VmHWM {} MiB (before {} MiB)", peak / 1024, base_rss / 1024);
    assert!(peak < base_rss + 256 * 1024, "peak RSS {peak} KiB");
}

/// Found by an outside tester (against the first fix of found 6): replies
/// were read from the ordinary lane, so a peer that filled the *source's*
/// lane with bytes it really sent (24 streams of 1 MiB less a byte, then a
/// stall) made the source refuse the target's answer to its own package:
/// `Lost`, an ambiguous handoff, the agent paused in RECOVERY_REQUIRED.
/// Replies are outside the budget now: the migration completes.
#[test]
fn a_full_ordinary_lane_on_the_source_does_not_make_a_handoff_ambiguous() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = NodeProc::start("A", &dir_a, &[], &[]);
    let b = NodeProc::start("B", &dir_b, &[], &[]);
    deploy_counter(&a, "1");
    wait_until("A to tick", T, || a.agent_status().filter(|s| s.tick.0 >= 3));
    let source: libp2p::Multiaddr = a.addr.parse().unwrap();
    let rt = rt();
    let fill = rt.spawn(async move {
        let mut peer = raw::Peer::new(libp2p::identity::Keypair::generate_ed25519(), &source, Duration::from_secs(60));
        let mib = 1024 * 1024;
        let frames = (0..24).map(|_| raw::Frame {
            declared_len: mib as u32,
            fill: b'f',
            fill_len: mib - 1,
            hang: true,
            ..Default::default()
        });
        tokio::time::timeout(Duration::from_secs(90), peer.send_all(frames.collect())).await
    });
    std::thread::sleep(Duration::from_secs(5));
    let out =
        igord(&["migrate", "counter", "--to", &b.addr, "--wait", "--data-dir", path(&dir_a)], Duration::from_secs(150));
    assert!(out.0.success() && out.1.contains(": completed"), "migration beside a full ordinary lane: {out:?}");
    let epoch = wait_until("B to own", T, || b.agent_status().filter(|s| s.ticks_here >= 2)).epoch;
    assert_still_ticking(&b, epoch, "after the migration");
    fill.abort();
}

/// Many control clients at once, mixing reads with commands the node must
/// refuse: every client gets one well-formed reply, the agent ticks on.
#[test]
fn concurrent_control_requests_are_each_answered_and_the_agent_ticks_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    let a = NodeProc::start("A", &dir, &[], &[]);
    deploy_counter(&a, "1");
    let epoch = wait_until("A to tick", T, || a.agent_status().filter(|s| s.ticks_here >= 3)).epoch;
    let d = path(&dir).to_string();
    let codes: Vec<(String, Option<i32>)> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for i in 0..24 {
            let d = d.clone();
            handles.push(s.spawn(move || {
                let args: Vec<String> = match i % 4 {
                    0 => vec!["agents".into(), "--json".into()],
                    1 => vec!["recover".into(), "counter".into(), "--anchor".into(), "00".repeat(32)],
                    2 => vec![
                        "migrate".into(),
                        "ghost".into(),
                        "--to".into(),
                        "12D3KooWRBhwfeP2Y9CDkFRBAZ1pmxUadH36TKuk3KtKm5XXP8mA".into(),
                    ],
                    _ => vec!["agents".into()],
                };
                let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
                all.extend(["--data-dir", &d]);
                let out = igord(&all, Duration::from_secs(60));
                (args.join(" "), out.0.code())
            }));
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (what, code) in &codes {
        let expect = if what.starts_with("agents") { 0 } else { 1 };
        assert_eq!(*code, Some(expect), "{what}");
    }
    assert_still_ticking(&a, epoch, "after the control storm");
    assert_history_verifies(&dir, "after the control storm");
}

/// Found 6 (an outside tester): a peer with no credentials declared a
/// largest frame and a 16 MiB frame, never sent them, and every request to
/// the node was answered busy, migrations included. Declared lengths hold
/// nothing now: honest requests of every size pass beside such streams.
/// A peer that really *sends* most of the large lane and stalls is what
/// makes a large request busy: it is read and dropped, and its sender gets
/// `Unreachable` (provably not delivered: a handoff retries or stays on the
/// source), never `Lost` (which would make a handoff ambiguous and pause
/// the agent). Ordinary requests still pass beside it.
#[test]
fn a_request_over_the_budget_is_refused_as_not_delivered() {
    use igor::env::{NetError, Network};
    use igor::p2p::P2pNetwork;
    rt().block_on(async {
        let listen: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
        let key = |b: u8| libp2p::identity::Keypair::ed25519_from_bytes([b; 32]).unwrap();
        let b = std::sync::Arc::new(P2pNetwork::start(key(2), listen.clone(), &[]).await.unwrap());
        let b_addr = b.listen_addrs[0].clone();
        let echo = b.clone();
        tokio::spawn(async move {
            while let Some(inc) = echo.accept().await {
                let _ = inc.reply.send(format!("got {} bytes", inc.body.len()).into_bytes());
            }
        });
        let a = P2pNetwork::start(key(1), listen, std::slice::from_ref(&b_addr)).await.unwrap();
        let b_id = b.local_id().clone();
        let ask = |body: Vec<u8>| {
            let (a, b_id) = (&a, &b_id);
            async move { tokio::time::timeout(Duration::from_secs(60), a.request(b_id, body)).await.expect("answered") }
        };
        let max = u32::try_from(igor::p2p::MAX_FRAME_BYTES).unwrap();
        let declared = [max, 16 * 1024 * 1024]
            .map(|declared_len| raw::Frame { declared_len, hang: true, ..Default::default() })
            .to_vec();
        let mut liar = raw::Peer::new(key(3), &b_addr, Duration::from_secs(60));
        let lies = tokio::spawn(async move { liar.send_all(declared).await });
        tokio::time::sleep(Duration::from_secs(2)).await;
        for len in [2, 300 * 1024, 32 * 1024 * 1024] {
            let res = ask(vec![b'{'; len]).await;
            assert_eq!(
                res.unwrap(),
                format!("got {len} bytes").into_bytes(),
                "{len} bytes beside declared-only frames"
            );
        }
        lies.abort();

        // All but the last byte of a largest frame, really sent, then a stall.
        let fill_len = igor::p2p::MAX_FRAME_BYTES - 1;
        let hog = raw::Frame { declared_len: max, fill: b'h', fill_len, hang: true, ..Default::default() };
        let mut attacker = raw::Peer::new(key(4), &b_addr, Duration::from_secs(90));
        let held = tokio::spawn(async move { attacker.send_all(vec![hog]).await });
        // Until the hog's bytes have arrived the request still fits; then it
        // must be refused as not delivered (bounded: 60 s).
        let until = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match ask(vec![b'{'; 32 * 1024 * 1024]).await {
                Err(NetError::Unreachable { reason, .. }) => {
                    assert!(reason.contains("budget"), "{reason}");
                    break;
                }
                Ok(_) if std::time::Instant::now() < until => tokio::time::sleep(Duration::from_secs(1)).await,
                other => panic!("a request over the budget must be 'not delivered', got {other:?}"),
            }
        }
        for len in [2, 300 * 1024] {
            let res = ask(vec![b'{'; len]).await;
            assert_eq!(res.unwrap(), format!("got {len} bytes").into_bytes(), "{len} bytes beside a full large lane");
        }
        held.abort();
    });
}
