//! Requests and responses as the registry logic sees them: plain `http` types around a body that
//! the host owns. Bodies are never buffered here: `Stream` carries a host stream through.

use crate::wire::errcode::RegistryError;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

pub struct Request<B> {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: B,
    /// `<scheme>://<authority>` the request was sent to, when the host says (for the token realm).
    pub origin: Option<String>,
}

impl<B> Request<B> {
    /// The first value of query parameter `key`, percent-decoded.
    pub fn query_param(&self, key: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
    }

    pub fn header(&self, name: impl http::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub enum Body<S> {
    Empty,
    Full(Vec<u8>),
    Stream(S),
}

pub struct Response<S> {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Body<S>,
}

pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
/// The host's token for a body it sends itself (`berth:blob-store/store.host-body`). The runner
/// takes it off every answer, so a client never sees one.
pub const HOST_BODY: HeaderName = HeaderName::from_static("x-berth-host-body");

impl<S> Response<S> {
    pub fn new(status: StatusCode) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
        Self { status, headers, body: Body::Empty }
    }

    /// Add a header. Values come from validated types (digests, names, numbers), so a value
    /// that is not a valid header is a bug, and is dropped rather than panicking.
    pub fn header(mut self, name: HeaderName, value: impl ToString) -> Self {
        if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
            self.headers.insert(name, value);
        }
        self
    }

    pub fn json(self, bytes: Vec<u8>) -> Self {
        self.header(http::header::CONTENT_TYPE, "application/json").full(bytes)
    }

    pub fn full(mut self, bytes: Vec<u8>) -> Self {
        self = self.header(http::header::CONTENT_LENGTH, bytes.len());
        self.body = Body::Full(bytes);
        self
    }

    pub fn stream(mut self, length: u64, stream: S) -> Self {
        self = self.header(http::header::CONTENT_LENGTH, length);
        self.body = Body::Stream(stream);
        self
    }

    /// A body of `length` bytes that the host sends itself, named by its `token`.
    pub fn host_body(self, length: u64, token: String) -> Self {
        self.header(http::header::CONTENT_LENGTH, length).header(HOST_BODY, token)
    }

    pub fn empty(self) -> Self {
        self.header(http::header::CONTENT_LENGTH, 0)
    }

    pub fn error(err: &RegistryError) -> Self {
        Response::new(err.status()).json(err.to_json())
    }
}
