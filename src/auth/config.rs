//! Authentication settings, parsed from Spin variables. Anything wrong is an error that names the
//! variable: a misconfigured registry refuses every request, it never falls back to "allow".
//!
//! | variable | format |
//! |---|---|
//! | `auth_mode` | `none` (local development), `token` (deployments), `basic` |
//! | `auth_users` | htpasswd lines `name:$2y$10$...` (bcrypt), separated by newlines or `,` |
//! | `auth_groups` | `group: user user ...` entries, separated by newlines or `;` |
//! | `auth_policy` | rules, see [`super::policy`] |
//! | `auth_token_secret` | the HMAC-SHA256 signing key, at least 32 characters (token mode; in basic mode, optional: it seals the web UI's sessions) |
//! | `auth_token_lifetime_seconds` | access tokens' lifetime, default 300 |
//! | `auth_refresh_token_lifetime_seconds` | refresh tokens' lifetime, default 30 days |
//! | `auth_service` | the `service` of challenges and the tokens' `aud` and `iss`, default `berth` |
//! | `auth_realm` | the token endpoint's URL given in challenges; default: `/token` of the request's own origin |
//! | `auth_trust_forwarded_headers` | `true`: take the origin and client address from `X-Forwarded-*` (behind a proxy that sets them; the address is the last `X-Forwarded-For` entry); default `false` |
//! | `auth_session_max_seconds` | how long refresh grants may extend one login, default 90 days |
//! | `auth_login_failures_per_user` | failed logins per user per 5 minutes before 429, default 10 |
//! | `auth_login_failures_per_address` | failed logins per client address per 5 minutes before 429, default 50 |
//!
//! In every list `#` starts a comment and blank entries are skipped.
//!
//! Safe defaults: with `auth_mode` unset or `none` (everybody may push and delete) while another
//! `auth_*` variable is set (a misspelt mode variable, say), the configuration is refused.
//! Errors name the variable and where in it, never a value (a users line may hold a hash).

use super::policy::{Policy, RESERVED_NAMES};
use crate::wire::entries::entries;
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
    /// Refresh grants never carry a login past this age.
    pub session_max_secs: u64,
    pub service: String,
    /// The token endpoint's URL for challenges, when set (else the request's own origin).
    pub realm: Option<String>,
    /// Whether `X-Forwarded-Proto`, `-Host` and `-For` are believed.
    pub trust_forwarded: bool,
    pub throttle: Throttle,
}

/// Failed logins allowed per window before further attempts are refused (429) until it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    pub per_user: i64,
    pub per_address: i64,
    pub window_secs: u64,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle { per_user: DEFAULT_FAILURES_PER_USER, per_address: DEFAULT_FAILURES_PER_ADDRESS, window_secs: 300 }
    }
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
            session_max_secs: DEFAULT_SESSION_MAX,
            service: DEFAULT_SERVICE.to_owned(),
            realm: None,
            trust_forwarded: false,
            throttle: Throttle::default(),
        }
    }
}

pub const DEFAULT_TOKEN_LIFETIME: u64 = 300;
pub const DEFAULT_REFRESH_LIFETIME: u64 = 30 * 24 * 3600;
pub const DEFAULT_SESSION_MAX: u64 = 90 * 24 * 3600;
pub const DEFAULT_SERVICE: &str = "berth";
pub const DEFAULT_FAILURES_PER_USER: i64 = 10;
pub const DEFAULT_FAILURES_PER_ADDRESS: i64 = 50;
pub const MIN_SECRET_LEN: usize = 32;
/// Upper bounds of the lifetimes: an access token lives at most a day, a refresh token and a
/// login at most a year (and `now + lifetime` can never overflow).
pub const MAX_TOKEN_LIFETIME: u64 = 24 * 3600;
pub const MAX_REFRESH_LIFETIME: u64 = 365 * 24 * 3600;
/// Below this bcrypt cost a stolen hash is cheap to crack: warned about at start.
pub const MIN_RECOMMENDED_COST: u32 = 10;

/// Every variable this module reads, with the default spin.toml gives it: a variable holding
/// anything else counts as set.
pub const VARIABLES_AND_DEFAULTS: [(&str, &str); 13] = [
    ("auth_mode", "none"),
    ("auth_users", ""),
    ("auth_groups", ""),
    ("auth_policy", ""),
    ("auth_token_secret", ""),
    ("auth_token_lifetime_seconds", "300"),
    ("auth_refresh_token_lifetime_seconds", "2592000"),
    ("auth_session_max_seconds", "7776000"),
    ("auth_service", "berth"),
    ("auth_realm", ""),
    ("auth_trust_forwarded_headers", "false"),
    ("auth_login_failures_per_user", "10"),
    ("auth_login_failures_per_address", "50"),
];

/// Every variable this module reads.
pub fn variables() -> impl Iterator<Item = &'static str> {
    VARIABLES_AND_DEFAULTS.iter().map(|(name, _)| *name)
}

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
    /// Whether `password` is `user`'s. An unknown user costs as much as a wrong password of the
    /// slowest real user (a hash of the highest configured cost is still computed), so response times
    /// do not tell which user names exist.
    pub fn check_password(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                if let Some(dummy) = self.dummy_hash() {
                    let _ = bcrypt::verify(password, dummy);
                }
                false
            }
        }
    }

    /// A 32-byte key for `purpose` from the token secret alone (`auth_token_secret`), in any
    /// mode; `None` without one. What a holder of the users' hashes must not be able to make
    /// (the web UI's sessions) is sealed with it.
    pub fn secret_key(&self, purpose: &[u8]) -> Option<[u8; 32]> {
        use hmac::{KeyInit, Mac};
        if self.secret.is_empty() {
            return None;
        }
        let mut mac = <hmac::Hmac<sha2::Sha256>>::new_from_slice(purpose).expect("any key length");
        mac.update(&self.secret);
        Some(mac.finalize().into_bytes().into())
    }

    /// A 32-byte key for `purpose`, derived from what only this deployment knows: the token
    /// secret (token mode) or the users' hashes (basic mode); every instance derives the same.
    pub fn derived_key(&self, purpose: &[u8]) -> [u8; 32] {
        use hmac::{KeyInit, Mac};
        let mut mac = <hmac::Hmac<sha2::Sha256>>::new_from_slice(purpose).expect("any key length");
        match self.mode {
            Mode::Token => mac.update(&self.secret),
            _ => {
                for (user, hash) in &self.users {
                    mac.update(user.as_bytes());
                    mac.update(b"\0");
                    mac.update(hash.as_bytes());
                    mac.update(b"\0");
                }
            }
        }
        mac.finalize().into_bytes().into()
    }

    /// Parse the variables; `get` returns a variable's value, `None` when it is not defined.
    /// Only what the mode uses is read.
    pub fn parse(get: &dyn Fn(&str) -> Option<String>) -> Result<AuthConfig, ConfigError> {
        let fail = |variable, message: String| ConfigError { variable, message };
        let mode = match get("auth_mode").as_deref().map(str::trim) {
            None | Some("none") => {
                refuse_settings_without_a_mode(get)?;
                return Ok(AuthConfig::default());
            }
            Some("token") => Mode::Token,
            Some("basic") => Mode::Basic,
            Some(_) => return Err(fail("auth_mode", "is not one of none, token, basic".into())),
        };
        let users = parse_users(&get("auth_users").unwrap_or_default()).map_err(|m| fail("auth_users", m))?;
        let names: BTreeSet<String> = users.keys().cloned().collect();
        let groups =
            parse_groups(&get("auth_groups").unwrap_or_default(), &names).map_err(|m| fail("auth_groups", m))?;
        let policy = Policy::parse(&get("auth_policy").unwrap_or_default(), &names, &groups)
            .map_err(|m| fail("auth_policy", m))?;
        let number = |variable, default: u64, max: u64| match get(variable) {
            None => Ok(default),
            Some(text) => match text.trim().parse::<u64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(fail(variable, format!("is not a whole number from 1 to {max}"))),
            },
        };
        let mut config = AuthConfig { mode, users, policy, ..AuthConfig::default() };
        if let Some(service) = get("auth_service") {
            let service = service.trim();
            if service.is_empty() || service.contains(['"', '\\']) || service.chars().any(char::is_control) {
                return Err(fail("auth_service", "is empty or has quotes or control characters".into()));
            }
            config.service = service.to_owned();
        }
        config.realm = match get("auth_realm").as_deref().map(str::trim) {
            None | Some("") => None,
            Some(realm) if valid_realm(realm) => Some(realm.to_owned()),
            Some(_) => {
                return Err(fail("auth_realm", "is not an http:// or https:// URL without quotes or spaces".into()));
            }
        };
        config.trust_forwarded = match get("auth_trust_forwarded_headers").as_deref().map(str::trim) {
            None | Some("" | "false") => false,
            Some("true") => true,
            Some(_) => return Err(fail("auth_trust_forwarded_headers", "is neither true nor false".into())),
        };
        config.throttle.per_user =
            number("auth_login_failures_per_user", DEFAULT_FAILURES_PER_USER as u64, 1_000_000)? as i64;
        config.throttle.per_address =
            number("auth_login_failures_per_address", DEFAULT_FAILURES_PER_ADDRESS as u64, 1_000_000)? as i64;
        // In basic mode the secret, when set, seals the web UI's sessions (and nothing else).
        if mode == Mode::Basic
            && let Some(secret) = get("auth_token_secret").filter(|s| !s.is_empty())
        {
            if secret.len() < MIN_SECRET_LEN {
                return Err(fail(
                    "auth_token_secret",
                    format!("is shorter than {MIN_SECRET_LEN} characters (e.g. `openssl rand -hex 32`)"),
                ));
            }
            config.secret = secret.into_bytes();
        }
        if mode == Mode::Token {
            let secret = get("auth_token_secret").unwrap_or_default();
            if secret.len() < MIN_SECRET_LEN {
                return Err(fail(
                    "auth_token_secret",
                    format!(
                        "token mode needs a signing secret of at least {MIN_SECRET_LEN} characters \
                         (e.g. `openssl rand -hex 32`)"
                    ),
                ));
            }
            config.secret = secret.into_bytes();
            config.token_lifetime_secs =
                number("auth_token_lifetime_seconds", DEFAULT_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME)?;
            config.refresh_lifetime_secs =
                number("auth_refresh_token_lifetime_seconds", DEFAULT_REFRESH_LIFETIME, MAX_REFRESH_LIFETIME)?;
            config.session_max_secs = number("auth_session_max_seconds", DEFAULT_SESSION_MAX, MAX_REFRESH_LIFETIME)?;
        }
        Ok(config)
    }

    /// The hash an unknown user's password is checked against, so that the answer takes as long
    /// as for the slowest real user: the hash of the highest cost.
    pub fn dummy_hash(&self) -> Option<&str> {
        self.users.values().max_by_key(|hash| bcrypt_cost(hash)).map(String::as_str)
    }

    /// Users whose bcrypt cost is below [`MIN_RECOMMENDED_COST`], with their cost.
    pub fn weak_hashes(&self) -> Vec<(&str, u32)> {
        self.users
            .iter()
            .map(|(user, hash)| (user.as_str(), bcrypt_cost(hash)))
            .filter(|(_, cost)| *cost < MIN_RECOMMENDED_COST)
            .collect()
    }
}

/// The cost field of a bcrypt hash (`$2y$<cost>$...`), 0 when it has none.
fn bcrypt_cost(hash: &str) -> u32 {
    hash.get(4..6).and_then(|cost| cost.parse().ok()).unwrap_or(0)
}

fn valid_realm(realm: &str) -> bool {
    (realm.starts_with("https://") || realm.starts_with("http://"))
        && realm.len() <= 2048
        && !realm.contains(['"', '\\', ' '])
        && !realm.chars().any(char::is_control)
}

/// With authentication off, a set `auth_*` variable means a configuration that meant to turn it
/// on (a misspelt or missing `auth_mode`): refused, rather than serving everybody everything.
fn refuse_settings_without_a_mode(get: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    for (variable, default) in VARIABLES_AND_DEFAULTS.iter().skip(1) {
        let Some(value) = get(variable) else { continue };
        let value = value.trim();
        if !value.is_empty() && value != *default {
            return Err(ConfigError {
                variable: "auth_mode",
                message: format!(
                    "authentication is off (auth_mode unset or none: everybody may push and delete) but {variable} \
                     is set: set auth_mode to token or basic, or unset {variable}"
                ),
            });
        }
    }
    Ok(())
}

/// htpasswd lines with bcrypt hashes only: plain, crypt, MD5 (`$apr1$`) and SHA-1 (`{SHA}`)
/// entries are refused, they are fast to brute-force.
fn parse_users(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut users = BTreeMap::new();
    let lines = text.split(['\n', ',']).map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    for (number, line) in lines.enumerate().map(|(i, line)| (i + 1, line)) {
        // Never quote the line: it holds a hash, and the message reaches the log.
        let Some((name, hash)) = line.split_once(':') else {
            return Err(format!("entry {number} is not `name:bcrypt-hash`"));
        };
        if !valid_user_name(name) {
            return Err(format!("entry {number}: a user name must be letters, digits, `.`, `_`, `-` or `@`"));
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

    #[test]
    fn an_htpasswd_hash_verifies() {
        let config = AuthConfig {
            users: [("bob".to_owned(), "$2y$04$bKOFBbX2st4s.3cifBS8CeTKuRnPHiEmAhGnQkwQxJGjeuGt/ERWa".to_owned())]
                .into(),
            ..Default::default()
        };
        assert!(config.check_password("bob", "secret"));
        assert!(!config.check_password("bob", "Secret"));
        assert!(!config.check_password("alice", "secret"));
        assert!(!AuthConfig::default().check_password("bob", "secret"));
    }

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
        let defaults: Vec<(&str, &str)> = VARIABLES_AND_DEFAULTS.to_vec();
        assert_eq!(parse(&defaults).unwrap().mode, Mode::None, "spin.toml's defaults are not settings");
    }

    #[test]
    fn any_auth_setting_without_a_mode_is_refused() {
        let bob = format!("bob:{HASH}");
        for (variable, value) in [
            ("auth_users", bob.as_str()),
            ("auth_groups", "g: bob"),
            ("auth_policy", "* anonymous pull"),
            ("auth_token_secret", "0123456789abcdef0123456789abcdef"),
            ("auth_token_lifetime_seconds", "60"),
            ("auth_service", "registry.example"),
            ("auth_realm", "https://r.example/token"),
            ("auth_trust_forwarded_headers", "true"),
        ] {
            for mode in [None, Some("none")] {
                let mut pairs = vec![(variable, value)];
                pairs.extend(mode.map(|m| ("auth_mode", m)));
                let err = parse(&pairs).unwrap_err();
                assert_eq!(err.variable, "auth_mode", "{pairs:?}");
                assert!(err.message.contains(variable) && err.message.contains("everybody"), "{err}");
                assert!(!err.message.contains(value), "the value is not quoted: {err}");
            }
        }
    }

    #[test]
    fn spin_toml_declares_every_variable_with_the_default_assumed_here() {
        let manifest = include_str!("../../spin.toml");
        for (variable, default) in VARIABLES_AND_DEFAULTS {
            let declared = format!("{variable} = {{ default = \"{default}\"");
            assert!(manifest.contains(&declared), "spin.toml lacks `{declared}`");
            let mapped = format!("{variable} = \"{{{{ {variable} }}}}\"");
            assert!(manifest.contains(&mapped), "spin.toml does not give the component `{mapped}`");
        }
    }

    #[test]
    fn lifetimes_are_bounded() {
        for (variable, too_long) in [
            ("auth_token_lifetime_seconds", "86401"),
            ("auth_refresh_token_lifetime_seconds", "31536001"),
            ("auth_session_max_seconds", "31536001"),
            ("auth_token_lifetime_seconds", "18446744073709551615"),
        ] {
            let err = parse(&token_vars(&[(variable, too_long)])).unwrap_err();
            assert_eq!(err.variable, variable);
        }
        let c = parse(&token_vars(&[("auth_token_lifetime_seconds", "86400")])).unwrap();
        assert_eq!(c.token_lifetime_secs, 86400);
    }

    #[test]
    fn the_dummy_hash_is_the_costliest_and_weak_costs_are_found() {
        let strong = HASH.replace("$04$", "$12$");
        let users = format!("alice:{HASH}\nbob:{strong}\ncarol:{HASH}");
        let c = parse(&token_vars(&[("auth_users", &users)])).unwrap();
        assert_eq!(c.dummy_hash(), Some(strong.as_str()));
        assert_eq!(c.weak_hashes(), [("alice", 4), ("carol", 4)]);
    }

    #[test]
    fn realm_and_forwarded_headers() {
        let c =
            parse(&token_vars(&[("auth_realm", "https://r.example/token"), ("auth_trust_forwarded_headers", "true")]))
                .unwrap();
        assert_eq!((c.realm.as_deref(), c.trust_forwarded), (Some("https://r.example/token"), true));
        let c = parse(&token_vars(&[])).unwrap();
        assert_eq!((c.realm, c.trust_forwarded), (None, false), "off by default");
        for (variable, value) in
            [("auth_realm", "ftp://x/token"), ("auth_realm", "https://a\"b"), ("auth_trust_forwarded_headers", "yes")]
        {
            assert_eq!(parse(&token_vars(&[(variable, value)])).unwrap_err().variable, variable);
        }
    }

    #[test]
    fn errors_never_quote_a_users_line() {
        // A line with a wrong separator holds a hash: the message must not.
        let line = format!("bob;{HASH}");
        let err = parse(&token_vars(&[("auth_users", &line.replace(';', "="))])).unwrap_err();
        assert_eq!(err.variable, "auth_users");
        assert!(!err.to_string().contains("$2y$"), "{err}");
        assert!(err.message.contains("entry 1"), "{err}");
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
            (token_vars(&[("auth_token_lifetime_seconds", "5m")]), "auth_token_lifetime_seconds", "whole number"),
            (token_vars(&[("auth_token_lifetime_seconds", "0")]), "auth_token_lifetime_seconds", "whole number"),
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
