//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (a session, a whole blob with `?digest=`, or a
//! cross-repository mount), and the session endpoints `PATCH|PUT|GET|DELETE
//! /v2/<name>/blobs/uploads/<id>`. A session belongs to the identity that opened it: to anyone
//! else it does not exist.

use crate::auth::Identity;
use crate::auth::scope::Actions;
use crate::blobs::{self, BlobRecord, Part, internal};
use crate::digest::{Digest, RunningHash};
use crate::errcode::{ErrorCode, RegistryError};
use crate::keys;
use crate::message::{CONTENT_DIGEST, Request, Response};
use crate::name::RepoName;
use crate::range::parse_content_range;
use crate::route::url;
use crate::store::{BlobStore, MetaStore, StoreError, Stores, hashes_for};
use crate::upload::{UploadSession, valid_id};
use http::{HeaderName, Method, StatusCode, header};

const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
/// How many upload objects one new session looks at for expired sessions to clean up.
const SWEEP_BATCH: u32 = 16;

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
    if let Some(digest) = req.query_param("digest") {
        return monolithic(stores, name, &Digest::parse(&digest)?, req).await;
    }
    sweep_expired(stores).await;
    let id = hex::encode((stores.random)());
    let mut session = UploadSession::new(name.as_str(), id, (stores.now)());
    session.owner = identity.subject().map(str::to_owned);
    save(stores, &session).await?;
    Ok(session_headers(Response::new(StatusCode::ACCEPTED), name, &session).empty())
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
            Ok(from) => blobs::linked(stores, &from, digest).await.is_ok(),
            Err(_) => false,
        },
        None => blobs::record(stores, digest).await?.is_some(),
    };
    if !available {
        return Ok(None);
    }
    blobs::link(stores, name, digest).await?;
    Ok(Some(created(name, digest)))
}

fn created<S>(name: &RepoName, digest: &Digest) -> Response<S> {
    Response::new(StatusCode::CREATED)
        .header(header::LOCATION, url::blob(name, digest))
        .header(CONTENT_DIGEST, digest)
        .empty()
}

/// A whole blob in the POST: stream it into a new object while the blob store hashes it; keep it
/// only if it hashes to `digest` (and has the announced length). On any mismatch nothing stays.
async fn monolithic<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
    req: Request<B::Incoming>,
) -> Result<Response<B::Outgoing>> {
    let declared = content_length(&req)?;
    let object = keys::new_part((stores.random)());
    let written =
        stores.blobs.write(&object, req.body, hashes_for(&[digest.algorithm()])).await.map_err(write_error)?;
    let part = Part { name: object, size: written.size };
    let actual = written.hashes.into_iter().next().map(Digest::from_hash);
    if let Err(err) = check_length(declared, written.size).and_then(|()| check_digest(actual.as_ref(), digest)) {
        blobs::discard(stores, &[part]).await;
        return Err(err);
    }
    blobs::commit(stores, name, digest, BlobRecord { size: written.size, parts: vec![part] }).await?;
    Ok(created(name, digest))
}

fn check_length(declared: Option<u64>, received: u64) -> Result<()> {
    match declared {
        Some(n) if n != received => {
            Err(RegistryError::new(ErrorCode::SizeInvalid, format!("Content-Length {n} but {received} bytes received")))
        }
        _ => Ok(()),
    }
}

fn check_digest(actual: Option<&Digest>, expected: &Digest) -> Result<()> {
    match actual {
        Some(actual) if actual == expected => Ok(()),
        Some(actual) => {
            Err(RegistryError::new(ErrorCode::DigestInvalid, format!("content hashes to {actual}, not {expected}")))
        }
        None => Err(RegistryError::new(ErrorCode::Internal, "blob store returned no hash")),
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
    let session = load(stores, name, id).await?;
    if session.owner.as_deref() != identity.subject() {
        return Err(unknown(id));
    }
    match req.method {
        Method::GET => Ok(session_headers(Response::new(StatusCode::NO_CONTENT), name, &session)),
        Method::DELETE => {
            cancel(stores, &session).await?;
            Ok(Response::new(StatusCode::NO_CONTENT).empty())
        }
        Method::PATCH => {
            if let Some(stale) = stale(&req, name, &session) {
                return Ok(stale);
            }
            match append(stores, name, session, req).await? {
                Ok(session) => Ok(session_headers(Response::new(StatusCode::ACCEPTED), name, &session).empty()),
                Err(refused) => Ok(refused),
            }
        }
        Method::PUT => {
            if let Some(stale) = stale(&req, name, &session) {
                return Ok(stale);
            }
            let digest = req
                .query_param("digest")
                .ok_or_else(|| RegistryError::new(ErrorCode::DigestInvalid, "PUT needs ?digest="))?;
            let digest = Digest::parse(&digest)?;
            let has_body = content_length(&req)?.is_none_or(|n| n > 0);
            let session = if has_body {
                match append(stores, name, session, req).await? {
                    Ok(session) => session,
                    Err(refused) => return Ok(refused),
                }
            } else {
                session
            };
            finish(stores, name, session, &digest).await
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

async fn load<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>, name: &RepoName, id: &str) -> Result<UploadSession> {
    if !valid_id(id) {
        return Err(unknown(id));
    }
    let Some(bytes) = stores.meta.get(&keys::upload(id)).await.map_err(internal)? else { return Err(unknown(id)) };
    let session: UploadSession = serde_json::from_slice(&bytes)
        .map_err(|e| RegistryError::new(ErrorCode::Internal, format!("corrupt upload session {id}: {e}")))?;
    if session.repo != name.as_str() {
        return Err(unknown(id));
    }
    if session.expired((stores.now)(), stores.config.upload_expiry_secs) {
        cancel(stores, &session).await?;
        return Err(unknown(id));
    }
    Ok(session)
}

async fn save<M: MetaStore, B>(stores: &Stores<M, B>, session: &UploadSession) -> Result<()> {
    let json = serde_json::to_vec(session).expect("sessions serialize");
    stores.meta.set(&keys::upload(&session.id), &json).await.map_err(internal)
}

/// Remove a session and its chunks (parts first: a crash in between leaves a record that the
/// next look at it removes again).
async fn cancel<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>, session: &UploadSession) -> Result<()> {
    blobs::discard(stores, &session.parts).await;
    stores.meta.delete(&keys::upload(&session.id)).await.map_err(internal)
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

/// Append the request body as the session's next chunk. `Err(response)` is a refusal that
/// leaves the session as it was (416 for a chunk that does not continue the upload).
async fn append<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    session: UploadSession,
    req: Request<B::Incoming>,
) -> Result<std::result::Result<UploadSession, Response<B::Outgoing>>> {
    let declared = content_length(&req)?;
    let expected = match req.header(header::CONTENT_RANGE) {
        None => declared,
        Some(range) => match parse_content_range(range) {
            Some((start, _)) if start != session.size => {
                return Ok(Err(out_of_order(
                    name,
                    &session,
                    format!("chunk starts at {start}, upload is at {}", session.size),
                )));
            }
            Some((start, end)) => {
                let length = end - start + 1;
                if declared.is_some_and(|n| n != length) {
                    return Err(RegistryError::new(
                        ErrorCode::SizeInvalid,
                        format!("Content-Range is {length} bytes, Content-Length {}", declared.unwrap_or(0)),
                    ));
                }
                Some(length)
            }
            None => return Ok(Err(out_of_order(name, &session, format!("bad Content-Range {range:?}")))),
        },
    };
    let hashes =
        session.hashes().ok_or_else(|| RegistryError::new(ErrorCode::Internal, "corrupt hash state in session"))?;
    let object = keys::upload_chunk(&session.id, session.version + 1);
    let written = match stores.blobs.write(&object, req.body, hashes).await {
        Ok(written) => written,
        // Another request wrote this version first: this chunk is concurrent, not next.
        Err(StoreError::AlreadyExists) => {
            return Ok(Err(out_of_order(name, &session, "a concurrent chunk was written first".into())));
        }
        Err(e) => return Err(write_error(e)),
    };
    let part = Part { name: object, size: written.size };
    if let Err(err) = check_length(expected, written.size) {
        blobs::discard(stores, &[part]).await;
        return Err(err);
    }
    if written.size == 0 {
        blobs::discard(stores, &[part]).await;
        return Ok(Ok(session));
    }
    let next = session.advanced(part, &written.hashes);
    save(stores, &next).await?;
    Ok(Ok(next))
}

/// Close the session as blob `digest`: its chunks become the blob's parts, no copy.
async fn finish<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    session: UploadSession,
    digest: &Digest,
) -> Result<Response<B::Outgoing>> {
    let hashes =
        session.hashes().ok_or_else(|| RegistryError::new(ErrorCode::Internal, "corrupt hash state in session"))?;
    let record = BlobRecord { size: session.size, parts: session.parts.clone() };
    let actual = match hashes.into_iter().find(|h| h.algorithm() == digest.algorithm()) {
        Some(running) => Digest::from_hash(running),
        // Not run along the upload (SHA-512): hash the chunks now.
        None => Digest::from_hash(
            stores
                .blobs
                .hash_extents(record.extents(0, record.size), RunningHash::new(digest.algorithm()))
                .await
                .map_err(internal)?,
        ),
    };
    if let Err(err) = check_digest(Some(&actual), digest) {
        cancel(stores, &session).await?;
        return Err(err);
    }
    blobs::commit(stores, name, digest, record).await?;
    stores.meta.delete(&keys::upload(&session.id)).await.map_err(internal)?;
    Ok(created(name, digest))
}

/// Look at a few upload objects from a random point and remove sessions that have expired.
/// Cheap and bounded; over many uploads it reaches every abandoned session.
async fn sweep_expired<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>) {
    let start = format!("uploads/{}", hex::encode((stores.random)()));
    let Ok((names, _)) = stores.blobs.list("uploads/", Some(&start), SWEEP_BATCH).await else { return };
    let mut seen = Vec::new();
    for id in names.iter().filter_map(|n| n.strip_prefix("uploads/")?.split('/').next()) {
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        // Chunks whose session record is gone belong to a finished blob: leave them.
        let Ok(Some(bytes)) = stores.meta.get(&keys::upload(id)).await else { continue };
        let Ok(session) = serde_json::from_slice::<UploadSession>(&bytes) else { continue };
        if session.expired((stores.now)(), stores.config.upload_expiry_secs) {
            let _ = cancel(stores, &session).await;
        }
    }
}
