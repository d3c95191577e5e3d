//! Berth's admin API (JSON, needs the policy action `admin` for `*`; README "Admin API").
//!
//! `GET /v2/_berth/quotas`: every quota rule with its limit and usage, in bytes.
//! `POST /v2/_berth/gc[?dry_run=true][&cursor=...][&concurrency=N]`: one bounded step of garbage
//! collection.

use crate::blobs::internal;
use crate::errcode::{ErrorCode, RegistryError};
use crate::message::{Request, Response};
use crate::store::{BlobStore, MetaStore, Stores};
use crate::{gc, keys, quota};
use http::StatusCode;

/// One step of garbage collection (`crate::gc`). It starts after `cursor` when given, else where
/// the last step left off (kept in key-value, so a pass goes on across instances and restarts);
/// a dry run changes nothing and keeps no cursor, so it is driven by `cursor` alone. The answer
/// gives what was removed and the cursor of the next step (`null`: the pass is complete).
pub async fn gc<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    req: &Request<B::Incoming>,
) -> Result<Response<B::Outgoing>, RegistryError> {
    let dry_run = match req.query_param("dry_run").as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return Err(RegistryError::new(ErrorCode::Unsupported, format!("dry_run is true or false, not {other:?}"))
                .with_status(StatusCode::BAD_REQUEST));
        }
    };
    let concurrency = match req.query_param("concurrency") {
        None => gc::DEFAULT_CONCURRENCY,
        Some(n) => match n.parse::<usize>() {
            Ok(n @ 1..=gc::MAX_CONCURRENCY) => n,
            _ => {
                return Err(RegistryError::new(
                    ErrorCode::Unsupported,
                    format!("concurrency is a number of blobs from 1 to {}, not {n:?}", gc::MAX_CONCURRENCY),
                )
                .with_status(StatusCode::BAD_REQUEST));
            }
        },
    };
    let after = match req.query_param("cursor") {
        Some(cursor) => Some(cursor).filter(|c| !c.is_empty()),
        None if dry_run => None,
        None => stores
            .meta
            .get(keys::GC_CURSOR)
            .await
            .map_err(internal)?
            .and_then(|c| String::from_utf8(c).ok())
            .filter(|c| !c.is_empty()),
    };
    let step = gc::step(stores, after, dry_run, concurrency).await?;
    if !dry_run {
        stores.count("gc_blobs_examined", step.examined);
        stores.count("gc_blobs_removed", step.collected.len() as u64);
        stores.count("gc_bytes_reclaimed", step.bytes());
        stores.count("retention_tags_removed", step.untagged.len() as u64);
        stores.count("retention_manifests_deleted", step.deleted_manifests.len() as u64);
    }
    if !dry_run {
        let next = step.next.clone().unwrap_or_default();
        stores.meta.set(keys::GC_CURSOR, next.as_bytes()).await.map_err(internal)?;
    }
    let collected: Vec<_> = step
        .collected
        .iter()
        .map(|(digest, size)| serde_json::json!({ "digest": digest.to_string(), "size": size }))
        .collect();
    let body = serde_json::json!({
        "dryRun": dry_run,
        "examined": step.examined,
        "collected": collected,
        "bytes": step.bytes(),
        "untagged": step.untagged,
        "deletedManifests": step.deleted_manifests,
        "next": step.next,
    });
    Ok(Response::new(StatusCode::OK).json(serde_json::to_vec(&body).expect("json")))
}

pub async fn quotas<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>) -> Result<Response<B::Outgoing>, RegistryError> {
    let mut rules = Vec::new();
    for rule in stores.config.quotas.iter() {
        let used = quota::used(stores, rule).await?;
        let pending = quota::pending(stores, rule).await?;
        rules.push(serde_json::json!({
            "repositories": rule.pattern,
            "limit": rule.limit,
            "used": used,
            "uploading": pending,
        }));
    }
    let body = serde_json::to_vec(&serde_json::json!({ "quotas": rules })).expect("json");
    Ok(Response::new(StatusCode::OK).json(body))
}
