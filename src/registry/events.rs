//! Events: notifications of what happens in the registry (pushes, pulls, deletes, garbage
//! collection's removals, mirror fetches) to the endpoints of the `events` variable
//! (`crate::config::events`), at least once, in order per endpoint.
//!
//! **The outbox.** An event is recorded before the action is acknowledged: the request takes the
//! endpoint's next number (`increment` of `events/<endpoint>/next`) and creates the object
//! `events/<endpoint>/<number>` holding the event, exclusively. A request that fails to record
//! fails (503, and the client retries: every action here can be repeated), so no acknowledged
//! action goes without its event.
//!
//! **The sender** ([`deliver`]) is a bounded step that any instance may run (after a request that
//! recorded an event, as background work once the answer is on its way; every second in
//! berth-runner; `POST /v2/_berth/events/deliver` from anywhere else). It takes the endpoint's
//! lease (a compare-and-swap of `events/<endpoint>/state`), sends the events after the last
//! delivered in order, in batches, and saves how far it got after each: a crash resends at most
//! one batch (receivers dedupe by the event's `id`). A receiver that fails or is slow makes it
//! back off (1 s, 2 s, 4 s ... 60 s) and never touches a push: pushes only write the outbox. When
//! more than the endpoint's `outbox` events wait, the oldest are dropped and counted.
//!
//! **Gaps.** A number whose object does not exist yet is a request between its number and its
//! write, or one that died there. The sender waits for it up to [`GAP_WAIT_SECS`], then gives the
//! number up by creating its object itself (a tombstone): exactly one of the two creates
//! succeeds, so either the event is there to send, or the slow request sees its number taken,
//! takes another and records again. Nothing acknowledged is skipped.

use crate::config::events::{Action, Endpoint, Format};
use crate::registry::keys;
use crate::registry::store::{BlobStore, MetaStore, OutRequest, Outbound, StoreError, Stores, counter_value, internal};
use crate::wire::errcode::RegistryError;
use crate::wire::name::RepoName;
use serde::{Deserialize, Serialize};

type Result<T> = std::result::Result<T, RegistryError>;

/// How long the sender waits for a number whose event is not written yet.
pub const GAP_WAIT_SECS: u64 = 30;
/// Events sent in one request (Distribution's envelope) at most.
const BATCH: usize = 32;
/// A sender holds an endpoint this long (renewed after each batch): far longer than a step can
/// take. A step starts no request after [`STEP_SECS`], and one request takes at most the host's
/// connect timeout (10 s) and [`REQUEST_TIMEOUT_SECS`] for the answer's head (its body is not
/// read), so a step ends within 25 s.
const LEASE_SECS: u64 = 90;
/// A step starts no request after this long (the next one goes on).
const STEP_SECS: u64 = 5;
/// Seconds to wait for an endpoint's first byte, or between two.
const REQUEST_TIMEOUT_SECS: u64 = 10;
/// The longest pause after failures.
const MAX_BACKOFF_SECS: u64 = 60;
/// Delivered events' objects deleted by one step at most.
const PRUNE: u64 = 1000;
/// What a sender writes in place of a number it gave up.
const TOMBSTONE: &[u8] = b"skipped";

/// One event, as the outbox keeps it (each endpoint's format is made when it is sent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Random: receivers dedupe deliveries by it.
    pub id: String,
    /// Seconds since the epoch.
    pub time: u64,
    pub action: String,
    /// Empty for a blob garbage collection removed (blobs belong to no repository).
    pub repository: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Who did it: the user, or `retention`, `gc`, `mirror`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    pub request_id: String,
    /// `<scheme>://<authority>` the request was sent to (the target's URL is made from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

impl Event {
    /// An event of this request, the rest unset.
    pub fn new<M, B>(stores: &Stores<M, B>, action: Action, repository: &str) -> Event {
        Event {
            id: hex::encode((stores.random)()),
            time: (stores.now)(),
            action: action.as_str().to_owned(),
            repository: repository.to_owned(),
            digest: None,
            media_type: None,
            size: None,
            tag: None,
            actor: None,
            request_id: stores.request_id.as_str().to_owned(),
            origin: None,
            addr: None,
            method: None,
            user_agent: None,
        }
    }
}

/// Put `event` in the outbox of every endpoint that wants it. Called before the action is
/// acknowledged: an error fails the request.
pub async fn record<M: MetaStore, B: BlobStore>(stores: &Stores<M, B>, action: Action, event: &Event) -> Result<()> {
    let repository = RepoName::parse(&event.repository).ok();
    let wanted = |e: &&Endpoint| match &repository {
        Some(name) => e.wants(action, name),
        // Garbage collection's blobs belong to no repository (and may be any team's): only
        // endpoints for every repository get them.
        None => e.actions.contains(&action) && e.repositories.iter().any(|g| g == "*"),
    };
    let json = serde_json::to_vec(event).expect("events serialize");
    for endpoint in stores.config.events.iter().filter(wanted) {
        let mut recorded = false;
        for _ in 0..8 {
            let n = stores.meta.increment(&keys::event_counter(&endpoint.name), 1).await.map_err(internal)?;
            match stores.blobs.write_bytes(&keys::event(&endpoint.name, n as u64), json.clone()).await {
                Ok(()) => {
                    recorded = true;
                    break;
                }
                // The sender gave this number up (this request took too long to write it).
                Err(StoreError::AlreadyExists) => continue,
                Err(err) => return Err(internal(err)),
            }
        }
        if !recorded {
            return Err(internal(StoreError::Unavailable(format!("the outbox of event endpoint {}", endpoint.name))));
        }
        stores.count("events_recorded", 1);
    }
    Ok(())
}

/// The number of an endpoint's newest event.
async fn newest<M: MetaStore, B>(stores: &Stores<M, B>, endpoint: &str) -> Result<u64> {
    let counter = stores.meta.get(&keys::event_counter(endpoint)).await.map_err(internal)?;
    Ok(counter.map_or(0, |bytes| counter_value(&bytes).max(0) as u64))
}

/// An endpoint's outbox, for operators (`GET /v2/_berth/events`): its newest event's number, how
/// far delivery is, what was dropped or given up, and its failures since its last success.
pub async fn outbox<M: MetaStore, B>(stores: &Stores<M, B>, endpoint: &str) -> Result<serde_json::Value> {
    let state = stores.meta.get(&keys::event_state(endpoint)).await.map_err(internal)?;
    let state: State = state.and_then(|s| serde_json::from_slice(&s).ok()).unwrap_or_default();
    Ok(serde_json::json!({
        "name": endpoint,
        "newest": newest(stores, endpoint).await?,
        "delivered": state.delivered,
        "dropped": state.dropped,
        "skipped": state.skipped,
        "failures": state.failures,
        "retryAt": state.retry_at,
    }))
}

/// How far an endpoint's delivery is (`events/<endpoint>/state`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct State {
    /// Every event up to this number is sent (or dropped, or given up).
    delivered: u64,
    /// Objects up to this number are deleted.
    pruned: u64,
    /// Failures since the last success, and no attempt before `retry_at`.
    failures: u32,
    retry_at: u64,
    /// Events dropped because the outbox was full; numbers given up.
    dropped: u64,
    skipped: u64,
    /// Since when the next number has had no event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gap_since: Option<u64>,
    /// The sender holding the endpoint until `lease` (its nonce makes its writes unique).
    lease: u64,
    holder: String,
}

/// What one step did for one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Delivered {
    pub endpoint: String,
    /// Events sent and acknowledged by the endpoint.
    pub sent: u64,
    /// Events waiting after the step.
    pub waiting: u64,
    /// Events dropped by this step (the outbox was full).
    pub dropped: u64,
    /// Why the endpoint failed, if it did (the step backs off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// Another sender holds the endpoint, or it is backing off: nothing was tried.
    pub idle: bool,
}

/// One bounded step of delivery for every endpoint.
pub async fn deliver<M: MetaStore, B: BlobStore, O: Outbound<B>>(
    stores: &Stores<M, B>,
    outbound: &O,
) -> Result<Vec<Delivered>> {
    let mut all = Vec::new();
    for endpoint in stores.config.events.iter() {
        // One endpoint's store error does not hold up the others (its lease runs out).
        match (Sender { stores, outbound, endpoint }.step().await) {
            Ok(done) => all.push(done),
            Err(err) => {
                let why = err.detail.clone().unwrap_or_else(|| err.code.message().to_owned());
                stores.log(format_args!("events: endpoint {}: delivery step failed: {why}", endpoint.name));
                all.push(Delivered { endpoint: endpoint.name.clone(), failed: Some(why), ..Default::default() });
            }
        }
    }
    Ok(all)
}

struct Sender<'a, M, B, O> {
    stores: &'a Stores<M, B>,
    outbound: &'a O,
    endpoint: &'a Endpoint,
}

/// What reading the next events found.
enum Next {
    /// Events to send (a tombstone is `None`), in order, with their numbers.
    Batch(Vec<(u64, Option<Event>)>),
    /// The next number has no event yet: wait.
    Gap,
}

impl<M: MetaStore, B: BlobStore, O: Outbound<B>> Sender<'_, M, B, O> {
    async fn step(&self) -> Result<Delivered> {
        let (stores, name) = (self.stores, self.endpoint.name.as_str());
        let mut done = Delivered { endpoint: name.to_owned(), ..Default::default() };
        let key = keys::event_state(name);
        let now = (stores.now)();
        let (mut state, bytes) = match stores.meta.get(&key).await.map_err(internal)? {
            Some(bytes) => (serde_json::from_slice(&bytes).unwrap_or_default(), bytes),
            None => {
                // Every instance writes the same first value: a race between two is harmless.
                let first = serde_json::to_vec(&State::default()).expect("state serializes");
                stores.meta.set(&key, &first).await.map_err(internal)?;
                (State::default(), first)
            }
        };
        let head = newest(stores, name).await?;
        done.waiting = head.saturating_sub(state.delivered);
        if state.lease > now || (state.retry_at > now && done.waiting <= self.endpoint.outbox) {
            done.idle = true;
            return Ok(done);
        }
        state.lease = now + LEASE_SECS;
        state.holder = hex::encode((stores.random)());
        let mut held = serde_json::to_vec(&state).expect("state serializes");
        if !stores.meta.compare_and_swap(&key, &bytes, &held).await.map_err(internal)? {
            done.idle = true;
            return Ok(done);
        }
        if head.saturating_sub(state.delivered) > self.endpoint.outbox {
            let dropped = head - self.endpoint.outbox - state.delivered;
            stores.log(format_args!(
                "events: endpoint {name}: outbox full ({} events): dropped the {dropped} oldest",
                self.endpoint.outbox
            ));
            stores.count("events_dropped", dropped);
            state.delivered += dropped;
            state.dropped += dropped;
            state.gap_since = None;
            done.dropped = dropped;
        }
        while state.retry_at <= (stores.now)() && state.delivered < head && (stores.now)() < now + STEP_SECS {
            let batch = match self.next(&mut state, head).await? {
                Next::Batch(batch) => batch,
                Next::Gap => break,
            };
            let events: Vec<&Event> = batch.iter().filter_map(|(_, e)| e.as_ref()).collect();
            let (sent, failure) = self.send(&events, now + STEP_SECS).await;
            // The numbers up to the last event sent (and the tombstones before the next).
            let mut through = state.delivered;
            let mut left = sent;
            for (n, event) in &batch {
                if event.is_some() {
                    if left == 0 {
                        break;
                    }
                    left -= 1;
                }
                through = *n;
            }
            state.delivered = through;
            done.sent += sent as u64;
            stores.count("events_delivered", sent as u64);
            if let Some(why) = failure {
                state.failures += 1;
                let pause = (1u64 << (state.failures - 1).min(6)).min(MAX_BACKOFF_SECS);
                state.retry_at = (stores.now)() + pause;
                stores.log(format_args!("events: endpoint {name}: {why}; trying again in {pause} s"));
                stores.count("events_failed", 1);
                done.failed = Some(why);
                break;
            }
            state.failures = 0;
            state.retry_at = 0;
            // Saved after each batch: a sender that dies resends one batch at most.
            state.lease = (stores.now)() + LEASE_SECS;
            let saved = serde_json::to_vec(&state).expect("state serializes");
            if !stores.meta.compare_and_swap(&key, &held, &saved).await.map_err(internal)? {
                return Ok(done); // the lease ran out and another sender took over
            }
            held = saved;
        }
        // Delivered events' objects go (a few at a time), then the lease is given back. A
        // tombstone stays: its number's request may still live, and must find it taken.
        let upto = state.delivered.min(state.pruned + PRUNE);
        for n in state.pruned + 1..=upto {
            let object = keys::event(name, n);
            if stores.blobs.size(&object).await.is_ok_and(|size| size == TOMBSTONE.len() as u64) {
                continue;
            }
            match stores.blobs.delete(&object).await {
                Ok(()) | Err(StoreError::NotFound) => {}
                Err(err) => return Err(internal(err)),
            }
        }
        state.pruned = upto;
        state.lease = 0;
        done.waiting = head.saturating_sub(state.delivered);
        let released = serde_json::to_vec(&state).expect("state serializes");
        stores.meta.compare_and_swap(&key, &held, &released).await.map_err(internal)?;
        Ok(done)
    }

    /// The events after `state.delivered`, up to a batch; numbers given up on the way are
    /// marked delivered.
    async fn next(&self, state: &mut State, head: u64) -> Result<Next> {
        let (stores, name) = (self.stores, self.endpoint.name.as_str());
        let mut batch = Vec::new();
        let mut n = state.delivered + 1;
        while n <= head && batch.len() < BATCH {
            match stores.blobs.read_bytes(&keys::event(name, n)).await {
                Ok(bytes) if bytes == TOMBSTONE => batch.push((n, None)),
                Ok(bytes) => match serde_json::from_slice::<Event>(&bytes) {
                    Ok(event) => batch.push((n, Some(event))),
                    Err(_) => {
                        stores.log(format_args!("events: endpoint {name}: event {n} does not parse: skipped"));
                        batch.push((n, None));
                    }
                },
                Err(StoreError::NotFound) if !batch.is_empty() => break,
                Err(StoreError::NotFound) => {
                    let since = *state.gap_since.get_or_insert((stores.now)());
                    if (stores.now)().saturating_sub(since) < GAP_WAIT_SECS {
                        return Ok(Next::Gap);
                    }
                    // Given up by creating it: the request that holds the number (if it lives)
                    // then finds it taken and records its event again under another.
                    match stores.blobs.write_bytes(&keys::event(name, n), TOMBSTONE.to_vec()).await {
                        Ok(()) => {
                            stores.log(format_args!("events: endpoint {name}: event {n} was never written: skipped"));
                            state.skipped += 1;
                            batch.push((n, None));
                        }
                        Err(StoreError::AlreadyExists) => continue, // written just now: read it
                        Err(err) => return Err(internal(err)),
                    }
                }
                Err(err) => return Err(internal(err)),
            }
            state.gap_since = None;
            n += 1;
        }
        Ok(Next::Batch(batch))
    }

    /// Send `events` in the endpoint's format: how many it took, in order, and why it stopped
    /// taking them (none when the step's time, `until`, ended it).
    async fn send(&self, events: &[&Event], until: u64) -> (usize, Option<String>) {
        if events.is_empty() {
            return (0, None);
        }
        match self.endpoint.format {
            Format::Distribution => {
                let envelope =
                    serde_json::json!({ "events": events.iter().map(|e| distribution(e)).collect::<Vec<_>>() });
                match self.post("application/vnd.docker.distribution.events.v1+json", &envelope).await {
                    Ok(()) => (events.len(), None),
                    Err(why) => (0, Some(why)),
                }
            }
            Format::CloudEvents => {
                for (i, event) in events.iter().enumerate() {
                    if i > 0 && (self.stores.now)() >= until {
                        return (i, None);
                    }
                    if let Err(why) = self.post("application/cloudevents+json", &cloud_event(event)).await {
                        return (i, Some(why));
                    }
                }
                (events.len(), None)
            }
        }
    }

    async fn post(&self, content_type: &str, body: &serde_json::Value) -> std::result::Result<(), String> {
        let body = serde_json::to_vec(body).expect("json");
        // A length, not a chunked body: simple receivers read exactly Content-Length bytes.
        let mut headers = vec![
            (http::header::CONTENT_TYPE, content_type.to_owned()),
            (http::header::CONTENT_LENGTH, body.len().to_string()),
        ];
        for (name, value) in &self.endpoint.headers {
            if let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) {
                headers.push((name, value.clone()));
            }
        }
        let request = OutRequest {
            method: http::Method::POST,
            url: self.endpoint.url.clone(),
            headers,
            body: Some(body),
            timeout_secs: Some(REQUEST_TIMEOUT_SECS),
        };
        let response = self.outbound.send(request).await.map_err(|e| format!("not reached: {e}"))?;
        // The answer's body is not read: a receiver that trickles it would hold the step (and
        // the lease) for as long as it liked.
        let status = response.status;
        drop(response);
        if (200..300).contains(&status) { Ok(()) } else { Err(format!("answered {status}")) }
    }
}

/// An event in CNCF Distribution's notification format (`notifications.Event`).
fn distribution(event: &Event) -> serde_json::Value {
    let url = match (&event.origin, &event.digest) {
        (Some(origin), Some(digest)) if !event.repository.is_empty() => {
            let kind = if event.media_type.as_deref().is_some_and(is_manifest) { "manifests" } else { "blobs" };
            Some(format!("{origin}/v2/{}/{kind}/{digest}", event.repository))
        }
        _ => None,
    };
    serde_json::json!({
        "id": event.id,
        "timestamp": crate::auth::issue::rfc3339(event.time),
        "action": event.action,
        "target": {
            "mediaType": event.media_type,
            "size": event.size,
            "length": event.size,
            "digest": event.digest,
            "repository": event.repository,
            "url": url,
            "tag": event.tag,
        },
        "request": {
            "id": event.request_id,
            "addr": event.addr,
            "host": event.origin.as_deref().and_then(|o| o.split_once("://")).map(|(_, host)| host),
            "method": event.method,
            "useragent": event.user_agent,
        },
        "actor": { "name": event.actor },
        "source": { "addr": event.origin.as_deref().and_then(|o| o.split_once("://")).map(|(_, host)| host) },
    })
}

fn is_manifest(media_type: &str) -> bool {
    media_type.contains("manifest") || media_type.contains("image.index")
}

/// An event as a CloudEvent 1.0 (structured mode): `type` is `io.berth.registry.<action>`.
fn cloud_event(event: &Event) -> serde_json::Value {
    let subject = match &event.tag {
        Some(tag) => format!("{}:{tag}", event.repository),
        None => match &event.digest {
            Some(digest) if !event.repository.is_empty() => format!("{}@{digest}", event.repository),
            Some(digest) => digest.clone(),
            None => event.repository.clone(),
        },
    };
    let source = match &event.origin {
        Some(origin) => format!("{origin}/v2/{}", event.repository),
        None => format!("/v2/{}", event.repository),
    };
    serde_json::json!({
        "specversion": "1.0",
        "id": event.id,
        "source": source,
        "type": format!("io.berth.registry.{}", event.action),
        "time": crate::auth::issue::rfc3339(event.time),
        "subject": subject,
        "datacontenttype": "application/json",
        "data": {
            "repository": event.repository,
            "digest": event.digest,
            "mediaType": event.media_type,
            "size": event.size,
            "tag": event.tag,
            "actor": event.actor,
            "requestId": event.request_id,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::events::Events;
    use crate::registry::store::OutResponse;
    use crate::testing::{MemBlobs, advance_clock, block_on, memory_stores};
    use std::cell::RefCell;

    /// An endpoint that answers each request with the next status of `answers` (200 once they
    /// run out), and keeps what it took.
    #[derive(Default)]
    struct Endpoint {
        answers: RefCell<Vec<u16>>,
        taken: RefCell<Vec<serde_json::Value>>,
    }

    impl Outbound<MemBlobs> for Endpoint {
        type Body = ();
        type Verdict = ();

        async fn send(&self, request: OutRequest) -> std::result::Result<OutResponse<()>, StoreError> {
            let status = if self.answers.borrow().is_empty() { 200 } else { self.answers.borrow_mut().remove(0) };
            if status == 200 {
                self.taken.borrow_mut().push(serde_json::from_slice(&request.body.unwrap()).unwrap());
            }
            Ok(OutResponse { status, headers: http::HeaderMap::new(), body: () })
        }

        async fn read(&self, _: (), _: usize) -> std::result::Result<Option<Vec<u8>>, StoreError> {
            Ok(Some(Vec::new()))
        }

        fn relay(&self, _: ()) -> (Vec<u8>, Vec<u8>, ()) {
            (Vec::new(), Vec::new(), ())
        }

        fn settle(&self, _: (), _: bool) {}

        async fn pause(&self, _: u64) {}
    }

    impl Endpoint {
        /// The tags of the events taken, in order (a resend shows twice).
        fn tags(&self) -> Vec<String> {
            let mut tags = Vec::new();
            for body in self.taken.borrow().iter() {
                let events =
                    body.get("events").and_then(|e| e.as_array().cloned()).unwrap_or_else(|| vec![body.clone()]);
                for event in events {
                    let tag = event["target"]["tag"].as_str().or(event["data"]["tag"].as_str()).unwrap().to_owned();
                    tags.push(tag);
                }
            }
            tags
        }
    }

    fn stores_with(events: &str) -> crate::testing::api::Mem {
        let mut stores = memory_stores();
        stores.config.events = Events::parse(events).unwrap();
        stores
    }

    fn push_event(stores: &crate::testing::api::Mem, tag: &str) {
        let mut event = Event::new(stores, Action::Push, "r");
        event.tag = Some(tag.to_owned());
        block_on(record(stores, Action::Push, &event)).unwrap();
    }

    #[test]
    fn a_number_never_written_is_waited_for_then_given_up_and_its_writer_finds_it_taken() {
        let stores = stores_with("hook http://receiver.test/");
        let endpoint = Endpoint::default();
        // A request took number 1 and has not written its event (slow, or dead).
        assert_eq!(block_on(stores.meta.increment(&keys::event_counter("hook"), 1)).unwrap(), 1);
        push_event(&stores, "second");
        let step = block_on(deliver(&stores, &endpoint)).unwrap();
        assert_eq!((step[0].sent, step[0].waiting), (0, 2), "the gap holds back what follows it");
        advance_clock(GAP_WAIT_SECS + 1);
        let step = block_on(deliver(&stores, &endpoint)).unwrap();
        assert_eq!(step[0].sent, 1);
        assert_eq!(endpoint.tags(), ["second"]);
        // The slow request's create now fails: it records again under a new number.
        let late = block_on(stores.blobs.write_bytes(&keys::event("hook", 1), b"{}".to_vec()));
        assert!(matches!(late, Err(StoreError::AlreadyExists)), "{late:?}");
        push_event(&stores, "first, again");
        block_on(deliver(&stores, &endpoint)).unwrap();
        assert_eq!(endpoint.tags(), ["second", "first, again"]);
    }

    #[test]
    fn a_failed_request_backs_off_and_the_next_step_sends_from_where_it_stopped_in_order() {
        let stores = stores_with("hook http://receiver.test/ format=cloudevents");
        let endpoint = Endpoint { answers: RefCell::new(vec![200, 200, 503]), ..Default::default() };
        for tag in ["a", "b", "c", "d"] {
            push_event(&stores, tag);
        }
        let step = block_on(deliver(&stores, &endpoint)).unwrap();
        assert_eq!(step[0].sent, 2);
        assert_eq!(step[0].failed.as_deref(), Some("answered 503"));
        let idle = block_on(deliver(&stores, &endpoint)).unwrap();
        assert!(idle[0].idle, "backing off");
        advance_clock(1);
        block_on(deliver(&stores, &endpoint)).unwrap();
        assert_eq!(endpoint.tags(), ["a", "b", "c", "d"]);
    }

    #[test]
    fn a_sender_holding_the_lease_keeps_others_out_until_it_runs_out() {
        let stores = stores_with("hook http://receiver.test/");
        let endpoint = Endpoint::default();
        push_event(&stores, "a");
        // Another instance took the lease and died.
        let state = State { lease: (stores.now)() + LEASE_SECS, holder: "other".into(), ..Default::default() };
        block_on(stores.meta.set(&keys::event_state("hook"), &serde_json::to_vec(&state).unwrap())).unwrap();
        assert!(block_on(deliver(&stores, &endpoint)).unwrap()[0].idle);
        assert!(endpoint.tags().is_empty());
        advance_clock(LEASE_SECS);
        block_on(deliver(&stores, &endpoint)).unwrap();
        assert_eq!(endpoint.tags(), ["a"]);
    }

    #[test]
    fn garbage_collections_events_go_only_to_endpoints_for_every_repository() {
        let stores = stores_with("all http://a.test/ actions=gc; team http://t.test/ actions=gc repositories=team/*");
        let event = Event::new(&stores, Action::Gc, "");
        block_on(record(&stores, Action::Gc, &event)).unwrap();
        let newest =
            |name: &str| block_on(stores.meta.get(&keys::event_counter(name))).unwrap().map(|c| counter_value(&c));
        assert_eq!((newest("all"), newest("team")), (Some(1), None));
    }
}
