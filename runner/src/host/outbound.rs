//! Outbound HTTP for the component, restricted to spin.toml's `allowed_outbound_hosts`, with
//! Spin's pattern forms: `scheme://host[:port]`, where scheme, host and port may be `*`, and a
//! host may be `*.domain`.

use anyhow::{Result, bail};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedHost {
    scheme: String,
    host: String,
    port: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct AllowedHosts(Vec<AllowedHost>);

impl AllowedHosts {
    pub fn parse(entries: &[String]) -> Result<AllowedHosts> {
        let mut hosts = Vec::new();
        for entry in entries {
            let Some((scheme, rest)) = entry.split_once("://") else {
                bail!("allowed_outbound_hosts entry {entry:?} has no scheme (e.g. https://example.com)");
            };
            let rest = rest.trim_end_matches('/');
            let (host, port) = match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port.to_owned())),
                None => (rest, None),
            };
            if host.is_empty() || host.contains('/') {
                bail!("allowed_outbound_hosts entry {entry:?} is not scheme://host[:port]");
            }
            hosts.push(AllowedHost { scheme: scheme.to_ascii_lowercase(), host: host.to_ascii_lowercase(), port });
        }
        Ok(AllowedHosts(hosts))
    }

    pub fn permits(&self, uri: &http::Uri) -> bool {
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let Some(host) = uri.host().map(|h| h.to_ascii_lowercase()) else {
            return false;
        };
        let port = uri.port_u16().unwrap_or(if scheme == "http" { 80 } else { 443 });
        self.0.iter().any(|a| {
            let scheme_ok = a.scheme == "*" || a.scheme == scheme;
            let host_ok = a.host == "*"
                || a.host == host
                || a.host.strip_prefix("*.").is_some_and(|domain| host.ends_with(&format!(".{domain}")));
            let port_ok = match &a.port {
                Some(p) if p == "*" => true,
                Some(p) => p.parse::<u16>().ok() == Some(port),
                None => port == if a.scheme == "http" { 80 } else { 443 },
            };
            scheme_ok && host_ok && port_ok
        })
    }
}

/// The `wasi:http` hooks of one store: send only to allowed hosts.
pub struct OutboundHooks {
    pub allowed: std::sync::Arc<AllowedHosts>,
}

type SendFuture = Box<
    dyn Future<Output = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>), Error>>
        + Send,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        if !self.allowed.permits(request.uri()) {
            // Scheme and authority only: a path's query may be a signature (a presigned URL).
            let uri = request.uri();
            let origin =
                format!("{}://{}", uri.scheme_str().unwrap_or("?"), uri.authority().map_or("?", |a| a.as_str()));
            eprintln!("berth-runner: outbound request to {origin} denied (not in allowed_outbound_hosts)");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn uri(s: &str) -> http::Uri {
        s.parse().unwrap()
    }

    #[test]
    fn exact_hosts_with_default_ports() {
        let a = allowed(&["https://example.com"]);
        assert!(a.permits(&uri("https://example.com/x")));
        assert!(a.permits(&uri("https://EXAMPLE.com:443/x")));
        assert!(!a.permits(&uri("http://example.com/x")));
        assert!(!a.permits(&uri("https://example.com:8443/x")));
        assert!(!a.permits(&uri("https://evil.com/x")));
    }

    #[test]
    fn wildcards() {
        let a = allowed(&["https://*.example.com", "http://localhost:*", "*://*:*"]);
        assert!(a.permits(&uri("http://anything:1234/")));
        let b = allowed(&["https://*.example.com", "http://localhost:*"]);
        assert!(b.permits(&uri("https://api.example.com/")));
        assert!(!b.permits(&uri("https://example.com.evil/")));
        assert!(b.permits(&uri("http://localhost:5000/")));
        assert!(!b.permits(&uri("https://localhost:5000/")));
    }

    #[test]
    fn nothing_allowed_by_default() {
        assert!(!AllowedHosts::default().permits(&uri("https://example.com/")));
    }

    #[test]
    fn entries_without_scheme_are_rejected() {
        assert!(AllowedHosts::parse(&["example.com".into()]).is_err());
    }
}
