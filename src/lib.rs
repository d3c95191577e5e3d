//! Berth: a private OCI / Docker registry as a stateless Spin HTTP component.
//!
//! The core (names, digests, routes, errors, the registry logic over the [`store`] traits) is
//! plain Rust that compiles and tests natively; only [`spin`] (wasm32) knows about Spin and the
//! WIT bindings.

pub mod api;
pub mod auth;
pub mod blobs;
pub mod config;
pub mod digest;
pub mod errcode;
pub mod gc;
pub mod immutable;
pub mod keys;
pub mod manifest;
pub mod message;
pub mod mirror;
pub mod name;
pub mod quota;
pub mod range;
pub mod reference;
pub mod retention;
pub mod route;
pub mod store;
pub mod upload;
pub mod uploads;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod proptests;

#[cfg(target_arch = "wasm32")]
mod spin;
