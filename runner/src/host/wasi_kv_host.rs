//! `wasi:keyvalue/store` and `wasi:keyvalue/atomics@0.2.0-draft2` for the component, over the
//! same [`KvStores`](crate::store::kv_stores::KvStores) as `spin:key-value`: `open(identifier)` is
//! `spin:key-value`'s `open(label)` (same grants, same store: SQLite file or Redis database), so
//! a component can mix both interfaces on the same keys, as under Spin 4.1.
//!
//! These WIT functions are not `async`: the guest waits for each (see `bindings.rs`). As in
//! `kv_host.rs`, writes (which fsync or cross the network) and key listings run on blocking
//! threads; on SQLite, `get`, `exists` and the reads of a CAS handle run in place on the thread's
//! own read connection (on Redis, on blocking threads too).

use crate::host::bindings::wasi::keyvalue::atomics::{self, CasError};
use crate::host::bindings::wasi::keyvalue::store::{self as wit, Error, KeyResponse};
use crate::host::resources::{Bucket, Cas};
use crate::host::state::Host;
use crate::store::kv::{KvBackend, OpenError, Swap};
use std::sync::Arc;
use wasmtime::component::{HasData, Linker, Resource};

/// Keys per page of `list-keys`.
const KEYS_PER_PAGE: usize = 256;

pub struct WasiKeyValueHost;

impl HasData for WasiKeyValueHost {
    type Data<'a> = &'a mut Host;
}

pub fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    wit::add_to_linker::<Host, WasiKeyValueHost>(linker, |host| host)?;
    atomics::add_to_linker::<Host, WasiKeyValueHost>(linker, |host| host)
}

fn bucket(host: &Host, bucket: &Resource<Bucket>) -> wasmtime::Result<Arc<dyn KvBackend>> {
    Ok(host.table.get(bucket)?.0.clone())
}

/// Run `f` on a blocking thread (it writes, and writes fsync).
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, String> + Send + 'static,
) -> wasmtime::Result<Result<R, String>> {
    Ok(tokio::task::spawn_blocking(f).await?)
}

/// A read: in place where the backend's reads are local (SQLite), else on a blocking thread.
async fn read<R: Send + 'static>(
    db: Arc<dyn KvBackend>,
    f: impl FnOnce(&dyn KvBackend) -> Result<R, String> + Send + 'static,
) -> wasmtime::Result<Result<R, String>> {
    if db.reads_in_place() {
        return Ok(f(&*db));
    }
    blocking(move || f(&*db)).await
}

impl wit::Host for &mut Host {
    async fn open(&mut self, identifier: String) -> wasmtime::Result<Result<Resource<Bucket>, Error>> {
        let store = match self.shared.kv.open(&identifier) {
            Ok(store) => store,
            Err(OpenError::AccessDenied) => return Ok(Err(Error::AccessDenied)),
            Err(OpenError::Other(why)) => return Ok(Err(Error::Other(why))),
        };
        Ok(Ok(self.table.push(Bucket(store))?))
    }
}

impl wit::HostBucket for &mut Host {
    async fn get(&mut self, this: Resource<Bucket>, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        Ok(read(bucket(self, &this)?, move |db| db.get(&key)).await?.map_err(Error::Other))
    }

    async fn set(
        &mut self,
        this: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let db = bucket(self, &this)?;
        Ok(blocking(move || db.set(&key, &value)).await?.map_err(Error::Other))
    }

    async fn delete(&mut self, this: Resource<Bucket>, key: String) -> wasmtime::Result<Result<(), Error>> {
        let db = bucket(self, &this)?;
        Ok(blocking(move || db.delete(&key)).await?.map_err(Error::Other))
    }

    async fn exists(&mut self, this: Resource<Bucket>, key: String) -> wasmtime::Result<Result<bool, Error>> {
        Ok(read(bucket(self, &this)?, move |db| db.exists(&key)).await?.map_err(Error::Other))
    }

    /// Keys a bounded page at a time, with the backend's cursor (on SQLite, in order: the cursor
    /// is the last key of the page before, so a key added or removed between pages never shifts
    /// the others).
    async fn list_keys(
        &mut self,
        this: Resource<Bucket>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<KeyResponse, Error>> {
        let db = bucket(self, &this)?;
        let listed = blocking(move || db.keys_page(cursor.as_deref(), KEYS_PER_PAGE)).await?;
        Ok(listed.map_err(Error::Other).map(|page| KeyResponse { keys: page.keys, cursor: page.next }))
    }

    async fn drop(&mut self, this: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl atomics::Host for &mut Host {
    async fn increment(
        &mut self,
        bucket_: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, Error>> {
        let db = bucket(self, &bucket_)?;
        Ok(blocking(move || db.increment(&key, delta)).await?.map_err(Error::Other))
    }

    async fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> wasmtime::Result<Result<(), CasError>> {
        let Cas { store, key, seen } = self.table.delete(cas)?;
        let db = store.clone();
        let swapped = blocking(move || db.swap(&key, seen.as_deref(), &value).map(|swap| (key, swap))).await?;
        match swapped {
            Ok((_, Swap::Done)) => Ok(Ok(())),
            // A fresh handle with the value there now, for the guest's next try.
            Ok((key, Swap::Changed(now))) => {
                Ok(Err(CasError::CasFailed(self.table.push(Cas { store, key, seen: now })?)))
            }
            Err(why) => Ok(Err(CasError::StoreError(Error::Other(why)))),
        }
    }
}

impl atomics::HostCas for &mut Host {
    async fn new(&mut self, bucket_: Resource<Bucket>, key: String) -> wasmtime::Result<Result<Resource<Cas>, Error>> {
        let store = bucket(self, &bucket_)?;
        let read_key = key.clone();
        let seen = match read(store.clone(), move |db| db.get(&read_key)).await? {
            Ok(seen) => seen,
            Err(why) => return Ok(Err(Error::Other(why))),
        };
        Ok(Ok(self.table.push(Cas { store, key, seen })?))
    }

    /// Reads the value again; a `swap` then expects this one.
    async fn current(&mut self, this: Resource<Cas>) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let (store, key) = {
            let cas = self.table.get(&this)?;
            (cas.store.clone(), cas.key.clone())
        };
        let now = match read(store, move |db| db.get(&key)).await? {
            Ok(now) => now,
            Err(why) => return Ok(Err(Error::Other(why))),
        };
        self.table.get_mut(&this)?.seen.clone_from(&now);
        Ok(Ok(now))
    }

    async fn drop(&mut self, this: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
