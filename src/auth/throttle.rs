//! Throttling of failed logins: where the counters live and what they decide, as plain
//! functions. The counting itself is `MetaStore::increment` (one atomic step in key-value, so it
//! holds across instances and no failure is lost under concurrent guessing); `api::login` does it.
//!
//! Fixed windows of `window_secs`: a counter per user and per client address and window, under
//! `throttle/<kind>/<hash>/<window>`. Once a counter reaches its limit, further logins of that
//! user or from that address are refused with 429 until the window ends, before any bcrypt is
//! computed. (A burst can reach twice the limit across a window boundary; that bounds guessing
//! just as well and needs one counter, not a log of attempts.)

use sha2::{Digest as _, Sha256};

/// What a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Address,
}

/// The key of the counter of `kind` `id` in the window holding `now`. Names and addresses are
/// hashed: keys stay short and say nothing about who tried.
pub fn key(kind: Kind, id: &str, now: u64, window_secs: u64) -> String {
    counter_key(kind, id, window(now, window_secs))
}

/// The key of the same counter `windows_back` windows earlier (to clean up after itself).
pub fn earlier_key(kind: Kind, id: &str, now: u64, window_secs: u64, windows_back: u64) -> Option<String> {
    window(now, window_secs).checked_sub(windows_back).map(|w| counter_key(kind, id, w))
}

fn counter_key(kind: Kind, id: &str, window: u64) -> String {
    let kind = match kind {
        Kind::User => "user",
        Kind::Address => "address",
    };
    let hash = Sha256::digest(id.as_bytes());
    format!("throttle/{kind}/{}/{window}", hex::encode(&hash[..16]))
}

fn window(now: u64, window_secs: u64) -> u64 {
    now / window_secs.max(1)
}

/// Seconds until the window holding `now` ends (the `Retry-After` of a refusal).
pub fn retry_after(now: u64, window_secs: u64) -> u64 {
    let window_secs = window_secs.max(1);
    window_secs - now % window_secs
}

/// The client address of a request, as a throttling key: the last `X-Forwarded-For` entry when
/// forwarded headers are trusted (the one the proxy in front appended: entries before it are
/// whatever the client sent), else the address the host saw (`spin-client-addr`, which Spin and
/// berth-runner set from the connection, replacing any the client sent), without its port. An
/// IPv6 address counts by its /64 (one subscriber's prefix, whose addresses it rotates freely).
pub fn client_address(headers: &http::HeaderMap, trust_forwarded: bool) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let forwarded = trust_forwarded
        .then(|| header("x-forwarded-for").and_then(|v| v.rsplit(',').next()).map(str::trim))
        .flatten()
        .filter(|v| !v.is_empty());
    let raw = forwarded.or_else(|| header("spin-client-addr"))?;
    let ip = match raw.parse::<std::net::SocketAddr>() {
        Ok(socket) => Some(socket.ip()),
        Err(_) => raw.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().ok(),
    };
    let address = match ip.map(|ip| ip.to_canonical()) {
        Some(std::net::IpAddr::V6(v6)) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(prefix))
        }
        Some(v4) => v4.to_string(),
        None => raw.to_owned(),
    };
    (!address.is_empty() && address.len() <= 64).then_some(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn counters_are_per_kind_id_and_window() {
        let a = key(Kind::User, "alice", 1000, 300);
        assert_eq!(a, key(Kind::User, "alice", 1199, 300), "same window");
        assert_ne!(a, key(Kind::User, "alice", 1200, 300), "next window");
        assert_ne!(a, key(Kind::Address, "alice", 1000, 300));
        assert_ne!(a, key(Kind::User, "bob", 1000, 300));
        assert!(!a.contains("alice"));
        assert_eq!(earlier_key(Kind::User, "alice", 1500, 300, 2), Some(key(Kind::User, "alice", 900, 300)));
        assert_eq!(earlier_key(Kind::User, "alice", 100, 300, 2), None);
    }

    #[test]
    fn retry_after_is_the_rest_of_the_window() {
        assert_eq!(retry_after(1000, 300), 200);
        assert_eq!(retry_after(1200, 300), 300);
    }

    #[test]
    fn the_client_address_is_the_hosts_unless_forwarded_headers_are_trusted() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(client_address(&headers, false), None);
        headers.insert("spin-client-addr", HeaderValue::from_static("127.0.0.1:5123"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9, 10.0.0.1"));
        assert_eq!(client_address(&headers, false).as_deref(), Some("127.0.0.1"));
        assert_eq!(client_address(&headers, true).as_deref(), Some("10.0.0.1"), "the proxy's entry, the last");
        headers.insert("spin-client-addr", HeaderValue::from_static("[::1]:80"));
        assert_eq!(client_address(&headers, false).as_deref(), Some("::/64"));
    }

    #[test]
    fn a_forged_forwarded_entry_does_not_change_the_address_counted() {
        let mut headers = http::HeaderMap::new();
        // The client sent its own X-Forwarded-For; the proxy appended the address it saw.
        for forged in ["1.2.3.4", "5.6.7.8, 9.9.9.9", "junk"] {
            let value = format!("{forged}, 198.51.100.7");
            headers.insert("x-forwarded-for", HeaderValue::from_str(&value).unwrap());
            assert_eq!(client_address(&headers, true).as_deref(), Some("198.51.100.7"), "{value}");
        }
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_prefix() {
        let mut headers = http::HeaderMap::new();
        for address in ["[2001:db8:1:2::1]:443", "[2001:db8:1:2:ffff:ffff:ffff:ffff]:80", "2001:db8:1:2::99"] {
            headers.insert("spin-client-addr", HeaderValue::from_str(address).unwrap());
            assert_eq!(client_address(&headers, false).as_deref(), Some("2001:db8:1:2::/64"), "{address}");
        }
        headers.insert("spin-client-addr", HeaderValue::from_static("[2001:db8:1:3::1]:443"));
        assert_eq!(client_address(&headers, false).as_deref(), Some("2001:db8:1:3::/64"));
        headers.insert("spin-client-addr", HeaderValue::from_static("[::ffff:192.0.2.1]:443"));
        assert_eq!(client_address(&headers, false).as_deref(), Some("192.0.2.1"), "IPv4 mapped into IPv6");
    }
}
