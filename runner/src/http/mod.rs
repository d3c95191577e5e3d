//! Serving HTTP in front of the component: connections and their limits ([`serve`],
//! [`limits`]), the request log ([`request_log`]) and the metrics listener ([`metrics`]).

pub mod limits;
pub mod metrics;
pub mod request_log;
pub mod serve;
