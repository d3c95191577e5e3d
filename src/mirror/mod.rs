//! Pull-through mirroring of upstream registries (README "Mirroring").
//!
//! A mirrored repository is a local repository whose first component names an upstream:
//! `docker.io/library/alpine` is `library/alpine` of the upstream called `docker.io`. What is
//! pulled through it is cached as ordinary manifests, tags and blobs of that local repository,
//! so tag lists, the catalog, garbage collection and the auth policy treat it like any other;
//! clients cannot push there. Requests reach a mirrored repository three ways: by its
//! namespaced name, through containerd's `?ns=<upstream>` (the path names the upstream's
//! repository), or, for pulls of a repository that does not exist here, through the default
//! upstream (Docker's `registry-mirrors`).
//!
//! The settings and the naming are `crate::config::mirrors`; [`client`] talks to an upstream
//! (its token flow), [`claim`] makes one request the fetcher of a blob or a tag, [`cache`] keeps
//! what was fetched, and `crate::api::mirror` serves the endpoints.

pub mod cache;
pub mod challenge;
pub mod claim;
pub mod client;

use crate::config::mirrors::Upstream;
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::name::RepoName;

/// A push, mount or delete in a mirrored repository.
pub fn read_only(name: &RepoName, upstream: &Upstream) -> RegistryError {
    RegistryError::new(
        ErrorCode::Denied,
        format!(
            "repository {name} is a read-only mirror of {} ({}): push to a repository outside the mirrored \
             namespaces",
            upstream.name, upstream.origin
        ),
    )
    .told()
}
