//! Bridges between component-model `stream<u8>` and tokio channels, so blocking file I/O can run
//! on its own thread while bytes flow to and from the guest (or straight between host streams).
//! Both directions hold at most a few chunks: memory stays bounded whatever the object size.
//! A guest's `future` is taken the same way, into a oneshot channel.

use bytes::Bytes;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::PollSender;
use wasmtime::StoreContextMut;
use wasmtime::component::{
    Accessor, Destination, FutureConsumer, FutureReader, HasData, Lift, Lower, Source, StreamConsumer, StreamProducer,
    StreamReader, StreamResult, WriteBuffer,
};

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

/// Feeds a reader from chunks produced elsewhere: `Bytes` for a `stream<u8>`, a `VecBuffer` of
/// items for any other stream. The stream ends when the channel closes, or at an `Err`, and
/// `done` then says how it ended: it fires only once every item before the end has been taken by
/// the reader, so whoever waits on it knows the transfer is really over.
pub struct ChannelProducer<T, B = Bytes> {
    rx: mpsc::Receiver<Result<B, String>>,
    done: Option<oneshot::Sender<Result<(), String>>>,
    item: PhantomData<fn() -> T>,
}

/// The sending side of a [`ChannelProducer`], and how its stream ended.
pub type ProducerParts<T, B> =
    (mpsc::Sender<Result<B, String>>, ChannelProducer<T, B>, oneshot::Receiver<Result<(), String>>);

impl<T, B> ChannelProducer<T, B> {
    pub fn new() -> ProducerParts<T, B> {
        let (tx, rx) = mpsc::channel(DEPTH);
        let (done_tx, done_rx) = oneshot::channel();
        (tx, ChannelProducer { rx, done: Some(done_tx), item: PhantomData }, done_rx)
    }

    fn finish(&mut self, outcome: Result<(), String>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(outcome);
        }
    }
}

impl<T, B> Drop for ChannelProducer<T, B> {
    fn drop(&mut self) {
        self.finish(Err("the reader closed the stream before its end".into()));
    }
}

impl<D, T, B> StreamProducer<D> for ChannelProducer<T, B>
where
    T: Send + Sync + 'static,
    B: WriteBuffer<T> + Default + Unpin,
{
    type Item = T;
    type Buffer = B;

    fn poll_produce<'a>(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        _store: StoreContextMut<'a, D>,
        mut dst: Destination<'a, T, B>,
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

/// A stream for the guest and the future of how it ended.
pub type GuestStream<I, E> = (StreamReader<I>, FutureReader<Result<(), E>>);

/// Hand `producer` to the guest as a stream, with the future that resolves to how the stream
/// ended once the guest has taken everything (`error` is the interface's error for a failure).
/// Every host call that answers with a stream and a completion future goes through here.
pub fn to_guest<T, D, I, B, E>(
    accessor: &Accessor<T, D>,
    producer: ChannelProducer<I, B>,
    done: oneshot::Receiver<Result<(), String>>,
    error: fn(String) -> E,
) -> wasmtime::Result<GuestStream<I, E>>
where
    D: HasData + ?Sized,
    I: Lower + Lift + Send + Sync + 'static,
    B: WriteBuffer<I> + Default + Unpin + Send + 'static,
    Result<(), E>: Lower + Lift + Send + Sync + 'static,
{
    accessor.with(|mut access| {
        let stream = StreamReader::new(&mut access, producer)?;
        let outcome = FutureReader::new(&mut access, async move {
            // The producer always reports before it goes away (its Drop does); a lost report
            // still must not read as success.
            let outcome = done.await.unwrap_or_else(|_| Err("the stream ended without a report".into()));
            wasmtime::error::Ok(outcome.map_err(error))
        })?;
        Ok((stream, outcome))
    })
}

/// Takes the value a guest writes to a future and hands it on to a oneshot channel.
struct OneshotConsumer<T> {
    tx: Option<oneshot::Sender<T>>,
}

impl<D, T> FutureConsumer<D> for OneshotConsumer<T>
where
    T: Lift + Send + Sync + 'static,
{
    type Item = T;

    fn poll_consume(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        mut store: StoreContextMut<D>,
        mut src: Source<'_, T>,
        _finish: bool,
    ) -> Poll<wasmtime::Result<()>> {
        let mut value = None;
        src.read(&mut store, &mut value)?;
        if let (Some(value), Some(tx)) = (value, self.tx.take()) {
            let _ = tx.send(value); // the waiter may have gone: nothing left to tell
        }
        Poll::Ready(Ok(()))
    }
}

/// The value the guest writes to `future`, once it does. The receiver fails instead if the
/// future goes away without a value (its writer was dropped, or the instance ended).
pub fn from_guest_future<T, D, V>(
    accessor: &Accessor<T, D>,
    future: FutureReader<V>,
) -> wasmtime::Result<oneshot::Receiver<V>>
where
    D: HasData + ?Sized,
    V: Lift + Send + Sync + 'static,
{
    let (tx, rx) = oneshot::channel();
    accessor.with(|mut access| future.pipe(&mut access, OneshotConsumer { tx: Some(tx) }))?;
    Ok(rx)
}
