//! The store data of one component instance ([`Host`]) and what every instance shares
//! ([`Shared`]): what the host interfaces (`*_host.rs`) work on.

use crate::app::variables::Variables;
use crate::host::host_bodies::HostBodies;
use crate::host::outbound::{AllowedHosts, OutboundHooks};
use crate::store::blob_fs::FsBlobStore;
use crate::store::kv_stores::KvStores;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Set once shutdown begins: instances dropped after that are not failures worth reporting.
pub static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// What every instance shares: the storage backends and the resolved configuration.
pub struct Shared {
    pub kv: KvStores,
    pub blobs: FsBlobStore,
    pub variables: Variables,
    pub outbound: Arc<AllowedHosts>,
    /// Blob bodies offered to the component's answers, for the HTTP front to send.
    pub host_bodies: HostBodies,
}

/// Store data of one instance.
pub struct Host {
    pub table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
    pub shared: Arc<Shared>,
}

impl Host {
    pub(super) fn new(shared: Arc<Shared>) -> Host {
        let wasi = WasiCtxBuilder::new().inherit_stdout().inherit_stderr().build();
        Host {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            hooks: OutboundHooks { allowed: shared.outbound.clone() },
            shared,
        }
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { hooks: &mut self.hooks, table: &mut self.table, ctx: &mut self.http }
    }
}

pub(super) fn http_view(host: &mut Host) -> WasiHttpCtxView<'_> {
    host.http()
}
