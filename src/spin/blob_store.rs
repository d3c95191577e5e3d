//! [`BlobStore`] over Berth's `berth:blob-store/store` import. Request bodies go to the import as
//! they came from the host, and read streams go back out as response bodies: the bytes of a blob
//! never enter this component's memory.

use super::bindings::berth::blob_store::store as wit;
use crate::digest::{Algorithm, RunningHash};
use crate::store::{BlobStore, Extent, StoreError, Written};
use spin_sdk::wasip3::http::types::{ErrorCode, Trailers};
use spin_sdk::wit_bindgen::{FutureReader, FutureWriter, StreamReader};

/// A request body as the host hands it over: its byte stream, and the future that tells,
/// once the stream has ended, whether the body arrived whole.
pub struct IncomingBody {
    pub stream: StreamReader<u8>,
    pub trailers: FutureReader<Result<Option<Trailers>, ErrorCode>>,
    pub _result: FutureWriter<Result<(), ErrorCode>>,
}

pub struct WitBlobStore;

fn from_wit(e: wit::Error) -> StoreError {
    match e {
        wit::Error::NotFound => StoreError::NotFound,
        wit::Error::AlreadyExists => StoreError::AlreadyExists,
        wit::Error::InvalidName(why) => {
            StoreError::Other(format!("blob store refused the name: {why}"))
        }
        wit::Error::Other(why) => StoreError::Other(format!("blob store: {why}")),
    }
}

fn to_wit_hash(h: &RunningHash) -> wit::HashState {
    let algorithm = match h.algorithm() {
        Algorithm::Sha256 => wit::HashAlgorithm::Sha256,
        Algorithm::Sha512 => wit::HashAlgorithm::Sha512,
    };
    wit::HashState {
        algorithm,
        state: h.save(),
    }
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

    async fn write(
        &self,
        name: &str,
        data: IncomingBody,
        hashes: Vec<RunningHash>,
    ) -> Result<Written, StoreError> {
        let states = hashes.iter().map(to_wit_hash).collect();
        let written = wit::write(name.to_owned(), data.stream, states)
            .await
            .map_err(from_wit)?;
        // The stream has ended; did it end because the body was complete?
        if let Err(code) = data.trailers.await {
            let _ = wit::delete(name.to_owned()).await;
            return Err(StoreError::BodyInterrupted(format!("{code:?}")));
        }
        let hashes = written
            .hashes
            .into_iter()
            .map(from_wit_hash)
            .collect::<Result<_, _>>()?;
        Ok(Written {
            size: written.size,
            hashes,
        })
    }

    async fn read_extents(&self, extents: Vec<Extent>) -> Result<StreamReader<u8>, StoreError> {
        let extents = extents
            .into_iter()
            .map(|e| wit::Extent {
                name: e.name,
                offset: e.offset,
                length: e.length,
            })
            .collect();
        let (stream, done) = wit::read_extents(extents).await.map_err(from_wit)?;
        // Keep a task waiting until the bytes have gone: it tells the host that this instance
        // still has a transfer in flight, and logs one that broke.
        spin_sdk::wasip3::spawn(async move {
            if let Err(e) = done.await {
                eprintln!("berth: blob transfer ended early: {}", from_wit(e));
            }
        });
        Ok(stream)
    }

    async fn size(&self, name: &str) -> Result<u64, StoreError> {
        wit::stat(name.to_owned())
            .await
            .map(|info| info.size)
            .map_err(from_wit)
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        wit::delete(name.to_owned()).await.map_err(from_wit)
    }
}
