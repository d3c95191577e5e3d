//! The component's host: the one linker listing every interface the runner provides, over the
//! store data of [`state`], and the instance policy (how many requests an instance serves, at
//! once and in all). The interfaces: `spin:key-value` ([`kv_host`]), `wasi:keyvalue`
//! ([`wasi_kv_host`]), `spin:variables` ([`vars_host`]), Berth's blob store ([`blob_host`];
//! the bodies it hands the HTTP front to send are [`host_bodies`]), outbound HTTP's allow-list
//! ([`outbound`]); their resources are [`resources`].

pub mod bindings;
pub mod blob_host;
pub mod host_bodies;
pub mod kv_host;
pub mod outbound;
pub mod resources;
pub mod state;
pub mod streams;
pub mod vars_host;
pub mod wasi_kv_host;

use state::{Host, SHUTTING_DOWN, Shared, http_view};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, GuestTaskId, Linker};
use wasmtime::{Engine, Store, StoreContextMut};
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, ProxyPre, ShouldAccept, WorkerExpiration, WorkerState, WorkerStatus,
};

/// How instances are reused across requests (P3 components may serve many, concurrently).
#[derive(Debug, Clone, Copy)]
pub struct Reuse {
    /// Requests an instance serves before it is dropped (1 = a fresh instance per request).
    pub max_requests: usize,
    /// Requests an instance serves at once.
    pub max_concurrent: usize,
    /// How long an idle instance is kept for reuse.
    pub idle: Duration,
}

pub fn engine() -> anyhow::Result<Engine> {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model_async(true);
    let mut pooling = wasmtime::PoolingAllocationConfig::default();
    pooling.total_component_instances(1000).total_memories(1000).total_tables(1000).max_memory_size(1 << 30);
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling));
    Ok(Engine::new(&config)?)
}

/// Every interface the runner provides, in one place.
fn linker(engine: &Engine) -> anyhow::Result<Linker<Host>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    kv_host::add_to_linker(&mut linker)?;
    wasi_kv_host::add_to_linker(&mut linker)?;
    vars_host::add_to_linker(&mut linker)?;
    blob_host::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// Creates instances for the [`wasmtime_wasi_http::handler::ProxyHandler`].
pub struct Handler {
    engine: Engine,
    pre: ProxyPre<Host>,
    shared: Arc<Shared>,
    reuse: Reuse,
    admission: Arc<tokio::sync::Semaphore>,
}

/// Requests that may wait for an instance at once. Wasmtime's handler starts a new instance for
/// every request that finds none free, so a burst of requests while the first instances are
/// still being made made one instance each: 500 clients at once made 300 instances, over the
/// pooling allocator's 1000 core instances (about 4 per instance of this component), and the
/// rest failed with 500. Admitting this many at a time bounds a burst's new instances; a request
/// leaves the wait as soon as an instance takes it, so slow uploads never hold a place.
const WAITING_FOR_AN_INSTANCE: usize = 32;

/// A request's place among those waiting for an instance, given up when an instance takes it.
pub struct Admission {
    _place: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Admission {
    /// For the runner's own requests (start-up probe, event deliveries): not counted.
    pub fn uncounted() -> Admission {
        Admission { _place: None }
    }
}

impl Handler {
    pub fn new(engine: Engine, component: &Component, shared: Arc<Shared>, reuse: Reuse) -> anyhow::Result<Handler> {
        let pre = linker(&engine)?.instantiate_pre(component)?;
        let pre = ProxyPre::P3(wasmtime_wasi_http::p3::bindings::ServicePre::new(pre)?);
        let admission = Arc::new(tokio::sync::Semaphore::new(WAITING_FOR_AN_INSTANCE));
        Ok(Handler { engine, pre, shared, reuse, admission })
    }

    /// The blob bodies the instances offer, for the HTTP front to send.
    pub fn host_bodies(&self) -> &host_bodies::HostBodies {
        &self.shared.host_bodies
    }

    /// The key-value stores the instances use, for the HTTP front's checks of kept answers.
    pub fn key_value(&self) -> &crate::store::kv_stores::KvStores {
        &self.shared.kv
    }

    /// Wait for a place among the requests waiting for an instance.
    pub async fn admit(&self) -> Admission {
        // The semaphore is never closed.
        Admission { _place: self.admission.clone().acquire_owned().await.ok() }
    }
}

impl HandlerState for Handler {
    type StoreData = Host;
    type WorkerExpiration = IdleExpiry;
    type WorkerState = Policy;

    async fn instantiate(&self) -> wasmtime::Result<Instance<Host, IdleExpiry, Policy>> {
        let mut store = Store::new(&self.engine, Host::new(self.shared.clone()));
        let proxy = self.pre.instantiate_async(&mut store).await?;
        INSTANCES_ALIVE.fetch_add(1, Ordering::Relaxed);
        Ok(Instance {
            store,
            proxy,
            view: http_view,
            expiration: IdleExpiry { idle: self.reuse.idle, sleep: None },
            state: Policy { reuse: self.reuse, serving: Arc::new(AtomicUsize::new(0)) },
        })
    }
}

/// Component instances alive now, and how many of them run a request's handler now (for the
/// metrics).
pub static INSTANCES_ALIVE: AtomicI64 = AtomicI64::new(0);
pub static INSTANCES_BUSY: AtomicI64 = AtomicI64::new(0);

/// One instance's reuse policy, and the requests it serves now.
pub struct Policy {
    reuse: Reuse,
    serving: Arc<AtomicUsize>,
}

/// Held while an instance runs one request's handler: the instance is busy while any is held.
struct Serving(Arc<AtomicUsize>);

impl Serving {
    fn start(serving: &Arc<AtomicUsize>) -> Serving {
        if serving.fetch_add(1, Ordering::Relaxed) == 0 {
            INSTANCES_BUSY.fetch_add(1, Ordering::Relaxed);
        }
        Serving(serving.clone())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if self.0.fetch_sub(1, Ordering::Relaxed) == 1 {
            INSTANCES_BUSY.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl WorkerState for Policy {
    type StoreData = Host;
    type RequestData = Admission;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.reuse.max_requests {
            ShouldAccept::Never
        } else if concurrent >= self.reuse.max_concurrent {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        _: StoreContextMut<'_, Host>,
        admission: Admission,
        _: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        drop(admission); // an instance has taken the request
        // No request timeout: a registry streams multi-GiB blobs. The future lives until the
        // request's handler has answered (wasmtime-wasi-http races it against the handler), and
        // so does the mark that this instance is busy: a body that streams on after the answer
        // is counted by the HTTP layer (`http_requests_in_flight`), not here.
        let serving = Serving::start(&self.serving);
        Box::pin(async move {
            let _serving = serving;
            std::future::pending::<()>().await
        })
    }

    fn drop(&self, _store: Store<Host>, result: wasmtime::Result<()>) {
        INSTANCES_ALIVE.fetch_sub(1, Ordering::Relaxed);
        if let Err(err) = result
            && !SHUTTING_DOWN.load(Ordering::Relaxed)
        {
            eprintln!("berth-runner: component instance ended with an error: {err:?}");
        }
    }
}

/// Drops an instance that has been idle for `idle`.
pub struct IdleExpiry {
    idle: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WorkerExpiration for IdleExpiry {
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>, status: WorkerStatus, start: Instant) -> Poll<()> {
        let this = self.get_mut();
        if status != WorkerStatus::Idle {
            this.sleep = None;
            return Poll::Pending;
        }
        let deadline = tokio::time::Instant::from_std(start + this.idle);
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        sleep.as_mut().poll(cx)
    }
}
