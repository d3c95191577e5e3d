//! The storage backends, below the component's host interfaces: key-value ([`kv`]: the
//! contract; [`kv_sqlite`], [`kv_redis`]; [`kv_stores`] opens each label on its backend, as
//! [`runtime_config`] says) and blobs ([`blob_fs`]). No Wasmtime type here.

pub mod blob_fs;
pub mod kv;
pub mod kv_redis;
pub mod kv_sqlite;
pub mod kv_stores;
pub mod runtime_config;
