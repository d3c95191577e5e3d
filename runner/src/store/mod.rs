//! The storage backends, below the component's host interfaces: key-value ([`kv`]: the
//! contract; [`kv_sqlite`], [`kv_redis`]; [`kv_stores`] opens each label on its backend, as
//! [`runtime_config`] says) and blobs ([`blob_fs`]). No Wasmtime type here.

pub mod blob_fs;
pub mod kv;
pub mod kv_redis;
pub mod kv_sqlite;
pub mod kv_stores;
pub mod runtime_config;

use std::sync::atomic::AtomicU64;

/// Failures of the backends, by backend (not refusals such as not-found or already-exists): what
/// `berth_backend_errors_total{backend}` reports when scraped.
pub struct BackendErrors {
    pub sqlite: AtomicU64,
    pub redis: AtomicU64,
    pub filesystem: AtomicU64,
}

pub static BACKEND_ERRORS: BackendErrors =
    BackendErrors { sqlite: AtomicU64::new(0), redis: AtomicU64::new(0), filesystem: AtomicU64::new(0) };
