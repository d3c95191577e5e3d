//! The `berth:blob-store/store` export over `spin:key-value` (wasm32 only). Every decision about
//! keys and ranges is in [`crate::layout`]; this moves bytes between streams and the store.

use crate::layout::{self, CHUNK_SIZE, ChunkSpan, ObjectRecord, PageBuilder};
use berth_hash_state::{Algorithm, RunningHash};
use bindings::exports::berth::blob_store::store::{
    Error, Extent, Guest, HashAlgorithm, HashState, ObjectInfo, Page, Written,
};
use bindings::wasi::keyvalue::{atomics, store as wasi_kv};
use spin_sdk::key_value::Store;
use spin_sdk::wit_bindgen::{FutureReader, StreamReader, StreamResult};

mod bindings {
    spin_sdk::wit_bindgen::generate!({
        path: "../../wit",
        world: "berth:blob-store/provider",
        runtime_path: "::spin_sdk::wit_bindgen::rt",
        generate_all,
    });
}

/// The key-value store the provider keeps objects in: the registry's own (Spin's local default
/// needs no runtime configuration), under keys that start with `blob-kv/`.
const STORE_LABEL: &str = "default";

struct Provider;

bindings::export!(Provider with_types_in bindings);

async fn open() -> Result<Store, Error> {
    Store::open(STORE_LABEL).await.map_err(|e| {
        Error::Other(format!(
            "cannot open key-value store {STORE_LABEL:?} ({e:?}): the registry component must list it in \
             key_value_stores, with dependencies_inherit_configuration = true"
        ))
    })
}

fn kv(e: spin_sdk::key_value::Error) -> Error {
    Error::Other(format!("key-value: {e:?}"))
}

async fn load(store: &Store, name: &str) -> Result<ObjectRecord, Error> {
    if let Some(why) = layout::check_name(name) {
        return Err(Error::InvalidName(why.into()));
    }
    let bytes = store.get(layout::record_key(name)).await.map_err(kv)?.ok_or(Error::NotFound)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Other(format!("unreadable record of {name:?}: {e}")))
}

/// A running hash continued from the state the component saved.
fn restore_hash(state: &HashState) -> Result<RunningHash, Error> {
    let algorithm = match state.algorithm {
        HashAlgorithm::Sha256 => Algorithm::Sha256,
        HashAlgorithm::Sha512 => Algorithm::Sha512,
    };
    RunningHash::restore(algorithm, &state.state).ok_or_else(|| Error::Other("invalid hash state".into()))
}

/// The state to hand back, for the component to continue or finish.
fn save_hash(hash: &RunningHash) -> HashState {
    let algorithm = match hash.algorithm() {
        Algorithm::Sha256 => HashAlgorithm::Sha256,
        Algorithm::Sha512 => HashAlgorithm::Sha512,
    };
    HashState { algorithm, state: hash.save() }
}

/// Chunks stored so far by one write; deleted again unless the write commits.
struct PendingChunks<'a> {
    store: &'a Store,
    write: String,
    count: u64,
}

impl PendingChunks<'_> {
    async fn push(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.store.set(layout::chunk_key(&self.write, self.count), bytes).await.map_err(kv)?;
        self.count += 1;
        Ok(())
    }

    async fn discard(self) {
        for index in 0..self.count {
            let _ = self.store.delete(layout::chunk_key(&self.write, index)).await;
        }
    }
}

fn random_write_id() -> String {
    hex::encode(spin_sdk::wasip3::random::random::get_random_bytes(16))
}

/// Store the bytes of `data` as chunks, hashing them on the way; the chunk count and size.
async fn store_chunks(
    pending: &mut PendingChunks<'_>,
    mut data: StreamReader<u8>,
    hashers: &mut [RunningHash],
) -> Result<u64, Error> {
    let mut size = 0u64;
    let mut buf = Vec::with_capacity(CHUNK_SIZE);
    loop {
        let before = buf.len();
        let (result, filled) = data.read(buf).await;
        buf = filled;
        match result {
            StreamResult::Complete(_) => {
                hashers.iter_mut().for_each(|h| h.update(&buf[before..]));
                size += (buf.len() - before) as u64;
                if buf.len() == CHUNK_SIZE {
                    pending.push(&buf).await?;
                    buf.clear();
                }
            }
            StreamResult::Dropped | StreamResult::Cancelled => break,
        }
    }
    if !buf.is_empty() {
        pending.push(&buf).await?;
    }
    Ok(size)
}

/// Send the spans' bytes down a new stream; the future says whether all of them went.
fn stream_spans(store: Store, spans: Vec<ChunkSpan>) -> (StreamReader<u8>, FutureReader<Result<(), Error>>) {
    let (mut writer, reader) = bindings::wit_stream::new::<u8>();
    let (done, done_reader) =
        bindings::wit_future::new::<Result<(), Error>>(|| Err(Error::Other("the provider stopped sending".into())));
    spin_sdk::wit_bindgen::spawn(async move {
        let mut outcome = Ok(());
        for span in spans {
            let chunk = match store.get(&span.key).await {
                Ok(Some(chunk)) if chunk.len() >= span.end => chunk,
                Ok(_) => {
                    outcome = Err(Error::Other(format!("chunk {} is missing (object deleted while read?)", span.key)));
                    break;
                }
                Err(e) => {
                    outcome = Err(kv(e));
                    break;
                }
            };
            let mut bytes = chunk;
            bytes.truncate(span.end);
            bytes.drain(..span.start);
            if !writer.write_all(bytes).await.is_empty() {
                outcome = Err(Error::Other("the reader went away".into()));
                break;
            }
        }
        drop(writer);
        let _ = done.write(outcome).await;
    });
    (reader, done_reader)
}

/// The right to create `name`: the request whose increment of its claim counter makes it 1.
/// `increment` is atomic on Spin's SQLite and Redis backends and in berth-runner; a create-if-
/// absent through compare-and-swap is not (on Spin's SQLite, swapping an absent key is an
/// upsert), and neither was the `exists`-then-`set` this replaces: two writers both won.
fn claim(name: &str) -> Result<bool, Error> {
    let bucket = wasi_kv::open(STORE_LABEL).map_err(|e| atomics_error(&e))?;
    let count = atomics::increment(&bucket, &layout::claim_key(name), 1).map_err(|e| atomics_error(&e))?;
    Ok(count == 1)
}

fn atomics_error(e: &wasi_kv::Error) -> Error {
    Error::Other(format!("wasi:keyvalue (needed for exclusive creation and listings) failed: {e:?}"))
}

impl Guest for Provider {
    async fn write(
        name: String,
        data: StreamReader<u8>,
        complete: FutureReader<bool>,
        hashes: Vec<HashState>,
    ) -> Result<Written, Error> {
        if let Some(why) = layout::check_name(&name) {
            return Err(Error::InvalidName(why.into()));
        }
        let mut hashers = hashes.iter().map(restore_hash).collect::<Result<Vec<_>, _>>()?;
        let store = open().await?;
        let key = layout::record_key(&name);
        if store.exists(&key).await.map_err(kv)? {
            return Err(Error::AlreadyExists);
        }
        let mut pending = PendingChunks { store: &store, write: random_write_id(), count: 0 };
        let stored = store_chunks(&mut pending, data, &mut hashers).await;
        // The end of the stream does not say the bytes arrived whole: the writer does.
        let confirmed = complete.await;
        let size = match stored {
            Ok(size) if confirmed => size,
            Ok(_) => {
                pending.discard().await;
                return Err(Error::Other("write not confirmed: the data did not arrive whole".into()));
            }
            Err(e) => {
                pending.discard().await;
                return Err(e);
            }
        };
        // Commit: of concurrent writers of one name, the one that claims it first makes its
        // record visible; the others' chunks go.
        let long_name = layout::is_long_record_key(&key).then(|| name.clone());
        let record =
            ObjectRecord { name: long_name, size, chunk_size: CHUNK_SIZE as u64, write: pending.write.clone() };
        let committed = match claim(&name) {
            Ok(true) => store.set(&key, serde_json::to_vec(&record).expect("a record serializes")).await.map_err(kv),
            Ok(false) => Err(Error::AlreadyExists),
            Err(e) => Err(e),
        };
        if let Err(e) = committed {
            pending.discard().await;
            return Err(e);
        }
        Ok(Written { size, hashes: hashers.iter().map(save_hash).collect() })
    }

    async fn read(
        name: String,
        offset: u64,
        length: Option<u64>,
    ) -> Result<(StreamReader<u8>, FutureReader<Result<(), Error>>), Error> {
        let store = open().await?;
        let record = load(&store, &name).await?;
        let length = length.unwrap_or(record.size.saturating_sub(offset));
        let spans = record
            .spans(offset, length)
            .ok_or_else(|| Error::Other(format!("range {offset}+{length} is past the end of {name:?}")))?;
        Ok(stream_spans(store, spans))
    }

    async fn read_extents(extents: Vec<Extent>) -> Result<(StreamReader<u8>, FutureReader<Result<(), Error>>), Error> {
        let store = open().await?;
        let mut spans = Vec::new();
        for extent in extents {
            let record = load(&store, &extent.name).await?;
            spans.extend(record.spans(extent.offset, extent.length).ok_or_else(|| {
                Error::Other(format!("extent {}+{} is past the end of {:?}", extent.offset, extent.length, extent.name))
            })?);
        }
        Ok(stream_spans(store, spans))
    }

    async fn stat(name: String) -> Result<ObjectInfo, Error> {
        let store = open().await?;
        Ok(ObjectInfo { size: load(&store, &name).await?.size })
    }

    async fn delete(name: String) -> Result<(), Error> {
        let store = open().await?;
        let record = match load(&store, &name).await {
            Ok(record) => Some(record),
            Err(Error::NotFound) => None,
            Err(e) => return Err(e),
        };
        if let Some(record) = &record {
            // The record first: from here the object is gone as a whole, then its chunks follow.
            store.delete(layout::record_key(&name)).await.map_err(kv)?;
            for key in record.chunk_keys() {
                store.delete(key).await.map_err(kv)?;
            }
        }
        // Last, the claim, so the name can be created again; also when there was no record: a
        // writer that died between its claim and its record left the name claimed but empty.
        store.delete(layout::claim_key(&name)).await.map_err(kv)?;
        record.map(|_| ()).ok_or(Error::NotFound)
    }

    async fn list_objects(prefix: String, cursor: Option<String>, limit: u32) -> Result<Page, Error> {
        let store = open().await?;
        let mut page = PageBuilder::new(&prefix, cursor, limit);
        let mut long_keys = Vec::new();
        // `wasi:keyvalue` `list-keys`, not `spin:key-value`'s `get-keys` stream: Spin 4.1's SQLite
        // backend holds its connection's lock for as long as that stream is being read, and a
        // request of the same instance making a (synchronous) atomics call meanwhile blocks the
        // instance, so the stream is never drained: a deadlock under concurrent pushes.
        // `list-keys` takes the keys in one call (Spin gives them all at once; berth-runner a
        // page at a time, with a cursor).
        let bucket = wasi_kv::open(STORE_LABEL).map_err(|e| atomics_error(&e))?;
        let mut cursor = None;
        loop {
            let response = bucket.list_keys(cursor.as_deref()).map_err(|e| atomics_error(&e))?;
            for key in response.keys {
                if let Some(name) = layout::name_of_record_key(&key) {
                    page.offer(name);
                } else if layout::is_long_record_key(&key) {
                    long_keys.push(key);
                }
            }
            match response.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        for key in long_keys {
            let Some(bytes) = store.get(&key).await.map_err(kv)? else { continue };
            if let Ok(ObjectRecord { name: Some(name), .. }) = serde_json::from_slice(&bytes) {
                page.offer(&name);
            }
        }
        let (names, next) = page.finish();
        Ok(Page { names, next })
    }
}
