//! Requests to one upstream: anonymous, Basic, or the Docker token flow (a 401's Bearer
//! challenge is answered by fetching a token from its realm, with the upstream's credentials
//! when it has some, and the request is sent again). Tokens are kept in key-value per upstream
//! and scope until shortly before they expire, so every instance reuses them. Redirects (a
//! blob GET sent to object storage or a CDN) are followed, without the credentials when they
//! leave the upstream's origin.

use super::Upstream;
use super::challenge::{Challenge, Token};
use crate::registry::store::{BlobStore, MetaStore, OutRequest, OutResponse, Outbound, StoreError, Stores};
use crate::wire::digest::{Algorithm, Digest};
use base64::Engine;
use http::{Method, header};

/// Why an upstream gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// Cannot be reached, or answers 5xx: the cache may stand in for it.
    Unreachable(String),
    /// Answered, but refuses (a 401 the credentials cannot satisfy, a broken token endpoint).
    Refused(String),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Unreachable(why) | UpstreamError::Refused(why) => f.write_str(why),
        }
    }
}

/// The most bytes of a token endpoint's answer read.
const TOKEN_LIMIT: usize = 64 * 1024;
/// Redirects followed for one request at most.
const MAX_REDIRECTS: usize = 5;
/// A token is not used in its last seconds (the request may arrive after it expired).
const TOKEN_MARGIN_SECS: u64 = 10;

pub struct Client<'a, M, B, O> {
    pub stores: &'a Stores<M, B>,
    pub outbound: &'a O,
    pub upstream: &'a Upstream,
    /// The upstream repository: the token scope is `repository:<remote>:pull`.
    pub remote: &'a str,
}

impl<'a, M: MetaStore, B: BlobStore, O: Outbound<B>> Client<'a, M, B, O> {
    /// `method` on `path` of the upstream (`/v2/...`), with `accept`; the final answer after
    /// authentication and redirects. 5xx answers are [`UpstreamError::Unreachable`].
    pub async fn send(&self, method: Method, path: &str, accept: &str) -> Result<OutResponse<O::Body>, UpstreamError> {
        self.send_following(method, path, accept, true).await
    }

    /// As [`Client::send`], but a redirect is the answer (its `Location` made absolute).
    pub async fn send_unfollowed(
        &self,
        method: Method,
        path: &str,
        accept: &str,
    ) -> Result<OutResponse<O::Body>, UpstreamError> {
        self.send_following(method, path, accept, false).await
    }

    async fn send_following(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        follow: bool,
    ) -> Result<OutResponse<O::Body>, UpstreamError> {
        let scope = format!("repository:{}:pull", self.remote);
        let mut authorization = self.cached_token(&scope).await.map(|t| format!("Bearer {t}"));
        let mut url = format!("{}{path}", self.upstream.origin);
        let mut answered_challenge = false;
        let mut redirects = 0;
        loop {
            let mut headers = vec![(header::USER_AGENT, format!("berth/{}", env!("CARGO_PKG_VERSION")))];
            if !accept.is_empty() {
                headers.push((header::ACCEPT, accept.to_owned()));
            }
            let same_origin = url.starts_with(&format!("{}/", self.upstream.origin));
            if let Some(value) = authorization.as_ref().filter(|_| same_origin) {
                headers.push((header::AUTHORIZATION, value.clone()));
            }
            let request =
                OutRequest { method: method.clone(), url: url.clone(), headers, body: None, timeout_secs: None };
            let response = self.outbound.send(request).await.map_err(|e| self.unreachable(e))?;
            match response.status {
                401 if !answered_challenge && same_origin => {
                    answered_challenge = true;
                    let challenge = response.header(header::WWW_AUTHENTICATE).and_then(Challenge::parse);
                    self.drain(response).await;
                    authorization = Some(self.answer(challenge, &scope).await?);
                }
                301 | 302 | 303 | 307 | 308 if redirects < MAX_REDIRECTS => {
                    let location = response
                        .header(header::LOCATION)
                        .ok_or_else(|| self.refused("redirected without a Location".into()))?
                        .to_owned();
                    // Said without its query: a redirect's query is often a signature.
                    let unusable = || {
                        let shown = location.split('?').next().unwrap_or_default();
                        self.refused(format!("redirected to {shown:?}, which is not a usable URL"))
                    };
                    let next = resolve(&url, &location).ok_or_else(unusable)?;
                    if !follow {
                        let mut response = response;
                        response.headers.insert(header::LOCATION, next.parse().map_err(|_| unusable())?);
                        return Ok(response);
                    }
                    url = next;
                    redirects += 1;
                    self.drain(response).await;
                }
                500..=599 => {
                    let status = response.status;
                    self.drain(response).await;
                    return Err(UpstreamError::Unreachable(format!(
                        "upstream {} answered {status} to {method} {path}",
                        self.upstream.name
                    )));
                }
                401 => {
                    self.drain(response).await;
                    return Err(
                        self.refused(format!("refused {method} {path} (401) with the credentials it was given"))
                    );
                }
                _ => return Ok(response),
            }
        }
    }

    /// Read a small body (a manifest) into memory.
    pub async fn read(&self, body: O::Body, limit: usize) -> Result<Option<Vec<u8>>, UpstreamError> {
        self.outbound.read(body, limit).await.map_err(|e| self.unreachable(e))
    }

    /// Let an answer go whose body is not wanted (an error's, a HEAD's).
    pub async fn drain(&self, response: OutResponse<O::Body>) {
        let _ = self.outbound.read(response.body, TOKEN_LIMIT).await;
    }

    /// The `Authorization` value that answers `challenge`.
    async fn answer(&self, challenge: Option<Challenge>, scope: &str) -> Result<String, UpstreamError> {
        let basic = self.upstream.credentials.as_ref().map(|(user, password)| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
        });
        match challenge {
            Some(Challenge::Basic) => {
                basic.ok_or_else(|| self.refused("wants a password, and mirror_credentials has none for it".into()))
            }
            Some(Challenge::Bearer { realm, service, scope: asked }) => {
                let scope = asked.unwrap_or_else(|| scope.to_owned());
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                if let Some(service) = &service {
                    query.append_pair("service", service);
                }
                query.append_pair("scope", &scope);
                let separator = if realm.contains('?') { '&' } else { '?' };
                let url = format!("{realm}{separator}{}", query.finish());
                let mut headers = Vec::new();
                if let Some(basic) = basic {
                    headers.push((header::AUTHORIZATION, basic));
                }
                let response = self
                    .outbound
                    .send(OutRequest { method: Method::GET, url, headers, body: None, timeout_secs: None })
                    .await
                    .map_err(|e| self.unreachable(e))?;
                let status = response.status;
                let body = self.outbound.read(response.body, TOKEN_LIMIT).await.map_err(|e| self.unreachable(e))?;
                if !(200..300).contains(&status) {
                    return Err(self.refused(format!("its token endpoint answered {status}")));
                }
                let token = body
                    .as_deref()
                    .and_then(Token::parse)
                    .ok_or_else(|| self.refused("its token endpoint answered without a token".into()))?;
                self.keep_token(&scope, &token).await;
                Ok(format!("Bearer {}", token.token))
            }
            None => Err(self.refused("answered 401 without a challenge Berth can answer".into())),
        }
    }

    fn token_key(&self, scope: &str) -> String {
        let id = Digest::of(Algorithm::Sha256, format!("{}\n{scope}", self.upstream.name).as_bytes());
        format!("mirror/tokens/{}", id.hex())
    }

    async fn cached_token(&self, scope: &str) -> Option<String> {
        let bytes = self.stores.meta.get(&self.token_key(scope)).await.ok()??;
        let (expires, token) = std::str::from_utf8(&bytes).ok()?.split_once(' ')?;
        let expires: u64 = expires.parse().ok()?;
        ((self.stores.now)() + TOKEN_MARGIN_SECS < expires).then(|| token.to_owned())
    }

    /// Best effort: a token not kept is fetched again next time.
    async fn keep_token(&self, scope: &str, token: &Token) {
        let value = format!("{} {}", (self.stores.now)() + token.expires_in, token.token);
        let _ = self.stores.meta.set(&self.token_key(scope), value.as_bytes()).await;
    }

    fn unreachable(&self, e: StoreError) -> UpstreamError {
        UpstreamError::Unreachable(format!("upstream {} ({}): {e}", self.upstream.name, self.upstream.origin))
    }

    fn refused(&self, why: String) -> UpstreamError {
        UpstreamError::Refused(format!("upstream {} ({}) {why}", self.upstream.name, self.upstream.origin))
    }
}

/// A `Location` against the URL it answered.
fn resolve(base: &str, location: &str) -> Option<String> {
    let url = url::Url::parse(base).ok()?.join(location).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_url_they_answered() {
        assert_eq!(
            resolve("https://r.example/v2/a/blobs/sha256:1", "/cdn/x?sig=1").as_deref(),
            Some("https://r.example/cdn/x?sig=1")
        );
        assert_eq!(
            resolve("https://r.example/v2/a/blobs/sha256:1", "https://s3.example/b/k").as_deref(),
            Some("https://s3.example/b/k")
        );
        assert_eq!(resolve("https://r.example/v2/", "file:///etc/passwd"), None);
    }
}
