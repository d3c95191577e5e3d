//! The part of a Spin runtime config file (`spin up --runtime-config-file`) the runner reads:
//! `[key_value_store.<label>]` tables, so that one file places the key-value stores for both
//! `spin up` and `berth-runner up`. Other tables (SQLite databases, variable providers, ...) are
//! Spin's business and are left alone.
//!
//! ```toml
//! [key_value_store.default]
//! type = "redis"
//! url = "redis://127.0.0.1:6379/0"
//!
//! [key_value_store.other]
//! type = "spin"                   # SQLite, as without the file
//! path = "stores/other.db"        # optional; relative to this file's directory
//! ```

use anyhow::{Context, Result, anyhow, bail};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where one store label lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// `type = "redis"`: keys as they are, in the database the URL names (as Spin stores them).
    Redis { url: String },
    /// `type = "spin"`: SQLite, at `path` or else `<data>/kv/<label>.db`.
    Sqlite { path: Option<PathBuf> },
}

impl std::fmt::Display for StoreConfig {
    /// For the start-up log: the backend, never the URL (it may carry a password).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreConfig::Redis { .. } => write!(f, "Redis"),
            StoreConfig::Sqlite { path: Some(path) } => write!(f, "SQLite {}", path.display()),
            StoreConfig::Sqlite { path: None } => write!(f, "SQLite under the data dir"),
        }
    }
}

/// The stores `path` configures, by label.
pub fn load(path: &Path) -> Result<HashMap<String, StoreConfig>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base).with_context(|| format!("runtime config file {}", path.display()))
}

/// The stores a runtime config file's text configures; relative paths are taken from `base`.
pub fn parse(text: &str, base: &Path) -> Result<HashMap<String, StoreConfig>> {
    let file: toml::Table = text.parse().context("not valid TOML")?;
    let Some(stores) = file.get("key_value_store") else { return Ok(HashMap::new()) };
    let stores = stores.as_table().ok_or_else(|| anyhow!("key_value_store must be a table of stores"))?;
    stores
        .iter()
        .map(|(label, table)| {
            let config = store_config(table, base).with_context(|| format!("[key_value_store.{label}]"))?;
            Ok((label.clone(), config))
        })
        .collect()
}

fn store_config(table: &toml::Value, base: &Path) -> Result<StoreConfig> {
    let table = table.as_table().ok_or_else(|| anyhow!("must be a table"))?;
    let string = |field: &str| -> Result<Option<&str>> {
        match table.get(field) {
            None => Ok(None),
            Some(value) => value.as_str().map(Some).ok_or_else(|| anyhow!("`{field}` must be a string")),
        }
    };
    match string("type")? {
        Some("redis") => {
            let url = string("url")?.ok_or_else(|| anyhow!("type \"redis\" needs a `url`"))?;
            crate::store::kv_redis::check_url(url)?;
            Ok(StoreConfig::Redis { url: url.to_owned() })
        }
        Some("spin") => Ok(StoreConfig::Sqlite { path: string("path")?.map(|path| base.join(path)) }),
        Some(other) => {
            bail!("type {other:?} is not one berth-runner supports: \"redis\" or \"spin\" (SQLite)")
        }
        None => bail!("no `type` (\"redis\" or \"spin\")"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<HashMap<String, StoreConfig>> {
        parse(text, Path::new("/etc/berth"))
    }

    fn error(text: &str) -> String {
        format!("{:#}", parsed(text).unwrap_err())
    }

    #[test]
    fn redis_and_spin_stores_are_read_by_label() {
        let stores = parsed(
            r#"
            [key_value_store.default]
            type = "redis"
            url = "redis://127.0.0.1:6379/2"

            [key_value_store.cache]
            type = "spin"
            path = "cache.db"

            [key_value_store.plain]
            type = "spin"

            [sqlite_database.default]
            type = "libsql"
            "#,
        )
        .unwrap();
        assert_eq!(stores.len(), 3, "{stores:?}");
        assert_eq!(stores["default"], StoreConfig::Redis { url: "redis://127.0.0.1:6379/2".into() });
        assert_eq!(stores["cache"], StoreConfig::Sqlite { path: Some("/etc/berth/cache.db".into()) });
        assert_eq!(stores["plain"], StoreConfig::Sqlite { path: None });
    }

    #[test]
    fn a_file_without_stores_configures_none() {
        assert!(parsed("").unwrap().is_empty());
        assert!(parsed("[variables_provider]\ntype = \"env\"\n").unwrap().is_empty());
    }

    #[test]
    fn an_absolute_path_is_kept() {
        let stores = parsed("[key_value_store.default]\ntype = \"spin\"\npath = \"/var/kv.db\"\n").unwrap();
        assert_eq!(stores["default"], StoreConfig::Sqlite { path: Some("/var/kv.db".into()) });
    }

    #[test]
    fn unknown_types_and_missing_fields_are_clear_errors() {
        let unknown = error("[key_value_store.default]\ntype = \"azure_cosmos\"\n");
        assert!(unknown.contains("[key_value_store.default]") && unknown.contains("\"azure_cosmos\""), "{unknown}");
        let no_url = error("[key_value_store.default]\ntype = \"redis\"\n");
        assert!(no_url.contains("needs a `url`"), "{no_url}");
        let no_type = error("[key_value_store.default]\nurl = \"redis://x\"\n");
        assert!(no_type.contains("no `type`"), "{no_type}");
        let bad_url = error("[key_value_store.default]\ntype = \"redis\"\nurl = \"http://x\"\n");
        assert!(bad_url.contains("redis URL"), "{bad_url}");
        let not_string = error("[key_value_store.default]\ntype = \"redis\"\nurl = 5\n");
        assert!(not_string.contains("`url` must be a string"), "{not_string}");
        assert!(error("key_value_store = 1").contains("must be a table"));
        assert!(error("[key_value_store").contains("not valid TOML"));
    }
}
