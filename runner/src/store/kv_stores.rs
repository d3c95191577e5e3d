//! The key-value stores a component may open: each label granted in spin.toml, on the backend
//! the runtime config file names for it (`runtime_config.rs`).

use crate::store::BACKEND_ERRORS;
use crate::store::kv::{KeysPage, KvBackend, OpenError, Swap};
use crate::store::kv_redis::RedisStore;
use crate::store::kv_sqlite::SqliteStore;
use crate::store::runtime_config::StoreConfig;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The stores a component may open: the labels granted in spin.toml, opened lazily, each on
/// the backend the runtime config file names for it (SQLite under the data dir if none).
pub struct KvStores {
    dir: PathBuf,
    granted: Vec<String>,
    configured: HashMap<String, StoreConfig>,
    open: Mutex<HashMap<String, Arc<dyn KvBackend>>>,
}

impl KvStores {
    pub fn new(dir: PathBuf, granted: Vec<String>, configured: HashMap<String, StoreConfig>) -> KvStores {
        KvStores { dir, granted, configured, open: Mutex::new(HashMap::new()) }
    }

    pub fn open(&self, label: &str) -> Result<Arc<dyn KvBackend>, OpenError> {
        if !self.granted.iter().any(|g| g == label) {
            return Err(OpenError::AccessDenied);
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = open.get(label) {
            return Ok(store.clone());
        }
        let store = self.open_backend(label).map_err(OpenError::Other)?;
        open.insert(label.to_owned(), store.clone());
        Ok(store)
    }

    fn open_backend(&self, label: &str) -> Result<Arc<dyn KvBackend>, String> {
        match self.configured.get(label) {
            Some(StoreConfig::Redis { url }) => Ok(counted(RedisStore::new(url)?, &BACKEND_ERRORS.redis)),
            Some(StoreConfig::Sqlite { path: Some(path) }) => Ok(counted(open_sqlite(path)?, &BACKEND_ERRORS.sqlite)),
            Some(StoreConfig::Sqlite { path: None }) | None => {
                // Labels come from spin.toml, but keep them to safe file names all the same.
                if label.is_empty() || !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                    return Err(format!("label {label:?} is not a valid store name"));
                }
                Ok(counted(open_sqlite(&self.dir.join(format!("{label}.db")))?, &BACKEND_ERRORS.sqlite))
            }
        }
    }
}

/// A backend whose failures are counted in `errors`.
struct Counted<S> {
    inner: S,
    errors: &'static AtomicU64,
}

fn counted<S: KvBackend + 'static>(inner: S, errors: &'static AtomicU64) -> Arc<dyn KvBackend> {
    Arc::new(Counted { inner, errors })
}

impl<S: KvBackend> Counted<S> {
    fn count<T>(&self, result: Result<T, String>) -> Result<T, String> {
        if result.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

impl<S: KvBackend> KvBackend for Counted<S> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.count(self.inner.get(key))
    }
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, String> {
        self.count(self.inner.get_many(keys))
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.count(self.inner.set(key, value))
    }
    fn delete(&self, key: &str) -> Result<(), String> {
        self.count(self.inner.delete(key))
    }
    fn exists(&self, key: &str) -> Result<bool, String> {
        self.count(self.inner.exists(key))
    }
    fn keys_page(&self, cursor: Option<&str>, limit: usize) -> Result<KeysPage, String> {
        self.count(self.inner.keys_page(cursor, limit))
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, String> {
        self.count(self.inner.increment(key, delta))
    }
    fn swap(&self, key: &str, expected: Option<&[u8]>, value: &[u8]) -> Result<Swap, String> {
        self.count(self.inner.swap(key, expected, value))
    }
    fn reads_in_place(&self) -> bool {
        self.inner.reads_in_place()
    }
}

fn open_sqlite(path: &Path) -> Result<SqliteStore, String> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    SqliteStore::open(path).map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_granted_labels_open() {
        let dir = tempfile::tempdir().unwrap();
        let stores = KvStores::new(dir.path().to_owned(), vec!["default".into()], HashMap::new());
        assert!(stores.open("default").is_ok());
        assert_eq!(stores.open("other").err(), Some(OpenError::AccessDenied));
        assert!(Arc::ptr_eq(&stores.open("default").unwrap(), &stores.open("default").unwrap()));
    }
}
