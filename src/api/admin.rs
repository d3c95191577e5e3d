//! Berth's admin API (JSON, needs the policy action `admin` for `*`; README "Admin API").
//!
//! `GET /v2/_berth/quotas`: every quota rule with its limit and usage, in bytes.
//! `POST /v2/_berth/quotas/recount[?cursor=...]`: one bounded step of a recount of quota usage
//! from the links.
//! `POST /v2/_berth/storage/check`: the blob store contract, checked against the configured store.
//! `POST /v2/_berth/gc[?dry_run=true][&cursor=...][&concurrency=N]`: one bounded step of garbage
//! collection.

use crate::lifecycle::gc;
use crate::registry::store::{BlobStore, MetaStore, Stores, internal};
use crate::registry::{keys, quota};
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::message::{Request, Response};
use http::StatusCode;

/// One step of garbage collection (`crate::lifecycle::gc`). It starts after `cursor` when given, else where
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
    let given = req.query_param("cursor");
    let after = match &given {
        Some(cursor) => Some(cursor.clone()).filter(|c| !c.is_empty()),
        None if dry_run => None,
        None => stores
            .meta
            .get(keys::GC_CURSOR)
            .await
            .map_err(internal)?
            .and_then(|c| String::from_utf8(c).ok())
            .filter(|c| !c.is_empty()),
    };
    let step = match gc::step(stores, after, dry_run, concurrency).await {
        // A kept cursor this version cannot read (one an earlier version wrote): a new pass.
        Err(err) if given.is_none() && err.code == ErrorCode::Unsupported => {
            gc::step(stores, None, dry_run, concurrency).await?
        }
        step => step?,
    };
    if !dry_run {
        stores.count("gc_blobs_examined", step.examined);
        stores.count("gc_blobs_removed", step.collected.len() as u64);
        stores.count("gc_bytes_reclaimed", step.bytes());
        stores.count("retention_tags_removed", step.untagged.len() as u64);
        stores.count("retention_manifests_deleted", step.deleted_manifests.len() as u64);
        if step.next.is_none() {
            stores.count("gc_passes_completed", 1);
        }
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
        "retentionExamined": step.retention_examined,
        "next": step.next,
    });
    Ok(Response::new(StatusCode::OK).json(serde_json::to_vec(&body).expect("json")))
}

/// Registry-wide figures kept in the stores, in Prometheus' text format, for hosts with no
/// metrics listener of their own (Spin, the edge): each quota rule's limit, its stored bytes and
/// its unfinished uploads' bytes. Per-request figures are the host's (`berth-runner
/// --metrics-listen`). Encoded by `prometheus-client`, the Prometheus project's Rust client.
pub async fn metrics<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
) -> Result<Response<B::Outgoing>, RegistryError> {
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    type Rules = Family<Vec<(&'static str, String)>, Gauge>;
    let (limit, used, uploading) = (Rules::default(), Rules::default(), Rules::default());
    for usage in quota::usage(stores).await? {
        let labels = vec![("repositories", usage.rule.pattern.clone())];
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        limit.get_or_create(&labels).set(gauge(usage.rule.limit));
        used.get_or_create(&labels).set(gauge(usage.used));
        uploading.get_or_create(&labels).set(gauge(usage.uploading));
    }
    let rules = Gauge::<i64>::default();
    rules.set(stores.config.quotas.iter().count() as i64);
    let mut registry = prometheus_client::registry::Registry::with_prefix("berth_quota");
    registry.register("rules", "The quota rules configured (quotas)", rules);
    registry.register("limit_bytes", "The bytes a quota rule allows its repositories", limit);
    registry.register("used_bytes", "The bytes of the blobs linked into a quota rule's repositories", used);
    registry.register("uploading_bytes", "The bytes of unfinished uploads into a quota rule's repositories", uploading);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .map_err(|e| RegistryError::new(ErrorCode::Internal, format!("encoding the metrics: {e}")))?;
    // Prometheus' text format (0.0.4): every figure here is a gauge, so the OpenMetrics text
    // differs from it only by its last line.
    let text = text.strip_suffix("# EOF\n").unwrap_or(&text).to_owned();
    Ok(Response::new(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
        .full(text.into_bytes()))
}

pub async fn quotas<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>) -> Result<Response<B::Outgoing>, RegistryError> {
    let rules: Vec<_> = quota::usage(stores)
        .await?
        .iter()
        .map(|usage| {
            serde_json::json!({
                "repositories": usage.rule.pattern,
                "limit": usage.rule.limit,
                "used": usage.used,
                "uploading": usage.uploading,
            })
        })
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "quotas": rules })).expect("json");
    Ok(Response::new(StatusCode::OK).json(body))
}

/// One step of a quota recount (`crate::lifecycle::recount::step`) from `cursor` (none: the first
/// blob). The answer gives the bytes released and restored, and the cursor of the next step
/// (`null`: the recount is complete). Driven by its caller alone: a recount is rare, asked for
/// by an operator (`berth-runner quota --recount`), so it keeps no cursor of its own.
pub async fn recount<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    req: &Request<B::Incoming>,
) -> Result<Response<B::Outgoing>, RegistryError> {
    let after = req.query_param("cursor").filter(|c| !c.is_empty());
    if let Some(cursor) = &after
        && keys::parse_blob_index(cursor).is_none()
    {
        return Err(RegistryError::new(ErrorCode::Unsupported, format!("{cursor:?} is not a recount cursor"))
            .with_status(StatusCode::BAD_REQUEST));
    }
    let (done, examined, next) = crate::lifecycle::recount::step(stores, after).await?;
    stores.count("quota_recount_bytes_released", done.released);
    stores.count("quota_recount_bytes_restored", done.restored);
    let body = serde_json::json!({
        "examined": examined,
        "released": done.released,
        "restored": done.restored,
        "next": next,
    });
    Ok(Response::new(StatusCode::OK).json(serde_json::to_vec(&body).expect("json")))
}

/// The blob store contract (`crate::registry::store_contract`), checked against the store this
/// registry is configured with: each rule, and what the store did where it broke one. 200 either
/// way (the check ran); `ok` says whether every rule held.
pub async fn storage_check<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>) -> Response<B::Outgoing> {
    let checks = crate::registry::store_contract::check(stores).await;
    let ok = checks.iter().all(|c| c.broken.is_none());
    if !ok {
        stores.log(format_args!("storage check: the blob store broke its contract: {checks:?}"));
    }
    let checks: Vec<_> = checks
        .iter()
        .map(|c| serde_json::json!({ "rule": c.rule, "ok": c.broken.is_none(), "broken": c.broken }))
        .collect();
    let body = serde_json::json!({ "ok": ok, "checks": checks });
    Response::new(StatusCode::OK).json(serde_json::to_vec(&body).expect("json"))
}
