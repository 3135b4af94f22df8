//! The real network adapter: the [`Network`] trait on libp2p (TCP + noise +
//! yamux, identify, ping, request-response on `/igor/migrate/1.0.0`). It
//! moves opaque bytes and nothing else: no protocol decisions live here. The
//! swarm runs in its own task; the node talks to it through channels. This
//! is the only module that may name libp2p types.
// A backend: its own sockets, and the swarm and reply tasks it spawns.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use crate::env::{Incoming, NetError, Network};
use crate::units::NodeId;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::core::upgrade::Version;
use libp2p::core::{Transport, muxing::StreamMuxerBox};
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, SwarmEvent, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, StreamProtocol, connection_limits, identify, noise, ping, tcp, yamux};
use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc, oneshot};

/// The one application protocol.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/igor/migrate/1.0.0");
/// Largest request or response body accepted on a stream. The protocol's own
/// limits (`wire::MAX_MESSAGE_BYTES`) apply after this; this bound only stops
/// a peer from making us buffer without end.
pub const MAX_FRAME_BYTES: usize = crate::wire::MAX_MESSAGE_BYTES;
/// Requests over this many bytes are *large* (packages) and draw from
/// [`LARGE_FRAME_LANE`]; those up to it are *ordinary* and draw from
/// [`ORDINARY_FRAME_LANE`]. Each holds only the bytes that have arrived.
pub const SMALL_FRAME_BYTES: usize = 1024 * 1024;
/// Large requests being read at once hold at most this many received bytes
/// together: one largest frame and 16 MiB beside it. A large request that
/// does not fit is read and dropped and answered [`BUSY`].
pub const LARGE_FRAME_LANE: usize = MAX_FRAME_BYTES + 16 * 1024 * 1024;
/// Ordinary requests being read at once hold at most this many received
/// bytes together; large requests never use it.
pub const ORDINARY_FRAME_LANE: usize = 16 * 1024 * 1024;
/// Both lanes: the inbound request buffering bound however many peers,
/// connections and streams send at once.
pub const INBOUND_FRAME_BUDGET: usize = LARGE_FRAME_LANE + ORDINARY_FRAME_LANE;
/// Largest reply this node reads (to its own requests: acknowledgements and
/// [`BUSY`], well under 1 KiB when honest). Replies are outside the budget:
/// refusing one for budget would turn a handoff's answer into `Lost`, an
/// ambiguous handoff (found by an outside tester: filling the ordinary lane
/// paused the agent). Their number is bounded by this node's own requests.
pub const MAX_REPLY_BYTES: usize = 1024 * 1024;
/// Transport safety net. Protocol deadlines live in the state machines and
/// are much shorter; this only reclaims streams of a vanished peer (and it
/// bounds how long a slow sender holds its share of the frame budget).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// A connection must finish TCP accept → multistream → noise → yamux within
/// this time; a socket that says nothing is closed and frees its pending slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// An established connection with no stream open is closed after this.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Pending (not yet authenticated) incoming connections, all sources
/// together, and from one IP address. Checked before the noise handshake.
/// One address can take at most a quarter of the slots, so idle sockets from
/// one place cannot lock every other peer out.
pub const MAX_PENDING_INCOMING: u32 = 64;
pub const MAX_PENDING_INCOMING_PER_IP: u32 = 16;
/// Established connections: in total, incoming, per peer id and (incoming)
/// per IP address (peer ids cost nothing to make; addresses do).
pub const MAX_ESTABLISHED: u32 = 256;
pub const MAX_ESTABLISHED_INCOMING: u32 = 128;
pub const MAX_ESTABLISHED_PER_PEER: u32 = 4;
pub const MAX_ESTABLISHED_INCOMING_PER_IP: u32 = 16;
/// Concurrent inbound+outbound request streams per connection, and inbound
/// streams still negotiating their protocol.
pub const MAX_CONCURRENT_STREAMS: usize = 32;
pub const MAX_NEGOTIATING_INBOUND_STREAMS: usize = 32;
/// yamux streams per connection, chosen for the receive windows it implies:
/// rust-yamux grows a busy stream's window beyond the default 256 KiB only
/// out of `1 GiB − streams × 256 KiB` (its connection window, not settable
/// through libp2p-yamux), shared by all streams of the connection. At 4093
/// that pool is 768 KiB, so no stream's window ever exceeds 1 MiB: a peer
/// never has credit for a frame above 1 MiB, and a sender that writes its
/// whole window as one frame (js-libp2p's bulk writes) stays within the
/// 1 MiB frame limit of rust-yamux, which otherwise closes the connection.
/// The stream *count* is bounded by the two limits above (excess streams
/// are reset by the swarm).
pub const YAMUX_MAX_STREAMS: usize = 4093;
/// The receive window every yamux stream starts with (the yamux default credit).
pub const YAMUX_STREAM_WINDOW: usize = 256 * 1024;
/// rust-yamux's connection receive window (its default) and frame limit.
const YAMUX_CONNECTION_WINDOW: usize = 1024 * 1024 * 1024;
const YAMUX_MAX_FRAME: usize = 1024 * 1024;
/// The largest receive window one stream can reach (see [`YAMUX_MAX_STREAMS`]).
pub const YAMUX_MAX_STREAM_WINDOW: usize =
    YAMUX_STREAM_WINDOW + (YAMUX_CONNECTION_WINDOW - YAMUX_MAX_STREAMS * YAMUX_STREAM_WINDOW);

mod frames;
mod limits;

pub use frames::{BUSY, FrameBudget, FrameCodec, FrameReservation};
pub use limits::{IpLimitExceeded, IpLimits};

#[derive(NetworkBehaviour)]
struct Behaviour {
    ip_limits: IpLimits,
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    rr: request_response::Behaviour<FrameCodec>,
}

/// Where the result of an outbound request goes.
type ReplyTo = oneshot::Sender<Result<Vec<u8>, NetError>>;
/// Outbound requests awaiting their response, by libp2p request id.
type PendingRequests = BTreeMap<OutboundRequestId, (NodeId, ReplyTo)>;

enum Cmd {
    Request { peer: PeerId, body: Vec<u8>, reply: ReplyTo },
    Respond { channel: request_response::ResponseChannel<Vec<u8>>, body: Vec<u8> },
    Dial { addr: Multiaddr },
}

/// Split `/ip4/…/tcp/…/p2p/<peer>` into the peer id and its address.
pub fn split_peer_addr(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut base = addr.clone();
    match base.pop() {
        Some(libp2p::multiaddr::Protocol::P2p(peer)) => Some((peer, base)),
        _ => None,
    }
}

/// Errors starting the network.
#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    #[error("libp2p transport setup: {0}")]
    Transport(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("peer address {addr} must end with /p2p/<peer id>")]
    PeerAddr { addr: Multiaddr },
}

/// A running libp2p node endpoint.
pub struct P2pNetwork {
    local: NodeId,
    cmds: mpsc::UnboundedSender<Cmd>,
    inbox: Mutex<mpsc::UnboundedReceiver<Incoming>>,
    /// Addresses we listen on, with `/p2p/<peer id>` appended.
    pub listen_addrs: Vec<Multiaddr>,
}

impl P2pNetwork {
    /// Build the swarm, listen on `listen`, dial `peers`, and spawn the swarm
    /// task on the current tokio runtime. Returns once listening.
    pub async fn start(
        key: libp2p::identity::Keypair,
        listen: Multiaddr,
        peers: &[Multiaddr],
    ) -> Result<P2pNetwork, P2pError> {
        let local_peer = key.public().to_peer_id();
        let local = NodeId::new(local_peer.to_string()).map_err(|e| P2pError::Transport(e.to_string()))?;
        let rr_config = request_response::Config::default()
            .with_request_timeout(REQUEST_TIMEOUT)
            .with_max_concurrent_streams(MAX_CONCURRENT_STREAMS);
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
            .with_max_established(Some(MAX_ESTABLISHED))
            .with_max_established_incoming(Some(MAX_ESTABLISHED_INCOMING))
            .with_max_established_per_peer(Some(MAX_ESTABLISHED_PER_PEER));
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|k| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                let mut mux = yamux::Config::default();
                mux.set_max_num_streams(YAMUX_MAX_STREAMS);
                // Our own handshake deadline (the builder's `with_tcp`
                // leaves it to libp2p, which closed silent sockets after
                // 10 s): a silent socket frees its pending slot in 5 s.
                Ok(tcp::tokio::Transport::new(tcp::Config::default())
                    .upgrade(Version::V1Lazy)
                    .authenticate(noise::Config::new(k)?)
                    .multiplex(mux)
                    .timeout(HANDSHAKE_TIMEOUT)
                    .map(|(p, c), _| (p, StreamMuxerBox::new(c))))
            })
            .map_err(|e| P2pError::Transport(e.to_string()))?
            .with_behaviour(|k| Behaviour {
                ip_limits: IpLimits::default(),
                limits: connection_limits::Behaviour::new(limits),
                identify: identify::Behaviour::new(identify::Config::new("/igor/1.0.0".into(), k.public())),
                ping: ping::Behaviour::new(ping::Config::new()),
                rr: request_response::Behaviour::with_codec(
                    FrameCodec::default(),
                    [(PROTOCOL, ProtocolSupport::Full)],
                    rr_config,
                ),
            })
            .map_err(|e| P2pError::Transport(e.to_string()))?
            .with_swarm_config(|c| {
                c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT)
                    .with_max_negotiating_inbound_streams(MAX_NEGOTIATING_INBOUND_STREAMS)
            })
            .build();
        swarm
            .listen_on(listen.clone())
            .map_err(|e| P2pError::Listen { addr: listen.clone(), reason: e.to_string() })?;
        let listen_addrs = loop {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { address, .. } => {
                    break vec![address.with(libp2p::multiaddr::Protocol::P2p(local_peer))];
                }
                SwarmEvent::ListenerError { error, .. } | SwarmEvent::ListenerClosed { reason: Err(error), .. } => {
                    return Err(P2pError::Listen { addr: listen, reason: error.to_string() });
                }
                _ => {}
            }
        };
        for addr in peers {
            let (peer, base) = split_peer_addr(addr).ok_or_else(|| P2pError::PeerAddr { addr: addr.clone() })?;
            swarm.add_peer_address(peer, base);
        }
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        tokio::spawn(run_swarm(swarm, cmd_rx, cmd_tx.clone(), in_tx));
        Ok(P2pNetwork { local, cmds: cmd_tx, inbox: Mutex::new(in_rx), listen_addrs })
    }

    pub fn local_id(&self) -> &NodeId {
        &self.local
    }

    /// Learn and dial a peer address (`…/p2p/<peer id>`).
    pub fn add_peer(&self, addr: Multiaddr) -> Result<NodeId, P2pError> {
        let (peer, _) = split_peer_addr(&addr).ok_or_else(|| P2pError::PeerAddr { addr: addr.clone() })?;
        let _ = self.cmds.send(Cmd::Dial { addr });
        NodeId::new(peer.to_string()).map_err(|e| P2pError::Transport(e.to_string()))
    }
}

/// The error libp2p-request-response reports when a connection already has
/// its `MAX_CONCURRENT_STREAMS` and a new request is not written at all.
const STREAM_LIMIT_ERROR: &str = "max sub-streams reached";

pub(crate) fn classify(peer: &NodeId, failure: OutboundFailure) -> NetError {
    let reason = failure.to_string();
    match failure {
        // Nothing reached the peer's application: safe to retry.
        OutboundFailure::DialFailure | OutboundFailure::UnsupportedProtocols => {
            NetError::Unreachable { peer: peer.clone(), reason }
        }
        // The connection's stream limit was reached before the request was
        // written (libp2p-request-response names this case only by its
        // message). Found by an outside reviewer: as `Lost` it made a handoff
        // ambiguous although nothing had been sent.
        OutboundFailure::Io(e) if e.to_string() == STREAM_LIMIT_ERROR => {
            NetError::Unreachable { peer: peer.clone(), reason }
        }
        // The request may have been read and acted on.
        OutboundFailure::Timeout | OutboundFailure::ConnectionClosed | OutboundFailure::Io(_) => {
            NetError::Lost { peer: peer.clone(), reason }
        }
    }
}

async fn run_swarm(
    mut swarm: libp2p::Swarm<Behaviour>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    cmd_tx: mpsc::UnboundedSender<Cmd>,
    inbox: mpsc::UnboundedSender<Incoming>,
) {
    let mut pending = PendingRequests::new();
    loop {
        tokio::select! {
            biased;
            cmd = cmds.recv() => match cmd {
                None => return,
                Some(Cmd::Request { peer, body, reply }) => {
                    let id = swarm.behaviour_mut().rr.send_request(&peer, body);
                    let node = NodeId::new(peer.to_string()).unwrap_or_else(|_| NodeId::new("unknown").expect("literal id is valid"));
                    pending.insert(id, (node, reply));
                }
                Some(Cmd::Respond { channel, body }) => {
                    // Err = the peer is gone; its request times out on its side.
                    let _ = swarm.behaviour_mut().rr.send_response(channel, body);
                }
                Some(Cmd::Dial { addr }) => {
                    if let Some((peer, base)) = split_peer_addr(&addr) {
                        swarm.add_peer_address(peer, base);
                    }
                    if let Err(e) = swarm.dial(addr.clone()) {
                        tracing::warn!(%addr, error = %e, "dial failed");
                    }
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(BehaviourEvent::Rr(ev)) => {
                    handle_rr(ev, &mut pending, &cmd_tx, &inbox);
                }
                SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                    for addr in info.listen_addrs {
                        swarm.add_peer_address(peer_id, addr);
                    }
                }
                SwarmEvent::ConnectionEstablished { peer_id, .. } => tracing::debug!(%peer_id, "connected"),
                SwarmEvent::IncomingConnectionError { error, .. } => tracing::debug!(%error, "incoming connection refused"),
                _ => {}
            },
        }
    }
}

fn handle_rr(
    ev: request_response::Event<Vec<u8>, Vec<u8>>,
    pending: &mut PendingRequests,
    cmd_tx: &mpsc::UnboundedSender<Cmd>,
    inbox: &mpsc::UnboundedSender<Incoming>,
) {
    match ev {
        request_response::Event::Message { peer, message, .. } => match message {
            request_response::Message::Request { request, channel, .. } if request == BUSY => {
                // Over the budget: the node never sees it; the sender learns
                // it was not delivered.
                tracing::debug!(%peer, "request over the inbound frame budget refused as busy");
                let _ = cmd_tx.send(Cmd::Respond { channel, body: BUSY.to_vec() });
            }
            request_response::Message::Request { request, channel, .. } => {
                let Ok(from) = NodeId::new(peer.to_string()) else { return };
                let (tx, rx) = oneshot::channel();
                if inbox.send(Incoming { from, body: request, reply: tx }).is_err() {
                    return;
                }
                let cmd_tx = cmd_tx.clone();
                tokio::spawn(async move {
                    // Dropped reply = the node refused to answer: close the stream.
                    if let Ok(body) = rx.await {
                        let _ = cmd_tx.send(Cmd::Respond { channel, body });
                    }
                });
            }
            request_response::Message::Response { request_id, response } => {
                if let Some((peer, reply)) = pending.remove(&request_id) {
                    let result = if response == BUSY {
                        let reason = "the peer's inbound frame budget is exhausted (request dropped unread)".into();
                        Err(NetError::Unreachable { peer, reason })
                    } else {
                        Ok(response)
                    };
                    let _ = reply.send(result);
                }
            }
        },
        request_response::Event::OutboundFailure { request_id, error, .. } => {
            if let Some((peer, reply)) = pending.remove(&request_id) {
                let _ = reply.send(Err(classify(&peer, error)));
            }
        }
        request_response::Event::InboundFailure { peer, error, .. } => {
            tracing::debug!(%peer, %error, "inbound request failed");
        }
        request_response::Event::ResponseSent { .. } => {}
    }
}

impl Network for P2pNetwork {
    async fn request(&self, to: &NodeId, body: Vec<u8>) -> Result<Vec<u8>, NetError> {
        if body.len() > MAX_FRAME_BYTES {
            return Err(NetError::TooLarge { peer: to.clone(), len: body.len(), limit: MAX_FRAME_BYTES });
        }
        let peer: PeerId = to
            .as_str()
            .parse()
            .map_err(|_| NetError::Unreachable { peer: to.clone(), reason: "not a libp2p peer id".into() })?;
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Request { peer, body, reply })
            .map_err(|_| NetError::Unreachable { peer: to.clone(), reason: "network stopped".into() })?;
        rx.await.map_err(|_| NetError::Lost { peer: to.clone(), reason: "network stopped".into() })?
    }

    async fn accept(&self) -> Option<Incoming> {
        self.inbox.lock().await.recv().await
    }
}

// No peer ever gets credit for a yamux frame above rust-yamux's frame limit.
const _: () = assert!(YAMUX_MAX_STREAMS * YAMUX_STREAM_WINDOW <= YAMUX_CONNECTION_WINDOW);
const _: () = assert!(YAMUX_MAX_STREAM_WINDOW <= YAMUX_MAX_FRAME);
const _: () = assert!(LARGE_FRAME_LANE >= MAX_FRAME_BYTES && SMALL_FRAME_BYTES <= ORDINARY_FRAME_LANE);

#[cfg(test)]
mod tests;
