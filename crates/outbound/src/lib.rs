//! Aiming a `wasi:http` outgoing request at a URL (its method, scheme, authority, and path with
//! query), for every component of Berth's that sends requests: the registry (the mirror's
//! upstreams) and the S3 provider. wasm32 only: the types are `wasi:http`'s.

#[cfg(target_arch = "wasm32")]
use spin_sdk::wasip3::http::types::{Method, Request, Scheme};

/// Point `request` at `url` with `method`: whether the host took every part (it refuses a URL a
/// `wasi:http` request cannot carry).
#[cfg(target_arch = "wasm32")]
pub fn aim(request: &Request, method: &Method, url: &url::Url) -> bool {
    let authority = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let path_with_query = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let scheme = if url.scheme() == "https" { Scheme::Https } else { Scheme::Http };
    request
        .set_method(method)
        .and_then(|()| request.set_scheme(Some(&scheme)))
        .and_then(|()| request.set_authority(Some(&authority)))
        .and_then(|()| request.set_path_with_query(Some(&path_with_query)))
        .is_ok()
}
