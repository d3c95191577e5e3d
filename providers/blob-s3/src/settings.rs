//! The provider's settings, from Spin variables (`blob_s3_*`), parsed in one place. A mistake is
//! an error naming the variable, never its value (the secret key must not reach a log).

use rusty_s3::{Bucket, Credentials, UrlStyle};

/// Every variable the provider reads.
pub const VARIABLES: [&str; 8] = [
    "blob_s3_endpoint",
    "blob_s3_bucket",
    "blob_s3_region",
    "blob_s3_path_style",
    "blob_s3_prefix",
    "blob_s3_access_key_id",
    "blob_s3_secret_access_key",
    "blob_s3_timeout_seconds",
];

/// How long S3 may take to accept a connection, to answer, and between two bytes of an answer,
/// unless `blob_s3_timeout_seconds` says otherwise: a stuck S3 then fails the request (503)
/// instead of holding it (an edge host stops a request at 30 s anyway).
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;

#[derive(Debug)]
pub struct Settings {
    pub bucket: Bucket,
    /// None: requests go unsigned (a bucket open to anyone on its network).
    pub credentials: Option<Credentials>,
    /// Prepended to every object name, so one bucket can hold several registries.
    pub prefix: String,
    /// Connect, first-byte and between-bytes timeout of every request to S3.
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    pub variable: &'static str,
    pub message: String,
}

impl std::fmt::Display for SettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the S3 blob store is misconfigured: variable {}: {}", self.variable, self.message)
    }
}

fn error(variable: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError { variable, message: message.into() }
}

/// Parse the settings; `get` gives a variable's value, `None` (or empty) when it is not set.
pub fn parse(get: &dyn Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
    let value = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let endpoint = value("blob_s3_endpoint")
        .ok_or_else(|| error("blob_s3_endpoint", "not set (e.g. https://s3.eu-west-1.amazonaws.com)"))?;
    let endpoint: url::Url = endpoint
        .parse()
        .map_err(|e| error("blob_s3_endpoint", format!("not a URL ({e}), e.g. https://s3.eu-west-1.amazonaws.com")))?;
    let name = value("blob_s3_bucket").ok_or_else(|| error("blob_s3_bucket", "not set"))?;
    let region = value("blob_s3_region").unwrap_or_else(|| "us-east-1".to_owned());
    let style = match value("blob_s3_path_style").as_deref() {
        None | Some("true") => UrlStyle::Path,
        Some("false") => UrlStyle::VirtualHost,
        Some(_) => return Err(error("blob_s3_path_style", "must be true (https://host/bucket/key) or false")),
    };
    let bucket = Bucket::new(endpoint, style, name, region).map_err(|e| {
        error(
            "blob_s3_endpoint",
            format!("cannot address the bucket there ({e}): an http(s) URL, and path style for an IP address"),
        )
    })?;
    let credentials = match (value("blob_s3_access_key_id"), value("blob_s3_secret_access_key")) {
        (Some(key), Some(secret)) => Some(Credentials::new(key, secret)),
        (None, None) => None,
        (Some(_), None) => return Err(error("blob_s3_secret_access_key", "not set, but an access key id is")),
        (None, Some(_)) => return Err(error("blob_s3_access_key_id", "not set, but a secret access key is")),
    };
    let timeout_secs = match value("blob_s3_timeout_seconds") {
        None => DEFAULT_TIMEOUT_SECS,
        Some(text) => text
            .parse()
            .ok()
            .filter(|&s: &u64| (1..=3600).contains(&s))
            .ok_or_else(|| error("blob_s3_timeout_seconds", "must be a number of seconds from 1 to 3600"))?,
    };
    let prefix = value("blob_s3_prefix").unwrap_or_default();
    if prefix.starts_with('/') {
        return Err(error("blob_s3_prefix", "must not start with / (S3 keys have no leading slash)"));
    }
    Ok(Settings { bucket, credentials, prefix, timeout_secs })
}

impl Settings {
    /// The S3 key of object `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The object name of S3 key `key` (listings give keys under the prefix only).
    pub fn name<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())
    }

    /// `scheme://host[:port]` of the endpoint, for log lines (never a URL with a signature).
    pub fn origin(&self) -> String {
        let url = self.bucket.base_url();
        match url.port() {
            Some(port) => format!("{}://{}:{port}", url.scheme(), url.host_str().unwrap_or("?")),
            None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or("?")),
        }
    }
}

/// `key` as it goes into a path or `x-amz-copy-source`: unreserved characters and `/` as they
/// are, every other byte percent-encoded.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Why `name` cannot be an object name here, if it cannot: S3 keys are at most 1024 bytes.
pub fn check_name(settings: &Settings, name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("empty name".into());
    }
    if settings.key(name).len() > 1024 {
        return Some("longer than S3's 1024-byte keys".into());
    }
    if name.split('/').any(|segment| segment == ".." || segment == ".") {
        return Some("`.` and `..` segments are not names".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn parse_with(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse(&|name| map.get(name).cloned())
    }

    const MINIMAL: [(&str, &str); 2] = [("blob_s3_endpoint", "http://127.0.0.1:9000"), ("blob_s3_bucket", "berth")];

    #[test]
    fn the_endpoint_and_bucket_are_enough_and_addressing_is_by_path() {
        let s = parse_with(&MINIMAL).unwrap();
        assert_eq!(s.bucket.base_url().as_str(), "http://127.0.0.1:9000/berth/");
        assert_eq!(s.bucket.region(), "us-east-1");
        assert!(s.credentials.is_none());
        assert_eq!(s.timeout_secs, DEFAULT_TIMEOUT_SECS);
        assert_eq!(s.origin(), "http://127.0.0.1:9000");
    }

    #[test]
    fn virtual_host_addressing_puts_the_bucket_in_the_host() {
        let s = parse_with(&[
            ("blob_s3_endpoint", "https://s3.eu-west-1.amazonaws.com"),
            ("blob_s3_bucket", "berth"),
            ("blob_s3_path_style", "false"),
            ("blob_s3_region", "eu-west-1"),
        ])
        .unwrap();
        assert_eq!(s.bucket.base_url().as_str(), "https://berth.s3.eu-west-1.amazonaws.com/");
    }

    #[test]
    fn errors_name_the_variable_and_never_quote_a_secret() {
        let err = parse_with(&[MINIMAL[0], MINIMAL[1], ("blob_s3_secret_access_key", "hunter2-secret")]).unwrap_err();
        assert_eq!(err.variable, "blob_s3_access_key_id");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert_eq!(parse_with(&[MINIMAL[1]]).unwrap_err().variable, "blob_s3_endpoint");
        assert_eq!(parse_with(&[MINIMAL[0]]).unwrap_err().variable, "blob_s3_bucket");
        let bad = [("blob_s3_endpoint", "ftp://x"), MINIMAL[1]];
        assert_eq!(parse_with(&bad).unwrap_err().variable, "blob_s3_endpoint");
        let bad = [MINIMAL[0], MINIMAL[1], ("blob_s3_path_style", "yes")];
        assert_eq!(parse_with(&bad).unwrap_err().variable, "blob_s3_path_style");
        let bad = [MINIMAL[0], MINIMAL[1], ("blob_s3_timeout_seconds", "0")];
        assert_eq!(parse_with(&bad).unwrap_err().variable, "blob_s3_timeout_seconds");
    }

    #[test]
    fn keys_are_percent_encoded_for_copy_sources() {
        assert_eq!(encode_key("registry/uploads/ab/0"), "registry/uploads/ab/0");
        assert_eq!(encode_key("a b+c"), "a%20b%2Bc");
    }

    #[test]
    fn names_map_to_keys_under_the_prefix_and_back() {
        let s = parse_with(&[MINIMAL[0], MINIMAL[1], ("blob_s3_prefix", "registry-a/")]).unwrap();
        assert_eq!(s.key("uploads/x"), "registry-a/uploads/x");
        assert_eq!(s.name("registry-a/uploads/x"), Some("uploads/x"));
        assert_eq!(s.name("registry-b/uploads/x"), None);
        assert!(check_name(&s, "").is_some());
        assert!(check_name(&s, "a/../b").is_some());
        assert!(check_name(&s, &"x".repeat(1020)).is_some());
        assert!(check_name(&s, "uploads/ab/0").is_none());
    }
}
