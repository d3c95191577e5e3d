//! An ordered index of names over a key-value store that has no ordered listing.
//!
//! Spin's key-value lists keys only all at once (`get-keys`, `list-keys`), so a listing that
//! scanned the store cost as much as everything ever stored (every object record, every 256 KiB
//! chunk). This index keeps the names in order instead: a B-link tree (Lehman and Yao, 1981) whose
//! nodes are key-value values. A page of a listing reads the root pointer, one node per level and
//! the leaves the page spans: O(page), whatever else the store holds.
//!
//! The store gives compare-and-swap only for values that exist (on Spin's SQLite a swap of an
//! absent key is an upsert, not a create) and an atomic `increment`. So:
//! - every node lives under a key of its own, numbered by `increment` of a counter: a new node
//!   is written once, by the one request that drew its number, and changed only by swap;
//! - the root pointer is a counter too (an 8-byte integer, 0 for an empty tree), created by an
//!   increment of 0 and changed by swap, so it is never created twice;
//! - a node that fills up splits: its right half goes to a new node first, then the node itself
//!   is swapped to its left half with a link to the right one. Readers that arrive at a node
//!   whose range no longer holds their key follow that link, so the tree is correct at every
//!   step, and the parent learns of the new node afterwards (or, after a crash, never: then the
//!   link is simply followed);
//! - nodes never merge: a removal takes the name out of its leaf. Empty leaves stay linked (a
//!   listing passes over them); the index's size follows the names it holds at their most.
//!
//! Plain Rust over [`Cells`], so it is unit-tested natively, also under real thread races.

use serde::{Deserialize, Serialize};

/// What the index needs from the store. Keys passed here are the index's own.
pub trait Cells {
    type Error;
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Self::Error>;
    /// Write a value under a key nobody else writes (a freshly numbered node).
    fn set(&self, key: &str, value: &[u8]) -> Result<(), Self::Error>;
    fn delete(&self, key: &str) -> Result<(), Self::Error>;
    /// Replace the value of `key` by `new` if it still is `old` (a value read from it); whether
    /// it was replaced.
    fn swap(&self, key: &str, old: &[u8], new: &[u8]) -> Result<bool, Self::Error>;
    /// Add `delta` to the 8-byte little-endian integer under `key` (0 when absent), atomically.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, Self::Error>;
}

/// Serialized nodes split above this size: far below the smallest value limit of Spin's
/// backends (about 400 KB on DynamoDB and Cosmos), and small enough that a listing page reads
/// little more than it returns. A node with a few entries may exceed it when names are long.
const MAX_NODE_BYTES: usize = 32 * 1024;

/// Rounds of optimistic retries before an operation gives up with an error (each round lost a
/// swap to a concurrent change of the same node, so every round is some other request's progress).
const MAX_ROUNDS: usize = 10_000;

/// One node: the names (level 0), or the lower bounds of its children (above), in byte order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Node {
    level: u8,
    /// The least name this node may hold (inclusive); never changes.
    low: String,
    /// The name from which on its right sibling holds the names (exclusive); none at the right end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    high: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<u64>,
    keys: Vec<String>,
    /// Above level 0: the node holding names from `keys[i]`, for each `i`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    children: Vec<u64>,
}

impl Node {
    fn covers(&self, name: &str) -> bool {
        self.high.as_deref().is_none_or(|high| name < high)
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a node serializes")
    }
}

/// The root pointer as read: the root's number, its bytes (for the swap) and their form.
struct Root {
    id: u64,
    raw: Vec<u8>,
    form: Counter,
}

/// How a backend writes the numbers `increment` makes: 8 bytes little-endian (Spin's SQLite
/// backend, berth-runner) or decimal text (Redis `INCRBY`). A number is read in either form and
/// written back in the form it was found in, so `increment` and swaps agree on every backend.
/// (An 8-byte little-endian number reads as decimal text only if each of its bytes is an ASCII
/// digit, that is from about 3.5e18 on: no node number gets there.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    LittleEndian,
    Decimal,
}

impl Counter {
    pub fn decode(raw: &[u8]) -> Option<(u64, Counter)> {
        if !raw.is_empty() && raw.len() <= 20 && raw.iter().all(u8::is_ascii_digit) {
            let text = std::str::from_utf8(raw).ok()?;
            return text.parse().ok().map(|n| (n, Counter::Decimal));
        }
        let bytes: [u8; 8] = raw.try_into().ok()?;
        u64::try_from(i64::from_le_bytes(bytes)).ok().map(|n| (n, Counter::LittleEndian))
    }

    pub fn encode(self, value: u64) -> Vec<u8> {
        match self {
            Counter::LittleEndian => value.to_le_bytes().to_vec(),
            Counter::Decimal => value.to_string().into_bytes(),
        }
    }
}

/// A node as read: its number, its bytes (for the swap) and its content.
struct Read {
    id: u64,
    raw: Vec<u8>,
    node: Node,
}

/// Why an index operation failed.
#[derive(Debug)]
pub enum IndexError<E> {
    Store(E),
    /// A node does not decode, or a link points nowhere: the index is damaged.
    Corrupt(String),
    /// Concurrent changes kept winning for [`MAX_ROUNDS`] rounds.
    Contended,
}

impl<E> From<E> for IndexError<E> {
    fn from(e: E) -> Self {
        IndexError::Store(e)
    }
}

/// An index of names under the keys `<prefix>root`, `<prefix>ids` and `<prefix>node/<n>`.
pub struct Index<'a, C> {
    cells: &'a C,
    prefix: &'a str,
    node_bytes: usize,
}

impl<'a, C: Cells> Index<'a, C> {
    pub fn new(cells: &'a C, prefix: &'a str) -> Self {
        Index { cells, prefix, node_bytes: MAX_NODE_BYTES }
    }

    /// The same index with nodes split above `node_bytes` (small in tests, for tall trees).
    #[cfg(test)]
    fn with_node_bytes(self, node_bytes: usize) -> Self {
        Index { node_bytes, ..self }
    }

    fn root_key(&self) -> String {
        format!("{}root", self.prefix)
    }

    fn node_key(&self, id: u64) -> String {
        format!("{}node/{id}", self.prefix)
    }

    /// The root pointer (the root's number, 0 when the tree is empty); created here when absent.
    fn root(&self) -> Result<Root, IndexError<C::Error>> {
        let key = self.root_key();
        for _ in 0..2 {
            match self.cells.get(&key)? {
                Some(raw) => {
                    let (id, form) =
                        Counter::decode(&raw).ok_or_else(|| self.corrupt("root pointer is not a number"))?;
                    return Ok(Root { id, raw, form });
                }
                // An increment of 0 creates the number 0, or leaves a number another request
                // wrote meanwhile as it is; never a plain set, which could undo a swap. Then
                // read it back: the backend chose how to write it.
                None => {
                    self.cells.increment(&key, 0)?;
                }
            }
        }
        Err(self.corrupt("root pointer vanished"))
    }

    /// Point the root at `new`, if it still is `old`; written the way the backend wrote it.
    fn swap_root(&self, old: &Root, new: u64) -> Result<bool, IndexError<C::Error>> {
        Ok(self.cells.swap(&self.root_key(), &old.raw, &old.form.encode(new))?)
    }

    fn corrupt(&self, what: &str) -> IndexError<C::Error> {
        IndexError::Corrupt(format!("index {}: {what}", self.prefix))
    }

    fn read(&self, id: u64) -> Result<Read, IndexError<C::Error>> {
        let raw = self.cells.get(&self.node_key(id))?.ok_or_else(|| self.corrupt(&format!("node {id} is missing")))?;
        let node = serde_json::from_slice(&raw).map_err(|e| self.corrupt(&format!("node {id}: {e}")))?;
        Ok(Read { id, raw, node })
    }

    /// Store `node` under a new number.
    fn create(&self, node: &Node) -> Result<u64, IndexError<C::Error>> {
        let id = self.cells.increment(&format!("{}ids", self.prefix), 1)?;
        let id = u64::try_from(id).map_err(|_| self.corrupt("node counter is negative"))?;
        self.cells.set(&self.node_key(id), &node.encode())?;
        Ok(id)
    }

    /// Follow right links from `at` until the node covers `name`.
    fn move_right(&self, mut at: Read, name: &str) -> Result<Read, IndexError<C::Error>> {
        while !at.node.covers(name) {
            let next = at.node.next.ok_or_else(|| self.corrupt(&format!("node {} has a bound but no link", at.id)))?;
            at = self.read(next)?;
        }
        Ok(at)
    }

    /// The node at `level` whose range holds `name`, or `None` when the tree is empty or not
    /// yet that tall.
    fn locate(&self, name: &str, level: u8) -> Result<Option<Read>, IndexError<C::Error>> {
        let root = self.root()?;
        if root.id == 0 {
            return Ok(None);
        }
        let mut at = self.read(root.id)?;
        if at.node.level < level {
            return Ok(None);
        }
        loop {
            at = self.move_right(at, name)?;
            if at.node.level == level {
                return Ok(Some(at));
            }
            // keys[0] is the node's own low bound, which is <= name.
            let slot = at.node.keys.partition_point(|key| key.as_str() <= name).saturating_sub(1);
            let child =
                *at.node.children.get(slot).ok_or_else(|| self.corrupt(&format!("node {} has no children", at.id)))?;
            at = self.read(child)?;
        }
    }

    /// Add `name`; whether it was absent.
    pub fn insert(&self, name: &str) -> Result<bool, IndexError<C::Error>> {
        self.insert_at(0, name, None)
    }

    /// Insert `key` (with its child above level 0) into the node at `level` that covers it.
    fn insert_at(&self, level: u8, key: &str, child: Option<u64>) -> Result<bool, IndexError<C::Error>> {
        for _ in 0..MAX_ROUNDS {
            let Some(at) = self.locate(key, level)? else {
                if level == 0 {
                    if self.plant(key)? {
                        return Ok(true);
                    }
                } else {
                    self.grow(level)?;
                }
                continue;
            };
            let slot = match at.node.keys.binary_search_by(|k| k.as_str().cmp(key)) {
                Ok(_) => return Ok(false),
                Err(slot) => slot,
            };
            let mut node = at.node.clone();
            node.keys.insert(slot, key.to_owned());
            if let Some(child) = child {
                node.children.insert(slot, child);
            }
            let encoded = node.encode();
            if encoded.len() <= self.node_bytes || node.keys.len() < 4 {
                if self.cells.swap(&self.node_key(at.id), &at.raw, &encoded)? {
                    return Ok(true);
                }
                continue;
            }
            if self.split(&at, node)? {
                return Ok(true);
            }
        }
        Err(IndexError::Contended)
    }

    /// The first leaf of an empty tree, holding `name`. Of concurrent planters one wins the root
    /// pointer's swap; the others' leaves go again and they insert into the winner's.
    fn plant(&self, name: &str) -> Result<bool, IndexError<C::Error>> {
        let leaf = Node {
            level: 0,
            low: String::new(),
            high: None,
            next: None,
            keys: vec![name.to_owned()],
            children: vec![],
        };
        let root = self.root()?;
        if root.id != 0 {
            return Ok(false); // planted meanwhile: insert into that tree
        }
        let id = self.create(&leaf)?;
        let planted = self.swap_root(&root, id)?;
        if !planted {
            self.cells.delete(&self.node_key(id))?;
        }
        Ok(planted)
    }

    /// Give the tree a root at `level`, over the nodes one level below, read along their links
    /// from the current root (the leftmost node of its level). Done by whoever first needs the
    /// level: the request that split the root, or one that found it split and not yet grown.
    fn grow(&self, level: u8) -> Result<(), IndexError<C::Error>> {
        let root = self.root()?;
        let first = self.read(root.id)?;
        if first.node.level >= level {
            return Ok(());
        }
        let mut node = Node { level, low: String::new(), high: None, next: None, keys: vec![], children: vec![] };
        let mut at = Some(first);
        while let Some(below) = at {
            node.keys.push(below.node.low.clone());
            node.children.push(below.id);
            at = below.node.next.map(|next| self.read(next)).transpose()?;
        }
        let id = self.create(&node)?;
        if !self.swap_root(&root, id)? {
            self.cells.delete(&self.node_key(id))?;
        }
        Ok(())
    }

    /// Replace `at` by two nodes holding `full`'s keys; whether the swap took.
    fn split(&self, at: &Read, full: Node) -> Result<bool, IndexError<C::Error>> {
        let middle = full.keys.len() / 2;
        let separator = full.keys[middle].clone();
        let right = Node {
            level: full.level,
            low: separator.clone(),
            high: full.high.clone(),
            next: full.next,
            keys: full.keys[middle..].to_vec(),
            children: if full.children.is_empty() { vec![] } else { full.children[middle..].to_vec() },
        };
        let right_id = self.create(&right)?;
        let left = Node {
            high: Some(separator.clone()),
            next: Some(right_id),
            keys: full.keys[..middle].to_vec(),
            children: if full.children.is_empty() { vec![] } else { full.children[..middle].to_vec() },
            ..full
        };
        if !self.cells.swap(&self.node_key(at.id), &at.raw, &left.encode())? {
            self.cells.delete(&self.node_key(right_id))?;
            return Ok(false);
        }
        // The new node is reachable by its link already; its parent entry makes it one read away.
        self.insert_at(left.level + 1, &separator, Some(right_id))?;
        Ok(true)
    }

    /// Take `name` out; whether it was there. Of concurrent removers of one name exactly one
    /// gets `true`.
    pub fn remove(&self, name: &str) -> Result<bool, IndexError<C::Error>> {
        for _ in 0..MAX_ROUNDS {
            let Some(at) = self.locate(name, 0)? else { return Ok(false) };
            let Ok(slot) = at.node.keys.binary_search_by(|k| k.as_str().cmp(name)) else { return Ok(false) };
            let mut node = at.node;
            node.keys.remove(slot);
            if self.cells.swap(&self.node_key(at.id), &at.raw, &node.encode())? {
                return Ok(true);
            }
        }
        Err(IndexError::Contended)
    }

    /// Visit the names from `from` on (after it, when `exclusive`), in order, while `visit` says
    /// to go on.
    pub fn scan(
        &self,
        from: &str,
        exclusive: bool,
        mut visit: impl FnMut(&str) -> Result<bool, IndexError<C::Error>>,
    ) -> Result<(), IndexError<C::Error>> {
        let Some(mut at) = self.locate(from, 0)? else { return Ok(()) };
        loop {
            for name in &at.node.keys {
                let before = if exclusive { name.as_str() <= from } else { name.as_str() < from };
                if !before && !visit(name)? {
                    return Ok(());
                }
            }
            match at.node.next {
                Some(next) => at = self.read(next)?,
                None => return Ok(()),
            }
        }
    }

    /// Up to `limit` names that start with `prefix`, after `cursor`, for which `keep` holds; and
    /// whether more of them may follow.
    pub fn page(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
        mut keep: impl FnMut(&str) -> Result<bool, IndexError<C::Error>>,
    ) -> Result<(Vec<String>, bool), IndexError<C::Error>> {
        let (from, exclusive) = match cursor {
            Some(cursor) if cursor >= prefix => (cursor, true),
            _ => (prefix, false),
        };
        let mut names = Vec::new();
        let mut more = false;
        if limit == 0 {
            return Ok((names, false));
        }
        self.scan(from, exclusive, |name| {
            if !name.starts_with(prefix) {
                return Ok(false);
            }
            if names.len() == limit {
                more = true;
                return Ok(false);
            }
            if keep(name)? {
                names.push(name.to_owned());
            }
            Ok(true)
        })?;
        Ok((names, more))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};
    use std::sync::Mutex;

    /// The store as Spin's SQLite backend behaves: swap compares the whole value.
    #[derive(Default)]
    struct Memory {
        values: Mutex<HashMap<String, Vec<u8>>>,
    }

    impl Cells for Memory {
        type Error = String;
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(self.values.lock().unwrap().get(key).cloned())
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
            self.values.lock().unwrap().insert(key.to_owned(), value.to_vec());
            Ok(())
        }
        fn delete(&self, key: &str) -> Result<(), String> {
            self.values.lock().unwrap().remove(key);
            Ok(())
        }
        fn swap(&self, key: &str, old: &[u8], new: &[u8]) -> Result<bool, String> {
            let mut values = self.values.lock().unwrap();
            match values.get_mut(key) {
                Some(value) if value.as_slice() == old => {
                    *value = new.to_vec();
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
        fn increment(&self, key: &str, delta: i64) -> Result<i64, String> {
            let mut values = self.values.lock().unwrap();
            let current = match values.get(key) {
                Some(value) => i64::from_le_bytes(value.as_slice().try_into().map_err(|_| "not a number".to_owned())?),
                None => 0,
            };
            values.insert(key.to_owned(), (current + delta).to_le_bytes().to_vec());
            Ok(current + delta)
        }
    }

    fn all(index: &Index<'_, Memory>) -> Vec<String> {
        let mut names = Vec::new();
        index
            .scan("", false, |name| {
                names.push(name.to_owned());
                Ok(true)
            })
            .unwrap();
        names
    }

    /// A name of about 100 bytes, as the registry's index entries are, so that nodes split often.
    fn name(i: u64) -> String {
        format!("index/tags/_{:064x}/_/tag-{i:08}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 8)
    }

    /// The store as Spin's Redis backend behaves: `increment` writes decimal text (`INCRBY`).
    #[derive(Default)]
    struct RedisLike(Memory);

    impl Cells for RedisLike {
        type Error = String;
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            self.0.get(key)
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
            self.0.set(key, value)
        }
        fn delete(&self, key: &str) -> Result<(), String> {
            self.0.delete(key)
        }
        fn swap(&self, key: &str, old: &[u8], new: &[u8]) -> Result<bool, String> {
            self.0.swap(key, old, new)
        }
        fn increment(&self, key: &str, delta: i64) -> Result<i64, String> {
            let mut values = self.0.values.lock().unwrap();
            let current: i64 = match values.get(key) {
                Some(value) => std::str::from_utf8(value).ok().and_then(|t| t.parse().ok()).ok_or("not an integer")?,
                None => 0,
            };
            values.insert(key.to_owned(), (current + delta).to_string().into_bytes());
            Ok(current + delta)
        }
    }

    #[test]
    fn counters_read_in_either_form_and_write_back_in_theirs() {
        assert_eq!(Counter::decode(&7u64.to_le_bytes()), Some((7, Counter::LittleEndian)));
        assert_eq!(Counter::decode(b"7"), Some((7, Counter::Decimal)));
        assert_eq!(Counter::decode(b"12345678"), Some((12_345_678, Counter::Decimal)), "8 digits are text");
        assert_eq!(Counter::decode(b"junk"), None);
        assert_eq!(Counter::decode(&(-1i64).to_le_bytes()), None);
        assert_eq!(Counter::Decimal.encode(42), b"42");
        // A whole index on a Redis-like store: the root pointer starts as "0" and stays text.
        let redis = RedisLike::default();
        let index = Index::new(&redis, "t/").with_node_bytes(2048);
        for i in 0..500 {
            assert!(index.insert(&name(i)).unwrap());
        }
        let mut expected: Vec<String> = (0..500).map(name).collect();
        expected.sort();
        let mut listed = Vec::new();
        index
            .scan("", false, |n| {
                listed.push(n.to_owned());
                Ok(true)
            })
            .unwrap();
        assert_eq!(listed, expected);
        let root = redis.get("t/root").unwrap().unwrap();
        assert!(root.iter().all(u8::is_ascii_digit), "{root:?}");
    }

    #[test]
    fn an_empty_index_lists_nothing_and_removes_nothing() {
        let memory = Memory::default();
        let index = Index::new(&memory, "t/").with_node_bytes(2048);
        assert_eq!(all(&index), Vec::<String>::new());
        assert!(!index.remove("a").unwrap());
        assert_eq!(index.page("", None, 10, |_| Ok(true)).unwrap(), (vec![], false));
    }

    #[test]
    fn names_come_back_in_byte_order_across_many_splits() {
        let memory = Memory::default();
        let index = Index::new(&memory, "t/").with_node_bytes(2048);
        let mut expected = BTreeSet::new();
        for i in 0..5_000 {
            let name = name(i);
            assert!(index.insert(&name).unwrap());
            expected.insert(name);
        }
        assert!(!index.insert(&name(7)).unwrap(), "a second insert of a name is not news");
        assert_eq!(all(&index), expected.iter().cloned().collect::<Vec<_>>());
        let root = index.read(index.root().unwrap().id).unwrap();
        assert!(root.node.level >= 2, "5,000 names of 100 bytes in nodes of 2 KiB make a tree of three levels");
    }

    #[test]
    fn a_page_starts_after_the_cursor_and_stops_at_the_end_of_the_prefix() {
        let memory = Memory::default();
        let index = Index::new(&memory, "t/").with_node_bytes(2048);
        for name in ["a/1", "a/2", "a/3", "a0", "b/1", "a/", "a"] {
            index.insert(name).unwrap();
        }
        let page = |prefix, cursor, limit| index.page(prefix, cursor, limit, |_| Ok(true)).unwrap();
        assert_eq!(page("a/", None, 2), (vec!["a/".to_owned(), "a/1".to_owned()], true));
        assert_eq!(page("a/", Some("a/1"), 2), (vec!["a/2".to_owned(), "a/3".to_owned()], false));
        assert_eq!(page("a/", Some("0"), 1), (vec!["a/".to_owned()], true), "a cursor before the prefix");
        assert_eq!(page("a/", Some("z"), 5), (vec![], false), "a cursor past the prefix");
        assert_eq!(page("c", None, 5), (vec![], false));
        let odd = index.page("a/", None, 5, |name| Ok(name != "a/2")).unwrap();
        assert_eq!(odd, (vec!["a/".to_owned(), "a/1".to_owned(), "a/3".to_owned()], false), "keep filters");
    }

    #[test]
    fn removed_names_are_gone_and_the_rest_stay() {
        let memory = Memory::default();
        let index = Index::new(&memory, "t/").with_node_bytes(2048);
        for i in 0..3_000 {
            index.insert(&name(i)).unwrap();
        }
        for i in (0..3_000).filter(|i| i % 3 != 0) {
            assert!(index.remove(&name(i)).unwrap());
            assert!(!index.remove(&name(i)).unwrap());
        }
        let mut expected: Vec<String> = (0..3_000).filter(|i| i % 3 == 0).map(name).collect();
        expected.sort();
        assert_eq!(all(&index), expected);
    }

    #[test]
    fn a_page_reads_a_bounded_number_of_nodes_whatever_the_index_holds() {
        // Counting reads, not timing: a page of 100 in an index of 10,000 names reads the root
        // pointer, one node per level and the leaves the page spans.
        struct Counting<'a>(&'a Memory, std::cell::Cell<usize>);
        impl Cells for Counting<'_> {
            type Error = String;
            fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
                self.1.set(self.1.get() + 1);
                self.0.get(key)
            }
            fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
                self.0.set(key, value)
            }
            fn delete(&self, key: &str) -> Result<(), String> {
                self.0.delete(key)
            }
            fn swap(&self, key: &str, old: &[u8], new: &[u8]) -> Result<bool, String> {
                self.0.swap(key, old, new)
            }
            fn increment(&self, key: &str, delta: i64) -> Result<i64, String> {
                self.0.increment(key, delta)
            }
        }
        let memory = Memory::default();
        let index = Index::new(&memory, "t/");
        for i in 0..10_000 {
            index.insert(&name(i)).unwrap();
        }
        let counting = Counting(&memory, Default::default());
        let index = Index::new(&counting, "t/");
        let middle = name(5_000);
        let (names, more) = index.page("index/tags/", Some(&middle), 100, |_| Ok(true)).unwrap();
        assert_eq!((names.len(), more), (100, true));
        assert!(counting.1.get() <= 8, "{} reads for a page of 100", counting.1.get());
    }

    fn seed() -> u64 {
        let seed = std::env::var("BERTH_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        println!("seed {seed} (replay with BERTH_TEST_SEED={seed})");
        seed
    }

    /// `range` in an order drawn from `seed` and `salt` (xorshift; no crate needed for this).
    fn shuffled(range: std::ops::Range<u64>, seed: u64, salt: u64) -> Vec<u64> {
        let mut order: Vec<u64> = range.collect();
        let mut state = (seed ^ salt.wrapping_mul(0xA24B_AED4_963E_E407)) | 1;
        for i in (1..order.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            order.swap(i, (state % (i as u64 + 1)) as usize);
        }
        order
    }

    fn race(threads: u64, work: impl Fn(u64) -> u64 + Sync) -> u64 {
        std::thread::scope(|scope| {
            let work = &work;
            let handles: Vec<_> = (0..threads).map(|thread| scope.spawn(move || work(thread))).collect();
            handles.into_iter().map(|handle| handle.join().unwrap()).sum()
        })
    }

    #[test]
    fn of_concurrent_inserts_of_one_name_exactly_one_finds_it_absent_and_none_is_lost() {
        let seed = seed();
        let memory = Memory::default();
        let index = Index::new(&memory, "t/").with_node_bytes(2048);
        let count = 3_000;
        let absent = race(8, |thread| {
            shuffled(0..count, seed, thread).into_iter().filter(|i| index.insert(&name(*i)).unwrap()).count() as u64
        });
        assert_eq!(absent, count, "each name was new to exactly one of the eight inserters");
        let mut expected: Vec<String> = (0..count).map(name).collect();
        expected.sort();
        assert_eq!(all(&index), expected, "every name listed once, in order");
    }

    #[test]
    fn of_concurrent_removes_of_one_name_exactly_one_finds_it_while_splits_go_on() {
        let seed = seed();
        let memory = Memory::default();
        let index = Index::new(&memory, "t/").with_node_bytes(2048);
        let count = 2_000;
        for i in 0..count {
            index.insert(&name(i)).unwrap();
        }
        // Six removers race on the same names while two inserters add others, splitting the very
        // leaves the removers swap.
        let removed = race(8, |thread| {
            if thread < 6 {
                shuffled(0..count, seed, thread).into_iter().filter(|i| index.remove(&name(*i)).unwrap()).count() as u64
            } else {
                for i in shuffled(count..3 * count, seed, thread) {
                    index.insert(&name(i)).unwrap();
                }
                0
            }
        });
        assert_eq!(removed, count, "each name was removed by exactly one of the six removers");
        let mut expected: Vec<String> = (count..3 * count).map(name).collect();
        expected.sort();
        assert_eq!(all(&index), expected, "only the names added meanwhile are left, each once");
    }
}
