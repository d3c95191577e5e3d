//! The `berth:blob-store/store` export over S3 (wasm32 only): requests out through `wasi:http`,
//! bytes in and out as streams. What answers mean is in [`crate::answer`], settings in
//! [`crate::settings`].

use crate::answer::{self, Failure};
use crate::part_size;
use crate::settings::{self, Settings};
use bindings::exports::berth::blob_store::store::{
    Error, Extent, Guest, HashAlgorithm, HashState, ObjectInfo, Page, Written,
};
use rusty_s3::S3Action;
use spin_sdk::wasip3::http::types::{self, ErrorCode, Fields, Method, Trailers};
use spin_sdk::wit_bindgen::{FutureReader, FutureWriter, StreamReader, StreamResult};
use std::time::Duration;

mod bindings {
    spin_sdk::wit_bindgen::generate!({
        path: "../../wit",
        world: "berth:blob-store/http-provider",
        runtime_path: "::spin_sdk::wit_bindgen::rt",
        generate_all,
    });
}

struct Provider;

bindings::export!(Provider with_types_in bindings);

/// How long the URLs of the provider's own requests are valid. They are used at once; S3 checks
/// the expiry when a request starts, so a long transfer is not cut. The margin covers clock skew.
const REQUEST_URL: Duration = Duration::from_secs(900);

/// How much of an error body is read (S3's XML errors are a few hundred bytes).
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Listings and multipart answers are small XML documents; a bigger one is not S3's.
const XML_BODY_LIMIT: usize = 4 * 1024 * 1024;

async fn settings() -> Result<Settings, Error> {
    let mut values = std::collections::BTreeMap::new();
    for name in settings::VARIABLES {
        match spin_sdk::variables::get(name).await {
            Ok(value) => {
                values.insert(name, value);
            }
            Err(spin_sdk::variables::Error::Undefined(_)) => {}
            Err(e) => return Err(Error::Other(format!("the S3 blob store cannot read variable {name}: {e:?}"))),
        }
    }
    settings::parse(&|name| values.get(name).cloned()).map_err(|e| Error::Other(e.to_string()))
}

fn checked(s: &Settings, name: &str) -> Result<String, Error> {
    match settings::check_name(s, name) {
        Some(why) => Err(Error::InvalidName(why)),
        None => Ok(s.key(name)),
    }
}

fn from_failure(failure: Failure) -> Error {
    match failure {
        Failure::NotFound => Error::NotFound,
        Failure::AlreadyExists => Error::AlreadyExists,
        // Still conflicting after every retry (see `conditional`): try again later.
        Failure::Unavailable(why) | Failure::Conflict(why) => Error::Unavailable(why),
        Failure::Other(why) => Error::Other(why),
    }
}

/// A received response's body, and the writer that must live until the body has been read.
struct Body {
    stream: StreamReader<u8>,
    trailers: FutureReader<Result<Option<Trailers>, ErrorCode>>,
    _consumed: FutureWriter<Result<(), ErrorCode>>,
}

fn body_of(response: types::Response) -> Body {
    let (consumed, consumed_reader) = spin_sdk::wasip3::wit_future::new(|| Ok(()));
    let (stream, trailers) = types::Response::consume_body(response, consumed_reader);
    Body { stream, trailers, _consumed: consumed }
}

/// Up to `limit` bytes of a body (the rest is dropped).
async fn read_body(response: types::Response, limit: usize) -> Vec<u8> {
    let mut body = body_of(response);
    let mut bytes = Vec::new();
    while bytes.len() < limit {
        let (result, chunk) = body.stream.read(Vec::with_capacity(64 * 1024)).await;
        bytes.extend_from_slice(&chunk);
        if !matches!(result, StreamResult::Complete(_)) {
            break;
        }
    }
    bytes.truncate(limit);
    bytes
}

/// One request to S3: `url` is presigned, `headers` are the ones it signed (and any others).
async fn send(
    s: &Settings,
    method: Method,
    url: &url::Url,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<types::Response, Error> {
    let mut list: Vec<(String, Vec<u8>)> =
        headers.iter().map(|(name, value)| (name.to_string(), value.as_bytes().to_vec())).collect();
    if let Some(bytes) = &body {
        list.push(("content-length".into(), bytes.len().to_string().into_bytes()));
    }
    let fields = Fields::from_list(&list).map_err(|e| Error::Other(format!("S3 request headers: {e:?}")))?;
    let (contents, feed) = match body {
        Some(bytes) => {
            let (writer, reader) = spin_sdk::wasip3::wit_stream::new::<u8>();
            (Some(reader), Some((writer, bytes)))
        }
        None => (None, None),
    };
    // No trailers: the default is sent when the writer is dropped.
    let (_, trailers) = spin_sdk::wasip3::wit_future::new(|| Ok(None));
    let (request, _sent) = types::Request::new(fields, contents, trailers, Some(request_options(s)));
    if !berth_outbound::aim(&request, &method, url) {
        return Err(Error::Other(format!("S3 at {}: cannot build a request for this endpoint", s.origin())));
    }
    if let Some((mut writer, bytes)) = feed {
        spin_sdk::wasip3::spawn(async move {
            writer.write_all(bytes).await;
        });
    }
    spin_sdk::wasip3::http::client::send(request).await.map_err(|code| match code {
        ErrorCode::HttpRequestDenied => Error::Other(format!(
            "S3 at {}: the host refused the request: allowed_outbound_hosts must list the endpoint",
            s.origin()
        )),
        code => Error::Unavailable(format!("S3 at {}: {code:?}", s.origin())),
    })
}

/// Timeouts of one request: a host that does not support one leaves it unset (not an error).
fn request_options(s: &Settings) -> types::RequestOptions {
    let options = types::RequestOptions::new();
    let timeout = Some(s.timeout_secs * 1_000_000_000);
    let _ = options.set_connect_timeout(timeout);
    let _ = options.set_first_byte_timeout(timeout);
    let _ = options.set_between_bytes_timeout(timeout);
    options
}

/// The response if it is a success; else the failure it stands for.
async fn success(s: &Settings, response: types::Response, what: &str) -> Result<types::Response, Error> {
    answered(s, response, what).await.map_err(from_failure)
}

async fn answered(s: &Settings, response: types::Response, what: &str) -> Result<types::Response, Failure> {
    let status = response.get_status_code();
    if (200..300).contains(&status) {
        return Ok(response);
    }
    let body = read_body(response, ERROR_BODY_LIMIT).await;
    Err(answer::classify(status, &String::from_utf8_lossy(&body), what, &s.origin()))
}

/// Tries of a conditional write that S3 answers `409 ConditionalRequestConflict` (another
/// conditional write of the key in flight), with backoff between them: 25 ms, doubling.
const CONFLICT_TRIES: u32 = 7;

/// Send a conditional write (`If-None-Match: *`) made by `attempt` until S3 decides it: a
/// conflict with a concurrent write of the same key is sent again after a backoff (jittered, so
/// the writers part), as AWS advises; past the last try it is `Unavailable` (503).
async fn conditional(
    s: &Settings,
    what: &str,
    mut attempt: impl AsyncFnMut() -> Result<types::Response, Error>,
) -> Result<types::Response, Error> {
    for tried in 1.. {
        match answered(s, attempt().await?, what).await {
            Err(Failure::Conflict(why)) if tried < CONFLICT_TRIES => {
                let jitter = spin_sdk::wasip3::random::random::get_random_u64() % 25;
                let millis = (25u64 << (tried - 1)) + jitter;
                eprintln!("berth-blob-s3: {why}: sent again in {millis} ms");
                spin_sdk::wasip3::clocks::monotonic_clock::wait_for(millis * 1_000_000).await;
            }
            answer => return answer.map_err(from_failure),
        }
    }
    unreachable!("the loop returns")
}

/// Tries of an idempotent request (a read: HEAD, GET, LIST) that S3 answers as unavailable
/// (429, 5xx: an internal error, SlowDown) or that does not reach it: AWS SDKs' standard retry
/// mode makes 3 attempts with backoff. Writes are not sent again here: a conditional create
/// whose first try succeeded unseen would find its own object (`conditional` retries only S3's
/// explicit 409).
const IDEMPOTENT_TRIES: u32 = 3;

/// Send an idempotent request made by `attempt` until S3 answers it other than as unavailable
/// (the answer is returned as it is, success or not), backing off 50 ms, then 200 ms (jittered).
async fn idempotent(
    s: &Settings,
    what: &str,
    mut attempt: impl AsyncFnMut() -> Result<types::Response, Error>,
) -> Result<types::Response, Error> {
    for tried in 1.. {
        let why = match attempt().await {
            Ok(response) if matches!(response.get_status_code(), 429 | 500 | 502 | 503 | 504) => {
                match answered(s, response, what).await {
                    Err(Failure::Unavailable(why)) if tried < IDEMPOTENT_TRIES => why,
                    answer => return answer.map_err(from_failure),
                }
            }
            Err(Error::Unavailable(why)) if tried < IDEMPOTENT_TRIES => why,
            answer => return answer,
        };
        let jitter = spin_sdk::wasip3::random::random::get_random_u64() % 50;
        let millis = (50u64 << (2 * (tried - 1))) + jitter;
        eprintln!("berth-blob-s3: {why}: sent again in {millis} ms");
        spin_sdk::wasip3::clocks::monotonic_clock::wait_for(millis * 1_000_000).await;
    }
    unreachable!("the loop returns")
}

/// A success's XML body; S3 may answer 200 with an `<Error>` (CompleteMultipartUpload does).
async fn xml(s: &Settings, response: types::Response, what: &str) -> Result<String, Error> {
    let body = String::from_utf8_lossy(&read_body(response, XML_BODY_LIMIT).await).into_owned();
    if body.contains("<Error>") {
        return Err(from_failure(answer::classify(500, &body, what, &s.origin())));
    }
    Ok(body)
}

fn header(response: &types::Response, name: &str) -> Option<String> {
    let values = response.get_headers().get(name);
    values.first().map(|v| String::from_utf8_lossy(v).trim().to_owned())
}

berth_hash_state::wit_hash_state_conversions!(HashState, HashAlgorithm, Error);

/// A multipart upload in progress: its id and the ETags of its parts so far.
struct Multipart {
    id: String,
    etags: Vec<String>,
}

impl Multipart {
    async fn start(s: &Settings, key: &str) -> Result<Multipart, Error> {
        let url = s.bucket.create_multipart_upload(s.credentials.as_ref(), key).sign(REQUEST_URL);
        let what = format!("CreateMultipartUpload of {key}");
        let response = success(s, send(s, Method::Post, &url, &[], None).await?, &what).await?;
        let body = xml(s, response, &what).await?;
        let parsed = rusty_s3::actions::CreateMultipartUpload::parse_response(&body)
            .map_err(|e| Error::Other(format!("S3 at {}: {what}: unreadable answer ({e})", s.origin())))?;
        Ok(Multipart { id: parsed.upload_id().to_owned(), etags: Vec::new() })
    }

    async fn upload(&mut self, s: &Settings, key: &str, bytes: Vec<u8>) -> Result<(), Error> {
        let number = self.next_number()?;
        let url = s.bucket.upload_part(s.credentials.as_ref(), key, number, &self.id).sign(REQUEST_URL);
        let what = format!("UploadPart {number} of {key}");
        let response = success(s, send(s, Method::Put, &url, &[], Some(bytes)).await?, &what).await?;
        let etag = header(&response, "etag")
            .ok_or_else(|| Error::Other(format!("S3 at {}: {what}: no ETag in the answer", s.origin())))?;
        drop(read_body(response, ERROR_BODY_LIMIT).await);
        self.etags.push(etag);
        Ok(())
    }

    /// Copy `length` bytes of `source` from `offset` as the next part, inside S3 (UploadPartCopy).
    async fn copy(&mut self, s: &Settings, key: &str, source: &str, offset: u64, length: u64) -> Result<(), Error> {
        let number = self.next_number()?;
        let copy_source =
            format!("/{}/{}", crate::settings::encode_key(s.bucket.name()), crate::settings::encode_key(source));
        let range = format!("bytes={offset}-{}", offset + length - 1);
        let mut action = s.bucket.upload_part(s.credentials.as_ref(), key, number, &self.id);
        action.headers_mut().insert("x-amz-copy-source", copy_source.clone());
        action.headers_mut().insert("x-amz-copy-source-range", range.clone());
        let url = action.sign(REQUEST_URL);
        let what = format!("UploadPartCopy {number} of {key} from {source} ({range})");
        let headers = [("x-amz-copy-source", copy_source.as_str()), ("x-amz-copy-source-range", range.as_str())];
        let response = success(s, send(s, Method::Put, &url, &headers, None).await?, &what).await?;
        let body = xml(s, response, &what).await?;
        let etag = crate::answer::element(&body, "ETag")
            .ok_or_else(|| Error::Other(format!("S3 at {}: {what}: no ETag in the answer", s.origin())))?;
        self.etags.push(etag.replace("&quot;", "\"").replace("&#34;", "\""));
        Ok(())
    }

    fn next_number(&self) -> Result<u16, Error> {
        u16::try_from(self.etags.len() + 1)
            .ok()
            .filter(|&n| n <= 10_000)
            .ok_or_else(|| Error::Other("object too large for S3's 10,000 parts".into()))
    }

    /// Make the object visible, unless one exists under `key` already.
    async fn complete(&self, s: &Settings, key: &str) -> Result<(), Error> {
        let etags = self.etags.iter().map(String::as_str);
        let mut action = s.bucket.complete_multipart_upload(s.credentials.as_ref(), key, &self.id, etags);
        action.headers_mut().insert("if-none-match", "*");
        let url = action.sign(REQUEST_URL);
        let body = action.body().into_bytes();
        let what = format!("CompleteMultipartUpload of {key}");
        let response = conditional(s, &what, async || {
            send(s, Method::Post, &url, &[("if-none-match", "*")], Some(body.clone())).await
        })
        .await?;
        xml(s, response, &what).await.map(drop)
    }

    /// Best effort: a bucket lifecycle rule (`AbortIncompleteMultipartUpload`) clears what a
    /// killed write leaves.
    async fn abort(self, s: &Settings, key: &str) {
        let url = s.bucket.abort_multipart_upload(s.credentials.as_ref(), key, &self.id).sign(REQUEST_URL);
        if let Ok(response) = send(s, Method::Delete, &url, &[], None).await {
            drop(read_body(response, ERROR_BODY_LIMIT).await);
        }
    }
}

/// Create `key` from `bytes` in one PUT, unless it exists.
async fn put_new(s: &Settings, key: &str, bytes: Vec<u8>) -> Result<(), Error> {
    let mut action = s.bucket.put_object(s.credentials.as_ref(), key);
    action.headers_mut().insert("if-none-match", "*");
    let url = action.sign(REQUEST_URL);
    let what = format!("PutObject of {key}");
    let response = conditional(s, &what, async || {
        send(s, Method::Put, &url, &[("if-none-match", "*")], Some(bytes.clone())).await
    })
    .await?;
    drop(read_body(response, ERROR_BODY_LIMIT).await);
    Ok(())
}

async fn head(s: &Settings, key: &str) -> Result<u64, Error> {
    let url = s.bucket.head_object(s.credentials.as_ref(), key).sign(REQUEST_URL);
    let what = format!("HeadObject of {key}");
    let response =
        success(s, idempotent(s, &what, async || send(s, Method::Head, &url, &[], None).await).await?, &what).await?;
    header(&response, "content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Other(format!("S3 at {}: HeadObject of {key}: no Content-Length", s.origin())))
}

/// The bytes `offset..offset + length` of `key` (to its end when `length` is none), as S3
/// streams them, after checking that S3 sends exactly that many.
async fn get(s: &Settings, key: &str, offset: u64, length: Option<u64>) -> Result<(Body, u64), Error> {
    // A whole object is read without a Range: S3 refuses `bytes=0-` of an empty one.
    let range = match length {
        Some(length) => Some(format!("bytes={offset}-{}", offset + length - 1)),
        None if offset > 0 => Some(format!("bytes={offset}-")),
        None => None,
    };
    let mut action = s.bucket.get_object(s.credentials.as_ref(), key);
    if let Some(range) = &range {
        action.headers_mut().insert("range", range.clone());
    }
    let url = action.sign(REQUEST_URL);
    let what = format!("GetObject of {key} ({})", range.as_deref().unwrap_or("whole"));
    let headers: Vec<(&str, &str)> = range.iter().map(|r| ("range", r.as_str())).collect();
    let response = idempotent(s, &what, async || send(s, Method::Get, &url, &headers, None).await).await?;
    if response.get_status_code() == 416 {
        return Err(Error::Other(format!("{what}: the range is past the end of the object")));
    }
    let response = success(s, response, &what).await?;
    if range.is_some() && response.get_status_code() != 206 {
        // A server that ignored the Range would send the wrong bytes.
        return Err(Error::Other(format!(
            "S3 at {}: {what}: answered {} to a range",
            s.origin(),
            response.get_status_code()
        )));
    }
    let sent: u64 = header(&response, "content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Other(format!("S3 at {}: {what}: no Content-Length", s.origin())))?;
    if length.is_some_and(|length| length != sent) {
        return Err(Error::Other(format!("{what}: the range is past the end of the object")));
    }
    Ok((body_of(response), sent))
}

/// Append bytes `offset..offset + length` of `key` to `buf`.
async fn read_into(s: &Settings, key: &str, offset: u64, length: u64, buf: &mut Vec<u8>) -> Result<(), Error> {
    let (body, _) = get(s, key, offset, Some(length)).await?;
    let Body { mut stream, trailers, _consumed } = body;
    let end = buf.len() + length as usize;
    while buf.len() < end {
        let (result, chunk) = stream.read(Vec::with_capacity((end - buf.len()).min(256 * 1024))).await;
        buf.extend_from_slice(&chunk);
        if !matches!(result, StreamResult::Complete(_)) {
            break;
        }
    }
    drop(stream);
    if trailers.await.is_err() || buf.len() != end {
        return Err(Error::Unavailable(format!("S3 at {}: the read of {key} broke off", s.origin())));
    }
    Ok(())
}

/// The smallest part S3 accepts but for the last one.
const MIN_PART: u64 = 5 * 1024 * 1024;

/// S3 copies at most 5 GiB per part; longer runs are copied 4 GiB at a time, which leaves more
/// than 1 GiB (never a part below the minimum) for the next piece.
const MAX_COPY: u64 = 5 * 1024 * 1024 * 1024;
const COPY_STEP: u64 = 4 * 1024 * 1024 * 1024;

/// The parts of a joined object: runs of at least [`MIN_PART`] are copied inside S3; shorter
/// ones (and what fills a part up) are read through, one part at most in memory.
async fn join_parts(
    s: &Settings,
    key: &str,
    upload: &mut Multipart,
    sources: &[(String, u64, u64)],
) -> Result<u64, Error> {
    let mut buf: Vec<u8> = Vec::new();
    let mut size = 0;
    for (source, offset, length) in sources {
        let (mut at, end) = (*offset, offset + length);
        while at < end {
            let remaining = end - at;
            if buf.is_empty() && remaining >= MIN_PART {
                let piece = if remaining <= MAX_COPY { remaining } else { COPY_STEP };
                upload.copy(s, key, source, at, piece).await?;
                at += piece;
            } else {
                let part = part_size(upload.etags.len() + 1);
                let want = remaining.min((part - buf.len()) as u64);
                read_into(s, source, at, want, &mut buf).await?;
                at += want;
                if buf.len() == part {
                    upload.upload(s, key, std::mem::take(&mut buf)).await?;
                }
            }
        }
        size += length;
    }
    if !buf.is_empty() || upload.etags.is_empty() {
        upload.upload(s, key, buf).await?;
    }
    Ok(size)
}

/// Copy `from` into `to`; false if a byte is missing or the reader went away.
async fn pipe(from: Body, to: &mut spin_sdk::wit_bindgen::StreamWriter<u8>, expected: u64) -> bool {
    let Body { mut stream, trailers, _consumed } = from;
    let mut copied = 0u64;
    loop {
        let (result, chunk) = stream.read(Vec::with_capacity(256 * 1024)).await;
        copied += chunk.len() as u64;
        if !chunk.is_empty() && !to.write_all(chunk).await.is_empty() {
            return false;
        }
        if !matches!(result, StreamResult::Complete(_)) {
            break;
        }
    }
    drop(stream);
    trailers.await.is_ok() && copied == expected
}

type Transfer = (StreamReader<u8>, FutureReader<Result<(), Error>>);

/// The writer and reader of a transfer's outcome.
type Outcome = (FutureWriter<Result<(), Error>>, FutureReader<Result<(), Error>>);

fn outcome_future() -> Outcome {
    bindings::wit_future::new::<Result<(), Error>>(|| Err(Error::Other("the S3 transfer stopped".into())))
}

/// S3's body handed on as it is: the bytes do not pass through this component.
fn hand_on(body: Body) -> Transfer {
    let Body { stream, trailers, _consumed } = body;
    let (done, done_reader) = outcome_future();
    spin_sdk::wit_bindgen::spawn(async move {
        let outcome = match trailers.await {
            Ok(_) => Ok(()),
            Err(code) => Err(Error::Other(format!("the S3 transfer broke off: {code:?}"))),
        };
        drop(_consumed);
        let _ = done.write(outcome).await;
    });
    (stream, done_reader)
}

impl Guest for Provider {
    async fn write(
        name: String,
        mut data: StreamReader<u8>,
        complete: FutureReader<bool>,
        hashes: Vec<HashState>,
    ) -> Result<Written, Error> {
        let s = settings().await?;
        let key = checked(&s, &name)?;
        let mut hashers = hashes.iter().map(restore_hash).collect::<Result<Vec<_>, _>>()?;
        let mut upload: Option<Multipart> = None;
        let mut size = 0u64;
        // Small objects (manifests, index entries) never take a part's memory: the buffer starts
        // small, and an object that outgrows it gets one part's size at once (no regrowth copies).
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        let streamed: Result<(), Error> = async {
            loop {
                let part = part_size(upload.as_ref().map_or(0, |u| u.etags.len()) + 1);
                if buf.len() == buf.capacity() {
                    buf.reserve_exact(part - buf.len());
                }
                let before = buf.len();
                let (result, filled) = data.read(std::mem::take(&mut buf)).await;
                buf = filled;
                hashers.iter_mut().for_each(|h| h.update(&buf[before..]));
                size += (buf.len() - before) as u64;
                if buf.len() == part {
                    let full = std::mem::take(&mut buf);
                    match upload.as_mut() {
                        Some(upload) => upload.upload(&s, &key, full).await?,
                        None => {
                            let mut started = Multipart::start(&s, &key).await?;
                            let uploaded = started.upload(&s, &key, full).await;
                            upload = Some(started);
                            uploaded?;
                        }
                    }
                    // Freed by now (the request body has gone): the next part's buffer reuses it.
                    buf = Vec::with_capacity(part_size(upload.as_ref().map_or(0, |u| u.etags.len()) + 1));
                }
                if !matches!(result, StreamResult::Complete(_)) {
                    return Ok(());
                }
            }
        }
        .await;
        drop(data);
        let committed = match streamed {
            Err(e) => Err(e),
            // Only a writer that saw its bytes arrive whole commits (a cut body also ends).
            Ok(()) if !complete.await => Err(Error::Other("write not confirmed: the data did not arrive whole".into())),
            Ok(()) => match upload.as_mut() {
                None => put_new(&s, &key, std::mem::take(&mut buf)).await,
                Some(multipart) => {
                    let last = std::mem::take(&mut buf);
                    let uploaded = if last.is_empty() { Ok(()) } else { multipart.upload(&s, &key, last).await };
                    match uploaded {
                        Ok(()) => multipart.complete(&s, &key).await,
                        Err(e) => Err(e),
                    }
                }
            },
        };
        if let Err(e) = committed {
            if let Some(upload) = upload {
                upload.abort(&s, &key).await;
            }
            return Err(e);
        }
        Ok(Written { size, hashes: hashers.iter().map(save_hash).collect() })
    }

    async fn read(name: String, offset: u64, length: Option<u64>) -> Result<Transfer, Error> {
        let s = settings().await?;
        let key = checked(&s, &name)?;
        // An empty range is not sent (S3 refuses one): the object and the range are only checked.
        let empty_of = match length {
            Some(0) => Some(head(&s, &key).await?),
            None if offset > 0 => Some(head(&s, &key).await?).filter(|&size| size <= offset),
            _ => None,
        };
        if let Some(size) = empty_of {
            if size < offset {
                return Err(Error::Other(format!("{name}: the range is past the end of the object")));
            }
            let (_, reader) = bindings::wit_stream::new::<u8>();
            let (done, done_reader) = outcome_future();
            spin_sdk::wit_bindgen::spawn(async move {
                let _ = done.write(Ok(())).await;
            });
            return Ok((reader, done_reader));
        }
        let (body, _) = get(&s, &key, offset, length).await?;
        Ok(hand_on(body))
    }

    async fn read_extents(extents: Vec<Extent>) -> Result<Transfer, Error> {
        let s = settings().await?;
        let mut keys = Vec::with_capacity(extents.len());
        for extent in &extents {
            let key = checked(&s, &extent.name)?;
            if head(&s, &key).await? < extent.offset + extent.length {
                return Err(Error::Other(format!("{}: the range is past the end of the object", extent.name)));
            }
            keys.push(key);
        }
        let wanted: Vec<(String, u64, u64)> = keys
            .into_iter()
            .zip(&extents)
            .filter(|(_, e)| e.length > 0)
            .map(|(key, e)| (key, e.offset, e.length))
            .collect();
        if let [(key, offset, length)] = wanted.as_slice() {
            let (body, _) = get(&s, key, *offset, Some(*length)).await?;
            return Ok(hand_on(body));
        }
        // Several objects: one after another through one stream.
        let (mut writer, reader) = bindings::wit_stream::new::<u8>();
        let (done, done_reader) = outcome_future();
        spin_sdk::wit_bindgen::spawn(async move {
            let mut outcome = Ok(());
            for (key, offset, length) in wanted {
                let whole = match get(&s, &key, offset, Some(length)).await {
                    Ok((body, sent)) => pipe(body, &mut writer, sent).await,
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                };
                if !whole {
                    outcome = Err(Error::Other(format!("the S3 transfer of {key} broke off")));
                    break;
                }
            }
            drop(writer);
            let _ = done.write(outcome).await;
        });
        Ok((reader, done_reader))
    }

    async fn stat(name: String) -> Result<ObjectInfo, Error> {
        let s = settings().await?;
        let key = checked(&s, &name)?;
        Ok(ObjectInfo { size: head(&s, &key).await? })
    }

    async fn delete(name: String) -> Result<(), Error> {
        let s = settings().await?;
        let key = checked(&s, &name)?;
        head(&s, &key).await?; // S3 deletes a missing key happily; the interface says not-found
        let url = s.bucket.delete_object(s.credentials.as_ref(), &key).sign(REQUEST_URL);
        let what = format!("DeleteObject of {key}");
        let response = success(&s, send(&s, Method::Delete, &url, &[], None).await?, &what).await?;
        drop(read_body(response, ERROR_BODY_LIMIT).await);
        Ok(())
    }

    async fn compose(name: String, extents: Vec<Extent>) -> Result<Option<ObjectInfo>, Error> {
        let s = settings().await?;
        let key = checked(&s, &name)?;
        let mut sources = Vec::with_capacity(extents.len());
        for extent in extents.iter().filter(|e| e.length > 0) {
            let source = checked(&s, &extent.name)?;
            if head(&s, &source).await? < extent.offset + extent.length {
                return Err(Error::Other(format!("{}: the range is past the end of the object", extent.name)));
            }
            sources.push((source, extent.offset, extent.length));
        }
        let mut upload = Multipart::start(&s, &key).await?;
        let joined = match join_parts(&s, &key, &mut upload, &sources).await {
            Ok(size) => upload.complete(&s, &key).await.map(|()| size),
            Err(e) => Err(e),
        };
        match joined {
            Ok(size) => Ok(Some(ObjectInfo { size })),
            Err(e) => {
                upload.abort(&s, &key).await;
                Err(e)
            }
        }
    }

    /// A provider component serves no response: bytes go out through `read-extents` (or a
    /// redirect to `presign-read`'s URL).
    async fn host_body(_extents: Vec<Extent>) -> Result<Option<String>, Error> {
        Ok(None)
    }

    async fn presign_read(name: String, expires_seconds: u32) -> Result<Option<String>, Error> {
        let s = settings().await?;
        let key = checked(&s, &name)?;
        let url = s.bucket.get_object(s.credentials.as_ref(), &key).sign(Duration::from_secs(expires_seconds.into()));
        Ok(Some(url.to_string()))
    }

    async fn list_objects(prefix: String, cursor: Option<String>, limit: u32) -> Result<Page, Error> {
        let s = settings().await?;
        if limit == 0 {
            return Ok(Page { names: Vec::new(), next: cursor });
        }
        let mut action = s.bucket.list_objects_v2(s.credentials.as_ref());
        action.with_prefix(s.key(&prefix));
        if let Some(cursor) = &cursor {
            action.with_start_after(s.key(cursor));
        }
        action.with_max_keys(limit.min(1000) as usize);
        let url = action.sign(REQUEST_URL);
        let what = format!("ListObjectsV2 of {prefix:?}");
        let response =
            success(&s, idempotent(&s, &what, async || send(&s, Method::Get, &url, &[], None).await).await?, &what)
                .await?;
        let body = xml(&s, response, &what).await?;
        let listed = rusty_s3::actions::ListObjectsV2::parse_response(&body)
            .map_err(|e| Error::Other(format!("S3 at {}: {what}: unreadable answer ({e})", s.origin())))?;
        let names: Vec<String> =
            listed.contents.iter().filter_map(|object| s.name(&object.key)).map(str::to_owned).collect();
        let next = listed.next_continuation_token.and(names.last().cloned());
        Ok(Page { names, next })
    }
}
