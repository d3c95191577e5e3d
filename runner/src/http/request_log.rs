//! The request log on standard output: one line per request, as text (the default, for people)
//! or one JSON object per line (`--log-format json`, for log pipelines), each with the request's
//! id. The id is the client's (or a proxy's) `X-Request-Id` when it is a safe one, else made
//! here; the runner passes it to the component, which ends every line it logs on standard error
//! with `(request <id>)` and answers it in `X-Request-Id`, so one id finds everything a request
//! caused.

use base64::Engine;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `METHOD PATH STATUS BYTES DURATION id=ID`
    #[default]
    Text,
    /// `{"time":...,"method":...,"route":...,"repository":...,"status":...,"bytes":...,
    /// "duration_ms":...,"client":...,"user":...,"request_id":...}`
    Json,
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Chosen once, at start.
pub fn set_format(format: LogFormat) {
    let _ = FORMAT.set(format);
}

pub const REQUEST_ID: &str = "x-request-id";

/// The request's id: the one it carries if it is 1 to 64 characters of `A-Z a-z 0-9 . _ -`
/// (nothing that could forge a log line or a header), else a new one.
pub fn request_id(headers: &http::HeaderMap) -> String {
    let given = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).filter(|id| {
        !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    });
    match given {
        Some(id) => id.to_owned(),
        None => {
            let mut random = [0u8; 8];
            // Without OS randomness the time still tells requests apart well enough for a log.
            if getrandom::fill(&mut random).is_err() {
                random = (SystemTime::UNIX_EPOCH.elapsed().unwrap_or_default().as_nanos() as u64).to_le_bytes();
            }
            random.iter().map(|b| format!("{b:02x}")).collect()
        }
    }
}

/// What the log says of one request, gathered when it arrives.
pub struct RequestLine {
    pub method: String,
    pub path: String,
    pub start: Instant,
    pub client: Option<SocketAddr>,
    pub request_id: String,
    pub user: Option<String>,
    /// Counted in flight until the line is written.
    _in_flight: crate::http::metrics::InFlight,
}

impl RequestLine {
    pub fn new(parts: &http::request::Parts, client: Option<SocketAddr>, request_id: String) -> RequestLine {
        RequestLine {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            start: Instant::now(),
            client,
            request_id,
            user: user(&parts.headers),
            _in_flight: crate::http::metrics::InFlight::start(),
        }
    }

    /// Write the line: the answer's status, the body bytes sent, and how it ended (`""`, or a
    /// note such as ` (incomplete)`).
    pub fn write(&self, status: u16, bytes: u64, outcome: &str) {
        let elapsed = self.start.elapsed().as_secs_f64();
        crate::http::metrics::request_done(route_of(&self.path).0, &self.method, status, bytes, elapsed);
        let ms = elapsed * 1000.0;
        match FORMAT.get().copied().unwrap_or_default() {
            LogFormat::Text => {
                println!("{} {} {status} {bytes}B {ms:.1}ms{outcome} id={}", self.method, self.path, self.request_id)
            }
            LogFormat::Json => {
                let (route, repository) = route_of(&self.path);
                let line = serde_json::json!({
                    "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                    "method": self.method,
                    "path": self.path,
                    "route": route,
                    "repository": repository,
                    "status": status,
                    "bytes": bytes,
                    "duration_ms": (ms * 10.0).round() / 10.0,
                    "client": self.client.map(|c| c.to_string()),
                    "user": self.user,
                    "request_id": self.request_id,
                    "outcome": outcome.trim().trim_start_matches('(').trim_end_matches(')'),
                });
                println!("{line}");
            }
        }
    }
}

/// The endpoint family a path addresses, and the repository it names, for the log (the
/// component's own routing decides what a request does; this only labels the line).
pub fn route_of(path: &str) -> (&'static str, Option<&str>) {
    match path {
        "/healthz" | "/readyz" => return ("health", None),
        "/token" | "/v2/token" => return ("token", None),
        "/v2" | "/v2/" => return ("base", None),
        "/v2/_catalog" => return ("catalog", None),
        _ => {}
    }
    if path.starts_with("/v2/_berth/") {
        return ("admin", None);
    }
    let Some(rest) = path.strip_prefix("/v2/") else { return ("other", None) };
    // From the right, as the registry parses: a repository name may contain these words.
    let families = [
        ("/tags/list", "tags"),
        ("/blobs/uploads", "uploads"),
        ("/manifests/", "manifests"),
        ("/blobs/", "blobs"),
        ("/referrers/", "referrers"),
    ];
    let found = families.iter().filter_map(|(marker, family)| rest.rfind(marker).map(|at| (at, *family))).max();
    match found {
        Some((at, family)) if at > 0 => (family, Some(&rest[..at])),
        _ => ("other", None),
    }
}

/// The user a request names: Basic's user, or a bearer token's `sub` (as sent: the registry
/// decides whether it holds; the status on the same line says so).
fn user(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    let user = if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(credentials.trim()).ok()?;
        String::from_utf8(decoded).ok()?.split_once(':')?.0.to_owned()
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let payload = credentials.trim().split('.').nth(1)?;
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
        serde_json::from_slice::<serde_json::Value>(&decoded).ok()?["sub"].as_str()?.to_owned()
    } else {
        return None;
    };
    // Printable and short: a header must not write the log.
    Some(user.chars().filter(|c| !c.is_control()).take(64).collect()).filter(|u: &String| !u.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_labelled_from_the_right_as_the_registry_parses_them() {
        assert_eq!(route_of("/v2/a/b/manifests/latest"), ("manifests", Some("a/b")));
        assert_eq!(route_of("/v2/a/manifests/b/manifests/v1"), ("manifests", Some("a/manifests/b")));
        assert_eq!(route_of("/v2/a/blobs/sha256:00"), ("blobs", Some("a")));
        assert_eq!(route_of("/v2/a/blobs/uploads/"), ("uploads", Some("a")));
        assert_eq!(route_of("/v2/a/blobs/uploads/abc"), ("uploads", Some("a")));
        assert_eq!(route_of("/v2/a/tags/list"), ("tags", Some("a")));
        assert_eq!(route_of("/v2/a/referrers/sha256:00"), ("referrers", Some("a")));
        assert_eq!(route_of("/v2/"), ("base", None));
        assert_eq!(route_of("/v2/_berth/gc"), ("admin", None));
        assert_eq!(route_of("/readyz"), ("health", None));
        assert_eq!(route_of("/favicon.ico"), ("other", None));
    }

    #[test]
    fn a_request_id_is_kept_only_when_safe_and_made_otherwise() {
        let mut headers = http::HeaderMap::new();
        headers.insert(REQUEST_ID, http::HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");
        headers.insert(REQUEST_ID, http::HeaderValue::from_static("a b\"c"));
        let made = request_id(&headers);
        assert_eq!(made.len(), 16, "{made}");
        assert_ne!(request_id(&headers), made, "a fresh one each time");
    }

    #[test]
    fn the_user_is_basics_or_a_tokens_subject() {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, http::HeaderValue::from_static("Basic YWxpY2U6c2VjcmV0"));
        assert_eq!(user(&headers).as_deref(), Some("alice"));
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"bob","exp":1}"#);
        let token = format!("Bearer e30.{payload}.sig");
        headers.insert(http::header::AUTHORIZATION, http::HeaderValue::from_str(&token).unwrap());
        assert_eq!(user(&headers).as_deref(), Some("bob"));
        headers.insert(http::header::AUTHORIZATION, http::HeaderValue::from_static("Bearer junk"));
        assert_eq!(user(&headers), None);
    }
}
