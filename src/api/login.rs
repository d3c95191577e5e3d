//! Failed-login throttling around every password check (Basic credentials on a request, and the
//! token endpoint's password grants): refused with 429 before bcrypt runs once a user or a client
//! address has failed too often in the current window (`auth::throttle`).
//!
//! A check is counted as a failure BEFORE bcrypt runs (one atomic `increment`, then a comparison
//! of the new count), and the count is given back when the password was right: so concurrent
//! guesses, on any instances, cannot all pass a look taken before any of them was counted, and
//! no more than the limit of distinct wrong passwords is ever checked in a window. Concurrent
//! checks of the SAME password (a fleet of nodes logging in with one robot account) share one
//! count: the first holds it while it runs, under a short fingerprint of the password
//! (`throttle/checking/...`, keyed by the deployment's secrets, gone when the check ends); the
//! others learn nothing the first does not, and check without counting.

use crate::auth::throttle::{self, Kind};
use crate::registry::store::{MetaStore, Stores, internal};
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::message::Response;
use hmac::{KeyInit, Mac};
use sha2::Digest as _;
use std::cell::RefCell;

/// Concurrent checks of one password that share the first's count, at most: beyond, each counts
/// for itself, so many parallel checks of one wrong password cannot make bcrypt work unbounded.
const MAX_SHARING: i64 = 64;

/// Who is trying to log in, with which password, and from where.
pub struct Attempt {
    pub user: String,
    pub address: Option<String>,
    /// When it was made: its counters are those of this time's window, from its reservation to
    /// its end.
    at: u64,
    /// The key under which concurrent checks of the same user and password share one count.
    checking: String,
    /// What [`reserve`] did, for [`settle`].
    held: RefCell<Held>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Nothing,
    /// This attempt counted itself and holds the password's fingerprint.
    Counted,
}

impl Attempt {
    pub fn new<M, B>(stores: &Stores<M, B>, user: &str, password: &str, headers: &http::HeaderMap) -> Attempt {
        let key = stores.config.auth.derived_key(b"berth login fingerprint v1");
        let mut mac = <hmac::Hmac<sha2::Sha256>>::new_from_slice(&key).expect("any key length");
        mac.update(user.as_bytes());
        mac.update(b"\0");
        mac.update(password.as_bytes());
        // 32 bits: enough to tell concurrent checks apart, too few to test a password against.
        let fingerprint = hex::encode(&mac.finalize().into_bytes()[..4]);
        let user_key = hex::encode(&sha2::Sha256::digest(user.as_bytes())[..16]);
        Attempt {
            user: user.to_owned(),
            address: throttle::client_address(headers, stores.config.auth.trust_forwarded),
            at: (stores.now)(),
            checking: format!("throttle/checking/{user_key}/{fingerprint}"),
            held: RefCell::new(Held::Nothing),
        }
    }

    fn counters<M, B>(&self, stores: &Stores<M, B>) -> Vec<(Kind, &str, i64)> {
        let limits = stores.config.auth.throttle;
        let mut counters = vec![(Kind::User, self.user.as_str(), limits.per_user)];
        if let Some(address) = &self.address {
            counters.push((Kind::Address, address.as_str(), limits.per_address));
        }
        counters
    }
}

/// Before the password is checked: `Some(seconds to wait)` when the attempt must be refused
/// without checking it (the user or the address is at its limit). Otherwise the attempt is
/// counted as a failure (unless a check of the same password is running, whose count it shares)
/// until [`settle`] says how the check went.
pub async fn reserve<M: MetaStore, B>(stores: &Stores<M, B>, attempt: &Attempt) -> Result<Option<u64>, RegistryError> {
    let now = attempt.at;
    let window = stores.config.auth.throttle.window_secs;
    let counters = attempt.counters(stores);
    for &(kind, id, limit) in &counters {
        let failures = match stores.meta.get(&throttle::key(kind, id, now, window)).await.map_err(internal)? {
            Some(value) => crate::registry::store::counter_value(&value),
            None => 0,
        };
        if failures >= limit {
            return Ok(Some(throttle::retry_after(now, window)));
        }
    }
    let sharing = stores.meta.increment(&attempt.checking, 1).await.map_err(internal)?;
    if (2..=MAX_SHARING).contains(&sharing) {
        // The same password is being checked: its count stands for this one too.
        return Ok(None);
    }
    let mut counted = Vec::new();
    for (kind, id, limit) in counters {
        let key = throttle::key(kind, id, now, window);
        let count = stores.meta.increment(&key, 1).await.map_err(internal)?;
        counted.push(key);
        // The counter of two windows ago is no longer read: its owner clears it, so the store
        // keeps at most two counters per user or address that keeps trying.
        if let Some(old) = throttle::earlier_key(kind, id, now, window, 2) {
            stores.meta.delete(&old).await.map_err(internal)?;
        }
        if count > limit {
            // Refused: not a guess, so its count is given back.
            for key in &counted {
                stores.meta.increment(key, -1).await.map_err(internal)?;
            }
            stores.meta.delete(&attempt.checking).await.map_err(internal)?;
            return Ok(Some(throttle::retry_after(now, window)));
        }
    }
    *attempt.held.borrow_mut() = Held::Counted;
    Ok(None)
}

/// After the check (or a failure before it): a right password (`wrong` false) gives its count
/// back, a wrong one keeps it; the password's fingerprint goes either way.
pub async fn settle<M: MetaStore, B>(
    stores: &Stores<M, B>,
    attempt: &Attempt,
    wrong: bool,
) -> Result<(), RegistryError> {
    if *attempt.held.borrow() != Held::Counted {
        return Ok(());
    }
    *attempt.held.borrow_mut() = Held::Nothing;
    if !wrong {
        let window = stores.config.auth.throttle.window_secs;
        for (kind, id, _) in attempt.counters(stores) {
            stores.meta.increment(&throttle::key(kind, id, attempt.at, window), -1).await.map_err(internal)?;
        }
    }
    stores.meta.delete(&attempt.checking).await.map_err(internal)
}

/// The 429 of a throttled login.
pub fn too_many<S>(retry_after: u64) -> Response<S> {
    Response::error(&RegistryError::new(
        ErrorCode::TooManyRequests,
        format!("too many failed logins for this user or from this address: try again in {retry_after} s"),
    ))
    .header(http::header::RETRY_AFTER, retry_after.to_string())
}
