//! A manifest reference: a tag or a digest (`/v2/<name>/manifests/<reference>`).

use crate::wire::digest::Digest;
use crate::wire::errcode::RegistryError;
use crate::wire::name::Tag;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    /// A reference with `:` can only be a digest (tags cannot contain one).
    pub fn parse(s: &str) -> Result<Reference, RegistryError> {
        if s.contains(':') { Digest::parse(s).map(Reference::Digest) } else { Tag::parse(s).map(Reference::Tag) }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t.as_str()),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::errcode::ErrorCode;

    #[test]
    fn tags_and_digests() {
        assert!(matches!(Reference::parse("latest").unwrap(), Reference::Tag(_)));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(matches!(Reference::parse(d).unwrap(), Reference::Digest(_)));
        assert_eq!(Reference::parse("sha256:nothex").unwrap_err().code, ErrorCode::DigestInvalid);
        assert_eq!(Reference::parse("-bad").unwrap_err().code, ErrorCode::TagInvalid);
    }
}
