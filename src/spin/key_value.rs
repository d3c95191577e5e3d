//! [`MetaStore`] over Spin key-value (`spin:key-value@3.0.0`).

use crate::errcode::{ErrorCode, RegistryError};
use crate::store::{MetaStore, StoreError};
use spin_sdk::key_value::{Error, Store};

pub struct KvMetaStore(Store);

impl KvMetaStore {
    /// Open the store `label`; a host that does not grant it is a configuration error, said clearly.
    pub async fn open(label: &str) -> Result<Self, RegistryError> {
        Store::open(label).await.map(KvMetaStore).map_err(|e| {
            RegistryError::new(ErrorCode::Internal, format!("cannot open key-value store {label:?}: {}", describe(&e)))
        })
    }
}

fn describe(e: &Error) -> String {
    match e {
        Error::StoreTableFull => "store table full".into(),
        Error::NoSuchStore => "no such store (declare it in spin.toml key_value_stores)".into(),
        Error::AccessDenied => "access denied (add it to the component's key_value_stores)".into(),
        Error::Other(msg) => msg.clone(),
    }
}

fn other(e: Error) -> StoreError {
    StoreError::Other(format!("key-value: {}", describe(&e)))
}

impl MetaStore for KvMetaStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get(key).await.map_err(other)
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.0.set(key, value).await.map_err(other)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.0.delete(key).await.map_err(other)
    }
}
