//! The SQLite [`KvBackend`] (the default store of every label): one database file per store label under the data dir, WAL mode, `synchronous=FULL`
//! so that a `set` that returned is on disk.
//!
//! Writes go through one connection (the caller runs them on a blocking thread: they fsync).
//! Reads go through a read-only connection of the calling thread's own: in WAL mode a reader
//! never waits for the writer, so a `get` is a few microseconds on a warm database and can run
//! right where it is asked, without a hop to a blocking thread and back.
//!
//! The atomics of `wasi:keyvalue` (increment, compare-and-swap) are single transactions on the
//! write connection that take SQLite's write lock up front (`BEGIN IMMEDIATE`): atomic against
//! every other writer of the file, in this process or any other.

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::kv::{KeysPage, KvBackend, Swap};

/// One store (one label).
pub struct SqliteStore {
    /// Tells this store's read connections apart from any other store's (even at the same path).
    id: u64,
    path: PathBuf,
    conn: Mutex<Connection>,
}

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(0);

/// A rowid table with the keys' index apart, not `WITHOUT ROWID`. In a `WITHOUT ROWID` table the
/// rows are the index cells, and a lookup that compares its key with a row whose value overflows
/// the page reads the whole row first: with the key-value blob provider's 256 KiB chunks in the
/// table, every `get` read megabytes and its cost grew with the data stored (measured: a page of
/// `tags/list` went from 8 ms to 340 ms after 2 GiB of chunks). Here a lookup compares keys in
/// the index's small cells, then fetches one row by its rowid.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)";

/// Convert a store that an earlier berth-runner created `WITHOUT ROWID` (once, in one transaction
/// that holds the write lock, so a second process opening the file meanwhile sees it done).
fn to_rowid_table(conn: &mut Connection) -> rusqlite::Result<()> {
    let is_without_rowid = |conn: &Connection| -> rusqlite::Result<bool> {
        let sql: Option<String> = conn
            .query_row("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'kv'", [], |row| row.get(0))
            .optional()?;
        Ok(sql.is_some_and(|sql| sql.to_ascii_uppercase().contains("WITHOUT ROWID")))
    };
    if !is_without_rowid(conn)? {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if is_without_rowid(&tx)? {
        tx.execute_batch(
            "CREATE TABLE kv_rowid (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL);
             INSERT INTO kv_rowid (key, value) SELECT key, value FROM kv;
             DROP TABLE kv;
             ALTER TABLE kv_rowid RENAME TO kv;",
        )?;
    }
    tx.commit()
}

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
        let mut conn = conn;
        conn.execute_batch(SCHEMA)?;
        to_rowid_table(&mut conn).with_context(|| format!("converting the kv table of {}", path.display()))?;
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
        self.read(|c| value_of(c, key))
    }

    /// The values of `keys` in one read transaction: one snapshot, and one take of the WAL's
    /// read lock instead of one per key.
    pub fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, String> {
        self.read(|c| {
            // A read transaction left open would serve old snapshots to this thread's reads and
            // hold back every WAL checkpoint: ended whatever fails, here or on a call before.
            if !c.is_autocommit() {
                c.execute_batch("ROLLBACK")?;
            }
            // Prepared once per connection, like the SELECT: parsing BEGIN and COMMIT on every
            // call showed in the profile of a kept answer's check.
            c.prepare_cached("BEGIN")?.execute([])?;
            let values = keys.iter().map(|key| value_of(c, key)).collect::<rusqlite::Result<Vec<_>>>();
            let ended = c.prepare_cached("COMMIT").and_then(|mut commit| commit.execute([]));
            if !c.is_autocommit() {
                c.execute_batch("ROLLBACK")?;
            }
            ended?;
            values
        })
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.with(|c| c.prepare_cached(UPSERT)?.execute(params![key, value]).map(|_| ()))
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

impl KvBackend for SqliteStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        SqliteStore::get(self, key)
    }
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, String> {
        SqliteStore::get_many(self, keys)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        SqliteStore::set(self, key, value)
    }
    fn delete(&self, key: &str) -> Result<(), String> {
        SqliteStore::delete(self, key)
    }
    fn exists(&self, key: &str) -> Result<bool, String> {
        SqliteStore::exists(self, key)
    }
    /// The cursor is the last key of the page before, so keys come in order and a key added or
    /// removed between pages never shifts the others.
    fn keys_page(&self, cursor: Option<&str>, limit: usize) -> Result<KeysPage, String> {
        // One key more than a page tells whether another page follows.
        let mut keys = self.keys_after(cursor, limit.saturating_add(1))?;
        let more = keys.len() > limit;
        keys.truncate(limit);
        let next = keys.last().filter(|_| more).cloned();
        Ok(KeysPage { keys, next })
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, String> {
        SqliteStore::increment(self, key, delta)
    }
    fn swap(&self, key: &str, expected: Option<&[u8]>, value: &[u8]) -> Result<Swap, String> {
        SqliteStore::swap(self, key, expected, value)
    }
    fn reads_in_place(&self) -> bool {
        true
    }
}

const UPSERT: &str =
    "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value";

/// The value of `key` as `conn` (a read connection, or a transaction) sees it.
fn value_of(conn: &Connection, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT value FROM kv WHERE key = ?1")?.query_row([key], |r| r.get(0)).optional()
}

fn sql_error(e: rusqlite::Error) -> String {
    e.to_string()
}

/// A counter as `increment` stores it: 8 bytes, little-endian `i64` (Spin's encoding, so a
/// component reads the same counter under Spin and under the runner).
fn decode_counter(key: &str, value: &[u8]) -> Result<i64, String> {
    let bytes: [u8; 8] = value
        .try_into()
        .map_err(|_| format!("cannot increment {key:?}: its value is {} bytes, not an 8-byte counter", value.len()))?;
    Ok(i64::from_le_bytes(bytes))
}

impl SqliteStore {
    /// Run `f` in one transaction on the write connection, holding the database's write lock
    /// from the start (`BEGIN IMMEDIATE`), so nothing changes between what `f` reads and what it
    /// writes. Committed only if `f` succeeds; rolled back otherwise.
    fn transaction<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, String>) -> Result<T, String> {
        let mut conn = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_error)?;
        let out = f(&tx)?;
        tx.commit().map_err(sql_error)?;
        Ok(out)
    }

    /// Add `delta` to the counter at `key` (an absent key counts as 0); returns the new value.
    /// A value that is not a counter, or a sum out of `i64`'s range, is an error and changes
    /// nothing.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, String> {
        self.transaction(|tx| {
            let current = value_of(tx, key).map_err(sql_error)?;
            let current = current.map_or(Ok(0), |value| decode_counter(key, &value))?;
            let new = current.checked_add(delta).ok_or_else(|| format!("incrementing {key:?} by {delta} overflows"))?;
            tx.prepare_cached(UPSERT)
                .and_then(|mut s| s.execute(params![key, new.to_le_bytes()]))
                .map_err(sql_error)?;
            Ok(new)
        })
    }

    /// Set `key` to `value` if its value is still `expected` (`None`: still absent). Otherwise
    /// changes nothing and says what the value is now, read in the same transaction.
    ///
    /// Stricter than Spin 4.1's SQLite store, where a swap expecting an absent key overwrites
    /// whatever is there: here it inserts only if the key is still absent. Berth never relies on
    /// either behaviour, but this is the one a compare-and-swap promises.
    pub fn swap(&self, key: &str, expected: Option<&[u8]>, value: &[u8]) -> Result<Swap, String> {
        self.transaction(|tx| {
            let changed = match expected {
                Some(old) => tx
                    .prepare_cached("UPDATE kv SET value = ?3 WHERE key = ?1 AND value = ?2")
                    .and_then(|mut s| s.execute(params![key, old, value])),
                None => tx
                    .prepare_cached("INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO NOTHING")
                    .and_then(|mut s| s.execute(params![key, value])),
            }
            .map_err(sql_error)?;
            if changed == 1 {
                return Ok(Swap::Done);
            }
            Ok(Swap::Changed(value_of(tx, key).map_err(sql_error)?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_store_created_without_rowid_is_converted_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(
                "CREATE TABLE kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID;
                 INSERT INTO kv VALUES ('a', x'01'), ('b', x'02');",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.get("a").unwrap().as_deref(), Some(&[1u8][..]));
        assert_eq!(store.keys_after(None, 10).unwrap(), ["a", "b"]);
        store.set("a", b"x").unwrap();
        assert_eq!(store.get("a").unwrap().as_deref(), Some(&b"x"[..]));
        let sql: String = Connection::open(&path)
            .unwrap()
            .query_row("SELECT sql FROM sqlite_master WHERE name = 'kv'", [], |r| r.get(0))
            .unwrap();
        assert!(!sql.to_ascii_uppercase().contains("WITHOUT ROWID"), "{sql}");
        drop(store);
        SqliteStore::open(&path).unwrap();
    }

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
        assert_eq!(store.get_many(&["b", "a", "b"]).unwrap(), [Some(b"2".to_vec()), None, Some(b"2".to_vec())]);
        assert_eq!(store.get_many(&[]).unwrap(), Vec::<Option<Vec<u8>>>::new());
        store.set("a", b"after").unwrap();
        assert_eq!(store.get_many(&["a"]).unwrap(), [Some(b"after".to_vec())], "the read transaction ended");
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

    fn store() -> (tempfile::TempDir, Arc<SqliteStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("t.db")).unwrap());
        (dir, store)
    }

    #[test]
    fn increments_from_many_threads_on_one_key_all_count() {
        let (_dir, store) = store();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        store.increment("n", 1).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(store.get("n").unwrap(), Some(1600i64.to_le_bytes().to_vec()));
        assert_eq!(store.increment("n", -600).unwrap(), 1000);
    }

    #[test]
    fn increment_counts_an_absent_key_as_zero_and_refuses_non_counters() {
        let (_dir, store) = store();
        assert_eq!(store.increment("a", 5).unwrap(), 5);
        assert_eq!(store.get("a").unwrap(), Some(5i64.to_le_bytes().to_vec()), "Spin's encoding");
        store.set("text", b"12").unwrap();
        let err = store.increment("text", 1).unwrap_err();
        assert!(err.contains("not an 8-byte counter"), "{err}");
        assert_eq!(store.get("text").unwrap().as_deref(), Some(&b"12"[..]), "left as it was");
        store.set("max", &i64::MAX.to_le_bytes()).unwrap();
        assert!(store.increment("max", 1).unwrap_err().contains("overflows"));
        assert_eq!(store.get("max").unwrap(), Some(i64::MAX.to_le_bytes().to_vec()));
    }

    #[test]
    fn of_two_swaps_from_the_same_value_exactly_one_wins() {
        let (_dir, store) = store();
        store.set("k", b"v0").unwrap();
        // Two handles read the same value...
        let (seen1, seen2) = (store.get("k").unwrap(), store.get("k").unwrap());
        assert_eq!(seen1.as_deref(), Some(&b"v0"[..]));
        // ...and both swap, from two threads at once.
        let swaps: Vec<_> = [(seen1, b"one"), (seen2, b"two")]
            .into_iter()
            .map(|(seen, new)| {
                let store = store.clone();
                std::thread::spawn(move || store.swap("k", seen.as_deref(), new).unwrap())
            })
            .collect();
        let outcomes: Vec<Swap> = swaps.into_iter().map(|t| t.join().unwrap()).collect();
        let won: Vec<_> = outcomes.iter().filter(|o| **o == Swap::Done).collect();
        assert_eq!(won.len(), 1, "{outcomes:?}");
        let now = store.get("k").unwrap();
        let lost = outcomes.into_iter().find(|o| *o != Swap::Done).unwrap();
        assert_eq!(lost, Swap::Changed(now), "the loser learns the winner's value");
    }

    #[test]
    fn a_swap_after_the_value_changed_fails_and_changes_nothing() {
        let (_dir, store) = store();
        store.set("k", b"old").unwrap();
        let seen = store.get("k").unwrap();
        store.set("k", b"newer").unwrap();
        assert_eq!(store.swap("k", seen.as_deref(), b"mine").unwrap(), Swap::Changed(Some(b"newer".to_vec())));
        assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"newer"[..]));
        store.delete("k").unwrap();
        assert_eq!(store.swap("k", Some(b"newer"), b"mine").unwrap(), Swap::Changed(None), "gone meanwhile");
        assert_eq!(store.get("k").unwrap(), None);
        // With the value it has now, the swap goes through.
        store.set("k", b"newer").unwrap();
        assert_eq!(store.swap("k", Some(b"newer"), b"mine").unwrap(), Swap::Done);
        assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"mine"[..]));
    }

    #[test]
    fn a_swap_of_an_absent_key_inserts_only_if_it_is_still_absent() {
        let (_dir, store) = store();
        let seen = store.get("k").unwrap();
        assert_eq!(seen, None);
        store.set("k", b"theirs").unwrap();
        assert_eq!(store.swap("k", None, b"mine").unwrap(), Swap::Changed(Some(b"theirs".to_vec())));
        assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"theirs"[..]), "not overwritten");
        assert_eq!(store.swap("fresh", None, b"mine").unwrap(), Swap::Done);
        assert_eq!(store.get("fresh").unwrap().as_deref(), Some(&b"mine"[..]));
        assert_eq!(store.swap("fresh", None, b"again").unwrap(), Swap::Changed(Some(b"mine".to_vec())));
    }
}
