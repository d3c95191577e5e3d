//! Repository names and tags, validated by the spec's grammar.
//!
//! ```text
//! name      ::= component ("/" component)*         (at most 255 characters in all)
//! component ::= [a-z0-9]+ (separator [a-z0-9]+)*
//! separator ::= "." | "_" | "__" | "-"+
//! tag       ::= [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
//! ```

use crate::wire::errcode::{ErrorCode, RegistryError};

pub const MAX_NAME_LEN: usize = 255;

/// A repository name that matches the spec's grammar.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        if s.len() > MAX_NAME_LEN {
            return Err(RegistryError::new(
                ErrorCode::NameInvalid,
                format!("repository name longer than {MAX_NAME_LEN} characters"),
            ));
        }
        if s.is_empty() || !s.split('/').all(is_component) {
            return Err(RegistryError::new(ErrorCode::NameInvalid, format!("invalid repository name {s:?}")));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RepoName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]+ (separator [a-z0-9]+)*`: runs of alphanumerics joined by single separators.
fn is_component(c: &str) -> bool {
    let b = c.as_bytes();
    let mut i = 0;
    loop {
        let run = b[i..].iter().take_while(|&&x| is_alnum(x)).count();
        if run == 0 {
            return false;
        }
        i += run;
        if i == b.len() {
            return true;
        }
        let sep = &b[i..b[i..].iter().position(|&x| is_alnum(x)).map_or(b.len(), |p| i + p)];
        let valid = sep == b"." || sep == b"_" || sep == b"__" || sep.iter().all(|&x| x == b'-');
        if !valid {
            return false;
        }
        i += sep.len();
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let b = s.as_bytes();
        let first_ok = b.first().is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_');
        let rest_ok = b.iter().skip(1).all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if first_ok && rest_ok && b.len() <= 128 {
            Ok(Self(s.to_owned()))
        } else {
            Err(RegistryError::new(ErrorCode::TagInvalid, format!("invalid tag {s:?}")))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_match_the_grammar() {
        for ok in ["a", "library/alpine", "a.b_c__d-e---f/g0", "127.0.0.1/x", "x/y/z/w/v/u/t/s/r/q"] {
            assert_eq!(RepoName::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn names_that_do_not_match_the_grammar_are_name_invalid() {
        let too_long = "a".repeat(256);
        for bad in [
            "",
            "A",
            "a/",
            "/a",
            "a//b",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "a._b",
            "a/../b",
            "a%2fb",
            "é",
            too_long.as_str(),
        ] {
            assert_eq!(RepoName::parse(bad).unwrap_err().code, ErrorCode::NameInvalid, "{bad:?}");
        }
    }

    #[test]
    fn names_of_255_characters_are_accepted() {
        let name = format!("{}/{}", "a".repeat(127), "b".repeat(127));
        assert_eq!(name.len(), 255);
        assert!(RepoName::parse(&name).is_ok());
    }

    #[test]
    fn tags_follow_the_grammar() {
        for ok in ["latest", "v1.0", "_x", "A-b.c_d", &"t".repeat(128)] {
            assert!(Tag::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"t".repeat(129)] {
            assert_eq!(Tag::parse(bad).unwrap_err().code, ErrorCode::TagInvalid, "{bad:?}");
        }
    }
}
