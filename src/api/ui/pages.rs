//! The UI's pages: repositories, a repository's tags, a manifest or index.

use super::super::listing::{Kept, collect_within};
use super::{Html, PAGE, Viewer, esc, url_escape};
use crate::config::quotas::human;
use crate::registry::manifests::{self, ReferrerDescriptor};
use crate::registry::store::{BlobStore, MetaStore, Stores, internal};
use crate::registry::{blobs, keys};
use crate::wire::digest::Digest;
use crate::wire::errcode::RegistryError;
use crate::wire::manifest::{DOCKER_LIST, OCI_INDEX};
use crate::wire::message::Request;
use crate::wire::name::{RepoName, Tag};

type Result<T> = std::result::Result<T, RegistryError>;

/// Names one repositories page looks at, at most (as the catalog: a viewer who may see few gets
/// a short page and a link that goes on from where it stopped looking).
const MAX_EXAMINED: usize = 20 * PAGE;
/// The most bytes of a manifest or config the pages read (the manifest limit).
const MAX_READ: u64 = crate::wire::manifest::MAX_MANIFEST_SIZE as u64;
/// The most bytes of a manifest the tags page reads for a row's summary.
const MAX_SUMMARY_READ: u64 = 64 * 1024;
/// Rows (layers, platforms) one manifest page shows at most.
const MAX_ROWS: usize = 500;
const SESSION_CURSOR: &[u8] = b"berth ui cursor v1";

/// `/ui/`: the repositories the viewer may pull, by prefix (`q`), a page at a time.
pub async fn repositories<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    viewer: &Viewer,
    req: &Request<B::Incoming>,
) -> Result<Html> {
    let auth = &stores.config.auth;
    let q = req.query_param("q").unwrap_or_default();
    // Where the last page stopped looking: sealed, since it may be a name the viewer may not see.
    let after = req.query_param("cursor").and_then(|c| super::super::cursor::open_for(auth, SESSION_CURSOR, &c));
    // The catalog's listing: within the search's names, at most MAX_EXAMINED looked at.
    let prefix = format!("{}{q}", keys::REPOS_PREFIX);
    let after = after.as_deref().and_then(|a| a.strip_prefix(q.as_str()));
    let collected = collect_within(stores, &prefix, after, PAGE, MAX_EXAMINED, async |name: &str| {
        let repo = format!("{q}{name}");
        Ok(viewer.sees(stores, &repo).then(|| Kept::name(&repo)))
    })
    .await?;
    let shown = &collected.entries;
    // The next page starts after the last name looked at (sealed: it may be private), or after
    // the last one shown.
    let position = match &collected.looked_to {
        Some(looked_to) => Some(format!("{q}{looked_to}")),
        None => shown.last().cloned(),
    };
    let more = collected.more;
    let mut body = format!(
        "<form method=\"get\" action=\"/ui/\" class=\"search\"><input name=\"q\" value=\"{}\" placeholder=\"name prefix\" \
         aria-label=\"Repository name prefix\"><button>Search</button></form>",
        esc(&q)
    );
    if shown.is_empty() {
        body.push_str("<p>No repository you may see.</p>");
    } else {
        body.push_str("<ul class=\"repos\">");
        for repo in shown {
            body.push_str(&format!("<li><a href=\"/ui/repo/{}\">{}</a></li>", esc(repo), esc(repo)));
        }
        body.push_str("</ul>");
    }
    if more && let Some(position) = position {
        let sealed = super::super::cursor::seal_for(auth, SESSION_CURSOR, &position, (stores.random)());
        body.push_str(&format!(
            "<p><a class=\"next\" href=\"/ui/?q={}&amp;cursor={}\">Next page</a></p>",
            url_escape(&q),
            url_escape(&sealed)
        ));
    }
    Ok(Html::page("Repositories", body))
}

/// `/ui/repo/<name>` and `/ui/repo/<name>/manifest/<digest>`.
pub async fn repository<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    viewer: &Viewer,
    req: &Request<B::Incoming>,
    rest: &str,
) -> Result<Html> {
    // A name may have a `manifest` component: the page of a manifest is the one whose last
    // component after `/manifest/` is a digest.
    let (name, digest) = match rest.rsplit_once("/manifest/") {
        Some((name, digest)) if Digest::parse(digest).is_ok() => (name, Some(digest)),
        _ => (rest, None),
    };
    let Ok(name) = RepoName::parse(name) else { return Ok(Html::not_found()) };
    // Not seen and not there answer alike.
    if !viewer.sees(stores, name.as_str()) || !blobs::marked(stores, &keys::repo_marker(&name)).await? {
        return Ok(Html::not_found());
    }
    match digest {
        None => tags(stores, viewer, &name, req).await,
        Some(digest) => match Digest::parse(digest) {
            Ok(digest) => manifest(stores, &name, &digest, req).await,
            Err(_) => Ok(Html::not_found()),
        },
    }
}

/// A stored blob's bytes (a manifest, a config), when it is small enough to show.
async fn bytes_of<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>, digest: &Digest) -> Result<Option<Vec<u8>>> {
    let Some(record) = blobs::record(stores, digest).await? else { return Ok(None) };
    if record.size > MAX_READ {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    for part in &record.parts {
        bytes.extend(stores.blobs.read_bytes(&part.name).await.map_err(internal)?);
    }
    Ok(Some(bytes))
}

/// Whether a stored manifest is an index (by its record's type, never by its JSON).
fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// What a manifest's bytes say, for the tags page: its size (an image's layers and config) and
/// platforms (an index's).
fn summary(index: bool, json: &serde_json::Value) -> (Option<u64>, Vec<String>) {
    let size = |d: &serde_json::Value| d["size"].as_u64().unwrap_or(0);
    if index {
        let children = json["manifests"].as_array().map(Vec::as_slice).unwrap_or_default();
        return (None, children.iter().filter_map(platform).collect());
    }
    let layers: u64 = json["layers"].as_array().map(|l| l.iter().map(size).sum()).unwrap_or(0);
    (Some(layers + size(&json["config"])), Vec::new())
}

fn platform(descriptor: &serde_json::Value) -> Option<String> {
    let p = descriptor.get("platform")?;
    let mut text = format!("{}/{}", p["os"].as_str()?, p["architecture"].as_str()?);
    if let Some(variant) = p["variant"].as_str() {
        text.push('/');
        text.push_str(variant);
    }
    Some(text)
}

/// The first 12 characters of a digest's hex (whatever a manifest claims a digest is).
fn short(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.chars().take(12).collect()
}

async fn tags<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    viewer: &Viewer,
    name: &RepoName,
    req: &Request<B::Incoming>,
) -> Result<Html> {
    // Who may delete gets a form per tag (posted with the page's CSRF token).
    let deletes = viewer.may_delete(stores, name);
    let prefix = keys::tags_prefix(name);
    let last = req.query_param("last").filter(|l| Tag::parse(l).is_ok());
    let after = last.as_ref().map(|l| format!("{prefix}{l}"));
    let (entries, next) = stores.blobs.list(&prefix, after.as_deref(), PAGE as u32).await.map_err(internal)?;
    let mut rows = String::new();
    let mut shown_last = None;
    for entry in &entries {
        let Ok(tag) = Tag::parse(&entry[prefix.len()..]) else { continue };
        shown_last = Some(tag.as_str().to_owned());
        let Some((target, _)) = manifests::tag_value(stores, name, &tag).await? else { continue };
        // A tag left by a delete of its manifest (another generation) is no tag (as for the API).
        let Some(record) = manifests::record(stores, name, &target.digest).await?.filter(|r| target.names(r)) else {
            continue;
        };
        let digest = target.digest.to_string();
        // Read only when small (manifests are KiB): a page of 50 tags reads a few MiB at most.
        let json = match record.size <= MAX_SUMMARY_READ {
            true => bytes_of(stores, &target.digest)
                .await?
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()),
            false => None,
        };
        let index = is_index(&record.media_type);
        let (size, platforms) = json.as_ref().map(|j| summary(index, j)).unwrap_or_default();
        let pushed = target.pushed.map(crate::auth::issue::rfc3339).unwrap_or_default();
        let delete = match deletes {
            true => format!(
                "<td><form method=\"post\" action=\"/ui/repo/{}{}\" class=\"delete\">{}<input type=\"hidden\" \
                 name=\"tag\" value=\"{}\"><button title=\"Delete tag {}\">Delete</button></form></td>",
                esc(name.as_str()),
                super::UNTAG,
                viewer.csrf_field(),
                esc(tag.as_str()),
                esc(tag.as_str())
            ),
            false => String::new(),
        };
        rows.push_str(&format!(
            "<tr><td><a href=\"/ui/repo/{n}/manifest/{d}?tag={t}\">{t}</a></td><td><code title=\"{d}\">{s}</code></td><td>{p}</td>\
             <td>{z}</td><td>{k}</td>{delete}</tr>",
            n = esc(name.as_str()),
            d = esc(&digest),
            t = esc(tag.as_str()),
            s = esc(&short(&digest)),
            p = esc(&pushed),
            z = match (index, size) {
                (true, _) => format!("index of {}", platforms.len().max(1)),
                (false, Some(size)) => human(size),
                (false, None) => "—".to_owned(),
            },
            k = if platforms.is_empty() { "—".to_owned() } else { esc(&platforms.join(", ")) },
        ));
    }
    let mut body = format!("<p class=\"pull\"><code>docker pull {}</code></p>", esc(&pull_name(req, name)));
    if rows.is_empty() {
        body.push_str("<p>No tags.</p>");
    } else {
        body.push_str(&format!(
            "<table class=\"tags\"><thead><tr><th>Tag</th><th>Digest</th><th>Pushed</th><th>Size</th><th>Platforms</th>{}\
             </tr></thead><tbody>{rows}</tbody></table>",
            if deletes { "<th></th>" } else { "" }
        ));
    }
    if let (Some(_), Some(last)) = (next, shown_last) {
        body.push_str(&format!(
            "<p><a class=\"next\" href=\"/ui/repo/{}?last={}\">Next page</a></p>",
            esc(name.as_str()),
            url_escape(&last)
        ));
    }
    Ok(Html::page(name.as_str(), body))
}

/// `<host>/<name>`: what a client pulls, from the address the viewer used.
fn pull_name<B>(req: &Request<B>, name: &RepoName) -> String {
    let host = req.origin.as_deref().and_then(|o| o.split_once("://")).map(|(_, h)| h.to_owned());
    let host =
        host.or_else(|| req.header(http::header::HOST).map(str::to_owned)).unwrap_or_else(|| "localhost".to_owned());
    format!("{host}/{name}")
}

async fn manifest<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    digest: &Digest,
    req: &Request<B::Incoming>,
) -> Result<Html> {
    let Some(record) = manifests::record(stores, name, digest).await? else { return Ok(Html::not_found()) };
    let Some(json) = bytes_of(stores, digest).await?.and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    else {
        return Ok(Html::not_found());
    };
    let d = digest.to_string();
    let repo = pull_name(req, name);
    // By tag too, when the page was reached from a tag that still names this manifest.
    let mut tagged = String::new();
    if let Some(tag) = req.query_param("tag").and_then(|t| Tag::parse(&t).ok())
        && manifests::tag_target(stores, name, &tag).await?.is_some_and(|t| t.digest == *digest && t.names(&record))
    {
        let t = esc(tag.as_str());
        tagged = format!(
            "<li><code>docker pull {r}:{t}</code></li><li><code>podman pull {r}:{t}</code></li>",
            r = esc(&repo)
        );
    }
    let mut body = format!(
        "<p><code>{}</code> · {} · {}</p><h2>Pull</h2><ul class=\"pull\">{tagged}<li><code>docker pull {r}@{d}</code></li>\
         <li><code>podman pull {r}@{d}</code></li></ul>",
        esc(&d),
        esc(&record.media_type),
        human(record.size),
        r = esc(&repo),
        d = esc(&d),
    );
    if is_index(&record.media_type) {
        let children = json["manifests"].as_array().map(Vec::as_slice).unwrap_or_default();
        body.push_str(
            "<h2>Platforms</h2><table><thead><tr><th>Platform</th><th>Manifest</th><th>Size</th></tr></thead><tbody>",
        );
        for child in children.iter().take(MAX_ROWS) {
            let cd = child["digest"].as_str().unwrap_or("");
            body.push_str(&format!(
                "<tr><td>{}</td><td><a href=\"/ui/repo/{}/manifest/{}\"><code>{}</code></a></td><td>{}</td></tr>",
                esc(&platform(child).unwrap_or_else(|| "—".to_owned())),
                esc(name.as_str()),
                esc(cd),
                esc(&short(cd)),
                human(child["size"].as_u64().unwrap_or(0)),
            ));
        }
        body.push_str("</tbody></table>");
    } else {
        body.push_str(&config_summary(stores, &json).await?);
        body.push_str(
            "<h2>Layers</h2><table><thead><tr><th>#</th><th>Digest</th><th>Type</th><th>Size</th></tr></thead><tbody>",
        );
        for (i, layer) in json["layers"].as_array().into_iter().flatten().take(MAX_ROWS).enumerate() {
            let ld = layer["digest"].as_str().unwrap_or("");
            body.push_str(&format!(
                "<tr><td>{}</td><td><code title=\"{}\">{}</code></td><td>{}</td><td>{}</td></tr>",
                i + 1,
                esc(ld),
                esc(&short(ld)),
                esc(layer["mediaType"].as_str().unwrap_or("")),
                human(layer["size"].as_u64().unwrap_or(0)),
            ));
        }
        body.push_str("</tbody></table>");
    }
    body.push_str(&referrers(stores, name, digest).await?);
    Ok(Html::page(&format!("{name}@{}", short(&d)), body))
}

/// OS/arch, created, entrypoint and labels of an image's config.
async fn config_summary<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>, json: &serde_json::Value) -> Result<String> {
    let Some(config) = json["config"]["digest"].as_str().and_then(|d| Digest::parse(d).ok()) else {
        return Ok(String::new());
    };
    let Some(config) =
        bytes_of(stores, &config).await?.and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    else {
        return Ok(String::new());
    };
    let mut rows = Vec::new();
    if let (Some(os), Some(arch)) = (config["os"].as_str(), config["architecture"].as_str()) {
        rows.push(("Platform", format!("{os}/{arch}")));
    }
    if let Some(created) = config["created"].as_str() {
        rows.push(("Created", created.to_owned()));
    }
    let list =
        |v: &serde_json::Value| v.as_array().map(|a| a.iter().filter_map(|s| s.as_str()).collect::<Vec<_>>().join(" "));
    if let Some(entrypoint) = list(&config["config"]["Entrypoint"]).filter(|e| !e.is_empty()) {
        rows.push(("Entrypoint", entrypoint));
    }
    if let Some(cmd) = list(&config["config"]["Cmd"]).filter(|e| !e.is_empty()) {
        rows.push(("Command", cmd));
    }
    if let Some(labels) = config["config"]["Labels"].as_object() {
        for (k, v) in labels {
            rows.push(("Label", format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    if rows.is_empty() {
        return Ok(String::new());
    }
    let rows: String = rows.iter().map(|(k, v)| format!("<tr><th>{k}</th><td>{}</td></tr>", esc(v))).collect();
    Ok(format!("<h2>Config</h2><table class=\"config\"><tbody>{rows}</tbody></table>"))
}

/// The manifest's referrers (signatures, SBOMs, attestations), grouped by artifact type (the
/// first page of them).
async fn referrers<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    subject: &Digest,
) -> Result<String> {
    let prefix = keys::referrers_prefix(name, subject);
    let (entries, more) = stores.blobs.list(&prefix, None, PAGE as u32).await.map_err(internal)?;
    let mut groups: std::collections::BTreeMap<String, Vec<ReferrerDescriptor>> = Default::default();
    for entry in &entries {
        let Ok(bytes) = stores.blobs.read_bytes(entry).await else { continue };
        let Ok(descriptor) = serde_json::from_slice::<ReferrerDescriptor>(&bytes) else { continue };
        let Ok(digest) = Digest::parse(&descriptor.digest) else { continue };
        if manifests::record(stores, name, &digest).await?.is_none() {
            continue; // an entry outlives its manifest for a moment after a delete
        }
        let kind = descriptor.artifact_type.clone().unwrap_or_else(|| descriptor.media_type.clone());
        groups.entry(kind).or_default().push(descriptor);
    }
    if groups.is_empty() {
        return Ok("<h2>Referrers</h2><p>No signatures, SBOMs or attestations.</p>".to_owned());
    }
    let mut out = "<h2>Referrers</h2>".to_owned();
    for (kind, descriptors) in groups {
        out.push_str(&format!("<h3>{} ({})</h3><ul class=\"referrers\">", esc(&describe(&kind)), descriptors.len()));
        for d in descriptors {
            out.push_str(&format!(
                "<li><a href=\"/ui/repo/{}/manifest/{}\"><code>{}</code></a> <span class=\"type\">{}</span> {}</li>",
                esc(name.as_str()),
                esc(&d.digest),
                esc(&short(&d.digest)),
                esc(&kind),
                human(d.size)
            ));
        }
        out.push_str("</ul>");
    }
    if more.is_some() {
        out.push_str("<p>More referrers than one page: the referrers API lists them all.</p>");
    }
    Ok(out)
}

/// A reader's name for an artifact type.
fn describe(kind: &str) -> String {
    let known = [
        ("application/vnd.dev.cosign.", "Signature (cosign)"),
        ("application/vnd.cncf.notary.", "Signature (Notation)"),
        ("application/spdx", "SBOM (SPDX)"),
        ("application/vnd.cyclonedx", "SBOM (CycloneDX)"),
        ("application/vnd.in-toto", "Attestation (in-toto)"),
    ];
    known.iter().find(|(k, _)| kind.starts_with(k)).map_or_else(|| kind.to_owned(), |(_, n)| (*n).to_owned())
}
