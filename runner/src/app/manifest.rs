//! The part of `spin.toml` (manifest version 2) that the runner honours: the HTTP trigger's
//! component, its source, key-value store labels, outbound hosts and variables. One manifest
//! drives both `spin up` and `berth-runner up`.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
struct RawManifest {
    spin_manifest_version: u32,
    #[serde(default)]
    variables: BTreeMap<String, VariableDecl>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Debug, Default, Deserialize)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
}

#[derive(Debug, Deserialize)]
struct RawHttpTrigger {
    route: toml::Value,
    component: String,
}

#[derive(Debug, Deserialize)]
struct RawComponent {
    source: toml::Value,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    dependencies: BTreeMap<String, toml::Value>,
    #[serde(default)]
    dependencies_inherit_configuration: bool,
}

/// An application variable as declared in `[variables]`.
#[derive(Debug, Clone, Deserialize)]
pub struct VariableDecl {
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
}

/// The HTTP component the runner serves.
#[derive(Debug, Clone)]
pub struct App {
    pub component_id: String,
    pub source: PathBuf,
    /// Spin's route pattern: `/...` (everything), `/prefix/...` (a subtree) or an exact path.
    pub route: String,
    pub key_value_stores: Vec<String>,
    pub allowed_outbound_hosts: Vec<String>,
    /// Component variables: name -> template over application variables (`{{ name }}`).
    pub component_variables: BTreeMap<String, String>,
    pub variables: BTreeMap<String, VariableDecl>,
    /// `[component.<id>.dependencies]`: imported interface or package -> the component that
    /// satisfies it (local `path` sources only; the runner has no registry client).
    pub dependencies: BTreeMap<String, Dependency>,
    /// Whether dependencies may use the component's key-value stores, variables and hosts.
    pub dependencies_inherit_configuration: bool,
}

/// A component dependency as declared in spin.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dependency {
    Path(PathBuf),
    /// A source the runner cannot load (registry package, URL, another app component): kept so
    /// that asking for it gives a clear error.
    Unsupported(String),
}

impl App {
    /// Whether `path` falls under this component's route.
    pub fn serves(&self, path: &str) -> bool {
        match self.route.strip_suffix("/...") {
            Some(prefix) => path == prefix || path.starts_with(&format!("{prefix}/")) || prefix.is_empty(),
            None => path == self.route,
        }
    }

    pub fn load(path: &Path) -> Result<App> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, path.parent().unwrap_or(Path::new("."))).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str, base_dir: &Path) -> Result<App> {
        let raw: RawManifest = toml::from_str(text)?;
        if raw.spin_manifest_version != 2 {
            bail!("spin_manifest_version {} is not supported (expected 2)", raw.spin_manifest_version);
        }
        let trigger = raw.trigger.http.first().context("no [[trigger.http]] in the manifest")?;
        let route = match &trigger.route {
            toml::Value::String(route) => route.clone(),
            other => bail!("unsupported route {other}: the runner serves public routes only"),
        };
        let component = raw
            .component
            .get(&trigger.component)
            .with_context(|| format!("trigger names component {:?}, which is not defined", trigger.component))?;
        let source = match &component.source {
            toml::Value::String(path) => base_dir.join(path),
            other => bail!("unsupported component source {other}: the runner loads local files"),
        };
        let dependencies = component
            .dependencies
            .iter()
            .map(|(name, source)| {
                let dependency = match source.get("path").and_then(toml::Value::as_str) {
                    Some(path) => Dependency::Path(base_dir.join(path)),
                    None => Dependency::Unsupported(source.to_string()),
                };
                (name.clone(), dependency)
            })
            .collect();
        Ok(App {
            dependencies,
            dependencies_inherit_configuration: component.dependencies_inherit_configuration,
            component_id: trigger.component.clone(),
            source,
            route,
            key_value_stores: component.key_value_stores.clone(),
            allowed_outbound_hosts: component.allowed_outbound_hosts.clone(),
            component_variables: component.variables.clone(),
            variables: raw.variables,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
spin_manifest_version = 2
[application]
name = "x"
[variables]
greeting = { default = "hello" }
token = { required = true, secret = true }
[[trigger.http]]
route = "/..."
component = "registry"
[component.registry]
source = "target/x.wasm"
key_value_stores = ["default"]
allowed_outbound_hosts = ["https://example.com"]
[component.registry.variables]
message = "{{ greeting }}, world"
"#;

    #[test]
    fn reads_the_http_component() {
        let app = App::parse(MANIFEST, Path::new("/app")).unwrap();
        assert_eq!(app.component_id, "registry");
        assert_eq!(app.source, Path::new("/app/target/x.wasm"));
        assert_eq!(app.route, "/...");
        assert_eq!(app.key_value_stores, ["default"]);
        assert_eq!(app.allowed_outbound_hosts, ["https://example.com"]);
        assert_eq!(app.component_variables["message"], "{{ greeting }}, world");
        assert!(app.variables["token"].required);
        assert_eq!(app.variables["greeting"].default.as_deref(), Some("hello"));
    }

    #[test]
    fn routes_follow_spin_patterns() {
        let mut app = App::parse(MANIFEST, Path::new("/")).unwrap();
        assert!(app.serves("/") && app.serves("/v2/x"));
        app.route = "/api/...".into();
        assert!(app.serves("/api") && app.serves("/api/v2/") && !app.serves("/apix") && !app.serves("/v2/"));
        app.route = "/exact".into();
        assert!(app.serves("/exact") && !app.serves("/exact/x"));
    }

    #[test]
    fn reads_component_dependencies() {
        let with_deps = format!(
            "{MANIFEST}\n{}",
            r#"[component.registry.dependencies]
"berth:blob-store/store@0.4.0" = { path = "target/provider.wasm" }
"other:thing" = { version = "1.0", registry = "example.com" }
"#
        )
        .replace("key_value_stores = [", "dependencies_inherit_configuration = true\nkey_value_stores = [");
        let app = App::parse(&with_deps, Path::new("/app")).unwrap();
        assert!(app.dependencies_inherit_configuration);
        assert_eq!(
            app.dependencies["berth:blob-store/store@0.4.0"],
            Dependency::Path(PathBuf::from("/app/target/provider.wasm"))
        );
        assert!(matches!(app.dependencies["other:thing"], Dependency::Unsupported(_)));
        assert!(App::parse(MANIFEST, Path::new("/")).unwrap().dependencies.is_empty());
    }

    #[test]
    fn a_trigger_without_its_component_is_an_error() {
        let broken = MANIFEST.replace("component = \"registry\"", "component = \"nope\"");
        assert!(App::parse(&broken, Path::new("/")).is_err());
    }
}
