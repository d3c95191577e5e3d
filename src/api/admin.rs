//! Berth's admin API (JSON, needs the policy action `admin` for `*`; README "Admin API").
//!
//! `GET /v2/_berth/quotas`: every quota rule with its limit and usage, in bytes.

use crate::errcode::RegistryError;
use crate::message::Response;
use crate::quota;
use crate::store::{BlobStore, MetaStore, Stores};
use http::StatusCode;

pub async fn quotas<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>) -> Result<Response<B::Outgoing>, RegistryError> {
    let mut rules = Vec::new();
    for rule in stores.config.quotas.iter() {
        let used = quota::used(stores, rule).await?;
        rules.push(serde_json::json!({ "repositories": rule.pattern, "limit": rule.limit, "used": used }));
    }
    let body = serde_json::to_vec(&serde_json::json!({ "quotas": rules })).expect("json");
    Ok(Response::new(StatusCode::OK).json(body))
}
