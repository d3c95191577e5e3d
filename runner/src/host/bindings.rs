//! Host bindings for the interfaces the runner provides beside WASI (see `wit/world.wit`,
//! world `runner-host`).
//!
//! `wasi:keyvalue` declares plain (not `async`) functions, which Wasmtime does not let a host
//! implement concurrently (`func_wrap_concurrent` is for `async func` only). The `async` flag
//! makes them Rust `async fn`s (`func_wrap_async`): the calling instance waits for each (Wasmtime
//! keeps its store for the call), but the thread does not, so their SQLite work goes to a
//! blocking thread while the event loop serves every other instance.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "berth:registry/runner-host",
    imports: {
        "wasi:keyvalue": async | trappable,
        default: store | trappable,
    },
    with: {
        "spin:key-value/key-value.store": crate::host::resources::KvHandle,
        "wasi:keyvalue/store.bucket": crate::host::resources::Bucket,
        "wasi:keyvalue/atomics.cas": crate::host::resources::Cas,
    },
});
