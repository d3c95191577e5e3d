//! Passwords: HTTP Basic credentials and bcrypt hashes as htpasswd writes them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// A bcrypt hash in the modular crypt format: `$2a$`, `$2b$` or `$2y$`, a cost of 4 to 31, 22
/// characters of salt and 31 of hash.
pub fn is_bcrypt(hash: &str) -> bool {
    let b = hash.as_bytes();
    let alphabet = |c: &u8| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'/';
    b.len() == 60
        && matches!(&b[..4], b"$2a$" | b"$2b$" | b"$2y$")
        && b[6] == b'$'
        && hash[4..6].parse::<u32>().is_ok_and(|cost| (4..=31).contains(&cost))
        && b[7..].iter().all(alphabet)
}

/// The user and password of an `Authorization: Basic ...` header value.
pub fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2y$04$bKOFBbX2st4s.3cifBS8CeTKuRnPHiEmAhGnQkwQxJGjeuGt/ERWa";

    #[test]
    fn bcrypt_hashes_and_others() {
        assert!(is_bcrypt(HASH));
        assert!(is_bcrypt(&HASH.replace("$2y$", "$2b$")));
        assert!(!is_bcrypt(&HASH.replace("$2y$", "$2x$")), "the buggy 2x variant");
        assert!(!is_bcrypt(&HASH.replace("$04$", "$03$")));
        assert!(!is_bcrypt(&HASH.replace("$04$", "$32$")));
        assert!(!is_bcrypt(&HASH[..59]));
        assert!(!is_bcrypt("$apr1$x$y"));
        assert!(!is_bcrypt("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="));
        assert!(!is_bcrypt("plain"));
    }

    #[test]
    fn basic_headers() {
        assert_eq!(basic_credentials("Basic Ym9iOnNlY3JldA=="), Some(("bob".into(), "secret".into())));
        assert_eq!(basic_credentials("basic Ym9iOnM6ZWM="), Some(("bob".into(), "s:ec".into())));
        assert_eq!(basic_credentials("Bearer Ym9iOnNlY3JldA=="), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
        assert_eq!(basic_credentials("Basic Ym9i"), None, "no colon");
    }
}
