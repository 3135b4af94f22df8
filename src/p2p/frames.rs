//! The wire framing of the one application protocol: length-prefixed
//! (u32 big-endian) opaque frames, each read only after a reservation in a
//! node-wide inbound byte budget ([`FrameBudget`]), so a peer cannot make
//! the node buffer without end; over budget, a request is answered [`BUSY`].

use super::*;

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
pub(super) async fn read_frame<T: futures::AsyncRead + Unpin + Send>(
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
