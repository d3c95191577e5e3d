//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (a session, a whole blob with `?digest=`, or a
//! cross-repository mount), and the session endpoints `PATCH|PUT|GET|DELETE
//! /v2/<name>/blobs/uploads/<id>`. A session belongs to the identity that opened it: to anyone
//! else it does not exist.

use crate::auth::Identity;
use crate::auth::scope::Actions;
use crate::registry::blobs::{self, Part};
use crate::registry::store::{BlobStore, MetaStore, StoreError, Stores, Written, internal};
use crate::registry::upload::{SessionState, UploadSession};
use crate::registry::uploads::{self, Finish, Loaded};
use crate::wire::digest::{Algorithm, Digest, RunningHash};
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::message::{CONTENT_DIGEST, Request, Response};
use crate::wire::name::RepoName;
use crate::wire::range::parse_content_range;
use crate::wire::route::url;
use http::{HeaderName, Method, StatusCode, header};

const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");

type Result<T> = std::result::Result<T, RegistryError>;

pub async fn start<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    identity: &Identity,
    name: &RepoName,
    req: Request<B::Incoming>,
) -> Result<Response<B::Outgoing>> {
    if let Some(mount) = req.query_param("mount").and_then(|m| Digest::parse(&m).ok()) {
        let from = req.query_param("from");
        if may_mount_from(stores, identity, from.as_deref())
            && let Some(response) = mount_blob(stores, name, &mount, from.as_deref()).await?
        {
            return Ok(response);
        }
    }
    // Each POST moves the bounded sweep of upload sessions on by one step.
    uploads::sweep(stores).await;
    let owner = identity.subject().map(str::to_owned);
    if let Some(digest) = req.query_param("digest") {
        return monolithic(stores, name, owner, &Digest::parse(&digest)?, req).await;
    }
    let opened = uploads::open(stores, name, owner).await?;
    Ok(session_headers(Response::new(StatusCode::ACCEPTED), name, &opened.session).empty())
}

/// Whether the caller may take a blob from `from`: pull access there, or, without `from`, pull
/// access everywhere (the blob may be in any repository). When not, the mount is not tried and a
/// normal session opens, so the answer tells nothing about `from`.
fn may_mount_from<M, B>(stores: &Stores<M, B>, identity: &Identity, from: Option<&str>) -> bool {
    let auth = &stores.config.auth;
    match from {
        Some(from) => identity.may(auth, from, Actions::PULL),
        None => identity.pulls_everywhere(auth),
    }
}

/// Mount a blob from `from` (or, without `from`, from anywhere it exists: automatic content
/// discovery). `None` when it cannot be mounted: the caller opens a normal session instead.
async fn mount_blob<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
    from: Option<&str>,
) -> Result<Option<Response<B::Outgoing>>> {
    let available = match from {
        Some(from) => match RepoName::parse(from) {
            Ok(from) => blobs::linked(stores, &from, digest).await.ok(),
            Err(_) => None,
        },
        // Only a blob stored whole: a client told it is there will not send it again.
        None => match blobs::record(stores, digest).await? {
            Some(record) if blobs::parts_present(stores, &record).await? => Some(record),
            _ => None,
        },
    };
    let Some(record) = available else { return Ok(None) };
    if !blobs::link(stores, name, digest, record.size).await? {
        return Ok(None); // garbage-collected meanwhile: the client sends it
    }
    Ok(Some(created(name, digest)))
}

fn created<S>(name: &RepoName, digest: &Digest) -> Response<S> {
    Response::new(StatusCode::CREATED)
        .header(header::LOCATION, url::blob(name, digest))
        .header(CONTENT_DIGEST, digest)
        .empty()
}

/// A whole blob in the POST: an upload session of one chunk, finished at once.
async fn monolithic<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    owner: Option<String>,
    digest: &Digest,
    req: Request<B::Incoming>,
) -> Result<Response<B::Outgoing>> {
    let declared = content_length(&req)?;
    if let Some(size) = declared {
        // Refused before a byte is stored; a body without a length is counted at the finish.
        crate::registry::quota::check(stores, name, Some(digest), size).await?;
    }
    store_whole(stores, name, owner, digest, req.body, declared).await?;
    Ok(created(name, digest))
}

/// Store `body` as blob `digest` of `name` through an upload session of one chunk, finished at
/// once (a monolithic push; a blob the mirror relays): verified, committed and linked. On any
/// mismatch (length when `declared`, digest) nothing stays.
pub(super) async fn store_whole<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    owner: Option<String>,
    digest: &Digest,
    body: B::Incoming,
    declared: Option<u64>,
) -> Result<()> {
    let opened = uploads::open(stores, name, owner).await?;
    let mut hashes = running_hashes(&opened.session)?;
    if digest.algorithm() == Algorithm::Sha512 {
        // Nothing received yet: SHA-512 can run along this one chunk.
        hashes.push(RunningHash::new(Algorithm::Sha512));
    }
    let (part, written) = match write_chunk(stores, &opened.session, body, hashes, declared).await {
        Ok(chunk) => chunk,
        Err(err) => {
            uploads::cancel(stores, opened).await?;
            return Err(err);
        }
    };
    match uploads::finish(stores, &opened, Some((part, written)), digest).await? {
        Finish::Stored => Ok(()),
        Finish::Mismatch { actual } => Err(digest_mismatch(&actual, digest)),
        Finish::Refused => Err(RegistryError::new(ErrorCode::Internal, "upload session taken over while finishing")),
    }
}

fn running_hashes(session: &UploadSession) -> Result<Vec<RunningHash>> {
    session.hashes().ok_or_else(|| RegistryError::new(ErrorCode::Internal, "corrupt hash state in session"))
}

/// Write a request body as a new object of the session, continuing `hashes` over it; it must
/// have the `expected` length when one was announced, else it is removed again.
async fn write_chunk<M, B: BlobStore>(
    stores: &Stores<M, B>,
    session: &UploadSession,
    body: B::Incoming,
    hashes: Vec<RunningHash>,
    expected: Option<u64>,
) -> Result<(Part, Written)> {
    let object = uploads::new_object(stores, session);
    let written = stores.blobs.write(&object, body, hashes).await.map_err(write_error)?;
    let part = Part { name: object, size: written.size };
    if let Err(err) = check_length(expected, written.size) {
        blobs::discard(stores, &[part]).await;
        return Err(err);
    }
    Ok((part, written))
}

fn digest_mismatch(actual: &Digest, expected: &Digest) -> RegistryError {
    RegistryError::new(ErrorCode::DigestInvalid, format!("content hashes to {actual}, not {expected}"))
}

fn check_length(declared: Option<u64>, received: u64) -> Result<()> {
    match declared {
        Some(n) if n != received => {
            Err(RegistryError::new(ErrorCode::SizeInvalid, format!("Content-Length {n} but {received} bytes received")))
        }
        _ => Ok(()),
    }
}

fn write_error(e: StoreError) -> RegistryError {
    match e {
        StoreError::BodyInterrupted(why) => RegistryError::new(ErrorCode::BlobUploadInvalid, why),
        other => internal(other),
    }
}

fn content_length<B>(req: &Request<B>) -> Result<Option<u64>> {
    req.header(header::CONTENT_LENGTH)
        .map(|v| v.parse().map_err(|_| RegistryError::new(ErrorCode::SizeInvalid, format!("bad Content-Length {v:?}"))))
        .transpose()
}

/// `PATCH|PUT|GET|DELETE /v2/<name>/blobs/uploads/<id>`.
pub async fn session<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    identity: &Identity,
    name: &RepoName,
    id: &str,
    req: Request<B::Incoming>,
) -> Result<Response<B::Outgoing>> {
    let loaded = load(stores, identity, name, id).await?;
    let session = &loaded.session;
    match req.method {
        Method::GET => Ok(session_headers(Response::new(StatusCode::NO_CONTENT), name, session)),
        Method::DELETE => {
            if !uploads::cancel(stores, loaded).await? {
                return Err(unknown(id));
            }
            Ok(Response::new(StatusCode::NO_CONTENT).empty())
        }
        Method::PATCH => {
            if let Some(stale) = stale(&req, name, session) {
                return Ok(stale);
            }
            let (part, written) = match receive_chunk(stores, name, session, req).await? {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(session_headers(Response::new(StatusCode::ACCEPTED), name, session).empty()),
                Err(refused) => return Ok(refused),
            };
            match uploads::append(stores, &loaded, part, &written).await? {
                Some(next) => Ok(session_headers(Response::new(StatusCode::ACCEPTED), name, &next.session).empty()),
                None => Ok(out_of_order(name, session, "a concurrent request changed the upload first".into())),
            }
        }
        Method::PUT => {
            if let Some(stale) = stale(&req, name, session) {
                return Ok(stale);
            }
            let digest = req
                .query_param("digest")
                .ok_or_else(|| RegistryError::new(ErrorCode::DigestInvalid, "PUT needs ?digest="))?;
            let digest = Digest::parse(&digest)?;
            let has_body = content_length(&req)?.is_none_or(|n| n > 0);
            let last = if has_body {
                match receive_chunk(stores, name, session, req).await? {
                    Ok(chunk) => chunk,
                    Err(refused) => return Ok(refused),
                }
            } else {
                None
            };
            match uploads::finish(stores, &loaded, last, &digest).await? {
                Finish::Stored => Ok(created(name, &digest)),
                Finish::Mismatch { actual } => Err(digest_mismatch(&actual, &digest)),
                Finish::Refused => Err(RegistryError::new(
                    ErrorCode::BlobUploadUnknown,
                    format!("upload {id:?} was finished or cancelled by a concurrent request"),
                )),
            }
        }
        _ => Err(RegistryError::new(
            ErrorCode::MethodNotAllowed,
            format!("method {} not allowed on an upload", req.method),
        )),
    }
}

fn unknown(id: &str) -> RegistryError {
    RegistryError::new(ErrorCode::BlobUploadUnknown, format!("no upload session {id:?}"))
}

/// The open session `id` of repository `name`, as the caller may see it: anyone else's, a
/// finished or cancelled one, and an expired one (cancelled now) are unknown.
async fn load<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    identity: &Identity,
    name: &RepoName,
    id: &str,
) -> Result<Loaded> {
    let loaded = uploads::load(stores, id).await?.ok_or_else(|| unknown(id))?;
    let session = &loaded.session;
    if session.repo != name.as_str() || session.owner.as_deref() != identity.subject() {
        return Err(unknown(id));
    }
    if session.state != SessionState::Open {
        return Err(unknown(id));
    }
    if session.expired((stores.now)(), stores.config.upload_expiry_secs) {
        uploads::cancel(stores, loaded).await?;
        return Err(unknown(id));
    }
    Ok(loaded)
}

/// A request made from an older `Location` than the session's current one: 416, session intact.
fn stale<S, B>(req: &Request<B>, name: &RepoName, session: &UploadSession) -> Option<Response<S>> {
    let version = req.query_param("_v")?;
    (version.parse::<u64>().ok() != Some(session.version)).then(|| {
        let err = RegistryError::new(
            ErrorCode::RangeInvalid,
            format!("stale upload location (version {version}, session is at {})", session.version),
        );
        session_headers(Response::error(&err), name, session)
    })
}

fn out_of_order<S>(name: &RepoName, session: &UploadSession, detail: String) -> Response<S> {
    session_headers(Response::error(&RegistryError::new(ErrorCode::RangeInvalid, detail)), name, session)
}

fn session_headers<S>(response: Response<S>, name: &RepoName, session: &UploadSession) -> Response<S> {
    response
        .header(header::LOCATION, format!("{}?_v={}", url::upload(name, &session.id), session.version))
        .header(header::RANGE, session.range())
        .header(UPLOAD_UUID, &session.id)
}

/// The request body as the session's next chunk, written under a fresh name: `None` when it
/// was empty (nothing stays), `Err(response)` when its `Content-Range` does not continue the
/// upload (416, nothing written).
async fn receive_chunk<M, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    session: &UploadSession,
    req: Request<B::Incoming>,
) -> Result<std::result::Result<Option<(Part, Written)>, Response<B::Outgoing>>> {
    let expected = match chunk_length(&req, name, session)? {
        Ok(expected) => expected,
        Err(refused) => return Ok(Err(refused)),
    };
    let (part, written) = write_chunk(stores, session, req.body, running_hashes(session)?, expected).await?;
    if written.size == 0 {
        blobs::discard(stores, &[part]).await;
        return Ok(Ok(None));
    }
    Ok(Ok(Some((part, written))))
}

/// The length a chunk must have: its `Content-Range` (which must continue the upload) or
/// `Content-Length`. `Err(response)` is a refusal that leaves the session as it was (416).
fn chunk_length<B, S>(
    req: &Request<B>,
    name: &RepoName,
    session: &UploadSession,
) -> Result<std::result::Result<Option<u64>, Response<S>>> {
    let declared = content_length(req)?;
    let Some(range) = req.header(header::CONTENT_RANGE) else { return Ok(Ok(declared)) };
    match parse_content_range(range) {
        Some((start, _)) if start != session.size => {
            Ok(Err(out_of_order(name, session, format!("chunk starts at {start}, upload is at {}", session.size))))
        }
        Some((start, end)) => {
            let length = end - start + 1;
            if declared.is_some_and(|n| n != length) {
                return Err(RegistryError::new(
                    ErrorCode::SizeInvalid,
                    format!("Content-Range is {length} bytes, Content-Length {}", declared.unwrap_or(0)),
                ));
            }
            Ok(Ok(Some(length)))
        }
        None => Ok(Err(out_of_order(name, session, format!("bad Content-Range {range:?}")))),
    }
}
