//! Which blob store serves the registry, and composing a provider component into it the way
//! Spin composes component dependencies (wac-graph's `plug`, as Spin's own composition does).

use crate::app::manifest::{App, Dependency};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use wac_graph::{CompositionGraph, EncodeOptions, types::Package};

/// The interface a blob store provider exports and the registry imports.
const BLOB_STORE_PACKAGE: &str = "berth:blob-store";

/// Where the registry's `berth:blob-store/store` import comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobStoreChoice {
    /// The runner's own filesystem store, in the host.
    Fs,
    /// The provider component spin.toml declares in the component's dependencies (what `spin up`
    /// runs).
    Dependency,
    /// A provider component file.
    Component(PathBuf),
}

impl std::str::FromStr for BlobStoreChoice {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "fs" => BlobStoreChoice::Fs,
            "dependency" => BlobStoreChoice::Dependency,
            path => BlobStoreChoice::Component(PathBuf::from(path)),
        })
    }
}

/// The provider file to plug in, or `None` for the native store.
pub fn provider_path(choice: &BlobStoreChoice, app: &App) -> Result<Option<PathBuf>> {
    let path = match choice {
        BlobStoreChoice::Fs => return Ok(None),
        BlobStoreChoice::Component(path) => path.clone(),
        BlobStoreChoice::Dependency => {
            let Some((name, dependency)) =
                app.dependencies.iter().find(|(name, _)| name.starts_with(BLOB_STORE_PACKAGE))
            else {
                bail!(
                    "--blob-store dependency: component {:?} declares no dependency for {BLOB_STORE_PACKAGE} \
                     in [component.{}.dependencies]",
                    app.component_id,
                    app.component_id
                );
            };
            match dependency {
                Dependency::Path(path) => path.clone(),
                Dependency::Unsupported(source) => {
                    bail!("dependency {name:?} = {source}: the runner loads dependencies from a local `path` only")
                }
            }
        }
    };
    // Spin grants a dependency nothing unless configuration is inherited; the provider needs the
    // component's key-value store, so say so rather than fail on the first request.
    if !app.dependencies_inherit_configuration {
        bail!(
            "the blob store provider needs the key-value store of component {:?}: set \
             dependencies_inherit_configuration = true in [component.{}]",
            app.component_id,
            app.component_id
        );
    }
    Ok(Some(path))
}

/// The registry component with its blob store import satisfied by the provider's export.
pub fn plug_blob_store(registry: &Path, provider: &Path) -> Result<Vec<u8>> {
    let read = |path: &Path| std::fs::read(path).with_context(|| format!("reading component {}", path.display()));
    let mut graph = CompositionGraph::new();
    let socket = Package::from_bytes("berth:registry", None, read(registry)?, graph.types_mut())
        .with_context(|| format!("parsing {}", registry.display()))?;
    let socket = graph.register_package(socket)?;
    let plug = Package::from_bytes("berth:blob-store-provider", None, read(provider)?, graph.types_mut())
        .with_context(|| format!("parsing {}", provider.display()))?;
    let plug = graph.register_package(plug)?;
    wac_graph::plug(&mut graph, vec![plug], socket).with_context(|| {
        format!(
            "{} exports nothing that {} imports (expected {BLOB_STORE_PACKAGE}/store)",
            provider.display(),
            registry.display()
        )
    })?;
    graph.encode(EncodeOptions::default()).context("encoding the composed component")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(deps: &str, inherit: bool) -> App {
        let manifest = format!(
            "spin_manifest_version = 2\n[application]\nname = \"x\"\n[[trigger.http]]\nroute = \"/...\"\n\
             component = \"registry\"\n[component.registry]\nsource = \"r.wasm\"\n\
             dependencies_inherit_configuration = {inherit}\n[component.registry.dependencies]\n{deps}"
        );
        App::parse(&manifest, Path::new("/app")).unwrap()
    }

    #[test]
    fn the_native_store_needs_no_provider() {
        assert_eq!(provider_path(&"fs".parse().unwrap(), &app("", false)).unwrap(), None);
    }

    #[test]
    fn the_dependency_is_the_blob_store_provider_spin_toml_declares() {
        let app = app("\"berth:blob-store/store@0.4.0\" = { path = \"p.wasm\" }", true);
        let path = provider_path(&BlobStoreChoice::Dependency, &app).unwrap();
        assert_eq!(path, Some(PathBuf::from("/app/p.wasm")));
    }

    #[test]
    fn a_provider_without_inherited_configuration_is_refused_at_start() {
        let app = app("\"berth:blob-store/store@0.4.0\" = { path = \"p.wasm\" }", false);
        let err = provider_path(&BlobStoreChoice::Dependency, &app).unwrap_err();
        assert!(err.to_string().contains("dependencies_inherit_configuration"), "{err}");
    }

    #[test]
    fn a_missing_or_remote_dependency_is_a_clear_error() {
        assert!(provider_path(&BlobStoreChoice::Dependency, &app("", true)).is_err());
        let remote = app("\"berth:blob-store\" = { version = \"0.4.0\", registry = \"example.com\" }", true);
        let err = provider_path(&BlobStoreChoice::Dependency, &remote).unwrap_err();
        assert!(err.to_string().contains("local `path`"), "{err}");
    }
}
