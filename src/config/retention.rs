//! Retention rules (the `retention` variable): per repository pattern, which tags to keep and
//! how long an untagged manifest stays (what they do: `crate::lifecycle::retention`).
//!
//! A rule is `<repository-glob> [keep_last=N] [keep_tags=<glob>,...] [untagged_after=<age>]`;
//! rules are separated by newlines or `;`, and the first whose glob matches a repository applies.

use crate::wire::glob::glob_match;
use crate::wire::name::RepoName;

/// The largest `keep_last`: while it ranks a repository's tags over several steps, garbage
/// collection carries the tags it keeps so far in its cursor.
pub const MAX_KEEP_LAST: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub pattern: String,
    pub keep_last: Option<usize>,
    pub keep_tags: Vec<String>,
    pub untagged_after: Option<u64>,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.pattern)?;
        if let Some(n) = self.keep_last {
            write!(f, " keep_last={n}")?;
        }
        if !self.keep_tags.is_empty() {
            write!(f, " keep_tags={}", self.keep_tags.join(","))?;
        }
        if let Some(age) = self.untagged_after {
            write!(f, " untagged_after={age}s")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention(Vec<Rule>);

/// `30d`, `12h`, `90m`, `600s` or plain seconds.
pub(crate) fn parse_age(text: &str) -> Option<u64> {
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(scale)
}

impl Retention {
    pub fn parse(text: &str) -> std::result::Result<Retention, String> {
        let mut rules = Vec::new();
        for (number, entry) in text.split(['\n', ';']).map(str::trim).enumerate() {
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let at = |message: String| format!("entry {}: {message}", number + 1);
            let mut words = entry.split_whitespace();
            let pattern = words.next().expect("non-empty").to_owned();
            let mut rule = Rule { pattern, keep_last: None, keep_tags: Vec::new(), untagged_after: None };
            for word in words {
                let Some((key, value)) = word.split_once('=') else {
                    return Err(at(format!("{word:?} is not key=value")));
                };
                match key {
                    "keep_last" => {
                        let n: usize = value.parse().map_err(|_| at(format!("keep_last={value:?} is not a count")))?;
                        if n > MAX_KEEP_LAST {
                            return Err(at(format!(
                                "keep_last={n} is more than {MAX_KEEP_LAST} (the tags kept travel in the collector's cursor)"
                            )));
                        }
                        rule.keep_last = Some(n);
                    }
                    "keep_tags" => {
                        rule.keep_tags = value.split(',').filter(|g| !g.is_empty()).map(str::to_owned).collect()
                    }
                    "untagged_after" => {
                        rule.untagged_after = Some(
                            parse_age(value)
                                .ok_or_else(|| at(format!("untagged_after={value:?} is not an age like 7d")))?,
                        )
                    }
                    _ => return Err(at(format!("unknown setting {key:?} (keep_last, keep_tags, untagged_after)"))),
                }
            }
            if rule.keep_last.is_none() && rule.untagged_after.is_none() {
                return Err(at("a rule needs keep_last or untagged_after".to_owned()));
            }
            rules.push(rule);
        }
        Ok(Retention(rules))
    }

    /// Every rule, in the order configured.
    pub fn rules(&self) -> &[Rule] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first rule whose glob matches the repository.
    pub fn rule_for(&self, name: &RepoName) -> Option<&Rule> {
        self.0.iter().find(|r| glob_match(&r.pattern, name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_with_their_settings_and_are_refused_by_number() {
        let r = Retention::parse("ci/* keep_last=3 keep_tags=v*,latest untagged_after=7d; tmp/* untagged_after=90m")
            .unwrap();
        let ci = r.rule_for(&RepoName::parse("ci/app").unwrap()).unwrap();
        assert_eq!((ci.keep_last, ci.untagged_after), (Some(3), Some(7 * 86_400)));
        assert_eq!(ci.keep_tags, ["v*", "latest"]);
        assert_eq!(r.rule_for(&RepoName::parse("tmp/x").unwrap()).unwrap().untagged_after, Some(5400));
        assert!(r.rule_for(&RepoName::parse("other").unwrap()).is_none());
        assert!(Retention::parse("a keep_last=3; b").unwrap_err().contains("entry 2"));
        assert!(Retention::parse("a keep_last=many").unwrap_err().contains("keep_last"));
        assert!(Retention::parse("a untagged_after=7w").unwrap_err().contains("untagged_after"));
        assert!(Retention::parse("a keep=1").unwrap_err().contains("unknown setting"));
    }
}
