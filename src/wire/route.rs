//! The route table: a request's path parsed once, from the right, into what it addresses; and the
//! one place that builds `/v2/...` URLs for `Location` headers.
//!
//! ```text
//! /v2/                                  Base
//! /v2/_catalog                          Catalog
//! /v2/<name>/tags/list                  Tags
//! /v2/<name>/manifests/<reference>      Manifest
//! /v2/<name>/blobs/uploads/             UploadStart
//! /v2/<name>/blobs/uploads/<id>         Upload
//! /v2/<name>/blobs/<digest>             Blob
//! /v2/<name>/referrers/<digest>         Referrers
//! /v2/_berth/quotas                     AdminQuotas (Berth's admin API)
//! /v2/_berth/quotas/recount             AdminQuotaRecount (one step of a quota recount)
//! /v2/_berth/storage/check              AdminStorageCheck (the blob store contract, checked)
//! /v2/_berth/gc                         AdminGc (one garbage collection step)
//! /v2/_berth/metrics                    AdminMetrics (registry-wide figures, Prometheus format)
//! /v2/_berth/events                     AdminEvents (each event endpoint's delivery state)
//! ```
//! Names may contain the words `blobs`, `manifests`, `tags` as components
//! (`/v2/a/manifests/b/manifests/latest` names repository `a/manifests/b`): the endpoint is
//! always recognised by the last one or two segments.

use crate::wire::digest::Digest;
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::name::RepoName;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Tags(RepoName),
    /// The reference is kept raw: a tag or a digest, decided by the handler.
    Manifest(RepoName, String),
    UploadStart(RepoName),
    Upload(RepoName, String),
    Blob(RepoName, Digest),
    Referrers(RepoName, Digest),
    /// Berth's admin API: quota usage. (`_berth` cannot be a repository name: a component
    /// cannot start with `_`.)
    AdminQuotas,
    /// Berth's admin API: one step of a recount of quota usage from the links.
    AdminQuotaRecount,
    /// Berth's admin API: the blob store contract, checked against the configured store.
    AdminStorageCheck,
    /// Berth's admin API: one step of garbage collection.
    AdminGc,
    /// Berth's admin API: registry-wide figures in Prometheus' format.
    AdminMetrics,
    /// Berth's admin API: each event endpoint's delivery state.
    AdminEvents,
}

impl Route {
    /// The repository the route addresses, if any.
    pub fn name(&self) -> Option<&RepoName> {
        match self {
            Route::Tags(name)
            | Route::Manifest(name, _)
            | Route::UploadStart(name)
            | Route::Upload(name, _)
            | Route::Blob(name, _)
            | Route::Referrers(name, _) => Some(name),
            Route::Base
            | Route::Catalog
            | Route::AdminQuotas
            | Route::AdminQuotaRecount
            | Route::AdminStorageCheck
            | Route::AdminGc
            | Route::AdminMetrics
            | Route::AdminEvents => None,
        }
    }

    /// The same endpoint of another repository (the mirror's `?ns=` and default upstream).
    pub fn renamed(self, to: RepoName) -> Route {
        match self {
            Route::Tags(_) => Route::Tags(to),
            Route::Manifest(_, reference) => Route::Manifest(to, reference),
            Route::UploadStart(_) => Route::UploadStart(to),
            Route::Upload(_, id) => Route::Upload(to, id),
            Route::Blob(_, digest) => Route::Blob(to, digest),
            Route::Referrers(_, digest) => Route::Referrers(to, digest),
            other => other,
        }
    }

    /// Parse a request path (without the query). Unknown shapes are `NOT_FOUND`; a known shape
    /// with a bad name or digest is `NAME_INVALID` / `DIGEST_INVALID`.
    pub fn parse(path: &str) -> Result<Route, RegistryError> {
        let not_found = || RegistryError::new(ErrorCode::NotFound, format!("no endpoint at {path:?}"));
        let rest = match path {
            "/v2" | "/v2/" => return Ok(Route::Base),
            "/v2/_catalog" => return Ok(Route::Catalog),
            "/v2/_berth/quotas" => return Ok(Route::AdminQuotas),
            "/v2/_berth/quotas/recount" => return Ok(Route::AdminQuotaRecount),
            "/v2/_berth/storage/check" => return Ok(Route::AdminStorageCheck),
            "/v2/_berth/gc" => return Ok(Route::AdminGc),
            "/v2/_berth/metrics" => return Ok(Route::AdminMetrics),
            "/v2/_berth/events" => return Ok(Route::AdminEvents),
            _ => path.strip_prefix("/v2/").ok_or_else(not_found)?,
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let name_of = |n: usize| RepoName::parse(&segments[..segments.len() - n].join("/"));
        match segments.as_slice() {
            [_, .., "tags", "list"] => Ok(Route::Tags(name_of(2)?)),
            [_, .., "manifests", reference] if !reference.is_empty() => {
                Ok(Route::Manifest(name_of(2)?, (*reference).to_owned()))
            }
            [_, .., "blobs", "uploads", ""] => Ok(Route::UploadStart(name_of(3)?)),
            [_, .., "blobs", "uploads"] => Ok(Route::UploadStart(name_of(2)?)),
            [_, .., "blobs", "uploads", id] => Ok(Route::Upload(name_of(3)?, (*id).to_owned())),
            [_, .., "blobs", digest] if !digest.is_empty() => {
                let name = name_of(2)?;
                Ok(Route::Blob(name, Digest::parse(digest)?))
            }
            [_, .., "referrers", digest] if !digest.is_empty() => {
                let name = name_of(2)?;
                Ok(Route::Referrers(name, Digest::parse(digest)?))
            }
            _ => Err(not_found()),
        }
    }
}

/// URLs the registry hands out (relative, as Distribution does).
pub mod url {
    use super::*;

    pub fn blob(name: &RepoName, digest: &Digest) -> String {
        format!("/v2/{name}/blobs/{digest}")
    }

    pub fn upload(name: &RepoName, id: &str) -> String {
        format!("/v2/{name}/blobs/uploads/{id}")
    }

    pub fn manifest(name: &RepoName, reference: &str) -> String {
        format!("/v2/{name}/manifests/{reference}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn every_endpoint_shape() {
        let d = Digest::parse(D).unwrap();
        let cases = [
            ("/v2/", Route::Base),
            ("/v2", Route::Base),
            ("/v2/_catalog", Route::Catalog),
            ("/v2/a/b/tags/list", Route::Tags(name("a/b"))),
            ("/v2/a/manifests/latest", Route::Manifest(name("a"), "latest".into())),
            ("/v2/a/blobs/uploads/", Route::UploadStart(name("a"))),
            ("/v2/a/blobs/uploads", Route::UploadStart(name("a"))),
            ("/v2/a/blobs/uploads/abc", Route::Upload(name("a"), "abc".into())),
            (&format!("/v2/a/blobs/{D}"), Route::Blob(name("a"), d.clone())),
            (&format!("/v2/a/referrers/{D}"), Route::Referrers(name("a"), d.clone())),
        ];
        for (path, route) in cases {
            assert_eq!(Route::parse(path).unwrap(), route, "{path}");
        }
    }

    #[test]
    fn names_may_contain_endpoint_words() {
        assert_eq!(
            Route::parse("/v2/foo/manifests/bar/manifests/latest").unwrap(),
            Route::Manifest(name("foo/manifests/bar"), "latest".into())
        );
        assert_eq!(Route::parse("/v2/blobs/tags/list").unwrap(), Route::Tags(name("blobs")));
        assert_eq!(Route::parse("/v2/tags/blobs/uploads/").unwrap(), Route::UploadStart(name("tags")));
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for path in
            ["/", "/v1/", "/v2/a", "/v2/a/b", "/v2/a/manifests/", "/v2/a/blobs/", "/v2/tags/list", "/v3/a/tags/list"]
        {
            assert_eq!(Route::parse(path).unwrap_err().code, ErrorCode::NotFound, "{path}");
        }
    }

    #[test]
    fn bad_names_and_digests_are_invalid() {
        assert_eq!(Route::parse("/v2/A/tags/list").unwrap_err().code, ErrorCode::NameInvalid);
        assert_eq!(Route::parse("/v2/a/../b/tags/list").unwrap_err().code, ErrorCode::NameInvalid);
        assert_eq!(Route::parse("/v2/a/blobs/sha256:xyz").unwrap_err().code, ErrorCode::DigestInvalid);
        assert_eq!(Route::parse("/v2/a/referrers/md5:00").unwrap_err().code, ErrorCode::DigestInvalid);
    }
}
