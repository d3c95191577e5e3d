//! Immutable tags (the `immutable_tags` variable): rules `<repository-glob>:<tag-glob>`, and
//! exclusions `!<repository-glob>:<tag-glob>`, as ECR's `IMMUTABLE_WITH_EXCLUSION`. A tag some
//! rule matches and no exclusion matches is bound, by its first push, to that manifest for good:
//! a push that would move it, a delete of it, and a delete of the manifest it names are refused.
//! Pushing the same manifest again is not a move, and succeeds. There is no admin exception.

use crate::wire::glob::glob_match;
use crate::wire::name::{RepoName, Tag};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    repository: String,
    tag: String,
    exclude: bool,
}

impl Rule {
    fn matches(&self, name: &RepoName, tag: &Tag) -> bool {
        glob_match(&self.repository, name.as_str()) && glob_match(&self.tag, tag.as_str())
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}:{}", if self.exclude { "!" } else { "" }, self.repository, self.tag)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImmutableTags(Vec<Rule>);

impl ImmutableTags {
    /// Rules separated by newlines or `;`; empty: no tag is immutable.
    pub fn parse(text: &str) -> Result<ImmutableTags, String> {
        let mut rules = Vec::new();
        for (number, entry) in text.split(['\n', ';']).map(str::trim).enumerate() {
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let (exclude, body) = match entry.strip_prefix('!') {
                Some(body) => (true, body.trim()),
                None => (false, entry),
            };
            // The tag glob follows the last `:` (repository names have none, tags have none).
            let Some((repository, tag)) = body.rsplit_once(':') else {
                return Err(format!("entry {}: expected <repository-glob>:<tag-glob>, e.g. prod/*:v*", number + 1));
            };
            if repository.is_empty() || tag.is_empty() {
                return Err(format!("entry {}: both globs must be non-empty (use * for any)", number + 1));
            }
            rules.push(Rule { repository: repository.to_owned(), tag: tag.to_owned(), exclude });
        }
        Ok(ImmutableTags(rules))
    }

    /// The rule that makes `name:tag` immutable, as written (for the error), if one does.
    pub fn rule_for(&self, name: &RepoName, tag: &Tag) -> Option<String> {
        if self.0.iter().any(|r| r.exclude && r.matches(name, tag)) {
            return None;
        }
        self.0.iter().find(|r| !r.exclude && r.matches(name, tag)).map(Rule::to_string)
    }

    /// Whether any tag of repository `name` can be immutable (a delete by digest must then look
    /// at the repository's tags).
    pub fn may_apply_to(&self, name: &RepoName) -> bool {
        self.0.iter().any(|r| !r.exclude && glob_match(&r.repository, name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    fn tag(s: &str) -> Tag {
        Tag::parse(s).unwrap()
    }

    #[test]
    fn a_tag_is_immutable_when_a_rule_matches_and_no_exclusion_does() {
        let rules = ImmutableTags::parse("prod/*:v*\n!prod/*:v*-rc*; team/app:*").unwrap();
        assert_eq!(rules.rule_for(&name("prod/web"), &tag("v1.2")), Some("prod/*:v*".into()));
        assert_eq!(rules.rule_for(&name("prod/web"), &tag("v1.2-rc1")), None, "excluded");
        assert_eq!(rules.rule_for(&name("prod/web"), &tag("latest")), None);
        assert_eq!(rules.rule_for(&name("dev/web"), &tag("v1")), None);
        assert_eq!(rules.rule_for(&name("team/app"), &tag("anything")), Some("team/app:*".into()));
        assert!(rules.may_apply_to(&name("prod/web")) && !rules.may_apply_to(&name("dev/web")));
    }

    #[test]
    fn no_rules_make_nothing_immutable_and_bad_entries_are_refused_by_number() {
        assert_eq!(ImmutableTags::parse(" \n# none yet\n").unwrap(), ImmutableTags::default());
        assert!(ImmutableTags::parse("prod/*").unwrap_err().contains("entry 1"));
        assert!(ImmutableTags::parse("a:v1;:v2").unwrap_err().contains("entry 2"));
    }
}
