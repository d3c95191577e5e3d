//! The Spin glue (wasm32 only): the `wasi:http/handler` entry point, and the [`store`] traits
//! over Spin key-value and Berth's blob store import. Nothing here decides anything.
//!
//! [`store`]: crate::registry::store

mod blob_store;
mod key_value;
mod outbound;

use crate::config::Config;
use crate::registry::read_set::Recorded;
use crate::registry::store::{RequestId, Stores};
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::message::{Body, Request};
use blob_store::{BodyEnd, IncomingBody, WitBlobStore};
use key_value::KvMetaStore;

/// The key-value store everything but blob bytes lives in (spin.toml grants it).
const META_STORE: &str = "default";
use spin_sdk::wasip3::http::types::{self, Fields};
type WasiErrorCode = spin_sdk::wasip3::http::types::ErrorCode;
use spin_sdk::wasip3::{wit_future, wit_stream};

/// Bindings for the world in `wit/`, generated with the wit-bindgen that spin-sdk re-exports
/// (a second wit-bindgen in the graph would break stream plumbing).
mod bindings {
    spin_sdk::wit_bindgen::generate!({
        path: "wit",
        world: "berth:registry/registry",
        runtime_path: "::spin_sdk::wit_bindgen::rt",
        generate_all,
    });
}

/// The `wasi:http/handler@0.3.0` export. (Not `#[http_service]`: that macro turns the request
/// into an `http::Request` first, and Berth needs the raw body stream to hand to the blob store.)
struct Berth;

spin_sdk::wasip3::http::service::export!(Berth);

impl spin_sdk::wasip3::exports::http::handler::Guest for Berth {
    async fn handle(request: types::Request) -> Result<types::Response, WasiErrorCode> {
        handle(request).await
    }
}

async fn handle(request: types::Request) -> Result<types::Response, WasiErrorCode> {
    let request = from_wasi_request(request)?;
    // berth-runner sets one on every request (the client's, or one it made); under Spin the
    // client's, or one made here.
    let request_id = RequestId::of(&request.headers, random);
    let failed = |err: &RegistryError| {
        let response = crate::api::error_response(err, &request_id).header(crate::api::REQUEST_ID, request_id.as_str());
        Ok(into_wasi_response(response))
    };
    // berth-runner asks for the reads an answer is made from, to keep it (`registry::read_set`).
    let record = request.header(crate::api::RECORD_READS).is_some_and(|v| v == "1").then_some(META_STORE);
    let meta = match KvMetaStore::open(META_STORE).await {
        Ok(meta) => Recorded::new(meta, record),
        Err(err) => return failed(&err),
    };
    let config = match config().await {
        Ok(config) => config,
        Err(err) => return failed(&err),
    };
    let blobs = WitBlobStore(request_id.clone());
    let stores = Stores { meta, blobs, random, now, config, request_id, events: Default::default() };
    if request.path == "/v2/" {
        check_storage_once(&stores).await;
    }
    // The request is answered in a task of its own, which owns the stores: work that must go
    // on after the response has started (a mirrored blob's copy into the store, beside the
    // response's body) runs there once the response is handed back.
    let (respond, response) = futures::channel::oneshot::channel();
    spin_sdk::wasip3::spawn(async move {
        let (answer, background) = crate::api::handle_with(&stores, &outbound::WitOutbound, request).await;
        let _ = respond.send(into_wasi_response(answer));
        if let Some(background) = background {
            background.await;
        }
    });
    response.await.map_err(|_| WasiErrorCode::InternalError(Some("the request's task ended without an answer".into())))
}

/// Settings from Spin variables. A value that does not parse is a configuration error, refused on
/// every request rather than silently replaced by a default. What is wrong goes to the log (the
/// component's stderr: Spin's log, berth-runner's stderr, where its start-up probe shows it),
/// never to clients: the detail may say too much about the configuration.
async fn config() -> Result<Config, RegistryError> {
    let mut values = std::collections::BTreeMap::new();
    for name in crate::config::variables() {
        match spin_sdk::variables::get(name).await {
            Ok(value) => {
                values.insert(name, value);
            }
            Err(spin_sdk::variables::Error::Undefined(_)) => {}
            Err(e) => {
                log_once(&format!("berth: the registry is misconfigured: reading variable {name}: {e:?}"));
                return Err(misconfigured());
            }
        }
    }
    match crate::config::from_variables(&|name| values.get(name).cloned()) {
        Ok(config) => {
            let weak: Vec<String> =
                config.auth.weak_hashes().iter().map(|(user, cost)| format!("{user} ({cost})")).collect();
            if !weak.is_empty() {
                log_once(&format!(
                    "berth: warning: bcrypt costs below {} are cheap to crack if a hash leaks: {} (make hashes with \
                     `berth-runner hash-password --cost 12`)",
                    crate::auth::config::MIN_RECOMMENDED_COST,
                    weak.join(", ")
                ));
            }
            Ok(config)
        }
        Err(e) => {
            log_once(&format!("berth: the registry is misconfigured: {e}"));
            Err(misconfigured())
        }
    }
}

fn misconfigured() -> RegistryError {
    RegistryError::new(ErrorCode::Internal, "the registry is misconfigured: its log says why").told()
}

/// On an instance's first `GET /v2/` (berth-runner's start-up probe, a client's first
/// request), try both stores once and log what fails: a wrong S3 endpoint or credentials show at
/// start rather than on the first push. The answer does not change (requests that need a broken
/// store fail on their own, with 503 or 500).
async fn check_storage_once(stores: &Stores<Recorded<KvMetaStore>, WitBlobStore>) {
    use crate::registry::store::{BlobStore, MetaStore};
    use std::cell::Cell;
    thread_local! {
        static CHECKED: Cell<bool> = const { Cell::new(false) };
    }
    if CHECKED.with(|checked| checked.replace(true)) {
        return;
    }
    if let Err(e) = stores.meta.get("berth-storage-check").await {
        log_once(&format!("berth: storage check: the key-value store fails: {e}"));
    }
    if let Err(e) = stores.blobs.list("", None, 1).await {
        log_once(&format!("berth: storage check: the blob store fails: {e}"));
    }
}

/// Write `line` to the log once per instance (a reused instance parses its settings on every
/// request; one line per instance says it without flooding).
fn log_once(line: &str) {
    use std::cell::RefCell;
    thread_local! {
        static LOGGED: RefCell<std::collections::BTreeSet<String>> = const { RefCell::new(std::collections::BTreeSet::new()) };
    }
    LOGGED.with(|logged| {
        if logged.borrow_mut().insert(line.to_owned()) {
            eprintln!("{line}");
        }
    });
}

fn now() -> u64 {
    spin_sdk::wasip3::clocks::system_clock::now().seconds.max(0) as u64
}

fn random() -> [u8; 16] {
    let bytes = spin_sdk::wasip3::random::random::get_random_bytes(16);
    let mut out = [0; 16];
    out.copy_from_slice(&bytes[..16]);
    out
}

fn from_wasi_request(request: types::Request) -> Result<Request<IncomingBody>, WasiErrorCode> {
    let method = http::Method::try_from(request.get_method()).map_err(|_| WasiErrorCode::HttpRequestMethodInvalid)?;
    let headers = http::HeaderMap::try_from(request.get_headers())
        .map_err(|_| WasiErrorCode::HttpRequestHeaderSectionSize(None))?;
    let origin = match (request.get_scheme(), request.get_authority()) {
        (Some(types::Scheme::Https), Some(authority)) => Some(format!("https://{authority}")),
        (Some(types::Scheme::Http) | None, Some(authority)) => Some(format!("http://{authority}")),
        _ => None,
    };
    let path_with_query = request.get_path_with_query().unwrap_or_else(|| "/".into());
    let (path, query) = match path_with_query.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (path_with_query, None),
    };
    let (result, result_reader) = wit_future::new(|| Ok(()));
    let (stream, trailers) = types::Request::consume_body(request, result_reader);
    Ok(Request {
        method,
        path,
        query,
        headers,
        body: IncomingBody { stream, end: BodyEnd::Host { trailers, _result: result } },
        origin,
    })
}

fn into_wasi_response(
    response: crate::wire::message::Response<spin_sdk::wit_bindgen::StreamReader<u8>>,
) -> types::Response {
    let entries: Vec<(String, Vec<u8>)> =
        response.headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec())).collect();
    let headers = Fields::from_list(&entries).unwrap_or_else(|_| Fields::new());
    let contents = match response.body {
        Body::Empty => None,
        Body::Stream(stream) => Some(stream),
        Body::Full(bytes) => {
            let (mut writer, reader) = wit_stream::new::<u8>();
            spin_sdk::wasip3::spawn(async move {
                writer.write_all(bytes).await;
            });
            Some(reader)
        }
    };
    // No trailers: the default value is sent when the writer is dropped.
    let (_, trailers) = wit_future::new(|| Ok(None));
    let (wasi_response, _transmitted) = types::Response::new(headers, contents, trailers);
    let _ = wasi_response.set_status_code(response.status.as_u16());
    wasi_response
}
