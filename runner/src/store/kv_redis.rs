//! A key-value store on Redis, as Spin's Redis key-value backend keeps one: each key as it is, a
//! plain string value, in the database the URL names (so `spin up` and `berth-runner up` given
//! the same runtime config file share the same data).
//!
//! - `increment` is `INCRBY`: atomic in Redis, and the counter is decimal text, as under Spin.
//! - `swap` is one Lua script (`EVAL`), which Redis runs with nothing else in between: it compares
//!   the value with the expected bytes and sets it only if they are equal, or, for a swap of a key
//!   that was absent, only if it is still absent (the `SET NX` case; never an upsert).
//! - Listings are `SCAN` pages over the database, with Redis's cursor as the page cursor.
//!
//! The calls are synchronous, on a small pool of connections: the hosts already run store calls
//! on blocking threads (see `reads_in_place`), and a connection per call in flight keeps one slow
//! reply from holding up the others, as a single multiplexed connection would not.
//!
//! A pooled connection may have been closed under it: by a Redis restart, or by the server's
//! (or a proxy's) idle `timeout`, as managed Redis services set it. So a connection idle for
//! more than [`CHECK_AFTER_IDLE`] is PINGed before use; a call that fails because its pooled
//! connection was dropped empties the pool (its other connections are as old) and, unless it
//! cannot be repeated safely (`INCRBY`), runs once more on a fresh connection.

use crate::store::kv::{KeysPage, KvBackend, Swap};
use redis::{Client, Connection, RedisResult, Value};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A reply slower than this is an error (the server is gone or wedged), not a hang.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Connections kept open between calls; more are opened when more calls are in flight.
const MAX_IDLE: usize = 16;
/// A pooled connection idle longer than this is PINGed before it is used.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Set KEYS[1] to ARGV[3] if it holds ARGV[2] (ARGV[1] = "1") or is absent (ARGV[1] = "0").
/// Replies `{1}` when set, else `{0, current}` (`{0}` when absent).
const SWAP_SCRIPT: &str = r#"
local current = redis.call('GET', KEYS[1])
local expects_value = ARGV[1] == '1'
if (expects_value and current == ARGV[2]) or (not expects_value and not current) then
  redis.call('SET', KEYS[1], ARGV[3])
  return {1}
end
if current then return {0, current} end
return {0}
"#;

/// An error if `url` is not a Redis URL (checked at start, before any connection is tried).
pub fn check_url(url: &str) -> anyhow::Result<()> {
    // The URL may carry a password: the message does not repeat it.
    Client::open(url).map(|_| ()).map_err(|e| anyhow::anyhow!("`url` is not a redis URL: {e}"))
}

pub struct RedisStore {
    client: Client,
    /// Idle connections, each with when it was last used.
    idle: Mutex<Vec<(Connection, Instant)>>,
}

/// Whether a call may run again after its connection was found dropped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Again {
    /// Running it twice is harmless (a read, a SET of the same value, a DEL).
    Safe,
    /// It might have been applied before the connection dropped (`INCRBY`).
    Never,
}

impl RedisStore {
    /// Opens no connection yet: the first call does.
    pub fn new(url: &str) -> Result<RedisStore, String> {
        let client = Client::open(url).map_err(|e| format!("redis URL: {e}"))?;
        Ok(RedisStore { client, idle: Mutex::new(Vec::new()) })
    }

    fn connect(&self) -> RedisResult<Connection> {
        let conn = self.client.get_connection_with_timeout(TIMEOUT)?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        conn.set_write_timeout(Some(TIMEOUT))?;
        Ok(conn)
    }

    /// A connection from the pool (PINGed if it idled long), or a new one; whether it came from
    /// the pool.
    fn connection(&self) -> RedisResult<(Connection, bool)> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some((mut conn, since)) = idle {
            if since.elapsed() <= CHECK_AFTER_IDLE || redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                return Ok((conn, true));
            }
            self.forget_idle();
        }
        Ok((self.connect()?, false))
    }

    /// Drop every pooled connection: one was found closed, and the others are as old.
    fn forget_idle(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Run `f` on a pooled connection (or a new one); whether it ran twice. A connection whose
    /// call failed is dropped rather than reused: after an I/O error or a timeout its replies
    /// may be out of step. A pooled connection found dropped gives the call one more run on a
    /// fresh connection, if `again` allows.
    fn with_again<T>(
        &self,
        again: Again,
        mut f: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> Result<(T, bool), String> {
        let (mut conn, pooled) = self.connection().map_err(redis_error)?;
        let (out, conn, repeated) = match f(&mut conn) {
            Ok(out) => (out, conn, false),
            Err(e) if pooled && dropped(&e) => {
                self.forget_idle();
                if again == Again::Never {
                    return Err(redis_error(e));
                }
                let mut fresh = self.connect().map_err(redis_error)?;
                let out = f(&mut fresh).map_err(redis_error)?;
                (out, fresh, true)
            }
            Err(e) => return Err(redis_error(e)),
        };
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((conn, Instant::now()));
        }
        Ok((out, repeated))
    }

    fn with<T>(&self, f: impl FnMut(&mut Connection) -> RedisResult<T>) -> Result<T, String> {
        self.with_again(Again::Safe, f).map(|(out, _)| out)
    }
}

/// The connection was closed under the call (by the server or a proxy), not a refusal of it.
fn dropped(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() || e.is_io_error() || e.is_unrecoverable_error()
}

fn redis_error(e: redis::RedisError) -> String {
    format!("redis: {e}")
}

/// The reply of [`SWAP_SCRIPT`].
fn swap_outcome(reply: Vec<Value>) -> RedisResult<Swap> {
    let unexpected = || redis::RedisError::from((redis::ErrorKind::TypeError, "unexpected reply to the swap script"));
    let done: i64 = redis::from_redis_value(reply.first().ok_or_else(unexpected)?)?;
    if done == 1 {
        return Ok(Swap::Done);
    }
    let current = reply.get(1).map(redis::from_redis_value::<Vec<u8>>).transpose()?;
    Ok(Swap::Changed(current))
}

impl KvBackend for RedisStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.with(|c| redis::cmd("GET").arg(key).query(c))
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, String> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // A proxy that does not split multi-key commands across a cluster's slots refuses MGET
        // (CROSSSLOT): then one GET per key, which every Redis answers.
        self.with(|c| redis::cmd("MGET").arg(keys).query(c)).or_else(|_| keys.iter().map(|key| self.get(key)).collect())
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.with(|c| redis::cmd("SET").arg(key).arg(value).query(c))
    }

    fn delete(&self, key: &str) -> Result<(), String> {
        self.with(|c| redis::cmd("DEL").arg(key).query(c))
    }

    fn exists(&self, key: &str) -> Result<bool, String> {
        self.with(|c| redis::cmd("EXISTS").arg(key).query(c))
    }

    /// `SCAN` until about `limit` keys are gathered or the scan ends. The cursor is Redis's: a
    /// key present throughout the listing is listed, possibly twice (when Redis rehashes
    /// meanwhile), in no particular order. Keys that are not UTF-8 (not written through the
    /// key-value interfaces) are skipped.
    fn keys_page(&self, cursor: Option<&str>, limit: usize) -> Result<KeysPage, String> {
        let mut cursor: u64 = match cursor {
            None => 0,
            Some(text) => text.parse().map_err(|_| format!("{text:?} is not a key listing cursor"))?,
        };
        let mut keys = Vec::new();
        self.with(|c| {
            loop {
                let (next, page): (u64, Vec<Vec<u8>>) =
                    redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(limit.max(1)).query(c)?;
                keys.extend(page.into_iter().filter_map(|key| String::from_utf8(key).ok()));
                cursor = next;
                if cursor == 0 || keys.len() >= limit {
                    return Ok(());
                }
            }
        })?;
        let next = (cursor != 0).then(|| cursor.to_string());
        Ok(KeysPage { keys, next })
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, String> {
        self.with_again(Again::Never, |c| redis::cmd("INCRBY").arg(key).arg(delta).query(c)).map(|(n, _)| n)
    }

    fn swap(&self, key: &str, expected: Option<&[u8]>, value: &[u8]) -> Result<Swap, String> {
        let (expects_value, expected) = match expected {
            Some(bytes) => ("1", bytes),
            None => ("0", &[][..]),
        };
        let (outcome, repeated) = self.with_again(Again::Safe, |c| {
            let reply: Vec<Value> = redis::cmd("EVAL")
                .arg(SWAP_SCRIPT)
                .arg(1)
                .arg(key)
                .arg(expects_value)
                .arg(expected)
                .arg(value)
                .query(c)?;
            swap_outcome(reply)
        })?;
        // Run again, a swap may find its own first run's value: that run is the one that won.
        // Any other value after a run that may have been applied leaves the outcome unknown:
        // an error (503), never a false "lost" (garbage collection would take a removal it
        // made for a blob it kept).
        match outcome {
            Swap::Changed(Some(current)) if repeated && current == value => Ok(Swap::Done),
            Swap::Changed(_) if repeated => {
                Err("redis: the connection dropped during a swap, and whether it was applied is unknown".into())
            }
            other => Ok(other),
        }
    }

    /// Every read is a network round trip: run it on a blocking thread, not the event loop.
    fn reads_in_place(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::Instant;

    /// A redis-server of the test's own on a free port, with nothing saved to disk; killed on drop.
    struct RedisServer {
        child: Child,
        url: String,
        _dir: tempfile::TempDir,
    }

    impl RedisServer {
        fn start() -> RedisServer {
            let dir = tempfile::tempdir().unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .spawn()
                .expect("starting redis-server (Debian: apt-get install redis-server; .ci/run installs it)");
            let server = RedisServer { child, url: format!("redis://127.0.0.1:{port}/0"), _dir: dir };
            server.wait_for_ping();
            server
        }

        fn wait_for_ping(&self) {
            let client = Client::open(self.url.as_str()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let pong = client.get_connection().and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
                match pong {
                    Ok(_) => return,
                    Err(e) => assert!(Instant::now() < deadline, "redis-server never answered PING: {e}"),
                }
                std::thread::yield_now();
            }
        }

        fn store(&self) -> Arc<RedisStore> {
            Arc::new(RedisStore::new(&self.url).unwrap())
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn set_get_exists_delete_and_a_listing_in_pages() {
        let server = RedisServer::start();
        let store = server.store();
        assert_eq!(store.get("a").unwrap(), None);
        store.set("a", &[0, 255, 7]).unwrap();
        assert_eq!(store.get("a").unwrap(), Some(vec![0, 255, 7]));
        assert!(store.exists("a").unwrap());
        store.delete("a").unwrap();
        store.delete("missing").unwrap();
        assert!(!store.exists("a").unwrap());
        let written: Vec<String> = (0..1000).map(|i| format!("key/{i}")).collect();
        written.iter().for_each(|key| store.set(key, b"").unwrap());
        let (mut listed, mut cursor, mut pages) = (Vec::new(), None, 0);
        loop {
            let page = store.keys_page(cursor.as_deref(), 100).unwrap();
            assert!(page.keys.len() <= 200, "a page stays about the size asked: {}", page.keys.len());
            listed.extend(page.keys);
            pages += 1;
            cursor = page.next;
            if cursor.is_none() {
                break;
            }
        }
        listed.sort();
        listed.dedup();
        let mut expected = written.clone();
        expected.sort();
        assert_eq!(listed, expected);
        assert!(pages > 1, "listed in pages");
        assert!(store.keys_page(Some("not a cursor"), 10).is_err());
    }

    #[test]
    fn increments_from_many_threads_all_count_in_decimal_text() {
        let server = RedisServer::start();
        let store = server.store();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || (0..200).for_each(|_| assert!(store.increment("n", 1).unwrap() > 0)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(store.get("n").unwrap().as_deref(), Some(&b"1600"[..]), "INCRBY's encoding, as Spin's");
        assert_eq!(store.increment("n", -600).unwrap(), 1000);
        store.set("text", b"not a number").unwrap();
        assert!(store.increment("text", 1).is_err());
        assert_eq!(store.get("text").unwrap().as_deref(), Some(&b"not a number"[..]), "left as it was");
    }

    #[test]
    fn of_swaps_from_the_same_value_exactly_one_wins() {
        let server = RedisServer::start();
        let store = server.store();
        for round in 0..20u8 {
            let key = format!("k{round}");
            // Half the rounds race on a present value, half on an absent key.
            let seen = (round % 2 == 0).then(|| vec![round; 8]);
            if let Some(value) = &seen {
                store.set(&key, value).unwrap();
            }
            let swaps: Vec<_> = (0..8u8)
                .map(|i| {
                    let (store, key, seen) = (store.clone(), key.clone(), seen.clone());
                    std::thread::spawn(move || store.swap(&key, seen.as_deref(), &[i]).unwrap())
                })
                .collect();
            let outcomes: Vec<Swap> = swaps.into_iter().map(|t| t.join().unwrap()).collect();
            assert_eq!(outcomes.iter().filter(|o| **o == Swap::Done).count(), 1, "{outcomes:?}");
            let now = store.get(&key).unwrap();
            for lost in outcomes.into_iter().filter(|o| *o != Swap::Done) {
                assert_eq!(lost, Swap::Changed(now.clone()), "the losers learn the winner's value");
            }
        }
    }

    #[test]
    fn a_swap_after_the_value_changed_fails_and_changes_nothing() {
        let server = RedisServer::start();
        let store = server.store();
        store.set("k", b"old").unwrap();
        store.set("k", b"newer").unwrap();
        assert_eq!(store.swap("k", Some(b"old"), b"mine").unwrap(), Swap::Changed(Some(b"newer".to_vec())));
        assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"newer"[..]));
        store.delete("k").unwrap();
        assert_eq!(store.swap("k", Some(b"newer"), b"mine").unwrap(), Swap::Changed(None), "gone meanwhile");
        assert_eq!(store.get("k").unwrap(), None);
        store.set("k", b"").unwrap();
        assert_eq!(store.swap("k", None, b"mine").unwrap(), Swap::Changed(Some(Vec::new())), "empty is present");
        assert_eq!(store.swap("k", Some(b""), b"mine").unwrap(), Swap::Done);
        assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"mine"[..]));
    }

    #[test]
    fn a_swap_of_an_absent_key_inserts_only_if_it_is_still_absent() {
        let server = RedisServer::start();
        let store = server.store();
        store.set("k", b"theirs").unwrap();
        assert_eq!(store.swap("k", None, b"mine").unwrap(), Swap::Changed(Some(b"theirs".to_vec())));
        assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"theirs"[..]), "not overwritten");
        assert_eq!(store.swap("fresh", None, b"mine").unwrap(), Swap::Done);
        assert_eq!(store.get("fresh").unwrap().as_deref(), Some(&b"mine"[..]));
    }

    #[test]
    fn the_store_manager_opens_a_configured_label_on_redis_and_others_on_sqlite() {
        use crate::store::kv_stores::KvStores;
        use crate::store::runtime_config::StoreConfig;
        let server = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let configured = [("default".to_owned(), StoreConfig::Redis { url: server.url.clone() })].into();
        let stores = KvStores::new(dir.path().join("kv"), vec!["default".into(), "local".into()], configured);
        stores.open("default").unwrap().set("on-redis", b"1").unwrap();
        stores.open("local").unwrap().set("on-sqlite", b"1").unwrap();
        assert_eq!(server.store().get("on-redis").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(server.store().get("on-sqlite").unwrap(), None);
        assert!(dir.path().join("kv/local.db").exists());
        assert!(!dir.path().join("kv/default.db").exists());
    }

    #[test]
    fn an_unreachable_server_is_an_error_not_a_hang() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let store = RedisStore::new(&format!("redis://127.0.0.1:{port}")).unwrap();
        let err = store.get("k").unwrap_err();
        assert!(err.starts_with("redis: "), "{err}");
    }
}
