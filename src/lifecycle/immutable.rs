//! Immutable tags' bindings (rules: `crate::config::immutable`): a tag some rule makes
//! immutable is bound, by its first push, to that manifest for good.

use crate::registry::manifests::{record, tag_target, tagged};
use crate::registry::store::{BlobStore, MetaStore, ObjectPages, StoreError, Stores, internal};
use crate::registry::{blobs, keys};
use crate::wire::digest::Digest;
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::name::{RepoName, Tag};

type Result<T> = std::result::Result<T, RegistryError>;

/// A binding whose manifest is neither stored nor tagged after this long was left by a push that
/// died between binding and tagging (a push takes seconds from one to the other): the next first
/// push takes it over.
const STALE_BINDING_SECS: u64 = 600;

/// Immutable tags, checked before anything is stored: a tag already bound
/// to another manifest (or naming one) refuses the push. The first push binds it, by creating
/// its binding object exclusively: of two racing first pushes of different manifests, exactly one
/// binds the tag and the other is refused. All or nothing: a refused tag of a `?tag=` list undoes
/// the bindings this push made before it. The bindings this push made, which it undoes if it
/// fails later ([`unbind`]).
pub async fn bind_tags<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    tags: &[&Tag],
    digest: &Digest,
) -> Result<Vec<(String, Tag)>> {
    let mut made = Vec::new();
    for &tag in tags {
        match bind(stores, name, tag, digest).await {
            Ok(Some(binding)) => made.push((binding, tag.clone())),
            Ok(None) => {}
            Err(err) => {
                unbind(stores, &made).await;
                return Err(err);
            }
        }
    }
    Ok(made)
}

/// Bind `tag` to `digest` if a rule makes it immutable: the binding this call created, `None`
/// when there was nothing to create (no rule, or bound to `digest` already).
async fn bind<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    tag: &Tag,
    digest: &Digest,
) -> Result<Option<String>> {
    let Some(rule) = stores.config.immutable_tags.rule_for(name, tag) else { return Ok(None) };
    let moved = || refused(name, tag, &rule, "it names another manifest, and cannot be moved");
    if let Some((current, _)) = tagged(stores, name, tag).await?
        && current != *digest
    {
        return Err(moved());
    }
    let binding = keys::immutable_binding(name, tag);
    let now = (stores.now)();
    for _ in 0..4 {
        match stores.blobs.write_bytes(&binding, format!("{digest} {now}").into_bytes()).await {
            Ok(()) => return Ok(Some(binding)),
            Err(StoreError::AlreadyExists) => {}
            Err(e) => return Err(internal(e)),
        }
        let bound = match stores.blobs.read_bytes(&binding).await {
            Ok(bound) => String::from_utf8_lossy(&bound).into_owned(),
            Err(StoreError::NotFound) => continue, // undone meanwhile
            Err(e) => return Err(internal(e)),
        };
        // `<digest> <time>` (bindings from before times: `<digest>`, as old as can be).
        let mut fields = bound.split(' ');
        let bound_digest = fields.next().and_then(|d| Digest::parse(d).ok());
        let at: u64 = fields.next().and_then(|t| t.parse().ok()).unwrap_or(0);
        if bound_digest.as_ref() == Some(digest) {
            return Ok(None);
        }
        let left_by_a_dead_push = now.saturating_sub(at) > STALE_BINDING_SECS
            && tag_target(stores, name, tag).await?.is_none()
            && match &bound_digest {
                Some(other) => record(stores, name, other).await?.is_none(),
                None => true,
            };
        if !left_by_a_dead_push {
            return Err(moved());
        }
        stores.log(format_args!(
            "immutable tag {name}:{} was bound by a push that never finished: taken over",
            tag.as_str()
        ));
        blobs::remove(stores, &binding).await?;
    }
    Err(moved())
}

/// Undo the bindings a failed push made. Best effort: one left behind is taken over once stale.
pub async fn unbind<M, B: BlobStore>(stores: &Stores<M, B>, bindings: &[(String, Tag)]) {
    for (binding, _) in bindings {
        let _ = stores.blobs.delete(binding).await;
    }
}

/// A delete by digest of a manifest an immutable tag names is refused (it would drop the tag).
///
/// The bindings are read first: a first push binds its immutable tags before it stores the
/// record this delete has read, and tags the manifest only after, so a delete that looked at
/// tags alone could pass between the push's record and its tag, and both would succeed with
/// the tag gone. A binding is there from before the record on (until a failed push undoes it).
pub async fn refuse_deleting<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
) -> Result<()> {
    if !stores.config.immutable_tags.may_apply_to(name) {
        return Ok(());
    }
    let prefix = keys::immutable_bindings_prefix(name);
    let mut pages = ObjectPages::new(&stores.blobs, &prefix, None);
    while let Some(objects) = pages.next().await? {
        for object in &objects {
            let Ok(tag) = Tag::parse(&object[prefix.len()..]) else { continue };
            let Some(rule) = stores.config.immutable_tags.rule_for(name, &tag) else { continue };
            let bound = match stores.blobs.read_bytes(object).await {
                Ok(bound) => bound,
                Err(StoreError::NotFound) => continue, // undone meanwhile
                Err(e) => return Err(internal(e)),
            };
            if String::from_utf8_lossy(&bound).split(' ').next() == Some(digest.to_string().as_str()) {
                return Err(refused(
                    name,
                    &tag,
                    &rule,
                    &format!("the manifest {digest} it is bound to cannot be deleted"),
                ));
            }
        }
    }
    // Tags bound before bindings existed have none.
    let prefix = keys::tags_prefix(name);
    let mut pages = ObjectPages::new(&stores.blobs, &prefix, None);
    while let Some(objects) = pages.next().await? {
        for object in &objects {
            let Ok(tag) = Tag::parse(&object[prefix.len()..]) else { continue };
            let Some(rule) = stores.config.immutable_tags.rule_for(name, &tag) else { continue };
            if tag_target(stores, name, &tag).await?.is_some_and(|t| t.digest == *digest) {
                return Err(refused(name, &tag, &rule, &format!("the manifest {digest} it names cannot be deleted")));
            }
        }
    }
    Ok(())
}

/// A push that failed after binding: it leaves no binding of its own, unless it set that tag
/// already (a tag set is the push's, bound or not): the tag stays free for any manifest.
pub async fn unbind_failed<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
    bound: &[(String, Tag)],
) {
    let mut unset = Vec::new();
    for (binding, tag) in bound {
        if tag_target(stores, name, tag).await.ok().flatten().is_none_or(|t| t.digest != *digest) {
            unset.push((binding.clone(), tag.clone()));
        }
    }
    unbind(stores, &unset).await;
}

/// The refusal a client sees.
pub fn refused(name: &RepoName, tag: &Tag, rule: &str, what: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::Denied,
        format!("tag {} of {name} is immutable (immutable_tags rule {rule}): {what}", tag.as_str()),
    )
    .told()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_denied_and_names_the_rule() {
        let err = refused(
            &RepoName::parse("prod/web").unwrap(),
            &Tag::parse("v1").unwrap(),
            "prod/*:v*",
            "it cannot be moved to another manifest",
        );
        assert_eq!(err.code, ErrorCode::Denied);
        let detail = err.detail.unwrap();
        assert!(detail.contains("prod/*:v*") && detail.contains("tag v1 of prod/web"), "{detail}");
    }
}
