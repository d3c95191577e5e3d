//! [`Outbound`] over `wasi:http` (the host's outgoing handler; Spin checks each destination
//! against `allowed_outbound_hosts`), and the relay of an upstream's blob to both the blob store
//! and the client.

use super::blob_store::{BodyEnd, IncomingBody, WitBlobStore, read_to_end};
use crate::registry::store::{OutRequest, OutResponse, Outbound, StoreError};
use futures::channel::oneshot;
use spin_sdk::wasip3::http::types::{self, ErrorCode, Fields};
use spin_sdk::wasip3::{wit_future, wit_stream};
use spin_sdk::wit_bindgen::{StreamResult, StreamWriter};

/// Seconds to connect, and to wait for a first byte or between two bytes.
const CONNECT_TIMEOUT_SECS: u64 = 10;
const BYTES_TIMEOUT_SECS: u64 = 60;
/// Bytes read from the upstream at a time.
const CHUNK: usize = 256 * 1024;

pub struct WitOutbound;

fn body_of(response: types::Response) -> IncomingBody {
    let (result, result_reader) = wit_future::new(|| Ok(()));
    let (stream, trailers) = types::Response::consume_body(response, result_reader);
    IncomingBody { stream, end: BodyEnd::Host { trailers, _result: result } }
}

fn options(bytes_timeout_secs: u64) -> types::RequestOptions {
    let options = types::RequestOptions::new();
    // A host that does not support a timeout leaves it unset (not an error).
    let _ = options.set_connect_timeout(Some(CONNECT_TIMEOUT_SECS * 1_000_000_000));
    let _ = options.set_first_byte_timeout(Some(bytes_timeout_secs * 1_000_000_000));
    let _ = options.set_between_bytes_timeout(Some(bytes_timeout_secs * 1_000_000_000));
    options
}

impl Outbound<WitBlobStore> for WitOutbound {
    type Body = IncomingBody;
    type Verdict = oneshot::Sender<bool>;

    async fn send(&self, request: OutRequest) -> Result<OutResponse<IncomingBody>, StoreError> {
        let url = url::Url::parse(&request.url).map_err(|e| StoreError::Other(format!("{}: {e}", request.url)))?;
        let entries: Vec<(String, Vec<u8>)> =
            request.headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec())).collect();
        let fields = Fields::from_list(&entries).map_err(|e| StoreError::Other(format!("request headers: {e:?}")))?;
        let (_, trailers) = wit_future::new(|| Ok(None));
        let timeout = request.timeout_secs.unwrap_or(BYTES_TIMEOUT_SECS).min(BYTES_TIMEOUT_SECS);
        // A body (an event delivery's JSON) is written by a task of its own while the request
        // is sent.
        let contents = request.body.map(|body| {
            let (mut writer, reader) = wit_stream::new::<u8>();
            spin_sdk::wasip3::spawn(async move {
                writer.write_all(body).await;
            });
            reader
        });
        let (outgoing, _sent) = types::Request::new(fields, contents, trailers, Some(options(timeout)));
        let method = match request.method.as_str() {
            "HEAD" => types::Method::Head,
            "POST" => types::Method::Post,
            _ => types::Method::Get,
        };
        let built = berth_outbound::aim(&outgoing, &method, &url);
        // Only the origin is ever said: a URL's query may be a signature (a presigned redirect).
        let origin = url.origin().ascii_serialization();
        if !built {
            return Err(StoreError::Other(format!("cannot build a request for {origin}")));
        }
        let response = spin_sdk::wasip3::http::client::send(outgoing).await.map_err(|code| match code {
            ErrorCode::HttpRequestDenied => StoreError::Unavailable(format!(
                "the host refused a request to {origin}: allowed_outbound_hosts must list it"
            )),
            code => StoreError::Unavailable(format!("{origin}: {code:?}")),
        })?;
        let status = response.get_status_code();
        let headers = http::HeaderMap::try_from(response.get_headers())
            .map_err(|_| StoreError::Other(format!("{origin} answered with headers that do not parse")))?;
        Ok(OutResponse { status, headers, body: body_of(response) })
    }

    async fn read(&self, body: IncomingBody, limit: usize) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(bytes) = read_to_end(body.stream, limit).await else { return Ok(None) };
        body.end.whole().await.map_err(|why| StoreError::Unavailable(format!("the body broke off: {why}")))?;
        Ok(Some(bytes))
    }

    fn relay(
        &self,
        body: IncomingBody,
    ) -> (IncomingBody, spin_sdk::wit_bindgen::StreamReader<u8>, oneshot::Sender<bool>) {
        let (mut to_store, store_reader) = wit_stream::new::<u8>();
        let (store_whole, store_end) = oneshot::channel::<bool>();
        let (to_client, client_reader) = wit_stream::new::<u8>();
        let (verdict, verdict_reader) = oneshot::channel::<bool>();
        spin_sdk::wasip3::spawn(async move {
            let IncomingBody { mut stream, end } = body;
            let mut client = Some(to_client);
            // The newest chunk waits until the next one has gone to the store: the last one
            // waits for the verdict.
            let mut held: Option<Vec<u8>> = None;
            let mut store_open = true;
            loop {
                let (status, chunk) = stream.read(Vec::with_capacity(CHUNK)).await;
                if !chunk.is_empty() {
                    if store_open && !to_store.write_all(chunk.clone()).await.is_empty() {
                        store_open = false;
                    }
                    if let Some(previous) = held.replace(chunk) {
                        send(&mut client, previous).await;
                    }
                }
                if !matches!(status, StreamResult::Complete(_)) || !store_open {
                    break;
                }
            }
            drop(stream);
            let whole = store_open && end.whole().await.is_ok();
            drop(to_store);
            let _ = store_whole.send(whole);
            // Verified and kept: the client gets its last bytes; else its body ends short.
            if verdict_reader.await.unwrap_or(false)
                && let Some(last) = held
            {
                send(&mut client, last).await;
            }
        });
        (IncomingBody { stream: store_reader, end: BodyEnd::Relay(store_end) }, client_reader, verdict)
    }

    fn settle(&self, verdict: oneshot::Sender<bool>, whole: bool) {
        let _ = verdict.send(whole);
    }

    async fn pause(&self, millis: u64) {
        spin_sdk::wasip3::clocks::monotonic_clock::wait_for(millis * 1_000_000).await;
    }
}

/// Pass a chunk on to the client while it is there; a client that went away is let go (the
/// copy into the store goes on).
async fn send(client: &mut Option<StreamWriter<u8>>, chunk: Vec<u8>) {
    if let Some(writer) = client
        && !writer.write_all(chunk).await.is_empty()
    {
        *client = None;
    }
}
