//! The UI's admin page (`/ui/admin`): what the admin API tells, for a viewer the policy lets
//! administer (`admin` on every repository): quota rules and their usage, garbage collection's
//! state and settings, retention rules, mirror upstreams (never their credentials) and each
//! event endpoint's outbox (never its URL's credentials or headers: they may be tokens).

use super::{Html, Viewer, esc};
use crate::config::quotas::human;
use crate::registry::store::{BlobStore, MetaStore, Stores, internal};
use crate::registry::{events, keys, quota};
use crate::wire::errcode::RegistryError;

pub async fn page<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>, viewer: &Viewer) -> Result<Html, RegistryError> {
    // Not allowed answers as nothing there: the page's existence says nothing either way.
    if !viewer.administers() {
        return Ok(Html::not_found());
    }
    let config = &stores.config;
    let mut body = String::from("<h2>Quotas</h2>");
    let usage = quota::usage(stores).await?;
    if usage.is_empty() {
        body.push_str("<p>No quota rules (<code>quotas</code>).</p>");
    } else {
        body.push_str(
            "<table class=\"admin quotas\"><thead><tr><th>Repositories</th><th>Limit</th><th>Used</th><th>Uploading</th>\
             <th>Used %</th></tr></thead><tbody>",
        );
        for u in &usage {
            let percent = (u.used as f64 * 100.0 / u.rule.limit.max(1) as f64).round();
            body.push_str(&format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{percent}%</td></tr>",
                esc(&u.rule.pattern),
                human(u.rule.limit),
                human(u.used),
                human(u.uploading),
            ));
        }
        body.push_str("</tbody></table>");
    }

    body.push_str("<h2>Garbage collection</h2>");
    let cursor = stores.meta.get(keys::GC_CURSOR).await.map_err(internal)?;
    let cursor = cursor.and_then(|c| String::from_utf8(c).ok()).filter(|c| !c.is_empty());
    body.push_str(&match cursor {
        Some(at) => {
            format!("<p class=\"gc\">A pass is under way; its next step starts after <code>{}</code>.</p>", esc(&at))
        }
        None => "<p class=\"gc\">No pass under way: the next step starts one.</p>".to_owned(),
    });
    body.push_str(&format!(
        "<table class=\"admin\"><tbody><tr><td>Grace for unreferenced blobs (<code>gc_grace_seconds</code>)</td>\
         <td>{} s</td></tr><tr><td>A dead collector's marks taken over after (<code>gc_abandoned_seconds</code>)</td>\
         <td>{} s</td></tr></tbody></table>",
        config.gc_grace_secs, config.gc_abandoned_secs
    ));
    let rules = config.retention.rules();
    if rules.is_empty() {
        body.push_str(
            "<p>No retention rules (<code>retention</code>): collection removes only unreferenced blobs.</p>",
        );
    } else {
        body.push_str(
            "<table class=\"admin retention\"><thead><tr><th>Retention for</th><th>Keep last</th><th>Keep tags</th>\
             <th>Untagged removed after</th></tr></thead><tbody>",
        );
        for rule in rules {
            body.push_str(&format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&rule.pattern),
                rule.keep_last.map_or_else(|| "—".to_owned(), |n| n.to_string()),
                if rule.keep_tags.is_empty() { "—".to_owned() } else { esc(&rule.keep_tags.join(", ")) },
                rule.untagged_after.map_or_else(|| "—".to_owned(), |s| format!("{s} s")),
            ));
        }
        body.push_str("</tbody></table>");
    }

    body.push_str("<h2>Mirrors</h2>");
    if config.mirrors.is_empty() {
        body.push_str("<p>No upstreams (<code>mirror_upstreams</code>).</p>");
    } else {
        body.push_str(
            "<table class=\"admin mirrors\"><thead><tr><th>Repositories</th><th>Upstream</th><th>Tags kept</th>\
             <th>Credentials</th></tr></thead><tbody>",
        );
        for upstream in config.mirrors.iter() {
            body.push_str(&format!(
                "<tr><td><code>{}/…</code></td><td><code>{}</code></td><td>{} s</td><td>{}</td></tr>",
                esc(&upstream.name),
                esc(&upstream.origin),
                upstream.tag_ttl_secs,
                if upstream.credentials.is_some() { "set" } else { "none" },
            ));
        }
        body.push_str("</tbody></table>");
    }

    body.push_str("<h2>Event endpoints</h2>");
    if config.events.is_empty() {
        body.push_str("<p>No endpoints (<code>events</code>).</p>");
    } else {
        body.push_str(
            "<table class=\"admin events\"><thead><tr><th>Endpoint</th><th>Newest event</th><th>Delivered up to</th>\
             <th>Dropped or given up</th><th>Failures</th></tr></thead><tbody>",
        );
        for endpoint in config.events.iter() {
            let outbox = events::outbox(stores, &endpoint.name).await?;
            let figure = |field: &str| outbox[field].as_u64().unwrap_or(0);
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&endpoint.name),
                figure("newest"),
                figure("delivered"),
                figure("dropped") + figure("skipped"),
                figure("failures"),
            ));
        }
        body.push_str("</tbody></table>");
    }
    Ok(Html::page("Administration", body))
}
