//! The web UI (issue 26) through berth-runner: what anonymous and logged-in viewers see (and never
//! see), the session and CSRF cookies, tag deletes and the admin page, the pages of an index
//! pushed by skopeo with a signature and an SBOM attached, the pull command run with podman, a
//! journey through the UI in headless Chromium driven over WebDriver (Selenium from PyPI, Debian's
//! chromedriver: tests/browser/ui_journey.py), and each page rendered by Chromium, whose
//! screenshots are kept in `target/ui-screenshots/` (`BERTH_UPDATE_SCREENSHOTS=1` copies them to
//! `docs/ui/` for the README).

mod common;

use common::clients::{Leg, ensure_installed, s};
use common::*;
use std::process::Command;

/// A registry with basic authentication: `admin` does everything, anonymous may pull `public/*`.
fn guarded() -> (tempfile::TempDir, Runner, Registry) {
    let args = vars(&[
        ("auth_mode", "basic"),
        ("auth_users", &format!("{}:{SECRET_HASH}", ADMIN.0)),
        ("auth_policy", &format!("* {} *,admin; public/* anonymous pull", ADMIN.0)),
        // Seals the UI's sessions (in basic mode too: the users' hashes must not make one).
        ("auth_token_secret", TOKEN_SECRET),
    ]);
    let (dir, runner, _) = start_registry(RunnerOptions { args, ..Default::default() });
    // The admin's client (Basic), for the pushes.
    let reg = Registry { url: runner.url.clone(), http: Http::new(Some(Login::Basic)) };
    (dir, runner, reg)
}

/// A plain client: no credentials, no redirects followed, cookies passed by hand.
fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn page(client: &reqwest::Client, url: &str, cookies: &str) -> (u16, String) {
    let response = client.get(url).header("cookie", cookies).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// `name=value` of a `Set-Cookie` the answer carries.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

/// The login form posted with `cookies` (the CSRF cookie, or none) and the form's `csrf` field.
async fn post_login(
    client: &reqwest::Client,
    base: &str,
    cookies: &str,
    csrf: &str,
    user: &str,
    password: &str,
) -> reqwest::Response {
    let mut post = client.post(format!("{base}/ui/login"));
    if !cookies.is_empty() {
        post = post.header("cookie", cookies);
    }
    post.form(&[("csrf", csrf), ("user", user), ("password", password)]).send().await.unwrap()
}

/// The value of hidden field `csrf` in a page.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn anonymous_viewers_see_only_what_anonymous_may_pull_in_lists_searches_and_pages() {
    let (_dir, runner, reg) = guarded();
    for repo in ["public/app", "public/tool", "private/secret", "private/app"] {
        reg.push_image(repo, "v1", 1).await;
    }
    let client = browser();
    let ui = |path: &str| format!("{}{path}", runner.url);
    let (status, html) = page(&client, &ui("/ui/"), "").await;
    assert_eq!(status, 200);
    assert!(html.contains("public/app") && html.contains("public/tool"), "{html}");
    assert!(!html.contains("private"), "a private name in the anonymous list: {html}");
    let (_, found) = page(&client, &ui("/ui/?q=priv"), "").await;
    assert!(!found.contains("private/"), "{found}");
    assert!(found.contains("No repository you may see"), "{found}");
    // A private repository answers as one that does not exist.
    let (hidden, hidden_body) = page(&client, &ui("/ui/repo/private/secret"), "").await;
    let (missing, missing_body) = page(&client, &ui("/ui/repo/no/such"), "").await;
    assert_eq!((hidden, missing), (404, 404));
    assert_eq!(hidden_body, missing_body);
    let (_, tags) = page(&client, &ui("/ui/repo/public/app"), "").await;
    assert!(tags.contains(">v1<"), "{tags}");
}

#[tokio::test]
async fn logging_in_shows_the_users_repositories_and_logging_out_ends_it_with_csrf_checked() {
    let (_dir, runner, reg) = guarded();
    reg.push_image("private/secret", "v1", 2).await;
    let client = browser();
    let ui = |path: &str| format!("{}{path}", runner.url);
    let form = client.get(ui("/ui/login")).send().await.unwrap();
    let csrf_cookie = set_cookie(&form, "__Host-berth_csrf").expect("a CSRF cookie");
    let headers = form.headers().clone();
    let html = form.text().await.unwrap();
    let csrf = csrf_of(&html);
    assert!(headers["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    // A forged form (no matching cookie) is refused.
    let forged = post_login(&client, &runner.url, "", &csrf, ADMIN.0, ADMIN.1).await;
    assert_eq!(forged.status(), 403);
    let wrong = post_login(&client, &runner.url, &csrf_cookie, &csrf, ADMIN.0, "nope").await;
    assert_eq!(wrong.status(), 401);
    let login = post_login(&client, &runner.url, &csrf_cookie, &csrf, ADMIN.0, ADMIN.1).await;
    assert_eq!(login.status(), 303);
    let cookie_line =
        login.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
    let session_line = cookie_line.iter().find(|c| c.starts_with("__Host-berth_ui=")).expect("a session cookie");
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/;"] {
        assert!(session_line.contains(attribute), "{session_line}");
    }
    let session = set_cookie(&login, "__Host-berth_ui").unwrap();
    let cookies = format!("{csrf_cookie}; {session}");
    let (_, html) = page(&client, &ui("/ui/"), &cookies).await;
    assert!(html.contains("private/secret") && html.contains(ADMIN.0), "{html}");
    let (status, _) = page(&client, &ui("/ui/repo/private/secret"), &cookies).await;
    assert_eq!(status, 200);
    // A session sealed for another deployment (or tampered with) is nobody's.
    let value = &session["__Host-berth_ui=".len()..];
    let tampered = format!("{csrf_cookie}; __Host-berth_ui=AAAA{}", &value[4..]);
    let (status, anonymous) = page(&client, &ui("/ui/"), &tampered).await;
    assert_eq!(status, 200);
    assert!(!anonymous.contains("private/secret") && anonymous.contains("Log in"), "{anonymous}");
    let logout =
        client.post(ui("/ui/logout")).header("cookie", &cookies).form(&[("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(logout.status(), 303);
    assert_eq!(set_cookie(&logout, "__Host-berth_ui").as_deref(), Some("__Host-berth_ui="));
    // A copy of the session cookie (another browser, a stolen one) ends with the logout too.
    let (_, copied) = page(&client, &ui("/ui/"), &cookies).await;
    assert!(!copied.contains("private/secret") && copied.contains("Log in"), "{copied}");
}

#[tokio::test]
async fn repositories_are_listed_a_page_at_a_time_and_counts_hide_private_ones() {
    let (_dir, runner, reg) = guarded();
    // 120 public repositories, and 60 private ones that the same search prefix matches
    // (`public-x/...` sorts before `public/...`: the first page looks past them all).
    for i in 0..60 {
        reg.push_image(&format!("public/r{i:03}"), "v1", 3).await;
        reg.push_image(&format!("public/r{i:03}x"), "v1", 3).await;
        reg.push_image(&format!("public-x/r{i:03}"), "v1", 3).await;
    }
    let client = browser();
    let mut url = format!("{}/ui/?q=public", runner.url);
    let mut seen = Vec::new();
    for _ in 0..5 {
        let (_, html) = page(&client, &url, "").await;
        seen.extend(
            html.match_indices("<li><a href=\"/ui/repo/")
                .map(|(at, _)| html[at..].split('"').nth(1).unwrap().to_owned()),
        );
        match html.find("class=\"next\" href=\"") {
            Some(at) => {
                let href = html[at + "class=\"next\" href=\"".len()..].split('"').next().unwrap().replace("&amp;", "&");
                url = format!("{}{href}", runner.url);
            }
            None => break,
        }
    }
    assert!(seen.iter().all(|r| !r.contains("public-x")), "a private name listed: {seen:?}");
    assert_eq!(seen.len(), 120, "every public repository once over the pages");
    let unique: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 120);
}

/// An image with a signature and an SBOM attached (referrers), and a two-platform index, pushed
/// by skopeo; the pages show them, and the pull command shown pulls with podman.
#[tokio::test]
async fn the_pages_show_platforms_layers_config_and_referrers_and_the_pull_command_pulls() {
    let leg = Leg::http_with(Vec::new());
    let reg = Registry::new(&leg.runner);
    let layout_dir = leg.work.join("layout");
    let layout = common::oci_layout::Layout::create(&layout_dir);
    let amd64 = layout.image(91, "amd64", &[40_000, 2_000]);
    let arm64 = layout.image(92, "arm64", &[30_000]);
    let multi = layout.index(&[(&amd64, "amd64"), (&arm64, "arm64")]);
    layout.tag(&multi, OCI_INDEX, "multi");
    leg.push_layout(&layout_dir, "multi", "apps/web:multi", true);
    layout.tag(&amd64, OCI_MANIFEST, "v1");
    leg.push_layout(&layout_dir, "v1", "apps/web:v1", false);
    let signature = reg.attach("apps/web", &amd64, "application/vnd.dev.cosign.artifact.sig.v1+json", b"sig").await;
    let sbom = reg.attach("apps/web", &amd64, "application/spdx+json", b"{\"spdxVersion\":\"SPDX-2.3\"}").await;
    let client = browser();
    let ui = |path: &str| format!("{}{path}", leg.runner.url);
    let (_, tags) = page(&client, &ui("/ui/repo/apps/web"), "").await;
    assert!(tags.contains("linux/amd64, linux/arm64") && tags.contains("index of 2"), "{tags}");
    assert!(tags.contains(">multi<") && tags.contains(">v1<"));
    let (_, by_tag) = page(&client, &ui(&format!("/ui/repo/apps/web/manifest/{}?tag=v1", amd64.digest)), "").await;
    assert!(by_tag.contains(&format!("docker pull {}/apps/web:v1", leg.host)), "{by_tag}");
    let (_, wrong_tag) =
        page(&client, &ui(&format!("/ui/repo/apps/web/manifest/{}?tag=multi", amd64.digest)), "").await;
    assert!(!wrong_tag.contains("apps/web:multi"), "a tag shown for a manifest it does not name");
    let (_, index) = page(&client, &ui(&format!("/ui/repo/apps/web/manifest/{}", multi.digest)), "").await;
    assert!(index.contains("Platforms") && index.contains("linux/arm64"), "{index}");
    let (status, image) = page(&client, &ui(&format!("/ui/repo/apps/web/manifest/{}", amd64.digest)), "").await;
    assert_eq!(status, 200);
    assert!(
        image.contains("Layers") && image.matches("<td>application/vnd.oci.image.layer.v1.tar+gzip</td>").count() == 2,
        "{image}"
    );
    assert!(image.contains("linux/amd64"), "the config's platform: {image}");
    assert!(image.contains("Signature (cosign)") && image.contains(&signature[7..19]), "{image}");
    assert!(image.contains("SBOM (SPDX)") && image.contains(&sbom[7..19]), "{image}");
    // The pull command, as shown, pulls.
    let at = image.find("<code>podman pull ").expect("a podman pull line") + "<code>podman pull ".len();
    let reference = image[at..].split('<').next().unwrap().to_owned();
    assert!(reference.ends_with(&amd64.digest), "{reference}");
    podman_pull(&leg.work.join("podman"), &reference, None);
    screenshots(
        &leg.runner.url,
        &[
            ("repositories", "/ui/".to_owned(), "<h1>Repositories</h1>".to_owned()),
            ("tags", "/ui/repo/apps/web".to_owned(), "<h1>apps/web</h1>".to_owned()),
            (
                "index",
                format!("/ui/repo/apps/web/manifest/{}", multi.digest),
                format!("<h1>apps/web@{}</h1>", &multi.digest[7..19]),
            ),
            (
                "image",
                format!("/ui/repo/apps/web/manifest/{}?tag=v1", amd64.digest),
                format!("<h1>apps/web@{}</h1>", &amd64.digest[7..19]),
            ),
            ("login", "/ui/login".to_owned(), "<h1>Log in</h1>".to_owned()),
        ],
    );
}

/// `podman pull` of `reference` (plain HTTP) with its storage under `storage`, as `creds` when
/// given; it must succeed.
fn podman_pull(storage: &std::path::Path, reference: &str, creds: Option<&str>) {
    ensure_installed("podman");
    let mut args = s(&[
        "--root",
        &storage.join("root").display().to_string(),
        "--runroot",
        &storage.join("run").display().to_string(),
        "pull",
        "--tls-verify=false",
    ]);
    if let Some(creds) = creds {
        args.extend(s(&["--creds", creds]));
    }
    args.push(reference.to_owned());
    let output = Command::new("podman").args(&args).output().unwrap();
    assert!(output.status.success(), "podman {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// Headless Chromium (Debian's `chromium`) renders each page; the screenshots go to
/// `target/ui-screenshots/` (and `docs/ui/` with `BERTH_UPDATE_SCREENSHOTS=1`), and each must be
/// a PNG of the page (not an error page: the DOM Chromium built has the page's heading).
fn screenshots(base: &str, pages: &[(&str, String, String)]) {
    ensure_installed("chromium");
    let chromium = ["chromium", "chromium-browser"].into_iter().find(|c| which(c)).expect("chromium is installed");
    let out = repo_root().join("target/ui-screenshots");
    std::fs::create_dir_all(&out).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let flags = |extra: &[String]| {
        let mut args = s(&[
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1100,800",
        ]);
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.extend(extra.iter().cloned());
        args
    };
    for (name, path, heading) in pages {
        let url = format!("{base}{path}");
        let dom = Command::new(chromium).args(flags(&[s(&["--dump-dom"])[0].clone(), url.clone()])).output().unwrap();
        let dom = String::from_utf8_lossy(&dom.stdout);
        assert!(dom.contains(heading.as_str()), "{name}: Chromium rendered {dom}");
        let file = out.join(format!("{name}.png"));
        let shot = Command::new(chromium)
            .args(flags(&[format!("--screenshot={}", file.display()), url.clone()]))
            .output()
            .unwrap();
        let png = std::fs::read(&file)
            .unwrap_or_else(|_| panic!("{name}: no screenshot: {}", String::from_utf8_lossy(&shot.stderr)));
        assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "{name}: {} bytes", png.len());
        if std::env::var_os("BERTH_UPDATE_SCREENSHOTS").is_some() {
            let docs = repo_root().join("docs/ui");
            std::fs::create_dir_all(&docs).unwrap();
            std::fs::copy(&file, docs.join(format!("{name}.png"))).unwrap();
        }
    }
}

fn which(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).output().is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn without_a_token_secret_the_form_says_sessions_need_one_and_sets_none() {
    let args = vars(&[
        ("auth_mode", "basic"),
        ("auth_users", &format!("{}:{SECRET_HASH}", ADMIN.0)),
        ("auth_policy", &format!("* {} *", ADMIN.0)),
    ]);
    let (_dir, runner, _) = start_registry(RunnerOptions { args, ..Default::default() });
    let client = browser();
    let form = client.get(format!("{}/ui/login", runner.url)).send().await.unwrap();
    let csrf_cookie = set_cookie(&form, "__Host-berth_csrf").unwrap();
    let csrf = csrf_of(&form.text().await.unwrap());
    let login = post_login(&client, &runner.url, &csrf_cookie, &csrf, ADMIN.0, ADMIN.1).await;
    assert_eq!(login.status(), 403);
    assert!(set_cookie(&login, "__Host-berth_ui").is_none());
    assert!(login.text().await.unwrap().contains("auth_token_secret"));
}

/// A registry with an admin, a reader who may pull everything (and delete nothing), anonymous
/// pulls of `public/*`, a quota and a mirror upstream (with credentials that must never show).
fn with_reader_and_admin(extra: &[(&str, &str)]) -> (tempfile::TempDir, Runner, Registry) {
    let users = format!("{}:{SECRET_HASH},reader:{SECRET_HASH}", ADMIN.0);
    let policy = format!("* {} *,admin; * reader pull; public/* anonymous pull", ADMIN.0);
    let mut pairs = vec![
        ("auth_mode", "basic"),
        ("auth_users", users.as_str()),
        ("auth_policy", policy.as_str()),
        ("auth_token_secret", TOKEN_SECRET),
        ("quotas", "private/* 1GiB"),
        ("mirror_upstreams", "hub http://127.0.0.1:9"),
        ("mirror_credentials", "hub puller:hunter2"),
    ];
    pairs.extend_from_slice(extra);
    let (dir, runner, _) = start_registry(RunnerOptions { args: vars(&pairs), ..Default::default() });
    let reg = Registry { url: runner.url.clone(), http: Http::new(Some(Login::Basic)) };
    (dir, runner, reg)
}

/// Log `user` in (password `secret`) through the form; the cookies that make the session, and
/// the CSRF token of the forms.
async fn logged_in(client: &reqwest::Client, base: &str, user: &str) -> (String, String) {
    let form = client.get(format!("{base}/ui/login")).send().await.unwrap();
    let csrf_cookie = set_cookie(&form, "__Host-berth_csrf").unwrap();
    let csrf = csrf_of(&form.text().await.unwrap());
    let login = post_login(client, base, &csrf_cookie, &csrf, user, ADMIN.1).await;
    assert_eq!(login.status(), 303, "{user} logs in");
    (format!("{csrf_cookie}; {}", set_cookie(&login, "__Host-berth_ui").unwrap()), csrf)
}

#[tokio::test]
async fn a_tag_is_deleted_from_the_ui_only_with_the_csrf_token_and_delete_rights_and_never_an_immutable_one() {
    let (_dir, runner, reg) = with_reader_and_admin(&[("immutable_tags", "private/*:release-*")]);
    reg.push_image("private/secret", "v1", 11).await;
    reg.push_image("private/secret", "release-1", 12).await;
    let client = browser();
    let base = runner.url.clone();
    let untag = format!("{base}/ui/repo/private/secret/untag");
    let (admin, admin_csrf) = logged_in(&client, &base, ADMIN.0).await;
    let (reader, reader_csrf) = logged_in(&client, &base, "reader").await;
    // The forms are shown to who may delete, and only to them.
    let (_, admins_page) = page(&client, &format!("{base}/ui/repo/private/secret"), &admin).await;
    assert!(admins_page.contains("action=\"/ui/repo/private/secret/untag\""), "{admins_page}");
    let (_, readers_page) = page(&client, &format!("{base}/ui/repo/private/secret"), &reader).await;
    assert!(!readers_page.contains("/untag"), "{readers_page}");
    let post = |cookies: &str, fields: Vec<(&'static str, String)>| {
        client.post(&untag).header("cookie", cookies.to_owned()).form(&fields).send()
    };
    // Without the session's CSRF token: refused, and the tag stays.
    let forged = post(&admin, vec![("tag", "v1".into()), ("csrf", "0".repeat(32))]).await.unwrap();
    assert_eq!(forged.status(), 403);
    // A reader with a valid token: refused.
    let reader_try = post(&reader, vec![("tag", "v1".into()), ("csrf", reader_csrf)]).await.unwrap();
    assert_eq!(reader_try.status(), 403);
    assert!(reader_try.text().await.unwrap().contains("You may not delete tags here"));
    // Anonymous, on a repository it may not see: as if it did not exist.
    let anonymous = client.post(&untag).form(&[("tag", "v1")]).send().await.unwrap();
    assert_eq!(anonymous.status(), 404);
    assert_eq!(reg.get("/v2/private/secret/manifests/v1").await.status(), 200, "v1 is still there");
    // An immutable tag: refused with the API's reason.
    let immutable = post(&admin, vec![("tag", "release-1".into()), ("csrf", admin_csrf.clone())]).await.unwrap();
    assert_eq!(immutable.status(), 403);
    let said = immutable.text().await.unwrap();
    assert!(said.contains("is immutable") && said.contains("release-*"), "the rule is named: {said}");
    // The admin, with the token: the tag is gone for the API too.
    let deleted = post(&admin, vec![("tag", "v1".into()), ("csrf", admin_csrf)]).await.unwrap();
    assert_eq!(deleted.status(), 303);
    assert_eq!(deleted.headers()["location"], "/ui/repo/private/secret");
    let gone = reg.get("/v2/private/secret/manifests/v1").await;
    expect_error(gone, 404, "MANIFEST_UNKNOWN").await;
    assert_eq!(reg.get("/v2/private/secret/manifests/release-1").await.status(), 200);
}

#[tokio::test]
async fn the_admin_page_shows_quotas_and_mirrors_to_admins_and_is_missing_for_everyone_else() {
    let (_dir, runner, reg) = with_reader_and_admin(&[]);
    reg.push_image("private/secret", "v1", 13).await;
    let client = browser();
    let base = runner.url.clone();
    let (admin, _) = logged_in(&client, &base, ADMIN.0).await;
    let (reader, _) = logged_in(&client, &base, "reader").await;
    let (status, html) = page(&client, &format!("{base}/ui/admin"), &admin).await;
    assert_eq!(status, 200);
    assert!(html.contains("<code>private/*</code>") && html.contains("1.0 GiB"), "the quota rule: {html}");
    assert!(html.contains("http://127.0.0.1:9") && html.contains(">set<"), "the upstream: {html}");
    assert!(!html.contains("hunter2") && !html.contains("puller"), "no credential shown");
    assert!(html.contains("No pass under way"), "{html}");
    let (_, listing) = page(&client, &format!("{base}/ui/"), &admin).await;
    assert!(listing.contains("href=\"/ui/admin\""), "admins get a link");
    let (not_found, _) = page(&client, &format!("{base}/ui/repo/no/such"), "").await;
    for cookies in [reader.as_str(), ""] {
        let (status, body) = page(&client, &format!("{base}/ui/admin"), cookies).await;
        assert_eq!(status, not_found, "as a missing page");
        assert!(!body.contains("private/*") && !body.contains("127.0.0.1:9"), "{body}");
        let (_, listing) = page(&client, &format!("{base}/ui/"), cookies).await;
        assert!(!listing.contains("/ui/admin"), "no link for who may not");
    }
}

/// The UI in a real browser: headless Chromium driven over WebDriver navigates, searches, pages
/// through tags, copies the pull command (run here with podman), logs a reader and an admin in
/// and out, deletes a tag with its form, and opens the admin page (tests/browser/ui_journey.py
/// asserts each step, with what the policy allows each viewer to see).
#[tokio::test]
async fn a_browser_navigates_searches_pages_logs_in_deletes_and_logs_out() {
    let (dir, runner, reg) = with_reader_and_admin(&[]);
    // A real image (its layer a tar that podman unpacks), pushed by skopeo, then tagged 55 times.
    let layout_dir = dir.path().join("layout");
    let layout = common::oci_layout::Layout::create(&layout_dir);
    let image = layout.image(93, "amd64", &[20_000]);
    layout.tag(&image, OCI_MANIFEST, "t00");
    ensure_installed("skopeo");
    let host = runner.url.trim_start_matches("http://").to_owned();
    let copy = s(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("{}:{}", ADMIN.0, ADMIN.1),
        &format!("oci:{}:t00", layout_dir.display()),
        &format!("docker://{host}/public/app:t00"),
    ]);
    let copied = Command::new("skopeo").args(&copy).output().unwrap();
    assert!(copied.status.success(), "skopeo {copy:?}: {}", String::from_utf8_lossy(&copied.stderr));
    let manifest = reg.get(&format!("/v2/public/app/manifests/{}", image.digest)).await.bytes().await.unwrap();
    for i in 1..55 {
        let put = reg.put_manifest("public/app", &format!("t{i:02}"), OCI_MANIFEST, &manifest).await;
        assert_eq!(put.status(), 201);
    }
    reg.push_image("private/secret", "v1", 15).await;
    reg.push_image("private/secret", "v2", 16).await;
    ensure_installed("chromium");
    ensure_installed("chromedriver");
    ensure_selenium();
    let shots = repo_root().join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let script = repo_root().join("tests/browser/ui_journey.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(&runner.url)
        .arg(&shots)
        .env("BERTH_UI_ADMIN", format!("{}:{}", ADMIN.0, ADMIN.1))
        .env("BERTH_UI_READER", format!("reader:{}", ADMIN.1))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser journey failed:\n{said}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let seen: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("the journey's JSON");
    // The pull line copied from the page pulls.
    let reference = seen["pull"].as_str().unwrap().to_owned();
    assert!(reference.starts_with(runner.url.trim_start_matches("http://")), "{reference}");
    // As the reader (podman asks for credentials when `/v2/` challenges it, as basic mode does).
    podman_pull(&dir.path().join("podman"), &reference, Some(&format!("reader:{}", ADMIN.1)));
    // The tag the browser deleted is gone for the API too.
    expect_error(reg.get("/v2/private/secret/manifests/v2").await, 404, "MANIFEST_UNKNOWN").await;
    for shot in ["browser-manifest", "browser-tags-admin", "admin"] {
        let png = std::fs::read(shots.join(format!("{shot}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "{shot}: {} bytes", png.len());
        // The admin page is one of the README's main pages; the others are the journey's own.
        if shot == "admin" && std::env::var_os("BERTH_UPDATE_SCREENSHOTS").is_some() {
            std::fs::copy(shots.join(format!("{shot}.png")), repo_root().join(format!("docs/ui/{shot}.png"))).unwrap();
        }
    }
}

/// Selenium (PyPI), the WebDriver client the browser journey is written with: installed for the
/// test's Python when missing (.ci/run installs it too).
fn ensure_selenium() {
    let has = || Command::new("python3").args(["-c", "import selenium"]).status().is_ok_and(|s| s.success());
    if !has() {
        let _ = Command::new("python3").args(["-m", "pip", "install", "-q", "selenium==4.51.0"]).status();
    }
    assert!(has(), "selenium is missing: python3 -m pip install selenium");
}
