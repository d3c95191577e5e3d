//! Host bindings for the interfaces the runner provides beside WASI (see `wit/world.wit`,
//! world `runner-host`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "berth:registry/runner-host",
    imports: { default: store | trappable },
    with: {
        "spin:key-value/key-value.store": crate::kv_host::KvHandle,
    },
});
