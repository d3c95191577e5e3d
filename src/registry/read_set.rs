//! The key-value reads an answer was made from, for a host that keeps the answer and gives it
//! again without running the registry (berth-runner's answer cache, `runner/src/http/
//! answer_cache.rs`).
//!
//! Why that is correct: the answers that may be kept (a manifest GET or HEAD, a blob HEAD, the
//! base endpoint; asked anonymously or with a bearer token, `crate::api`) are a function of the
//! request, the configuration (fixed for a host's life), the values of the keys read while
//! making them, and for a token the time (it is accepted until it expires: the read set says
//! until when).
//! Object bytes are named by those values (a blob record's objects are immutable while the
//! record names them). So while every key read still holds the value read, the registry would
//! answer the same: the host checks exactly that, in the same store every front end writes,
//! before each answer it gives from its cache. A request that wrote anything, or that counted an
//! event, is never kept: what it did must happen again.

use crate::registry::store::{MetaStore, ReadSet, StoreError};

/// A [`MetaStore`] that records, when asked, what passes through it.
pub struct Recorded<M> {
    inner: M,
    reads: Option<ReadSet>,
}

impl<M> Recorded<M> {
    /// `record`: the label of the store `inner` is, when the host asked for the read set
    /// (berth-runner does; Spin does not, and then nothing is recorded).
    pub fn new(inner: M, record: Option<&str>) -> Self {
        Recorded { inner, reads: record.map(ReadSet::new) }
    }

    pub fn inner(&self) -> &M {
        &self.inner
    }

    pub fn into_inner(self) -> M {
        self.inner
    }

    fn wrote(&self) {
        if let Some(reads) = &self.reads {
            reads.note_write();
        }
    }
}

impl<M: MetaStore> MetaStore for Recorded<M> {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.inner.get(key).await?;
        if let Some(reads) = &self.reads {
            reads.note_read(key, value.as_deref());
        }
        Ok(value)
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.wrote();
        self.inner.set(key, value).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.wrote();
        self.inner.delete(key).await
    }

    async fn compare_and_swap(&self, key: &str, expected: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        self.wrote();
        self.inner.compare_and_swap(key, expected, new).await
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.wrote();
        self.inner.increment(key, delta).await
    }

    fn read_set(&self) -> Option<&ReadSet> {
        self.reads.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{MemMeta, block_on};
    use crate::wire::digest::{Algorithm, Digest};

    fn sha(bytes: &[u8]) -> String {
        Digest::of(Algorithm::Sha256, bytes).hex().to_owned()
    }

    #[test]
    fn the_validators_name_each_key_read_once_with_the_value_seen() {
        let meta = MemMeta::default();
        block_on(meta.set("a", b"1")).unwrap();
        let recorded = Recorded::new(meta, Some("default"));
        block_on(recorded.get("a")).unwrap();
        block_on(recorded.get("missing")).unwrap();
        block_on(recorded.get("a")).unwrap();
        let reads = recorded.read_set().unwrap();
        assert_eq!(reads.validators(), None, "nothing said the answer may be kept");
        reads.mark_keepable();
        assert_eq!(reads.validators().unwrap(), format!("default a={} missing=-", sha(b"1")));
    }

    #[test]
    fn an_answer_bounded_in_time_says_until_when_the_earliest_bound() {
        let recorded = Recorded::new(MemMeta::default(), Some("default"));
        let reads = recorded.read_set().unwrap();
        reads.mark_keepable();
        reads.keep_until(2000);
        reads.keep_until(1500);
        reads.keep_until(1800);
        block_on(recorded.get("k")).unwrap();
        assert_eq!(reads.validators().unwrap(), "default @1500 k=-");
    }

    #[test]
    fn an_answer_made_from_a_key_seen_changed_between_two_reads_is_not_kept() {
        let meta = MemMeta::default();
        block_on(meta.set("a", b"1")).unwrap();
        let recorded = Recorded::new(meta, Some("default"));
        recorded.read_set().unwrap().mark_keepable();
        block_on(recorded.get("a")).unwrap();
        block_on(recorded.inner().set("a", b"2")).unwrap(); // another request, meanwhile
        block_on(recorded.get("a")).unwrap();
        assert_eq!(recorded.read_set().unwrap().validators(), None);
    }

    #[test]
    fn an_answer_that_wrote_anything_is_not_kept() {
        for write in 0..4 {
            let recorded = Recorded::new(MemMeta::default(), Some("default"));
            recorded.read_set().unwrap().mark_keepable();
            block_on(recorded.get("k")).unwrap();
            match write {
                0 => block_on(recorded.set("k", b"v")).unwrap(),
                1 => block_on(recorded.delete("k")).unwrap(),
                2 => drop(block_on(recorded.compare_and_swap("k", b"v", b"w")).unwrap()),
                _ => drop(block_on(recorded.increment("c", 1)).unwrap()),
            }
            assert_eq!(recorded.read_set().unwrap().validators(), None, "write {write}");
        }
    }

    #[test]
    fn nothing_is_recorded_unless_the_host_asked() {
        let recorded = Recorded::new(MemMeta::default(), None);
        block_on(recorded.get("k")).unwrap();
        assert!(recorded.read_set().is_none());
    }
}
