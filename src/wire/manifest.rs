//! Manifests as Berth needs to know them: which media type, which blobs (all must exist in the
//! repository) and child manifests (need not: indexes may be sparse) they reference, their
//! subject, and what the referrers API shows.
//! The bytes themselves are stored and served exactly as pushed.

use crate::wire::digest::Digest;
use crate::wire::errcode::{ErrorCode, RegistryError};
use serde::Deserialize;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// The largest manifest accepted (the spec asks for at least 4 MiB).
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: String,
    size: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    artifact_type: Option<String>,
    annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What a manifest says about other content.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub media_type: String,
    /// Blobs (config and distributable layers) that must be in the repository.
    pub blobs: Vec<Digest>,
    /// Child manifests (of an index / list): valid digests, not necessarily in the repository
    /// (a sparse index, e.g. a mirror of some platforms only).
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
    /// `artifactType`, or for an image manifest without one, its config's media type.
    pub artifact_type: Option<String>,
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

fn invalid(detail: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestInvalid, detail)
}

fn descriptor_digest(d: &RawDescriptor, what: &str) -> Result<Digest, RegistryError> {
    if d.size < 0 {
        return Err(invalid(format!("{what} has a negative size")));
    }
    Digest::parse(&d.digest).map_err(|e| invalid(format!("{what}: {}", e.detail.unwrap_or_default())))
}

fn is_non_distributable(d: &RawDescriptor) -> bool {
    d.media_type.as_deref().is_some_and(|t| t.contains(".nondistributable.") || t == DOCKER_FOREIGN_LAYER)
}

/// The media type without parameters (`; charset=...`).
fn bare(media_type: &str) -> &str {
    media_type.split(';').next().unwrap_or("").trim()
}

/// Parse and validate a pushed manifest. `content_type` is the request's `Content-Type`.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, RegistryError> {
    let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| invalid(format!("not a manifest: {e}")))?;
    if raw.schema_version != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    let header = content_type
        .map(bare)
        .filter(|t| !t.is_empty() && *t != "application/json" && *t != "application/octet-stream");
    let media_type = match (raw.media_type.as_deref(), header) {
        (Some(body), Some(header)) if body != header => {
            return Err(invalid(format!("Content-Type {header} does not match mediaType {body}")));
        }
        (Some(body), _) => body.to_owned(),
        (None, Some(header)) => header.to_owned(),
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, None) => OCI_MANIFEST.to_owned(),
    };
    let subject = raw.subject.as_ref().map(|s| descriptor_digest(s, "subject")).transpose()?;
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let config = raw.config.as_ref().ok_or_else(|| invalid("an image manifest needs a config"))?;
            let layers = raw.layers.as_ref().ok_or_else(|| invalid("an image manifest needs layers"))?;
            let mut blobs = vec![descriptor_digest(config, "config")?];
            for layer in layers {
                let digest = descriptor_digest(layer, "layer")?;
                if !is_non_distributable(layer) {
                    blobs.push(digest);
                }
            }
            let artifact_type = raw.artifact_type.clone().or_else(|| config.media_type.clone());
            Ok(Manifest {
                media_type,
                blobs,
                children: Vec::new(),
                subject,
                artifact_type,
                annotations: raw.annotations,
            })
        }
        OCI_INDEX | DOCKER_LIST => {
            let manifests = raw.manifests.as_ref().ok_or_else(|| invalid("an index needs manifests"))?;
            let children = manifests.iter().map(|m| descriptor_digest(m, "manifest")).collect::<Result<_, _>>()?;
            Ok(Manifest {
                media_type,
                blobs: Vec::new(),
                children,
                subject,
                artifact_type: raw.artifact_type,
                annotations: raw.annotations,
            })
        }
        other => Err(invalid(format!("unsupported manifest media type {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{A}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{B}","size":3}}]{extra}}}"#
        )
    }

    #[test]
    fn an_image_manifest_references_its_config_and_layers() {
        let m = parse(image("").as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        assert_eq!(m.blobs.iter().map(|d| d.to_string()).collect::<Vec<_>>(), [A, B]);
        assert_eq!(m.artifact_type.as_deref(), Some("application/vnd.oci.image.config.v1+json"));
        assert!(m.subject.is_none());
    }

    #[test]
    fn subject_artifact_type_and_annotations_are_read() {
        let m = parse(image(&format!(r#","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{C}","size":9}},"artifactType":"application/x.sig","annotations":{{"k":"v"}}"#)).as_bytes(), None).unwrap();
        assert_eq!(m.subject.unwrap().to_string(), C);
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.sig"));
        assert_eq!(m.annotations.unwrap()["k"], "v");
    }

    #[test]
    fn an_index_references_its_manifests() {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{A}","size":1}}]}}"#
        );
        let m = parse(index.as_bytes(), Some(OCI_INDEX)).unwrap();
        assert_eq!(m.children.len(), 1);
        assert!(m.blobs.is_empty());
    }

    #[test]
    fn non_distributable_layers_need_not_exist() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"x","digest":"{A}","size":2}},"layers":[{{"mediaType":"{DOCKER_FOREIGN_LAYER}","digest":"{B}","size":3,"urls":["https://example.com/l"]}}]}}"#
        );
        assert_eq!(parse(m.as_bytes(), None).unwrap().blobs.len(), 1);
    }

    #[test]
    fn invalid_manifests_are_manifest_invalid() {
        let bad = [
            "not json".to_owned(),
            "[]".to_owned(),
            r#"{"schemaVersion":1}"#.to_owned(),
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}"}}"#),
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}"}}"#),
            image("").replace(A, "sha256:zz"),
            format!(
                r#"{{"schemaVersion":2,"mediaType":"application/x.unknown","config":{{"digest":"{A}","size":1}},"layers":[]}}"#
            ),
        ];
        for m in bad {
            assert_eq!(parse(m.as_bytes(), None).unwrap_err().code, ErrorCode::ManifestInvalid, "{m}");
        }
        assert_eq!(
            parse(image("").as_bytes(), Some(OCI_INDEX)).unwrap_err().code,
            ErrorCode::ManifestInvalid,
            "header and body disagree"
        );
    }
}
