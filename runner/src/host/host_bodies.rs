//! Bodies the runner sends itself (`berth:blob-store/store.host-body`). The component makes
//! every decision of a blob GET (access, link, range, headers) and asks for a token naming the
//! files' extents, which it puts in its answer; the HTTP front takes the token off the answer
//! and sends the bytes (`http::host_body`), so they never pass through the component's memory.
//!
//! A token is 128 random bits, good for one answer: taking it removes it. One never taken (the
//! request failed after the offer, or its client went away before the answer) is dropped, with
//! its open files, by the next offer or take after [`TOKEN_LIFETIME`]; and at most
//! [`MAX_WAITING`] offers wait at once (beyond, the component streams the bytes itself).

use bytes::Bytes;
use std::collections::HashMap;
use std::fs::File;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an offered body waits for its answer. The answer comes as soon as the component
/// returns, so this only bounds what a failed request leaves behind.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(30);
/// Offers waiting at most: each holds open files.
pub const MAX_WAITING: usize = 4096;

/// A byte range of one open object file, positioned at `offset` (reads go on from there). The
/// file was opened, and the range checked against its size, before any byte was sent: a delete
/// after that does not take the bytes away.
#[derive(Debug)]
pub struct FileExtent {
    pub file: File,
    pub offset: u64,
    pub length: u64,
}

/// What a token stands for.
#[derive(Debug)]
pub enum OfferedBody {
    /// Small bodies, read at once (a config blob, an index entry).
    Bytes(Bytes),
    /// The extents, one after another.
    Files(Vec<FileExtent>),
}

impl OfferedBody {
    pub fn length(&self) -> u64 {
        match self {
            OfferedBody::Bytes(bytes) => bytes.len() as u64,
            OfferedBody::Files(extents) => extents.iter().map(|e| e.length).sum(),
        }
    }
}

/// The bodies offered and not yet taken.
pub struct HostBodies {
    /// Whether the runner sends bodies at all (`--blob-bodies runner`); else the component
    /// streams them.
    pub enabled: bool,
    pending: Mutex<Pending>,
}

/// The offers by token, and their tokens in the order offered (some taken since), so that the
/// expired ones are found at the front without looking at the others.
#[derive(Default)]
struct Pending {
    bodies: HashMap<String, OfferedBody>,
    order: std::collections::VecDeque<(Instant, String)>,
}

impl HostBodies {
    pub fn new(enabled: bool) -> HostBodies {
        HostBodies { enabled, pending: Mutex::default() }
    }

    /// Hold `body` for the answer that will carry the returned token; `None` when too many
    /// offers wait already.
    pub fn offer(&self, body: OfferedBody) -> Result<Option<String>, String> {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(|e| format!("no randomness for a body token: {e}"))?;
        let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let mut pending = self.waiting_now();
        if pending.bodies.len() >= MAX_WAITING {
            return Ok(None);
        }
        pending.bodies.insert(token.clone(), body);
        pending.order.push_back((Instant::now(), token.clone()));
        Ok(Some(token))
    }

    /// The body `token` stands for, once; `None` for a token never offered, taken, or expired.
    pub fn take(&self, token: &str) -> Option<OfferedBody> {
        self.waiting_now().bodies.remove(token)
    }

    /// The offers, with those past [`TOKEN_LIFETIME`] dropped (and the taken ones at the front
    /// of the order forgotten).
    fn waiting_now(&self) -> std::sync::MutexGuard<'_, Pending> {
        let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        while let Some((offered, token)) = pending.order.front() {
            let expired = now.duration_since(*offered) >= TOKEN_LIFETIME;
            if !expired && pending.bodies.contains_key(token) {
                break;
            }
            let (_, token) = pending.order.pop_front().expect("a front");
            pending.bodies.remove(&token);
        }
        pending
    }

    /// How many offered bodies wait.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).bodies.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_taken_once() {
        let bodies = HostBodies::new(true);
        let token = bodies.offer(OfferedBody::Bytes(Bytes::from_static(b"abc"))).unwrap().unwrap();
        assert_eq!(token.len(), 32);
        assert!(matches!(bodies.take(&token), Some(OfferedBody::Bytes(b)) if b == "abc"));
        assert!(bodies.take(&token).is_none(), "a token is good for one answer");
        assert_eq!(bodies.waiting(), 0);
    }

    #[test]
    fn an_unknown_token_is_nothing() {
        let bodies = HostBodies::new(true);
        bodies.offer(OfferedBody::Bytes(Bytes::new())).unwrap();
        assert!(bodies.take("00000000000000000000000000000000").is_none());
        assert!(bodies.take("").is_none());
        assert_eq!(bodies.waiting(), 1);
    }

    #[test]
    fn offers_beyond_the_cap_are_declined() {
        let bodies = HostBodies::new(true);
        for _ in 0..MAX_WAITING {
            assert!(bodies.offer(OfferedBody::Bytes(Bytes::new())).unwrap().is_some());
        }
        assert!(bodies.offer(OfferedBody::Bytes(Bytes::new())).unwrap().is_none());
        assert_eq!(bodies.waiting(), MAX_WAITING);
    }

    #[test]
    fn tokens_differ() {
        let bodies = HostBodies::new(true);
        let a = bodies.offer(OfferedBody::Bytes(Bytes::new())).unwrap();
        let b = bodies.offer(OfferedBody::Bytes(Bytes::new())).unwrap();
        assert!(a.is_some() && b.is_some());
        assert_ne!(a, b);
    }
}
