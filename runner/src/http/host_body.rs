//! Sending a body the component left to the host (`host::host_bodies`): a blob's extents, from
//! the files the blob store opened when the component asked.
//!
//! Over plain HTTP/1.1 the body is the files mapped into memory a window at a time, and hyper
//! hands each window to `writev` as it is (its vectored write queue never copies a frame): the
//! kernel copies page-cache pages into the socket once, and no user-space code reads them.
//! Measured on this machine, that costs the sender what `sendfile(2)` does (0.34 against 0.35
//! CPU-s per GiB over loopback), which hyper has no way to call, and 40% less than reading into
//! a buffer and writing it (0.56). A file truncated under a window makes that `writev` fail with
//! EFAULT, which ends the response early: there is no SIGBUS, because only the kernel touches
//! mapped bytes. A blob written with `O_DIRECT` is not in the page cache until first read: its
//! first pull faults the pages in (with the kernel's readahead) inside `writev`. Advising the
//! kernel per window (`MADV_WILLNEED`) was tried, and cost 15-30% more CPU per GiB on cached
//! blobs.
//!
//! TLS encrypts, and HTTP/2 frames, in user space, where a truncated mapping would be a SIGBUS:
//! there blocking threads read the files into chunks as hyper asks, within one memory budget for
//! all bodies and a share of it per connection. (Kernel TLS would let the kernel encrypt mapped pages too; this machine's kernel offers no
//! `tls` upper-layer protocol, `/proc/sys/net/ipv4/tcp_available_ulp`, so it is not used.)

use crate::host::host_bodies::{FileExtent, OfferedBody};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How much of a file one mapping covers. Pages the kernel faulted in for a window stay counted
/// in the runner's (file-backed) RSS until it is unmapped, after its bytes are on the wire.
const WINDOW: u64 = 1024 * 1024;

/// How the body's bytes reach the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Plain HTTP/1.x: only the kernel reads the bytes (`writev`), so they may be mapped.
    Kernel,
    /// TLS or HTTP/2: user-space code reads them, so they are read from the files.
    UserSpace,
}

/// What one connection's bodies read from files may hold at once, in KiB: a client that stops
/// taking bytes on many HTTP/2 streams (each holds the chunk it was handed, flow control or not)
/// pins at most this much of [`READ_BUDGET_KIB`].
pub const CONNECTION_BUDGET_KIB: usize = 4 * 1024;

/// A connection's share of the read budget (one per connection, for every body on it).
pub fn connection_budget() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(CONNECTION_BUDGET_KIB))
}

/// The response body for `offered`, reading (where it reads) within `connection`'s budget.
pub fn body(
    offered: OfferedBody,
    delivery: Delivery,
    connection: Arc<Semaphore>,
) -> http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError> {
    use http_body_util::BodyExt;
    let length = offered.length();
    match (offered, delivery) {
        (OfferedBody::Bytes(bytes), _) => {
            http_body_util::Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
        }
        (OfferedBody::Files(extents), Delivery::Kernel) => {
            MappedBody { extents: extents.into_iter().collect(), remaining: length }.boxed_unsync()
        }
        (OfferedBody::Files(extents), Delivery::UserSpace) => {
            ReadBody::start(extents, length, connection).boxed_unsync()
        }
    }
}

/// The extents, a mapped window per frame.
struct MappedBody {
    extents: VecDeque<FileExtent>,
    remaining: u64,
}

/// One window of a file, unmapped when hyper drops the frame's last byte.
struct Window(memmap2::Mmap);

impl AsRef<[u8]> for Window {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Body for MappedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        while let Some(extent) = self.extents.front_mut() {
            if extent.length == 0 {
                self.extents.pop_front();
                continue;
            }
            let n = extent.length.min(WINDOW);
            // SAFETY: the mapping is read-only, of an object file that is never written after
            // its commit (deletes unlink it, which leaves a mapping valid). What remains is a
            // file truncated by hand under a transfer: then the pages past its new end cannot be
            // read, and since only the kernel reads these bytes (`writev` from hyper's queue,
            // see the module's words), that read fails with EFAULT, ending the response early,
            // instead of raising SIGBUS in the runner.
            let mapped = unsafe { memmap2::MmapOptions::new().offset(extent.offset).len(n as usize).map(&extent.file) };
            return match mapped {
                Ok(map) => {
                    extent.offset += n;
                    extent.length -= n;
                    self.remaining -= n;
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_owner(Window(map))))))
                }
                Err(e) => {
                    self.extents.clear();
                    Poll::Ready(Some(Err(format!("mapping a blob file failed: {e}").into())))
                }
            };
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// The extents, read a chunk at a time, each when hyper asks for the next frame: a chunk takes
/// its share of the budget, then a blocking thread reads it.
///
/// Every chunk holds its share of one budget for the whole process ([`READ_BUDGET`]) until the
/// TLS layer or HTTP/2 is done with it: however many clients pull at once, chunks in flight take
/// at most that much memory. Nothing is read ahead of what hyper asks for, and a body waiting
/// for budget holds no thread. A client that stops taking bytes still holds the chunk each of
/// its streams was handed (hyper hands an HTTP/2 stream a whole chunk once its window has a
/// byte), so every connection also has a share of its own ([`CONNECTION_BUDGET_KIB`]), taken
/// first: stalling streams pins at most that much per connection.
struct ReadBody {
    extents: VecDeque<FileExtent>,
    remaining: u64,
    /// The whole length, to know a large transfer when the body is dropped.
    length: u64,
    connection: PollSemaphore,
    /// The connection's share, taken, while the process's is awaited.
    connection_share: Option<OwnedSemaphorePermit>,
    budget: PollSemaphore,
    /// The read in progress: the chunk (or why not) and the file back.
    reading: Option<tokio::task::JoinHandle<(std::io::Result<Bytes>, FileExtent)>>,
}

/// The memory all bodies read from files (TLS, HTTP/2) may hold at once, in KiB.
const READ_BUDGET_KIB: usize = 64 * 1024;
/// Chunks read at once: a few TLS records' and HTTP/2 frames' worth.
const READ_CHUNK: usize = 256 * 1024;

static READ_BUDGET: std::sync::LazyLock<Arc<Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(Semaphore::new(READ_BUDGET_KIB)));

/// A chunk and its shares of the budgets, given back when the last of its bytes is dropped.
struct Budgeted {
    bytes: Vec<u8>,
    _shares: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl ReadBody {
    fn start(extents: Vec<FileExtent>, length: u64, connection: Arc<Semaphore>) -> ReadBody {
        ReadBody {
            extents: extents.into_iter().filter(|e| e.length > 0).collect(),
            remaining: length,
            length,
            connection: PollSemaphore::new(connection),
            connection_share: None,
            budget: PollSemaphore::new(READ_BUDGET.clone()),
            reading: None,
        }
    }
}

impl Drop for ReadBody {
    fn drop(&mut self) {
        // Chunks were allocated on blocking threads and freed on this one: give what the
        // allocator kept back to the OS after a large transfer (as the guest streams did).
        if self.length >= crate::memory::LARGE_TRANSFER
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn_blocking(crate::memory::release_free_memory);
        }
    }
}

/// Read the next `n` bytes of `extent` (its file is positioned at its offset), and move the
/// extent past them.
fn read_chunk(
    mut extent: FileExtent,
    n: usize,
    shares: (OwnedSemaphorePermit, OwnedSemaphorePermit),
) -> (std::io::Result<Bytes>, FileExtent) {
    let read = crate::store::blob_fs::read_new(&mut extent.file, n)
        .map(|bytes| Bytes::from_owner(Budgeted { bytes, _shares: shares }));
    extent.offset += n as u64;
    extent.length -= n as u64;
    (read, extent)
}

impl Body for ReadBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.reading.is_none() {
            let Some(length) = self.extents.front().map(|e| e.length) else { return Poll::Ready(None) };
            let n = usize::try_from(length).unwrap_or(usize::MAX).min(READ_CHUNK);
            let kib = u32::try_from(n.div_ceil(1024)).expect("a chunk is a few hundred KiB");
            // The connection's share first, then the process's; the semaphores are never closed.
            if self.connection_share.is_none() {
                let Some(share) = std::task::ready!(self.connection.poll_acquire_many(cx, kib)) else {
                    return Poll::Ready(Some(Err("the read budget is gone".into())));
                };
                self.connection_share = Some(share);
            }
            let Some(share) = std::task::ready!(self.budget.poll_acquire_many(cx, kib)) else {
                return Poll::Ready(Some(Err("the read budget is gone".into())));
            };
            let shares = (self.connection_share.take().expect("taken above"), share);
            let extent = self.extents.pop_front().expect("an extent is left");
            self.reading = Some(tokio::task::spawn_blocking(move || read_chunk(extent, n, shares)));
        }
        let reading = self.reading.as_mut().expect("a read in progress");
        let done = std::task::ready!(Pin::new(reading).poll(cx));
        self.reading = None;
        let (read, extent) = match done {
            Ok(done) => done,
            Err(e) => {
                self.extents.clear();
                return Poll::Ready(Some(Err(format!("reading a blob file failed: {e}").into())));
            }
        };
        if extent.length > 0 {
            self.extents.push_front(extent);
        }
        match read {
            Ok(chunk) => {
                self.remaining -= chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Err(e) => {
                // The body ends short of its Content-Length: the client sees a broken transfer,
                // never wrong bytes.
                self.extents.clear();
                Poll::Ready(Some(Err(format!("reading a blob file failed: {e}").into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
