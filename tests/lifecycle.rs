//! Lifecycle (issue 15) as users meet it through their clients: immutable tags and quotas.

mod common;

use common::clients::{Leg, s, single_image, with};
use common::*;

#[test]
fn a_podman_push_that_would_move_an_immutable_tag_is_refused_with_the_rule_in_its_message() {
    let leg = Leg::http_with(vars(&[("immutable_tags", "apps/*:v*;!apps/*:*-dev")]));
    let first = leg.work.join("first");
    let released = single_image(&first, 61, &[40_000]);
    let second = leg.work.join("second");
    single_image(&second, 62, &[50_000]);
    leg.push_layout(&first, "v1", "apps/web:v1", false);
    leg.push_layout(&second, "v1", "apps/web:candidate", false);

    let tls = leg.podman_tls();
    let candidate = format!("{}/apps/web:candidate", leg.host);
    let release = format!("{}/apps/web:v1", leg.host);
    leg.podman(&["pull", &tls, &candidate]);
    leg.podman(&["tag", &candidate, &release]);
    let refused = leg.podman_output(&["push", &tls, &release]);
    assert!(!refused.status.success(), "moving apps/web:v1 must fail");
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("tag v1 of apps/web is immutable") && message.contains("apps/*:v*"), "{message}");

    // The tag still names the first image; the same image pushed again is fine.
    let inspect = |tag: &str| {
        let raw = leg.skopeo_ok(&with(s(&["inspect", "--raw", &leg.image(tag)]), leg.skopeo_tls_plain()));
        format!("sha256:{}", sha256(&raw.stdout).trim_start_matches("sha256:"))
    };
    assert_eq!(inspect("apps/web:v1"), released.digest);
    leg.push_layout(&first, "v1", "apps/web:v1", false);

    // An excluded tag moves freely.
    let dev = format!("{}/apps/web:v2-dev", leg.host);
    leg.podman(&["tag", &candidate, &dev]);
    leg.podman(&["push", &tls, &dev]);
    leg.push_layout(&first, "v1", "apps/web:v2-dev", false);
    assert_eq!(inspect("apps/web:v2-dev"), released.digest);
}

#[test]
fn a_skopeo_copy_over_a_quota_is_refused_with_the_usage_and_the_limit_in_its_message() {
    let leg = Leg::http_with(vars(&[("quotas", "team/* 1MiB")]));
    let first = leg.work.join("first");
    single_image(&first, 71, &[600_000]);
    let second = leg.work.join("second");
    single_image(&second, 72, &[600_000]);
    leg.push_layout(&first, "v1", "team/a:v1", false);
    // The same image in another repository of the namespace: its blobs count once.
    leg.push_layout(&first, "v1", "team/b:v1", false);

    let args =
        with(s(&["copy", &format!("oci:{}:v1", second.display()), &leg.image("team/b:v2")]), leg.skopeo_tls("dest"));
    let refused = leg.skopeo(&args);
    assert!(!refused.status.success(), "a second 600 kB layer does not fit in 1 MiB");
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("quota exceeded") && message.contains("team/*") && message.contains("1.0 MiB"),
        "{message}"
    );
    // Other repositories have no quota.
    leg.push_layout(&second, "v1", "elsewhere/app:v1", false);
}

#[tokio::test]
async fn the_admin_api_shows_quota_usage_to_admins_only() {
    let policy = "* admin admin;* admin pull,push,delete;team/* bob pull,push";
    let users = format!("admin:{SECRET_HASH},bob:{SECRET_HASH}");
    let data = tempfile::tempdir().unwrap();
    let args =
        vars(&[("auth_mode", "basic"), ("auth_users", &users), ("auth_policy", policy), ("quotas", "team/* 1MiB")]);
    let runner = Runner::start_with(data.path(), RunnerOptions { args, ..Default::default() });
    let url = format!("{}/v2/_berth/quotas", runner.url);
    let blob = PseudoRandom::bytes(5, 1000);
    let digest = sha256(&blob);
    let pushed = client()
        .post(format!("{}/v2/team/app/blobs/uploads/?digest={digest}", runner.url))
        .basic_auth("bob", Some("secret"))
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 201);

    let as_bob = client().get(&url).basic_auth("bob", Some("secret")).send().await.unwrap();
    expect_error(as_bob, 403, "DENIED").await;
    let anonymous = client().get(&url).send().await.unwrap();
    expect_error(anonymous, 401, "UNAUTHORIZED").await;
    let as_admin = client().get(&url).basic_auth("admin", Some("secret")).send().await.unwrap();
    assert_eq!(as_admin.status(), 200);
    let usage = json(as_admin).await;
    assert_eq!(usage["quotas"][0]["repositories"], "team/*");
    assert_eq!(usage["quotas"][0]["limit"], 1 << 20);
    assert_eq!(usage["quotas"][0]["used"], 1000);

    // The same in Prometheus' format, for hosts without the runner's metrics listener.
    let url = format!("{}/v2/_berth/metrics", runner.url);
    expect_error(client().get(&url).basic_auth("bob", Some("secret")).send().await.unwrap(), 403, "DENIED").await;
    let metrics = client().get(&url).basic_auth("admin", Some("secret")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    for expected in [
        r#"berth_quota_used_bytes{repositories="team/*"} 1000"#,
        r#"berth_quota_limit_bytes{repositories="team/*"} 1048576"#,
        r#"berth_quota_uploading_bytes{repositories="team/*"} 0"#,
    ] {
        assert!(text.contains(expected), "{expected} in\n{text}");
    }
    common::process::promtool_check_metrics(&text);
}

/// Sixteen clients push sixteen different manifests to ONE immutable tag at once: exactly one
/// push wins, the others are refused with DENIED, and the tag names the winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_racing_first_pushes_of_one_immutable_tag_exactly_one_binds_it() {
    let (_data, _runner, reg) =
        start_registry(RunnerOptions { args: vars(&[("immutable_tags", "race/*:release")]), ..Default::default() });
    let mut manifests = Vec::new();
    for seed in 0..16u64 {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
        let config_digest = reg.push_blob("race/app", &config).await;
        manifests.push(image_manifest(&[(OCI_CONFIG, &config_digest, config.len())], &[], ""));
    }
    let pushes = manifests
        .iter()
        .map(|m| async { outcome(reg.put_manifest("race/app", "release", OCI_MANIFEST, m).await).await });
    let outcomes = futures::future::join_all(pushes).await;
    let winners: Vec<usize> = (0..outcomes.len()).filter(|&i| outcomes[i].0 == 201).collect();
    assert_eq!(winners.len(), 1, "exactly one push binds the tag: {outcomes:?}");
    assert!(
        outcomes.iter().filter(|o| o.0 != 201).all(|o| is_error(o, 403, "DENIED")),
        "the others are refused: {outcomes:?}"
    );
    reads_back(&reg, "/v2/race/app/manifests/release", &manifests[winners[0]]).await.unwrap();
}

/// Sixteen clients push sixteen different 1000-byte blobs into ONE namespace with room for five:
/// exactly five are stored, the others refused with DENIED, and the usage never passes the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_pushes_never_take_a_namespace_past_its_quota() {
    // Authentication off: the admin API is open, like everything else.
    let (_data, _runner, reg) =
        start_registry(RunnerOptions { args: vars(&[("quotas", "quota/* 5000")]), ..Default::default() });
    let blobs: Vec<Vec<u8>> = (0..16u64).map(|seed| PseudoRandom::bytes(100 + seed, 1000)).collect();
    let pushes = blobs.iter().enumerate().map(|(i, blob)| {
        let reg = &reg;
        async move {
            let repo = format!("quota/r{}", i % 4);
            let url = reg.at(&format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(blob)));
            outcome(reg.http.post(url).body(blob.clone()).send().await.unwrap()).await
        }
    });
    let outcomes = futures::future::join_all(pushes).await;
    let stored = outcomes.iter().filter(|o| o.0 == 201).count();
    assert_eq!(stored, 5, "room for exactly five: {outcomes:?}");
    assert!(outcomes.iter().filter(|o| o.0 != 201).all(|o| is_error(o, 403, "DENIED")), "{outcomes:?}");
    let usage = json(reg.get("/v2/_berth/quotas").await).await;
    assert_eq!(usage["quotas"][0]["used"], 5000, "{usage}");
}

/// The bytes of unfinished uploads and the namespace's quota usage, from the admin API.
async fn quota_usage(reg: &Registry) -> (u64, u64) {
    let usage = json(reg.get("/v2/_berth/quotas").await).await;
    (usage["quotas"][0]["used"].as_u64().unwrap(), usage["quotas"][0]["uploading"].as_u64().unwrap())
}

/// Chunks of uploads not yet finished count against a quota: a chunk that would take the stored
/// bytes plus the unfinished ones past the limit is refused; a cancelled upload gives its bytes
/// back, a finished one turns them into stored bytes.
#[tokio::test]
async fn unfinished_uploads_count_against_a_quota_until_finished_or_cancelled() {
    let (_data, _runner, reg) =
        start_registry(RunnerOptions { args: vars(&[("quotas", "up/* 5000")]), ..Default::default() });
    let a = reg.start_upload("up/a").await;
    assert_eq!(reg.patch_chunk(&a, 0, &PseudoRandom::bytes(1, 3000)).await.status(), 202);
    assert_eq!(quota_usage(&reg).await, (0, 3000));
    // A second upload's chunk does not fit beside the first.
    let b = reg.start_upload("up/b").await;
    let blob = PseudoRandom::bytes(2, 3000);
    let refused = reg.patch_chunk(&b, 0, &blob).await;
    let (status, code, body) = error_code(refused).await;
    assert_eq!((status, code.as_str()), (403, "DENIED"), "{body}");
    let detail = body["errors"][0]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("quota exceeded") && detail.contains("up/*"), "{body}");
    assert_eq!(quota_usage(&reg).await, (0, 3000), "the refused chunk is not counted");
    // The first upload is cancelled: its bytes go back, and the second's chunk fits.
    assert_eq!(reg.http.delete(reg.at(&a)).send().await.unwrap().status(), 204);
    assert_eq!(quota_usage(&reg).await, (0, 0));
    let accepted = reg.patch_chunk(&b, 0, &blob).await;
    assert_eq!(accepted.status(), 202);
    assert_eq!(quota_usage(&reg).await, (0, 3000));
    // Finished: stored bytes now, no longer unfinished ones.
    let location = accepted.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(reg.finish_upload(&location, &sha256(&blob), &[]).await.status(), 201);
    assert_eq!(quota_usage(&reg).await, (3000, 0));
}

/// Sixteen uploads append a 1000-byte chunk at once into ONE namespace with room for five: the
/// pending count is the one key they race on, and exactly five chunks are taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_chunks_of_unfinished_uploads_never_take_a_namespace_past_its_quota() {
    let (_data, _runner, reg) =
        start_registry(RunnerOptions { args: vars(&[("quotas", "race/* 5000")]), ..Default::default() });
    let mut sessions = Vec::new();
    for i in 0..16 {
        sessions.push(reg.start_upload(&format!("race/r{}", i % 4)).await);
    }
    let chunk = PseudoRandom::bytes(3, 1000);
    let outcomes = futures::future::join_all(
        sessions.iter().map(|location| async { outcome(reg.patch_chunk(location, 0, &chunk).await).await }),
    )
    .await;
    let taken = outcomes.iter().filter(|o| o.0 == 202).count();
    assert_eq!(taken, 5, "room for exactly five: {outcomes:?}");
    assert!(outcomes.iter().filter(|o| o.0 != 202).all(|o| is_error(o, 403, "DENIED")), "{outcomes:?}");
    assert_eq!(quota_usage(&reg).await, (0, 5000));
}

/// `berth-runner quota [--recount]` against a runner; its standard output.
fn quota_cli(runner: &Runner, extra: &[&str]) -> String {
    let output = std::process::Command::new(&artifacts().runner)
        .args(["quota", "--registry", &runner.url])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "berth-runner quota {extra:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A recount rebuilds usage from the links: blobs linked before the rule existed are counted,
/// and a blob whose repositories in the namespace all unlinked it stops counting there while
/// another namespace keeps it.
#[tokio::test]
async fn a_recount_counts_blobs_linked_before_a_rule_and_releases_blobs_a_namespace_unlinked() {
    let data = tempfile::tempdir().unwrap();
    let (mine, shared) = (PseudoRandom::bytes(301, 3000), PseudoRandom::bytes(302, 5000));
    {
        let runner = Runner::start(data.path());
        let reg = Registry::new(&runner);
        reg.push_blob("team/a", &mine).await;
        reg.push_blob("team/a", &shared).await;
        reg.push_blob("other/x", &shared).await;
    }
    let runner = Runner::start_with(
        data.path(),
        RunnerOptions { args: vars(&[("quotas", "team/* 1MiB")]), ..Default::default() },
    );
    let reg = Registry::new(&runner);
    assert_eq!(quota_usage(&reg).await.0, 0, "pushed before the rule existed");

    let output = quota_cli(&runner, &["--recount"]);
    assert!(output.contains("examined 2 blobs") && output.contains("restored 7.8 KiB (8000 bytes)"), "{output}");
    assert!(output.contains("team/*: 7.8 KiB of 1.0 MiB used (8000 bytes)"), "{output}");
    assert_eq!(quota_usage(&reg).await.0, 8000);

    let deleted = reg.delete(&format!("/v2/team/a/blobs/{}", sha256(&shared))).await;
    assert_eq!(deleted.status(), 202);
    let output = quota_cli(&runner, &["--recount"]);
    assert!(output.contains("released 4.9 KiB (5000 bytes)"), "{output}");
    assert_eq!(quota_usage(&reg).await.0, 3000, "other/x keeps the shared blob; team/* pays for it no more");
    assert_eq!(reg.head(&format!("/v2/other/x/blobs/{}", sha256(&shared))).await.status(), 200);

    // A cursor that is not one is the client's mistake.
    let refused = reg.http.post(reg.at("/v2/_berth/quotas/recount?cursor=nonsense")).send().await.unwrap();
    expect_error(refused, 400, "UNSUPPORTED").await;
}

/// Sixteen clients link ONE blob into eight repositories of a namespace (each repository twice,
/// so links race links) while two recounts run over and over, one of them also releasing a blob
/// the namespace unlinked: every acknowledged link stays counted, exactly once, and the unlinked
/// blob is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recounts_racing_pushes_of_one_blob_never_drop_an_acknowledged_link() {
    let (_data, runner, reg) =
        start_registry(RunnerOptions { args: vars(&[("quotas", "race/* 1MiB")]), ..Default::default() });
    let dropped = PseudoRandom::bytes(401, 2000);
    reg.push_blob("race/gone", &dropped).await;
    assert_eq!(reg.delete(&format!("/v2/race/gone/blobs/{}", sha256(&dropped))).await.status(), 202);
    let layer = PseudoRandom::bytes(402, 7000);
    let pushing = std::sync::atomic::AtomicBool::new(true);
    let recount = async || {
        let mut passes = 0;
        while pushing.load(std::sync::atomic::Ordering::SeqCst) || passes == 0 {
            let mut cursor = String::new();
            loop {
                let url = reg.at(&format!("/v2/_berth/quotas/recount?cursor={}", cursor.replace('/', "%2F")));
                let step = json(reg.http.post(url).send().await.unwrap()).await;
                match step["next"].as_str() {
                    Some(next) => cursor = next.to_owned(),
                    None => break,
                }
            }
            passes += 1;
        }
        passes
    };
    let pushes = async {
        let pushes = (0..16).map(|i| {
            let (reg, layer) = (&reg, &layer);
            async move { reg.push_blob(&format!("race/r{}", i % 8), layer).await }
        });
        futures::future::join_all(pushes).await;
        pushing.store(false, std::sync::atomic::Ordering::SeqCst);
    };
    let (_, first, second) = futures::join!(pushes, recount(), recount());
    assert!(first > 0 && second > 0);
    assert_eq!(quota_usage(&reg).await.0, 7000, "the layer counted once, the unlinked blob released");
    // A quiet recount agrees.
    let output = quota_cli(&runner, &["--recount"]);
    assert!(output.contains("released 0 B (0 bytes)") && output.contains("restored 0 B (0 bytes)"), "{output}");
    assert_eq!(quota_usage(&reg).await.0, 7000);
}
