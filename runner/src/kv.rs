//! Spin key-value backed by SQLite: one database file per store label under the data dir, WAL
//! mode, `synchronous=FULL` so that a `set` that returned is on disk.
//!
//! Writes go through one connection (the caller runs them on a blocking thread: they fsync).
//! Reads go through a read-only connection of the calling thread's own: in WAL mode a reader
//! never waits for the writer, so a `get` is a few microseconds on a warm database and can run
//! right where it is asked, without a hop to a blocking thread and back.

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One store (one label).
pub struct SqliteStore {
    /// Tells this store's read connections apart from any other store's (even at the same path).
    id: u64,
    path: PathBuf,
    conn: Mutex<Connection>,
}

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's read connections, by store id.
    static READERS: RefCell<HashMap<u64, Connection>> = RefCell::new(HashMap::new());
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID",
        )?;
        let id = NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed);
        Ok(SqliteStore { id, path: path.to_owned(), conn: Mutex::new(conn) })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, String> {
        let conn = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&conn).map_err(|e| e.to_string())
    }

    /// Run a read on this thread's read-only connection to this store (opened on first use).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, String> {
        READERS.with(|readers| {
            let mut readers = readers.borrow_mut();
            let conn = match readers.entry(self.id) {
                std::collections::hash_map::Entry::Occupied(open) => open.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                    let conn = Connection::open_with_flags(&self.path, flags).map_err(|e| e.to_string())?;
                    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(|e| e.to_string())?;
                    slot.insert(conn)
                }
            };
            f(conn).map_err(|e| e.to_string())
        })
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.read(|c| {
            c.prepare_cached("SELECT value FROM kv WHERE key = ?1")?.query_row([key], |r| r.get(0)).optional()
        })
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![key, value])
            .map(|_| ())
        })
    }

    pub fn delete(&self, key: &str) -> Result<(), String> {
        self.with(|c| c.prepare_cached("DELETE FROM kv WHERE key = ?1")?.execute([key]).map(|_| ()))
    }

    pub fn exists(&self, key: &str) -> Result<bool, String> {
        self.read(|c| {
            c.prepare_cached("SELECT 1 FROM kv WHERE key = ?1")?
                .query_row([key], |_| Ok(()))
                .optional()
                .map(|r| r.is_some())
        })
    }

    /// Up to `limit` keys in order, after `after` (from the first when `None`). Listing a store
    /// page by page keeps memory bounded and holds no read transaction open between pages (a
    /// long-open reader would stop WAL checkpoints): a key present throughout the listing is
    /// listed exactly once; one added or removed meanwhile may or may not be.
    pub fn keys_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, String> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|c| match after {
            None => c
                .prepare_cached("SELECT key FROM kv ORDER BY key LIMIT ?1")?
                .query_map([limit], |r| r.get(0))?
                .collect(),
            Some(after) => c
                .prepare_cached("SELECT key FROM kv WHERE key > ?1 ORDER BY key LIMIT ?2")?
                .query_map(params![after, limit], |r| r.get(0))?
                .collect(),
        })
    }
}

/// Why a store cannot be opened, in the terms of `spin:key-value`.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The component may not use this label (not in its `key_value_stores`).
    AccessDenied,
    Other(String),
}

/// The stores a component may open: the labels granted in spin.toml, opened lazily.
pub struct KvStores {
    dir: PathBuf,
    granted: Vec<String>,
    open: Mutex<HashMap<String, Arc<SqliteStore>>>,
}

impl KvStores {
    pub fn new(dir: PathBuf, granted: Vec<String>) -> KvStores {
        KvStores { dir, granted, open: Mutex::new(HashMap::new()) }
    }

    pub fn open(&self, label: &str) -> Result<Arc<SqliteStore>, OpenError> {
        if !self.granted.iter().any(|g| g == label) {
            return Err(OpenError::AccessDenied);
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = open.get(label) {
            return Ok(store.clone());
        }
        // Labels come from spin.toml, but keep them to safe file names all the same.
        if label.is_empty() || !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(OpenError::Other(format!("label {label:?} is not a valid store name")));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| OpenError::Other(e.to_string()))?;
        let store = Arc::new(
            SqliteStore::open(&self.dir.join(format!("{label}.db"))).map_err(|e| OpenError::Other(format!("{e:#}")))?,
        );
        open.insert(label.to_owned(), store.clone());
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_exists_delete_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        assert_eq!(store.get("a").unwrap(), None);
        store.set("b", b"2").unwrap();
        store.set("a", b"1").unwrap();
        store.set("a", b"one").unwrap();
        assert_eq!(store.get("a").unwrap().as_deref(), Some(&b"one"[..]));
        assert!(store.exists("a").unwrap());
        assert_eq!(store.keys_after(None, 10).unwrap(), ["a", "b"]);
        store.delete("a").unwrap();
        store.delete("missing").unwrap();
        assert!(!store.exists("a").unwrap());
        assert_eq!(store.keys_after(None, 10).unwrap(), ["b"]);
    }

    #[test]
    fn keys_are_listed_in_order_a_page_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        for key in ["c", "a", "e", "b", "d"] {
            store.set(key, b"").unwrap();
        }
        assert_eq!(store.keys_after(None, 2).unwrap(), ["a", "b"]);
        assert_eq!(store.keys_after(Some("b"), 2).unwrap(), ["c", "d"]);
        assert_eq!(store.keys_after(Some("d"), 2).unwrap(), ["e"]);
        assert!(store.keys_after(Some("e"), 2).unwrap().is_empty());
        // A key between pages that goes away does not stop the listing.
        store.delete("c").unwrap();
        assert_eq!(store.keys_after(Some("b"), 2).unwrap(), ["d", "e"]);
    }

    #[test]
    fn reads_on_other_threads_see_every_write_that_returned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("t.db")).unwrap());
        for i in 0..20u8 {
            store.set("k", &[i]).unwrap();
            let reader = store.clone();
            let seen = std::thread::spawn(move || reader.get("k").unwrap()).join().unwrap();
            assert_eq!(seen, Some(vec![i]));
            assert_eq!(store.get("k").unwrap(), Some(vec![i]), "this thread's reader moves on too");
        }
    }

    #[test]
    fn values_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        SqliteStore::open(&path).unwrap().set("k", &[0, 255, 7]).unwrap();
        assert_eq!(SqliteStore::open(&path).unwrap().get("k").unwrap(), Some(vec![0, 255, 7]));
    }

    #[test]
    fn only_granted_labels_open() {
        let dir = tempfile::tempdir().unwrap();
        let stores = KvStores::new(dir.path().to_owned(), vec!["default".into()]);
        assert!(stores.open("default").is_ok());
        assert_eq!(stores.open("other").err(), Some(OpenError::AccessDenied));
        assert!(Arc::ptr_eq(&stores.open("default").unwrap(), &stores.open("default").unwrap()));
    }
}
