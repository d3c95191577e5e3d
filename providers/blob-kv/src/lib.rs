//! `berth-blob-kv`: Berth's blob store (`berth:blob-store/store@0.4.0`) over Spin key-value, so
//! that `spin up` serves a working registry with nothing else to set up. Spin composes it into
//! the registry component as a component dependency (`[component.registry.dependencies]` in
//! spin.toml, with `dependencies_inherit_configuration = true` so it may open the registry's
//! key-value store); `berth-runner up --blob-store dependency` runs the same composition.
//!
//! [`layout`] decides where bytes go; the wasm glue below only moves them.

pub mod index;
pub mod layout;

#[cfg(target_arch = "wasm32")]
mod provider;
