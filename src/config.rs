//! The registry's settings from Spin variables, parsed in one place: the component parses them on
//! every request, and `berth-runner` parses the same values at start to report a mistake before
//! serving. A value that does not parse is an error naming the variable, never a silent default.

use crate::auth::config::{AuthConfig, ConfigError};
use crate::store::Config;

/// Every variable the registry reads.
pub fn variables() -> impl Iterator<Item = &'static str> {
    ["upload_expiry_seconds"].into_iter().chain(crate::auth::config::variables())
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
    config.auth = AuthConfig::parse(get)?;
    Ok(config)
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
    }

    #[test]
    fn every_auth_variable_is_listed() {
        let listed: Vec<&str> = variables().collect();
        assert!(listed.contains(&"auth_token_secret") && listed.contains(&"upload_expiry_seconds"));
    }
}
