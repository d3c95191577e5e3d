//! Failed-login throttling around every password check (Basic credentials on a request, and the
//! token endpoint's password grants): refused with 429 before bcrypt runs once a user or a client
//! address has failed too often in the current window (`auth::throttle`). A check counts as a
//! failure while it runs, and is given back when the password was right.

use crate::auth::throttle::{self, Kind};
use crate::blobs::internal;
use crate::errcode::{ErrorCode, RegistryError};
use crate::message::Response;
use crate::store::{MetaStore, Stores};

/// Who is trying to log in, and from where.
pub struct Attempt {
    pub user: String,
    pub address: Option<String>,
    /// When it was made: its counters are those of this time's window, from its reservation to
    /// its give-back.
    at: u64,
}

impl Attempt {
    pub fn new<M, B>(stores: &Stores<M, B>, user: &str, headers: &http::HeaderMap) -> Attempt {
        Attempt {
            user: user.to_owned(),
            address: throttle::client_address(headers, stores.config.auth.trust_forwarded),
            at: (stores.now)(),
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

/// Count the attempt as a failure of the user and of the address BEFORE its password is
/// checked, by one atomic increment per counter, then compare: concurrent guesses, on any
/// instances, cannot all pass a look taken before any of them was counted. `Some(seconds to
/// wait)` when a counter is over its limit: the attempt is refused without checking its password
/// (and its count is given back: a refusal is not a guess). Otherwise the count stands until
/// [`give_back`] says the password was right.
pub async fn reserve<M: MetaStore, B>(stores: &Stores<M, B>, attempt: &Attempt) -> Result<Option<u64>, RegistryError> {
    let now = attempt.at;
    let window = stores.config.auth.throttle.window_secs;
    let mut counted = Vec::new();
    for (kind, id, limit) in attempt.counters(stores) {
        let key = throttle::key(kind, id, now, window);
        let count = stores.meta.increment(&key, 1).await.map_err(internal)?;
        counted.push(key);
        // The counter of two windows ago is no longer read: its owner clears it, so the store
        // keeps at most two counters per user or address that keeps trying.
        if let Some(old) = throttle::earlier_key(kind, id, now, window, 2) {
            stores.meta.delete(&old).await.map_err(internal)?;
        }
        if count > limit {
            for key in &counted {
                stores.meta.increment(key, -1).await.map_err(internal)?;
            }
            return Ok(Some(throttle::retry_after(now, window)));
        }
    }
    Ok(None)
}

/// The password was right (or the request failed before it was checked): the attempt's
/// reservation is given back.
pub async fn give_back<M: MetaStore, B>(stores: &Stores<M, B>, attempt: &Attempt) -> Result<(), RegistryError> {
    let now = attempt.at;
    let window = stores.config.auth.throttle.window_secs;
    for (kind, id, _) in attempt.counters(stores) {
        stores.meta.increment(&throttle::key(kind, id, now, window), -1).await.map_err(internal)?;
    }
    Ok(())
}

/// The 429 of a throttled login.
pub fn too_many<S>(retry_after: u64) -> Response<S> {
    Response::error(&RegistryError::new(
        ErrorCode::TooManyRequests,
        format!("too many failed logins for this user or from this address: try again in {retry_after} s"),
    ))
    .header(http::header::RETRY_AFTER, retry_after.to_string())
}
