//! The web UI (issue 26) through berth-runner: what anonymous and logged-in viewers see (and never
//! see), the session and CSRF cookies, the pages of an index pushed by skopeo with a signature and
//! an SBOM attached, the pull command run with podman, and the pages in headless Chromium, whose
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
    let forged = client
        .post(ui("/ui/login"))
        .form(&[("csrf", csrf.as_str()), ("user", ADMIN.0), ("password", ADMIN.1)])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let wrong = client
        .post(ui("/ui/login"))
        .header("cookie", &csrf_cookie)
        .form(&[("csrf", csrf.as_str()), ("user", ADMIN.0), ("password", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let login = client
        .post(ui("/ui/login"))
        .header("cookie", &csrf_cookie)
        .form(&[("csrf", csrf.as_str()), ("user", ADMIN.0), ("password", ADMIN.1)])
        .send()
        .await
        .unwrap();
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
    ensure_installed("podman");
    let storage = leg.work.join("podman");
    let args = s(&[
        "--root",
        &storage.join("root").display().to_string(),
        "--runroot",
        &storage.join("run").display().to_string(),
        "pull",
        "--tls-verify=false",
        &reference,
    ]);
    let output = Command::new("podman").args(&args).output().unwrap();
    assert!(output.status.success(), "podman {args:?}: {}", String::from_utf8_lossy(&output.stderr));
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
    let login = client
        .post(format!("{}/ui/login", runner.url))
        .header("cookie", &csrf_cookie)
        .form(&[("csrf", csrf.as_str()), ("user", ADMIN.0), ("password", ADMIN.1)])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 403);
    assert!(set_cookie(&login, "__Host-berth_ui").is_none());
    assert!(login.text().await.unwrap().contains("auth_token_secret"));
}
