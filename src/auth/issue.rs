//! The built-in token issuer: what a subject gets for the scopes it asks for, and the signed
//! access and refresh tokens.

use super::config::AuthConfig;
use super::scope::{Actions, Resource, Scope};
use super::token::{self, Access, Audience, Claims};

/// The intersection of what is asked and what the policy allows, one entry per resource; what
/// is not allowed at all is left out (a partial grant is not an error). Everybody may ask for
/// the catalog: it lists only what the caller may pull.
pub fn grant(config: &AuthConfig, subject: Option<&str>, wanted: &[Scope]) -> Vec<Scope> {
    let mut granted: Vec<Scope> = Vec::new();
    for scope in wanted {
        let allowed = match &scope.resource {
            Resource::Repository(name) => config.policy.allowed(subject, name).intersect(scope.actions),
            Resource::Catalog => Actions::ALL,
            Resource::Admin if config.policy.allows_everywhere(subject, Actions::ADMIN) => Actions::ADMIN,
            Resource::Admin => Actions::NONE,
        };
        if allowed.is_empty() {
            continue;
        }
        match granted.iter_mut().find(|g| g.resource == scope.resource) {
            Some(existing) => existing.actions = existing.actions.union(allowed),
            None => granted.push(Scope { resource: scope.resource.clone(), actions: allowed }),
        }
    }
    granted
}

fn claims(config: &AuthConfig, subject: Option<&str>, now: u64, lifetime: u64, jti: [u8; 16]) -> Claims {
    Claims {
        iss: config.service.clone(),
        sub: subject.unwrap_or_default().to_owned(),
        aud: Audience::One(config.service.clone()),
        exp: now.saturating_add(lifetime),
        nbf: now,
        iat: now,
        jti: hex::encode(jti),
        access: Vec::new(),
        refresh: None,
        auth_time: None,
    }
}

/// A signed access token for `granted`.
pub fn access_token(config: &AuthConfig, subject: Option<&str>, granted: &[Scope], now: u64, jti: [u8; 16]) -> String {
    let mut claims = claims(config, subject, now, config.token_lifetime_secs, jti);
    claims.access = granted.iter().map(Access::from_scope).collect();
    token::sign(&claims, &config.secret)
}

/// A signed refresh token for `user`, tied to their current password hash, for a login made at
/// `auth_time` (now, for a password grant; the original login's, for a refresh grant). It
/// expires with its lifetime or when the login reaches `auth_session_max_seconds`, whichever
/// comes first; `None` when no time is left (or the user is unknown).
pub fn refresh_token(config: &AuthConfig, user: &str, auth_time: u64, now: u64, jti: [u8; 16]) -> Option<String> {
    let hash = config.users.get(user)?;
    let session_end = auth_time.saturating_add(config.session_max_secs);
    let lifetime = config.refresh_lifetime_secs.min(session_end.checked_sub(now).filter(|left| *left > 0)?);
    let mut claims = claims(config, Some(user), now, lifetime, jti);
    claims.refresh = Some(token::password_fingerprint(&config.secret, user, hash));
    claims.auth_time = Some(auth_time);
    Some(token::sign(&claims, &config.secret))
}

/// The user a refresh token stands for and when they logged in, if it is valid, the user's
/// password is unchanged and the login is younger than `auth_session_max_seconds`.
pub fn refresh_subject(config: &AuthConfig, refresh_token: &str, now: u64) -> Result<(String, u64), String> {
    let claims =
        token::verify_refresh(refresh_token, &config.secret, &config.service, now).map_err(|e| e.to_string())?;
    let user = claims.sub;
    let current = config.users.get(&user).map(|hash| token::password_fingerprint(&config.secret, &user, hash));
    if current.is_none() || current != claims.refresh {
        return Err(format!("the refresh token of {user} is no longer valid (user removed or password changed)"));
    }
    // Tokens issued before `auth_time` existed count from their own issue time.
    let auth_time = claims.auth_time.unwrap_or(claims.iat);
    if now >= auth_time.saturating_add(config.session_max_secs) {
        return Err(format!("the login of {user} is older than the longest session allowed: log in again"));
    }
    Ok((user, auth_time))
}

/// Unix seconds as RFC 3339 (`2006-01-02T15:04:05Z`), for `issued_at`.
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm), for dates from 1970 on.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::policy::Policy;

    const HASH: &str = "$2y$04$bKOFBbX2st4s.3cifBS8CeTKuRnPHiEmAhGnQkwQxJGjeuGt/ERWa";

    fn config() -> AuthConfig {
        let users: std::collections::BTreeSet<String> = ["alice".to_owned()].into();
        AuthConfig {
            mode: super::super::config::Mode::Token,
            users: [("alice".to_owned(), HASH.to_owned())].into(),
            policy: Policy::parse("team/* alice pull,push\npublic/* anonymous pull", &users, &Default::default())
                .unwrap(),
            secret: b"0123456789abcdef0123456789abcdef".to_vec(),
            ..AuthConfig::default()
        }
    }

    #[test]
    fn grants_are_the_intersection_merged_per_resource() {
        let wanted = Scope::parse_all([
            "repository:team/app:pull,push,delete",
            "repository:other:pull",
            "repository:team/app:pull",
            "registry:catalog:*",
        ]);
        let granted = grant(&config(), Some("alice"), &wanted);
        assert_eq!(granted, vec![Scope::repository("team/app", Actions::PULL.union(Actions::PUSH)), Scope::catalog()]);
        assert_eq!(
            grant(&config(), None, &Scope::parse_all(["repository:public/x:pull,push"])),
            vec![Scope::repository("public/x", Actions::PULL)]
        );
    }

    #[test]
    fn access_tokens_carry_the_grant() {
        let c = config();
        let granted = vec![Scope::repository("team/app", Actions::PULL)];
        let t = access_token(&c, Some("alice"), &granted, 1000, [1; 16]);
        let claims = token::verify_access(&t, &c.secret, "berth", 1001).unwrap();
        assert_eq!((claims.sub.as_str(), claims.exp), ("alice", 1000 + c.token_lifetime_secs));
        assert_eq!(claims.granted(&Resource::Repository("team/app".into())), Actions::PULL);
    }

    #[test]
    fn refresh_tokens_end_with_a_password_change() {
        let mut c = config();
        let t = refresh_token(&c, "alice", 1000, 1000, [2; 16]).unwrap();
        assert_eq!(refresh_subject(&c, &t, 1001), Ok(("alice".to_owned(), 1000)));
        c.users.insert("alice".into(), HASH.replace("bKOF", "bKOG"));
        assert!(refresh_subject(&c, &t, 1001).is_err());
        c.users.clear();
        assert!(refresh_subject(&c, &t, 1001).is_err());
        assert!(refresh_token(&c, "alice", 1000, 1000, [2; 16]).is_none());
    }

    #[test]
    fn refresh_grants_never_carry_a_login_past_the_longest_session() {
        let c = AuthConfig { refresh_lifetime_secs: 100, session_max_secs: 250, ..config() };
        // Logged in at 1000: every refresh keeps that login time, and the tokens stop at 1250.
        let first = refresh_token(&c, "alice", 1000, 1000, [3; 16]).unwrap();
        let claims = token::verify_refresh(&first, &c.secret, "berth", 1000).unwrap();
        assert_eq!((claims.exp, claims.auth_time), (1100, Some(1000)));
        let (user, login) = refresh_subject(&c, &first, 1090).unwrap();
        let second = refresh_token(&c, &user, login, 1090, [4; 16]).unwrap();
        let (_, login) = refresh_subject(&c, &second, 1180).unwrap();
        let third = refresh_token(&c, "alice", login, 1180, [5; 16]).unwrap();
        let claims = token::verify_refresh(&third, &c.secret, "berth", 1180).unwrap();
        assert_eq!((claims.exp, claims.auth_time), (1250, Some(1000)), "capped at the session's end, not 1280");
        assert!(refresh_subject(&c, &third, 1249).is_ok());
        assert!(refresh_token(&c, "alice", 1000, 1250, [6; 16]).is_none(), "no time left, no token");
        // An old token without auth_time counts from when it was issued.
        let mut old = token::verify_refresh(&first, &c.secret, "berth", 1000).unwrap();
        old.auth_time = None;
        old.iat = 800;
        let old = token::sign(&old, &c.secret);
        assert!(refresh_subject(&c, &old, 1099).unwrap_err().contains("log in again"));
    }

    #[test]
    fn lifetimes_never_overflow() {
        let c = config();
        let t = access_token(&c, None, &[], u64::MAX - 10, [7; 16]);
        assert_eq!(token::verify_access(&t, &c.secret, "berth", u64::MAX - 10).unwrap().exp, u64::MAX);
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
