//! `WWW-Authenticate` challenges (RFC 6750 for Bearer, RFC 7617 for Basic) and the token realm.

use super::config::AuthConfig;
use super::scope::Scope;
use http::HeaderMap;

/// Where clients get tokens: `auth_realm` when it is set; else `<scheme>://<host>/token` of the
/// request's own origin. `X-Forwarded-Proto` / `X-Forwarded-Host` count only when
/// `auth_trust_forwarded_headers` says a proxy in front sets them: any client can send them, and
/// a realm taken from them sends the client's password where the header says.
pub fn realm(config: &AuthConfig, origin: Option<&str>, headers: &HeaderMap) -> String {
    if let Some(realm) = &config.realm {
        return realm.clone();
    }
    let forwarded = |name: &str| {
        config
            .trust_forwarded
            .then(|| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.split(',').next()).map(str::trim))
            .flatten()
    };
    let (scheme, host) = match origin.and_then(|o| o.split_once("://")) {
        Some((scheme, host)) => (scheme, Some(host)),
        None => ("http", None),
    };
    let scheme = forwarded("x-forwarded-proto").filter(|p| matches!(*p, "http" | "https")).unwrap_or(scheme);
    let host = forwarded("x-forwarded-host")
        .or(host)
        .or_else(|| headers.get(http::header::HOST).and_then(|v| v.to_str().ok()))
        .unwrap_or("localhost");
    format!("{scheme}://{}/token", quotable(host))
}

/// A Bearer challenge: `error` is `invalid_token` or `insufficient_scope` when a token was sent.
pub fn bearer(realm: &str, service: &str, scope: Option<&Scope>, error: Option<&str>) -> String {
    let mut challenge = format!(r#"Bearer realm="{}",service="{}""#, quotable(realm), quotable(service));
    if let Some(scope) = scope {
        challenge.push_str(&format!(r#",scope="{}""#, quotable(&scope.to_string())));
    }
    if let Some(error) = error {
        challenge.push_str(&format!(r#",error="{error}""#));
    }
    challenge
}

pub fn basic(service: &str) -> String {
    format!(r#"Basic realm="{}",charset="UTF-8""#, quotable(service))
}

/// Drop what cannot stand inside a quoted string.
fn quotable(s: &str) -> String {
    s.chars().filter(|c| !matches!(c, '"' | '\\') && !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scope::Actions;
    use http::HeaderValue;

    #[test]
    fn realm_from_origin_forwarded_headers_or_host() {
        let trusting = AuthConfig { trust_forwarded: true, ..AuthConfig::default() };
        let mut headers = HeaderMap::new();
        assert_eq!(realm(&trusting, Some("http://127.0.0.1:5000"), &headers), "http://127.0.0.1:5000/token");
        headers.insert("host", HeaderValue::from_static("reg.example"));
        assert_eq!(realm(&trusting, None, &headers), "http://reg.example/token");
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https, http"));
        headers.insert("x-forwarded-host", HeaderValue::from_static("registry.example.com"));
        assert_eq!(realm(&trusting, Some("http://10.0.0.1:80"), &headers), "https://registry.example.com/token");
        headers.insert("x-forwarded-proto", HeaderValue::from_static("gopher"));
        assert_eq!(realm(&trusting, Some("http://h"), &headers), "http://registry.example.com/token");
    }

    #[test]
    fn forwarded_headers_count_only_when_trusted() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        headers.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        assert_eq!(realm(&AuthConfig::default(), Some("https://reg:5000"), &headers), "https://reg:5000/token");
    }

    #[test]
    fn a_configured_realm_wins() {
        let config = AuthConfig { realm: Some("https://registry.example.com/token".into()), ..AuthConfig::default() };
        assert_eq!(realm(&config, Some("http://10.0.0.1"), &HeaderMap::new()), "https://registry.example.com/token");
    }

    #[test]
    fn bearer_challenges() {
        let scope = Scope::repository("team/app", Actions::PULL.union(Actions::PUSH));
        assert_eq!(
            bearer("https://r/token", "berth", Some(&scope), None),
            r#"Bearer realm="https://r/token",service="berth",scope="repository:team/app:pull,push""#
        );
        assert_eq!(
            bearer("https://r/token", "berth", Some(&Scope::catalog()), Some("insufficient_scope")),
            r#"Bearer realm="https://r/token",service="berth",scope="registry:catalog:*",error="insufficient_scope""#
        );
        assert_eq!(bearer("https://r/token", "b\"x", None, None), r#"Bearer realm="https://r/token",service="bx""#);
    }

    #[test]
    fn basic_challenge() {
        assert_eq!(basic("berth"), r#"Basic realm="berth",charset="UTF-8""#);
    }
}
