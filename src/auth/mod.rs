//! Authentication and per-repository access control: plain Rust, no HTTP routing and no registry
//! logic. The API layer asks two things of it: [`authorize`] a request before its handler runs
//! (which yields the caller's [`Identity`], or the denial with its challenge), and, at the token
//! endpoint, [`issue::grant`] and sign what the policy allows.
//!
//! What each request needs ([`need`]):
//! ```text
//! GET|HEAD   /v2/<name>/{manifests,blobs,tags,referrers}/...   pull
//! PUT|POST|PATCH ...                                           pull,push
//! DELETE     /v2/<name>/{manifests,blobs}/...                  delete
//! any        /v2/<name>/blobs/uploads/...                      pull,push (an upload is a push)
//! GET        /v2/_catalog                                      registry:catalog:* (lists only
//!                                                              what the caller may pull)
//! GET        /v2/                                              a valid token / valid credentials
//! ```

pub mod challenge;
pub mod config;
pub mod issue;
pub mod password;
pub mod policy;
pub mod scope;
pub mod throttle;
pub mod token;

use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::message::Request;
use crate::wire::route::Route;
use config::{AuthConfig, Mode};
use http::Method;
use scope::{Actions, Resource, Scope};
use token::Claims;

/// What a request needs before its handler may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// `/v2/`: proof of a valid login, nothing more.
    Login,
    Catalog,
    Repository(String, Actions),
    /// The admin API: `admin` granted for every repository (a policy rule for `*`).
    Admin,
}

impl Need {
    /// The scope a client should ask a token for.
    pub fn scope(&self) -> Option<Scope> {
        match self {
            Need::Login => None,
            Need::Catalog => Some(Scope::catalog()),
            Need::Admin => Some(Scope::admin()),
            Need::Repository(name, actions) => Some(Scope::repository(name, *actions)),
        }
    }
}

pub fn need(method: &Method, route: &Route) -> Need {
    let push = Actions::PULL.union(Actions::PUSH);
    let (name, actions) = match route {
        Route::Base => return Need::Login,
        Route::Catalog => return Need::Catalog,
        Route::AdminQuotas
        | Route::AdminQuotaRecount
        | Route::AdminStorageCheck
        | Route::AdminGc
        | Route::AdminMetrics
        | Route::AdminEvents => {
            return Need::Admin;
        }
        Route::UploadStart(name) | Route::Upload(name, _) => (name, push),
        Route::Tags(name) | Route::Manifest(name, _) | Route::Blob(name, _) | Route::Referrers(name, _) => {
            let actions = match *method {
                Method::GET | Method::HEAD => Actions::PULL,
                Method::DELETE => Actions::DELETE,
                _ => push,
            };
            (name, actions)
        }
    };
    Need::Repository(name.as_str().to_owned(), actions)
}

/// Who is calling, and where their rights come from.
#[derive(Debug, Clone)]
pub struct Identity {
    subject: Option<String>,
    grants: Grants,
}

#[derive(Debug, Clone)]
enum Grants {
    /// Authentication is off.
    Everything,
    /// The access claim of a verified token.
    Token(Box<Claims>),
    /// The policy, looked up per request (basic mode).
    Policy,
}

impl Identity {
    /// The caller when authentication is off.
    pub fn everyone() -> Identity {
        Identity { subject: None, grants: Grants::Everything }
    }

    /// `user` (`None`: anonymous) as the policy sees them, without a token: the web UI's
    /// session user. Everyone when authentication is off.
    pub fn of_user(config: &AuthConfig, user: Option<String>) -> Identity {
        match config.mode {
            Mode::None => Identity::everyone(),
            _ => Identity { subject: user, grants: Grants::Policy },
        }
    }

    /// When the credential this identity was decided from stops being accepted: a token's
    /// expiry; `None` when nothing the caller sent expires.
    pub fn expires_at(&self) -> Option<u64> {
        match &self.grants {
            Grants::Token(claims) => Some(claims.exp),
            Grants::Everything | Grants::Policy => None,
        }
    }

    /// The user; `None` when anonymous (or when authentication is off).
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// Whether the caller may do `actions` on repository `name`.
    pub fn may(&self, config: &AuthConfig, name: &str, actions: Actions) -> bool {
        match &self.grants {
            Grants::Everything => true,
            Grants::Token(claims) => claims.granted(&Resource::Repository(name.to_owned())).contains(actions),
            Grants::Policy => config.policy.allowed(self.subject(), name).contains(actions),
        }
    }

    /// Whether this caller may use the admin API: the policy's `admin` everywhere, for a user
    /// (never anonymous, as the admin API in basic mode).
    pub fn administers(&self, config: &AuthConfig) -> bool {
        match &self.grants {
            Grants::Everything => true,
            Grants::Token(claims) => claims.granted(&Resource::Admin).contains(Actions::ADMIN),
            Grants::Policy => {
                self.subject().is_some() && config.policy.allows_everywhere(self.subject(), Actions::ADMIN)
            }
        }
    }

    /// Whether the catalog shows `name` to the caller: the repositories the policy lets them pull.
    pub fn lists(&self, config: &AuthConfig, name: &str) -> bool {
        match self.grants {
            Grants::Everything => true,
            _ => config.policy.allowed(self.subject(), name).contains(Actions::PULL),
        }
    }

    /// Whether the caller may pull from every repository (a rule with pattern `*`): needed to
    /// mount a blob without `from`, which takes it from wherever it is.
    pub fn pulls_everywhere(&self, config: &AuthConfig) -> bool {
        match self.grants {
            Grants::Everything => true,
            _ => config.policy.allows_everywhere(self.subject(), Actions::PULL),
        }
    }
}

/// A refusal: the error for the body and the `WWW-Authenticate` challenge, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub error: RegistryError,
    pub challenge: Option<String>,
    /// A password was checked and was wrong (counted by the failed-login throttle).
    pub wrong_password: bool,
}

impl Denied {
    fn unauthorized(detail: impl Into<String>, challenge: String) -> Denied {
        Denied {
            error: RegistryError::new(ErrorCode::Unauthorized, detail),
            challenge: Some(challenge),
            wrong_password: false,
        }
    }
}

/// Decide whether `req` may have what it needs, at time `now`.
pub fn authorize<B>(config: &AuthConfig, req: &Request<B>, need: &Need, now: u64) -> Result<Identity, Denied> {
    match config.mode {
        Mode::None => Ok(Identity::everyone()),
        Mode::Token => authorize_token(config, req, need, now),
        Mode::Basic => authorize_basic(config, req, need),
    }
}

fn authorize_token<B>(config: &AuthConfig, req: &Request<B>, need: &Need, now: u64) -> Result<Identity, Denied> {
    let realm = challenge::realm(config, req.origin.as_deref(), &req.headers);
    let scope = need.scope();
    let challenge = |error| challenge::bearer(&realm, &config.service, scope.as_ref(), error);
    let Some(token) = bearer_token(req) else {
        return Err(Denied::unauthorized(format!("a token is needed: get one at {realm}"), challenge(None)));
    };
    let claims = token::verify_access(token, &config.secret, &config.service, now)
        .map_err(|e| Denied::unauthorized(e.to_string(), challenge(Some("invalid_token"))))?;
    let identity = Identity { subject: claims.subject().map(str::to_owned), grants: Grants::Token(Box::new(claims)) };
    let allowed = match (need, &identity.grants) {
        (Need::Login, _) => true,
        (Need::Catalog, Grants::Token(claims)) => !claims.granted(&Resource::Catalog).is_empty(),
        (Need::Admin, _) => identity.administers(config),
        (Need::Repository(name, actions), _) => identity.may(config, name, *actions),
        _ => false,
    };
    if !allowed {
        let what = scope.as_ref().map_or_else(String::new, Scope::to_string);
        return Err(Denied::unauthorized(
            format!("the token does not grant {what}"),
            challenge(Some("insufficient_scope")),
        ));
    }
    Ok(identity)
}

/// Decide whether `req` may have `first`, and whether it may have `second`, checking a Basic
/// password once for both (a pull that may be answered from here or from an upstream).
pub fn authorize_both<B>(
    config: &AuthConfig,
    req: &Request<B>,
    first: &Need,
    second: &Need,
    now: u64,
) -> (Result<Identity, Denied>, Result<Identity, Denied>) {
    match config.mode {
        Mode::Basic => match basic_subject(config, req) {
            Ok(subject) => (basic_decide(config, subject.clone(), first), basic_decide(config, subject, second)),
            Err(denied) => (Err(denied.clone()), Err(denied)),
        },
        _ => (authorize(config, req, first, now), authorize(config, req, second, now)),
    }
}

fn authorize_basic<B>(config: &AuthConfig, req: &Request<B>, need: &Need) -> Result<Identity, Denied> {
    basic_decide(config, basic_subject(config, req)?, need)
}

/// Who the Basic credentials of `req` say the caller is (`None`: anonymous), the password
/// checked.
fn basic_subject<B>(config: &AuthConfig, req: &Request<B>) -> Result<Option<String>, Denied> {
    let challenge = challenge::basic(&config.service);
    match req.header(http::header::AUTHORIZATION) {
        None => Ok(None),
        Some(header) => match password::basic_credentials(header) {
            Some((user, pass)) if config.check_password(&user, &pass) => Ok(Some(user)),
            Some(_) => {
                Err(Denied { wrong_password: true, ..Denied::unauthorized("wrong user name or password", challenge) })
            }
            None => Err(Denied::unauthorized("unreadable Basic credentials", challenge)),
        },
    }
}

/// What the policy lets `subject` (already authenticated) have.
fn basic_decide(config: &AuthConfig, subject: Option<String>, need: &Need) -> Result<Identity, Denied> {
    let challenge = challenge::basic(&config.service);
    let identity = Identity { subject, grants: Grants::Policy };
    match (need, identity.subject()) {
        (Need::Login, None) => Err(Denied::unauthorized("log in with a user name and password", challenge)),
        (Need::Login | Need::Catalog, _) => Ok(identity),
        (Need::Admin, Some(_)) if identity.administers(config) => Ok(identity),
        (Need::Admin, None) => Err(Denied::unauthorized("log in to use the admin API", challenge)),
        (Need::Admin, Some(user)) => Err(Denied {
            error: RegistryError::new(
                ErrorCode::Denied,
                format!("user {user} may not use the admin API (it needs a policy rule `* <who> admin`)"),
            ),
            challenge: None,
            wrong_password: false,
        }),
        (Need::Repository(name, actions), _) if identity.may(config, name, *actions) => Ok(identity),
        (Need::Repository(name, actions), None) => {
            Err(Denied::unauthorized(format!("log in to {actions} repository {name}"), challenge))
        }
        (Need::Repository(name, actions), Some(user)) => Err(Denied {
            error: RegistryError::new(ErrorCode::Denied, format!("user {user} may not {actions} repository {name}")),
            challenge: None,
            wrong_password: false,
        }),
    }
}

/// The token of `Authorization: Bearer <token>`.
pub fn bearer_token<B>(req: &Request<B>) -> Option<&str> {
    let (scheme, token) = req.header(http::header::AUTHORIZATION)?.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests;
