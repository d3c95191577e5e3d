//! The registry's settings from Spin variables, parsed in one place: the component parses them on
//! every request, and `berth-runner` parses the same values at start to report a mistake before
//! serving. A value that does not parse is an error naming the variable, never a silent default.

pub mod events;
pub mod immutable;
pub mod mirrors;
pub mod quotas;
pub mod retention;

use crate::auth::config::{AuthConfig, ConfigError};

/// A blob URL is meant to live minutes: whoever holds it reads the blob, whatever the policy says
/// by then (S3 would sign for 7 days).
const MAX_REDIRECT_SECS: u32 = 3600;

/// A collector between its moves is never taken for a dead one: twice the time a step may take
/// (`crate::lifecycle::gc::STEP_SECONDS`, which asserts this at compile time).
pub const MIN_ABANDONED_SECS: u64 = 10;

/// Every variable the registry reads.
pub fn variables() -> impl Iterator<Item = &'static str> {
    [
        "upload_expiry_seconds",
        "blob_redirect_seconds",
        "immutable_tags",
        "quotas",
        "gc_grace_seconds",
        "gc_abandoned_seconds",
        "retention",
        "mirror_upstreams",
        "mirror_credentials",
        "events",
    ]
    .into_iter()
    .chain(crate::auth::config::variables())
}

/// Parse the settings; `get` gives a variable's value, `None` when it is not defined.
pub fn from_variables(get: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    if let Some(value) = get("upload_expiry_seconds") {
        config.upload_expiry_secs = value.trim().parse().map_err(|_| ConfigError {
            variable: "upload_expiry_seconds",
            message: format!("{value:?} is not a number of seconds"),
        })?;
    }
    if let Some(value) = get("blob_redirect_seconds") {
        config.blob_redirect_secs =
            value.trim().parse().ok().filter(|&s: &u32| s <= MAX_REDIRECT_SECS).ok_or_else(|| ConfigError {
                variable: "blob_redirect_seconds",
                message: format!("{value:?} is not a number of seconds from 0 (off) to {MAX_REDIRECT_SECS}"),
            })?;
    }
    if let Some(value) = get("immutable_tags") {
        config.immutable_tags = immutable::ImmutableTags::parse(&value)
            .map_err(|message| ConfigError { variable: "immutable_tags", message })?;
    }
    if let Some(value) = get("quotas") {
        config.quotas = quotas::Quotas::parse(&value).map_err(|message| ConfigError { variable: "quotas", message })?;
    }
    if let Some(value) = get("gc_grace_seconds") {
        config.gc_grace_secs = value.trim().parse().map_err(|_| ConfigError {
            variable: "gc_grace_seconds",
            message: format!("{value:?} is not a number of seconds"),
        })?;
    }
    if let Some(value) = get("gc_abandoned_seconds") {
        config.gc_abandoned_secs =
            value.trim().parse().ok().filter(|&s| s >= MIN_ABANDONED_SECS).ok_or_else(|| ConfigError {
                variable: "gc_abandoned_seconds",
                message: format!(
                    "{value:?} is not a number of seconds of at least {MIN_ABANDONED_SECS} (twice a collection step's time)"
                ),
            })?;
    }
    if let Some(value) = get("retention") {
        config.retention =
            retention::Retention::parse(&value).map_err(|message| ConfigError { variable: "retention", message })?;
    }
    if let Some(value) = get("events") {
        config.events = events::Events::parse(&value).map_err(|message| ConfigError { variable: "events", message })?;
    }
    let upstreams = get("mirror_upstreams").unwrap_or_default();
    let credentials = get("mirror_credentials").unwrap_or_default();
    config.mirrors = mirrors::Mirrors::parse(&upstreams, &credentials).map_err(|message| ConfigError {
        variable: if message.starts_with("mirror_credentials") { "mirror_credentials" } else { "mirror_upstreams" },
        message,
    })?;
    config.auth = AuthConfig::parse(get)?;
    // With tokens, a blob URL lives no longer than the token that was checked to hand it out.
    if config.auth.mode == crate::auth::config::Mode::Token {
        let lifetime = u32::try_from(config.auth.token_lifetime_secs).unwrap_or(u32::MAX);
        config.blob_redirect_secs = config.blob_redirect_secs.min(lifetime);
    }
    Ok(config)
}

/// Settings (Spin variables in the component, parsed by [`from_variables`]).
#[derive(Debug, Clone)]
pub struct Config {
    /// Upload sessions untouched (no chunk) for longer than this are gone.
    pub upload_expiry_secs: u64,
    /// Blob GETs answer `307` to a URL of the blob store, valid this long, where the store can
    /// make one and the blob is one object; 0: blobs are always streamed through the registry.
    pub blob_redirect_secs: u32,
    /// Tags that cannot be moved or deleted once pushed (`crate::lifecycle::immutable`).
    pub immutable_tags: immutable::ImmutableTags,
    /// Byte limits per repository pattern (`crate::registry::quota`).
    pub quotas: quotas::Quotas,
    /// Garbage collection keeps a blob linked less than this long ago, referenced or not: the
    /// time a client has between pushing a blob and pushing the manifest that references it.
    pub gc_grace_secs: u64,
    /// A collector's mark or unhold intent older than this was left by one that died: a later
    /// step finishes it. Far above the time a live collector spends between its moves.
    pub gc_abandoned_secs: u64,
    /// Which tags and untagged manifests garbage collection removes (`crate::lifecycle::retention`).
    pub retention: retention::Retention,
    pub auth: crate::auth::config::AuthConfig,
    /// Upstream registries mirrored here (`crate::mirror`).
    pub mirrors: mirrors::Mirrors,
    /// Where notifications of what happens go (`crate::registry::events`).
    pub events: events::Events,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            upload_expiry_secs: 24 * 3600,
            blob_redirect_secs: 0,
            immutable_tags: Default::default(),
            quotas: Default::default(),
            gc_grace_secs: 3600,
            gc_abandoned_secs: 60,
            retention: Default::default(),
            auth: Default::default(),
            mirrors: Default::default(),
            events: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undefined_variables_give_the_defaults() {
        let config = from_variables(&|_| None).unwrap();
        assert_eq!(config.upload_expiry_secs, 24 * 3600);
        assert_eq!(config.auth, AuthConfig::default());
    }

    #[test]
    fn errors_name_the_variable() {
        let err = from_variables(&|name| (name == "upload_expiry_seconds").then(|| "soon".to_owned())).unwrap_err();
        assert_eq!(err.variable, "upload_expiry_seconds");
        let err = from_variables(&|name| (name == "auth_mode").then(|| "tokens".to_owned())).unwrap_err();
        assert_eq!(err.variable, "auth_mode");
        let err = from_variables(&|name| (name == "mirror_upstreams").then(|| "hub".to_owned())).unwrap_err();
        assert_eq!(err.variable, "mirror_upstreams");
        let err = from_variables(&|name| match name {
            "mirror_upstreams" => Some("hub https://hub.example".to_owned()),
            "mirror_credentials" => Some("hub nopassword".to_owned()),
            _ => None,
        })
        .unwrap_err();
        assert_eq!(err.variable, "mirror_credentials");
    }

    #[test]
    fn a_collector_is_taken_for_dead_after_a_minute_or_a_set_time_of_at_least_two_steps() {
        assert_eq!(from_variables(&|_| None).unwrap().gc_abandoned_secs, 60);
        let set = |v: &'static str| from_variables(&move |name| (name == "gc_abandoned_seconds").then(|| v.to_owned()));
        assert_eq!(set("10").unwrap().gc_abandoned_secs, 10);
        for bad in ["9", "0", "soon", "-5"] {
            assert_eq!(set(bad).unwrap_err().variable, "gc_abandoned_seconds", "{bad}");
        }
    }

    #[test]
    fn blob_redirects_are_off_by_default_and_bounded() {
        assert_eq!(from_variables(&|_| None).unwrap().blob_redirect_secs, 0);
        let set =
            |v: &'static str| from_variables(&move |name| (name == "blob_redirect_seconds").then(|| v.to_owned()));
        assert_eq!(set("300").unwrap().blob_redirect_secs, 300);
        for bad in ["-1", "soon", "3601", "604800"] {
            assert_eq!(set(bad).unwrap_err().variable, "blob_redirect_seconds", "{bad}");
        }
    }

    #[test]
    fn blob_urls_outlive_no_token() {
        let vars = [
            ("blob_redirect_seconds", "3600"),
            ("auth_mode", "token"),
            ("auth_token_secret", "0123456789abcdef0123456789abcdef"),
            ("auth_token_lifetime_seconds", "120"),
            ("auth_users", ""),
            ("auth_policy", ""),
        ];
        let config = from_variables(&|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()));
        assert_eq!(config.unwrap().blob_redirect_secs, 120);
    }

    #[test]
    fn every_auth_variable_is_listed() {
        let listed: Vec<&str> = variables().collect();
        assert!(listed.contains(&"auth_token_secret") && listed.contains(&"upload_expiry_seconds"));
    }
}
