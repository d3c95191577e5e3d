//! How objects are laid out in key-value: plain Rust, no Spin types, unit-tested natively.
//!
//! An object is a *record* under `blob-kv/obj/<name>` (or `blob-kv/long/<sha256(name)>` when the
//! name would make the key too long) that lists its chunks: `blob-kv/chunk/<write>/<index>`, each
//! [`CHUNK_SIZE`] bytes except the last. The record is written after every chunk is stored, and
//! deleted before any chunk is, so an object is visible whole or not at all. `<write>` is random
//! per write, so two writers of one name never share chunks.

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// Bytes per chunk value: well under 1 MB (Spin's documented value limit) and under the 400 KB
/// item limit of DynamoDB, the smallest of Spin's key-value backends.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// Spin documents keys of up to 256 bytes.
pub const MAX_KEY_LEN: usize = 250;

/// Longest object name this provider accepts.
pub const MAX_NAME_LEN: usize = 1024;

const OBJECT_PREFIX: &str = "blob-kv/obj/";
const LONG_PREFIX: &str = "blob-kv/long/";
const CHUNK_PREFIX: &str = "blob-kv/chunk/";
const CLAIM_PREFIX: &str = "blob-kv/claim/";

/// What the key-value store holds about one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// The object's name, kept only when the key cannot hold it (see [`record_key`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub size: u64,
    pub chunk_size: u64,
    /// The random id of the write that stored the chunks.
    pub write: String,
    /// A delete has taken this record (see [`ObjectRecord::doomed`]): the object reads as absent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
}

impl ObjectRecord {
    /// The same record, taken by a delete. A delete swaps the record it read for this one before
    /// it touches anything, so of concurrent deletes of one record exactly one goes on; a late
    /// one finds a different value and stands back, instead of unlisting or removing an object
    /// created after the first delete released the name.
    pub fn doomed(&self) -> ObjectRecord {
        ObjectRecord { deleting: true, ..self.clone() }
    }

    pub fn chunk_count(&self) -> u64 {
        self.size.div_ceil(self.chunk_size)
    }

    pub fn chunk_keys(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.chunk_count()).map(|index| chunk_key(&self.write, index))
    }

    /// The chunk reads that deliver `length` bytes from `offset`, or `None` when the range does
    /// not lie within the object.
    pub fn spans(&self, offset: u64, length: u64) -> Option<Vec<ChunkSpan>> {
        let end = offset.checked_add(length).filter(|end| *end <= self.size)?;
        let mut spans = Vec::new();
        let mut at = offset;
        while at < end {
            let index = at / self.chunk_size;
            let chunk_start = index * self.chunk_size;
            let chunk_end = (chunk_start + self.chunk_size).min(end);
            spans.push(ChunkSpan {
                key: chunk_key(&self.write, index),
                start: (at - chunk_start) as usize,
                end: (chunk_end - chunk_start) as usize,
            });
            at = chunk_end;
        }
        Some(spans)
    }
}

/// Bytes `start..end` of the chunk under `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSpan {
    pub key: String,
    pub start: usize,
    pub end: usize,
}

/// Why a name is refused, or `None` when it is acceptable.
pub fn check_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty name")
    } else if name.len() > MAX_NAME_LEN {
        Some("name longer than 1024 bytes")
    } else if name.chars().any(char::is_control) {
        Some("control character in name")
    } else {
        None
    }
}

/// Where the record of `name` lives. Names too long for a key are keyed by their SHA-256, and
/// the record then carries the name (listings read it from there).
pub fn record_key(name: &str) -> String {
    if OBJECT_PREFIX.len() + name.len() <= MAX_KEY_LEN {
        format!("{OBJECT_PREFIX}{name}")
    } else {
        format!("{LONG_PREFIX}{}", hex::encode(sha2::Sha256::digest(name.as_bytes())))
    }
}

/// Whether the record under `key` stores its name inside (see [`record_key`]).
pub fn is_long_record_key(key: &str) -> bool {
    key.starts_with(LONG_PREFIX)
}

/// The object name a key of the store stands for, when it is a short record key.
pub fn name_of_record_key(key: &str) -> Option<&str> {
    key.strip_prefix(OBJECT_PREFIX)
}

/// The counter whose first increment wins the right to create `name` (creation must be
/// exclusive, and key-value has no create-if-absent: see `provider.rs`). Always keyed by the
/// name's hash, so the key has one length whatever the name's.
pub fn claim_key(name: &str) -> String {
    format!("{CLAIM_PREFIX}{}", hex::encode(sha2::Sha256::digest(name.as_bytes())))
}

pub fn chunk_key(write: &str, index: u64) -> String {
    format!("{CHUNK_PREFIX}{write}/{index}")
}

/// Key prefix of the index of object names (see [`crate::index`]): listings read it.
pub const NAMES_INDEX: &str = "blob-kv/ix/names/";

/// Key prefix of the index of writes and deletes in progress, as [`Marker`]s.
pub const WRITES_INDEX: &str = "blob-kv/ix/writes/";

/// A write (or delete) in progress, as an entry of the writes index: `<at>/<write>/<name>`, with
/// `at` in 16 hex digits so that entries sort by time. Whoever removes the entry owns what the
/// write left: the writer itself at the end, or a reclaimer once `at` is older than the grace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// Seconds since the Unix epoch when the write last made progress.
    pub at: u64,
    /// The write's id: its chunks are `chunk/<write>/<n>`.
    pub write: String,
    pub name: String,
}

impl Marker {
    /// The marker of a delete of the object whose chunks `chunks` wrote: `<chunks>~<nonce>`, so
    /// that two deletes of one object (which race to take its record, and one of which then
    /// removes its marker) never share an entry.
    pub fn delete(at: u64, chunks: &str, nonce: &str, name: &str) -> Marker {
        Marker { at, write: format!("{chunks}~{nonce}"), name: name.to_owned() }
    }

    /// Whether this marks a delete (see [`Marker::delete`]) rather than a write.
    pub fn is_delete(&self) -> bool {
        self.write.contains('~')
    }

    /// The write whose chunks this marker stands for (a delete's marker: those it deletes).
    pub fn chunks(&self) -> &str {
        self.write.split_once('~').map_or(&self.write, |(chunks, _)| chunks)
    }

    pub fn entry(&self) -> String {
        format!("{:016x}/{}/{}", self.at, self.write, self.name)
    }

    pub fn parse(entry: &str) -> Option<Marker> {
        let (at, rest) = entry.split_once('/')?;
        let (write, name) = rest.split_once('/')?;
        let at = u64::from_str_radix(at, 16).ok().filter(|_| at.len() == 16)?;
        Some(Marker { at, write: write.to_owned(), name: name.to_owned() })
            .filter(|m| !m.write.is_empty() && !m.name.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(size: u64) -> ObjectRecord {
        ObjectRecord { name: None, size, chunk_size: 10, write: "w".into(), deleting: false }
    }

    #[test]
    fn an_object_has_one_chunk_per_started_chunk_size() {
        assert_eq!(record(0).chunk_count(), 0);
        assert_eq!(record(1).chunk_count(), 1);
        assert_eq!(record(10).chunk_count(), 1);
        assert_eq!(record(11).chunk_count(), 2);
        assert_eq!(
            record(21).chunk_keys().collect::<Vec<_>>(),
            ["blob-kv/chunk/w/0", "blob-kv/chunk/w/1", "blob-kv/chunk/w/2"]
        );
    }

    #[test]
    fn a_range_maps_to_exact_chunk_spans() {
        let spans = record(25).spans(8, 15).unwrap();
        assert_eq!(
            spans,
            [
                ChunkSpan { key: "blob-kv/chunk/w/0".into(), start: 8, end: 10 },
                ChunkSpan { key: "blob-kv/chunk/w/1".into(), start: 0, end: 10 },
                ChunkSpan { key: "blob-kv/chunk/w/2".into(), start: 0, end: 3 },
            ]
        );
        assert_eq!(record(25).spans(20, 5).unwrap(), [ChunkSpan { key: "blob-kv/chunk/w/2".into(), start: 0, end: 5 }]);
    }

    #[test]
    fn an_empty_range_reads_nothing_and_a_range_past_the_end_is_refused() {
        assert_eq!(record(25).spans(25, 0).unwrap(), []);
        assert_eq!(record(0).spans(0, 0).unwrap(), []);
        assert_eq!(record(25).spans(20, 6), None);
        assert_eq!(record(25).spans(26, 0), None);
        assert_eq!(record(25).spans(u64::MAX, 2), None);
    }

    #[test]
    fn long_names_are_keyed_by_their_hash() {
        let short = "blobs/sha256/ab";
        assert_eq!(record_key(short), "blob-kv/obj/blobs/sha256/ab");
        assert_eq!(name_of_record_key(&record_key(short)), Some(short));
        let long = "x".repeat(300);
        let key = record_key(&long);
        assert!(key.len() <= MAX_KEY_LEN && is_long_record_key(&key), "{key}");
        assert_eq!(name_of_record_key(&key), None);
        assert!(claim_key(&long).len() <= MAX_KEY_LEN && !is_long_record_key(&claim_key(&long)));
        assert_eq!(name_of_record_key(&claim_key(short)), None, "claims are not listed as objects");
    }

    #[test]
    fn a_doomed_record_differs_from_the_live_one_and_reads_back_as_doomed() {
        let live = record(25);
        let live_bytes = serde_json::to_vec(&live).unwrap();
        assert!(!String::from_utf8(live_bytes.clone()).unwrap().contains("deleting"), "live records are as before");
        let doomed = serde_json::to_vec(&live.doomed()).unwrap();
        assert_ne!(doomed, live_bytes, "the swap to it fails for a second delete that read the live record");
        assert!(serde_json::from_slice::<ObjectRecord>(&doomed).unwrap().deleting);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("").is_some());
        assert!(check_name("a\nb").is_some());
        assert!(check_name(&"x".repeat(1025)).is_some());
        assert!(check_name("index/tags/repo/v1").is_none());
    }

    #[test]
    fn markers_sort_by_time_and_parse_back() {
        let early = Marker { at: 9, write: "ab".into(), name: "uploads/x/y".into() };
        let late = Marker { at: 0x10, write: "00".into(), name: "a".into() };
        assert!(early.entry() < late.entry(), "{} < {}", early.entry(), late.entry());
        assert_eq!(Marker::parse(&early.entry()), Some(early));
        assert_eq!(Marker::parse(&late.entry()), Some(late));
        assert_eq!(Marker::parse("0000000000000009/ab"), None);
        assert_eq!(Marker::parse("9/ab/c"), None);
        assert_eq!(Marker::parse("zzzzzzzzzzzzzzzz/ab/c"), None);
    }

    #[test]
    fn two_deletes_of_one_object_have_markers_of_their_own_that_name_its_chunks() {
        let first = Marker::delete(9, "ab", "n1", "blobs/x");
        let second = Marker::delete(9, "ab", "n2", "blobs/x");
        assert_ne!(first.entry(), second.entry());
        assert_eq!((first.chunks(), second.chunks()), ("ab", "ab"));
        assert_eq!(Marker::parse(&first.entry()), Some(first));
        let write = Marker { at: 9, write: "cd".into(), name: "blobs/x".into() };
        assert_eq!(write.chunks(), "cd");
        assert!(second.is_delete() && !write.is_delete());
    }
}
