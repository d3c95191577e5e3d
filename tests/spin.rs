//! Berth on Spin itself (`spin up`, Spin 4.1): the registry component with the key-value blob
//! store provider composed in, on Spin's own SQLite key-value store and its `wasi:keyvalue`
//! atomics. The claims that keep races on one session safe are exercised here on the platform,
//! not only through berth-runner.
//!
//! Spin is started by `common::spin` (found at `$SPIN_BIN` or `../shared/tools/spin/spin`); where
//! it is missing (a user's machine), each test says so and does not run; CI always has it.

mod common;

use common::spin::Spin;
use common::*;
use std::time::Duration;

#[tokio::test]
async fn spin_up_serves_pushes_and_pulls_through_the_key_value_provider() {
    let Some(spin) = Spin::start(&[], None) else { return };
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

/// The probes under `spin up` too: the component answers them itself.
#[tokio::test]
async fn on_spin_healthz_and_readyz_answer_and_answers_carry_the_request_id() {
    let Some(spin) = Spin::start(&[], None) else { return };
    let reg = spin.registry();
    for (path, word) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let answer = reg.get(path).await;
        assert_eq!(answer.status(), 200, "{path}");
        assert_eq!(json(answer).await["status"], word, "{path}");
    }
    // The component names every request by its id under Spin too: the client's, or one it made.
    let given = client().get(reg.at("/v2/")).header("x-request-id", "from-spin-test").send().await.unwrap();
    assert_eq!(header(&given, "x-request-id"), "from-spin-test");
    let made = header(&client().get(reg.at("/v2/")).send().await.unwrap(), "x-request-id");
    assert_eq!(made.len(), 16, "{made}");
    // The registry-wide figures, where no runner counts requests.
    let metrics = reg.get("/v2/_berth/metrics").await;
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("berth_quota_rules 0"), "{text}");
}

/// Eight finishing PUTs of one session at once, on Spin's SQLite atomics: one wins (201), the
/// others find the session taken (404), and the blob reads back whole, again and again.
#[tokio::test]
async fn on_spin_of_concurrent_finishes_of_one_session_one_wins_and_the_blob_reads_back() {
    let Some(spin) = Spin::start(&[], None) else { return };
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
    let Some(spin) = Spin::start(&[], None) else { return };
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
    let Some(spin) = Spin::start(&[], None) else { return };
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
    let Some(spin) = Spin::start(
        &[
            ("auth_mode", "basic"),
            ("auth_users", &users),
            ("auth_policy", "* alice *; * bob *"),
            ("auth_login_failures_per_address", "1"),
        ],
        None,
    ) else {
        return;
    };
    let http = client();
    let wrong = http.get(format!("{}/v2/", spin.url)).basic_auth("alice", Some("guess")).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let throttled = http.get(format!("{}/v2/", spin.url)).basic_auth("bob", Some("secret")).send().await.unwrap();
    assert!(header(&throttled, "retry-after").parse::<u64>().is_ok_and(|s| (1..=300).contains(&s)));
    expect_error(throttled, 429, "TOOMANYREQUESTS").await;
}
