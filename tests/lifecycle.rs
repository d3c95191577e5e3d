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
}
