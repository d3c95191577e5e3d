//! Authentication settings, parsed from Spin variables. Anything wrong is an error that names the
//! variable: a misconfigured registry refuses every request, it never falls back to "allow".
//!
//! | variable | format |
//! |---|---|
//! | `auth_mode` | `none` (local development), `token` (deployments), `basic` |
//! | `auth_users` | htpasswd lines `name:$2y$10$...` (bcrypt), separated by newlines or `,` |
//! | `auth_groups` | `group: user user ...` entries, separated by newlines or `;` |
//! | `auth_policy` | rules, see [`super::policy`] |
//! | `auth_token_secret` | the HMAC-SHA256 signing key, at least 32 characters (token mode) |
//! | `auth_token_lifetime_seconds` | access tokens' lifetime, default 300 |
//! | `auth_refresh_token_lifetime_seconds` | refresh tokens' lifetime, default 30 days |
//! | `auth_service` | the `service` of challenges and the tokens' `aud` and `iss`, default `berth` |
//!
//! In every list `#` starts a comment and blank entries are skipped.

use super::policy::{Policy, RESERVED_NAMES};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everybody may do everything.
    None,
    /// Docker token authentication with the built-in issuer.
    Token,
    /// HTTP Basic credentials on every request.
    Basic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub mode: Mode,
    /// User name -> bcrypt hash.
    pub users: BTreeMap<String, String>,
    pub policy: Policy,
    pub secret: Vec<u8>,
    pub token_lifetime_secs: u64,
    pub refresh_lifetime_secs: u64,
    pub service: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: Mode::None,
            users: BTreeMap::new(),
            policy: Policy::default(),
            secret: Vec::new(),
            token_lifetime_secs: DEFAULT_TOKEN_LIFETIME,
            refresh_lifetime_secs: DEFAULT_REFRESH_LIFETIME,
            service: DEFAULT_SERVICE.to_owned(),
        }
    }
}

pub const DEFAULT_TOKEN_LIFETIME: u64 = 300;
pub const DEFAULT_REFRESH_LIFETIME: u64 = 30 * 24 * 3600;
pub const DEFAULT_SERVICE: &str = "berth";
pub const MIN_SECRET_LEN: usize = 32;

/// Every variable this module reads.
pub const VARIABLES: [&str; 8] = [
    "auth_mode",
    "auth_users",
    "auth_groups",
    "auth_policy",
    "auth_token_secret",
    "auth_token_lifetime_seconds",
    "auth_refresh_token_lifetime_seconds",
    "auth_service",
];

/// A configuration error: the variable and what is wrong with it (never its value when secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "variable {}: {}", self.variable, self.message)
    }
}

impl AuthConfig {
    /// Parse the variables; `get` returns a variable's value, `None` when it is not defined.
    /// Only what the mode uses is read.
    pub fn parse(get: &dyn Fn(&str) -> Option<String>) -> Result<AuthConfig, ConfigError> {
        let fail = |variable, message: String| ConfigError { variable, message };
        let mode = match get("auth_mode").as_deref().map(str::trim) {
            None | Some("none") => return Ok(AuthConfig::default()),
            Some("token") => Mode::Token,
            Some("basic") => Mode::Basic,
            Some(other) => return Err(fail("auth_mode", format!("{other:?} is not one of none, token, basic"))),
        };
        let users = parse_users(&get("auth_users").unwrap_or_default()).map_err(|m| fail("auth_users", m))?;
        let names: BTreeSet<String> = users.keys().cloned().collect();
        let groups =
            parse_groups(&get("auth_groups").unwrap_or_default(), &names).map_err(|m| fail("auth_groups", m))?;
        let policy = Policy::parse(&get("auth_policy").unwrap_or_default(), &names, &groups)
            .map_err(|m| fail("auth_policy", m))?;
        let seconds = |variable, default| match get(variable) {
            None => Ok(default),
            Some(text) => match text.trim().parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(fail(variable, format!("{text:?} is not a positive number of seconds"))),
            },
        };
        let mut config = AuthConfig { mode, users, policy, ..AuthConfig::default() };
        if let Some(service) = get("auth_service") {
            let service = service.trim();
            if service.is_empty() || service.contains(['"', '\\']) || service.chars().any(char::is_control) {
                return Err(fail("auth_service", format!("{service:?} is empty or has quotes or control characters")));
            }
            config.service = service.to_owned();
        }
        if mode == Mode::Token {
            let secret = get("auth_token_secret").unwrap_or_default();
            if secret.len() < MIN_SECRET_LEN {
                return Err(fail(
                    "auth_token_secret",
                    format!(
                        "token mode needs a signing secret of at least {MIN_SECRET_LEN} characters \
                         (e.g. `openssl rand -hex 32`); it has {}",
                        secret.len()
                    ),
                ));
            }
            config.secret = secret.into_bytes();
            config.token_lifetime_secs = seconds("auth_token_lifetime_seconds", DEFAULT_TOKEN_LIFETIME)?;
            config.refresh_lifetime_secs = seconds("auth_refresh_token_lifetime_seconds", DEFAULT_REFRESH_LIFETIME)?;
        }
        Ok(config)
    }
}

/// The entries of a list variable: split on newlines or `;`, comments and blanks dropped.
pub(crate) fn entries(text: &str) -> impl Iterator<Item = &str> {
    text.split(['\n', ';']).map(|e| e.split('#').next().unwrap_or("").trim()).filter(|e| !e.is_empty())
}

/// htpasswd lines with bcrypt hashes only: plain, crypt, MD5 (`$apr1$`) and SHA-1 (`{SHA}`)
/// entries are refused, they are fast to brute-force.
fn parse_users(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut users = BTreeMap::new();
    for line in text.split(['\n', ',']).map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let Some((name, hash)) = line.split_once(':') else {
            return Err(format!("{line:?} is not `name:bcrypt-hash`"));
        };
        if !valid_user_name(name) {
            return Err(format!("user name {name:?} must be letters, digits, `.`, `_`, `-` or `@`"));
        }
        if RESERVED_NAMES.contains(&name) {
            return Err(format!("{name:?} is a policy keyword, not a user name"));
        }
        if !super::password::is_bcrypt(hash) {
            return Err(format!(
                "the hash of user {name:?} is not bcrypt ($2a$/$2b$/$2y$): make one with \
                 `berth-runner hash-password` or `htpasswd -nbB`"
            ));
        }
        if users.insert(name.to_owned(), hash.to_owned()).is_some() {
            return Err(format!("user {name:?} appears twice"));
        }
    }
    Ok(users)
}

fn valid_user_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}

/// `group: member member ...`; every member must be a user.
fn parse_groups(text: &str, users: &BTreeSet<String>) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let mut groups = BTreeMap::new();
    for entry in entries(text) {
        let Some((group, members)) = entry.split_once(':') else {
            return Err(format!("{entry:?} is not `group: user user ...`"));
        };
        let group = group.trim();
        if !valid_user_name(group) {
            return Err(format!("group name {group:?} must be letters, digits, `.`, `_`, `-` or `@`"));
        }
        let mut set = BTreeSet::new();
        for member in members.split([' ', '\t', ',']).filter(|m| !m.is_empty()) {
            if !users.contains(member) {
                return Err(format!("group {group:?}: no user {member:?} in auth_users"));
            }
            set.insert(member.to_owned());
        }
        if groups.insert(group.to_owned(), set).is_some() {
            return Err(format!("group {group:?} appears twice"));
        }
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scope::Actions;

    /// `htpasswd -nbB -C 4 bob secret`: bcrypt of "secret" at cost 4.
    pub const HASH: &str = "$2y$04$bKOFBbX2st4s.3cifBS8CeTKuRnPHiEmAhGnQkwQxJGjeuGt/ERWa";

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<AuthConfig, ConfigError> {
        AuthConfig::parse(&vars(pairs))
    }

    fn token_vars<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut v = vec![("auth_mode", "token"), ("auth_token_secret", "0123456789abcdef0123456789abcdef")];
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn no_mode_means_none() {
        assert_eq!(parse(&[]).unwrap().mode, Mode::None);
        assert_eq!(parse(&[("auth_mode", "none"), ("auth_users", "junk")]).unwrap().mode, Mode::None);
    }

    #[test]
    fn a_full_token_configuration() {
        let users = format!("alice:{HASH}\nbob:{HASH}");
        let c = parse(&token_vars(&[
            ("auth_users", &users),
            ("auth_groups", "devs: alice bob"),
            ("auth_policy", "team/* @devs pull,push\n* alice *"),
            ("auth_token_lifetime_seconds", "60"),
            ("auth_service", "registry.example"),
        ]))
        .unwrap();
        assert_eq!(c.mode, Mode::Token);
        assert_eq!(c.users.len(), 2);
        assert_eq!(c.policy.allowed(Some("bob"), "team/x"), Actions::PULL.union(Actions::PUSH));
        assert_eq!((c.token_lifetime_secs, c.service.as_str()), (60, "registry.example"));
        assert_eq!(c.refresh_lifetime_secs, DEFAULT_REFRESH_LIFETIME);
    }

    #[test]
    fn users_may_be_separated_by_commas() {
        let users = format!("alice:{HASH},bob:{HASH}");
        assert_eq!(parse(&token_vars(&[("auth_users", &users)])).unwrap().users.len(), 2);
    }

    #[test]
    fn every_error_names_its_variable() {
        let bob = format!("bob:{HASH}");
        let anonymous = format!("anonymous:{HASH}");
        let twice = format!("{bob}\n{bob}");
        // (variables, the variable the error names, a word of its message)
        type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
        let cases: Vec<Case> = vec![
            (vec![("auth_mode", "open")], "auth_mode", "not one of"),
            (vec![("auth_mode", "token")], "auth_token_secret", "at least 32"),
            (token_vars(&[("auth_users", "bob:secret")]), "auth_users", "not bcrypt"),
            (token_vars(&[("auth_users", "bob:$apr1$abc$def")]), "auth_users", "not bcrypt"),
            (token_vars(&[("auth_users", "bob")]), "auth_users", "name:bcrypt-hash"),
            (token_vars(&[("auth_users", &anonymous)]), "auth_users", "keyword"),
            (token_vars(&[("auth_users", &twice)]), "auth_users", "twice"),
            (token_vars(&[("auth_users", &bob), ("auth_groups", "g: bob carol")]), "auth_groups", "carol"),
            (token_vars(&[("auth_users", &bob), ("auth_policy", "* carol pull")]), "auth_policy", "carol"),
            (token_vars(&[("auth_token_lifetime_seconds", "5m")]), "auth_token_lifetime_seconds", "seconds"),
            (token_vars(&[("auth_token_lifetime_seconds", "0")]), "auth_token_lifetime_seconds", "seconds"),
            (token_vars(&[("auth_service", "a\"b")]), "auth_service", "quotes"),
            (vec![("auth_mode", "basic"), ("auth_policy", "* nobody pull")], "auth_policy", "nobody"),
        ];
        for (pairs, variable, message) in cases {
            let err = parse(&pairs).unwrap_err();
            assert_eq!(err.variable, variable, "{pairs:?}: {err}");
            assert!(err.message.contains(message), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn the_secret_is_never_in_the_message() {
        let err = parse(&[("auth_mode", "token"), ("auth_token_secret", "short-secret")]).unwrap_err();
        assert!(!err.to_string().contains("short-secret"));
    }

    #[test]
    fn basic_mode_needs_no_secret() {
        let c = parse(&[("auth_mode", "basic"), ("auth_users", &format!("bob:{HASH}"))]).unwrap();
        assert_eq!((c.mode, c.secret.len()), (Mode::Basic, 0));
    }
}
