//! [`BlobStore`] over Berth's `berth:blob-store/store` import. Request bodies go to the import as
//! they came from the host, and read streams go back out as response bodies: the bytes of a blob
//! never enter this component's memory.

use super::bindings::berth::blob_store::store as wit;
use super::bindings::wit_future;
use crate::registry::store::{BlobStore, Extent, StoreError, Written};
use crate::wire::digest::{Algorithm, RunningHash};
use spin_sdk::wasip3::http::types::{ErrorCode, Trailers};
use spin_sdk::wasip3::wit_stream;
use spin_sdk::wit_bindgen::{FutureReader, FutureWriter, StreamReader, StreamResult};

/// A body to store: its byte stream, and what tells, once the stream has ended, whether the body
/// arrived whole.
pub struct IncomingBody {
    pub stream: StreamReader<u8>,
    pub end: BodyEnd,
}

pub enum BodyEnd {
    /// A body as the host hands it over (a request's, an upstream response's): its trailers
    /// future fails when the body broke off.
    Host { trailers: FutureReader<Result<Option<Trailers>, ErrorCode>>, _result: FutureWriter<Result<(), ErrorCode>> },
    /// A body this component feeds (the mirror's relay): whole when it says so. (A future of
    /// the trailers' resource type cannot pass within one component.)
    Relay(futures::channel::oneshot::Receiver<bool>),
}

impl BodyEnd {
    /// `Err` with the reason when the body did not arrive whole.
    pub async fn whole(self) -> Result<(), String> {
        match self {
            BodyEnd::Host { trailers, _result } => trailers.await.map(|_| ()).map_err(|code| format!("{code:?}")),
            BodyEnd::Relay(whole) => match whole.await {
                Ok(true) => Ok(()),
                _ => Err("the upstream's body broke off".into()),
            },
        }
    }
}

/// The blob store for one request (its id, for the lines a transfer logs after the answer).
pub struct WitBlobStore(pub crate::registry::store::RequestId);

fn from_wit(e: wit::Error) -> StoreError {
    match e {
        wit::Error::NotFound => StoreError::NotFound,
        wit::Error::AlreadyExists => StoreError::AlreadyExists,
        wit::Error::InvalidName(why) => StoreError::Other(format!("blob store refused the name: {why}")),
        wit::Error::Unavailable(why) => StoreError::Unavailable(format!("blob store: {why}")),
        wit::Error::Other(why) => StoreError::Other(format!("blob store: {why}")),
    }
}

fn to_wit_hash(h: &RunningHash) -> wit::HashState {
    let algorithm = match h.algorithm() {
        Algorithm::Sha256 => wit::HashAlgorithm::Sha256,
        Algorithm::Sha512 => wit::HashAlgorithm::Sha512,
    };
    wit::HashState { algorithm, state: h.save() }
}

fn from_wit_hash(h: wit::HashState) -> Result<RunningHash, StoreError> {
    let algorithm = match h.algorithm {
        wit::HashAlgorithm::Sha256 => Algorithm::Sha256,
        wit::HashAlgorithm::Sha512 => Algorithm::Sha512,
    };
    RunningHash::restore(algorithm, &h.state)
        .ok_or_else(|| StoreError::Other("blob store returned a bad hash state".into()))
}

impl BlobStore for WitBlobStore {
    type Incoming = IncomingBody;
    type Outgoing = StreamReader<u8>;

    async fn write(&self, name: &str, data: IncomingBody, hashes: Vec<RunningHash>) -> Result<Written, StoreError> {
        let states = hashes.iter().map(to_wit_hash).collect();
        // The store commits only once told that the body arrived whole: the end of its stream
        // alone does not say so (a body that breaks off ends its stream too).
        let (complete, complete_reader) = wit_future::new::<bool>(|| false);
        let end = data.end;
        let body_outcome = async move {
            let outcome = end.whole().await;
            let _ = complete.write(outcome.is_ok()).await;
            outcome
        };
        let (written, outcome) =
            futures::join!(wit::write(name.to_owned(), data.stream, complete_reader, states), body_outcome);
        if let Err(why) = outcome {
            return Err(StoreError::BodyInterrupted(why));
        }
        let written = written.map_err(from_wit)?;
        let hashes = written.hashes.into_iter().map(from_wit_hash).collect::<Result<_, _>>()?;
        Ok(Written { size: written.size, hashes })
    }

    async fn read_extents(&self, extents: Vec<Extent>) -> Result<StreamReader<u8>, StoreError> {
        let extents =
            extents.into_iter().map(|e| wit::Extent { name: e.name, offset: e.offset, length: e.length }).collect();
        let (stream, done) = wit::read_extents(extents).await.map_err(from_wit)?;
        // Keep a task waiting until the bytes have gone: it tells the host that this instance
        // still has a transfer in flight, and logs one that broke.
        let request = self.0.clone();
        spin_sdk::wasip3::spawn(async move {
            if let Err(e) = done.await {
                eprintln!("berth: blob transfer ended early: {} (request {})", from_wit(e), request.as_str());
            }
        });
        Ok(stream)
    }

    async fn host_body(&self, extents: &[Extent]) -> Result<Option<String>, StoreError> {
        let extents =
            extents.iter().map(|e| wit::Extent { name: e.name.clone(), offset: e.offset, length: e.length }).collect();
        wit::host_body(extents).await.map_err(from_wit)
    }

    async fn size(&self, name: &str) -> Result<u64, StoreError> {
        wit::stat(name.to_owned()).await.map(|info| info.size).map_err(from_wit)
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        wit::delete(name.to_owned()).await.map_err(from_wit)
    }

    async fn compose(&self, name: &str, extents: Vec<Extent>) -> Result<Option<u64>, StoreError> {
        let extents =
            extents.into_iter().map(|e| wit::Extent { name: e.name, offset: e.offset, length: e.length }).collect();
        let info = wit::compose(name.to_owned(), extents).await.map_err(from_wit)?;
        Ok(info.map(|info| info.size))
    }

    async fn presign(&self, name: &str, expires_secs: u32) -> Result<Option<String>, StoreError> {
        wit::presign_read(name.to_owned(), expires_secs).await.map_err(from_wit)
    }

    async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        let page = wit::list_objects(prefix.to_owned(), cursor.map(str::to_owned), limit).await.map_err(from_wit)?;
        Ok((page.names, page.next))
    }

    async fn write_bytes(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let (mut writer, reader) = wit_stream::new::<u8>();
        let (complete, complete_reader) = wit_future::new::<bool>(|| false);
        let feed = async move {
            // Whole only if the store took every byte.
            let whole = writer.write_all(bytes).await.is_empty();
            drop(writer);
            let _ = complete.write(whole).await;
        };
        let (written, ()) = futures::join!(wit::write(name.to_owned(), reader, complete_reader, Vec::new()), feed);
        written.map(|_| ()).map_err(from_wit)
    }

    async fn read_bytes(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let (stream, done) = wit::read(name.to_owned(), 0, None).await.map_err(from_wit)?;
        let bytes = read_to_end(stream, usize::MAX).await;
        done.await.map_err(from_wit)?;
        Ok(bytes.unwrap_or_default())
    }

    async fn hash_extents(&self, extents: Vec<Extent>, mut hash: RunningHash) -> Result<RunningHash, StoreError> {
        // Hashed here, in wasm: slower than the host's native hashing, but only for uploads that
        // finish under SHA-512, which clients almost never use.
        let extents =
            extents.into_iter().map(|e| wit::Extent { name: e.name, offset: e.offset, length: e.length }).collect();
        let (mut stream, done) = wit::read_extents(extents).await.map_err(from_wit)?;
        loop {
            let (result, chunk) = stream.read(Vec::with_capacity(256 * 1024)).await;
            match result {
                StreamResult::Complete(_) => hash.update(&chunk),
                StreamResult::Dropped | StreamResult::Cancelled => break,
            }
        }
        done.await.map_err(from_wit)?;
        Ok(hash)
    }

    async fn collect(&self, body: IncomingBody, limit: usize) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(bytes) = read_to_end(body.stream, limit).await else { return Ok(None) };
        if let Err(why) = body.end.whole().await {
            return Err(StoreError::BodyInterrupted(why));
        }
        Ok(Some(bytes))
    }
}

/// Read a stream into memory; `None` as soon as it holds more than `limit` bytes.
pub(super) async fn read_to_end(mut stream: StreamReader<u8>, limit: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let (result, chunk) = stream.read(Vec::with_capacity(64 * 1024)).await;
        match result {
            StreamResult::Complete(_) => {
                out.extend_from_slice(&chunk);
                if out.len() > limit {
                    return None;
                }
            }
            StreamResult::Dropped | StreamResult::Cancelled => return Some(out),
        }
    }
}
