//! The quota recount (`POST /v2/_berth/quotas/recount`, `berth-runner quota --recount`): every
//! stored blob recounted in every namespace from its links, a bounded step at a time
//! (`crate::registry::quota::reconcile_blob`; why it is safe beside pushes: that module's doc).

use crate::registry::quota::{Recounted, reconcile_blob};
use crate::registry::store::{BlobStore, MetaStore, Stores, internal};
use crate::registry::{blobs, keys};
use crate::wire::errcode::RegistryError;

/// One step of a recount: up to [`crate::lifecycle::gc::STEP_BLOBS`] blobs after `after` (an entry of
/// the blob list), each recounted. What changed, how many blobs were looked at, and where the
/// next step starts (`None`: the recount is complete).
pub async fn step<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    after: Option<String>,
) -> Result<(Recounted, u64, Option<String>), RegistryError> {
    let (entries, next) = stores
        .blobs
        .list(keys::BLOBS_INDEX_PREFIX, after.as_deref(), crate::lifecycle::gc::STEP_BLOBS)
        .await
        .map_err(internal)?;
    let mut done = Recounted::default();
    let mut examined = 0;
    for digest in entries.iter().filter_map(|entry| keys::parse_blob_index(entry)) {
        examined += 1;
        // A removed blob's counts are garbage collection's to release.
        if let Some(record) = blobs::record(stores, &digest).await? {
            let still_stored = async || Ok(blobs::record(stores, &digest).await?.is_some());
            done += reconcile_blob(stores, &digest, record.size, still_stored).await?;
        }
    }
    Ok((done, examined, next))
}
