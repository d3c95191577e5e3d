//! Bridges between component-model `stream<u8>` and tokio channels, so blocking file I/O can run
//! on its own thread while bytes flow to and from the guest (or straight between host streams).
//! Both directions hold at most a few chunks: memory stays bounded whatever the object size.

use bytes::Bytes;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::PollSender;
use wasmtime::StoreContextMut;
use wasmtime::component::{Destination, Source, StreamConsumer, StreamProducer, StreamResult};

/// Chunks in flight per stream.
pub const DEPTH: usize = 4;
/// Largest chunk taken from a writer at once.
const MAX_CHUNK: usize = 1024 * 1024;

/// Takes the bytes a writer sends and forwards them as chunks; the channel closes when the
/// stream ends (the consumer is dropped).
pub struct ChannelConsumer {
    tx: PollSender<Bytes>,
}

impl ChannelConsumer {
    pub fn new() -> (ChannelConsumer, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(DEPTH);
        (ChannelConsumer { tx: PollSender::new(tx) }, rx)
    }
}

impl<D> StreamConsumer<D> for ChannelConsumer {
    type Item = u8;

    fn poll_consume(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        store: StoreContextMut<D>,
        src: Source<u8>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        // Reserve room first: bytes taken from `src` cannot be put back.
        match self.tx.poll_reserve(cx) {
            Poll::Ready(Ok(())) => {
                let mut src = src.as_direct(store);
                let buf = src.remaining();
                let n = buf.len().min(MAX_CHUNK);
                let chunk = Bytes::copy_from_slice(&buf[..n]);
                src.mark_read(n);
                if n == 0 {
                    // Nothing offered yet: give the reservation back and report readiness.
                    self.tx.abort_send();
                    return Poll::Ready(Ok(StreamResult::Completed));
                }
                match self.tx.send_item(chunk) {
                    Ok(()) => Poll::Ready(Ok(StreamResult::Completed)),
                    Err(_) => Poll::Ready(Ok(StreamResult::Dropped)),
                }
            }
            Poll::Ready(Err(_)) => Poll::Ready(Ok(StreamResult::Dropped)),
            Poll::Pending if finish => Poll::Ready(Ok(StreamResult::Cancelled)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Feeds a reader from chunks produced elsewhere. The stream ends when the channel closes, or at
/// an `Err`, and `done` then says how it ended: it fires only once every byte before the end has
/// been taken by the reader, so whoever waits on it knows the transfer is really over.
pub struct ChannelProducer {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

impl ChannelProducer {
    pub fn new() -> (mpsc::Sender<Result<Bytes, String>>, ChannelProducer, oneshot::Receiver<Result<(), String>>) {
        let (tx, rx) = mpsc::channel(DEPTH);
        let (done_tx, done_rx) = oneshot::channel();
        (tx, ChannelProducer { rx, done: Some(done_tx) }, done_rx)
    }

    fn finish(&mut self, outcome: Result<(), String>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(outcome);
        }
    }
}

impl Drop for ChannelProducer {
    fn drop(&mut self) {
        self.finish(Err("the reader closed the stream before its end".into()));
    }
}

impl<D> StreamProducer<D> for ChannelProducer {
    type Item = u8;
    type Buffer = Bytes;

    fn poll_produce<'a>(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        _store: StoreContextMut<'a, D>,
        mut dst: Destination<'a, u8, Bytes>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        // Called again only after everything handed over before has been delivered.
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                dst.set_buffer(chunk);
                Poll::Ready(Ok(StreamResult::Completed))
            }
            Poll::Ready(Some(Err(e))) => {
                self.finish(Err(e));
                Poll::Ready(Ok(StreamResult::Dropped))
            }
            Poll::Ready(None) => {
                self.finish(Ok(()));
                Poll::Ready(Ok(StreamResult::Dropped))
            }
            Poll::Pending if finish => Poll::Ready(Ok(StreamResult::Cancelled)),
            Poll::Pending => Poll::Pending,
        }
    }
}
