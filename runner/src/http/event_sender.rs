//! The event sender's clock: every second, while the `events` variable names endpoints, one
//! delivery step of the component (`POST /v2/_berth/events/deliver`, called in-process, never
//! through the listener), so that events recorded by requests whose own background delivery
//! failed (a receiver down) are sent with retries without waiting for the next request. The
//! component keeps every decision (which events, the lease, the backoff); this only ticks.

use crate::host::Handler;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::time::Duration;
use wasmtime_wasi_http::handler::ProxyHandler;

pub fn start(handler: ProxyHandler<Handler>, scheme: &'static str) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported = false;
        loop {
            ticks.tick().await;
            match tick(&handler, scheme).await {
                Ok(()) => reported = false,
                Err(why) if !reported => {
                    eprintln!("berth-runner: event delivery step failed: {why} (tried again every second)");
                    reported = true;
                }
                Err(_) => {}
            }
        }
    });
}

async fn tick(handler: &ProxyHandler<Handler>, scheme: &str) -> Result<(), String> {
    let body = http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync();
    let request = http::Request::post(format!("{scheme}://localhost/v2/_berth/events/deliver"))
        .header(crate::http::headers::COUNT_EVENTS, "1")
        .body(body)
        .map_err(|e| e.to_string())?;
    let response = handler.handle(crate::host::Admission::uncounted(), request).await.map_err(|e| format!("{e:?}"))?;
    if let Some(events) = response.headers().get(crate::http::headers::EVENTS) {
        crate::http::metrics::registry_events(events.to_str().unwrap_or_default());
    }
    let status = response.status();
    let _ = response.into_body().collect().await;
    if status.is_success() { Ok(()) } else { Err(format!("it answered {status}")) }
}
