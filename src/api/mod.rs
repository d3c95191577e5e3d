//! HTTP endpoints: one file per resource. Each handler takes the parsed route and the request,
//! calls the registry logic, and builds the response; errors become the OCI envelope here, once.
//! Access control is one check between parsing the route and running its handler
//! ([`crate::auth::authorize`]); the token endpoint is a handler of its own ([`token`]).

mod admin;
mod base;
mod blobs;
mod catalog;
mod cursor;
mod events;
mod health;
mod listing;
mod login;
pub(crate) mod manifests;
mod mirror;
mod referrers;
mod tags;
mod token;
mod ui;
mod uploads;

use crate::auth::{self, Denied};
use crate::registry::store::{BlobStore, MetaStore, NoOutbound, Outbound, StoreError, Stores, internal};
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::message::{Body, Request, Response};
use crate::wire::route::Route;
use http::Method;

pub use mirror::MIRROR_HEADER;

/// Work that goes on after the response has started (a mirrored blob's copy into the store,
/// which the response's body streams beside): the host runs it to the end.
pub type Background<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;

/// Answer one request, without outbound HTTP (nothing is mirrored).
pub async fn handle<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    req: Request<B::Incoming>,
) -> Response<B::Outgoing> {
    handle_with(stores, &NoOutbound, req).await.0
}

/// Answer one request. Never fails: every error is a response with an OCI error body. The
/// background work, when there is some, must be run once the response is on its way.
pub async fn handle_with<'a, M: MetaStore, B: BlobStore, O: Outbound<B>>(
    stores: &'a Stores<M, B>,
    outbound: &'a O,
    req: Request<B::Incoming>,
) -> (Response<B::Outgoing>, Option<Background<'a>>) {
    let id = stores.request_id.clone();
    let counted = req.header(COUNT_EVENTS).is_some_and(|v| v == "1");
    let (response, background) = match dispatch(stores, outbound, req).await {
        Ok(answer) => answer,
        Err(err) => (Response::error(&as_told(stores, &err)), None),
    };
    // A request that recorded events sends them once its answer is on its way (a receiver that
    // is down or slow delays nothing the client waits for).
    let background = match background {
        _ if stores.events.get("events_recorded") == 0 => background,
        None => Some(Box::pin(deliver_events(stores, outbound)) as Background<'a>),
        Some(first) => Some(Box::pin(async move {
            first.await;
            deliver_events(stores, outbound).await;
        }) as Background<'a>),
    };
    let mut response = quote_request(response, &id).header(REQUEST_ID, id.as_str());
    if let Some(validators) = keep_with(stores, &response, background.is_some()) {
        response = response.header(READ_SET, validators);
    }
    if counted {
        let summary = stores.events.summary();
        if !summary.is_empty() {
            response = response.header(EVENTS, summary);
        }
    }
    (response, background)
}

/// The validators a host keeps this answer with (`crate::registry::read_set`): only a plain 200
/// that the route said depends on its reads alone, that wrote nothing, counted nothing, and
/// leaves no work behind.
fn keep_with<M: MetaStore, B, S>(stores: &Stores<M, B>, response: &Response<S>, background: bool) -> Option<String> {
    let reads = stores.meta.read_set()?;
    if response.status != http::StatusCode::OK || background || !stores.events.summary().is_empty() {
        return None;
    }
    reads.validators()
}

async fn deliver_events<M: MetaStore, B: BlobStore, O: Outbound<B>>(stores: &Stores<M, B>, outbound: &O) {
    if let Err(err) = crate::registry::events::deliver(stores, outbound).await {
        stores.log(format_args!("events: delivery failed: {}", err.detail.as_deref().unwrap_or(err.code.message())));
    }
}

/// Every error body's detail quotes its request (`... (request <id>)`), whichever handler made
/// it, so the text a user pastes into a report finds the log lines; the message clients print
/// stays as it was.
fn quote_request<S>(response: Response<S>, id: &crate::registry::store::RequestId) -> Response<S> {
    if !(response.status.is_client_error() || response.status.is_server_error()) {
        return response;
    }
    let Body::Full(bytes) = &response.body else { return response };
    let Ok(mut envelope) = serde_json::from_slice::<serde_json::Value>(bytes) else { return response };
    let Some(entries) = envelope.get_mut("errors").and_then(serde_json::Value::as_array_mut) else { return response };
    let said = format!("request {}", id.as_str());
    for entry in entries {
        let quoted = match entry.get("detail").and_then(serde_json::Value::as_str) {
            Some(detail) if detail.contains(&said) => continue,
            Some(detail) => format!("{detail} ({said})"),
            None => said.clone(),
        };
        entry["detail"] = serde_json::Value::String(quoted);
    }
    response.full(serde_json::to_vec(&envelope).expect("a JSON value serializes"))
}

/// Set (to `1`) by berth-runner on every request, replacing any the client sent: answer with
/// [`EVENTS`]. Under Spin nobody sets it, and no answer says more than before.
pub const COUNT_EVENTS: &str = "x-berth-count-events";

/// The events a request counted (`uploads_finished=1,gc_blobs_removed=3`), for the host's
/// metrics; the host removes it before the answer goes out.
pub const EVENTS: http::HeaderName = http::HeaderName::from_static("x-berth-events");

/// Set (to `1`) by berth-runner on every request, replacing any the client sent: record the
/// key-value reads the answer is made from, and answer with [`READ_SET`] when the answer may
/// be kept (`crate::registry::read_set`). Under Spin nobody sets it.
pub const RECORD_READS: &str = "x-berth-record-reads";

/// What a keepable answer was read from: `<store label> [@<until>] <key>=<sha256 of the
/// value>|- ...` (`@`: a token's expiry); the host removes it before the answer goes out.
pub const READ_SET: http::HeaderName = http::HeaderName::from_static("x-berth-read-set");

/// Every answer names its request: the id to quote in a report, found in every log line.
pub const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The answer to an error. An internal error's detail (a store's message, an object's key, a
/// variable's name) goes to the log, under the request's id, and the client gets the id only, to
/// quote in a report; errors said for the user (`told`) pass as they are.
pub fn error_response<S>(err: &RegistryError, id: &crate::registry::store::RequestId) -> Response<S> {
    Response::error(&internal_as_told(err, id))
}

/// The error as a client (or the web UI's viewer) is told it: a backend's unavailability and an
/// internal error are logged, and the client gets the request id to find them in the log.
pub fn as_told<M, B>(stores: &Stores<M, B>, err: &RegistryError) -> RegistryError {
    match err.code {
        // Said for the user (an upstream the mirror cannot reach): passed on as it is.
        ErrorCode::Unavailable if err.told => err.clone(),
        ErrorCode::Unavailable => {
            // The backend's message (which may name hosts) goes to the log, not to clients.
            stores.log(format_args!("storage unavailable: {}", err.detail.as_deref().unwrap_or("?")));
            stores.count("storage_unavailable", 1);
            let said = format!(
                "a storage backend of the registry is unavailable: try again later (request {})",
                stores.request_id.as_str()
            );
            RegistryError::new(ErrorCode::Unavailable, said)
        }
        _ => internal_as_told(err, &stores.request_id),
    }
}

/// An internal error's detail goes to the log only; the client gets the request id.
fn internal_as_told(err: &RegistryError, id: &crate::registry::store::RequestId) -> RegistryError {
    if err.code != ErrorCode::Internal || err.told {
        return err.clone();
    }
    eprintln!("berth: internal error: {} (request {})", err.detail.as_deref().unwrap_or("?"), id.as_str());
    RegistryError::new(
        ErrorCode::Internal,
        format!("internal error (request {}): the registry's log says what failed", id.as_str()),
    )
}

async fn dispatch<'a, M: MetaStore, B: BlobStore, O: Outbound<B>>(
    stores: &'a Stores<M, B>,
    outbound: &'a O,
    req: Request<B::Incoming>,
) -> Result<(Response<B::Outgoing>, Option<Background<'a>>), RegistryError> {
    if token::serves(&req.path) {
        return Ok((token::handle(stores, req).await?, None));
    }
    // Before any authentication: probes carry no credentials, and answer nothing private.
    if health::serves(&req.path) {
        return Ok((health::handle(stores, outbound, &req).await?, None));
    }
    // The web UI checks access itself, page by page, for the session's user (`ui`).
    if ui::serves(&req.path) {
        return Ok((ui::handle(stores, req).await?, None));
    }
    // Anyone may ask for a delivery step: it sends only what the outbox holds (`events`).
    if req.path == events::DELIVER_PATH {
        return Ok((events::deliver(stores, outbound, &req).await?, None));
    }
    let route = namespaced_route(stores, &req, Route::parse(&req.path)?)?;
    // Before any password is checked: a name too long to be namespaced is the client's mistake.
    let mirrored = default_upstream_candidate(stores, &req, &route)?;
    let keepable = keepable(&req, &route) && mirrored.is_none();
    // Basic mode checks a password on every request that carries one: throttled like logins.
    let attempt = match stores.config.auth.mode {
        auth::config::Mode::Basic => req
            .header(http::header::AUTHORIZATION)
            .and_then(auth::password::basic_credentials)
            .map(|(user, password)| login::Attempt::new(stores, &user, &password, &req.headers)),
        _ => None,
    };
    if let Some(attempt) = &attempt
        && let Some(retry_after) = login::reserve(stores, attempt).await?
    {
        stores.count("logins_throttled", 1);
        return Ok((login::too_many(retry_after), None));
    }
    let decided = async {
        let (config, now, local_need) = (&stores.config.auth, (stores.now)(), auth::need(&req.method, &route));
        let Some(mirrored) = mirrored else {
            return Ok::<_, RegistryError>((route, auth::authorize(config, &req, &local_need, now)));
        };
        // Whether the repository is here is looked at only for a caller who may pull it here:
        // to anyone else the answer is the upstream's, whether or not it is here.
        let (here, there) = auth::authorize_both(config, &req, &local_need, &auth::need(&req.method, &mirrored), now);
        let name = route.name().expect("a candidate names a repository");
        if here.is_ok() && crate::registry::blobs::marked(stores, &crate::registry::keys::repo_marker(name)).await? {
            Ok((route, here))
        } else {
            Ok((mirrored, there))
        }
    }
    .await;
    // A wrong password keeps its count; anything else gives it back.
    if let Some(attempt) = &attempt {
        login::settle(stores, attempt, matches!(&decided, Ok((_, Err(denied))) if denied.wrong_password)).await?;
    }
    let (route, identity) = match decided? {
        (route, Ok(identity)) => (route, identity),
        (_, Err(denied)) => return Ok((refusal(&denied), None)),
    };
    if let Some(name) = route.name()
        && let Some(target) = stores.config.mirrors.target(name)
    {
        return match (req.method.clone(), route.clone()) {
            (Method::GET | Method::HEAD, Route::Manifest(name, reference)) => {
                Ok((mirror::manifest(stores, outbound, &target, &name, &reference, &req.method).await?, None))
            }
            (Method::GET | Method::HEAD, Route::Blob(name, digest)) => {
                mirror::blob(stores, outbound, &target, name, digest, &req).await
            }
            (Method::GET, Route::Tags(name)) => Ok((tags::list(stores, &name, &req).await?, None)),
            (Method::GET, Route::Referrers(name, digest)) => {
                Ok((referrers::list(stores, &name, &digest, &req).await?, None))
            }
            (_, route) => Err(crate::mirror::read_only(route.name().expect("named"), target.upstream)),
        };
    }
    if keepable && let Some(reads) = stores.meta.read_set() {
        reads.mark_keepable();
        // A token's answer is right while the token is: until it expires.
        if let Some(expiry) = identity.expires_at() {
            reads.keep_until(expiry);
        }
    }
    let asked = events::Asked::of(&req, &route);
    let response = match (req.method.clone(), route) {
        (Method::GET | Method::HEAD, Route::Base) => Ok(base::get()),
        (Method::GET, Route::Catalog) => catalog::list(stores, &identity, &req).await,
        (Method::GET, Route::Tags(name)) => tags::list(stores, &name, &req).await,
        (Method::GET, Route::Manifest(name, reference)) => manifests::get(stores, &name, &reference).await,
        (Method::HEAD, Route::Manifest(name, reference)) => manifests::head(stores, &name, &reference).await,
        (Method::PUT, Route::Manifest(name, reference)) => manifests::put(stores, &name, &reference, req).await,
        (Method::DELETE, Route::Manifest(name, reference)) => manifests::delete(stores, &name, &reference).await,
        (Method::GET, Route::Blob(name, digest)) => blobs::get(stores, &name, &digest, &req).await,
        (Method::HEAD, Route::Blob(name, digest)) => blobs::head(stores, &name, &digest).await,
        (Method::DELETE, Route::Blob(name, digest)) => blobs::delete(stores, &name, &digest).await,
        (Method::POST, Route::UploadStart(name)) => uploads::start(stores, &identity, &name, req).await,
        (Method::GET | Method::PATCH | Method::PUT | Method::DELETE, Route::Upload(name, id)) => {
            uploads::session(stores, &identity, &name, &id, req).await
        }
        (Method::GET, Route::Referrers(name, digest)) => referrers::list(stores, &name, &digest, &req).await,
        (Method::GET, Route::AdminQuotas) => admin::quotas(stores).await,
        (Method::GET, Route::AdminMetrics) => admin::metrics(stores).await,
        (Method::POST, Route::AdminGc) => admin::gc(stores, &req).await,
        (Method::POST, Route::AdminQuotaRecount) => admin::recount(stores, &req).await,
        (Method::POST, Route::AdminStorageCheck) => Ok(admin::storage_check(stores).await),
        (Method::GET, Route::AdminEvents) => events::state(stores).await,
        (method, _) => Err(method_not_allowed(&method)),
    }?;
    // Before the answer: an acknowledged action always has its events in the outbox.
    events::record_request(stores, &identity, &asked, &response).await?;
    Ok((response, None))
}

/// Whether the answer to `req` depends on nothing but the configuration, the key-value reads
/// made for it and, for a bearer token, the time, so that a host may keep it
/// (`crate::registry::read_set`): reads of manifests, blob HEADs and the base endpoint, asked
/// anonymously or with a bearer token (whose answer is kept until the token expires). Never
/// with a password (its check writes the throttle's counts) or a cookie. Pulls of mirrored names
/// (upstream answers) are never kept: they return before the local routes, and a name the
/// default upstream may answer for is not marked.
fn keepable<B>(req: &Request<B>, route: &Route) -> bool {
    let read = matches!(
        (&req.method, route),
        (&Method::GET | &Method::HEAD, Route::Base | Route::Manifest(..)) | (&Method::HEAD, Route::Blob(..))
    );
    let bearer_or_none = req.header(http::header::AUTHORIZATION).is_none() || auth::bearer_token(req).is_some();
    read && bearer_or_none && req.header(http::header::COOKIE).is_none()
}

/// The repository a request of containerd's addresses with `?ns=<registry>` (hosts.toml mirrors
/// send the upstream's own repository name in the path, and the registry it stands for in
/// `ns`): the namespaced repository when `ns` names an upstream (by its name or its registry
/// host), else the repository in the path (`ns` names this registry, or one not mirrored here).
fn namespaced_route<M, B>(
    stores: &Stores<M, B>,
    req: &Request<B::Incoming>,
    route: Route,
) -> Result<Route, RegistryError>
where
    B: BlobStore,
{
    let mirrors = &stores.config.mirrors;
    let Some(name) = route.name() else { return Ok(route) };
    if mirrors.is_empty() || mirrors.target(name).is_some() {
        return Ok(route);
    }
    match req.query_param("ns").and_then(|ns| mirrors.for_namespace(&ns)) {
        Some(upstream) => {
            let local = crate::config::mirrors::Mirrors::local_name(upstream, name)?;
            Ok(route.renamed(local))
        }
        None => Ok(route),
    }
}

/// Docker's `registry-mirrors` pull a repository of the default upstream by its upstream name
/// (`/v2/library/alpine/...`): for a name the default's patterns match, a pull (manifest GET or
/// HEAD, blob GET, tag list) may go to the namespaced repository, which is returned here; the
/// choice is made once access is known (`dispatch`): the upstream's, unless the repository is
/// here AND the caller may pull it here. A blob HEAD is never sent upstream: it is how a push
/// asks what it need not upload.
fn default_upstream_candidate<M, B: BlobStore>(
    stores: &Stores<M, B>,
    req: &Request<B::Incoming>,
    route: &Route,
) -> Result<Option<Route>, RegistryError> {
    let mirrors = &stores.config.mirrors;
    let pull = matches!(
        (&req.method, route),
        (&Method::GET | &Method::HEAD, Route::Manifest(..)) | (&Method::GET, Route::Blob(..) | Route::Tags(..))
    );
    let Some(name) = route.name() else { return Ok(None) };
    if !pull || req.query_param("ns").is_some() || mirrors.target(name).is_some() {
        return Ok(None);
    }
    let Some(upstream) = mirrors.default_for(name) else { return Ok(None) };
    let local = crate::config::mirrors::Mirrors::local_name(upstream, name)?;
    Ok(Some(route.clone().renamed(local)))
}

/// A 401 or 403 with its `WWW-Authenticate` challenge.
fn refusal<S>(denied: &Denied) -> Response<S> {
    let response = Response::error(&denied.error);
    match &denied.challenge {
        Some(challenge) => response.header(http::header::WWW_AUTHENTICATE, challenge),
        None => response,
    }
}

fn method_not_allowed(method: &Method) -> RegistryError {
    RegistryError::new(ErrorCode::MethodNotAllowed, format!("method {method} not allowed here"))
}

/// A storage error while reading a request body into memory. A body that broke off (cut short,
/// badly framed, the client gone) is the client's mistake: `code`, with 400. Anything else is
/// the registry's (500).
fn body_error(err: StoreError, code: ErrorCode) -> RegistryError {
    match err {
        StoreError::BodyInterrupted(why) => RegistryError::new(code, format!("the request body broke off: {why}"))
            .with_status(http::StatusCode::BAD_REQUEST),
        other => internal(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{MemBlobs, MemMeta, block_on, memory_stores};
    use crate::wire::digest::{Algorithm, Digest};
    use crate::wire::message::Body;
    use http::{HeaderMap, StatusCode};

    fn request(method: Method, path_and_query: &str, body: Vec<u8>) -> Request<Vec<u8>> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (path_and_query.to_owned(), None),
        };
        Request { method, path, query, headers: HeaderMap::new(), body, origin: None }
    }

    fn send<M: MetaStore>(
        stores: &Stores<M, MemBlobs>,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Response<Vec<u8>> {
        block_on(handle(stores, request(method, path, body)))
    }

    fn error_code(response: &Response<Vec<u8>>) -> String {
        let Body::Full(bytes) = &response.body else { panic!("error without a body") };
        let value: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        value["errors"][0]["code"].as_str().unwrap().to_owned()
    }

    /// Where the store sends bodies itself, a blob GET answers with the store's token for
    /// exactly the asked bytes, the same headers, and no body of its own; elsewhere it streams.
    #[test]
    fn a_blob_get_hands_the_body_to_a_store_that_sends_it() {
        let stores = memory_stores();
        stores.blobs.serve_bodies();
        let digest = Digest::of(Algorithm::Sha256, b"0123456789");
        let r = send(&stores, Method::POST, &format!("/v2/a/blobs/uploads/?digest={digest}"), b"0123456789".to_vec());
        assert_eq!(r.status, StatusCode::CREATED);

        let r = send(&stores, Method::GET, &format!("/v2/a/blobs/{digest}"), vec![]);
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers["content-length"], "10");
        assert_eq!(r.headers["docker-content-digest"], digest.to_string());
        assert!(matches!(r.body, Body::Empty), "the registry sent bytes of its own");
        let token = r.headers[crate::wire::message::HOST_BODY].to_str().unwrap().to_owned();
        assert!(token.ends_with("@0+10"), "the whole blob: {token}");

        let mut ranged = request(Method::GET, &format!("/v2/a/blobs/{digest}"), vec![]);
        ranged.headers.insert(http::header::RANGE, "bytes=2-5".parse().unwrap());
        let r = block_on(handle(&stores, ranged));
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.headers["content-length"], "4");
        assert_eq!(r.headers["content-range"], "bytes 2-5/10");
        let token = r.headers[crate::wire::message::HOST_BODY].to_str().unwrap();
        assert!(token.ends_with("@2+4"), "bytes 2 to 5: {token}");

        // Not in another repository, and no token for a HEAD.
        assert_eq!(send(&stores, Method::GET, &format!("/v2/b/blobs/{digest}"), vec![]).status, StatusCode::NOT_FOUND);
        let r = send(&stores, Method::HEAD, &format!("/v2/a/blobs/{digest}"), vec![]);
        assert!(!r.headers.contains_key(crate::wire::message::HOST_BODY));
    }

    #[test]
    fn base_answers_with_the_api_version() {
        let r = send(&memory_stores(), Method::GET, "/v2/", vec![]);
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers["docker-distribution-api-version"], "registry/2.0");
    }

    #[test]
    fn a_monolithic_push_is_readable_in_its_repository_only() {
        let stores = memory_stores();
        let digest = Digest::of(Algorithm::Sha256, b"layer");
        let r = send(&stores, Method::POST, &format!("/v2/a/blobs/uploads/?digest={digest}"), b"layer".to_vec());
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.headers["location"], format!("/v2/a/blobs/{digest}"));
        assert_eq!(r.headers["docker-content-digest"], digest.to_string());

        let r = send(&stores, Method::GET, &format!("/v2/a/blobs/{digest}"), vec![]);
        assert_eq!(r.status, StatusCode::OK);
        assert!(matches!(r.body, Body::Stream(ref b) if b == b"layer"));
        let r = send(&stores, Method::GET, &format!("/v2/b/blobs/{digest}"), vec![]);
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"));
    }

    #[test]
    fn a_digest_mismatch_stores_nothing() {
        let stores = memory_stores();
        let claimed = Digest::of(Algorithm::Sha256, b"other");
        let r = send(&stores, Method::POST, &format!("/v2/a/blobs/uploads/?digest={claimed}"), b"layer".to_vec());
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::BAD_REQUEST, "DIGEST_INVALID"));
        assert!(stores.meta.0.borrow().is_empty());
        assert!(stores.blobs.0.borrow().is_empty());
    }

    #[test]
    fn pushing_an_existing_blob_again_keeps_one_copy() {
        let stores = memory_stores();
        let digest = Digest::of(Algorithm::Sha512, b"layer");
        for repo in ["a", "b"] {
            let r =
                send(&stores, Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={digest}"), b"layer".to_vec());
            assert_eq!(r.status, StatusCode::CREATED);
        }
        assert_eq!(stores.blobs.0.borrow().keys().filter(|k| k.starts_with("uploads/")).count(), 1);
        assert_eq!(
            send(&stores, Method::HEAD, &format!("/v2/b/blobs/{digest}"), vec![]).headers["content-length"],
            "5"
        );
    }

    #[test]
    fn a_chunked_upload_finishes_under_sha512_too() {
        let stores = memory_stores();
        let location = |r: &Response<Vec<u8>>| r.headers["location"].to_str().unwrap().to_owned();
        for (claimed, status) in [(b"layer", StatusCode::CREATED), (b"other", StatusCode::BAD_REQUEST)] {
            let r = send(&stores, Method::POST, "/v2/a/blobs/uploads/", vec![]);
            let r = send(&stores, Method::PATCH, &location(&r), b"lay".to_vec());
            let digest = Digest::of(Algorithm::Sha512, claimed);
            let r = send(&stores, Method::PUT, &format!("{}&digest={digest}", location(&r)), b"er".to_vec());
            assert_eq!(r.status, status);
        }
        let digest = Digest::of(Algorithm::Sha512, b"layer");
        let r = send(&stores, Method::GET, &format!("/v2/a/blobs/{digest}"), vec![]);
        assert!(matches!(r.body, Body::Stream(ref b) if b == b"layer"));
    }

    #[test]
    fn unknown_paths_get_an_oci_error() {
        let r = send(&memory_stores(), Method::GET, "/nope", vec![]);
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::NOT_FOUND, "NOT_FOUND"));
        assert_eq!(r.headers["content-type"], "application/json");
    }

    #[test]
    fn wrong_methods_get_an_oci_error() {
        let r = send(&memory_stores(), Method::DELETE, "/v2/", vec![]);
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"));
    }

    #[test]
    fn a_body_that_broke_off_is_the_clients_mistake_and_a_store_failure_the_registrys() {
        let broke = body_error(StoreError::BodyInterrupted("cut".into()), ErrorCode::ManifestInvalid);
        assert_eq!((broke.code, broke.status()), (ErrorCode::ManifestInvalid, StatusCode::BAD_REQUEST));
        let token = body_error(StoreError::BodyInterrupted("cut".into()), ErrorCode::Unsupported);
        assert_eq!(token.status(), StatusCode::BAD_REQUEST, "not the code's own 405");
        let failed = body_error(StoreError::Other("disk".into()), ErrorCode::ManifestInvalid);
        assert_eq!((failed.code, failed.status()), (ErrorCode::Internal, StatusCode::INTERNAL_SERVER_ERROR));
    }

    #[test]
    fn with_redirects_on_a_blob_get_answers_307_to_the_store_and_head_answers_from_the_record() {
        let mut stores = memory_stores();
        stores.config.blob_redirect_secs = 300;
        let digest = Digest::of(Algorithm::Sha256, b"layer");
        send(&stores, Method::POST, &format!("/v2/a/blobs/uploads/?digest={digest}"), b"layer".to_vec());
        let r = send(&stores, Method::GET, &format!("/v2/a/blobs/{digest}"), vec![]);
        assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
        let location = r.headers["location"].to_str().unwrap();
        assert!(
            location.starts_with("https://blobs.example/uploads/") && location.ends_with("?expires=300"),
            "{location}"
        );
        assert_eq!(r.headers["docker-content-digest"], digest.to_string());
        assert!(matches!(r.body, Body::Empty));
        let r = send(&stores, Method::HEAD, &format!("/v2/a/blobs/{digest}"), vec![]);
        assert_eq!(
            (r.status, &r.headers["content-length"]),
            (StatusCode::OK, &"5".parse::<http::HeaderValue>().unwrap())
        );
        // Only for a linked blob: another repository still gets BLOB_UNKNOWN, not a URL.
        let r = send(&stores, Method::GET, &format!("/v2/b/blobs/{digest}"), vec![]);
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"));
    }

    #[test]
    fn with_redirects_on_a_chunked_upload_ends_as_one_object_a_redirect_points_at() {
        let mut stores = memory_stores();
        stores.config.blob_redirect_secs = 300;
        let location = |r: &Response<Vec<u8>>| r.headers["location"].to_str().unwrap().to_owned();
        let r = send(&stores, Method::POST, "/v2/a/blobs/uploads/", vec![]);
        let r = send(&stores, Method::PATCH, &location(&r), b"lay".to_vec());
        let digest = Digest::of(Algorithm::Sha256, b"layer");
        let r = send(&stores, Method::PUT, &format!("{}&digest={digest}", location(&r)), b"er".to_vec());
        assert_eq!(r.status, StatusCode::CREATED);
        let r = send(&stores, Method::GET, &format!("/v2/a/blobs/{digest}"), vec![]);
        assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
        let url = r.headers["location"].to_str().unwrap();
        let object = url.strip_prefix("https://blobs.example/").unwrap().split('?').next().unwrap();
        assert_eq!(stores.blobs.0.borrow()[object], b"layer", "the redirect points at the joined object");
    }

    #[test]
    fn a_blob_of_several_chunk_objects_is_streamed_when_the_store_cannot_join_them() {
        let mut stores = memory_stores();
        stores.config.blob_redirect_secs = 300;
        stores.blobs.refuse_compose();
        let location = |r: &Response<Vec<u8>>| r.headers["location"].to_str().unwrap().to_owned();
        let r = send(&stores, Method::POST, "/v2/a/blobs/uploads/", vec![]);
        let r = send(&stores, Method::PATCH, &location(&r), b"lay".to_vec());
        let digest = Digest::of(Algorithm::Sha256, b"layer");
        send(&stores, Method::PUT, &format!("{}&digest={digest}", location(&r)), b"er".to_vec());
        let r = send(&stores, Method::GET, &format!("/v2/a/blobs/{digest}"), vec![]);
        assert_eq!(r.status, StatusCode::OK);
        assert!(matches!(r.body, Body::Stream(ref b) if b == b"layer"));
    }

    #[test]
    fn the_events_a_request_counted_are_answered_only_when_the_host_asks() {
        let stores = memory_stores();
        let digest = Digest::of(Algorithm::Sha256, b"layer");
        let mut asked = request(Method::POST, &format!("/v2/a/blobs/uploads/?digest={digest}"), b"layer".to_vec());
        asked.headers.insert(COUNT_EVENTS, http::HeaderValue::from_static("1"));
        let r = block_on(handle(&stores, asked));
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.headers[EVENTS], "uploads_finished=1,uploads_opened=1");
        let stores = memory_stores();
        let r = send(&stores, Method::POST, &format!("/v2/a/blobs/uploads/?digest={digest}"), b"layer".to_vec());
        assert!(!r.headers.contains_key(EVENTS), "not asked: nothing said");
    }

    #[test]
    fn an_internal_error_answers_a_reference_and_keeps_its_detail_for_the_log() {
        let err = RegistryError::new(ErrorCode::Internal, "corrupt record at repo/secret/app/link/sha256/ab");
        let id = crate::registry::store::RequestId::made([7; 16]);
        let r: Response<Vec<u8>> = error_response(&err, &id);
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"));
        assert_eq!(detail(&r), "internal error (request 0707070707070707): the registry's log says what failed");
        let told = RegistryError::new(ErrorCode::Internal, "the registry is misconfigured: its log says why").told();
        assert_eq!(detail(&error_response::<Vec<u8>>(&told, &id)), "the registry is misconfigured: its log says why");
    }

    #[test]
    fn every_error_body_quotes_its_request_in_its_detail_and_keeps_its_message() {
        let stores = memory_stores();
        let digest = Digest::of(Algorithm::Sha256, b"never pushed");
        let r = send(&stores, Method::GET, &format!("/v2/a/blobs/{digest}"), vec![]);
        let id = r.headers[REQUEST_ID].to_str().unwrap().to_owned();
        assert_eq!(error_code(&r), "BLOB_UNKNOWN");
        assert_eq!(detail(&r), format!("blob {digest} unknown to repository a (request {id})"));
        let Body::Full(body) = &r.body else { panic!("no body") };
        let body: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(body["errors"][0]["message"], "blob unknown to registry");
        assert_eq!(r.headers[http::header::CONTENT_LENGTH].to_str().unwrap(), body_len(&r).to_string());
        // An error without a detail gets the request alone; a success is left alone.
        let id = crate::registry::store::RequestId::made([9; 16]);
        let bare =
            br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied","detail":null}]}"#;
        let r = quote_request(Response::<Vec<u8>>::new(StatusCode::FORBIDDEN).json(bare.to_vec()), &id);
        assert_eq!(detail(&r), "request 0909090909090909");
        let ok = quote_request(Response::<Vec<u8>>::new(StatusCode::OK).json(bare.to_vec()), &id);
        assert_eq!(body_len(&ok), bare.len());
    }

    fn body_len(r: &Response<Vec<u8>>) -> usize {
        match &r.body {
            Body::Full(bytes) => bytes.len(),
            _ => 0,
        }
    }

    #[test]
    fn an_unavailable_backend_is_503_unavailable_without_its_detail() {
        let err = internal(StoreError::Unavailable("s3 at http://10.0.0.1:9000: connection refused".into()));
        assert_eq!((err.code, err.status()), (ErrorCode::Unavailable, StatusCode::SERVICE_UNAVAILABLE));
    }

    /// Push a one-config manifest to `repo` under `reference`; `variant` makes it distinct.
    fn push_manifest<M: MetaStore>(
        stores: &Stores<M, MemBlobs>,
        repo: &str,
        reference: &str,
        variant: &str,
    ) -> (Response<Vec<u8>>, Digest) {
        let config = b"{}";
        let config_digest = Digest::of(Algorithm::Sha256, config);
        send(stores, Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={config_digest}"), config.to_vec());
        let (manifest, digest) = manifest_for(variant);
        let mut req = request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"), manifest);
        req.headers.insert(http::header::CONTENT_TYPE, crate::wire::manifest::OCI_MANIFEST.parse().unwrap());
        (block_on(handle(stores, req)), digest)
    }

    /// One request through stores that record its reads, as berth-runner asks (each request has
    /// stores of its own); the stores back, and the answer's read set.
    fn send_recording(
        stores: Stores<MemMeta, MemBlobs>,
        method: Method,
        path: &str,
        credentials: bool,
    ) -> (Stores<MemMeta, MemBlobs>, StatusCode, Option<String>) {
        use crate::registry::read_set::Recorded;
        let Stores { meta, blobs, random, now, config, request_id, .. } = stores;
        let meta = Recorded::new(meta, Some("default"));
        let stores = Stores { meta, blobs, random, now, config, request_id, events: Default::default() };
        let mut req = request(method, path, vec![]);
        if credentials {
            req.headers.insert(http::header::AUTHORIZATION, "Basic YTpi".parse().unwrap());
        }
        let r = block_on(handle(&stores, req));
        let validators = r.headers.get(READ_SET).map(|v| v.to_str().unwrap().to_owned());
        let Stores { meta, blobs, random, now, config, request_id, .. } = stores;
        let stores =
            Stores { meta: meta.into_inner(), blobs, random, now, config, request_id, events: Default::default() };
        (stores, r.status, validators)
    }

    /// An anonymous read of a manifest names every key it was read from, with the hash of the
    /// value read; a failed read, a credential's, or a write names none; nothing is said unless
    /// the host asked (`send` does not).
    #[test]
    fn only_an_anonymous_read_that_wrote_nothing_is_answered_with_its_read_set() {
        let stores = memory_stores();
        let (r, digest) = push_manifest(&stores, "a", "v1", "one");
        assert_eq!(r.status, StatusCode::CREATED);
        let not_asked = send(&stores, Method::GET, "/v2/a/manifests/v1", vec![]);
        assert!(!not_asked.headers.contains_key(READ_SET), "not asked");

        let (stores, status, validators) = send_recording(stores, Method::GET, "/v2/a/manifests/v1", false);
        assert_eq!(status, StatusCode::OK);
        let validators = validators.expect("a manifest GET by tag is keepable");
        let mut words = validators.split(' ');
        assert_eq!(words.next(), Some("default"), "the store's label first");
        let keys: Vec<&str> = words.map(|w| w.split_once('=').unwrap().0).collect();
        let hex = digest.hex();
        for key in ["repo/a/tag/v1".to_owned(), format!("repo/a/manifest/sha256/{hex}"), format!("blob/sha256/{hex}")] {
            assert!(keys.contains(&key.as_str()), "{key} in {validators}");
        }
        let tag_value = stores.meta.0.borrow()["repo/a/tag/v1"].clone();
        let tag_hash = Digest::of(Algorithm::Sha256, &tag_value);
        assert!(validators.contains(&format!("repo/a/tag/v1={}", tag_hash.hex())), "{validators}");

        let (stores, _, by_digest) = send_recording(stores, Method::HEAD, &format!("/v2/a/manifests/{digest}"), false);
        assert!(by_digest.is_some_and(|v| !v.contains("/tag/")), "a digest's answer does not depend on tags");
        let (stores, _, base) = send_recording(stores, Method::GET, "/v2/", false);
        assert!(base.is_some(), "the base endpoint reads nothing it could change");
        let (stores, status, missing) = send_recording(stores, Method::GET, "/v2/a/manifests/v2", false);
        assert_eq!((status, missing), (StatusCode::NOT_FOUND, None), "errors are not kept");
        let (stores, status, credentialed) = send_recording(stores, Method::GET, "/v2/a/manifests/v1", true);
        assert_eq!((status, credentialed), (StatusCode::OK, None), "a credential's answer depends on more");
        let (stores, _, tags) = send_recording(stores, Method::GET, "/v2/a/tags/list", false);
        assert_eq!(tags, None, "listings read the blob store's index");
        let (_, status, deleted) = send_recording(stores, Method::DELETE, "/v2/a/manifests/v1", false);
        assert_eq!((status, deleted), (StatusCode::ACCEPTED, None));
    }

    fn manifest_for(variant: &str) -> (Vec<u8>, Digest) {
        let config_digest = Digest::of(Algorithm::Sha256, b"{}");
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::wire::manifest::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": 2},
            "layers": [],
            "annotations": {"variant": variant},
        }))
        .unwrap();
        let digest = Digest::of(Algorithm::Sha256, &manifest);
        (manifest, digest)
    }

    fn immutable_stores(rules: &str) -> Stores<MemMeta, MemBlobs> {
        let mut stores = memory_stores();
        stores.config.immutable_tags = crate::config::immutable::ImmutableTags::parse(rules).unwrap();
        stores
    }

    fn detail(response: &Response<Vec<u8>>) -> String {
        let Body::Full(bytes) = &response.body else { panic!("error without a body") };
        let value: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        value["errors"][0]["detail"].as_str().unwrap().to_owned()
    }

    #[test]
    fn an_immutable_tag_cannot_be_moved_but_the_same_manifest_can_be_pushed_again() {
        let stores = immutable_stores("prod/*:v*");
        let (r, first) = push_manifest(&stores, "prod/web", "v1", "a");
        assert_eq!(r.status, StatusCode::CREATED);
        let (r, _) = push_manifest(&stores, "prod/web", "v1", "a");
        assert_eq!(r.status, StatusCode::CREATED, "the same manifest again is not a move");
        let (r, _) = push_manifest(&stores, "prod/web", "v1", "b");
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::FORBIDDEN, "DENIED"));
        assert!(detail(&r).contains("immutable_tags rule prod/*:v*"), "{}", detail(&r));
        let r = send(&stores, Method::GET, "/v2/prod/web/manifests/v1", vec![]);
        assert_eq!(r.headers["docker-content-digest"], first.to_string(), "the tag did not move");
        // Through `?tag=` too, and then nothing is stored.
        let (_, c) = manifest_for("c");
        let (r, _) = push_manifest(&stores, "prod/web", &format!("{c}?tag=v1"), "c");
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::FORBIDDEN, "DENIED"));
        let r = send(&stores, Method::GET, &format!("/v2/prod/web/manifests/{c}"), vec![]);
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        // Tags no rule matches move freely.
        push_manifest(&stores, "prod/web", "latest", "a");
        let (r, _) = push_manifest(&stores, "prod/web", "latest", "b");
        assert_eq!(r.status, StatusCode::CREATED);
    }

    #[test]
    fn an_immutable_tag_and_the_manifest_it_names_cannot_be_deleted_unless_excluded() {
        let stores = immutable_stores("prod/*:*\n!prod/*:dev-*");
        let (_, digest) = push_manifest(&stores, "prod/web", "v1", "a");
        let r = send(&stores, Method::DELETE, "/v2/prod/web/manifests/v1", vec![]);
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::FORBIDDEN, "DENIED"));
        let r = send(&stores, Method::DELETE, &format!("/v2/prod/web/manifests/{digest}"), vec![]);
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::FORBIDDEN, "DENIED"));
        assert!(detail(&r).contains("cannot be deleted"), "{}", detail(&r));
        let (_, dev) = push_manifest(&stores, "prod/web", "dev-1", "b");
        push_manifest(&stores, "prod/web", "dev-1", "c");
        let r = send(&stores, Method::DELETE, "/v2/prod/web/manifests/dev-1", vec![]);
        assert_eq!(r.status, StatusCode::ACCEPTED, "excluded tags are mutable");
        let r = send(&stores, Method::DELETE, &format!("/v2/prod/web/manifests/{dev}"), vec![]);
        assert_eq!(r.status, StatusCode::ACCEPTED, "a manifest no immutable tag names can go");
    }

    #[test]
    fn of_two_first_pushes_of_an_immutable_tag_the_second_is_refused_by_the_binding() {
        let stores = immutable_stores("*:release");
        // The first push bound the tag and then failed before tagging (a crash, here: the tag
        // removed behind its back): the binding still decides.
        let (_, first) = push_manifest(&stores, "app", "release", "a");
        let tag = crate::wire::name::Tag::parse("release").unwrap();
        let name = crate::wire::name::RepoName::parse("app").unwrap();
        block_on(stores.meta.delete(&crate::registry::keys::tag(&name, &tag))).unwrap();
        let (r, _) = push_manifest(&stores, "app", "release", "b");
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::FORBIDDEN, "DENIED"));
        let (r, _) = push_manifest(&stores, "app", "release", "a");
        assert_eq!(r.status, StatusCode::CREATED);
        let r = send(&stores, Method::GET, "/v2/app/manifests/release", vec![]);
        assert_eq!(r.headers["docker-content-digest"], first.to_string());
    }

    #[test]
    fn a_delete_by_digest_between_a_first_pushs_record_and_its_immutable_tag_is_refused() {
        let stores = immutable_stores("prod/*:v*");
        // A first push of v1 has bound the tag and stored its record, and not yet set the tag.
        let (_, digest) = push_manifest(&stores, "prod/web", &format!("{}", manifest_for("a").1), "a");
        let (name, tag) =
            (crate::wire::name::RepoName::parse("prod/web").unwrap(), crate::wire::name::Tag::parse("v1").unwrap());
        let binding = crate::registry::keys::immutable_binding(&name, &tag);
        block_on(stores.blobs.write_bytes(&binding, format!("{digest} 0").into_bytes())).unwrap();
        // The delete comes in between: refused, since the tag is bound to that manifest.
        let r = send(&stores, Method::DELETE, &format!("/v2/prod/web/manifests/{digest}"), vec![]);
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::FORBIDDEN, "DENIED"));
        assert!(detail(&r).contains("bound"), "{}", detail(&r));
        // The push goes on and tags it: v1 resolves.
        let (r, _) = push_manifest(&stores, "prod/web", "v1", "a");
        assert_eq!(r.status, StatusCode::CREATED);
        let r = send(&stores, Method::GET, "/v2/prod/web/manifests/v1", vec![]);
        assert_eq!(r.headers["docker-content-digest"], digest.to_string());
    }

    #[test]
    fn a_first_push_that_fails_leaves_its_immutable_tag_free() {
        let mut stores = immutable_stores("prod/*:v*");
        // The manifest does not fit the quota (its config does): the push fails after binding.
        stores.config.quotas = crate::config::quotas::Quotas::parse("prod/* 100").unwrap();
        let (r, _) = push_manifest(&stores, "prod/web", "v1", "a");
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::FORBIDDEN, "DENIED"));
        assert!(detail(&r).contains("quota"), "{}", detail(&r));
        stores.config.quotas = Default::default();
        let (r, b) = push_manifest(&stores, "prod/web", "v1", "b");
        assert_eq!(r.status, StatusCode::CREATED, "v1 was never stored: any manifest may take it");
        let r = send(&stores, Method::GET, "/v2/prod/web/manifests/v1", vec![]);
        assert_eq!(r.headers["docker-content-digest"], b.to_string());
    }

    #[test]
    fn a_tag_list_binds_all_of_its_immutable_tags_or_none() {
        let stores = immutable_stores("prod/*:v*");
        push_manifest(&stores, "prod/web", "v2", "taken");
        // v1 then v2: v2 names another manifest, so the push is refused, and v1 stays free.
        let (_, x) = manifest_for("x");
        let (r, _) = push_manifest(&stores, "prod/web", &format!("{x}?tag=v1&tag=v2"), "x");
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::FORBIDDEN, "DENIED"));
        let (r, _) = push_manifest(&stores, "prod/web", "v1", "y");
        assert_eq!(r.status, StatusCode::CREATED, "the refused list left no binding of v1");
    }

    #[test]
    fn a_binding_left_by_a_push_that_died_is_taken_over_once_stale_and_not_before() {
        let stores = immutable_stores("prod/*:v*");
        let name = crate::wire::name::RepoName::parse("prod/web").unwrap();
        let tag = crate::wire::name::Tag::parse("v1").unwrap();
        let binding = crate::registry::keys::immutable_binding(&name, &tag);
        let (_, never_stored) = manifest_for("never");
        // A push in flight: bound just now, not stored yet. It decides.
        let now = (stores.now)();
        stores.blobs.0.borrow_mut().insert(binding.clone(), format!("{never_stored} {now}").into_bytes());
        let (r, _) = push_manifest(&stores, "prod/web", "v1", "a");
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::FORBIDDEN, "DENIED"));
        // Its push died long ago: nothing stored, nothing tagged. Taken over.
        stores.blobs.0.borrow_mut().insert(binding, format!("{never_stored} {}", now - 3600).into_bytes());
        let (r, a) = push_manifest(&stores, "prod/web", "v1", "a");
        assert_eq!(r.status, StatusCode::CREATED);
        let (r, _) = push_manifest(&stores, "prod/web", "v1", "b");
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::FORBIDDEN, "DENIED"), "and now bound to {a}");
    }

    fn mirror_stores(upstreams: &str) -> Stores<MemMeta, MemBlobs> {
        let mut stores = memory_stores();
        stores.config.mirrors = crate::config::mirrors::Mirrors::parse(upstreams, "").unwrap();
        stores
    }

    #[test]
    fn a_mirrored_blob_whose_stored_parts_are_gone_is_fetched_again_not_waited_for() {
        let stores = mirror_stores("dist http://127.0.0.1:1");
        let digest = Digest::of(Algorithm::Sha256, b"layer");
        send(&stores, Method::POST, &format!("/v2/a/blobs/uploads/?digest={digest}"), b"layer".to_vec());
        // The record stays; its bytes are gone.
        stores.blobs.0.borrow_mut().retain(|name, _| !name.starts_with("uploads/"));
        // No outbound HTTP here: the fetch is tried (and fails), rather than waiting for ever.
        let r = send(&stores, Method::GET, &format!("/v2/dist/x/blobs/{digest}"), vec![]);
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"));
    }

    #[test]
    fn a_push_into_a_mirrored_repository_is_denied_naming_the_upstream() {
        let stores = mirror_stores("dist http://127.0.0.1:1");
        let digest = Digest::of(Algorithm::Sha256, b"layer");
        for (method, path) in [
            (Method::POST, format!("/v2/dist/app/blobs/uploads/?digest={digest}")),
            (Method::PUT, "/v2/dist/app/manifests/v1".to_owned()),
            (Method::DELETE, format!("/v2/dist/app/blobs/{digest}")),
            (Method::POST, "/v2/app/blobs/uploads/?ns=dist".to_owned()),
        ] {
            let r = send(&stores, method.clone(), &path, b"layer".to_vec());
            assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::FORBIDDEN, "DENIED"), "{method} {path}");
            assert!(detail(&r).contains("read-only mirror of dist (http://127.0.0.1:1)"), "{}", detail(&r));
        }
        assert!(stores.blobs.0.borrow().keys().all(|k| !k.starts_with("uploads/")), "nothing stored");
    }

    #[test]
    fn ns_and_the_default_upstream_address_the_namespaced_repository_and_say_what_is_not_cached() {
        let stores = mirror_stores("dist http://127.0.0.1:1 default");
        // No outbound HTTP here: the upstream is unreachable, and the answer names the repository
        // the request was mapped to.
        for path in ["/v2/library/alpine/manifests/3?ns=dist", "/v2/library/alpine/manifests/3"] {
            let r = send(&stores, Method::GET, path, vec![]);
            assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"));
            assert!(detail(&r).starts_with("dist/library/alpine:3 is not cached, and upstream dist"), "{}", detail(&r));
        }
        // A repository that is here is served from here, default upstream or not.
        let digest = Digest::of(Algorithm::Sha256, b"layer");
        send(&stores, Method::POST, &format!("/v2/library/alpine/blobs/uploads/?digest={digest}"), b"layer".to_vec());
        let r = send(&stores, Method::GET, "/v2/library/alpine/manifests/3", vec![]);
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"));
        let r = send(&stores, Method::GET, &format!("/v2/library/alpine/blobs/{digest}"), vec![]);
        assert_eq!(r.status, StatusCode::OK);
    }

    #[test]
    fn a_catalog_for_a_caller_who_may_pull_little_looks_at_a_bounded_number_of_names_per_request() {
        let mut stores = memory_stores();
        // `htpasswd -nbB -C 4 alice secret`: the cheapest bcrypt.
        let vars = [
            ("auth_mode", "basic"),
            ("auth_users", "alice:$2y$04$bKOFBbX2st4s.3cifBS8CeTKuRnPHiEmAhGnQkwQxJGjeuGt/ERWa"),
            ("auth_policy", "zz/* alice pull"),
        ];
        stores.config.auth =
            crate::auth::config::AuthConfig::parse(&|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string()))
                .unwrap();
        // 25,000 repositories alice may not see, before the three she may.
        let private: usize = 25_000;
        for i in 0..private {
            stores
                .blobs
                .0
                .borrow_mut()
                .insert(format!("{}secret/r{i:05}", crate::registry::keys::REPOS_PREFIX), Vec::new());
        }
        for name in ["zz/a", "zz/b", "zz/c"] {
            stores.blobs.0.borrow_mut().insert(format!("{}{name}", crate::registry::keys::REPOS_PREFIX), Vec::new());
        }
        let mut path = "/v2/_catalog?n=2".to_owned();
        let (mut listed, mut requests) = (Vec::new(), 0);
        loop {
            let mut req = request(Method::GET, &path, vec![]);
            req.headers.insert(http::header::AUTHORIZATION, "Basic YWxpY2U6c2VjcmV0".parse().unwrap());
            let r = block_on(handle(&stores, req));
            requests += 1;
            assert_eq!(r.status, StatusCode::OK, "{path}");
            let Body::Full(bytes) = &r.body else { panic!("a body") };
            let page: serde_json::Value = serde_json::from_slice(bytes).unwrap();
            listed.extend(page["repositories"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()));
            let Some(link) = r.headers.get(http::header::LINK) else { break };
            let link = link.to_str().unwrap();
            assert!(!link.contains("secret"), "a link never names what the caller may not see: {link}");
            path = link.trim_start_matches('<').split('>').next().unwrap().to_owned();
        }
        assert_eq!(listed, ["zz/a", "zz/b", "zz/c"]);
        let bound = super::catalog::MAX_EXAMINED;
        assert_eq!(requests, private.div_ceil(bound) + 1, "each request looked at {bound} names at most");
        // A cursor made under other secrets is refused, not trusted.
        let mut req = request(Method::GET, "/v2/_catalog?cursor=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", vec![]);
        req.headers.insert(http::header::AUTHORIZATION, "Basic YWxpY2U6c2VjcmV0".parse().unwrap());
        let r = block_on(handle(&stores, req));
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::BAD_REQUEST, "UNSUPPORTED"));
    }

    #[test]
    fn a_bad_digest_parameter_is_digest_invalid() {
        let r = send(&memory_stores(), Method::POST, "/v2/a/blobs/uploads/?digest=sha256:zz", b"x".to_vec());
        assert_eq!((r.status, error_code(&r).as_str()), (StatusCode::BAD_REQUEST, "DIGEST_INVALID"));
    }
}
