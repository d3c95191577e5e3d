//! The `berth:blob-store/store` export over `spin:key-value` (wasm32 only). Every decision about
//! keys and ranges is in [`crate::layout`]; this moves bytes between streams and the store.

use crate::index::{Cells, Counter, Index, IndexError};
use crate::layout::{self, CHUNK_SIZE, ChunkSpan, Marker, ObjectRecord};
use berth_hash_state::RunningHash;
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

/// The object's record; an object a delete has taken is absent.
async fn load(store: &Store, name: &str) -> Result<ObjectRecord, Error> {
    match load_raw(store, name).await? {
        Some((record, _)) if !record.deleting => Ok(record),
        _ => Err(Error::NotFound),
    }
}

/// The record under the name's key as stored, also one a delete has taken, with its bytes (for
/// a swap).
async fn load_raw(store: &Store, name: &str) -> Result<Option<(ObjectRecord, Vec<u8>)>, Error> {
    if let Some(why) = layout::check_name(name) {
        return Err(Error::InvalidName(why.into()));
    }
    let Some(bytes) = store.get(layout::record_key(name)).await.map_err(kv)? else { return Ok(None) };
    let record =
        serde_json::from_slice(&bytes).map_err(|e| Error::Other(format!("unreadable record of {name:?}: {e}")))?;
    Ok(Some((record, bytes)))
}

/// Whether record bytes stand for an object that exists (not one a delete has taken). Bytes
/// that do not parse count as an object: listed, and reads report them.
fn is_live(bytes: &[u8]) -> bool {
    serde_json::from_slice::<ObjectRecord>(bytes).map_or(true, |record| !record.deleting)
}

berth_hash_state::wit_hash_state_conversions!(HashState, HashAlgorithm, Error);

/// One write in progress: its chunks so far, and its marker in the writes index, by which a
/// later write reclaims the chunks if this one dies (see [`reclaim`]).
struct PendingWrite<'a> {
    store: &'a Store,
    bucket: &'a Bucket,
    marker: Marker,
    count: u64,
}

impl<'a> PendingWrite<'a> {
    async fn start(store: &'a Store, bucket: &'a Bucket, name: &str) -> Result<PendingWrite<'a>, Error> {
        PendingWrite::mark(store, bucket, Marker { at: now(), write: random_write_id(), name: name.to_owned() })
    }

    /// Marked as the delete of the object whose chunks `chunks` wrote.
    fn mark_delete(store: &'a Store, bucket: &'a Bucket, name: &str, chunks: &str) -> Result<PendingWrite<'a>, Error> {
        PendingWrite::mark(store, bucket, Marker::delete(now(), chunks, &random_write_id(), name))
    }

    fn mark(store: &'a Store, bucket: &'a Bucket, marker: Marker) -> Result<PendingWrite<'a>, Error> {
        writes(bucket).insert(&marker.entry()).map_err(index_error)?;
        Ok(PendingWrite { store, bucket, marker, count: 0 })
    }

    async fn push(&mut self, bytes: Vec<u8>) -> Result<(), Error> {
        self.start_push(bytes)?.finish().await
    }

    /// Start storing the next chunk, and return while the host stores it: the caller reads and
    /// hashes the next one meanwhile, and finishes this one before starting another.
    fn start_push(&mut self, bytes: Vec<u8>) -> Result<ChunkWrite<'a>, Error> {
        let key = layout::chunk_key(&self.marker.write, self.count);
        self.count += 1;
        if self.count.is_multiple_of(REFRESH_CHUNKS) {
            self.refresh()?;
        }
        let store = self.store;
        Ok(ChunkWrite::start(Box::pin(async move { store.set(&key, &bytes).await.map_err(kv) })))
    }

    /// Move the marker to now, so no reclaimer takes this write for another grace period; an
    /// error if one took it already (its chunks are going: the write cannot commit).
    fn refresh(&mut self) -> Result<(), Error> {
        let fresh = Marker { at: now(), ..self.marker.clone() };
        if fresh == self.marker {
            return Ok(()); // marked this very second: no reclaimer can have taken it
        }
        let writes = writes(self.bucket);
        writes.insert(&fresh.entry()).map_err(index_error)?;
        let ours = writes.remove(&self.marker.entry()).map_err(index_error)?;
        let stale = std::mem::replace(&mut self.marker, fresh);
        if !ours {
            return Err(Error::Other(format!(
                "write {} was idle past its grace period and was reclaimed: its data is gone",
                stale.write
            )));
        }
        Ok(())
    }

    /// Delete the chunks, then the marker (a kill in between leaves the marker for a reclaimer).
    async fn discard(self) {
        if delete_chunks(self.store, &self.marker.write, u64::MAX).await.is_ok() {
            let _ = writes(self.bucket).remove(&self.marker.entry());
        }
    }

    /// The write is committed (or failed and cleaned up): its marker goes.
    fn done(self) -> Result<(), Error> {
        writes(self.bucket).remove(&self.marker.entry()).map_err(index_error).map(drop)
    }
}

/// A chunk's write into the key-value store, and what it may still need.
type Storing<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + 'a>>;

/// One chunk being stored by the host, or stored already.
enum ChunkWrite<'a> {
    Storing(Storing<'a>),
    Stored(Result<(), Error>),
}

impl<'a> ChunkWrite<'a> {
    /// Polled once here: that makes the call into the host, which takes the bytes and writes
    /// them (on its own thread, in berth-runner and Spin) while this component goes on. The
    /// completion is kept by the call until `finish` polls again with a real waker.
    fn start(mut storing: Storing<'a>) -> Self {
        let waker = std::task::Waker::noop();
        match storing.as_mut().poll(&mut std::task::Context::from_waker(waker)) {
            std::task::Poll::Ready(stored) => ChunkWrite::Stored(stored),
            std::task::Poll::Pending => ChunkWrite::Storing(storing),
        }
    }

    async fn finish(self) -> Result<(), Error> {
        match self {
            ChunkWrite::Storing(storing) => storing.await,
            ChunkWrite::Stored(stored) => stored,
        }
    }
}

/// A write's marker is moved to now every this many chunks (64 MiB), so that a long but
/// progressing write is never taken for a dead one.
const REFRESH_CHUNKS: u64 = 256;

/// Marked writes reclaimed per write, at most; and chunks deleted per reclaimed write per step
/// (a longer one is marked again and continued by a later step).
const RECLAIM_WRITES: usize = 4;
const RECLAIM_CHUNKS: u64 = 512;

/// How long a write may go without progress before a later write reclaims its chunks: the Spin
/// variable `blob_kv_write_grace_seconds` (default one hour; tests shorten it).
async fn write_grace() -> u64 {
    const DEFAULT: u64 = 3600;
    match spin_sdk::variables::get("blob_kv_write_grace_seconds").await {
        Ok(value) => value.trim().parse::<u64>().map(|s| s.max(1)).unwrap_or(DEFAULT),
        Err(_) => DEFAULT,
    }
}

fn now() -> u64 {
    spin_sdk::wasip3::clocks::system_clock::now().seconds.max(0) as u64
}

/// Delete the chunks of `write`, from the last down so that what is left is always chunks
/// `0..k` (found again by probing); at most `budget`. How many are left.
async fn delete_chunks(store: &Store, write: &str, budget: u64) -> Result<u64, Error> {
    let mut count = chunk_count(store, write).await?;
    let mut deleted = 0;
    while count > 0 && deleted < budget {
        store.delete(layout::chunk_key(write, count - 1)).await.map_err(kv)?;
        count -= 1;
        deleted += 1;
    }
    Ok(count)
}

/// How many chunks `write` has left: they are always `0..k`, so probe 1, 2, 4, ... then bisect.
async fn chunk_count(store: &Store, write: &str) -> Result<u64, Error> {
    let present = |index: u64| async move { store.exists(layout::chunk_key(write, index)).await.map_err(kv) };
    if !present(0).await? {
        return Ok(0);
    }
    let mut low = 0; // present
    let mut high = 1;
    while present(high).await? {
        low = high;
        high *= 2;
    }
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if present(middle).await? {
            low = middle;
        } else {
            high = middle;
        }
    }
    Ok(high)
}

/// One step of reclamation, run by every write: the oldest marked writes past their grace
/// period are taken (removing a marker is exclusive, so one reclaimer handles each) and, unless
/// their object was committed, their chunks deleted and the claim a half-done write or delete
/// left on the name cleared.
async fn reclaim(store: &Store, bucket: &Bucket, grace: u64) -> Result<(), Error> {
    let cutoff = now().saturating_sub(grace);
    let writes = writes(bucket);
    let (oldest, _) = writes.page("", None, RECLAIM_WRITES, |_| Ok(true)).map_err(index_error)?;
    for entry in oldest {
        let Some(marker) = Marker::parse(&entry) else {
            writes.remove(&entry).map_err(index_error)?;
            continue;
        };
        if marker.at >= cutoff {
            break; // in order of time: the rest are younger
        }
        if !writes.remove(&entry).map_err(index_error)? {
            continue;
        }
        let record = load_raw(store, &marker.name).await?.map(|(record, _)| record);
        let ours = record.as_ref().filter(|record| record.write == marker.chunks());
        if ours.is_some_and(|record| !record.deleting) {
            continue; // committed (or a delete that died before it took the record)
        }
        if delete_chunks(store, marker.chunks(), RECLAIM_CHUNKS).await? > 0 {
            writes.insert(&entry).map_err(index_error)?; // more next time
            continue;
        }
        if ours.is_some() {
            // A delete that died after taking the record (it holds the claim): finished here, as
            // it would have.
            release(store, bucket, &marker.name, true).await?;
        } else if record.is_none() {
            // A writer that died between its claim and its record left the name claimed; a
            // delete that died between removing the record's key and the claim left it held.
            clear_stuck_claim(bucket, &marker.name, marker.is_delete()).await?;
        }
    }
    Ok(())
}

/// The last steps of a delete, once its chunks are gone: the name unlisted (when the delete
/// took a record), the record's key removed, and the claim, so that the name can be created
/// again. Only the holder of the record's delete does this: the claim it holds keeps every
/// create out until the claim goes, last.
async fn release(store: &Store, bucket: &Bucket, name: &str, listed: bool) -> Result<(), Error> {
    if listed {
        names(bucket).remove(name).map_err(index_error)?;
    }
    store.delete(layout::record_key(name)).await.map_err(kv)?;
    store.delete(layout::claim_key(name)).await.map_err(kv)
}

/// A write this recent may be between its claim and its record (it marks itself afresh just
/// before it claims, and stores the record a few steps later).
const LIVE_WRITE_SECONDS: u64 = 60;

/// Clear the claim of a name that has no record, if one is left: taken by a writer that died
/// before its record, and by no live one (whose claim must stand), nor by a delete on its way
/// (unless `of_dead_delete`: a reclaimer finishing a delete that died after removing the
/// record's key, whose hold it is; a live delete of a later record has a fresh marker).
async fn clear_stuck_claim(bucket: &Bucket, name: &str, of_dead_delete: bool) -> Result<(), Error> {
    // Read, not incremented by 0: that would create the key for a name never claimed.
    let raw = bucket.0.get(&layout::claim_key(name)).map_err(|e| atomics_error(&e))?;
    let claim = raw.as_deref().and_then(Counter::decode).map_or(0, |(count, _)| count);
    if claim == 0 || (claim >= DELETING as u64 && !of_dead_delete) || live_write(bucket, name)? {
        return Ok(());
    }
    bucket.0.delete(&layout::claim_key(name)).map_err(|e| atomics_error(&e))
}

/// Whether a write (or delete) of `name` has made progress within [`LIVE_WRITE_SECONDS`]: the
/// writes index holds entries in order of time, so this reads only the recent ones.
fn live_write(bucket: &Bucket, name: &str) -> Result<bool, Error> {
    let from = Marker { at: now().saturating_sub(LIVE_WRITE_SECONDS), write: String::new(), name: String::new() };
    let from = from.entry();
    let mut found = false;
    writes(bucket)
        .scan(&from[..16], false, |entry| {
            found = Marker::parse(entry).is_some_and(|marker| marker.name == name);
            Ok(!found)
        })
        .map_err(index_error)?;
    Ok(found)
}

fn random_write_id() -> String {
    hex::encode(spin_sdk::wasip3::random::random::get_random_bytes(16))
}

/// Store the bytes of `data` as chunks, hashing them on the way; the chunk count and size.
async fn store_chunks(
    pending: &mut PendingWrite<'_>,
    mut data: StreamReader<u8>,
    hashers: &mut [RunningHash],
) -> Result<u64, Error> {
    let mut size = 0u64;
    let mut buf = Vec::with_capacity(CHUNK_SIZE);
    // The chunk the host is storing while the next is read and hashed (hashing in wasm is the
    // larger part of a write's time): at most one, always finished before this returns, so no
    // write of a chunk outlives the write that discards them.
    let mut storing: Option<ChunkWrite<'_>> = None;
    let outcome = loop {
        let before = buf.len();
        let (result, filled) = data.read(buf).await;
        buf = filled;
        match result {
            StreamResult::Complete(_) => {
                hashers.iter_mut().for_each(|h| h.update(&buf[before..]));
                size += (buf.len() - before) as u64;
                if buf.len() == CHUNK_SIZE {
                    let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK_SIZE));
                    if let Some(previous) = storing.take()
                        && let Err(e) = previous.finish().await
                    {
                        break Err(e);
                    }
                    match pending.start_push(full) {
                        Ok(started) => storing = Some(started),
                        Err(e) => break Err(e),
                    }
                }
            }
            StreamResult::Dropped | StreamResult::Cancelled => break Ok(()),
        }
    };
    if let Some(last) = storing.take() {
        last.finish().await?;
    }
    outcome?;
    if !buf.is_empty() {
        pending.push(buf).await?;
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

/// The same key-value store through `wasi:keyvalue`, for its atomics (and the index over them).
struct Bucket(wasi_kv::Bucket);

fn bucket() -> Result<Bucket, Error> {
    wasi_kv::open(STORE_LABEL).map(Bucket).map_err(|e| atomics_error(&e))
}

fn atomics_error(e: &wasi_kv::Error) -> Error {
    Error::Other(format!("wasi:keyvalue (needed for exclusive creation and listings) failed: {e:?}"))
}

fn index_error(e: IndexError<wasi_kv::Error>) -> Error {
    match e {
        IndexError::Store(e) => atomics_error(&e),
        IndexError::Corrupt(why) => Error::Other(why),
        IndexError::Contended => Error::Other("index: too much contention, try again".into()),
    }
}

impl Cells for Bucket {
    type Error = wasi_kv::Error;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Self::Error> {
        self.0.get(key)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), Self::Error> {
        self.0.set(key, value)
    }

    fn delete(&self, key: &str) -> Result<(), Self::Error> {
        self.0.delete(key)
    }

    fn swap(&self, key: &str, old: &[u8], new: &[u8]) -> Result<bool, Self::Error> {
        let cas = atomics::Cas::new(&self.0, key)?;
        // `current` is what the swap compares against: only swap from the value the index read.
        if cas.current()?.as_deref() != Some(old) {
            return Ok(false);
        }
        match atomics::swap(cas, new) {
            Ok(()) => Ok(true),
            Err(atomics::CasError::CasFailed(_)) => Ok(false),
            Err(atomics::CasError::StoreError(e)) => Err(e),
        }
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, Self::Error> {
        atomics::increment(&self.0, key, delta)
    }
}

/// The names of the objects, in order: what listings read.
fn names(bucket: &Bucket) -> Index<'_, Bucket> {
    Index::new(bucket, layout::NAMES_INDEX)
}

/// The writes (and deletes) in progress, oldest first: what [`reclaim`] reads.
fn writes(bucket: &Bucket) -> Index<'_, Bucket> {
    Index::new(bucket, layout::WRITES_INDEX)
}

/// Added to a name's claim counter by a delete of its record while it runs: a count this high
/// is a delete on its way, never creators' attempts.
const DELETING: i64 = 1 << 40;

/// The right to create `name`: the request whose increment of its claim counter makes it 1.
/// `increment` is atomic on Spin's SQLite and Redis backends and in berth-runner; a create-if-
/// absent through compare-and-swap is not (on Spin's SQLite, swapping an absent key is an
/// upsert), and neither was the `exists`-then-`set` this replaces: two writers both won.
fn claim(bucket: &Bucket, name: &str) -> Result<bool, Error> {
    let count = atomics::increment(&bucket.0, &layout::claim_key(name), 1).map_err(|e| atomics_error(&e))?;
    Ok(count == 1)
}

/// Make the record of a claimed name visible: listed first, then stored (a kill in between
/// leaves a listed name without a record, which listings skip).
async fn publish(store: &Store, bucket: &Bucket, key: &str, name: &str, record: &ObjectRecord) -> Result<(), Error> {
    names(bucket).insert(name).map_err(index_error)?;
    store.set(key, serde_json::to_vec(record).expect("a record serializes")).await.map_err(kv)
}

/// How long a create waits for a delete of the same name to finish, and how often it looks.
const DELETE_WAIT_MILLIS: u64 = 5_000;
const DELETE_POLL_MILLIS: u64 = 5;

/// "Already exists" when the name holds an object. A create that meets a delete of the name on
/// its way (its taken record) waits for it, as if it came after it: a caller that retries on
/// "already exists" without a pause (the registry's index entries) would otherwise use up its
/// tries within the delete. A delete that does not finish within [`DELETE_WAIT_MILLIS`] died
/// (a reclaimer finishes it after the grace period): "already exists" until then.
async fn wait_while_deleted(store: &Store, key: &str) -> Result<(), Error> {
    let mut waited = 0;
    loop {
        match store.get(key).await.map_err(kv)? {
            None => return Ok(()),
            Some(bytes) if is_live(&bytes) || waited >= DELETE_WAIT_MILLIS => return Err(Error::AlreadyExists),
            Some(_) => {
                spin_sdk::wasip3::clocks::monotonic_clock::wait_for(DELETE_POLL_MILLIS * 1_000_000).await;
                waited += DELETE_POLL_MILLIS;
            }
        }
    }
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
        let bucket = bucket()?;
        let key = layout::record_key(&name);
        wait_while_deleted(&store, &key).await?;
        // Every write pays for a little of what dead ones left: the provider has no timer.
        if let Err(e) = reclaim(&store, &bucket, write_grace().await).await {
            eprintln!("berth-blob-kv: reclaiming dead writes: {e:?}");
        }
        let mut pending = PendingWrite::start(&store, &bucket, &name).await?;
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
        // The commit point: a marker fresh from now on, which no reclaimer takes while the few
        // steps below run (or an error, when one took it already and the chunks are going).
        if let Err(e) = pending.refresh() {
            pending.discard().await;
            return Err(e);
        }
        // Of concurrent writers of one name, the one that claims it first makes its record
        // visible; the others' chunks go.
        let long_name = layout::is_long_record_key(&key).then(|| name.clone());
        let record = ObjectRecord {
            name: long_name,
            size,
            chunk_size: CHUNK_SIZE as u64,
            write: pending.marker.write.clone(),
            deleting: false,
        };
        let committed = match claim(&bucket, &name) {
            Ok(true) => publish(&store, &bucket, &key, &name, &record).await,
            Ok(false) => Err(Error::AlreadyExists),
            Err(e) => Err(e),
        };
        if let Err(e) = committed {
            pending.discard().await;
            return Err(e);
        }
        pending.done()?;
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
        let bucket = bucket()?;
        let Some((record, bytes)) = load_raw(&store, &name).await? else {
            // No record: a writer that died between its claim and its record may have left the
            // name claimed but empty; the registry deletes such a name to free it.
            clear_stuck_claim(&bucket, &name, false).await?;
            return Err(Error::NotFound);
        };
        if record.deleting {
            // Another delete has it (or died with it: a reclaimer finishes that one).
            return Err(Error::NotFound);
        }
        // Marked first, with the write that stored the chunks: a delete that dies half-way is
        // finished by a reclaimer.
        let mut lease = PendingWrite::mark_delete(&store, &bucket, &name, &record.write)?;
        // Exactly one delete takes the record: the others read it before this swap and now find
        // it changed. From here the object is gone for every reader.
        let doomed = serde_json::to_vec(&record.doomed()).expect("a record serializes");
        if !bucket.swap(&layout::record_key(&name), &bytes, &doomed).map_err(|e| atomics_error(&e))? {
            lease.done()?;
            return Err(Error::NotFound);
        }
        // Held past any creator's count while this delete runs: a delete of the name that finds
        // no record (below, in a moment) does not take the claim for a dead writer's.
        atomics::increment(&bucket.0, &layout::claim_key(&name), DELETING).map_err(|e| atomics_error(&e))?;
        delete_chunks(&store, &record.write, u64::MAX).await?;
        // Renewed before the last steps: a delete that took longer than the grace period may
        // have been taken over by a reclaimer, which then finishes it (and only one may release
        // the name, or a create let in by the first release would lose its name to the second).
        if lease.refresh().is_err() {
            return lease.done();
        }
        release(&store, &bucket, &name, true).await?;
        lease.done()
    }

    /// Objects are never joined: chunks in key-value have no URL to join them for.
    async fn compose(_name: String, _extents: Vec<Extent>) -> Result<Option<ObjectInfo>, Error> {
        Ok(None)
    }

    /// A provider component serves no response: bytes go out through `read-extents`.
    async fn host_body(_extents: Vec<Extent>) -> Result<Option<String>, Error> {
        Ok(None)
    }

    /// Chunks in key-value have no URL of their own: bytes go out through `read` only.
    async fn presign_read(_name: String, _expires_seconds: u32) -> Result<Option<String>, Error> {
        Ok(None)
    }

    async fn list_objects(prefix: String, cursor: Option<String>, limit: u32) -> Result<Page, Error> {
        let bucket = bucket()?;
        // The names index holds a name from just before its record is stored until just before
        // it is deleted; a kill in between leaves a name without a live record, skipped here.
        let (names, more) = names(&bucket)
            .page(&prefix, cursor.as_deref(), limit as usize, |name| {
                let record = bucket.0.get(&layout::record_key(name)).map_err(IndexError::Store)?;
                Ok(record.is_some_and(|bytes| is_live(&bytes)))
            })
            .map_err(index_error)?;
        let next = if more { names.last().cloned() } else { None };
        Ok(Page { names, next })
    }
}
