//! Serving HTTP in front of the component: connections and their limits ([`serve`],
//! [`limits`]), HTTPS with certificates reloaded when they change ([`tls`]), the request log
//! ([`request_log`]), the metrics listener ([`metrics`]), and the blob bodies the runner sends
//! itself ([`host_body`]).

pub mod event_sender;
pub mod host_body;
pub mod limits;
pub mod metrics;
pub mod request_log;
pub mod serve;
pub mod tls;
pub mod tls_auto;
