//! Events (`crate::registry::events`) at the HTTP layer: which requests make which event, and the
//! two endpoints of the sender.
//!
//! `POST /v2/_berth/events/deliver`: one bounded delivery step, for anyone (berth-runner calls it
//! every second; under Spin a cron or any client may). It answers `202` and nothing else: it
//! sends only what the outbox holds, to the configured endpoints, so it can neither leak nor
//! invent anything. `GET /v2/_berth/events` (admin): each endpoint's delivery state.

use crate::auth::Identity;
use crate::config::events::Action;
use crate::registry::events::{self, Event};
use crate::registry::store::{BlobStore, MetaStore, Outbound, Stores};
use crate::wire::errcode::RegistryError;
use crate::wire::message::{CONTENT_DIGEST, Request, Response};
use crate::wire::reference::Reference;
use crate::wire::route::Route;
use http::{Method, StatusCode, header};

pub const DELIVER_PATH: &str = "/v2/_berth/events/deliver";

pub async fn deliver<M: MetaStore, B: BlobStore, O: Outbound<B>, I>(
    stores: &Stores<M, B>,
    outbound: &O,
    req: &Request<I>,
) -> Result<Response<B::Outgoing>, RegistryError> {
    if req.method != Method::POST {
        return Err(super::method_not_allowed(&req.method));
    }
    events::deliver(stores, outbound).await?;
    Ok(Response::new(StatusCode::ACCEPTED).empty())
}

/// Each endpoint's delivery state, as stored, with the number of its newest event.
pub async fn state<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>) -> Result<Response<B::Outgoing>, RegistryError> {
    let mut endpoints = Vec::new();
    for endpoint in stores.config.events.iter() {
        endpoints.push(events::outbox(stores, &endpoint.name).await?);
    }
    let body = serde_json::to_vec(&serde_json::json!({ "endpoints": endpoints })).expect("json");
    Ok(Response::new(StatusCode::OK).json(body))
}

/// What a request said about itself, read before its handler takes it.
pub struct Asked {
    method: Method,
    route: Route,
    origin: Option<String>,
    addr: Option<String>,
    user_agent: Option<String>,
}

impl Asked {
    pub fn of<I>(req: &Request<I>, route: &Route) -> Asked {
        Asked {
            method: req.method.clone(),
            route: route.clone(),
            origin: req.origin.clone(),
            addr: req.header("spin-client-addr").map(str::to_owned),
            user_agent: req.header(header::USER_AGENT).map(str::to_owned),
        }
    }
}

/// Record the events of a request that succeeded, before it is acknowledged: a manifest pushed
/// (one event per tag), pulled (when some endpoint wants pulls), deleted; a tag or a blob
/// deleted.
pub async fn record_request<M: MetaStore, B: BlobStore, S>(
    stores: &Stores<M, B>,
    identity: &Identity,
    asked: &Asked,
    response: &Response<S>,
) -> Result<(), RegistryError> {
    if stores.config.events.is_empty() {
        return Ok(());
    }
    let answered = |name: http::HeaderName| response.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (action, name, reference) = match (&asked.method, &asked.route, response.status) {
        (&Method::PUT, Route::Manifest(name, reference), StatusCode::CREATED) => (Action::Push, name, Some(reference)),
        (&Method::GET, Route::Manifest(name, reference), StatusCode::OK) if stores.config.events.want(Action::Pull) => {
            (Action::Pull, name, Some(reference))
        }
        (&Method::DELETE, Route::Manifest(name, reference), StatusCode::ACCEPTED) => {
            (Action::Delete, name, Some(reference))
        }
        (&Method::DELETE, Route::Blob(name, _), StatusCode::ACCEPTED) => (Action::Delete, name, None),
        _ => return Ok(()),
    };
    let mut event = Event::new(stores, action, name.as_str());
    event.actor = identity.subject().map(str::to_owned);
    event.origin = asked.origin.clone();
    event.addr = asked.addr.clone();
    event.method = Some(asked.method.as_str().to_owned());
    event.user_agent = asked.user_agent.clone();
    event.digest = answered(CONTENT_DIGEST);
    if let Route::Blob(_, digest) = &asked.route {
        event.digest = Some(digest.to_string());
    }
    // A pushed or pulled manifest's type and size as stored (a push may have no Content-Type:
    // the type is then the manifest's own `mediaType`).
    let digest = event.digest.as_deref().and_then(|d| crate::wire::digest::Digest::parse(d).ok());
    if let (Action::Push | Action::Pull, Some(digest)) = (action, &digest)
        && let Some(record) = crate::registry::manifests::record(stores, name, digest).await?
    {
        (event.media_type, event.size) = (Some(record.media_type), Some(record.size));
    }
    let mut tags = Vec::new();
    match reference.map(|r| Reference::parse(r)) {
        Some(Ok(Reference::Tag(tag))) => tags.push(tag.as_str().to_owned()),
        Some(Ok(Reference::Digest(digest))) if event.digest.is_none() => event.digest = Some(digest.to_string()),
        _ => {}
    }
    // A push by digest with `?tag=`: the tags applied, one header each.
    tags.extend(response.headers.get_all("oci-tag").iter().filter_map(|v| v.to_str().ok()).map(str::to_owned));
    if tags.is_empty() {
        return events::record(stores, action, &event).await;
    }
    for tag in tags {
        let mut tagged = event.clone();
        tagged.id = hex::encode((stores.random)());
        tagged.tag = Some(tag);
        events::record(stores, action, &tagged).await?;
    }
    Ok(())
}
