//! Storage quotas (the `quotas` variable): rules `<repository-glob> <size>`, e.g.
//! `team-a/* 10GiB`. Every rule whose glob matches a repository is a namespace it counts in, and
//! a push must fit every one.
//!
//! Usage is the bytes of the distinct blobs (layers, configs, manifests) linked into the
//! namespace's repositories: a blob counts once per namespace, however many repositories of it
//! hold it. It is kept as key-value counters changed only by `increment`:
//! - `quota/<ns>/blob/<digest>` counts the links of a blob in the namespace. The link that takes it
//!   from 0 to 1 adds the blob's size to `quota/<ns>/bytes`;
//! - that addition is itself an `increment` whose result is the new total. A total over the limit
//!   is taken back, and the push refused, so racing pushes never take the usage past the limit.
//!
//! - `quota/<ns>/pending` counts the bytes of unfinished uploads (their chunks so far): a chunk is
//!   counted when it is appended, and the session's bytes go when it is finished (the blob is
//!   then counted by its link) or cancelled (by its client, or by expiry). A chunk that would take
//!   the stored bytes plus the pending ones past the limit is refused, so uploads that are never
//!   finished cannot fill a namespace past its quota.
//!
//! Deleting a blob only unlinks it. Garbage collection, once it reclaims bytes, gives them back;
//! for a blob it keeps (another namespace still uses it), it recounts the blob in each namespace
//! ([`reconcile_blob`]): a namespace none of whose repositories links the blob any more stops
//! paying for it. A recount (`crate::lifecycle::recount`, `POST /v2/_berth/quotas/recount`,
//! `berth-runner quota --recount`) does the same for every blob, and also counts blobs linked
//! before a rule existed.
//!
//! One rule keeps the bytes right: a blob's size is in a namespace's bytes exactly while its
//! count there is above 0 (0 to 1 adds it, 1 to 0 takes it off, and no decrement goes below 0).
//!
//! Why a recount never drops a link being written (docs/consistency.md has the whole argument):
//! a recount reads the count, looks for links, marks the blob's recounts, swaps the count it
//! read to 0, then looks for links again and counts the blob back if one appeared. A link write
//! reads the mark, counts itself, writes its link, then reads the mark and the count again and
//! counts itself once more if a recount began meanwhile or the count is 0 ([`recharge`]). A
//! charge taken back checks the mark after its decrement, and makes the decrement good if a
//! recount began since its charge ([`uncharge`]): its own count may be gone, and the decrement
//! have taken another link's. Every extra count errs high, which a later recount mends.

use crate::config::quotas::{Quota, human};
use crate::registry::keys::{self, Holder};
use crate::registry::store::{BlobStore, MetaStore, ObjectPages, StoreError, Stores, internal};
use crate::wire::digest::Digest;
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::glob::glob_match;
use crate::wire::name::RepoName;

/// Where a namespace's counts are kept.
trait Keys {
    fn bytes_key(&self) -> String;
    fn pending_key(&self) -> String;
    fn blob_key(&self, digest: &Digest) -> String;
    fn recounts_key(&self, digest: &Digest) -> String;
}

impl Keys for Quota {
    fn bytes_key(&self) -> String {
        format!("quota/{}/bytes", self.id())
    }

    /// The bytes of unfinished uploads into the namespace's repositories.
    fn pending_key(&self) -> String {
        format!("quota/{}/pending", self.id())
    }

    fn blob_key(&self, digest: &Digest) -> String {
        format!("quota/{}/blob/{}/{}", self.id(), digest.algorithm().as_str(), digest.hex())
    }

    /// The recounts that began to swap the blob's count away (see [`recharge`]).
    fn recounts_key(&self, digest: &Digest) -> String {
        format!("quota/{}/recounts/{}/{}", self.id(), digest.algorithm().as_str(), digest.hex())
    }
}

fn store_error(e: StoreError) -> RegistryError {
    internal(e)
}

fn exceeded(quota: &Quota, used: u64, size: u64) -> RegistryError {
    RegistryError::new(
        ErrorCode::Denied,
        format!(
            "quota exceeded: repositories {} may hold {}, {} are used, and this push needs {} more",
            quota.pattern,
            human(quota.limit),
            human(used),
            human(size)
        ),
    )
    .told()
}

/// The namespace's usage, in bytes (0 when nothing was counted yet).
pub async fn used<M: MetaStore, B>(stores: &Stores<M, B>, quota: &Quota) -> Result<u64, RegistryError> {
    // An increment of 0 reads a counter in whichever form the store keeps it.
    Ok(stores.meta.increment(&quota.bytes_key(), 0).await.map_err(store_error)?.max(0) as u64)
}

/// The bytes of the namespace's unfinished uploads.
pub async fn pending<M: MetaStore, B>(stores: &Stores<M, B>, quota: &Quota) -> Result<u64, RegistryError> {
    Ok(stores.meta.increment(&quota.pending_key(), 0).await.map_err(store_error)?.max(0) as u64)
}

/// A rule's usage, as operators see it (`GET /v2/_berth/quotas`, the UI's admin page).
pub struct Usage<'a> {
    pub rule: &'a Quota,
    pub used: u64,
    pub uploading: u64,
}

/// Every rule's usage.
pub async fn usage<M: MetaStore, B>(stores: &Stores<M, B>) -> Result<Vec<Usage<'_>>, RegistryError> {
    let mut rules = Vec::new();
    for rule in stores.config.quotas.iter() {
        rules.push(Usage { rule, used: used(stores, rule).await?, uploading: pending(stores, rule).await? });
    }
    Ok(rules)
}

/// Count a chunk of `size` bytes appended to an unfinished upload into `name`, in every
/// namespace of it, or refuse it (and count nothing) when the namespace's stored bytes and
/// unfinished uploads would go over its limit. Racing chunks each count themselves first and
/// then compare, so they never pass the limit together.
pub async fn charge_pending<M: MetaStore, B>(
    stores: &Stores<M, B>,
    name: &RepoName,
    size: u64,
) -> Result<(), RegistryError> {
    let mut counted: Vec<&Quota> = Vec::new();
    for quota in stores.config.quotas.applying(name) {
        let pending = match stores.meta.increment(&quota.pending_key(), size as i64).await {
            Ok(pending) => pending.max(0) as u64,
            Err(e) => {
                uncharge_pending(stores, &counted, size).await;
                return Err(store_error(e));
            }
        };
        counted.push(quota);
        let used = match used(stores, quota).await {
            Ok(used) => used,
            Err(e) => {
                uncharge_pending(stores, &counted, size).await;
                return Err(e);
            }
        };
        if used.saturating_add(pending) > quota.limit {
            uncharge_pending(stores, &counted, size).await;
            stores.count("quota_refusals", 1);
            return Err(exceeded(quota, used + pending - size, size));
        }
    }
    Ok(())
}

/// An unfinished upload of `size` bytes into `name` is finished or cancelled: its bytes leave
/// the pending counts (best effort: a failure leaves them too high, never too low).
pub async fn release_pending<M: MetaStore, B>(stores: &Stores<M, B>, name: &RepoName, size: u64) {
    if size > 0 {
        let quotas: Vec<&Quota> = stores.config.quotas.applying(name).collect();
        uncharge_pending(stores, &quotas, size).await;
    }
}

async fn uncharge_pending<M: MetaStore, B>(stores: &Stores<M, B>, quotas: &[&Quota], size: u64) {
    for quota in quotas {
        let _ = stores.meta.increment(&quota.pending_key(), -(size as i64)).await;
    }
}

/// Before any byte is stored: whether `size` more bytes (a blob not yet in the namespace) fit in
/// every namespace of `name`. Racing pushes are caught for good by [`charge`].
pub async fn check<M: MetaStore, B>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: Option<&Digest>,
    size: u64,
) -> Result<(), RegistryError> {
    for quota in stores.config.quotas.applying(name) {
        if let Some(digest) = digest
            && stores.meta.increment(&quota.blob_key(digest), 0).await.map_err(store_error)? > 0
        {
            continue; // already counted here
        }
        // Unfinished uploads count too: what they hold is on the way to being stored.
        let used = used(stores, quota).await?.saturating_add(pending(stores, quota).await?);
        if used.saturating_add(size) > quota.limit {
            stores.count("quota_refusals", 1);
            return Err(exceeded(quota, used, size));
        }
    }
    Ok(())
}

/// Count a link of blob `digest` (`size` bytes) into repository `name`, in every namespace of
/// it, or refuse it (and count nothing) when a namespace would go over its limit.
///
/// Each namespace keeps one rule for its bytes: the blob's size is in them exactly while its
/// count is above 0. The request whose increment takes the count from 0 to 1 adds the size, and
/// the one whose decrement takes it from 1 to 0 (or whose swap takes it to 0: a removal, a
/// recount) takes it off; decrements never take a count below 0.
pub async fn charge<'a, M: MetaStore, B>(
    stores: &'a Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
    size: u64,
) -> Result<Charged<'a>, RegistryError> {
    let mut charged: Vec<(&Quota, i64)> = Vec::new();
    for quota in stores.config.quotas.applying(name) {
        // Read before the count changes: a recount that swaps this charge away has begun after
        // this read, and [`recharge`] sees its mark.
        let recounts = match counter(stores, &quota.recounts_key(digest)).await {
            Ok(recounts) => recounts,
            Err(e) => {
                uncharge(stores, digest, size, &charged).await;
                return Err(e);
            }
        };
        let links = match stores.meta.increment(&quota.blob_key(digest), 1).await {
            Ok(links) => links,
            Err(e) => {
                uncharge(stores, digest, size, &charged).await;
                return Err(store_error(e));
            }
        };
        if links != 1 {
            charged.push((quota, recounts));
            continue;
        }
        let total = match stores.meta.increment(&quota.bytes_key(), size as i64).await {
            Ok(total) => total.max(0) as u64,
            Err(e) => {
                // Its count is up, its bytes are not: the count alone is taken back here.
                let _ = uncount_link(stores, quota, digest).await;
                uncharge(stores, digest, size, &charged).await;
                return Err(store_error(e));
            }
        };
        charged.push((quota, recounts));
        if total > quota.limit {
            uncharge(stores, digest, size, &charged).await;
            stores.count("quota_refusals", 1);
            return Err(exceeded(quota, total.saturating_sub(size), size));
        }
    }
    Ok(Charged(charged))
}

/// What one [`charge`] counted: a link in each namespace, with the namespace's count of
/// recounts of the blob read before it.
#[derive(Debug)]
pub struct Charged<'a>(Vec<(&'a Quota, i64)>);

/// Take back a charge whose link was not written, or was taken back (garbage collection removed
/// the blob). A count that a removal or a recount already set to 0 stays at 0: its bytes went
/// with that swap.
pub async fn refund<M: MetaStore, B>(stores: &Stores<M, B>, digest: &Digest, size: u64, charged: &Charged<'_>) {
    uncharge(stores, digest, size, &charged.0).await;
}

/// Garbage collection removed the blob, with every link of it: it counts no more anywhere. A
/// link that raced the removal (a push of the same blob) keeps its count, and then the bytes.
///
/// Idempotent: the blob's count is swapped from the exact value read to 0, and only the request
/// whose swap took it there gives the bytes back. Two collectors finishing the same removal
/// never drive the count below 0 (a decrement by what each read would), nor give the bytes back
/// twice.
pub async fn release_blob<M: MetaStore, B>(stores: &Stores<M, B>, digest: &Digest, size: u64) {
    for quota in stores.config.quotas.iter() {
        let key = quota.blob_key(digest);
        for _ in 0..8 {
            let Ok(Some(raw)) = stores.meta.get(&key).await else { break };
            if crate::registry::store::counter_value(&raw) <= 0 {
                break;
            }
            match stores.meta.compare_and_swap(&key, &raw, &counter_like(&raw, 0)).await {
                Ok(true) => {
                    let _ = stores.meta.increment(&quota.bytes_key(), -(size as i64)).await;
                    break;
                }
                Ok(false) => continue, // a link or another release changed it: read it again
                Err(_) => break,
            }
        }
    }
}

/// Take back what [`charge`] counted (best effort: a failure here leaves usage too high, never
/// too low): the bytes go with the count's last link.
///
/// A recount that began since the charge may have swapped the charge's count away already, and
/// another link's count may stand in its place now: the decrement would take that one. So the
/// recounts mark is read after the decrement, and if a recount began since the charge, the
/// decrement is made good (the count left one too high, which a later recount repairs).
async fn uncharge<M: MetaStore, B>(stores: &Stores<M, B>, digest: &Digest, size: u64, charged: &[(&Quota, i64)]) {
    for (quota, recounts_before) in charged {
        let left = uncount_link(stores, quota, digest).await;
        if left == Some(0) {
            let _ = stores.meta.increment(&quota.bytes_key(), -(size as i64)).await;
        }
        let recounted = counter(stores, &quota.recounts_key(digest)).await.ok() != Some(*recounts_before);
        if left.is_some() && recounted {
            count_back(stores, quota, digest, size).await;
        }
    }
}

/// Take one link off the blob's count in the namespace, by compare-and-swap from the value read:
/// the count left, or `None` when it was 0 already (a removal or a recount swapped this link's
/// count away, and took the bytes with it). Never below 0, not even for a moment: a charge that
/// read -1 would take itself for a second link, and add no bytes.
async fn uncount_link<M: MetaStore, B>(stores: &Stores<M, B>, quota: &Quota, digest: &Digest) -> Option<i64> {
    let key = quota.blob_key(digest);
    for _ in 0..16 {
        let raw = stores.meta.get(&key).await.ok()??;
        let count = crate::registry::store::counter_value(&raw);
        if count <= 0 {
            return None;
        }
        if stores.meta.compare_and_swap(&key, &raw, &counter_like(&raw, count - 1)).await.ok()? {
            return Some(count - 1);
        }
    }
    None // still contended: left counted (too high, never too low; a recount repairs it)
}

/// A counter's value, 0 when absent.
async fn counter<M: MetaStore, B>(stores: &Stores<M, B>, key: &str) -> Result<i64, RegistryError> {
    Ok(stores.meta.get(key).await.map_err(store_error)?.as_deref().map_or(0, crate::registry::store::counter_value))
}

/// After a link was written: a recount may have found no link and swapped the blob's count to 0
/// between this link's [`charge`] and its write, taking this link's count with it (and perhaps
/// another push's charge has raised it again since, and will take itself back). Counted again
/// then: when a recount of the blob began since the charge, or the count is 0. A second count
/// for one link leaves the count too high, which is harmless (the bytes follow 0 and 1 only).
pub async fn recharge<M: MetaStore, B>(stores: &Stores<M, B>, digest: &Digest, size: u64, charged: &Charged<'_>) {
    for (quota, recounts_before) in &charged.0 {
        let recounted = counter(stores, &quota.recounts_key(digest)).await.ok() != Some(*recounts_before);
        let uncounted = counter(stores, &quota.blob_key(digest)).await.is_ok_and(|n| n <= 0);
        if recounted || uncounted {
            count_back(stores, quota, digest, size).await;
        }
    }
}

/// Count the blob in the namespace once more; the bytes too when that makes it the first link
/// (whether it did).
async fn count_back<M: MetaStore, B>(stores: &Stores<M, B>, quota: &Quota, digest: &Digest, size: u64) -> bool {
    if let Ok(1) = stores.meta.increment(&quota.blob_key(digest), 1).await {
        let _ = stores.meta.increment(&quota.bytes_key(), size as i64).await;
        return true;
    }
    false
}

/// Whether a repository of the namespace links the blob, as its holder entries tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Linked {
    Yes,
    No,
    /// A linking repository's name is too long to be kept in its keys (it is a hash there), so
    /// whether it belongs to the namespace is not known: counted as linked, never released.
    Unknown,
}

async fn linked_in<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    quota: &Quota,
    digest: &Digest,
) -> Result<Linked, RegistryError> {
    let prefix = keys::holders_prefix(digest);
    let mut answer = Linked::No;
    let mut pages = ObjectPages::new(&stores.blobs, &prefix, None);
    while let Some(objects) = pages.next().await? {
        for object in objects {
            let Some(Holder::Link { repo_key }) = keys::parse_holder(&prefix, &object) else { continue };
            // A repository key is the name itself, or `_<hash>` for a name too long for a key
            // (no name starts with `_`).
            if repo_key.starts_with('_') {
                answer = Linked::Unknown;
                continue;
            }
            if !glob_match(&quota.pattern, &repo_key) {
                continue;
            }
            let link = stores.meta.get(&keys::blob_link_at(&repo_key, digest)).await.map_err(store_error)?;
            if link.is_some_and(|v| !v.is_empty()) {
                return Ok(Linked::Yes);
            }
        }
    }
    Ok(answer)
}

/// What a recount changed, in bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recounted {
    /// Blobs no repository of a namespace links any more, taken off its usage.
    pub released: u64,
    /// Blobs linked in a namespace that did not count them (linked before its rule existed).
    pub restored: u64,
}

impl std::ops::AddAssign for Recounted {
    fn add_assign(&mut self, other: Recounted) {
        self.released += other.released;
        self.restored += other.restored;
    }
}

/// Recount one stored blob of `size` bytes in every namespace, from its links (module doc: why
/// a link being written is never dropped). Safe to run on many instances at once, and beside
/// pushes. `still_stored` says whether the blob is still there (garbage collection may be
/// removing it): a count made for a blob being removed is taken back.
pub async fn reconcile_blob<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    digest: &Digest,
    size: u64,
    still_stored: impl AsyncFn() -> Result<bool, RegistryError>,
) -> Result<Recounted, RegistryError> {
    let mut done = Recounted::default();
    for quota in stores.config.quotas.iter() {
        let key = quota.blob_key(digest);
        let raw = stores.meta.get(&key).await.map_err(store_error)?;
        let count = raw.as_deref().map_or(0, crate::registry::store::counter_value);
        let linked = linked_in(stores, quota, digest).await?;
        match (count > 0, linked) {
            (true, Linked::No) => {
                let raw = raw.expect("a positive count was read");
                // Marked before the swap: a link write that charged before the count was read
                // read the mark's old value before charging, and counts itself again.
                stores.meta.increment(&quota.recounts_key(digest), 1).await.map_err(store_error)?;
                if !stores.meta.compare_and_swap(&key, &raw, &counter_like(&raw, 0)).await.map_err(store_error)? {
                    continue; // a link or a release changed it: the next recount looks again
                }
                let _ = stores.meta.increment(&quota.bytes_key(), -(size as i64)).await;
                done.released += size;
                if linked_in(stores, quota, digest).await? != Linked::No {
                    // A link written between the first look and the swap.
                    count_back(stores, quota, digest, size).await;
                    done.released -= size;
                }
            }
            (false, Linked::Yes) => {
                if count_back(stores, quota, digest, size).await {
                    done.restored += size;
                }
                // Garbage collection removes a blob's record before it empties its links and
                // releases its counts: a record still there now means a later release sees
                // this count; a record gone means this count may be missed by it.
                if !still_stored().await? && uncount_link(stores, quota, digest).await == Some(0) {
                    let _ = stores.meta.increment(&quota.bytes_key(), -(size as i64)).await;
                    done.restored = done.restored.saturating_sub(size);
                }
            }
            _ => {}
        }
    }
    Ok(done)
}

/// `value` in the form the store keeps its counters in (as `raw`, a value read from it):
/// decimal text (Redis) or 8 bytes.
fn counter_like(raw: &[u8], value: i64) -> Vec<u8> {
    if !raw.is_empty() && raw.iter().all(|b| b.is_ascii_digit() || *b == b'-') {
        value.to_string().into_bytes()
    } else {
        value.to_le_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::quotas::Quotas;
    use crate::lifecycle::recount;
    use crate::registry::blobs::Link;
    use crate::testing::MemBlobs;
    use crate::testing::api::{push_blob, send};
    use crate::testing::{block_on, memory_stores};
    use crate::wire::digest::Algorithm;
    use http::{Method, StatusCode};

    /// Key-value that yields before every call, so that futures driven together interleave call
    /// by call (as requests on two instances do): once per call, or, with a seed, a random
    /// number of times (0 to 4) per call, so that one future may make several calls while
    /// another waits.
    #[derive(Default)]
    struct Interleaving(crate::testing::MemMeta, std::cell::Cell<u64>);

    impl Interleaving {
        async fn pause(&self) {
            let mut seed = self.1.get();
            let yields = if seed == 0 {
                1
            } else {
                // xorshift64: the schedule is a function of the seed, so a failure replays.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                self.1.set(seed);
                seed % 5
            };
            for _ in 0..yields {
                yield_once().await;
            }
        }
    }

    async fn yield_once() {
        let mut yielded = false;
        std::future::poll_fn(|_| {
            if std::mem::replace(&mut yielded, true) { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
        })
        .await
    }

    impl MetaStore for Interleaving {
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.pause().await;
            self.0.get(key).await
        }
        async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
            self.pause().await;
            self.0.set(key, value).await
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.pause().await;
            self.0.delete(key).await
        }
        async fn compare_and_swap(&self, key: &str, expected: &[u8], new: &[u8]) -> Result<bool, StoreError> {
            self.pause().await;
            self.0.compare_and_swap(key, expected, new).await
        }
        async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
            self.pause().await;
            self.0.increment(key, delta).await
        }
    }

    #[test]
    fn two_collectors_releasing_one_removed_blob_give_its_bytes_back_once_and_never_go_below_zero() {
        // Seed 0: one yield before every call, so the two collectors alternate call by call.
        let stores = interleaving_stores("team/* 1000", 0);
        let blob = digest(7);
        for repo in ["team/a", "team/b", "team/c"] {
            block_on(charge(&stores, &RepoName::parse(repo).unwrap(), &blob, 60)).unwrap();
        }
        block_on(charge(&stores, &RepoName::parse("team/d").unwrap(), &digest(8), 5)).unwrap();
        let quota = &stores.config.quotas.0[0];
        assert_eq!(block_on(used(&stores, quota)).unwrap(), 65);
        // Both finish the same removal at once, call by call.
        block_on(futures::future::join(release_blob(&stores, &blob, 60), release_blob(&stores, &blob, 60)));
        assert_eq!(block_on(stores.meta.increment(&quota.blob_key(&blob), 0)).unwrap(), 0, "not below 0");
        assert_eq!(block_on(used(&stores, quota)).unwrap(), 5, "the bytes came back once");
        // The next first link of the blob counts as first again.
        block_on(charge(&stores, &RepoName::parse("team/a").unwrap(), &blob, 60)).unwrap();
        assert_eq!(block_on(used(&stores, quota)).unwrap(), 65);
    }

    fn interleaving_stores(rules: &str, seed: u64) -> Stores<Interleaving, MemBlobs> {
        let mut stores = Stores {
            meta: Interleaving(Default::default(), std::cell::Cell::new(seed)),
            blobs: crate::testing::MemBlobs::default(),
            random: crate::testing::counter_random,
            now: crate::testing::test_clock,
            config: Default::default(),
            request_id: crate::registry::store::RequestId::made([1; 16]),
            events: Default::default(),
        };
        stores.config.quotas = Quotas::parse(rules).unwrap();
        stores
    }

    /// A recount of `blob` (70 bytes) racing a link write of it into `team/a`, under `seed`'s
    /// schedule of their store calls; the link is kept (the push succeeded), or undone (its
    /// commit failed).
    fn recount_racing_a_link_write(seed: u64, blob: &Digest, undone: bool) -> Stores<Interleaving, MemBlobs> {
        let stores = interleaving_stores("team/* 1000", seed);
        let team = RepoName::parse("team/a").unwrap();
        let write = async {
            let link = crate::registry::blobs::Link::write(&stores, &team, blob, 70).await.unwrap();
            if undone {
                link.undo(&stores).await;
            } else {
                std::mem::forget(link);
            }
        };
        block_on(futures::future::join(write, async { reconcile_blob(&stores, blob, 70, stored).await.unwrap() }));
        stores
    }

    /// The blob is stored (no collector is removing it).
    async fn stored() -> Result<bool, RegistryError> {
        Ok(true)
    }

    trait WriteNow<'a> {
        fn write_now(stores: &'a Stores<Interleaving, MemBlobs>, name: &RepoName, blob: &Digest) -> Link<'a>;
    }

    impl<'a> WriteNow<'a> for Link<'a> {
        /// A link of 70 bytes written before the race starts.
        fn write_now(stores: &'a Stores<Interleaving, MemBlobs>, name: &RepoName, blob: &Digest) -> Link<'a> {
            block_on(Link::write(stores, name, blob, 70)).unwrap()
        }
    }

    fn count<B>(stores: &Stores<Interleaving, B>, blob: &Digest) -> i64 {
        block_on(stores.meta.increment(&stores.config.quotas.0[0].blob_key(blob), 0)).unwrap()
    }

    /// A recount racing a link write, under 2,000 seeded schedules of their store calls (seed
    /// printed; `BERTH_SEED=<n>` replays one): the written link is counted once, with its bytes,
    /// whatever the order. Without the write's second read of its count (`recharge`), a recount
    /// that looks between the charge and the link drops it.
    #[test]
    fn a_recount_racing_a_link_write_never_drops_the_link() {
        let blob = digest(5);
        for seed in seeds() {
            let stores = recount_racing_a_link_write(seed, &blob, false);
            let why = format!("seed {seed} (replay: BERTH_SEED={seed})");
            assert_eq!(block_on(used(&stores, &stores.config.quotas.0[0])).unwrap(), 70, "{why}");
            assert!(count(&stores, &blob) > 0, "{why}");
            // And a quiet recount finds nothing to change.
            assert_eq!(block_on(reconcile_blob(&stores, &blob, 70, stored)).unwrap(), Recounted::default(), "{why}");
        }
    }

    /// The same with a link write that fails after its charge (its commit failed): whatever the
    /// order, the count is never left below 0 and the bytes are counted at most once (too high
    /// is a failure's side: when the recount and the write both counted the blob back, the
    /// write's refund takes one count); the next recount leaves the namespace paying nothing.
    #[test]
    fn a_recount_racing_a_failed_link_write_leaves_nothing_counted_after_the_next() {
        let blob = digest(6);
        for seed in seeds() {
            let stores = recount_racing_a_link_write(seed, &blob, true);
            let why = format!("seed {seed} (replay: BERTH_SEED={seed})");
            let quota = &stores.config.quotas.0[0];
            assert!(block_on(used(&stores, quota)).unwrap() <= 70, "{why}");
            assert!(count(&stores, &blob) >= 0, "{why}");
            block_on(reconcile_blob(&stores, &blob, 70, stored)).unwrap();
            assert_eq!(block_on(used(&stores, quota)).unwrap(), 0, "{why}");
            assert_eq!(count(&stores, &blob), 0, "{why}");
        }
    }

    /// A recount racing two pushes of one blob into two repositories of a namespace whose count
    /// was stale (a third repository unlinked the blob earlier): one push succeeds, the other
    /// fails after its charge. Under 20,000 seeded schedules, the acknowledged link is counted
    /// with its bytes exactly once, whatever the order; a later quiet recount changes nothing
    /// that matters. (A recount that only read the count again after the write, without the
    /// recounts mark, lets the failed push's refund take the acknowledged link's count away.)
    #[test]
    fn a_recount_racing_a_push_and_a_failed_push_of_one_blob_never_drops_the_acknowledged_link() {
        let blob = digest(11);
        let (old, a, b) = (
            RepoName::parse("team/old").unwrap(),
            RepoName::parse("team/a").unwrap(),
            RepoName::parse("team/b").unwrap(),
        );
        for seed in seeds_of(20_000) {
            let stores = interleaving_stores("team/* 1000", seed);
            let link = Link::write_now(&stores, &old, &blob);
            std::mem::forget(link);
            block_on(stores.meta.delete(&keys::blob_link(&old, &blob))).unwrap();
            let kept = async {
                std::mem::forget(Link::write(&stores, &a, &blob, 70).await.unwrap());
            };
            let failed = async {
                Link::write(&stores, &b, &blob, 70).await.unwrap().undo(&stores).await;
            };
            let recount = async { reconcile_blob(&stores, &blob, 70, stored).await.unwrap() };
            block_on(async { futures::join!(kept, failed, recount) });
            let why = format!("seed {seed} (replay: BERTH_SEED={seed})");
            let quota = &stores.config.quotas.0[0];
            let why =
                format!("{why}: count {}, used {}", count(&stores, &blob), block_on(used(&stores, quota)).unwrap());
            assert!(count(&stores, &blob) > 0, "{why}");
            assert_eq!(block_on(used(&stores, quota)).unwrap(), 70, "{why}");
            block_on(reconcile_blob(&stores, &blob, 70, stored)).unwrap();
            assert!(count(&stores, &blob) > 0, "{why}");
            assert_eq!(block_on(used(&stores, quota)).unwrap(), 70, "{why}");
        }
    }

    /// The order a random schedule rarely finds, step by step: a push charges (the count was
    /// stale), a recount swaps the count away before the push wrote its link, a second push
    /// charges (raising the count from 0) and will fail. The first push's second read of its count
    /// sees 1 — not its own — and only the recounts mark tells it to count itself again.
    #[test]
    fn a_push_whose_count_a_recount_swapped_away_counts_itself_again_even_when_another_raised_it() {
        let stores = stores_with("team/* 1000");
        let quota = &stores.config.quotas.0[0];
        let blob = digest(12);
        let (old, a, b) = (
            RepoName::parse("team/old").unwrap(),
            RepoName::parse("team/a").unwrap(),
            RepoName::parse("team/b").unwrap(),
        );
        // A count left by a repository that unlinked the blob.
        block_on(charge(&stores, &old, &blob, 70)).unwrap();
        let first = block_on(charge(&stores, &a, &blob, 70)).unwrap();
        block_on(crate::registry::blobs::mark(&stores, &keys::link_holder(&a, &blob), Vec::new())).unwrap();
        let done = block_on(reconcile_blob(&stores, &blob, 70, async || Ok(true))).unwrap();
        assert_eq!(done.released, 70, "no link yet: the count is swapped away");
        let second = block_on(charge(&stores, &b, &blob, 70)).unwrap();
        block_on(stores.meta.set(&keys::blob_link(&a, &blob), b"1")).unwrap();
        block_on(recharge(&stores, &blob, 70, &first));
        block_on(refund(&stores, &blob, 70, &second));
        assert!(block_on(stores.meta.increment(&quota.blob_key(&blob), 0)).unwrap() > 0);
        assert_eq!(block_on(used(&stores, quota)).unwrap(), 70);
    }

    /// The schedules' seeds: `BERTH_SEED` alone, or 2,000 from a printed base.
    fn seeds() -> Vec<u64> {
        seeds_of(2000)
    }

    /// `BERTH_SEED` alone, or `n` seeds from a printed base.
    fn seeds_of(n: u64) -> Vec<u64> {
        if let Some(seed) = std::env::var("BERTH_SEED").ok().and_then(|s| s.parse().ok()) {
            return vec![seed];
        }
        let base = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
        eprintln!("schedules: seeds {base} to {}", base + n - 1);
        (base..base + n).collect()
    }

    #[test]
    fn a_namespace_whose_repositories_unlinked_a_blob_kept_elsewhere_stops_paying_at_the_next_collection() {
        let stores = stores_with("team/* 1MiB");
        let rule = stores.config.quotas.0[0].clone();
        let layer = b"a base layer shared by two namespaces";
        let digest = push_blob(&stores, "team/a", layer);
        push_blob(&stores, "other/x", layer);
        assert_eq!(block_on(used(&stores, &rule)).unwrap(), layer.len() as u64);
        let deleted = send(&stores, Method::DELETE, &format!("/v2/team/a/blobs/{digest}"), vec![]);
        assert_eq!(deleted.status, StatusCode::ACCEPTED);
        assert_eq!(block_on(used(&stores, &rule)).unwrap(), layer.len() as u64, "a delete only unlinks");
        let step = block_on(crate::lifecycle::gc::step(&stores, None, false, 1)).unwrap();
        assert!(step.collected.is_empty(), "other/x still links it: {step:?}");
        assert_eq!(block_on(used(&stores, &rule)).unwrap(), 0, "team/* no longer pays for it");
        let head = send(&stores, Method::HEAD, &format!("/v2/other/x/blobs/{digest}"), vec![]);
        assert_eq!(head.status, StatusCode::OK);
        // Linked again, it is counted again.
        push_blob(&stores, "team/b", layer);
        assert_eq!(block_on(used(&stores, &rule)).unwrap(), layer.len() as u64);
    }

    #[test]
    fn a_recount_counts_the_blobs_linked_before_a_rule_existed_and_only_in_its_namespace() {
        let mut stores = memory_stores();
        let (mine, theirs) = (b"in team/a".to_vec(), b"in other/x, a bit longer".to_vec());
        push_blob(&stores, "team/a", &mine);
        push_blob(&stores, "other/x", &theirs);
        stores.config.quotas = Quotas::parse("team/* 1MiB").unwrap();
        let rule = stores.config.quotas.0[0].clone();
        assert_eq!(block_on(used(&stores, &rule)).unwrap(), 0, "pushed before the rule");
        let (done, examined, next) = block_on(recount::step(&stores, None)).unwrap();
        assert_eq!((examined, next), (2, None));
        assert_eq!(done, Recounted { released: 0, restored: mine.len() as u64 });
        assert_eq!(block_on(used(&stores, &rule)).unwrap(), mine.len() as u64);
        // A second recount changes nothing; a push of the same blob is not counted twice.
        assert_eq!(block_on(recount::step(&stores, None)).unwrap().0, Recounted::default());
        push_blob(&stores, "team/b", &mine);
        assert_eq!(block_on(used(&stores, &rule)).unwrap(), mine.len() as u64);
    }

    fn stores_with(rules: &str) -> Stores<crate::testing::MemMeta, crate::testing::MemBlobs> {
        let mut stores = memory_stores();
        stores.config.quotas = Quotas::parse(rules).unwrap();
        stores
    }

    fn digest(n: u8) -> Digest {
        Digest::of(Algorithm::Sha256, &[n])
    }

    #[test]
    fn a_blob_counts_once_per_namespace_and_a_push_over_the_limit_is_refused_and_not_counted() {
        let stores = stores_with("team/* 100");
        let (a, b) = (RepoName::parse("team/a").unwrap(), RepoName::parse("team/b").unwrap());
        block_on(charge(&stores, &a, &digest(1), 60)).unwrap();
        block_on(charge(&stores, &b, &digest(1), 60)).unwrap();
        assert_eq!(block_on(used(&stores, &stores.config.quotas.0[0])).unwrap(), 60, "once per namespace");
        let err = block_on(charge(&stores, &b, &digest(2), 50)).unwrap_err();
        assert_eq!(err.code, ErrorCode::Denied);
        let detail = err.detail.unwrap();
        assert!(detail.contains("team/*") && detail.contains("100 B") && detail.contains("60 B"), "{detail}");
        assert_eq!(block_on(used(&stores, &stores.config.quotas.0[0])).unwrap(), 60, "nothing counted");
        block_on(charge(&stores, &b, &digest(2), 40)).unwrap();
        assert!(block_on(check(&stores, &a, Some(&digest(3)), 1)).is_err());
        assert!(block_on(check(&stores, &a, Some(&digest(2)), 40)).is_ok(), "already counted");
        // A refused first link that raced a second link of the same blob leaves the bytes to it.
        let c = digest(9);
        // Its count went to 1 with this link and to 2 with the racer's; this link added the bytes.
        block_on(stores.meta.increment(&stores.config.quotas.0[0].blob_key(&c), 2)).unwrap();
        let quota = &stores.config.quotas.0[0];
        block_on(stores.meta.increment(&quota.bytes_key(), 95)).unwrap();
        block_on(uncharge(&stores, &c, 95, &[(quota, 0)]));
        assert_eq!(block_on(used(&stores, quota)).unwrap(), 195, "the racer's link keeps the bytes counted");
        let other = RepoName::parse("other").unwrap();
        assert!(block_on(check(&stores, &other, None, 1 << 40)).is_ok(), "no rule, no quota");
    }

    #[test]
    fn an_upload_whose_commit_fails_is_refunded_and_its_retry_counts_once() {
        let mut stores = memory_stores();
        stores.config.quotas = crate::config::quotas::Quotas::parse("r 1MiB").unwrap();
        let rule = stores.config.quotas.iter().next().unwrap().clone();
        let layer = b"a layer";
        let digest = Digest::of(Algorithm::Sha256, layer);
        // The blob's record cannot be written: the finish fails after its link was charged.
        stores.meta.fail_next_set("blob/");
        let r = send(&stores, Method::POST, &format!("/v2/r/blobs/uploads/?digest={digest}"), layer.to_vec());
        assert!(r.status.is_server_error(), "{}", r.status);
        assert_eq!(
            block_on(crate::registry::quota::used(&stores, &rule)).unwrap(),
            0,
            "the failed finish was refunded"
        );
        let head = send(&stores, Method::HEAD, &format!("/v2/r/blobs/{digest}"), vec![]);
        assert_eq!(head.status, StatusCode::NOT_FOUND, "and its link taken back");
        // The client's retry stores it, counted once.
        push_blob(&stores, "r", layer);
        assert_eq!(block_on(crate::registry::quota::used(&stores, &rule)).unwrap(), layer.len() as u64);
    }

    #[test]
    fn an_upload_that_expires_gives_its_unfinished_bytes_back() {
        let mut stores = memory_stores();
        stores.config.quotas = Quotas::parse("r 1MiB").unwrap();
        let rule = stores.config.quotas.iter().next().unwrap().clone();
        let opened = send(&stores, Method::POST, "/v2/r/blobs/uploads/", vec![]);
        assert_eq!(opened.status, StatusCode::ACCEPTED);
        let location = opened.headers["location"].to_str().unwrap().to_owned();
        assert_eq!(send(&stores, Method::PATCH, &location, vec![7; 1234]).status, StatusCode::ACCEPTED);
        assert_eq!(block_on(pending(&stores, &rule)).unwrap(), 1234);
        crate::testing::advance_clock(stores.config.upload_expiry_secs + 1);
        block_on(crate::registry::uploads::sweep(&stores));
        assert_eq!(block_on(pending(&stores, &rule)).unwrap(), 0, "the sweep cancelled it");
        assert_eq!(block_on(used(&stores, &rule)).unwrap(), 0);
    }
}
