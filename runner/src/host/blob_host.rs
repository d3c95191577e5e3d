//! `berth:blob-store/store` for the component, over [`FsBlobStore`]. Writes and reads run on
//! blocking threads, connected to the component's streams by bounded channels; hashing happens
//! here, natively, on the bytes as they are written. A write commits only once its `complete`
//! future says `true`.

use crate::host::bindings::berth::blob_store::store::{
    self as wit, Error, Extent, HashAlgorithm, HashState, ObjectInfo, Page, Written,
};
use crate::host::host_bodies::{FileExtent, OfferedBody};
use crate::host::state::Host;
use crate::host::streams::{self, ChannelConsumer, ChannelProducer};
use crate::memory::LARGE_TRANSFER;
use crate::store::blob_fs::{self, BlobError, FsBlobStore};
use bytes::Bytes;
use wasmtime::component::{Accessor, FutureReader, HasData, Linker, StreamReader};

pub struct BlobStoreHost;

impl HasData for BlobStoreHost {
    type Data<'a> = &'a mut Host;
}

pub fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    wit::add_to_linker::<Host, BlobStoreHost>(linker, |host| host)
}

fn to_wit(e: BlobError) -> Error {
    match e {
        BlobError::NotFound => Error::NotFound,
        BlobError::AlreadyExists => Error::AlreadyExists,
        BlobError::InvalidName(why) => Error::InvalidName(why),
        BlobError::Range(why) => Error::Other(why),
        BlobError::Other(why) => {
            crate::store::BACKEND_ERRORS.filesystem.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Error::Other(why)
        }
    }
}

fn store_of<T>(accessor: &Accessor<T, BlobStoreHost>) -> FsBlobStore {
    accessor.with(|mut access| access.get().shared.blobs.clone())
}

berth_hash_state::wit_hash_state_conversions!(HashState, HashAlgorithm, Error);

impl<T> wit::HostWithStore<T> for BlobStoreHost {
    async fn write(
        accessor: &Accessor<T, Self>,
        name: String,
        data: StreamReader<u8>,
        complete: FutureReader<bool>,
        hashes: Vec<HashState>,
    ) -> wasmtime::Result<Result<Written, Error>> {
        let store = store_of(accessor);
        let (consumer, mut chunks) = ChannelConsumer::new();
        accessor.with(|mut access| data.pipe(&mut access, consumer))?;
        let confirmed = streams::from_guest_future(accessor, complete)?;
        let mut hashers = match hashes.iter().map(restore_hash).collect::<Result<Vec<_>, _>>() {
            Ok(hashers) => hashers,
            Err(e) => return Ok(Err(e)),
        };
        // The bytes go to a temp file, invisible under `name`...
        let received = tokio::task::spawn_blocking(move || {
            let mut object = store.create(&name).map_err(to_wit)?;
            while let Some(chunk) = chunks.blocking_recv() {
                object.write(&chunk).map_err(to_wit)?;
                hashers.iter_mut().for_each(|h| h.update(&chunk));
            }
            Ok((object, hashers))
        })
        .await?;
        let (object, hashers) = match received {
            Ok(received) => received,
            Err(e) => return Ok(Err(e)),
        };
        // ...until the writer confirms they are all there: a stream also ends when its source
        // breaks off. A writer that went away without a word did not confirm.
        if !confirmed.await.unwrap_or(false) {
            tokio::task::spawn_blocking(move || drop(object)).await?; // unlinks the temp file
            return Ok(Err(Error::Other("write not confirmed: the data did not arrive whole".into())));
        }
        let committed = tokio::task::spawn_blocking(move || {
            let size = object.commit().map_err(to_wit)?;
            if size >= LARGE_TRANSFER {
                crate::memory::release_free_memory();
            }
            Ok(Written { size, hashes: hashers.iter().map(save_hash).collect() })
        })
        .await?;
        Ok(committed)
    }

    async fn read(
        accessor: &Accessor<T, Self>,
        name: String,
        offset: u64,
        length: Option<u64>,
    ) -> wasmtime::Result<Result<Transfer, Error>> {
        let store = store_of(accessor);
        let opened = tokio::task::spawn_blocking(move || store.open_range(&name, offset, length)).await?;
        let (file, length) = match opened {
            Ok(opened) => opened,
            Err(e) => return Ok(Err(to_wit(e))),
        };
        stream_files(accessor, vec![FileExtent { file, offset, length }]).map(Ok)
    }

    async fn read_extents(
        accessor: &Accessor<T, Self>,
        extents: Vec<Extent>,
    ) -> wasmtime::Result<Result<Transfer, Error>> {
        let store = store_of(accessor);
        if extents.iter().map(|e| e.length).sum::<u64>() <= SMALL_READ {
            // A manifest or an index object: read it right here (a few microseconds from the
            // page cache) instead of on two blocking threads, one to open and one to stream.
            return match read_small(&store, &extents) {
                Ok(bytes) => stream_bytes(accessor, bytes).map(Ok),
                Err(e) => Ok(Err(to_wit(e))),
            };
        }
        // Open (and check) every extent before the first byte goes out.
        let opened = tokio::task::spawn_blocking(move || open_extents(&store, &extents)).await?;
        match opened {
            Ok(files) => stream_files(accessor, files).map(Ok),
            Err(e) => Ok(Err(to_wit(e))),
        }
    }

    /// The runner serves the answers itself: it holds the extents' files open for the answer
    /// that carries the token (`http::host_body` sends them).
    async fn host_body(
        accessor: &Accessor<T, Self>,
        extents: Vec<Extent>,
    ) -> wasmtime::Result<Result<Option<String>, Error>> {
        let shared = accessor.with(|mut access| access.get().shared.clone());
        if !shared.host_bodies.enabled {
            return Ok(Ok(None));
        }
        let store = shared.blobs.clone();
        let body = if extents.iter().map(|e| e.length).sum::<u64>() <= SMALL_READ {
            // As `read_extents` does: a few microseconds from the page cache.
            read_small(&store, &extents).map(|bytes| OfferedBody::Bytes(bytes.into()))
        } else {
            tokio::task::spawn_blocking(move || open_extents(&store, &extents).map(OfferedBody::Files)).await?
        };
        Ok(match body {
            Ok(body) => shared.host_bodies.offer(body).map_err(Error::Other),
            Err(e) => Err(to_wit(e)),
        })
    }

    async fn stat(accessor: &Accessor<T, Self>, name: String) -> wasmtime::Result<Result<ObjectInfo, Error>> {
        let store = store_of(accessor);
        let size = tokio::task::spawn_blocking(move || store.size(&name)).await?;
        Ok(size.map(|size| ObjectInfo { size }).map_err(to_wit))
    }

    async fn delete(accessor: &Accessor<T, Self>, name: String) -> wasmtime::Result<Result<(), Error>> {
        let store = store_of(accessor);
        Ok(tokio::task::spawn_blocking(move || store.delete(&name)).await?.map_err(to_wit))
    }

    /// Files are never joined: the runner's store has no redirects to join them for.
    async fn compose(
        _accessor: &Accessor<T, Self>,
        _name: String,
        _extents: Vec<wit::Extent>,
    ) -> wasmtime::Result<Result<Option<ObjectInfo>, Error>> {
        Ok(Ok(None))
    }

    /// Files on the runner's disk have no URL of their own: bytes go out through `read` only.
    async fn presign_read(
        _accessor: &Accessor<T, Self>,
        _name: String,
        _expires_seconds: u32,
    ) -> wasmtime::Result<Result<Option<String>, Error>> {
        Ok(Ok(None))
    }

    async fn list_objects(
        accessor: &Accessor<T, Self>,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<Page, Error>> {
        let store = store_of(accessor);
        let listed =
            tokio::task::spawn_blocking(move || store.list(&prefix, cursor.as_deref(), limit as usize)).await?;
        Ok(listed.map(|(names, next)| Page { names, next }).map_err(to_wit))
    }
}

impl wit::Host for &mut Host {}

/// A read in progress: the bytes, and the outcome once they have all gone (or not).
type Transfer = streams::GuestStream<u8, Error>;

/// Reads up to this many bytes are done in place rather than streamed by a blocking thread.
const SMALL_READ: u64 = 64 * 1024;

/// Open every extent, checking it against its object's size (blocking).
fn open_extents(store: &FsBlobStore, extents: &[Extent]) -> Result<Vec<FileExtent>, BlobError> {
    extents
        .iter()
        .map(|e| {
            let (file, length) = store.open_range(&e.name, e.offset, Some(e.length))?;
            Ok(FileExtent { file, offset: e.offset, length })
        })
        .collect()
}

fn read_small(store: &FsBlobStore, extents: &[Extent]) -> Result<Vec<u8>, BlobError> {
    let mut bytes = Vec::new();
    for e in extents {
        let (file, length) = store.open_range(&e.name, e.offset, Some(e.length))?;
        blob_fs::read_chunks(file, length, |chunk| {
            if bytes.is_empty() {
                bytes = chunk;
            } else {
                bytes.extend_from_slice(&chunk);
            }
            true
        })?;
    }
    Ok(bytes)
}

/// A stream of bytes already in memory. The future tells when they have all been taken.
fn stream_bytes<T>(accessor: &Accessor<T, BlobStoreHost>, bytes: Vec<u8>) -> wasmtime::Result<Transfer> {
    let (tx, producer, done) = ChannelProducer::<u8, Bytes>::new();
    if !bytes.is_empty() {
        tx.try_send(Ok(bytes.into())).expect("a new channel has room for one chunk");
    }
    drop(tx);
    streams::to_guest(accessor, producer, done, Error::Other)
}

/// A stream fed by a blocking thread that reads the files one after another. If the reader goes
/// away, the thread stops at the next chunk. The future tells how the transfer ended.
fn stream_files<T>(accessor: &Accessor<T, BlobStoreHost>, files: Vec<FileExtent>) -> wasmtime::Result<Transfer> {
    let (tx, producer, done) = ChannelProducer::<u8, Bytes>::new();
    let total: u64 = files.iter().map(|e| e.length).sum();
    tokio::task::spawn_blocking(move || {
        let _trim = (total >= LARGE_TRANSFER).then_some(crate::memory::TrimOnDrop);
        for FileExtent { file, length, .. } in files {
            let mut open = true;
            let read = blob_fs::read_chunks(file, length, |chunk| {
                open = tx.blocking_send(Ok(Bytes::from(chunk))).is_ok();
                open
            });
            if let Err(e) = read {
                // Ending the stream early makes the response shorter than its Content-Length,
                // so the client sees a broken transfer, never wrong bytes.
                let _ = tx.blocking_send(Err(format!("reading failed: {e:?}")));
                return;
            }
            if !open {
                return;
            }
        }
    });
    streams::to_guest(accessor, producer, done, Error::Other)
}
