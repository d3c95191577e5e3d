//! Berth on Spin itself (`spin up`, Spin 4.1): the registry component with the key-value blob
//! store provider composed in, on Spin's own SQLite key-value store and its `wasi:keyvalue`
//! atomics. The claims that keep races on one session safe are exercised here on the platform,
//! not only through berth-runner.
//!
//! Spin is found at `$SPIN_BIN` or `../shared/tools/spin/spin`. Where neither exists (a user's
//! machine), each test says so and does not run; CI always has it.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn spin_binary() -> Option<PathBuf> {
    let candidates =
        [std::env::var_os("SPIN_BIN").map(PathBuf::from), Some(repo_root().join("../shared/tools/spin/spin"))];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// A `spin up` of Berth's spin.toml (with the artifacts this test binary built), on a free
/// loopback port, its state in a temp dir; stopped (with its trigger child) by PID on drop.
struct Spin {
    child: Child,
    url: String,
    _state: tempfile::TempDir,
}

impl Spin {
    fn start() -> Option<Spin> {
        Self::start_with(&[])
    }

    /// With Spin variables set (`SPIN_VARIABLE_<NAME>` in spin's environment).
    fn start_with(variables: &[(&str, &str)]) -> Option<Spin> {
        let Some(spin) = spin_binary() else {
            println!("spin not found ($SPIN_BIN or ../shared/tools/spin/spin): this test did NOT run");
            return None;
        };
        let artifacts = artifacts();
        let state = tempfile::tempdir().unwrap();
        let manifest = app_manifest(state.path(), &artifacts.component, &artifacts.blob_kv_provider);
        let port = free_port();
        let child = Command::new(spin)
            .arg("up")
            .arg("--from")
            .arg(&manifest)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(state.path().join("state"))
            // Spin's shared Wasmtime cache is written by every `spin up` at once when tests run
            // in parallel, and its background worker then panics (noise, not a failure).
            .arg("--disable-cache")
            .envs(variables.iter().map(|(name, value)| (format!("SPIN_VARIABLE_{}", name.to_uppercase()), *value)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(state.path().join("spin-stderr.txt")).unwrap())
            .spawn()
            .expect("starting spin up");
        let spin = Spin { child, url: format!("http://127.0.0.1:{port}"), _state: state };
        spin.wait_ready(port);
        Some(spin)
    }

    fn wait_ready(&self, port: u16) {
        // Spin compiles the components before it listens: poll for the listener.
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "spin up never listened on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn registry(&self) -> Registry {
        Registry { url: self.url.clone(), http: Http::new(None) }
    }
}

impl Drop for Spin {
    fn drop(&mut self) {
        // The component's own stderr (Spin writes it to a file): shown with the test's output;
        // Spin's own, when the test failed.
        let log = self._state.path().join("state/logs/registry_stderr.txt");
        if let Ok(text) = std::fs::read_to_string(log).map(|t| t.trim().to_owned())
            && !text.is_empty()
        {
            println!("component stderr under spin:\n{text}");
        }
        if std::thread::panicking() {
            let spin_log = std::fs::read_to_string(self._state.path().join("spin-stderr.txt")).unwrap_or_default();
            println!("spin stderr:\n{spin_log}");
        }
        // `spin up` serves from a child process (`spin trigger http`): stop it, then spin. (Spin
        // 4.1 prints "worker failed: worker panicked" for each keep-alive connection still open
        // when it is stopped: noise at shutdown, after every response was sent, and kept out of
        // the test output unless the test failed.)
        let pid = self.child.id().to_string();
        let _ = Command::new("pkill").args(["-TERM", "-P", &pid]).status();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = Command::new("pkill").args(["-KILL", "-P", &pid]).status();
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// spin.toml with absolute paths to the built component and provider (the target dir may be
/// anywhere), written into `dir`.
fn app_manifest(dir: &Path, component: &Path, provider: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("spin.toml")).unwrap();
    let text = text
        .replace("\"target/wasm32-wasip2/release/berth.wasm\"", &format!("{:?}", component.display().to_string()))
        .replace(
            "\"target/wasm32-wasip2/release/berth_blob_kv.wasm\"",
            &format!("{:?}", provider.display().to_string()),
        );
    assert!(text.contains(&component.display().to_string()), "spin.toml names the component");
    let path = dir.join("spin.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn spin_up_serves_pushes_and_pulls_through_the_key_value_provider() {
    let Some(spin) = Spin::start() else { return };
    let reg = spin.registry();
    let (manifest, digest) = reg.push_image("app", "v1", 7).await;
    let response = reg.get("/v2/app/manifests/v1").await;
    assert_eq!(header(&response, "docker-content-digest"), digest);
    assert_eq!(response.bytes().await.unwrap(), manifest);
    let blob = PseudoRandom::bytes(3, 600_000);
    let location = reg.start_upload("app").await;
    let response = reg.patch_chunk(&location, 0, &blob[..300_000]).await;
    assert_eq!(response.status(), 202);
    let response = reg.finish_upload(&header(&response, "location"), &sha256(&blob), &blob[300_000..]).await;
    assert_eq!(response.status(), 201);
    assert_eq!(reg.get(&format!("/v2/app/blobs/{}", sha256(&blob))).await.bytes().await.unwrap(), blob);
    let tags = json(reg.get("/v2/app/tags/list").await).await;
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
}

/// Eight finishing PUTs of one session at once, on Spin's SQLite atomics: one wins (201), the
/// others find the session taken (404), and the blob reads back whole, again and again.
#[tokio::test]
async fn on_spin_of_concurrent_finishes_of_one_session_one_wins_and_the_blob_reads_back() {
    let Some(spin) = Spin::start() else { return };
    let reg = spin.registry();
    for round in 0..3u64 {
        let blob = PseudoRandom::bytes(100 + round, 70_000);
        let digest = sha256(&blob);
        let location = reg.start_upload("race").await;
        let response = reg.patch_chunk(&location, 0, &blob).await;
        let location = header(&response, "location");
        let finishes = (0..8).map(|_| reg.finish_upload(&location, &digest, &[]));
        let statuses: Vec<u16> =
            futures::future::join_all(finishes).await.iter().map(|r| r.status().as_u16()).collect();
        assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "round {round}: {statuses:?}");
        assert!(statuses.iter().all(|s| *s == 201 || *s == 404), "round {round}: {statuses:?}");
        for _ in 0..3 {
            let response = reg.get(&format!("/v2/race/blobs/{digest}")).await;
            assert_eq!(response.status(), 200);
            assert_eq!(response.bytes().await.unwrap(), blob);
        }
    }
}

/// Eight different chunks sent from one upload location at once: exactly one is taken, and the
/// session's hash state describes exactly the bytes stored.
#[tokio::test]
async fn on_spin_of_concurrent_chunks_from_one_location_exactly_one_is_taken() {
    let Some(spin) = Spin::start() else { return };
    let reg = spin.registry();
    for round in 0..3u64 {
        let location = reg.start_upload("chunks").await;
        let chunks: Vec<Vec<u8>> = (0..8).map(|i| PseudoRandom::bytes(round * 10 + i, 40_000)).collect();
        let patches = chunks.iter().map(|c| reg.patch_chunk(&location, 0, c));
        let responses = futures::future::join_all(patches).await;
        let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
        let winners: Vec<usize> = (0..8).filter(|&i| statuses[i] == 202).collect();
        assert_eq!(winners.len(), 1, "round {round}: {statuses:?}");
        assert!(statuses.iter().all(|s| *s == 202 || *s == 416), "round {round}: {statuses:?}");
        let winner = &chunks[winners[0]];
        let next = header(&responses[winners[0]], "location");
        let response = reg.finish_upload(&next, &sha256(winner), &[]).await;
        assert_eq!(response.status(), 201, "round {round}");
        assert_eq!(reg.get(&format!("/v2/chunks/blobs/{}", sha256(winner))).await.bytes().await.unwrap(), *winner);
    }
}

/// Concurrent pushes of one blob, with listings running at the same time: on Spin 4.1 a
/// listing through `spin:key-value`'s key stream held the store's lock while atomics calls of
/// the same instance waited on it (a deadlock); every push must answer, and the blob read back.
#[tokio::test]
async fn on_spin_concurrent_pushes_of_one_blob_and_listings_all_answer() {
    let Some(spin) = Spin::start() else { return };
    let reg = spin.registry();
    let blob = PseudoRandom::bytes(9, 300_000);
    let digest = sha256(&blob);
    let work = async {
        let pushes = (0..6).map(|i| {
            let (reg, blob, digest) = (&reg, &blob, &digest);
            async move {
                let url = reg.at(&format!("/v2/same{}/blobs/uploads/?digest={digest}", i % 2));
                reg.http.post(url).body(blob.clone()).send().await.unwrap().status().as_u16()
            }
        });
        let listings = (0..4).map(|_| async { reg.get("/v2/_catalog").await.status().as_u16() });
        futures::join!(futures::future::join_all(pushes), futures::future::join_all(listings))
    };
    let (pushes, listings) =
        tokio::time::timeout(Duration::from_secs(60), work).await.expect("every request answers (no deadlock)");
    assert!(pushes.iter().all(|s| *s == 201), "{pushes:?}");
    assert!(listings.iter().all(|s| *s == 200), "{listings:?}");
    for repo in ["same0", "same1"] {
        assert_eq!(reg.get(&format!("/v2/{repo}/blobs/{digest}")).await.bytes().await.unwrap(), blob);
    }
}

#[tokio::test]
async fn on_spin_failed_logins_are_counted_per_client_address_and_answered_429() {
    // Spin's own `increment` keeps the count and Spin's `spin-client-addr` names the address:
    // one wrong password for alice, and bob's right one from the same address is throttled.
    let users = format!("alice:{SECRET_HASH},bob:{SECRET_HASH}");
    let Some(spin) = Spin::start_with(&[
        ("auth_mode", "basic"),
        ("auth_users", &users),
        ("auth_policy", "* alice *; * bob *"),
        ("auth_login_failures_per_address", "1"),
    ]) else {
        return;
    };
    let http = client();
    let wrong = http.get(format!("{}/v2/", spin.url)).basic_auth("alice", Some("guess")).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let throttled = http.get(format!("{}/v2/", spin.url)).basic_auth("bob", Some("secret")).send().await.unwrap();
    assert!(header(&throttled, "retry-after").parse::<u64>().is_ok_and(|s| (1..=300).contains(&s)));
    expect_error(throttled, 429, "TOOMANYREQUESTS").await;
}
