//! The key-value stores a component may open: each label granted in spin.toml, on the backend
//! the runtime config file names for it (`runtime_config.rs`).

use crate::store::kv::{KvBackend, OpenError};
use crate::store::kv_redis::RedisStore;
use crate::store::kv_sqlite::SqliteStore;
use crate::store::runtime_config::StoreConfig;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
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
            Some(StoreConfig::Redis { url }) => Ok(Arc::new(RedisStore::new(url)?)),
            Some(StoreConfig::Sqlite { path: Some(path) }) => Ok(Arc::new(open_sqlite(path)?)),
            Some(StoreConfig::Sqlite { path: None }) | None => {
                // Labels come from spin.toml, but keep them to safe file names all the same.
                if label.is_empty() || !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                    return Err(format!("label {label:?} is not a valid store name"));
                }
                Ok(Arc::new(open_sqlite(&self.dir.join(format!("{label}.db")))?))
            }
        }
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
