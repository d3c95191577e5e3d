//! Retention rules (the `retention` variable): per repository pattern, which tags to keep and
//! how long an untagged manifest stays. Applied by garbage collection's repository phase
//! (`crate::lifecycle::gc`), a bounded piece at a time; a dry run reports what a run would do.
//!
//! A rule is `<repository-glob> [keep_last=N] [keep_tags=<glob>,...] [untagged_after=<age>]`;
//! rules are separated by newlines or `;`, and the first whose glob matches a repository applies.
//! - `keep_last=N`: of the tags no `keep_tags` glob matches, keep the N pushed last; untag the
//!   others. Without it, no tag is removed.
//! - `keep_tags`: tags kept whatever their age (immutable tags are always kept).
//! - `untagged_after`: a manifest that nothing kept reaches, and that was created longer ago
//!   than this (`30d`, `12h`, `90m`, `600s`), is deleted. Without it, no manifest is deleted.
//!
//! Kept means reachable from a kept tag, or from a manifest younger than `untagged_after`: the
//! children of a kept index and the referrers of a kept manifest (signatures, SBOMs) are kept,
//! transitively.
//!
//! **Bounded steps.** A repository is walked in three stages, each a walk through one listing
//! that a step stops after [`Budget`]'s entries or time and the next step goes on with (its
//! place travels in the collector's cursor, [`Position`]), so a repository of 100,000 tags costs
//! no step more than one of ten:
//! 1. *rank* the tags `keep_last` applies to, keeping the best N seen so far;
//! 2. *untag* those ranked below the N-th (each by a swap from the value read), and write the
//!    manifest-to-tag entry (`keys::tagged_prefix`) of tags from before those entries;
//! 3. *mark* the manifests nothing keeps: older than `untagged_after`, named by no kept tag
//!    (found through the manifest's tag entries), listed as a child by no stored index of the
//!    repository (its holder entries), and with no stored subject. Each is marked condemned by a
//!    compare-and-swap, with the pass's own nonce. Every test reads the manifest's own entries:
//!    nothing is read for the whole repository at once.
//! 4. *remove* the manifests marked with this pass's nonce: the test made again (every
//!    reference read after the mark), then the record swapped to removed.
//!
//! Only roots go in a pass: a manifest that an unkept index or subject still reaches is not
//! marked (they are stored until the remove stage), and goes in a later pass, once they are gone.
//! So a push of an old index never finds its children deleted meanwhile, and a dry run (the
//! mark stage, marking nothing) names what the run removes. A push that tags a marked manifest
//! or names it as a child writes that first and then takes the mark off (`hold_manifest`), so
//! the last swap fails and a kept manifest is never deleted. A mark of a pass that died stays
//! until a later pass marks the manifest again (its own remove stage then takes it); a pass only
//! removes what it marked itself, after its own look at the tags.

use crate::config::events::Action;
use crate::config::retention::Rule;
use crate::registry::events::{self, Event};
use crate::registry::keys;
use crate::registry::manifests::{self, ManifestRecord, TagTarget};
use crate::registry::store::{BlobStore, MetaStore, ObjectPages, Stores, internal};
use crate::wire::digest::Digest;
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::glob::glob_match;
use crate::wire::name::{RepoName, Tag};
use std::cmp::Reverse;

type Result<T> = std::result::Result<T, RegistryError>;

/// Listing entries one page of a stage reads at most.
const PAGE: u32 = 64;

/// What a step may still do: examine so many more tags and manifests, for so long. The first
/// page of a step is always read, so every step moves on.
#[derive(Debug)]
pub struct Budget {
    started: u64,
    seconds: u64,
    entries: u64,
    spent: bool,
}

impl Budget {
    pub fn new(started: u64, seconds: u64, entries: u64) -> Budget {
        Budget { started, seconds, entries, spent: false }
    }

    pub fn exhausted(&self, now: u64) -> bool {
        self.spent && (self.entries == 0 || now.saturating_sub(self.started) >= self.seconds)
    }

    fn spend(&mut self, entries: usize) {
        self.entries = self.entries.saturating_sub(entries as u64);
        self.spent = true;
    }
}

/// A tag's place in `keep_last`'s order: the greater is kept first (pushed later; of the
/// pushes of one second, the later by the repository's push counter; of tags from before the
/// counter, the lesser name, so a plan is the same every time).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rank {
    pushed: u64,
    sequence: i64,
    tag: Reverse<String>,
}

impl Rank {
    fn of(tag: &Tag, target: &TagTarget) -> Rank {
        let (pushed, sequence) = target.push_order();
        Rank { pushed, sequence, tag: Reverse(tag.as_str().to_owned()) }
    }

    fn encode(&self) -> String {
        format!("{}.{}.{}", self.pushed, self.sequence, self.tag.0)
    }

    fn parse(text: &str) -> Option<Rank> {
        let mut fields = text.splitn(3, '.');
        let pushed = fields.next()?.parse().ok()?;
        let sequence = fields.next()?.parse().ok()?;
        let tag = Tag::parse(fields.next()?).ok()?;
        Some(Rank { pushed, sequence, tag: Reverse(tag.as_str().to_owned()) })
    }
}

/// Which of the tags `keep_last` applies to are kept, once they are ranked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// No `keep_last`, or fewer tags than it.
    All,
    /// `keep_last=0`.
    Nothing,
    /// Those ranked at least this (the N-th best); a tag pushed since the ranking ranks higher.
    From(Rank),
}

impl Kept {
    fn encode(&self) -> String {
        match self {
            Kept::All => "all".to_owned(),
            Kept::Nothing => "none".to_owned(),
            Kept::From(rank) => rank.encode(),
        }
    }

    fn parse(text: &str) -> Option<Kept> {
        match text {
            "all" => Some(Kept::All),
            "none" => Some(Kept::Nothing),
            rank => Rank::parse(rank).map(Kept::From),
        }
    }
}

/// The stage a repository's retention is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Ranking the tags: the best `keep_last` so far, best first.
    Rank(Vec<Rank>),
    /// Untagging what is not kept (and entering tags from before tag entries).
    Untag(Kept),
    /// Marking the manifests nothing keeps, with the pass's nonce.
    Mark(Kept, [u8; 16]),
    /// Removing the manifests this pass marked.
    Remove(Kept, [u8; 16]),
}

/// Where a repository's retention is: its stage, and the last entry of the stage's listing
/// done (a tag, or a manifest's entry name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub stage: Stage,
    pub after: Option<String>,
}

impl Position {
    /// Where retention of a repository under `rule` starts.
    pub fn start(rule: &Rule) -> Position {
        let stage = if rule.keep_last.is_some() { Stage::Rank(Vec::new()) } else { Stage::Untag(Kept::All) };
        Position { stage, after: None }
    }

    /// `<stage>|<after>|<stage data>`: no part holds a `|` (tags and entry names cannot).
    pub fn encode(&self) -> String {
        let after = self.after.as_deref().unwrap_or("");
        match &self.stage {
            Stage::Rank(best) => {
                format!("rank|{after}|{}", best.iter().map(Rank::encode).collect::<Vec<_>>().join(","))
            }
            Stage::Untag(kept) => format!("untag|{after}|{}", kept.encode()),
            Stage::Mark(kept, nonce) => format!("mark|{after}|{}|{}", hex::encode(nonce), kept.encode()),
            Stage::Remove(kept, nonce) => format!("remove|{after}|{}|{}", hex::encode(nonce), kept.encode()),
        }
    }

    pub fn parse(text: &str) -> Option<Position> {
        let mut parts = text.splitn(3, '|');
        let (stage, after, data) = (parts.next()?, parts.next()?, parts.next()?);
        let after = Some(after.to_owned()).filter(|a| !a.is_empty());
        let stage = match stage {
            "rank" if data.is_empty() => Stage::Rank(Vec::new()),
            "rank" => Stage::Rank(data.split(',').map(Rank::parse).collect::<Option<_>>()?),
            "untag" => Stage::Untag(Kept::parse(data)?),
            "mark" | "remove" => {
                let (nonce, kept) = data.split_once('|')?;
                let nonce = hex::decode(nonce).ok()?.try_into().ok()?;
                let kept = Kept::parse(kept)?;
                if stage == "mark" { Stage::Mark(kept, nonce) } else { Stage::Remove(kept, nonce) }
            }
            _ => return None,
        };
        Some(Position { stage, after })
    }
}

/// What retention did (in a dry run: would do) to a repository in one step.
#[derive(Debug, Default)]
pub struct Done {
    pub untagged: Vec<Tag>,
    pub deleted: Vec<Digest>,
    /// Tags and manifests looked at.
    pub examined: u64,
}

/// Go on with repository `name`'s retention from `at` while `budget` lasts: where it stopped,
/// or `None` once the repository is done.
pub async fn resume<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    name: &RepoName,
    rule: &Rule,
    mut at: Position,
    dry_run: bool,
    budget: &mut Budget,
    done: &mut Done,
) -> Result<Option<Position>> {
    loop {
        if budget.exhausted((stores.now)()) {
            return Ok(Some(at));
        }
        let walk = Walk { stores, name, rule, dry_run };
        let next = match at.stage {
            Stage::Rank(best) => walk.rank(best, at.after, budget, done).await?,
            Stage::Untag(kept) => walk.untag(kept, at.after, budget, done).await?,
            Stage::Mark(kept, nonce) => walk.mark(kept, nonce, at.after, budget, done).await?,
            Stage::Remove(kept, nonce) => walk.remove(kept, nonce, at.after, budget, done).await?,
        };
        match next {
            Some(next) => at = next,
            None => return Ok(None),
        }
    }
}

/// One repository's retention under one rule.
struct Walk<'a, M, B> {
    stores: &'a Stores<M, B>,
    name: &'a RepoName,
    rule: &'a Rule,
    dry_run: bool,
}

impl<M: MetaStore, B: BlobStore> Walk<'_, M, B> {
    /// The next page of a listing after `after` (a name without the prefix): the names without
    /// the prefix, and whether the listing goes on.
    async fn page(&self, prefix: &str, after: Option<String>, budget: &mut Budget) -> Result<(Vec<String>, bool)> {
        let after = after.map(|a| format!("{prefix}{a}"));
        let (objects, next) = self.stores.blobs.list(prefix, after.as_deref(), PAGE).await.map_err(internal)?;
        budget.spend(objects.len());
        Ok((objects.into_iter().map(|o| o[prefix.len()..].to_owned()).collect(), next.is_some()))
    }

    /// A tag's value, when it names a stored manifest's record.
    async fn resolving(&self, tag: &Tag) -> Result<Option<(TagTarget, Vec<u8>)>> {
        let Some((target, bytes)) = manifests::tag_value(self.stores, self.name, tag).await? else { return Ok(None) };
        let record = manifests::record(self.stores, self.name, &target.digest).await?;
        Ok(record.is_some_and(|r| target.names(&r)).then_some((target, bytes)))
    }

    /// Tags kept whatever `keep_last` says: by a `keep_tags` glob, or immutable.
    fn pinned(&self, tag: &Tag) -> bool {
        self.rule.keep_tags.iter().any(|g| glob_match(g, tag.as_str()))
            || self.stores.config.immutable_tags.rule_for(self.name, tag).is_some()
    }

    fn kept(&self, kept: &Kept, tag: &Tag, target: &TagTarget) -> bool {
        self.pinned(tag)
            || match kept {
                Kept::All => true,
                Kept::Nothing => false,
                Kept::From(least) => Rank::of(tag, target) >= *least,
            }
    }

    async fn rank(
        &self,
        mut best: Vec<Rank>,
        after: Option<String>,
        budget: &mut Budget,
        done: &mut Done,
    ) -> Result<Option<Position>> {
        let keep_last = self.rule.keep_last.unwrap_or(0);
        let (tags, more) = self.page(&keys::tags_prefix(self.name), after, budget).await?;
        done.examined += tags.len() as u64;
        for entry in &tags {
            let Ok(tag) = Tag::parse(entry) else { continue };
            if self.pinned(&tag) {
                continue;
            }
            if let Some((target, _)) = self.resolving(&tag).await? {
                best.push(Rank::of(&tag, &target));
                best.sort_unstable_by(|a, b| b.cmp(a));
                best.truncate(keep_last);
            }
        }
        if more {
            return Ok(Some(Position { stage: Stage::Rank(best), after: tags.last().cloned() }));
        }
        let kept = match best.last() {
            _ if keep_last == 0 => Kept::Nothing,
            Some(least) if best.len() == keep_last => Kept::From(least.clone()),
            _ => Kept::All,
        };
        Ok(Some(Position { stage: Stage::Untag(kept), after: None }))
    }

    async fn untag(
        &self,
        kept: Kept,
        after: Option<String>,
        budget: &mut Budget,
        done: &mut Done,
    ) -> Result<Option<Position>> {
        let (tags, more) = self.page(&keys::tags_prefix(self.name), after, budget).await?;
        done.examined += tags.len() as u64;
        for entry in &tags {
            let Ok(tag) = Tag::parse(entry) else { continue };
            let Some((target, bytes)) = self.resolving(&tag).await? else { continue };
            if self.kept(&kept, &tag, &target) {
                if !target.tagged {
                    // Also in a dry run: the entry changes nothing a client sees, and the sweep
                    // finds the manifest's tags only through the entries.
                    manifests::enter_tag(self.stores, self.name, &tag, &target, &bytes).await?;
                }
                continue;
            }
            if self.dry_run {
                done.untagged.push(tag);
                continue;
            }
            let planned = |t: &TagTarget| t.to_value().as_bytes() == bytes.as_slice();
            if manifests::remove_tag(self.stores, self.name, &tag, planned).await? {
                let name = self.name;
                self.stores.log(format_args!("retention: untagged {name}:{} (rule {})", tag.as_str(), self.rule));
                let mut event = Event::new(self.stores, Action::Delete, name.as_str());
                event.digest = Some(target.digest.to_string());
                (event.tag, event.actor) = (Some(tag.as_str().to_owned()), Some("retention".to_owned()));
                events::record(self.stores, Action::Delete, &event).await?;
                done.untagged.push(tag);
            }
        }
        if more {
            return Ok(Some(Position { stage: Stage::Untag(kept), after: tags.last().cloned() }));
        }
        let nonce = (self.stores.random)();
        Ok(self.rule.untagged_after.is_some().then_some(Position { stage: Stage::Mark(kept, nonce), after: None }))
    }

    async fn mark(
        &self,
        kept: Kept,
        nonce: [u8; 16],
        after: Option<String>,
        budget: &mut Budget,
        done: &mut Done,
    ) -> Result<Option<Position>> {
        let (stores, name) = (self.stores, self.name);
        let (entries, more) = self.page(&keys::manifests_prefix(name), after, budget).await?;
        done.examined += entries.len() as u64;
        for entry in &entries {
            let Some(digest) = keys::parse_referrer_entry_name(entry) else { continue };
            let Some((record, bytes)) = manifests::stored(stores, name, &digest).await? else { continue };
            if !self.unkept(&kept, &digest, &record).await? {
                continue;
            }
            if self.dry_run {
                done.deleted.push(digest);
                continue;
            }
            // Over a mark of another pass too: that pass then leaves the manifest to this one.
            let marked = serde_json::to_vec(&record.condemned_at((stores.now)(), nonce)).expect("records serialize");
            stores.meta.compare_and_swap(&keys::manifest(name, &digest), &bytes, &marked).await.map_err(internal)?;
        }
        if more {
            return Ok(Some(Position { stage: Stage::Mark(kept, nonce), after: entries.last().cloned() }));
        }
        Ok((!self.dry_run).then_some(Position { stage: Stage::Remove(kept, nonce), after: None }))
    }

    async fn remove(
        &self,
        kept: Kept,
        nonce: [u8; 16],
        after: Option<String>,
        budget: &mut Budget,
        done: &mut Done,
    ) -> Result<Option<Position>> {
        let (entries, more) = self.page(&keys::manifests_prefix(self.name), after, budget).await?;
        done.examined += entries.len() as u64;
        let ours = Some(hex::encode(nonce));
        for entry in &entries {
            let Some(digest) = keys::parse_referrer_entry_name(entry) else { continue };
            let Some((record, marked)) = manifests::stored(self.stores, self.name, &digest).await? else { continue };
            if record.condemned_by == ours && self.remove_marked(&kept, &digest, record, &marked).await? {
                done.deleted.push(digest);
            }
        }
        Ok(more.then(|| Position { stage: Stage::Remove(kept, nonce), after: entries.last().cloned() }))
    }

    /// The second look at a manifest this pass marked (every reference read after the mark),
    /// then the swap to removed. Whether it was removed.
    async fn remove_marked(&self, kept: &Kept, digest: &Digest, record: ManifestRecord, marked: &[u8]) -> Result<bool> {
        let (stores, name) = (self.stores, self.name);
        let key = keys::manifest(name, digest);
        if !self.unkept(kept, digest, &record).await? {
            let unmarked = serde_json::to_vec(&record.unmarked()).expect("records serialize");
            stores.meta.compare_and_swap(&key, marked, &unmarked).await.map_err(internal)?;
            return Ok(false);
        }
        if !stores.meta.compare_and_swap(&key, marked, b"").await.map_err(internal)? {
            return Ok(false); // a push took the mark off
        }
        stores.log(format_args!(
            "retention: deleted manifest {name}@{digest}: nothing kept reaches it (rule {})",
            self.rule
        ));
        manifests::forget(stores, name, digest, &record).await?;
        manifests::untag_entered(stores, name, digest, &record).await?;
        let mut event = Event::new(stores, Action::Delete, name.as_str());
        (event.digest, event.media_type) = (Some(digest.to_string()), Some(record.media_type.clone()));
        (event.size, event.actor) = (Some(record.size), Some("retention".to_owned()));
        events::record(stores, Action::Delete, &event).await?;
        Ok(true)
    }

    /// Whether nothing keeps manifest `digest` (with `record`) and nothing else in the
    /// repository reaches it: old enough, no kept tag, no stored index listing it, no stored
    /// subject.
    async fn unkept(&self, kept: &Kept, digest: &Digest, record: &ManifestRecord) -> Result<bool> {
        let (stores, name) = (self.stores, self.name);
        let now = (stores.now)();
        if self.rule.untagged_after.is_none_or(|age| now.saturating_sub(record.created.unwrap_or(0)) < age) {
            return Ok(false);
        }
        if let Some(subject) = record.subject.as_deref() {
            let subject = Digest::parse(subject).map_err(|_| {
                RegistryError::new(ErrorCode::Internal, format!("corrupt subject in the record of {name}@{digest}"))
            })?;
            if manifests::record(stores, name, &subject).await?.is_some() {
                return Ok(false);
            }
        }
        let holders = keys::manifest_holders_in(name, digest);
        let mut pages = ObjectPages::new(&stores.blobs, &holders, None);
        while let Some(objects) = pages.next().await? {
            for object in objects {
                let Some(parent) = keys::parse_referrer_entry_name(&object[holders.len()..]) else { continue };
                if parent != *digest && manifests::record(stores, name, &parent).await?.is_some() {
                    return Ok(false);
                }
            }
        }
        // Entries are only read here (never pruned while the record stands: an entry may be a
        // push's whose value is still to come); the first kept tag ends the listing.
        let keeps = |tag: &Tag, target: &TagTarget| target.names(record) && self.kept(kept, tag, target);
        let tags = manifests::tags_of(stores, name, digest, false, Some(&keeps)).await?;
        Ok(!tags.iter().any(|(tag, target, _)| keeps(tag, target)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::retention::Retention;
    use crate::testing::api::*;
    use crate::testing::{advance_clock, block_on, memory_stores, test_clock};
    use crate::wire::digest::Algorithm;
    use http::{Method, StatusCode};
    use std::collections::BTreeSet;

    fn with_rules(rules: &str) -> Mem {
        let mut stores = memory_stores();
        stores.config.retention = Retention::parse(rules).unwrap();
        stores
    }

    fn sha(bytes: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, bytes)
    }

    /// A whole pass (retention, then blobs); what it reported.
    fn pass(stores: &Mem, dry_run: bool) -> crate::lifecycle::gc::Step {
        let mut total = crate::lifecycle::gc::Step::default();
        let mut cursor = None;
        loop {
            let step = block_on(crate::lifecycle::gc::step(
                stores,
                cursor,
                dry_run,
                crate::lifecycle::gc::DEFAULT_CONCURRENCY,
            ))
            .unwrap();
            total.untagged.extend(step.untagged);
            total.deleted_manifests.extend(step.deleted_manifests);
            total.collected.extend(step.collected);
            cursor = step.next;
            if cursor.is_none() {
                total.untagged.sort();
                total.deleted_manifests.sort();
                return total;
            }
        }
    }

    fn tags_of(stores: &Mem, repo: &str) -> Vec<String> {
        let r = send(stores, Method::GET, &format!("/v2/{repo}/tags/list"), vec![]);
        let crate::wire::message::Body::Full(body) = r.body else { panic!("no body") };
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        value["tags"].as_array().map(|t| t.iter().map(|t| t.as_str().unwrap().to_owned()).collect()).unwrap_or_default()
    }

    fn manifest_status(stores: &Mem, repo: &str, reference: &str) -> StatusCode {
        send(stores, Method::HEAD, &format!("/v2/{repo}/manifests/{reference}"), vec![]).status
    }

    /// An index of the given manifests (pushed by digest first).
    fn index_of(children: &[&[u8]]) -> Vec<u8> {
        let manifests: Vec<_> = children
            .iter()
            .map(|c| serde_json::json!({"mediaType": crate::wire::manifest::OCI_MANIFEST, "digest": sha(c).to_string(), "size": c.len()}))
            .collect();
        serde_json::to_vec(
            &serde_json::json!({"schemaVersion": 2, "mediaType": crate::wire::manifest::OCI_INDEX, "manifests": manifests}),
        )
        .unwrap()
    }

    /// A signature-like artifact whose subject is `subject` (its blobs pushed to `repo`).
    fn referrer_of(stores: &Mem, repo: &str, subject: &[u8], payload: &[u8]) -> Vec<u8> {
        push_blob(stores, repo, b"{}");
        push_blob(stores, repo, payload);
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::wire::manifest::OCI_MANIFEST,
            "artifactType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha(b"{}").to_string(), "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": sha(payload).to_string(), "size": payload.len()}],
            "subject": {"mediaType": crate::wire::manifest::OCI_MANIFEST, "digest": sha(subject).to_string(), "size": subject.len()},
        }))
        .unwrap()
    }

    #[test]
    fn keep_last_keeps_the_tags_pushed_last_and_those_a_pattern_pins() {
        let stores = with_rules("r keep_last=2 keep_tags=stable");
        for (i, tag) in ["stable", "a", "b", "c", "d"].iter().enumerate() {
            push_image(&stores, "r", tag, format!("config {i}").as_bytes(), &[format!("layer {i}").as_bytes()]);
            advance_clock(10);
        }
        let planned = pass(&stores, true);
        assert_eq!(planned.untagged, ["r:a", "r:b"]);
        assert_eq!(tags_of(&stores, "r"), ["a", "b", "c", "d", "stable"], "a dry run changes nothing");
        let done = pass(&stores, false);
        assert_eq!(done.untagged, planned.untagged, "the run does what the dry run said");
        assert_eq!(tags_of(&stores, "r"), ["c", "d", "stable"]);
        // Without untagged_after the manifests stay (by digest), and so do their blobs.
        assert!(done.deleted_manifests.is_empty() && done.collected.is_empty());
    }

    #[test]
    fn keep_last_keeps_the_newest_of_tags_pushed_within_one_second() {
        let stores = with_rules("r keep_last=3");
        // build-1 .. build-6 pushed back to back: the clock does not move between them.
        for i in 1..=6 {
            let tag = format!("build-{i}");
            push_image(&stores, "r", &tag, format!("config {i}").as_bytes(), &[format!("layer {i}").as_bytes()]);
        }
        let done = pass(&stores, false);
        assert_eq!(done.untagged, ["r:build-1", "r:build-2", "r:build-3"]);
        assert_eq!(tags_of(&stores, "r"), ["build-4", "build-5", "build-6"]);
    }

    /// Every step of a pass from the start, with the cursor each returned.
    fn steps(stores: &Mem, dry_run: bool) -> Vec<crate::lifecycle::gc::Step> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let step = block_on(crate::lifecycle::gc::step(stores, cursor, dry_run, 1)).unwrap();
            cursor = step.next.clone();
            all.push(step);
            if cursor.is_none() {
                return all;
            }
        }
    }

    /// The most entries a step reads: its budget, and the page it was reading when the budget ran
    /// out.
    const MOST_A_STEP_EXAMINES: u64 = crate::lifecycle::gc::STEP_RETENTION_ENTRIES + PAGE as u64;

    #[test]
    fn a_retention_step_out_of_time_stops_inside_a_repository_and_the_next_step_goes_on_from_there() {
        let mut stores = with_rules("a keep_last=1; b keep_last=1");
        for repo in ["a", "b"] {
            for tag in ["old", "new"] {
                push_image(&stores, repo, tag, format!("config {repo}{tag}").as_bytes(), &[b"layer"]);
                advance_clock(10);
            }
        }
        // A clock that moves a whole step's time at every reading: every step reads one page.
        fn slow_clock() -> u64 {
            crate::testing::advance_clock(crate::lifecycle::gc::STEP_SECONDS);
            crate::testing::test_clock()
        }
        stores.now = slow_clock;
        let steps = steps(&stores, false);
        let first = steps[0].next.as_deref().unwrap();
        assert!(first.starts_with("retention|a|") && first.contains("|untag||"), "ranked, not untagged: {first}");
        assert!(steps[0].untagged.is_empty());
        assert_eq!(steps[1].untagged, ["a:old"]);
        let untagged: Vec<String> = steps.iter().flat_map(|s| s.untagged.clone()).collect();
        assert_eq!(untagged, ["a:old", "b:old"]);
        assert_eq!(tags_of(&stores, "a"), ["new"]);
        assert_eq!(tags_of(&stores, "b"), ["new"]);
    }

    #[test]
    fn a_cursor_made_under_another_rule_or_by_a_dry_run_starts_the_repository_again() {
        let mut stores = with_rules("a keep_last=1");
        for tag in ["old", "new"] {
            push_image(&stores, "a", tag, format!("config {tag}").as_bytes(), &[b"layer"]);
            advance_clock(10);
        }
        fn slow_clock() -> u64 {
            crate::testing::advance_clock(crate::lifecycle::gc::STEP_SECONDS);
            crate::testing::test_clock()
        }
        stores.now = slow_clock;
        let step = |stores: &Mem, cursor: Option<String>, dry_run: bool| {
            block_on(crate::lifecycle::gc::step(stores, cursor, dry_run, 1)).unwrap()
        };
        // A dry run ranked the tags (keep the newest); a run given its cursor ranks again.
        let dry = step(&stores, None, true).next.unwrap();
        assert!(dry.contains("|untag||"), "{dry}");
        let run = step(&stores, Some(dry.clone()), false);
        assert!(run.untagged.is_empty(), "the run did not untag on the dry run's ranking");
        let run_cursor = run.next.unwrap();
        assert_ne!(run_cursor.split('|').nth(2), dry.split('|').nth(2), "{run_cursor} {dry}");
        // The rule changed since (keep both): the cursor made under the old one is not used.
        stores.config.retention = Retention::parse("a keep_last=2").unwrap();
        let mut cursor = Some(run_cursor);
        let mut untagged = Vec::new();
        while let Some(at) = cursor {
            let done = step(&stores, Some(at), false);
            untagged.extend(done.untagged);
            cursor = done.next;
        }
        assert!(untagged.is_empty(), "{untagged:?}");
        assert_eq!(tags_of(&stores, "a"), ["new", "old"]);
    }

    #[test]
    fn keep_last_over_thousands_of_tags_goes_in_steps_of_bounded_work() {
        let stores = with_rules("r keep_last=3 keep_tags=stable");
        let manifest = push_image_bytes(&stores, "stable", b"config", b"layer");
        for i in 0..2000 {
            assert_eq!(put_manifest(&stores, "r", &format!("t-{i:04}"), &manifest).status, StatusCode::CREATED);
        }
        let planned = steps(&stores, true);
        let done = steps(&stores, false);
        for pass in [&planned, &done] {
            assert!(pass.len() >= 2 * 2000 / MOST_A_STEP_EXAMINES as usize, "{} steps", pass.len());
            for step in pass.iter() {
                assert!(step.retention_examined <= MOST_A_STEP_EXAMINES, "{}", step.retention_examined);
            }
        }
        let untagged = |pass: &[crate::lifecycle::gc::Step]| -> Vec<String> {
            pass.iter().flat_map(|s| s.untagged.clone()).collect()
        };
        assert_eq!(untagged(&planned), untagged(&done), "the run does what the dry run said");
        assert_eq!(untagged(&done).len(), 1997);
        assert_eq!(tags_of(&stores, "r"), ["stable", "t-1997", "t-1998", "t-1999"]);
    }

    #[test]
    fn untagged_after_over_many_manifests_goes_in_steps_of_bounded_work() {
        let stores = with_rules("r untagged_after=1h");
        let mut gone = BTreeSet::new();
        for i in 0..700 {
            let manifest = push_image_bytes(&stores, "t", format!("config {i}").as_bytes(), b"layer");
            gone.insert(format!("r@{}", sha(&manifest)));
        }
        let kept = push_image_bytes(&stores, "kept", b"config kept", b"layer");
        gone.remove(&format!("r@{}", sha(&kept)));
        advance_clock(2 * 3600);
        let planned = steps(&stores, true);
        let done = steps(&stores, false);
        for pass in [&planned, &done] {
            assert!(pass.len() > 2, "{} steps", pass.len());
            for step in pass.iter() {
                assert!(step.retention_examined <= MOST_A_STEP_EXAMINES, "{}", step.retention_examined);
            }
        }
        let deleted = |pass: &[crate::lifecycle::gc::Step]| -> BTreeSet<String> {
            pass.iter().flat_map(|s| s.deleted_manifests.clone()).collect()
        };
        // "t" moved from each manifest to the next: all but the last one it names are untagged.
        let head = send(&stores, Method::HEAD, "/v2/r/manifests/t", vec![]);
        let last = format!("r@{}", head.headers["docker-content-digest"].to_str().unwrap());
        assert!(gone.remove(&last));
        assert_eq!(deleted(&planned), deleted(&done), "the run does what the dry run said");
        assert_eq!(deleted(&done), gone);
        assert_eq!(manifest_status(&stores, "r", "t"), StatusCode::OK);
        assert_eq!(manifest_status(&stores, "r", "kept"), StatusCode::OK);
    }

    #[test]
    fn a_tag_from_before_tag_entries_keeps_its_manifest_and_is_given_its_entry() {
        let stores = with_rules("r untagged_after=1h");
        let manifest = push_image_bytes(&stores, "legacy", b"config", b"layer");
        let (name, tag, digest) = (RepoName::parse("r").unwrap(), Tag::parse("legacy").unwrap(), sha(&manifest));
        // As an earlier version left it: no `#tagged` in the value, no entry.
        let (target, bytes) = block_on(manifests::tag_value(&stores, &name, &tag)).unwrap().unwrap();
        let old = TagTarget { tagged: false, ..target.clone() };
        assert!(
            block_on(stores.meta.compare_and_swap(&keys::tag(&name, &tag), &bytes, old.to_value().as_bytes())).unwrap()
        );
        let entry = keys::tagged_entry(&name, &digest, &tag, target.sequence);
        block_on(stores.blobs.delete(&entry)).unwrap();
        advance_clock(2 * 3600);

        assert!(pass(&stores, true).deleted_manifests.is_empty(), "the dry run keeps it");
        assert!(pass(&stores, false).deleted_manifests.is_empty(), "the run keeps it");
        assert_eq!(manifest_status(&stores, "r", "legacy"), StatusCode::OK);
        let (now, _) = block_on(manifests::tag_value(&stores, &name, &tag)).unwrap().unwrap();
        assert!(now.tagged, "the tag says its entry is written");
        assert!(block_on(stores.blobs.size(&entry)).is_ok(), "and it is");
    }

    #[test]
    fn a_mark_left_by_a_dead_pass_is_taken_over_by_the_next_and_never_removes_a_tagged_manifest() {
        let stores = with_rules("r untagged_after=1h");
        let name = RepoName::parse("r").unwrap();
        let tagged = sha(&push_image_bytes(&stores, "t", b"config tagged", b"layer"));
        let orphan = sha(&push_image_bytes(&stores, "o", b"config orphan", b"layer"));
        send(&stores, Method::DELETE, "/v2/r/manifests/o", vec![]);
        advance_clock(2 * 3600);
        // A pass marked both (a wrong mark on the tagged one, say from before it was tagged) and
        // died.
        for digest in [&tagged, &orphan] {
            let (record, bytes) = block_on(manifests::stored(&stores, &name, digest)).unwrap().unwrap();
            let marked = serde_json::to_vec(&record.condemned_at(1, [7; 16])).unwrap();
            assert!(block_on(stores.meta.compare_and_swap(&keys::manifest(&name, digest), &bytes, &marked)).unwrap());
        }
        let done = pass(&stores, false);
        assert_eq!(done.deleted_manifests, [format!("r@{orphan}")]);
        assert_eq!(manifest_status(&stores, "r", "t"), StatusCode::OK);
        assert_eq!(manifest_status(&stores, "r", &orphan.to_string()), StatusCode::NOT_FOUND);
    }

    #[test]
    fn an_entry_whose_push_has_not_written_its_tag_yet_is_not_pruned_and_keeps_the_manifest_once_it_has() {
        let stores = with_rules("r untagged_after=1h");
        let name = RepoName::parse("r").unwrap();
        let manifest = sha(&push_image_bytes(&stores, "old", b"config old", b"layer"));
        let other = sha(&push_image_bytes(&stores, "t", b"config other", b"layer"));
        send(&stores, Method::DELETE, "/v2/r/manifests/old", vec![]);
        advance_clock(2 * 3600);
        // A push of `t` to the old manifest, between its entry and its value (`set_tag`).
        let tag = Tag::parse("t").unwrap();
        let record = block_on(manifests::record(&stores, &name, &manifest)).unwrap().unwrap();
        let pushed = TagTarget {
            pushed: Some(test_clock()),
            sequence: Some(999),
            tagged: true,
            ..TagTarget::new(&manifest, record.generation.clone())
        };
        block_on(stores.blobs.write_bytes(&keys::tagged_entry(&name, &manifest, &tag, Some(999)), vec![])).unwrap();
        let _ = &other;
        // Retention's first look: `t` still names the other manifest, so nothing keeps this one...
        let rule = stores.config.retention.rule_for(&name).unwrap().clone();
        let walk = Walk { stores: &stores, name: &name, rule: &rule, dry_run: false };
        assert!(block_on(walk.unkept(&Kept::All, &manifest, &record)).unwrap());
        // ...but the entry stays: the push writes its value now (and is acknowledged).
        let entry = keys::tagged_entry(&name, &manifest, &tag, Some(999));
        assert!(block_on(stores.blobs.size(&entry)).is_ok(), "the pending push's entry was pruned");
        let (_, bytes) = block_on(manifests::tag_value(&stores, &name, &tag)).unwrap().unwrap();
        let key = keys::tag(&name, &tag);
        assert!(block_on(stores.meta.compare_and_swap(&key, &bytes, pushed.to_value().as_bytes())).unwrap());
        // The pass that follows sees the tag through the entry and keeps the manifest.
        let done = pass(&stores, false);
        assert!(!done.deleted_manifests.contains(&format!("r@{manifest}")), "{:?}", done.deleted_manifests);
        assert_eq!(manifest_status(&stores, "r", "t"), StatusCode::OK);
    }

    #[test]
    fn retention_cursors_read_back_as_written() {
        let rank = Rank { pushed: 5, sequence: 7, tag: Reverse("v1.2.3".to_owned()) };
        for stage in [
            Stage::Rank(vec![]),
            Stage::Rank(vec![rank.clone(), Rank { tag: Reverse("a".to_owned()), ..rank.clone() }]),
            Stage::Untag(Kept::All),
            Stage::Untag(Kept::Nothing),
            Stage::Mark(Kept::From(rank.clone()), [3; 16]),
            Stage::Remove(Kept::From(rank.clone()), [4; 16]),
        ] {
            for after in [None, Some("sha256-ab".to_owned())] {
                let position = Position { stage: stage.clone(), after };
                assert_eq!(Position::parse(&position.encode()), Some(position.clone()), "{}", position.encode());
            }
        }
        for bad in ["", "rank", "mark||zz|all", "untag||1.x.y", "remove||0303|all", "sweep||all"] {
            assert_eq!(Position::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn untagged_manifests_go_after_their_age_but_indexes_children_and_referrers_of_kept_ones_stay() {
        let stores = with_rules("r untagged_after=1h");
        let kept = push_image_bytes(&stores, "keep", b"config kept", b"layer kept");
        let orphan = push_image_bytes(&stores, "orphan", b"config orphan", b"layer orphan");
        assert_eq!(send(&stores, Method::DELETE, "/v2/r/manifests/orphan", vec![]).status, StatusCode::ACCEPTED);
        let amd64 = push_image_bytes(&stores, "amd64", b"config amd64", b"layer amd64");
        let arm64 = push_image_bytes(&stores, "arm64", b"config arm64", b"layer arm64");
        for tag in ["amd64", "arm64"] {
            send(&stores, Method::DELETE, &format!("/v2/r/manifests/{tag}"), vec![]);
        }
        let index = index_of(&[&amd64, &arm64]);
        assert_eq!(put_manifest(&stores, "r", "multi", &index).status, StatusCode::CREATED);
        let signature = referrer_of(&stores, "r", &kept, b"signature of kept");
        assert_eq!(put_manifest(&stores, "r", &sha(&signature).to_string(), &signature).status, StatusCode::CREATED);
        let stray = referrer_of(&stores, "r", &orphan, b"signature of orphan");
        assert_eq!(put_manifest(&stores, "r", &sha(&stray).to_string(), &stray).status, StatusCode::CREATED);

        assert!(pass(&stores, true).deleted_manifests.is_empty(), "nothing is an hour old yet");
        advance_clock(2 * 3600);
        // The orphan goes first; its signature, which it reaches, in the next pass.
        let planned = pass(&stores, true);
        assert_eq!(planned.deleted_manifests, [format!("r@{}", sha(&orphan))]);
        let first = pass(&stores, false);
        assert_eq!(first.deleted_manifests, planned.deleted_manifests, "the run does what the dry run said");
        let planned = pass(&stores, true);
        assert_eq!(planned.deleted_manifests, [format!("r@{}", sha(&stray))]);
        let mut done = pass(&stores, false);
        assert_eq!(done.deleted_manifests, planned.deleted_manifests, "the run does what the dry run said");
        done.collected.extend(first.collected);
        for gone in [&orphan, &stray] {
            assert_eq!(manifest_status(&stores, "r", &sha(gone).to_string()), StatusCode::NOT_FOUND);
        }
        for stays in [&kept, &amd64, &arm64, &index, &signature] {
            assert_eq!(manifest_status(&stores, "r", &sha(stays).to_string()), StatusCode::OK);
        }
        // The passes collected the deleted manifests' blobs, and only theirs.
        let collected: BTreeSet<Digest> = done.collected.iter().map(|(d, _)| d.clone()).collect();
        for blob in
            [sha(&orphan), sha(&stray), sha(b"config orphan"), sha(b"layer orphan"), sha(b"signature of orphan")]
        {
            assert!(collected.contains(&blob), "{blob}");
        }
        assert!(!collected.contains(&sha(b"{}")), "the empty config is still used by the kept signature");
        let referrers = send(&stores, Method::GET, &format!("/v2/r/referrers/{}", sha(&kept)), vec![]);
        let crate::wire::message::Body::Full(body) = referrers.body else { panic!() };
        assert!(String::from_utf8_lossy(&body).contains(&sha(&signature).to_string()));
    }

    fn push_image_bytes(stores: &Mem, tag: &str, config: &[u8], layer: &[u8]) -> Vec<u8> {
        push_image(stores, "r", tag, config, &[layer]);
        manifest_of(config, &[layer])
    }

    #[test]
    fn a_push_that_tags_a_condemned_manifest_takes_the_mark_off_so_retention_cannot_remove_it() {
        let stores = with_rules("r untagged_after=1h");
        let manifest = push_image_bytes(&stores, "t", b"config", b"layer");
        send(&stores, Method::DELETE, "/v2/r/manifests/t", vec![]);
        advance_clock(2 * 3600);
        let name = RepoName::parse("r").unwrap();
        let digest = sha(&manifest);
        // Retention has marked it (the first move of `apply`)...
        let (record, bytes) = block_on(manifests::stored(&stores, &name, &digest)).unwrap().unwrap();
        let marked = serde_json::to_vec(&ManifestRecord { condemned: Some(1), ..record }).unwrap();
        assert!(block_on(stores.meta.compare_and_swap(&keys::manifest(&name, &digest), &bytes, &marked)).unwrap());
        // ...then a client tags it again...
        assert_eq!(put_manifest(&stores, "r", "again", &manifest).status, StatusCode::CREATED);
        // ...so retention's last move, a swap from the marked record, fails.
        assert!(!block_on(stores.meta.compare_and_swap(&keys::manifest(&name, &digest), &marked, b"")).unwrap());
        assert!(pass(&stores, false).deleted_manifests.is_empty());
        assert_eq!(manifest_status(&stores, "r", "again"), StatusCode::OK);
    }
}
