//! Fetch claims: of the requests that miss the same upstream content at once, on any instances,
//! one fetches it and the others wait for its result (docs/consistency.md, "The mirror's cache").
//!
//! A claim is a chain of links in the blob store, each made by an exclusive create and holding
//! its owner's random id. The owner proves it is alive by a heartbeat in key-value
//! (`mirror/beat/<owner>`, the time, written before its link and again every [`BEAT_SECS`]).
//! A link whose owner has not beaten for [`STALE_SECS`] is taken over by creating the link after
//! it (`<link>-<owner>`): of several requests that find the same dead owner, the one whose create
//! succeeds fetches. A link is deleted only by the request that created it, so a live claim is
//! never removed by another (a fetch that outlives its heartbeat at worst runs beside its
//! successor's). A successful owner also deletes the dead links it passed, once the content is
//! cached and nobody walks the chain any more.

use crate::registry::store::{BlobStore, MetaStore, Outbound, StoreError, Stores, internal};
use crate::wire::errcode::RegistryError;

/// How often an owner writes its heartbeat while it fetches.
pub const BEAT_SECS: u64 = 2;
/// An owner whose heartbeat is older than this is taken to be dead (its instance stopped).
pub const STALE_SECS: u64 = 10;
/// How often a request that waits for another's fetch looks again.
const POLL_MILLIS: u64 = 100;
/// The longest a request waits for another's fetch before it fetches for itself: a fetch whose
/// client stopped reading holds its relay (and so its copy into the store) while its heartbeat
/// goes on, and must not hold every other pull of the same content with it.
pub const MAX_WAIT_SECS: u64 = 60;
/// A link that exists but cannot be read this many times in a row (a poll apart) is a create
/// that a crash left claimed but empty (the key-value provider's exclusive create is a claim):
/// removed.
const EMPTY_TRIES: usize = 20;

type Result<T> = std::result::Result<T, RegistryError>;

/// A held claim: this request fetches.
#[derive(Debug)]
pub struct Claim {
    link: String,
    owner: String,
    /// Links of dead owners walked past to reach `link`, with the owner each held.
    passed: Vec<(String, String)>,
}

/// What a request that missed the cache does next.
pub enum Turn {
    /// It fetches, holding the claim.
    Fetch(Claim),
    /// The content became ready (another request fetched it).
    Ready,
    /// It waited [`MAX_WAIT_SECS`] for another's fetch: it fetches for itself, without a claim.
    Alone,
}

fn beat_key(owner: &str) -> String {
    format!("mirror/beat/{owner}")
}

/// Wait for the content under `chain` to be `ready`, or for the turn to fetch it.
pub async fn turn<M: MetaStore, B: BlobStore, O: Outbound<B>>(
    stores: &Stores<M, B>,
    outbound: &O,
    chain: &str,
    ready: impl AsyncFn(bool) -> Result<bool>,
) -> Result<Turn> {
    let mut waited = false;
    let came = (stores.now)();
    loop {
        if ready(waited).await? {
            return Ok(Turn::Ready);
        }
        if (stores.now)().saturating_sub(came) >= MAX_WAIT_SECS {
            stores.log(format_args!(
                "mirror: waited {MAX_WAIT_SECS} s for another request's fetch ({chain}): fetching too"
            ));
            return Ok(Turn::Alone);
        }
        match take(stores, outbound, chain).await? {
            Some(claim) => {
                // A fetch that ended between the look above and this claim: its result serves.
                if ready(waited).await? {
                    release(stores, claim, false).await;
                    return Ok(Turn::Ready);
                }
                return Ok(Turn::Fetch(claim));
            }
            None => {
                waited = true;
                outbound.pause(POLL_MILLIS).await;
            }
        }
    }
}

/// The claim, if no live owner holds it.
async fn take<M: MetaStore, B: BlobStore, O: Outbound<B>>(
    stores: &Stores<M, B>,
    outbound: &O,
    chain: &str,
) -> Result<Option<Claim>> {
    let owner = hex::encode((stores.random)());
    let mut link = chain.to_owned();
    let mut passed = Vec::new();
    let mut unreadable = 0;
    let mut beat_written = false;
    loop {
        match stores.blobs.read_bytes(&link).await {
            Ok(holder) => {
                unreadable = 0;
                if alive(stores, &String::from_utf8_lossy(&holder)).await? {
                    if beat_written {
                        let _ = stores.meta.delete(&beat_key(&owner)).await;
                    }
                    return Ok(None);
                }
                // No beat: its owner died, or released it just now (the link goes first, then
                // the beat). Only a link still held by the same owner is taken to be dead.
                match stores.blobs.read_bytes(&link).await {
                    Ok(again) if again == holder => {}
                    Ok(_) | Err(StoreError::NotFound) => continue,
                    Err(e) => return Err(internal(e)),
                }
                let holder = String::from_utf8_lossy(&holder).into_owned();
                passed.push((link.clone(), holder.clone()));
                link = format!("{link}-{holder}");
            }
            Err(StoreError::NotFound) => {
                // The heartbeat first: a link is never seen without a live owner's beat.
                if !beat_written {
                    beat_at(stores, &owner).await?;
                    beat_written = true;
                }
                match stores.blobs.write_bytes(&link, owner.clone().into_bytes()).await {
                    Ok(()) => return Ok(Some(Claim { link, owner, passed })),
                    Err(StoreError::AlreadyExists) => {
                        unreadable += 1;
                        if unreadable >= EMPTY_TRIES {
                            stores.log(format_args!("mirror: fetch claim {link} was left empty by a crash: removed"));
                            let _ = stores.blobs.delete(&link).await;
                            unreadable = 0;
                        } else if unreadable > 1 {
                            outbound.pause(POLL_MILLIS).await;
                        }
                    }
                    Err(e) => return Err(internal(e)),
                }
            }
            Err(e) => return Err(internal(e)),
        }
    }
}

/// Whether `owner`'s heartbeat is recent.
async fn alive<M: MetaStore, B>(stores: &Stores<M, B>, owner: &str) -> Result<bool> {
    let Some(beat) = stores.meta.get(&beat_key(owner)).await.map_err(internal)? else { return Ok(false) };
    let at = std::str::from_utf8(&beat).ok().and_then(|b| b.parse::<u64>().ok()).unwrap_or(0);
    Ok((stores.now)().saturating_sub(at) <= STALE_SECS)
}

async fn beat_at<M: MetaStore, B>(stores: &Stores<M, B>, owner: &str) -> Result<()> {
    stores.meta.set(&beat_key(owner), (stores.now)().to_string().as_bytes()).await.map_err(internal)
}

impl Claim {
    /// Say that the owner is alive (between the steps of a fetch).
    pub async fn beat<M: MetaStore, B>(&self, stores: &Stores<M, B>) {
        // Best effort: a missed beat at worst lets a second request fetch too.
        let _ = beat_at(stores, &self.owner).await;
    }

    /// Beat every [`BEAT_SECS`] for as long as it is polled (beside a long fetch).
    pub async fn heartbeat<M: MetaStore, B: BlobStore, O: Outbound<B>>(&self, stores: &Stores<M, B>, outbound: &O) {
        loop {
            outbound.pause(BEAT_SECS * 1000).await;
            self.beat(stores).await;
        }
    }
}

/// Let the claim go: its own link, then its heartbeat. `cached`: the content is stored, so the
/// dead links walked past are removed too (nobody walks the chain of cached content).
pub async fn release<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>, claim: Claim, cached: bool) {
    let _ = stores.blobs.delete(&claim.link).await;
    let _ = stores.meta.delete(&beat_key(&claim.owner)).await;
    if cached {
        for (link, dead) in claim.passed.iter().rev() {
            // Only while the dead owner still holds it: a link freed meanwhile may have been
            // created again by a live request.
            if stores.blobs.read_bytes(link).await.is_ok_and(|holder| holder == dead.as_bytes()) {
                let _ = stores.blobs.delete(link).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{block_on, memory_stores};

    fn fetching(stores: &Stores<crate::testing::MemMeta, crate::testing::MemBlobs>) -> Option<Claim> {
        match block_on(turn(stores, &crate::registry::store::NoOutbound, "mirror/fetching/x", async |_| Ok(false)))
            .unwrap()
        {
            Turn::Fetch(claim) => Some(claim),
            Turn::Ready | Turn::Alone => None,
        }
    }

    #[test]
    fn a_live_claim_is_not_taken_and_a_released_one_is() {
        let stores = memory_stores();
        let first = fetching(&stores).unwrap();
        assert!(block_on(take(&stores, &crate::registry::store::NoOutbound, "mirror/fetching/x")).unwrap().is_none());
        block_on(release(&stores, first, false));
        let second = fetching(&stores).unwrap();
        assert_eq!(second.link, "mirror/fetching/x");
    }

    #[test]
    fn a_dead_owners_claim_is_taken_over_by_one_successor_and_never_deleted_by_another() {
        let mut stores = memory_stores();
        let dead = fetching(&stores).unwrap();
        // Its heartbeat ages past the limit: the owner's instance died.
        stores.now = || 1_000_000;
        let key = beat_key(&dead.owner);
        block_on(stores.meta.set(&key, b"1")).unwrap();
        let successor = fetching(&stores).unwrap();
        assert_eq!(successor.link, format!("mirror/fetching/x-{}", dead.owner));
        assert!(block_on(take(&stores, &crate::registry::store::NoOutbound, "mirror/fetching/x")).unwrap().is_none());
        // The first owner comes back and lets go: only its own link goes.
        block_on(release(&stores, dead, false));
        assert!(block_on(stores.blobs.read_bytes(&successor.link)).is_ok(), "the live successor keeps its claim");
        block_on(release(&stores, successor, true));
        assert!(stores.blobs.0.borrow().keys().all(|k| !k.starts_with("mirror/fetching/")), "nothing left");
        assert!(stores.meta.0.borrow().keys().all(|k| !k.starts_with("mirror/beat/")), "no heartbeat left");
    }

    #[test]
    fn a_waiter_fetches_alone_after_the_longest_wait_however_alive_the_holder_stays() {
        let stores = memory_stores();
        let held = fetching(&stores).unwrap();
        // Each look: a second goes by, and the holder beats (its client stopped reading: its
        // relay, and its copy into the store, stand still while it lives).
        let turn = block_on(turn(&stores, &crate::registry::store::NoOutbound, "mirror/fetching/x", async |_| {
            crate::testing::advance_clock(1);
            held.beat(&stores).await;
            Ok(false)
        }));
        assert!(matches!(turn.unwrap(), Turn::Alone));
    }

    #[test]
    fn a_waiter_whose_content_became_ready_does_not_fetch() {
        let stores = memory_stores();
        let _held = fetching(&stores).unwrap();
        let turn = block_on(turn(&stores, &crate::registry::store::NoOutbound, "mirror/fetching/x", async |waited| {
            Ok(waited)
        }));
        assert!(matches!(turn.unwrap(), Turn::Ready));
    }
}
