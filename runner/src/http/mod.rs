//! Serving HTTP in front of the component: connections and their limits ([`serve`],
//! [`limits`]), HTTPS with certificates reloaded when they change ([`tls`]), the request log
//! ([`request_log`]), the metrics listener ([`metrics`]), the blob bodies the runner sends
//! itself ([`host_body`]), the answers it gives again without the component
//! ([`answer_cache`]), and the headers it speaks with the component ([`headers`]).

pub mod answer_cache;
pub mod event_sender;
pub mod headers;
pub mod host_body;
pub mod limits;
pub mod metrics;
pub mod request_log;
pub mod serve;
pub mod tls;
pub mod tls_auto;
