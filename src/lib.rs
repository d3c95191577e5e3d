//! Berth: a private OCI / Docker registry as a stateless Spin HTTP component.
//!
//! Floors, each a folder, each importing only from the floors below it (docs/architecture.md;
//! `tests/foundation.rs` fails on an import that points up, or on a circle):
//!
//! | floor | what it holds |
//! |---|---|
//! | `spin` | the Spin glue (wasm32 only): WIT bindings to the stores, the variables, outbound HTTP |
//! | [`api`] | the HTTP handlers: parse the request, check access, call the domain, shape the answer |
//! | [`mirror`] | the pull-through mirror: asking upstreams, one fetch per blob, the cache protocol |
//! | [`lifecycle`] | what runs over the registry: garbage collection, retention, immutable tags' bindings |
//! | [`registry`] | the domain over the storage contracts: blobs, links and holders, uploads, manifests and tags, quota accounting |
//! | [`config`] | the settings, parsed from Spin variables |
//! | [`auth`] | access control: users, passwords, policy, tokens |
//! | [`wire`] | the vocabulary: digests, names, references, ranges, routes, error codes, manifests, messages |
//!
//! Everything but `spin` is plain Rust that compiles and tests natively.

pub mod wire;

pub mod auth;

pub mod config;

pub mod registry;

pub mod lifecycle;

pub mod mirror;

pub mod api;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod proptests;

#[cfg(target_arch = "wasm32")]
mod spin;
