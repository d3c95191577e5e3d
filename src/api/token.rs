//! The token endpoint, at `/token` (and `/v2/token`), served in token mode only.
//!
//! ```text
//! GET  /token?service=<service>&scope=<scope>[&scope=...][&offline_token=true]
//!      Authorization: Basic <user:password>    (or nothing: an anonymous token)
//! POST /token    (application/x-www-form-urlencoded, OAuth2)
//!      grant_type=password&username=&password=&service=&scope=<s1 s2>[&access_type=offline]
//!      grant_type=refresh_token&refresh_token=&service=&scope=<s1 s2>[&access_type=offline]
//! -> 200 {"token","access_token","expires_in","issued_at","scope"[,"refresh_token"]}
//! ```
//! The token grants the intersection of what is asked and what the policy allows; asking for more
//! than allowed is not an error. Wrong credentials are 401 `UNAUTHORIZED`.

use super::login;
use crate::auth::config::Mode;
use crate::auth::scope::Scope;
use crate::auth::{challenge, issue, password};
use crate::registry::store::{BlobStore, MetaStore, Stores};
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::message::{Request, Response};
use http::{Method, StatusCode, header};

type Result<T> = std::result::Result<T, RegistryError>;

/// Form bodies larger than this are not token requests.
const MAX_FORM: usize = 64 * 1024;

pub fn serves(path: &str) -> bool {
    matches!(path, "/token" | "/v2/token")
}

pub async fn handle<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    req: Request<B::Incoming>,
) -> Result<Response<B::Outgoing>> {
    if stores.config.auth.mode != Mode::Token {
        return Err(RegistryError::new(ErrorCode::NotFound, "the token endpoint is served in token mode only"));
    }
    match req.method {
        Method::GET => get(stores, &req).await,
        Method::POST => post(stores, req).await,
        _ => Err(RegistryError::new(ErrorCode::MethodNotAllowed, "the token endpoint takes GET and POST")),
    }
}

async fn get<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    req: &Request<B::Incoming>,
) -> Result<Response<B::Outgoing>> {
    let params = form(req.query.as_deref().unwrap_or("").as_bytes());
    check_service(stores, &params)?;
    let wanted = scopes(&params)?;
    let subject = match req.header(header::AUTHORIZATION) {
        None => None,
        Some(value) => match password::basic_credentials(value) {
            Some((user, pass)) => match check_password(stores, &user, &pass, &req.headers).await? {
                Ok(()) => Some(user),
                Err(refusal) => return Ok(refusal),
            },
            None => return Ok(bad_credentials(stores, "unreadable Basic credentials")),
        },
    };
    let offline = value(&params, "offline_token").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    Ok(answer(stores, subject.as_deref(), None, &wanted, offline))
}

/// A password check behind the failed-login throttle: `Ok(Err(response))` is the refusal to send
/// (401 for a wrong password, 429 while throttled, before any bcrypt runs).
async fn check_password<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    user: &str,
    password: &str,
    headers: &http::HeaderMap,
) -> Result<std::result::Result<(), Response<B::Outgoing>>> {
    let attempt = login::Attempt::new(stores, user, password, headers);
    if let Some(retry_after) = login::reserve(stores, &attempt).await? {
        stores.count("logins_throttled", 1);
        return Ok(Err(login::too_many(retry_after)));
    }
    let right = stores.config.auth.check_password(user, password);
    login::settle(stores, &attempt, !right).await?;
    if !right {
        return Ok(Err(bad_credentials(stores, "wrong user name or password")));
    }
    Ok(Ok(()))
}

async fn post<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    req: Request<B::Incoming>,
) -> Result<Response<B::Outgoing>> {
    let headers = req.headers.clone();
    let body = stores
        .blobs
        .collect(req.body, MAX_FORM)
        .await
        .map_err(|e| super::body_error(e, ErrorCode::Unsupported))?
        .ok_or_else(|| {
            RegistryError::new(ErrorCode::Unsupported, "token request form too large")
                .with_status(StatusCode::BAD_REQUEST)
        })?;
    let params = form(&body);
    check_service(stores, &params)?;
    let wanted = scopes(&params)?;
    let config = &stores.config.auth;
    let (subject, auth_time) = match value(&params, "grant_type") {
        Some("password") => {
            let user = value(&params, "username").unwrap_or_default();
            let pass = value(&params, "password").unwrap_or_default();
            if let Err(refusal) = check_password(stores, user, pass, &headers).await? {
                return Ok(refusal);
            }
            (user.to_owned(), None)
        }
        Some("refresh_token") => {
            match issue::refresh_subject(config, value(&params, "refresh_token").unwrap_or_default(), (stores.now)()) {
                Ok((user, auth_time)) => (user, Some(auth_time)),
                Err(why) => return Ok(bad_credentials(stores, &why)),
            }
        }
        other => {
            return Err(RegistryError::new(
                ErrorCode::Unsupported,
                format!("grant_type {other:?} is not supported (password, refresh_token)"),
            )
            .with_status(StatusCode::BAD_REQUEST));
        }
    };
    let offline = value(&params, "access_type") == Some("offline");
    Ok(answer(stores, Some(&subject), auth_time, &wanted, offline))
}

fn form(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

fn value<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Scopes one token request may ask for: docker asks for one to three, buildkit a few more for
/// cross-repository mounts. More is not a client, and each costs a policy lookup.
const MAX_SCOPES: usize = 64;

fn scopes(params: &[(String, String)]) -> Result<Vec<Scope>> {
    let values = params.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.as_str());
    let asked = values.clone().flat_map(str::split_whitespace).count();
    if asked > MAX_SCOPES {
        return Err(RegistryError::new(
            ErrorCode::Unsupported,
            format!("a token request may ask for at most {MAX_SCOPES} scopes; this one asks for {asked}"),
        )
        .with_status(StatusCode::BAD_REQUEST));
    }
    Ok(Scope::parse_all(values))
}

/// A token is for this registry's service only: asking for another one is a client mistake.
fn check_service<M, B>(stores: &Stores<M, B>, params: &[(String, String)]) -> Result<()> {
    match value(params, "service") {
        Some(service) if service != stores.config.auth.service => Err(RegistryError::new(
            ErrorCode::Unsupported,
            format!("this registry issues tokens for service {:?}, not {service:?}", stores.config.auth.service),
        )
        .with_status(StatusCode::BAD_REQUEST)),
        _ => Ok(()),
    }
}

fn bad_credentials<M, B: BlobStore>(stores: &Stores<M, B>, detail: &str) -> Response<B::Outgoing> {
    Response::error(&RegistryError::new(ErrorCode::Unauthorized, detail))
        .header(header::WWW_AUTHENTICATE, challenge::basic(&stores.config.auth.service))
}

/// The token response. `auth_time` is when the subject gave their password: `None` for this very
/// request, the original login's time for a refresh grant (the new refresh token keeps it).
fn answer<M, B: BlobStore>(
    stores: &Stores<M, B>,
    subject: Option<&str>,
    auth_time: Option<u64>,
    wanted: &[Scope],
    offline: bool,
) -> Response<B::Outgoing> {
    let config = &stores.config.auth;
    let now = (stores.now)();
    let granted = issue::grant(config, subject, wanted);
    let token = issue::access_token(config, subject, &granted, now, (stores.random)());
    let mut body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": config.token_lifetime_secs,
        "issued_at": issue::rfc3339(now),
        "scope": granted.iter().map(Scope::to_string).collect::<Vec<_>>().join(" "),
    });
    if offline
        && let Some(refresh) = subject
            .and_then(|user| issue::refresh_token(config, user, auth_time.unwrap_or(now), now, (stores.random)()))
    {
        body["refresh_token"] = refresh.into();
    }
    Response::new(StatusCode::OK)
        .header(header::CACHE_CONTROL, "no-store")
        .json(serde_json::to_vec(&body).expect("json"))
}
