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
/// All frames being read at once, over every connection and stream, may
/// declare at most this many bytes together: one largest frame plus 16 MiB
/// for ordinary traffic beside it. A frame whose declared length exceeds
/// what is left is refused before its body is read (the stream is reset),
/// so inbound buffering is bounded by this number however many peers,
/// connections and streams send at once.
pub const INBOUND_FRAME_BUDGET: usize = MAX_FRAME_BYTES + 16 * 1024 * 1024;
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

/// Length-prefixed (u32 big-endian) opaque frames with an explicit limit.
/// Every clone (one per connection handler) shares one [`FrameBudget`].
#[derive(Clone, Default)]
pub struct FrameCodec {
    budget: FrameBudget,
}

/// Bytes that frames being read may still declare ([`INBOUND_FRAME_BUDGET`]
/// at most), shared by every stream of every connection.
#[derive(Clone, Debug)]
pub struct FrameBudget {
    left: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Default for FrameBudget {
    fn default() -> Self {
        FrameBudget::new(INBOUND_FRAME_BUDGET)
    }
}

/// A reservation of `len` bytes of the budget, returned when dropped (the
/// frame was read, or the stream failed or timed out).
pub struct FrameReservation {
    left: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    len: usize,
}

impl Drop for FrameReservation {
    fn drop(&mut self) {
        self.left.fetch_add(self.len, std::sync::atomic::Ordering::AcqRel);
    }
}

impl FrameBudget {
    pub fn new(total: usize) -> Self {
        FrameBudget { left: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(total)) }
    }

    /// Bytes left to reserve.
    pub fn left(&self) -> usize {
        self.left.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Reserve `len` bytes, or `None` if less is left.
    pub fn reserve(&self, len: usize) -> Option<FrameReservation> {
        use std::sync::atomic::Ordering;
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(len))
            .ok()
            .map(|_| FrameReservation { left: self.left.clone(), len })
    }
}

/// The request a node reads, and the reply it sends, when a request frame
/// did not fit the inbound frame budget: the frame was read and dropped,
/// never shown to the node. Not JSON, so never a real envelope. The sender's
/// adapter maps this reply to `NetError::Unreachable` (provably not acted
/// on: safe to retry), not to `Lost` (a handoff would become ambiguous).
pub const BUSY: &[u8] = b"\0igor/busy: the receiver's inbound frame budget is exhausted";

/// Read one frame. A request (`drain_when_busy`) that does not fit the
/// budget is read and dropped, and [`BUSY`] returned in its place; a reply
/// that does not fit is an error.
async fn read_frame<T: futures::AsyncRead + Unpin + Send>(
    io: &mut T,
    budget: &FrameBudget,
    drain_when_busy: bool,
) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {len} bytes over {MAX_FRAME_BYTES}")));
    }
    let Some(_held) = budget.reserve(len) else {
        let left = budget.left();
        if drain_when_busy {
            // Read and drop the body (so the sender finishes writing and
            // reads the answer): it costs bandwidth, not memory.
            let mut chunk = vec![0u8; len.min(64 * 1024)];
            let mut seen = 0;
            while seen < len {
                let want = (len - seen).min(chunk.len());
                match io.read(&mut chunk[..want]).await? {
                    0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "busy frame ended early")),
                    n => seen += n,
                }
            }
            return Ok(BUSY.to_vec());
        }
        return Err(io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!("frame of {len} bytes over the {left} bytes left of the inbound frame budget"),
        ));
    };
    // Memory follows the bytes that arrive, not the declared length: the
    // reserved capacity is untouched (not resident) until written, and no
    // spare capacity is zeroed ahead of the data.
    let mut body = Vec::with_capacity(len);
    let mut chunk = vec![0u8; len.min(64 * 1024)];
    while body.len() < len {
        let want = (len - body.len()).min(chunk.len());
        let n = io.read(&mut chunk[..want]).await?;
        if n == 0 {
            let read = body.len();
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("frame of {len} bytes ended after {read}"),
            ));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(body)
}

async fn write_frame<T: futures::AsyncWrite + Unpin + Send>(io: &mut T, body: Vec<u8>) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&body).await?;
    io.close().await
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_frame(io, &self.budget, true).await
    }
    async fn read_response<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_frame(io, &self.budget, false).await
    }
    async fn write_request<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        write_frame(io, req).await
    }
    async fn write_response<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        write_frame(io, res).await
    }
}

/// Per-IP limits on incoming connections (libp2p's `connection_limits`
/// counts only globally and per peer id): pending ones before the
/// handshake, established ones after it.
#[derive(Default)]
pub struct IpLimits {
    pending: BTreeMap<IpAddr, u32>,
    established: BTreeMap<IpAddr, u32>,
    /// Which IP each counted connection came from, and whether it is
    /// counted as established (else pending).
    conns: BTreeMap<ConnectionId, (IpAddr, bool)>,
}

fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        libp2p::multiaddr::Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// Why a connection was refused by [`IpLimits`].
#[derive(Debug, thiserror::Error)]
#[error("{what} from {ip}: limit of {limit} reached")]
pub struct IpLimitExceeded {
    what: &'static str,
    ip: IpAddr,
    limit: u32,
}

impl IpLimits {
    fn release(&mut self, id: ConnectionId) {
        let Some((ip, established)) = self.conns.remove(&id) else { return };
        let counts = if established { &mut self.established } else { &mut self.pending };
        if let Some(n) = counts.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&ip);
            }
        }
    }

    /// Pending incoming connections from `ip` counted now.
    pub fn pending_from(&self, ip: &IpAddr) -> u32 {
        self.pending.get(ip).copied().unwrap_or(0)
    }
}

impl NetworkBehaviour for IpLimits {
    type ConnectionHandler = libp2p::swarm::dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip_of(remote) else { return Ok(()) };
        let n = self.pending.entry(ip).or_insert(0);
        if *n >= MAX_PENDING_INCOMING_PER_IP {
            let limit = MAX_PENDING_INCOMING_PER_IP;
            return Err(ConnectionDenied::new(IpLimitExceeded { what: "pending incoming connections", ip, limit }));
        }
        *n += 1;
        self.conns.insert(id, (ip, false));
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.release(id);
        let Some(ip) = ip_of(remote) else { return Ok(libp2p::swarm::dummy::ConnectionHandler) };
        let n = self.established.entry(ip).or_insert(0);
        if *n >= MAX_ESTABLISHED_INCOMING_PER_IP {
            let limit = MAX_ESTABLISHED_INCOMING_PER_IP;
            return Err(ConnectionDenied::new(IpLimitExceeded { what: "established incoming connections", ip, limit }));
        }
        *n += 1;
        self.conns.insert(id, (ip, true));
        Ok(libp2p::swarm::dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: libp2p::core::Endpoint,
        _port_use: libp2p::core::transport::PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(libp2p::swarm::dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(c) => self.release(c.connection_id),
            FromSwarm::ListenFailure(f) => self.release(f.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        std::task::Poll::Pending
    }
}

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

fn classify(peer: &NodeId, failure: OutboundFailure) -> NetError {
    let reason = failure.to_string();
    match failure {
        // Nothing reached the peer's application: safe to retry.
        OutboundFailure::DialFailure | OutboundFailure::UnsupportedProtocols => {
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
const _: () = assert!(INBOUND_FRAME_BUDGET >= MAX_FRAME_BYTES);

#[cfg(test)]
mod tests {
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
}
