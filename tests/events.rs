//! Events (issue 25 item 4) through berth-runner and under `spin up`: a real webhook receiver on
//! 127.0.0.1 (a small HTTP/1.1 server of the test's own, which answers, fails, stalls and
//! recovers on command) gets pushes, pulls, deletes and garbage collection's removals, in CNCF
//! Distribution's envelope or as CloudEvents, with its bearer token, filtered by repository and
//! action; every acknowledged push arrives once it is back, in order; a full outbox drops the
//! oldest and counts them.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the receiver does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Answer,
    /// 500 to every request.
    Fail,
    /// Holds each request this long, then answers 200 (the sender has given up by then).
    Stall(Duration),
}

/// One request the receiver took (and answered 2xx).
#[derive(Debug, Clone)]
struct Received {
    content_type: String,
    authorization: String,
    body: serde_json::Value,
}

#[derive(Default)]
struct ReceiverState {
    mode: Option<Mode>,
    received: Vec<Received>,
    /// Requests answered with a failure or stalled.
    refused: usize,
    /// How many more requests to fail before answering (then `mode` applies).
    fail_next: usize,
    /// How many more requests to stall before answering.
    stall_next: Option<(usize, Duration)>,
}

struct Receiver {
    port: u16,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    fn start(mode: Mode) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(ReceiverState { mode: Some(mode), ..Default::default() }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || serve_connection(stream, state));
            }
        });
        Receiver { port, state }
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// The events taken so far, each once (a resend has the same id), in the order received.
    fn events(&self) -> Vec<serde_json::Value> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for request in self.received() {
            let events = match request.body.get("events") {
                Some(events) => events.as_array().unwrap().clone(),
                None => vec![request.body.clone()],
            };
            for event in events {
                if seen.insert(event["id"].as_str().unwrap().to_owned()) {
                    out.push(event);
                }
            }
        }
        out
    }

    /// Wait until `done` holds of the events taken (a condition, not a sleep), or fail saying
    /// what arrived.
    fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&[serde_json::Value]) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events();
            if done(&events) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: not within {timeout:?}; the receiver has {events:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn serve_connection(stream: TcpStream, state: Arc<Mutex<ReceiverState>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = std::collections::HashMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers.get("content-length").and_then(|n| n.parse().ok()).unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let action = {
            let mut state = state.lock().unwrap();
            if state.fail_next > 0 {
                state.fail_next -= 1;
                Mode::Fail
            } else if let Some((n, pause)) = state.stall_next.filter(|(n, _)| *n > 0) {
                state.stall_next = Some((n - 1, pause));
                Mode::Stall(pause)
            } else {
                state.mode.unwrap_or(Mode::Answer)
            }
        };
        let status = match action {
            Mode::Answer => {
                let received = Received {
                    content_type: headers.get("content-type").cloned().unwrap_or_default(),
                    authorization: headers.get("authorization").cloned().unwrap_or_default(),
                    body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                };
                state.lock().unwrap().received.push(received);
                "200 OK"
            }
            Mode::Fail => {
                state.lock().unwrap().refused += 1;
                "500 Internal Server Error"
            }
            Mode::Stall(pause) => {
                state.lock().unwrap().refused += 1;
                std::thread::sleep(pause);
                // The sender has given up on this request: what it sent is not taken.
                "200 OK"
            }
        };
        let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn runner_with_events(receiver: &Receiver, endpoint: &str) -> (tempfile::TempDir, Runner, Registry) {
    let events = format!("hook {}/events {endpoint}", receiver.origin());
    let args = vars(&[("events", events.as_str()), ("events_outbound_hosts", &receiver.origin())]);
    start_registry(RunnerOptions { args, ..Default::default() })
}

const DISTRIBUTION_EVENTS: &str = "application/vnd.docker.distribution.events.v1+json";

#[tokio::test]
async fn pushes_pulls_and_deletes_reach_a_receiver_in_distributions_envelope_with_its_token_and_filters() {
    let receiver = Receiver::start(Mode::Answer);
    let (_dir, _runner, reg) =
        runner_with_events(&receiver, "bearer=s3cret repositories=team/* actions=push,pull,delete");
    let (_, digest) = reg.push_image("team/app", "v1", 1).await;
    reg.push_image("other/app", "v1", 2).await;
    assert_eq!(reg.get("/v2/team/app/manifests/v1").await.status(), 200);
    assert_eq!(reg.delete("/v2/team/app/manifests/v1").await.status(), 202);
    receiver.wait_for("push, pull and delete of team/app:v1", Duration::from_secs(30), |events| events.len() >= 3);
    let events = receiver.events();
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["push", "pull", "delete"], "{events:#?}");
    for event in &events {
        assert_eq!(event["target"]["repository"], "team/app", "other/app is filtered out: {event}");
        assert_eq!(event["target"]["tag"], "v1");
        assert!(event["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(!event["request"]["id"].as_str().unwrap().is_empty());
    }
    assert_eq!(events[0]["target"]["digest"], digest.as_str());
    assert_eq!(events[0]["target"]["mediaType"], OCI_MANIFEST);
    let manifest_size = reg.get(&format!("/v2/team/app/manifests/{digest}")).await.bytes().await.unwrap().len();
    assert_eq!(events[0]["target"]["size"], manifest_size, "the manifest's size");
    assert_eq!(events[1]["target"]["size"], manifest_size);
    assert_eq!(events[1]["target"]["digest"], digest.as_str());
    assert!(events[0]["target"]["url"].as_str().unwrap().ends_with(&format!("/v2/team/app/manifests/{digest}")));
    for request in receiver.received() {
        assert_eq!(request.content_type, DISTRIBUTION_EVENTS);
        assert_eq!(request.authorization, "Bearer s3cret");
    }
}

#[tokio::test]
async fn a_receiver_that_fails_stalls_and_recovers_gets_every_acknowledged_push_in_order() {
    let receiver = Receiver::start(Mode::Answer);
    {
        let mut state = receiver.state.lock().unwrap();
        state.fail_next = 3;
        state.stall_next = Some((1, Duration::from_secs(15)));
    }
    let (_dir, _runner, reg) = runner_with_events(&receiver, "");
    let mut pushed = Vec::new();
    let mut slowest = Duration::ZERO;
    for i in 0..12 {
        let tag = format!("v{i}");
        let started = Instant::now();
        reg.push_image("r", &tag, 10 + i).await;
        slowest = slowest.max(started.elapsed());
        pushed.push(tag);
    }
    // The receiver's failures and its stall (15 s) are the sender's business: no push waited for
    // them (each push is a few requests to the registry alone).
    println!("slowest push while the receiver failed and stalled: {slowest:?}");
    assert!(slowest < Duration::from_secs(10), "a push waited for the receiver: {slowest:?}");
    receiver.wait_for("every acknowledged push", Duration::from_secs(90), |events| events.len() >= pushed.len());
    let tags: Vec<String> = receiver.events().iter().map(|e| e["target"]["tag"].as_str().unwrap().to_owned()).collect();
    // At least once: a resend is the same event (its id); in the order pushed.
    assert_eq!(tags, pushed, "in the order pushed");
    assert!(receiver.state.lock().unwrap().refused >= 4, "the receiver failed and stalled");
}

#[tokio::test]
async fn a_cloudevents_endpoint_gets_one_structured_event_per_request() {
    let receiver = Receiver::start(Mode::Answer);
    let (_dir, _runner, reg) = runner_with_events(&receiver, "format=cloudevents header=X-Team:a");
    let (_, digest) = reg.push_image("team/app", "v1", 3).await;
    receiver.wait_for("the push", Duration::from_secs(30), |events| !events.is_empty());
    let request = &receiver.received()[0];
    assert_eq!(request.content_type, "application/cloudevents+json");
    let event = &request.body;
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], "io.berth.registry.push");
    assert_eq!(event["subject"], "team/app:v1");
    assert!(event["source"].as_str().unwrap().ends_with("/v2/team/app"), "{event}");
    assert_eq!(event["data"]["digest"], digest.as_str());
    assert!(event["time"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn a_full_outbox_drops_the_oldest_events_and_counts_them() {
    let receiver = Receiver::start(Mode::Fail);
    let (_dir, _runner, reg) = runner_with_events(&receiver, "outbox=3");
    for i in 0..8 {
        reg.push_image("r", &format!("v{i}"), 20 + i).await;
    }
    // The next step (each push's, or the runner's every second) finds 8 waiting for room for 3.
    let deadline = Instant::now() + Duration::from_secs(30);
    let state = loop {
        let state = json(reg.get("/v2/_berth/events").await).await;
        if state["endpoints"][0]["dropped"] == 5 {
            break state;
        }
        assert!(Instant::now() < deadline, "nothing dropped: {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(state["endpoints"][0]["newest"], 8, "{state}");
    receiver.set(Mode::Answer);
    receiver.wait_for("the newest three", Duration::from_secs(90), |events| events.len() >= 3);
    // Everything is delivered by now (the outbox says so): nothing more can come.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = json(reg.get("/v2/_berth/events").await).await;
        if state["endpoints"][0]["delivered"] == 8 {
            break;
        }
        assert!(Instant::now() < deadline, "not all delivered: {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tags: Vec<String> = receiver.events().iter().map(|e| e["target"]["tag"].as_str().unwrap().to_owned()).collect();
    assert_eq!(tags, ["v5", "v6", "v7"]);
}

#[tokio::test]
async fn garbage_collection_and_retention_send_their_removals() {
    let receiver = Receiver::start(Mode::Answer);
    let events = format!("hook {}/events actions=delete,gc", receiver.origin());
    let args = vars(&[
        ("events", events.as_str()),
        ("events_outbound_hosts", &receiver.origin()),
        ("retention", "r keep_last=1"),
        ("gc_grace_seconds", "0"),
    ]);
    let (_dir, _runner, reg) = start_registry(RunnerOptions { args, ..Default::default() });
    let (_, old) = reg.push_image("r", "old", 30).await;
    reg.push_image("r", "new", 31).await;
    let step = json(reg.http.post(reg.at("/v2/_berth/gc?cursor=")).send().await.unwrap()).await;
    assert_eq!(step["untagged"], serde_json::json!(["r:old"]), "{step}");
    // The rest of the pass: the blobs only the untagged manifest used stay (it is still there by
    // digest); delete it, and collect again.
    let mut cursor = step["next"].as_str().map(str::to_owned);
    while let Some(at) = cursor {
        let step = json(reg.http.post(reg.at(&format!("/v2/_berth/gc?cursor={at}"))).send().await.unwrap()).await;
        cursor = step["next"].as_str().map(str::to_owned);
    }
    assert_eq!(reg.delete(&format!("/v2/r/manifests/{old}")).await.status(), 202);
    let mut cursor = Some(String::new());
    while let Some(at) = cursor {
        let step = json(reg.http.post(reg.at(&format!("/v2/_berth/gc?cursor={at}"))).send().await.unwrap()).await;
        cursor = step["next"].as_str().map(str::to_owned);
    }
    receiver.wait_for("the untag, the delete and the blobs", Duration::from_secs(30), |events| {
        events.iter().filter(|e| e["action"] == "gc").count() >= 3
    });
    let events = receiver.events();
    let untag = &events[0];
    assert_eq!((untag["action"].as_str(), untag["target"]["tag"].as_str()), (Some("delete"), Some("old")));
    assert_eq!(untag["actor"]["name"], "retention");
    assert!(events.iter().any(|e| e["action"] == "delete" && e["target"]["digest"] == old.as_str()));
    let collected: Vec<&str> =
        events.iter().filter(|e| e["action"] == "gc").map(|e| e["target"]["digest"].as_str().unwrap()).collect();
    assert!(collected.contains(&old.as_str()), "the manifest's bytes: {collected:?}");
}

/// Under `spin up` (Spin 4.1) with the shipped spin.toml and the documented variables: the push's
/// own request sends its event once answered (no runner clock there).
#[tokio::test]
async fn on_spin_a_push_reaches_the_receiver_with_the_documented_variables() {
    let receiver = Receiver::start(Mode::Answer);
    let events = format!("hook {}/events", receiver.origin());
    let origin = receiver.origin();
    let Some(spin) = common::spin::Spin::start(&[("events", &events), ("events_outbound_hosts", &origin)], None) else {
        return;
    };
    let reg = spin.registry();
    let (_, digest) = reg.push_image("team/app", "v1", 4).await;
    receiver.wait_for("the push", Duration::from_secs(30), |events| !events.is_empty());
    let event = &receiver.events()[0];
    assert_eq!(event["action"], "push");
    assert_eq!(event["target"]["digest"], digest.as_str());
    assert_eq!(receiver.received()[0].content_type, DISTRIBUTION_EVENTS);
}
