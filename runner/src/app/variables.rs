//! `spin:variables` resolution as Spin does it: application variables from `--var name=value`,
//! then `SPIN_VARIABLE_<NAME>` in the environment, then the manifest's default; component
//! variables are templates over them (`"{{ name }}"`).

use crate::app::manifest::App;
use anyhow::{Result, bail};
use std::collections::BTreeMap;

/// The resolved component variables, and the application variables they were made from.
#[derive(Debug, Clone, Default)]
pub struct Variables(BTreeMap<String, String>, BTreeMap<String, String>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(String),
    InvalidName,
    Undefined,
}

impl Variables {
    pub fn resolve(
        app: &App,
        overrides: &BTreeMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Variables> {
        for name in overrides.keys() {
            if !app.variables.contains_key(name) {
                bail!("--var {name}: no such variable in [variables]");
            }
        }
        let mut values = BTreeMap::new();
        for (name, decl) in &app.variables {
            let value = overrides
                .get(name)
                .cloned()
                .or_else(|| env(&format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())))
                .or_else(|| decl.default.clone());
            match value {
                Some(value) => {
                    values.insert(name.clone(), value);
                }
                None if decl.required => bail!(
                    "variable {name:?} is required: pass --var {name}=... or set SPIN_VARIABLE_{}",
                    name.to_ascii_uppercase()
                ),
                None => {}
            }
        }
        let mut resolved = BTreeMap::new();
        for (name, template) in &app.component_variables {
            resolved.insert(
                name.clone(),
                expand(template, &values).map_err(|e| anyhow::anyhow!("component variable {name:?}: {e}"))?,
            );
        }
        Ok(Variables(resolved, values))
    }

    /// A manifest template over application variables, as Spin expands the entries of
    /// `allowed_outbound_hosts` (`"{{ blob_s3_endpoint }}"`).
    pub fn expand(&self, template: &str) -> Result<String> {
        expand(template, &self.1)
    }

    pub fn get(&self, name: &str) -> Lookup {
        let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Lookup::InvalidName;
        }
        self.0.get(name).cloned().map_or(Lookup::Undefined, Lookup::Found)
    }
}

fn expand(template: &str, values: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else { bail!("unclosed {{{{ in {template:?}") };
        let name = rest[start + 2..start + end].trim();
        match values.get(name) {
            Some(value) => out.push_str(value),
            None => bail!("references variable {name:?}, which has no value"),
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn app() -> App {
        App::parse(
            r#"
spin_manifest_version = 2
[variables]
greeting = { default = "hello" }
who = { default = "world" }
[[trigger.http]]
route = "/..."
component = "c"
[component.c]
source = "c.wasm"
[component.c.variables]
message = "{{ greeting }}, {{who}}!"
plain = "fixed"
"#,
            Path::new("."),
        )
        .unwrap()
    }

    #[test]
    fn defaults_fill_templates() {
        let vars = Variables::resolve(&app(), &BTreeMap::new(), |_| None).unwrap();
        assert_eq!(vars.get("message"), Lookup::Found("hello, world!".into()));
        assert_eq!(vars.get("plain"), Lookup::Found("fixed".into()));
    }

    #[test]
    fn flags_beat_environment_beats_defaults() {
        let overrides = BTreeMap::from([("greeting".to_owned(), "hi".to_owned())]);
        let env = |k: &str| (k == "SPIN_VARIABLE_WHO" || k == "SPIN_VARIABLE_GREETING").then(|| "env".to_owned());
        let vars = Variables::resolve(&app(), &overrides, env).unwrap();
        assert_eq!(vars.get("message"), Lookup::Found("hi, env!".into()));
    }

    #[test]
    fn outbound_host_templates_expand_over_application_variables() {
        let overrides = BTreeMap::from([("who".to_owned(), "127.0.0.1:9000".to_owned())]);
        let vars = Variables::resolve(&app(), &overrides, |_| None).unwrap();
        assert_eq!(vars.expand("http://{{ who }}").unwrap(), "http://127.0.0.1:9000");
        assert!(vars.expand("http://{{ nobody }}").is_err());
    }

    #[test]
    fn unknown_and_invalid_names() {
        let vars = Variables::resolve(&app(), &BTreeMap::new(), |_| None).unwrap();
        assert_eq!(vars.get("greeting"), Lookup::Undefined, "application variables are not component variables");
        assert_eq!(vars.get("Bad-Name"), Lookup::InvalidName);
    }

    #[test]
    fn a_missing_required_variable_fails_at_start() {
        let mut app = app();
        app.variables.get_mut("who").unwrap().default = None;
        app.variables.get_mut("who").unwrap().required = true;
        assert!(Variables::resolve(&app, &BTreeMap::new(), |_| None).is_err());
    }

    #[test]
    fn an_override_of_an_undeclared_variable_is_an_error() {
        let overrides = BTreeMap::from([("nope".to_owned(), "x".to_owned())]);
        assert!(Variables::resolve(&app(), &overrides, |_| None).is_err());
    }
}
