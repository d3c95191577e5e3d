//! `spin:key-value@3.0.0` for the component, over [`KvStores`] (SQLite). Writes (which fsync)
//! and key listings run on blocking threads so a slow disk never stalls the event loop; `get`
//! and `exists` run where they are asked, on the thread's own read connection (see `kv.rs`):
//! handing each to a blocking thread and back cost more than the read itself.

use crate::bindings::spin::key_value::key_value::{self as wit, Error};
use crate::host::Host;
use crate::kv::{OpenError, SqliteStore};
use std::sync::Arc;
use wasmtime::component::{Access, Accessor, FutureReader, HasData, Linker, Resource, StreamReader};

/// The resource behind a guest's `store` handle.
pub struct KvHandle(Arc<SqliteStore>);

pub struct KeyValueHost;

impl HasData for KeyValueHost {
    type Data<'a> = &'a mut Host;
}

pub fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    wit::add_to_linker::<Host, KeyValueHost>(linker, |host| host)
}

fn handle<T>(accessor: &Accessor<T, KeyValueHost>, store: &Resource<KvHandle>) -> wasmtime::Result<Arc<SqliteStore>> {
    accessor.with(|mut access| Ok(access.get().table.get(store)?.0.clone()))
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, String> + Send + 'static,
) -> wasmtime::Result<Result<R, Error>> {
    Ok(tokio::task::spawn_blocking(f).await?.map_err(Error::Other))
}

impl<T> wit::HostStoreWithStore<T> for KeyValueHost {
    async fn open(accessor: &Accessor<T, Self>, label: String) -> wasmtime::Result<Result<Resource<KvHandle>, Error>> {
        let opened = accessor.with(|mut access| access.get().shared.kv.open(&label));
        let store = match opened {
            Ok(store) => store,
            Err(OpenError::AccessDenied) => return Ok(Err(Error::AccessDenied)),
            Err(OpenError::Other(why)) => return Ok(Err(Error::Other(why))),
        };
        accessor.with(|mut access| Ok(Ok(access.get().table.push(KvHandle(store))?)))
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        store: Resource<KvHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let db = handle(accessor, &store)?;
        Ok(db.get(&key).map_err(Error::Other))
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        store: Resource<KvHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let db = handle(accessor, &store)?;
        blocking(move || db.set(&key, &value)).await
    }

    async fn delete(
        accessor: &Accessor<T, Self>,
        store: Resource<KvHandle>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        let db = handle(accessor, &store)?;
        blocking(move || db.delete(&key)).await
    }

    async fn exists(
        accessor: &Accessor<T, Self>,
        store: Resource<KvHandle>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        let db = handle(accessor, &store)?;
        Ok(db.exists(&key).map_err(Error::Other))
    }

    fn drop(mut access: Access<'_, T, Self>, store: Resource<KvHandle>) -> wasmtime::Result<()> {
        access.get().table.delete(store)?;
        Ok(())
    }

    async fn get_keys(
        accessor: &Accessor<T, Self>,
        store: Resource<KvHandle>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), Error>>)> {
        let db = handle(accessor, &store)?;
        let (keys, result) = match blocking(move || db.keys()).await? {
            Ok(keys) => (keys, Ok(())),
            Err(e) => (Vec::new(), Err(e)),
        };
        accessor.with(|mut access| {
            let stream = StreamReader::new(&mut access, keys)?;
            let future = FutureReader::new(&mut access, async move { wasmtime::error::Ok(result) })?;
            Ok((stream, future))
        })
    }
}

impl wit::HostStore for &mut Host {}

impl wit::Host for &mut Host {}
