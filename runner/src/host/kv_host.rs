//! `spin:key-value@3.0.0` for the component, over [`KvStores`](crate::store::kv_stores::KvStores) (SQLite, or
//! Redis where the runtime config file says so). Writes (which fsync, or cross the network) and
//! key listings (a page at a time) run on blocking threads so a slow disk or server never stalls
//! the event loop; on SQLite, `get` and `exists` run where they are asked, on the thread's own
//! read connection (see `kv.rs`): handing each to a blocking thread and back cost more than the
//! read itself.

use crate::host::bindings::spin::key_value::key_value::{self as wit, Error};
use crate::host::resources::KvHandle;
use crate::host::state::Host;
use crate::host::streams::{self, ChannelProducer};
use crate::store::kv::{KvBackend, OpenError};
use std::sync::Arc;
use wasmtime::component::{Access, Accessor, HasData, Linker, Resource, VecBuffer};

/// Keys per page of a listing (and per chunk of its stream).
const KEYS_PER_PAGE: usize = 256;

pub struct KeyValueHost;

impl HasData for KeyValueHost {
    type Data<'a> = &'a mut Host;
}

pub fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    wit::add_to_linker::<Host, KeyValueHost>(linker, |host| host)
}

fn handle<T>(accessor: &Accessor<T, KeyValueHost>, store: &Resource<KvHandle>) -> wasmtime::Result<Arc<dyn KvBackend>> {
    accessor.with(|mut access| Ok(access.get().table.get(store)?.0.clone()))
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, String> + Send + 'static,
) -> wasmtime::Result<Result<R, Error>> {
    Ok(tokio::task::spawn_blocking(f).await?.map_err(Error::Other))
}

/// A read: in place where the backend's reads are local (SQLite), else on a blocking thread.
async fn read<R: Send + 'static>(
    db: Arc<dyn KvBackend>,
    f: impl FnOnce(&dyn KvBackend) -> Result<R, String> + Send + 'static,
) -> wasmtime::Result<Result<R, Error>> {
    if db.reads_in_place() {
        return Ok(f(&*db).map_err(Error::Other));
    }
    blocking(move || f(&*db)).await
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
        read(handle(accessor, &store)?, move |db| db.get(&key)).await
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
        read(handle(accessor, &store)?, move |db| db.exists(&key)).await
    }

    fn drop(mut access: Access<'_, T, Self>, store: Resource<KvHandle>) -> wasmtime::Result<()> {
        access.get().table.delete(store)?;
        Ok(())
    }

    async fn get_keys(
        accessor: &Accessor<T, Self>,
        store: Resource<KvHandle>,
    ) -> wasmtime::Result<streams::GuestStream<String, Error>> {
        let db = handle(accessor, &store)?;
        let (tx, producer, done) = ChannelProducer::<String, VecBuffer<String>>::new();
        // A blocking thread lists the keys a page at a time; the bounded channel holds it back
        // while the guest reads, so memory stays a few pages whatever the store's size.
        tokio::task::spawn_blocking(move || {
            let mut cursor: Option<String> = None;
            loop {
                let page = match db.keys_page(cursor.as_deref(), KEYS_PER_PAGE) {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                };
                if !page.keys.is_empty() && tx.blocking_send(Ok(VecBuffer::from(page.keys))).is_err() {
                    return; // the guest dropped the stream
                }
                cursor = page.next;
                if cursor.is_none() {
                    return;
                }
            }
        });
        streams::to_guest(accessor, producer, done, Error::Other)
    }
}

impl wit::HostStore for &mut Host {}

impl wit::Host for &mut Host {}
