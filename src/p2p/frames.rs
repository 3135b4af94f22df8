//! The wire framing of the one application protocol: length-prefixed
//! (u32 big-endian) opaque frames. Requests from peers are read within a
//! node-wide inbound byte budget ([`FrameBudget`]) of two lanes, each frame
//! holding only the bytes that really arrived, so a peer can neither make
//! the node buffer without end nor hold the budget by declaring lengths;
//! over budget, a request is read and dropped and answered [`BUSY`].
//! Replies (to this node's own requests) never touch the budget: they are
//! small and bounded in number, and refusing one would turn a handoff's
//! answer into `Lost`, an ambiguous handoff, a paused agent.

use super::*;

/// Length-prefixed (u32 big-endian) opaque frames with an explicit limit.
/// Every clone (one per connection handler) shares one [`FrameBudget`].
#[derive(Clone, Default)]
pub struct FrameCodec {
    budget: FrameBudget,
}

/// The inbound request budget, shared by every stream of every connection,
/// in two lanes: **ordinary** requests (at most [`SMALL_FRAME_BYTES`]:
/// announcements, recovery queries, small packages) draw from
/// [`ORDINARY_FRAME_LANE`], **large** ones (packages) from
/// [`LARGE_FRAME_LANE`], so large frames never crowd out ordinary ones.
/// A frame reserves its bytes as they arrive, not its declared length.
///
/// Found 6 (an outside tester): with one pool reserved by declared length,
/// a peer with no credentials declared a largest frame and a 16 MiB frame,
/// sent only the length prefixes and trickled: every request to the node
/// was answered busy for up to 120 s, migrations included.
#[derive(Clone, Debug)]
pub struct FrameBudget {
    large: Lane,
    ordinary: Lane,
}

#[derive(Clone, Debug)]
struct Lane(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Lane {
    fn new(total: usize) -> Self {
        Lane(std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(total)))
    }

    fn left(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A reservation of nothing yet, grown as bytes arrive.
    fn empty_reservation(&self) -> FrameReservation {
        FrameReservation { left: self.0.clone(), len: 0 }
    }

    fn reserve(&self, len: usize) -> Option<FrameReservation> {
        use std::sync::atomic::Ordering;
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(len))
            .ok()
            .map(|_| FrameReservation { left: self.0.clone(), len })
    }
}

impl Default for FrameBudget {
    fn default() -> Self {
        FrameBudget::new(LARGE_FRAME_LANE, ORDINARY_FRAME_LANE)
    }
}

/// A reservation of `len` bytes of a lane, returned when dropped (the frame
/// was read, or the stream failed or timed out).
pub struct FrameReservation {
    left: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    len: usize,
}

impl FrameReservation {
    /// Grow this reservation by `more` bytes of the same lane, or `false`
    /// (unchanged) if less is left.
    fn grow(&mut self, more: usize) -> bool {
        use std::sync::atomic::Ordering;
        let ok = self.left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(more)).is_ok();
        if ok {
            self.len += more;
        }
        ok
    }
}

impl Drop for FrameReservation {
    fn drop(&mut self) {
        self.left.fetch_add(self.len, std::sync::atomic::Ordering::AcqRel);
    }
}

impl FrameBudget {
    pub fn new(large: usize, ordinary: usize) -> Self {
        FrameBudget { large: Lane::new(large), ordinary: Lane::new(ordinary) }
    }

    /// Bytes left to reserve, both lanes together.
    pub fn left(&self) -> usize {
        self.large.left() + self.ordinary.left()
    }

    /// Reserve `len` bytes of the large-frame lane, or `None` if less is
    /// left (what a large frame in flight holds).
    pub fn reserve(&self, len: usize) -> Option<FrameReservation> {
        self.large.reserve(len)
    }
}

/// The request a node reads, and the reply it sends, when a request frame
/// did not fit the inbound frame budget: the frame was read and dropped,
/// never shown to the node. Not JSON, so never a real envelope. The sender's
/// adapter maps this reply to `NetError::Unreachable` (provably not acted
/// on: safe to retry), not to `Lost` (a handoff would become ambiguous).
pub const BUSY: &[u8] = b"\0igor/busy: the receiver's inbound frame budget is exhausted";

/// Read and drop `len` more bytes (so the sender finishes writing and reads
/// the answer): it costs bandwidth, not memory.
async fn drain<T: futures::AsyncRead + Unpin + Send>(io: &mut T, len: usize) -> io::Result<()> {
    let mut chunk = [0u8; READ_CHUNK];
    let mut seen = 0;
    while seen < len {
        let want = (len - seen).min(chunk.len());
        match io.read(&mut chunk[..want]).await? {
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "busy frame ended early")),
            n => seen += n,
        }
    }
    Ok(())
}

/// Bytes read from a stream at a time: the only memory a request being
/// read holds outside the budget.
const READ_CHUNK: usize = 8 * 1024;

fn ended_early(len: usize, read: usize) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("frame of {len} bytes ended after {read}"))
}

/// Read one frame. A request (`is_request`) draws from its lane of the
/// budget as its bytes arrive; one that does not fit is read and dropped,
/// and [`BUSY`] returned in its place. A reply is read outside the budget,
/// up to [`MAX_REPLY_BYTES`].
pub(super) async fn read_frame<T: futures::AsyncRead + Unpin + Send>(
    io: &mut T,
    budget: &FrameBudget,
    is_request: bool,
) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {len} bytes over {MAX_FRAME_BYTES}")));
    }
    if !is_request {
        if len > MAX_REPLY_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("reply of {len} bytes over {MAX_REPLY_BYTES}"),
            ));
        }
        let mut body = vec![0u8; len];
        io.read_exact(&mut body).await?;
        return Ok(body);
    }
    let lane = if len <= SMALL_FRAME_BYTES { &budget.ordinary } else { &budget.large };
    let mut held = lane.empty_reservation();
    // The body's capacity is what the lane accounts: it grows (at most
    // doubling, never past `len`) only as bytes arrive, each growth reserved
    // before it is allocated. Outside the budget a stream holds only `chunk`.
    let mut body: Vec<u8> = Vec::new();
    let mut accounted = 0usize;
    let mut chunk = [0u8; READ_CHUNK];
    while body.len() < len {
        let want = (len - body.len()).min(READ_CHUNK);
        let n = io.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(ended_early(len, body.len()));
        }
        let needed = body.len() + n;
        if needed > accounted {
            let grown = accounted.saturating_mul(2).max(needed).min(len);
            if !held.grow(grown - accounted) {
                drop(body);
                drop(held);
                drain(io, len - needed).await?;
                return Ok(BUSY.to_vec());
            }
            body.reserve_exact(grown - body.len());
            accounted = grown;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(body)
}

pub(super) async fn write_frame<T: futures::AsyncWrite + Unpin + Send>(io: &mut T, body: Vec<u8>) -> io::Result<()> {
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
