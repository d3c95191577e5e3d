//! Tokens: JSON Web Tokens signed with HMAC-SHA256 (RFC 7519 / 7515), with the Docker token
//! `access` claim.
//!
//! ```text
//! header  {"alg":"HS256","typ":"JWT"}
//! claims  {"iss":service,"sub":user,"aud":service,"exp":..,"nbf":..,"iat":..,"jti":..,
//!          "access":[{"type":"repository","name":"team/app","actions":["pull","push"]}]}
//! ```
//! Verification checks, in order: the shape, `alg` (HS256 only: `none` and everything else are
//! refused before any other look at the token), the signature (constant time), then `iss`,
//! `aud`, `nbf` and `exp`. Refresh tokens are JWTs of the same kind with a `refresh` claim and no
//! `access`; each kind is refused where the other is expected.

use super::scope::{Actions, Resource, Scope};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Tokens longer than this are not ours.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Clock skew tolerated on `nbf` between the instance that issued a token and the one checking it.
const NBF_LEEWAY_SECS: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user; empty for an anonymous token.
    pub sub: String,
    pub aud: Audience,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<Access>,
    /// Refresh tokens only: a fingerprint of the user's password hash when it was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<String>,
    /// Refresh tokens only: when the user last gave their password (OpenID's `auth_time`);
    /// refresh grants keep it, so a session cannot be extended forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<u64>,
}

/// `aud`: one string, or a list (RFC 7519 allows both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, service: &str) -> bool {
        match self {
            Audience::One(aud) => aud == service,
            Audience::Many(auds) => auds.iter().any(|a| a == service),
        }
    }
}

/// One entry of the `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Access {
    pub fn from_scope(scope: &Scope) -> Access {
        match &scope.resource {
            Resource::Repository(name) => Access {
                kind: "repository".into(),
                name: name.clone(),
                actions: scope.actions.names().into_iter().map(String::from).collect(),
            },
            Resource::Catalog => Access { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] },
            Resource::Admin => Access { kind: "registry".into(), name: "admin".into(), actions: vec!["admin".into()] },
        }
    }
}

impl Claims {
    /// The actions this token grants on `resource`.
    pub fn granted(&self, resource: &Resource) -> Actions {
        let (kind, name) = match resource {
            Resource::Repository(name) => ("repository", name.as_str()),
            Resource::Catalog => ("registry", "catalog"),
            Resource::Admin => ("registry", "admin"),
        };
        self.access
            .iter()
            .filter(|a| a.kind == kind && a.name == name)
            .flat_map(|a| a.actions.iter())
            .filter_map(|action| Actions::named(action))
            .fold(Actions::NONE, Actions::union)
    }

    pub fn subject(&self) -> Option<&str> {
        Some(self.sub.as_str()).filter(|s| !s.is_empty())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    Algorithm(String),
    Signature,
    Issuer,
    Audience,
    NotYetValid,
    Expired,
    /// A refresh token where an access token belongs, or the other way round.
    WrongKind,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Malformed => f.write_str("the token is not a well-formed JWT"),
            TokenError::Algorithm(alg) => write!(f, "the token's algorithm {alg:?} is not accepted (HS256 only)"),
            TokenError::Signature => f.write_str("the token's signature is not valid"),
            TokenError::Issuer => f.write_str("the token was issued by someone else"),
            TokenError::Audience => f.write_str("the token was issued for another service"),
            TokenError::NotYetValid => f.write_str("the token is not valid yet"),
            TokenError::Expired => f.write_str("the token has expired"),
            TokenError::WrongKind => f.write_str("the token is not of the kind expected here"),
        }
    }
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length")
}

/// The signed, encoded token.
pub fn sign(claims: &Claims, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
    let signing_input = format!("{header}.{payload}");
    let mut mac = mac(secret);
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Check `token` as `service`'s at time `now` (Unix seconds); its claims if it holds.
pub fn verify(token: &str, secret: &[u8], service: &str, now: u64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let signing_input = &token[..header.len() + 1 + payload.len()];
    let header: Header = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(TokenError::Malformed)?;
    if header.alg != "HS256" {
        return Err(TokenError::Algorithm(header.alg));
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
    let mut mac = mac(secret);
    mac.update(signing_input.as_bytes());
    mac.verify_slice(&signature).map_err(|_| TokenError::Signature)?;
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(TokenError::Malformed)?;
    if claims.iss != service {
        return Err(TokenError::Issuer);
    }
    if !claims.aud.contains(service) {
        return Err(TokenError::Audience);
    }
    if claims.nbf > now.saturating_add(NBF_LEEWAY_SECS) {
        return Err(TokenError::NotYetValid);
    }
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// An access token's claims: refused if it is a refresh token.
pub fn verify_access(token: &str, secret: &[u8], service: &str, now: u64) -> Result<Claims, TokenError> {
    let claims = verify(token, secret, service, now)?;
    if claims.refresh.is_some() {
        return Err(TokenError::WrongKind);
    }
    Ok(claims)
}

/// A refresh token's claims: refused if it is an access token.
pub fn verify_refresh(token: &str, secret: &[u8], service: &str, now: u64) -> Result<Claims, TokenError> {
    let claims = verify(token, secret, service, now)?;
    if claims.refresh.is_none() || !claims.access.is_empty() || claims.subject().is_none() {
        return Err(TokenError::WrongKind);
    }
    Ok(claims)
}

/// What a refresh token remembers of its user's password: an HMAC of the stored hash, so a new
/// password (or a removed user) ends the refresh tokens issued before.
pub fn password_fingerprint(secret: &[u8], user: &str, hash: &str) -> String {
    let mut mac = mac(secret);
    mac.update(b"berth refresh\0");
    mac.update(user.as_bytes());
    mac.update(b"\0");
    mac.update(hash.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims() -> Claims {
        Claims {
            iss: "berth".into(),
            sub: "alice".into(),
            aud: Audience::One("berth".into()),
            exp: 1_000_300,
            nbf: 1_000_000,
            iat: 1_000_000,
            jti: "j".into(),
            access: vec![Access::from_scope(&Scope::repository("team/app", Actions::PULL.union(Actions::PUSH)))],
            refresh: None,
            auth_time: None,
        }
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn a_signed_token_verifies_and_grants_its_access() {
        let token = sign(&claims(), SECRET);
        let verified = verify_access(&token, SECRET, "berth", 1_000_100).unwrap();
        assert_eq!(verified, claims());
        assert_eq!(verified.granted(&Resource::Repository("team/app".into())), Actions::PULL.union(Actions::PUSH));
        assert_eq!(verified.granted(&Resource::Repository("team/other".into())), Actions::NONE);
        assert_eq!(verified.granted(&Resource::Catalog), Actions::NONE);
    }

    #[test]
    fn time_limits() {
        let token = sign(&claims(), SECRET);
        assert_eq!(verify(&token, SECRET, "berth", 1_000_300), Err(TokenError::Expired));
        assert_eq!(verify(&token, SECRET, "berth", 999_000), Err(TokenError::NotYetValid));
        assert!(verify(&token, SECRET, "berth", 999_990).is_ok(), "small clock skew on nbf");
    }

    #[test]
    fn another_secret_service_or_issuer_is_refused() {
        let token = sign(&claims(), SECRET);
        assert_eq!(
            verify(&token, b"another secret of thirty-two bytes", "berth", 1_000_100),
            Err(TokenError::Signature)
        );
        assert_eq!(verify(&token, SECRET, "other", 1_000_100), Err(TokenError::Issuer));
        let mut c = claims();
        c.aud = Audience::One("other".into());
        assert_eq!(verify(&sign(&c, SECRET), SECRET, "berth", 1_000_100), Err(TokenError::Audience));
        c.aud = Audience::Many(vec!["other".into(), "berth".into()]);
        assert!(verify(&sign(&c, SECRET), SECRET, "berth", 1_000_100).is_ok());
    }

    #[test]
    fn a_tampered_payload_breaks_the_signature() {
        let token = sign(&claims(), SECRET);
        let parts: Vec<&str> = token.split('.').collect();
        let mut c = claims();
        c.access[0].actions.push("delete".into());
        let forged = format!("{}.{}.{}", parts[0], b64(&serde_json::to_vec(&c).unwrap()), parts[2]);
        assert_eq!(verify(&forged, SECRET, "berth", 1_000_100), Err(TokenError::Signature));
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let payload = b64(&serde_json::to_vec(&claims()).unwrap());
        for alg in ["none", "None", "HS512", "RS256", "hs256"] {
            let header = b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
            for signature in ["", "AAAA"] {
                let token = format!("{header}.{payload}.{signature}");
                assert_eq!(verify(&token, SECRET, "berth", 1_000_100), Err(TokenError::Algorithm(alg.into())));
            }
        }
    }

    #[test]
    fn malformed_tokens() {
        let token = sign(&claims(), SECRET);
        for bad in ["", "a.b", "a.b.c.d", "!!!.!!!.!!!", &format!("{token}.x"), &"a".repeat(MAX_TOKEN_LEN + 1)] {
            assert_eq!(verify(bad, SECRET, "berth", 1_000_100), Err(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn refresh_and_access_tokens_do_not_stand_in_for_each_other() {
        let access = sign(&claims(), SECRET);
        let mut c = claims();
        c.access.clear();
        c.refresh = Some(password_fingerprint(SECRET, "alice", "hash"));
        let refresh = sign(&c, SECRET);
        assert_eq!(verify_refresh(&access, SECRET, "berth", 1_000_100), Err(TokenError::WrongKind));
        assert_eq!(verify_access(&refresh, SECRET, "berth", 1_000_100), Err(TokenError::WrongKind));
        assert!(verify_refresh(&refresh, SECRET, "berth", 1_000_100).is_ok());
    }

    #[test]
    fn fingerprints_follow_the_password_hash() {
        let a = password_fingerprint(SECRET, "alice", "hash1");
        assert_eq!(a, password_fingerprint(SECRET, "alice", "hash1"));
        assert_ne!(a, password_fingerprint(SECRET, "alice", "hash2"));
        assert_ne!(a, password_fingerprint(SECRET, "bob", "hash1"));
    }
}
