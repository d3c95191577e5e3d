//! [`MetaStore`] over Spin key-value: `spin:key-value@3.0.0` for reads and writes, and
//! `wasi:keyvalue/atomics@0.2.0-draft2` (Spin >= 4.1, over the same store) for compare-and-swap.

use super::bindings::wasi::keyvalue::{atomics, store as wasi_kv};
use crate::registry::store::{MetaStore, StoreError};
use crate::wire::errcode::{ErrorCode, RegistryError};
use spin_sdk::key_value::{Error, Store};
use std::cell::OnceCell;

pub struct KvMetaStore {
    label: String,
    store: Store,
    /// The same store through `wasi:keyvalue`, opened on the first compare-and-swap.
    bucket: OnceCell<wasi_kv::Bucket>,
}

impl KvMetaStore {
    /// Open the store `label`; a host that does not grant it is a configuration error, said clearly.
    pub async fn open(label: &str) -> Result<Self, RegistryError> {
        let store = Store::open(label).await.map_err(|e| {
            RegistryError::new(ErrorCode::Internal, format!("cannot open key-value store {label:?}: {}", describe(&e)))
        })?;
        Ok(KvMetaStore { label: label.to_owned(), store, bucket: OnceCell::new() })
    }

    fn bucket(&self) -> Result<&wasi_kv::Bucket, StoreError> {
        if let Some(bucket) = self.bucket.get() {
            return Ok(bucket);
        }
        let bucket = wasi_kv::open(&self.label).map_err(|e| wasi_other(&e))?;
        Ok(self.bucket.get_or_init(|| bucket))
    }
}

/// A failure of the atomics: on a host whose key-value backend has none, every write that
/// needs a claim fails with this, and the registry answers 500 rather than race unsafely.
fn wasi_other(e: &wasi_kv::Error) -> StoreError {
    let why = match e {
        wasi_kv::Error::NoSuchStore => "no such store".to_owned(),
        wasi_kv::Error::AccessDenied => "access denied".to_owned(),
        wasi_kv::Error::Other(msg) => return StoreError::Unavailable(format!("key-value store (atomics): {msg}")),
    };
    StoreError::Other(format!("key-value atomics (wasi:keyvalue) failed: {why}"))
}

fn describe(e: &Error) -> String {
    match e {
        Error::StoreTableFull => "store table full".into(),
        Error::NoSuchStore => "no such store (declare it in spin.toml key_value_stores)".into(),
        Error::AccessDenied => "access denied (add it to the component's key_value_stores)".into(),
        Error::Other(msg) => msg.clone(),
    }
}

/// A backend's own failure (`other`: Redis down, a broken connection) may pass: 503. The rest
/// are configuration mistakes: 500.
fn other(e: Error) -> StoreError {
    match e {
        Error::Other(msg) => StoreError::Unavailable(format!("key-value store: {msg}")),
        e => StoreError::Other(format!("key-value: {}", describe(&e))),
    }
}

impl MetaStore for KvMetaStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.get(key).await.map_err(other)
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.store.set(key, value).await.map_err(other)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.store.delete(key).await.map_err(other)
    }

    async fn compare_and_swap(&self, key: &str, expected: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        let cas = atomics::Cas::new(self.bucket()?, key).map_err(|e| wasi_other(&e))?;
        // `current` is what the swap compares against: only swap from the value we expected,
        // and never from an absent key (an upsert on Spin's SQLite backend).
        match cas.current().map_err(|e| wasi_other(&e))? {
            Some(current) if current == expected => {}
            _ => return Ok(false),
        }
        match atomics::swap(cas, new) {
            Ok(()) => Ok(true),
            Err(atomics::CasError::CasFailed(_)) => Ok(false),
            Err(atomics::CasError::StoreError(e)) => Err(wasi_other(&e)),
        }
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        atomics::increment(self.bucket()?, key, delta).map_err(|e| wasi_other(&e))
    }
}
