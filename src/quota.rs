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
//! Deleting a blob only unlinks it and frees nothing, so usage does not go down. Garbage
//! collection, once it reclaims bytes, gives them back.

use crate::auth::policy::glob_match;
use crate::digest::{Algorithm, Digest};
use crate::errcode::{ErrorCode, RegistryError};
use crate::name::RepoName;
use crate::store::{MetaStore, StoreError, Stores};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub pattern: String,
    pub limit: u64,
}

impl Quota {
    /// The namespace's key part: stable while the rule's glob is (its position may change).
    fn id(&self) -> String {
        Digest::of(Algorithm::Sha256, self.pattern.as_bytes()).hex()[..32].to_owned()
    }

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
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quotas(Vec<Quota>);

/// `10GiB`, `500 MiB`, `1.5G`, `2048` (bytes): binary units, with or without the `i` and `B`.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = (&text[..split], text[split..].trim().to_ascii_lowercase());
    let number: f64 = number.parse().ok().filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let scale = match unit.trim_end_matches('b').trim_end_matches('i') {
        "" => 1u64,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    let bytes = number * scale as f64;
    (bytes <= u64::MAX as f64 / 2.0).then_some(bytes as u64)
}

/// Bytes for people: `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

impl Quotas {
    /// Rules separated by newlines or `;`; empty: no quota.
    pub fn parse(text: &str) -> Result<Quotas, String> {
        let mut quotas = Vec::new();
        for (number, entry) in text.split(['\n', ';']).map(str::trim).enumerate() {
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let Some((pattern, size)) = entry.split_once(char::is_whitespace) else {
                return Err(format!("entry {}: expected <repository-glob> <size>, e.g. team-a/* 10GiB", number + 1));
            };
            let limit = parse_size(size)
                .ok_or_else(|| format!("entry {}: {:?} is not a size (e.g. 500MiB, 10GiB)", number + 1, size.trim()))?;
            quotas.push(Quota { pattern: pattern.to_owned(), limit });
        }
        Ok(Quotas(quotas))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Quota> {
        self.0.iter()
    }

    fn applying<'a>(&'a self, name: &RepoName) -> impl Iterator<Item = &'a Quota> + use<'a> {
        let name = name.as_str().to_owned();
        self.0.iter().filter(move |q| glob_match(&q.pattern, &name))
    }
}

fn store_error(e: StoreError) -> RegistryError {
    crate::blobs::internal(e)
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
pub async fn charge<'a, M: MetaStore, B>(
    stores: &'a Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
    size: u64,
) -> Result<Charged<'a>, RegistryError> {
    let mut charged: Vec<(&Quota, bool)> = Vec::new();
    for quota in stores.config.quotas.applying(name) {
        let links = match stores.meta.increment(&quota.blob_key(digest), 1).await {
            Ok(links) => links,
            Err(e) => {
                uncharge(stores, digest, size, &charged).await;
                return Err(store_error(e));
            }
        };
        let first = links == 1;
        if !first {
            charged.push((quota, false));
            continue;
        }
        let total = match stores.meta.increment(&quota.bytes_key(), size as i64).await {
            Ok(total) => total.max(0) as u64,
            Err(e) => {
                charged.push((quota, false)); // its link is counted, its bytes are not
                uncharge(stores, digest, size, &charged).await;
                return Err(store_error(e));
            }
        };
        charged.push((quota, true));
        if total > quota.limit {
            uncharge(stores, digest, size, &charged).await;
            stores.count("quota_refusals", 1);
            return Err(exceeded(quota, total.saturating_sub(size), size));
        }
    }
    Ok(Charged(charged))
}

/// What one [`charge`] counted, in each namespace: the link, and whether its bytes too.
#[derive(Debug)]
pub struct Charged<'a>(Vec<(&'a Quota, bool)>);

/// Take back a charge whose link was not written.
pub async fn refund<M: MetaStore, B>(stores: &Stores<M, B>, digest: &Digest, size: u64, charged: &Charged<'_>) {
    uncharge(stores, digest, size, &charged.0).await;
}

/// Take back a charge whose link was taken back because garbage collection removed the blob.
/// When the count returns to 0 the bytes go, even if this link did not add them: the removal's
/// release may have read the count before this link's charge and left it one above 0, keeping
/// the bytes for this link (`release_blob`).
pub async fn refund_removed<M: MetaStore, B>(stores: &Stores<M, B>, digest: &Digest, size: u64, charged: &Charged<'_>) {
    for (quota, _) in &charged.0 {
        let Ok(left) = stores.meta.increment(&quota.blob_key(digest), -1).await else { continue };
        if left < 0 {
            // The removal's release already took this link's count (it read the count after
            // the charge): undone, so that the next first link counts as first.
            let _ = stores.meta.increment(&quota.blob_key(digest), 1).await;
        } else if left == 0 {
            let _ = stores.meta.increment(&quota.bytes_key(), -(size as i64)).await;
        }
    }
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
            if crate::store::counter_value(&raw) <= 0 {
                break;
            }
            // 0 in the form the store keeps its counters: decimal text (Redis) or 8 bytes.
            let zero = if raw.iter().all(u8::is_ascii_digit) { b"0".to_vec() } else { 0i64.to_le_bytes().to_vec() };
            match stores.meta.compare_and_swap(&key, &raw, &zero).await {
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
/// too low). The bytes go back only with the last link: a link of the same blob that raced this
/// one (and was counted free, as not the first) keeps them.
async fn uncharge<M: MetaStore, B>(stores: &Stores<M, B>, digest: &Digest, size: u64, charged: &[(&Quota, bool)]) {
    for (quota, added_bytes) in charged {
        let Ok(left) = stores.meta.increment(&quota.blob_key(digest), -1).await else { continue };
        if *added_bytes && left == 0 {
            let _ = stores.meta.increment(&quota.bytes_key(), -(size as i64)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::api::{push_blob, send};
    use crate::testing::{block_on, memory_stores};
    use http::{Method, StatusCode};

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("2048"), Some(2048));
        assert_eq!(parse_size("10GiB"), Some(10 << 30));
        assert_eq!(parse_size("500 MiB"), Some(500 << 20));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("5 parsecs"), None);
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(12), "12 B");
    }

    /// Key-value that yields once before every call, so that two futures driven together
    /// interleave call by call (as two collectors on two instances do).
    #[derive(Default)]
    struct Interleaving(crate::testing::MemMeta);

    async fn yield_once() {
        let mut yielded = false;
        std::future::poll_fn(|_| {
            if std::mem::replace(&mut yielded, true) { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
        })
        .await
    }

    impl MetaStore for Interleaving {
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            yield_once().await;
            self.0.get(key).await
        }
        async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
            yield_once().await;
            self.0.set(key, value).await
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            yield_once().await;
            self.0.delete(key).await
        }
        async fn compare_and_swap(&self, key: &str, expected: &[u8], new: &[u8]) -> Result<bool, StoreError> {
            yield_once().await;
            self.0.compare_and_swap(key, expected, new).await
        }
        async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
            yield_once().await;
            self.0.increment(key, delta).await
        }
    }

    #[test]
    fn two_collectors_releasing_one_removed_blob_give_its_bytes_back_once_and_never_go_below_zero() {
        let mut stores = Stores {
            meta: Interleaving::default(),
            blobs: crate::testing::MemBlobs::default(),
            random: crate::testing::counter_random,
            now: crate::testing::test_clock,
            config: Default::default(),
            request_id: crate::store::RequestId::made([1; 16]),
            events: Default::default(),
        };
        stores.config.quotas = Quotas::parse("team/* 1000").unwrap();
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

    #[test]
    fn rules_are_refused_by_number() {
        assert_eq!(Quotas::parse("").unwrap(), Quotas::default());
        assert!(Quotas::parse("team-a/*").unwrap_err().contains("entry 1"));
        assert!(Quotas::parse("a 1GiB; b lots").unwrap_err().contains("entry 2"));
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
        block_on(uncharge(&stores, &c, 95, &[(quota, true)]));
        assert_eq!(block_on(used(&stores, quota)).unwrap(), 195, "the racer's link keeps the bytes counted");
        let other = RepoName::parse("other").unwrap();
        assert!(block_on(check(&stores, &other, None, 1 << 40)).is_ok(), "no rule, no quota");
    }

    #[test]
    fn an_upload_whose_commit_fails_is_refunded_and_its_retry_counts_once() {
        let mut stores = memory_stores();
        stores.config.quotas = crate::quota::Quotas::parse("r 1MiB").unwrap();
        let rule = stores.config.quotas.iter().next().unwrap().clone();
        let layer = b"a layer";
        let digest = Digest::of(Algorithm::Sha256, layer);
        // The blob's record cannot be written: the finish fails after its link was charged.
        stores.meta.fail_next_set("blob/");
        let r = send(&stores, Method::POST, &format!("/v2/r/blobs/uploads/?digest={digest}"), layer.to_vec());
        assert!(r.status.is_server_error(), "{}", r.status);
        assert_eq!(block_on(crate::quota::used(&stores, &rule)).unwrap(), 0, "the failed finish was refunded");
        let head = send(&stores, Method::HEAD, &format!("/v2/r/blobs/{digest}"), vec![]);
        assert_eq!(head.status, StatusCode::NOT_FOUND, "and its link taken back");
        // The client's retry stores it, counted once.
        push_blob(&stores, "r", layer);
        assert_eq!(block_on(crate::quota::used(&stores, &rule)).unwrap(), layer.len() as u64);
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
        block_on(crate::uploads::sweep(&stores));
        assert_eq!(block_on(pending(&stores, &rule)).unwrap(), 0, "the sweep cancelled it");
        assert_eq!(block_on(used(&stores, &rule)).unwrap(), 0);
    }
}
