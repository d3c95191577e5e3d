//! The access policy: which subjects may do what on which repositories.
//!
//! One rule a line (lines may also be separated by `;`; `#` starts a comment):
//! ```text
//! <repository-pattern> <subject> <actions>
//! team-a/*        @team-a          pull,push
//! team-a/*        ci               pull,push,delete
//! public/*        anonymous        pull
//! *               authenticated    pull
//! *               admin            *
//! ```
//! - pattern: `*` matches any run of characters (`/` included), `?` one character; everything
//!   else is literal. `team-a/*` matches `team-a/app` and `team-a/x/y`, not `team-a`.
//! - subject: a user name, `@group`, `authenticated` (any user who logged in) or `anonymous`
//!   (everybody, logged in or not).
//! - actions: `pull`, `push`, `delete` separated by commas, or `*` for all three.
//!
//! Rules only grant: what a subject may do on a repository is the union of the actions of every
//! rule that matches both. Nothing matches: nothing is allowed.

use super::scope::Actions;
use crate::wire::glob::glob_match;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    Anyone,
    Authenticated,
    Users(BTreeSet<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    pattern: String,
    who: Who,
    actions: Actions,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// Subject keywords; no user may be called one of these.
pub const RESERVED_NAMES: [&str; 2] = ["anonymous", "authenticated"];

impl Policy {
    /// Parse `text` against the known users and groups (group name -> members). The error says
    /// which line is wrong and why.
    pub fn parse(
        text: &str,
        users: &BTreeSet<String>,
        groups: &BTreeMap<String, BTreeSet<String>>,
    ) -> Result<Policy, String> {
        let mut rules = Vec::new();
        for (n, line) in crate::wire::entries::entries(text).enumerate() {
            let rule_error = |why: String| format!("rule {} ({line:?}): {why}", n + 1);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [pattern, subject, actions] = fields[..] else {
                return Err(rule_error("expected `<repository-pattern> <subject> <actions>`".into()));
            };
            if !pattern.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/*?".contains(&b)) {
                return Err(rule_error(format!("pattern {pattern:?} has characters no repository name has")));
            }
            let who = match subject {
                "anonymous" => Who::Anyone,
                "authenticated" => Who::Authenticated,
                group if group.starts_with('@') => match groups.get(&group[1..]) {
                    Some(members) => Who::Users(members.clone()),
                    None => return Err(rule_error(format!("no group {group:?} in auth_groups"))),
                },
                user if users.contains(user) => Who::Users(BTreeSet::from([user.to_owned()])),
                user => return Err(rule_error(format!("no user {user:?} in auth_users"))),
            };
            let mut granted = Actions::NONE;
            for action in actions.split(',') {
                match Actions::named(action) {
                    Some(a) => granted = granted.union(a),
                    None => return Err(rule_error(format!("unknown action {action:?} (pull, push, delete or *)"))),
                }
            }
            rules.push(Rule { pattern: pattern.to_owned(), who, actions: granted });
        }
        Ok(Policy { rules })
    }

    /// What `subject` (`None`: anonymous) may do on `repository`.
    pub fn allowed(&self, subject: Option<&str>, repository: &str) -> Actions {
        self.rules
            .iter()
            .filter(|rule| applies(&rule.who, subject) && glob_match(&rule.pattern, repository))
            .fold(Actions::NONE, |acc, rule| acc.union(rule.actions))
    }

    /// Whether `subject` may do `actions` on every repository (a rule with pattern `*`).
    pub fn allows_everywhere(&self, subject: Option<&str>, actions: Actions) -> bool {
        self.rules
            .iter()
            .filter(|rule| rule.pattern == "*" && applies(&rule.who, subject))
            .fold(Actions::NONE, |acc, rule| acc.union(rule.actions))
            .contains(actions)
    }
}

fn applies(who: &Who, subject: Option<&str>) -> bool {
    match (who, subject) {
        (Who::Anyone, _) => true,
        (Who::Authenticated, Some(_)) => true,
        (Who::Users(users), Some(user)) => users.contains(user),
        (_, None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> BTreeSet<String> {
        ["alice", "bob", "carol"].map(String::from).into()
    }

    fn groups() -> BTreeMap<String, BTreeSet<String>> {
        BTreeMap::from([("team-a".to_owned(), ["alice", "bob"].map(String::from).into())])
    }

    fn policy(text: &str) -> Policy {
        Policy::parse(text, &users(), &groups()).unwrap()
    }

    #[test]
    fn globs() {
        let cases = [
            ("*", "anything/at/all", true),
            ("team-a/*", "team-a/app", true),
            ("team-a/*", "team-a/x/y", true),
            ("team-a/*", "team-a", false),
            ("team-a/*", "team-ab/app", false),
            ("app", "app", true),
            ("app", "apps", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*/app", "x/y/app", true),
            ("*/app", "app", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(glob_match(pattern, text), expected, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn rules_grant_the_union_of_what_matches() {
        let p = policy("team-a/* @team-a pull,push\nteam-a/* carol pull\n* alice delete");
        assert_eq!(p.allowed(Some("alice"), "team-a/app"), Actions::ALL);
        assert_eq!(p.allowed(Some("bob"), "team-a/app"), Actions::PULL.union(Actions::PUSH));
        assert_eq!(p.allowed(Some("carol"), "team-a/app"), Actions::PULL);
        assert_eq!(p.allowed(Some("bob"), "team-b/app"), Actions::NONE);
        assert_eq!(p.allowed(None, "team-a/app"), Actions::NONE);
    }

    #[test]
    fn anonymous_means_everybody_and_authenticated_means_any_user() {
        let p = policy("public/* anonymous pull; * authenticated pull");
        assert_eq!(p.allowed(None, "public/x"), Actions::PULL);
        assert_eq!(p.allowed(None, "private/x"), Actions::NONE);
        assert_eq!(p.allowed(Some("carol"), "private/x"), Actions::PULL);
        assert_eq!(p.allowed(Some("carol"), "public/x"), Actions::PULL);
    }

    #[test]
    fn comments_blank_lines_and_semicolons() {
        let p = policy("# who may do what\n\n  a bob pull  # reader\n; b bob push;");
        assert_eq!(p.allowed(Some("bob"), "a"), Actions::PULL);
        assert_eq!(p.allowed(Some("bob"), "b"), Actions::PUSH);
    }

    #[test]
    fn everywhere_needs_a_star_rule() {
        let p = policy("* alice *\nteam-a/* bob pull");
        assert!(p.allows_everywhere(Some("alice"), Actions::PULL));
        assert!(!p.allows_everywhere(Some("bob"), Actions::PULL));
        assert!(!p.allows_everywhere(None, Actions::PULL));
    }

    #[test]
    fn errors_name_the_rule_and_the_problem() {
        let cases = [
            ("a bob", "expected"),
            ("a dave pull", "no user \"dave\""),
            ("a @nobody pull", "no group \"@nobody\""),
            ("a bob pull,fly", "unknown action \"fly\""),
            ("A bob pull", "pattern \"A\""),
            ("a bob pull extra", "expected"),
        ];
        for (text, expected) in cases {
            let err = Policy::parse(text, &users(), &groups()).unwrap_err();
            assert!(err.contains(expected) && err.starts_with("rule 1"), "{text}: {err}");
        }
    }
}
