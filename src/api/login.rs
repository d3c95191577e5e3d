//! Failed-login throttling around every password check (Basic credentials on a request, and the
//! token endpoint's password grants): refused with 429 before bcrypt runs once a user or a client
//! address has failed too often in the current window (`auth::throttle`).

use crate::auth::throttle::{self, Kind};
use crate::blobs::internal;
use crate::errcode::{ErrorCode, RegistryError};
use crate::message::Response;
use crate::store::{MetaStore, Stores};

/// Who is trying to log in, and from where.
pub struct Attempt {
    pub user: String,
    pub address: Option<String>,
}

impl Attempt {
    pub fn new<M, B>(stores: &Stores<M, B>, user: &str, headers: &http::HeaderMap) -> Attempt {
        Attempt {
            user: user.to_owned(),
            address: throttle::client_address(headers, stores.config.auth.trust_forwarded),
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

/// `Some(seconds to wait)` when the attempt must be refused without checking its password.
pub async fn refused<M: MetaStore, B>(stores: &Stores<M, B>, attempt: &Attempt) -> Result<Option<u64>, RegistryError> {
    let now = (stores.now)();
    let window = stores.config.auth.throttle.window_secs;
    for (kind, id, limit) in attempt.counters(stores) {
        let failures = match stores.meta.get(&throttle::key(kind, id, now, window)).await.map_err(internal)? {
            Some(value) => throttle::decode(&value),
            None => 0,
        };
        if failures >= limit {
            return Ok(Some(throttle::retry_after(now, window)));
        }
    }
    Ok(None)
}

/// Count a failed password check against the user and the address.
pub async fn failed<M: MetaStore, B>(stores: &Stores<M, B>, attempt: &Attempt) -> Result<(), RegistryError> {
    let now = (stores.now)();
    let window = stores.config.auth.throttle.window_secs;
    for (kind, id, _) in attempt.counters(stores) {
        stores.meta.increment(&throttle::key(kind, id, now, window), 1).await.map_err(internal)?;
        // The counter of two windows ago is no longer read: its owner clears it, so the store
        // keeps at most two counters per user or address that keeps failing.
        if let Some(old) = throttle::earlier_key(kind, id, now, window, 2) {
            stores.meta.delete(&old).await.map_err(internal)?;
        }
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
