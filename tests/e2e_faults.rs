//! Crashes at the named points of a migration (spec §6), with real
//! processes: the hidden `igord node --fault <point>` makes a node exit
//! exactly there (as a SIGKILL landing there would), then the test restarts
//! it on the same data dir and checks the spec's outcome. And a peer that
//! sends malformed, truncated or oversized frames gets a closed stream (or an
//! error reply) while the node keeps serving.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test: real processes, files, a raw libp2p peer

mod e2e_support;

use e2e_support::*;
use igor::authority::AuthorityState;
use igor::migration::Outcome;
use igor::node::Event;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
/// Exit code of `igord node` ended by an injected fault (src/bin/igord/fault.rs).
const FAULT_EXIT_CODE: i32 = 86;

/// `migrate --wait`; its printed outcome. Exit 0 only on `completed`, 1 on
/// any other outcome (printed on stderr).
fn migrate(from: &NodeProc, to: &NodeProc) -> String {
    let out = igord(&["migrate", "counter", "--to", &to.addr, "--wait", "--data-dir", path(&from.dir)], T);
    let completed = out.1.contains(": completed");
    assert_eq!(out.0.code(), Some(if completed { 0 } else { 1 }), "migrate: {} {}", out.1, out.2);
    format!("{}{}", out.1, out.2)
}

fn tick_count(node: &NodeProc) -> usize {
    ticks(&node.events()).len()
}

/// `node` runs no tick for a while.
fn assert_silent(node: &NodeProc, why: &str) {
    let before = tick_count(node);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(tick_count(node), before, "{}: {why}", node.name);
}

fn state(node: &NodeProc) -> Option<AuthorityState> {
    node.agent_status().map(|s| s.state)
}

/// The target dies after assuming, before its confirmation leaves: the
/// source cannot know (ambiguous: RECOVERY_REQUIRED); the target keeps
/// authority after restart. Never two tickers.
#[test]
fn target_killed_before_confirming_keeps_authority_and_source_pauses() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = NodeProc::start("A", &dir_a, &[], &[]);
    let mut b = NodeProc::start("B", &dir_b, &[&a.addr], &["--fault", "target-exit-before-reply"]);
    deploy_counter(&a, "1");
    wait_until("A to tick", T, || a.agent_status().filter(|s| s.tick.0 >= 5));

    let out = migrate(&a, &b);
    assert!(out.contains(": ambiguous"), "the source cannot know the outcome: {out}");
    assert_eq!(b.wait_exit(T).code(), Some(FAULT_EXIT_CODE));
    assert_eq!(state(&a), Some(AuthorityState::RecoveryRequired));
    assert_silent(&a, "an ambiguous source pauses");
    let sealed = a
        .events()
        .iter()
        .find_map(|e| match &e.event {
            Event::CheckpointCommitted { tick, hash, handoff: true, .. } => Some((*tick, *hash)),
            _ => None,
        })
        .expect("A sealed the handoff checkpoint");

    drop(b);
    let b2 = NodeProc::start("B2", &dir_b, &[&a.addr], &[]);
    let loaded = b2.wait_event("B2 to load the agent", T, |e| matches!(e, Event::AgentLoaded { .. }));
    let Event::AgentLoaded { state: st, head_tick, head_hash, .. } = loaded.event else { unreachable!() };
    assert_eq!(st, AuthorityState::ActiveOwner, "target crashes after assuming: it keeps authority");
    assert_eq!((head_tick, head_hash), sealed, "B2 holds the package's checkpoint");
    let first = b2.wait_event("B2 to tick", T, |e| matches!(e, Event::TickStarted { .. }));
    assert!(matches!(first.event, Event::TickStarted { tick, .. } if tick.0 == sealed.0.0 + 1));
    wait_until("B2 to tick on", T, || b2.agent_status().filter(|s| s.ticks_here >= 5));
    assert_eq!(state(&a), Some(AuthorityState::RecoveryRequired), "A stays paused: never two tickers");
    assert_silent(&a, "the source must not tick while the target owns the agent");
}

/// The target dies as the package arrives, before its node sees it: the
/// source is in doubt (RECOVERY_REQUIRED); the target knows nothing after
/// restart; the operator recovers the agent on the source, which resumes
/// from its own newest checkpoint.
#[test]
fn target_killed_on_arrival_then_operator_recovers_on_source() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = NodeProc::start("A", &dir_a, &[], &[]);
    let mut b = NodeProc::start("B", &dir_b, &[&a.addr], &["--fault", "target-exit-on-package"]);
    deploy_counter(&a, "1");
    wait_until("A to tick", T, || a.agent_status().filter(|s| s.tick.0 >= 5));

    let out = migrate(&a, &b);
    assert!(out.contains(": ambiguous"), "{out}");
    assert_eq!(b.wait_exit(T).code(), Some(FAULT_EXIT_CODE));
    assert_eq!(state(&a), Some(AuthorityState::RecoveryRequired));
    drop(b);
    let b2 = NodeProc::start("B2", &dir_b, &[&a.addr], &[]);
    assert!(b2.agent_status().is_none(), "the target never stored the agent");

    let head = a.agent_status().and_then(|s| s.head_tick).expect("A has a head");
    // A's handoff to B is in doubt: B may own the agent, so a plain recover
    // is refused (spec §5) and names B; the operator checked B (above: it
    // never stored the agent) and forces.
    let out = igord(&["recover", "counter", "--data-dir", path(&a.dir)], T);
    assert!(!out.0.success() && out.2.contains("may hold the agent"), "recover: {} {}", out.1, out.2);
    let out = igord(&["recover", "counter", "--force", "--data-dir", path(&a.dir)], T);
    assert!(out.0.success(), "recover: {} {}", out.1, out.2);
    let rec = a.wait_event("A to recover", T, |e| matches!(e, Event::Recovered { .. }));
    let Event::Recovered { anchor_tick, epoch, .. } = rec.event else { unreachable!() };
    assert_eq!(anchor_tick, head, "recovery resumes from the source's newest checkpoint");
    assert!(epoch.major >= 2, "recovery moves to a new epoch");
    let after_recovery = |a: &NodeProc| {
        let ev = a.events();
        let at = ev.iter().position(|e| matches!(e.event, Event::Recovered { .. })).expect("recovered event");
        ticks(&ev[at..]).into_iter().map(|t| t.0).collect::<Vec<_>>()
    };
    let resumed = wait_until("A to tick again", T, || Some(after_recovery(&a)).filter(|t| t.len() >= 3));
    assert_consecutive("A after recovery", &resumed, head.0 + 1);
    assert_eq!(state(&a), Some(AuthorityState::ActiveOwner));
}

/// The source dies right after sending (the target confirmed, the source
/// never learned it): on restart the source is RECOVERY_REQUIRED, the
/// target owns and ticks.
#[test]
fn source_killed_after_sending_is_in_doubt_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut a = NodeProc::start("A", &dir_a, &[], &["--fault", "source-exit-after-send"]);
    let b = NodeProc::start("B", &dir_b, &[&a.addr], &[]);
    deploy_counter(&a, "1");
    wait_until("A to tick", T, || a.agent_status().filter(|s| s.tick.0 >= 5));

    // The client loses its node mid-command: its own outcome is an error.
    let out = igord(&["migrate", "counter", "--to", &b.addr, "--wait", "--data-dir", path(&dir_a)], T);
    assert!(!out.0.success(), "the source died mid-handoff: {} {}", out.1, out.2);
    assert_eq!(a.wait_exit(T).code(), Some(FAULT_EXIT_CODE));
    b.wait_event("B to assume", T, |e| matches!(e, Event::MigrationFinished { outcome: Outcome::Completed, .. }));
    drop(a);

    let a2 = NodeProc::start("A2", &dir_a, &[&b.addr], &[]);
    let loaded = a2.wait_event("A2 to load the agent", T, |e| matches!(e, Event::AgentLoaded { .. }));
    let Event::AgentLoaded { state: st, .. } = loaded.event else { unreachable!() };
    assert_eq!(st, AuthorityState::RecoveryRequired, "source crashed after relinquishing: RECOVERY_REQUIRED");
    wait_until("B to tick", T, || b.agent_status().filter(|s| s.ticks_here >= 5));
    assert_eq!(state(&b), Some(AuthorityState::ActiveOwner));
    assert_silent(&a2, "a source in doubt must not tick");
}

mod raw_peer {
    //! A libp2p peer that writes arbitrary frames on `/igor/migrate/1.0.0`.
    use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
    use libp2p::request_response::{self, OutboundFailure, ProtocolSupport};
    use libp2p::swarm::SwarmEvent;
    use libp2p::{Multiaddr, PeerId, StreamProtocol, noise, tcp, yamux};
    use std::io;
    use std::time::Duration;

    /// A frame as written: the declared length may lie.
    #[derive(Clone, Debug)]
    pub struct Frame {
        pub declared_len: u32,
        pub body: Vec<u8>,
    }

    #[derive(Clone, Default)]
    pub struct RawCodec;

    /// Largest reply this test peer reads.
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

    /// Send each frame on its own stream to `target`; collect the answers.
    pub async fn send_frames(target: Multiaddr, frames: Vec<Frame>) -> Vec<Answer> {
        let (peer, base) = igor::p2p::split_peer_addr(&target).expect("address with /p2p/");
        let cfg = request_response::Config::default().with_request_timeout(Duration::from_secs(20));
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
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
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
            .build();
        swarm.add_peer_address(peer, base);
        let mut answers = Vec::new();
        // One at a time, so each answer belongs to its frame.
        for f in frames {
            let id = swarm.behaviour_mut().send_request(&peer, f);
            let answer = loop {
                match swarm.select_next_some().await {
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Response { request_id, response },
                        ..
                    }) if request_id == id => break Answer::Reply(response),
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure { request_id, error, .. })
                        if request_id == id =>
                    {
                        break Answer::Failed(error);
                    }
                    _ => {}
                }
            };
            answers.push(answer);
        }
        answers
    }

    pub fn peer_of(addr: &Multiaddr) -> PeerId {
        igor::p2p::split_peer_addr(addr).expect("address with /p2p/").0
    }
}

/// Garbage, a truncated frame, a lying length prefix over the limit and a
/// wrong-protocol envelope: each ends in a closed stream or an error reply,
/// never a hang; afterwards the node still migrates an agent in.
#[test]
fn malformed_and_oversized_frames_close_the_stream_and_the_node_keeps_serving() {
    use raw_peer::{Answer, Frame};
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = NodeProc::start("A", &dir_a, &[], &[]);
    let mut b = NodeProc::start("B", &dir_b, &[&a.addr], &[]);
    let target: libp2p::Multiaddr = b.addr.parse().unwrap();
    assert_eq!(raw_peer::peer_of(&target).to_string(), b.peer_id());

    let frame = |body: &[u8]| Frame { declared_len: body.len() as u32, body: body.to_vec() };
    let oversized = u32::try_from(igor::p2p::MAX_FRAME_BYTES + 1).unwrap_or(u32::MAX);
    let frames = vec![
        frame(b"\xff\xfe garbage, not JSON"),
        frame(br#"{"Protocol":"/evil/1.0.0","Header":{},"Body":{}}"#),
        Frame { declared_len: 1000, body: b"{\"Protocol\":".to_vec() },
        Frame { declared_len: oversized, body: vec![b'{'; 4096] },
        frame(&[]),
    ];
    let n = frames.len();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let answers = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), raw_peer::send_frames(target, frames))
            .await
            .expect("every bad frame is answered or closed within 60 s")
    });
    assert_eq!(answers.len(), n);
    for (i, ans) in answers.iter().enumerate() {
        eprintln!("bad frame {i}: {ans:?}");
        match ans {
            Answer::Failed(libp2p::request_response::OutboundFailure::Timeout) => {
                panic!("frame {i}: the node left the stream hanging")
            }
            Answer::Failed(_) => {}
            Answer::Reply(body) => {
                // An error reply must not claim success.
                let text = String::from_utf8_lossy(body);
                assert!(!text.contains("\"Success\":true"), "frame {i}: {text}");
            }
        }
    }
    assert!(b.is_running(), "the node survived the bad frames");
    let faults = b
        .events()
        .iter()
        .filter(|e| matches!(&e.event, Event::FaultObserved { fault, .. } if fault.contains("malformed request")))
        .count();
    assert!(faults >= 2, "the node reports malformed requests it received ({faults})");

    // Still serving: a real migration into B completes.
    deploy_counter(&a, "1");
    wait_until("A to tick", T, || a.agent_status().filter(|s| s.tick.0 >= 3));
    let out = migrate(&a, &b);
    assert!(out.contains(": completed"), "{out}");
    wait_until("B to tick", T, || b.agent_status().filter(|s| s.ticks_here >= 3));
}
