//! Probes for orchestrators (Kubernetes `livenessProbe` / `readinessProbe`), unauthenticated and
//! cheap: `GET /healthz` answers 200 whenever an instance serves; `GET /readyz` answers 200 when
//! the key-value store and the blob store each answer a small read within [`READY_DEADLINE_MS`],
//! else 503. Which backend failed, and how, goes to the log only: the answer says nothing an
//! anonymous caller could use.

use crate::registry::store::{BlobStore, MetaStore, Outbound, Stores};
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::message::{Request, Response};
use futures::future::{Either, select};
use http::{Method, StatusCode};

/// How long each backend has to answer a readiness probe (a probe's own timeout is commonly
/// 1 to 5 s).
pub const READY_DEADLINE_MS: u64 = 2_000;

/// The key read (and never written) to see that the key-value store answers.
const PROBE_KEY: &str = "health/probe";
/// The prefix listed (it holds nothing) to see that the blob store answers.
const PROBE_PREFIX: &str = "health/";

pub fn serves(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

pub async fn handle<M: MetaStore, B: BlobStore, O: Outbound<B>, I>(
    stores: &Stores<M, B>,
    outbound: &O,
    req: &Request<I>,
) -> Result<Response<B::Outgoing>, RegistryError> {
    if req.method != Method::GET && req.method != Method::HEAD {
        return Err(RegistryError::new(ErrorCode::MethodNotAllowed, format!("{} takes GET or HEAD", req.path)));
    }
    let (status, word) = if req.path == "/healthz" {
        (StatusCode::OK, "ok")
    } else if ready(stores, outbound).await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    let response = Response::new(status).header(http::header::CACHE_CONTROL, "no-store");
    Ok(if req.method == Method::HEAD {
        response.empty()
    } else {
        response.json(format!("{{\"status\":\"{word}\"}}").into_bytes())
    })
}

/// Whether both stores answer in time; what failed is logged.
async fn ready<M: MetaStore, B: BlobStore, O: Outbound<B>>(stores: &Stores<M, B>, outbound: &O) -> bool {
    let meta = async { stores.meta.get(PROBE_KEY).await.map(drop).map_err(|e| e.to_string()) };
    let blobs = async { stores.blobs.list(PROBE_PREFIX, None, 1).await.map(drop).map_err(|e| e.to_string()) };
    let checks = [
        ("key-value store", within_deadline(outbound, Box::pin(meta)).await),
        ("blob store", within_deadline(outbound, Box::pin(blobs)).await),
    ];
    let mut ready = true;
    for (backend, outcome) in checks {
        if let Err(why) = outcome {
            stores.log(format_args!("readyz: the {backend} is not ready: {why}"));
            ready = false;
        }
    }
    ready
}

async fn within_deadline<B: BlobStore, O: Outbound<B>>(
    outbound: &O,
    check: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + '_>>,
) -> Result<(), String> {
    // The check is polled first: an answer at hand wins over a deadline that is also due.
    match select(check, Box::pin(outbound.pause(READY_DEADLINE_MS))).await {
        Either::Left((outcome, _)) => outcome,
        Either::Right(_) => Err(format!("no answer within {READY_DEADLINE_MS} ms")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::store::{NoOutbound, StoreError};
    use crate::testing::api::{Mem, error_code, send};
    use crate::testing::{MemBlobs, block_on, memory_stores};
    use crate::wire::message::Body;

    fn status_word(response: &Response<Vec<u8>>) -> String {
        let Body::Full(bytes) = &response.body else { panic!("no body") };
        serde_json::from_slice::<serde_json::Value>(bytes).unwrap()["status"].as_str().unwrap().to_owned()
    }

    /// Basic authentication on, with a policy that lets anonymous callers do nothing.
    fn locked_down() -> Mem {
        let mut stores = memory_stores();
        stores.config.auth.mode = crate::auth::config::Mode::Basic;
        stores.config.auth.users.insert("alice".into(), "$2y$04$x".into());
        stores
    }

    #[test]
    fn healthz_answers_200_to_anyone_and_takes_get_and_head_only() {
        let stores = locked_down();
        let r = send(&stores, Method::GET, "/healthz", vec![]);
        assert_eq!((r.status, status_word(&r).as_str()), (StatusCode::OK, "ok"));
        assert_eq!(r.headers[http::header::CACHE_CONTROL], "no-store");
        let head = send(&stores, Method::HEAD, "/healthz", vec![]);
        assert_eq!(head.status, StatusCode::OK);
        assert!(matches!(head.body, Body::Empty));
        let post = send(&stores, Method::POST, "/healthz", vec![]);
        assert_eq!((post.status, error_code(&post).as_str()), (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"));
        // The registry itself still asks for credentials.
        assert_eq!(send(&stores, Method::GET, "/v2/", vec![]).status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn readyz_answers_200_when_both_stores_answer() {
        let stores = locked_down();
        let r = send(&stores, Method::GET, "/readyz", vec![]);
        assert_eq!((r.status, status_word(&r).as_str()), (StatusCode::OK, "ready"));
    }

    #[test]
    fn readyz_answers_503_without_naming_the_backend_when_the_key_value_store_fails() {
        let stores = locked_down();
        stores.meta.fail_gets();
        let r = send(&stores, Method::GET, "/readyz", vec![]);
        assert_eq!((r.status, status_word(&r).as_str()), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"));
        let Body::Full(bytes) = &r.body else { panic!() };
        assert!(!String::from_utf8_lossy(bytes).contains("key-value"), "the log says which, not the answer");
        assert_eq!(send(&stores, Method::GET, "/healthz", vec![]).status, StatusCode::OK, "alive all the same");
    }

    /// A key-value store that never answers (a Redis behind a dead connection).
    struct Silent;

    impl MetaStore for Silent {
        async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
            std::future::pending().await
        }
        async fn set(&self, _: &str, _: &[u8]) -> Result<(), StoreError> {
            std::future::pending().await
        }
        async fn delete(&self, _: &str) -> Result<(), StoreError> {
            std::future::pending().await
        }
        async fn compare_and_swap(&self, _: &str, _: &[u8], _: &[u8]) -> Result<bool, StoreError> {
            std::future::pending().await
        }
        async fn increment(&self, _: &str, _: i64) -> Result<i64, StoreError> {
            std::future::pending().await
        }
    }

    #[test]
    fn readyz_answers_503_when_a_store_does_not_answer_within_the_deadline() {
        let stores = Stores {
            meta: Silent,
            blobs: MemBlobs::default(),
            random: crate::testing::counter_random,
            now: crate::testing::test_clock,
            config: Default::default(),
            request_id: crate::registry::store::RequestId::made([1; 16]),
            events: Default::default(),
        };
        // NoOutbound's pause is over at once: the deadline is due as soon as the check waits.
        let req = Request {
            method: Method::GET,
            path: "/readyz".into(),
            query: None,
            headers: Default::default(),
            body: (),
            origin: None,
        };
        let r = block_on(handle(&stores, &NoOutbound, &req)).unwrap();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
