//! The catalog's continuation cursor: where a listing stopped looking, when it stopped at a
//! repository the caller may not see. The position is sealed (ChaCha20-Poly1305, under a key
//! derived from the deployment's secrets), so a `Link` never names a private repository, and a
//! cursor cannot be forged to start anywhere else.

use crate::auth::config::AuthConfig;
#[cfg(test)]
use crate::auth::config::Mode;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The catalog's sealing key's purpose (keys come from the deployment's secrets,
/// [`AuthConfig::derived_key`]).
const CATALOG: &[u8] = b"berth catalog cursor v1";

/// Seal `position` (a repository name) with a fresh nonce from `random`.
pub fn seal(auth: &AuthConfig, position: &str, random: [u8; 16]) -> String {
    seal_for(auth, CATALOG, position, random)
}

/// Seal `text` under the key for `purpose` (each use its own key: a catalog cursor is never a
/// web UI cursor).
pub fn seal_for(auth: &AuthConfig, purpose: &[u8], text: &str, random: [u8; 16]) -> String {
    seal_with(&auth.derived_key(purpose), text, random)
}

/// Seal `text` under `key`.
pub fn seal_with(key: &[u8; 32], text: &str, random: [u8; 16]) -> String {
    let nonce: [u8; 12] = random[..12].try_into().expect("12 of 16 bytes");
    let key: Key = (*key).into();
    let sealed = ChaCha20Poly1305::new(&key)
        .encrypt(&Nonce::from(nonce), text.as_bytes())
        .expect("sealing a short text cannot fail");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    B64.encode(out)
}

/// The position a cursor holds; `None` when it was not sealed here (or under other secrets).
pub fn open(auth: &AuthConfig, cursor: &str) -> Option<String> {
    open_for(auth, CATALOG, cursor)
}

/// What [`seal_for`] sealed for `purpose`; `None` for anything else.
pub fn open_for(auth: &AuthConfig, purpose: &[u8], cursor: &str) -> Option<String> {
    open_with(&auth.derived_key(purpose), cursor)
}

/// What [`seal_with`] sealed under `key`; `None` for anything else.
pub fn open_with(key: &[u8; 32], cursor: &str) -> Option<String> {
    let bytes = B64.decode(cursor).ok()?;
    if bytes.len() < 12 {
        return None;
    }
    let (nonce, sealed) = bytes.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().ok()?;
    let key: Key = (*key).into();
    let plain = ChaCha20Poly1305::new(&key).decrypt(&Nonce::from(nonce), sealed).ok()?;
    String::from_utf8(plain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(hash: &str) -> AuthConfig {
        let mut auth = AuthConfig { mode: Mode::Basic, ..AuthConfig::default() };
        auth.users.insert("alice".into(), hash.into());
        auth
    }

    #[test]
    fn a_sealed_position_opens_here_and_says_nothing_of_the_name() {
        let auth = basic("$2y$10$abc");
        let cursor = seal(&auth, "secret/app", [9; 16]);
        assert!(!cursor.contains("secret") && !B64.decode(&cursor).unwrap().windows(6).any(|w| w == b"secret"));
        assert_eq!(open(&auth, &cursor).as_deref(), Some("secret/app"));
        assert_ne!(seal(&auth, "secret/app", [8; 16]), cursor, "a fresh nonce each time");
    }

    #[test]
    fn a_cursor_from_other_secrets_or_altered_does_not_open() {
        let cursor = seal(&basic("$2y$10$abc"), "secret/app", [9; 16]);
        assert_eq!(open(&basic("$2y$10$xyz"), &cursor), None);
        let mut altered = B64.decode(&cursor).unwrap();
        altered[14] ^= 1;
        assert_eq!(open(&basic("$2y$10$abc"), &B64.encode(altered)), None);
        assert_eq!(open(&basic("$2y$10$abc"), "not base64 !"), None);
        assert_eq!(open(&basic("$2y$10$abc"), ""), None);
    }
}
