//! Spin key-value as the hosts need it, whichever backend holds a store: the [`KvBackend`]
//! contract that SQLite (`kv_sqlite.rs`) and Redis (`kv_redis.rs`) implement.

/// How a compare-and-swap ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Swap {
    /// The value was as expected and is now the new one.
    Done,
    /// The value had changed; this is what it is now (`None`: absent).
    Changed(Option<Vec<u8>>),
}

/// One page of a key listing: the keys, and the cursor that continues it (`None`: the last page).
/// A cursor is opaque to the caller: the last key listed for SQLite, a `SCAN` cursor for Redis.
#[derive(Debug, PartialEq, Eq)]
pub struct KeysPage {
    pub keys: Vec<String>,
    pub next: Option<String>,
}

/// What `spin:key-value` and `wasi:keyvalue` need of a store, whichever backend holds it. The
/// calls block (disk or network): the hosts run them on blocking threads, except the reads of a
/// backend that says they are cheap enough to run in place.
pub trait KvBackend: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// The values of `keys`, in order: one round trip where the backend has one (Redis `MGET`).
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, String> {
        keys.iter().map(|key| self.get(key)).collect()
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String>;
    fn delete(&self, key: &str) -> Result<(), String>;
    fn exists(&self, key: &str) -> Result<bool, String>;
    /// About `limit` keys from `cursor` (from the start when `None`). A key present throughout a
    /// whole listing is listed; one added or removed meanwhile may or may not be.
    fn keys_page(&self, cursor: Option<&str>, limit: usize) -> Result<KeysPage, String>;
    /// Add `delta` to the counter at `key` (absent counts as 0) atomically; the new value.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, String>;
    /// Set `key` to `value` only if it still holds `expected` (`None`: only if still absent).
    fn swap(&self, key: &str, expected: Option<&[u8]>, value: &[u8]) -> Result<Swap, String>;
    /// Whether `get` and `exists` are quick enough to call on the event loop (a local read) rather
    /// than on a blocking thread (a network round trip).
    fn reads_in_place(&self) -> bool;
}

/// Why a store cannot be opened, in the terms of `spin:key-value`.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The component may not use this label (not in its `key_value_stores`).
    AccessDenied,
    Other(String),
}
