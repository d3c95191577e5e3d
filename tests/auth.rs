//! Authentication and access control, end to end through the runner: one test per rule, each
//! asserting the status, the decoded OCI error code and the `WWW-Authenticate` challenge; then
//! the real clients (skopeo, podman, docker CLI) logging in.

mod common;

use berth::auth::token::{self, Access, Audience, Claims};
use common::oci_layout::Layout;
use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Users (all with the password "secret"), groups and the policy every test here runs with.
const GROUPS: &str = "devs: alice carol";
const POLICY: &str = "\
team/*    @devs     *
team/*    reader    pull
other/*   bob       pull,push
public/*  anonymous pull
*         admin     *";
const PASSWORD: &str = "secret";

fn users() -> String {
    ["alice", "carol", "reader", "bob", "admin"].map(|u| format!("{u}:{SECRET_HASH}")).join("\n")
}

struct Auth {
    _dir: tempfile::TempDir,
    runner: Runner,
    http: reqwest::Client,
    /// Pushes test content as `admin`.
    admin: Registry,
}

fn start(mode: &str) -> Auth {
    start_with(mode, &[])
}

fn start_with(mode: &str, extra: &[(&str, &str)]) -> Auth {
    start_tls(mode, extra, None)
}

fn start_tls(mode: &str, extra: &[(&str, &str)], tls: Option<&TestCerts>) -> Auth {
    start_full(mode, extra, tls, &[])
}

/// The runner with `args` besides the variables (`--instance-reuse 1`, say).
fn start_full(mode: &str, extra: &[(&str, &str)], tls: Option<&TestCerts>, args: &[&str]) -> Auth {
    let dir = tempfile::tempdir().unwrap();
    let users = users();
    let mut pairs = vec![("auth_mode", mode)];
    // With authentication off, any auth setting is refused (a misspelt mode, say).
    if mode != "none" {
        pairs.extend([
            ("auth_users", users.as_str()),
            ("auth_groups", GROUPS),
            ("auth_policy", POLICY),
            ("auth_token_secret", TOKEN_SECRET),
        ]);
    }
    pairs.extend_from_slice(extra);
    let options = RunnerOptions {
        args: [vars(&pairs), args.iter().map(|a| a.to_string()).collect()].concat(),
        tls: tls.map(|c| (c.cert.as_path(), c.key.as_path())),
        ..Default::default()
    };
    let runner = Runner::start_with(&dir.path().join("data"), options);
    let login = match mode {
        "token" => Some(Login::Token),
        "basic" => Some(Login::Basic),
        _ => None,
    };
    let admin = Registry { url: runner.url.clone(), http: Http::new(login) };
    Auth { _dir: dir, runner, http: client(), admin }
}

impl Auth {
    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.runner.url)
    }

    fn realm(&self) -> String {
        format!("{}/token", self.runner.url)
    }

    /// The Bearer challenge expected for `scope`, with `error` when a token was sent.
    fn challenge(&self, scope: Option<&str>, error: Option<&str>) -> String {
        let mut c = format!(r#"Bearer realm="{}",service="berth""#, self.realm());
        if let Some(scope) = scope {
            c.push_str(&format!(r#",scope="{scope}""#));
        }
        if let Some(error) = error {
            c.push_str(&format!(r#",error="{error}""#));
        }
        c
    }

    async fn token_response(&self, user: Option<&str>, password: &str, query: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.http.get(self.at("/token")).query(query);
        if let Some(user) = user {
            request = request.basic_auth(user, Some(password));
        }
        request.send().await.unwrap()
    }

    /// The token endpoint's answer for `user` (anonymous when `None`) asking for `scopes`.
    async fn token_body(&self, user: Option<&str>, scopes: &[&str]) -> serde_json::Value {
        let mut query = vec![("service", "berth")];
        query.extend(scopes.iter().map(|s| ("scope", *s)));
        let response = self.token_response(user, PASSWORD, &query).await;
        assert_eq!(response.status(), 200);
        json(response).await
    }

    async fn token(&self, user: Option<&str>, scopes: &[&str]) -> String {
        self.token_body(user, scopes).await["token"].as_str().unwrap().to_owned()
    }

    async fn send(&self, method: reqwest::Method, path: &str, bearer: Option<&str>) -> reqwest::Response {
        let mut request = self.http.request(method, self.at(path));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    async fn get(&self, path: &str, bearer: Option<&str>) -> reqwest::Response {
        self.send(reqwest::Method::GET, path, bearer).await
    }
}

/// Status, OCI error code and `WWW-Authenticate` of a refusal.
async fn expect_refusal(response: reqwest::Response, status: u16, code: &str, challenge: Option<&str>) {
    let header = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    let (got_status, got_code, body) = error_code(response).await;
    assert_eq!((got_status, got_code.as_str()), (status, code), "{body}");
    assert_eq!(header.as_deref(), challenge, "WWW-Authenticate");
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Claims as Berth issues them: alice, pull and push on team/app, valid now.
fn claims() -> Claims {
    Claims {
        iss: "berth".into(),
        sub: "alice".into(),
        aud: Audience::One("berth".into()),
        exp: now() + 300,
        nbf: now(),
        iat: now(),
        jti: "test".into(),
        access: vec![Access {
            kind: "repository".into(),
            name: "team/app".into(),
            actions: vec!["pull".into(), "push".into()],
        }],
        refresh: None,
        auth_time: None,
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A forged token must be refused exactly like a missing one, plus `error="invalid_token"`.
async fn expect_invalid_token(auth: &Auth, token: &str) {
    auth.admin.push_image("team/app", "v1", 1).await;
    let response = auth.get("/v2/team/app/manifests/v1", Some(token)).await;
    let challenge = auth.challenge(Some("repository:team/app:pull"), Some("invalid_token"));
    expect_refusal(response, 401, "UNAUTHORIZED", Some(&challenge)).await;
}

// ---- token mode: the challenge ----------------------------------------------------------------

#[tokio::test]
async fn no_credentials_is_401_unauthorized_with_a_scoped_bearer_challenge() {
    let auth = start("token");
    let response = auth.get("/v2/team/app/manifests/v1", None).await;
    let challenge = auth.challenge(Some("repository:team/app:pull"), None);
    expect_refusal(response, 401, "UNAUTHORIZED", Some(&challenge)).await;
    let response = auth.send(reqwest::Method::POST, "/v2/team/app/blobs/uploads/", None).await;
    let challenge = auth.challenge(Some("repository:team/app:pull,push"), None);
    expect_refusal(response, 401, "UNAUTHORIZED", Some(&challenge)).await;
}

#[tokio::test]
async fn the_base_endpoint_needs_a_token_and_challenges_without_scope() {
    let auth = start("token");
    expect_refusal(auth.get("/v2/", None).await, 401, "UNAUTHORIZED", Some(&auth.challenge(None, None))).await;
    let token = auth.token(Some("reader"), &[]).await;
    assert_eq!(auth.get("/v2/", Some(&token)).await.status(), 200);
}

#[tokio::test]
async fn the_realm_follows_the_scheme_and_forwarded_headers_when_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let auth = start_tls("token", &[("auth_trust_forwarded_headers", "true")], Some(&certs));
    assert!(auth.runner.url.starts_with("https://"));
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&certs.ca).unwrap()).unwrap();
    let https = reqwest::Client::builder().no_proxy().add_root_certificate(ca).build().unwrap();
    let response = https.get(auth.at("/v2/")).send().await.unwrap();
    let header = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(header.starts_with(&format!(r#"Bearer realm="https://{}/token""#, auth.runner.addr())), "{header}");
    let response = https
        .get(auth.at("/v2/"))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "registry.example.com")
        .send()
        .await
        .unwrap();
    let header = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(header.starts_with(r#"Bearer realm="https://registry.example.com/token""#), "{header}");
}

// ---- token mode: the token endpoint ----------------------------------------------------------

#[tokio::test]
async fn wrong_password_is_401_unauthorized_at_the_token_endpoint() {
    let auth = start("token");
    let response = auth.token_response(Some("alice"), "wrong", &[("scope", "repository:team/app:pull")]).await;
    expect_refusal(response, 401, "UNAUTHORIZED", Some(r#"Basic realm="berth",charset="UTF-8""#)).await;
}

#[tokio::test]
async fn unknown_user_is_401_unauthorized_at_the_token_endpoint() {
    let auth = start("token");
    let response = auth.token_response(Some("mallory"), PASSWORD, &[("scope", "repository:team/app:pull")]).await;
    expect_refusal(response, 401, "UNAUTHORIZED", Some(r#"Basic realm="berth",charset="UTF-8""#)).await;
}

#[tokio::test]
async fn a_token_grants_the_intersection_of_what_is_asked_and_what_the_policy_allows() {
    let auth = start("token");
    let body =
        auth.token_body(Some("reader"), &["repository:team/app:pull,push,delete", "repository:other/app:pull"]).await;
    assert_eq!(body["scope"], "repository:team/app:pull");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["access_token"], body["token"]);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'));
    assert!(body.get("refresh_token").is_none());
    let claims =
        token::verify_access(body["token"].as_str().unwrap(), TOKEN_SECRET.as_bytes(), "berth", now()).unwrap();
    assert_eq!(claims.sub, "reader");
    assert_eq!(claims.access.len(), 1);
    assert_eq!(claims.access[0].actions, vec!["pull"]);
}

#[tokio::test]
async fn scope_names_may_carry_host_and_port() {
    let auth = start("token");
    let scope = format!("repository:{}/team/app:pull", auth.runner.addr());
    let body = auth.token_body(Some("admin"), &[&scope]).await;
    assert_eq!(body["scope"], scope.as_str(), "the name with host:port is parsed whole, at the last colon");
}

#[tokio::test]
async fn the_token_endpoint_refuses_another_service() {
    let auth = start("token");
    let response = auth.token_response(Some("alice"), PASSWORD, &[("service", "elsewhere")]).await;
    let (status, code, _) = error_code(response).await;
    assert_eq!((status, code.as_str()), (400, "UNSUPPORTED"));
}

#[tokio::test]
async fn oauth2_password_and_refresh_token_grants() {
    let auth = start("token");
    auth.admin.push_image("team/app", "v1", 1).await;
    let form = [
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", PASSWORD),
        ("service", "berth"),
        ("scope", "repository:team/app:pull repository:vault/x:pull"),
        ("access_type", "offline"),
        ("client_id", "test"),
    ];
    let body = json(auth.http.post(auth.at("/token")).form(&form).send().await.unwrap()).await;
    assert_eq!(body["scope"], "repository:team/app:pull");
    let refresh = body["refresh_token"].as_str().expect("a refresh token for access_type=offline").to_owned();
    assert_eq!(auth.get("/v2/team/app/manifests/v1", body["access_token"].as_str()).await.status(), 200);

    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
        ("service", "berth"),
        ("scope", "repository:team/app:pull,push"),
    ];
    let body = json(auth.http.post(auth.at("/token")).form(&form).send().await.unwrap()).await;
    assert_eq!(body["scope"], "repository:team/app:pull,push");
    assert_eq!(auth.get("/v2/team/app/manifests/v1", body["token"].as_str()).await.status(), 200);

    let wrong = [("grant_type", "password"), ("username", "alice"), ("password", "nope")];
    let response = auth.http.post(auth.at("/token")).form(&wrong).send().await.unwrap();
    expect_refusal(response, 401, "UNAUTHORIZED", Some(r#"Basic realm="berth",charset="UTF-8""#)).await;
}

#[tokio::test]
async fn get_with_offline_token_returns_a_refresh_token_that_is_not_an_access_token() {
    let auth = start("token");
    let query = [("service", "berth"), ("scope", "repository:team/app:pull"), ("offline_token", "true")];
    let body = json(auth.token_response(Some("alice"), PASSWORD, &query).await).await;
    let refresh = body["refresh_token"].as_str().unwrap();
    let response = auth.get("/v2/team/app/tags/list", Some(refresh)).await;
    let challenge = auth.challenge(Some("repository:team/app:pull"), Some("invalid_token"));
    expect_refusal(response, 401, "UNAUTHORIZED", Some(&challenge)).await;
}

// ---- token mode: the negative cases ----------------------------------------------------------

#[tokio::test]
async fn a_user_with_pull_only_pushing_is_401_insufficient_scope() {
    let auth = start("token");
    auth.admin.push_image("team/app", "v1", 1).await;
    let token = auth.token(Some("reader"), &["repository:team/app:pull,push"]).await;
    assert_eq!(auth.get("/v2/team/app/manifests/v1", Some(&token)).await.status(), 200, "reader pulls");
    let response = auth.send(reqwest::Method::POST, "/v2/team/app/blobs/uploads/", Some(&token)).await;
    let challenge = auth.challenge(Some("repository:team/app:pull,push"), Some("insufficient_scope"));
    expect_refusal(response, 401, "UNAUTHORIZED", Some(&challenge)).await;
    let response = auth.send(reqwest::Method::DELETE, "/v2/team/app/manifests/v1", Some(&token)).await;
    let challenge = auth.challenge(Some("repository:team/app:delete"), Some("insufficient_scope"));
    expect_refusal(response, 401, "UNAUTHORIZED", Some(&challenge)).await;
}

#[tokio::test]
async fn a_token_for_repository_a_used_on_b_is_401_insufficient_scope() {
    let auth = start("token");
    auth.admin.push_image("team/b", "v1", 1).await;
    let token = auth.token(Some("alice"), &["repository:team/a:pull"]).await;
    let response = auth.get("/v2/team/b/manifests/v1", Some(&token)).await;
    let challenge = auth.challenge(Some("repository:team/b:pull"), Some("insufficient_scope"));
    expect_refusal(response, 401, "UNAUTHORIZED", Some(&challenge)).await;
}

#[tokio::test]
async fn an_expired_token_is_401_invalid_token() {
    let auth = start("token");
    let mut c = claims();
    (c.nbf, c.iat, c.exp) = (now() - 600, now() - 600, now() - 1);
    expect_invalid_token(&auth, &token::sign(&c, TOKEN_SECRET.as_bytes())).await;
}

#[tokio::test]
async fn a_token_with_a_tampered_payload_is_401_invalid_token() {
    let auth = start("token");
    let good = token::sign(&claims(), TOKEN_SECRET.as_bytes());
    let parts: Vec<&str> = good.split('.').collect();
    let mut c = claims();
    c.access[0].actions.push("delete".into());
    let forged = format!("{}.{}.{}", parts[0], b64(&serde_json::to_vec(&c).unwrap()), parts[2]);
    expect_invalid_token(&auth, &forged).await;
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_401_invalid_token() {
    let auth = start("token");
    expect_invalid_token(&auth, &token::sign(&claims(), b"another-secret-0123456789abcdef0123")).await;
}

#[tokio::test]
async fn an_alg_none_token_is_401_invalid_token() {
    let auth = start("token");
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(&serde_json::to_vec(&claims()).unwrap());
    expect_invalid_token(&auth, &format!("{header}.{payload}.")).await;
    let header = b64(br#"{"alg":"HS512","typ":"JWT"}"#);
    expect_invalid_token(&auth, &format!("{header}.{payload}.AAAA")).await;
}

#[tokio::test]
async fn a_token_for_another_audience_is_401_invalid_token() {
    let auth = start("token");
    let mut c = claims();
    c.aud = Audience::One("another-registry".into());
    expect_invalid_token(&auth, &token::sign(&c, TOKEN_SECRET.as_bytes())).await;
}

#[tokio::test]
async fn an_upload_session_continued_by_another_user_is_404_blob_upload_unknown() {
    let auth = start("token");
    let alice = auth.token(Some("alice"), &["repository:team/app:pull,push"]).await;
    let carol = auth.token(Some("carol"), &["repository:team/app:pull,push"]).await;
    let response = auth.send(reqwest::Method::POST, "/v2/team/app/blobs/uploads/", Some(&alice)).await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    for method in [reqwest::Method::GET, reqwest::Method::PATCH, reqwest::Method::DELETE] {
        let response = auth.send(method.clone(), &location, Some(&carol)).await;
        expect_refusal(response, 404, "BLOB_UPLOAD_UNKNOWN", None).await;
    }
    let digest = sha256(b"mine");
    let response =
        auth.http.put(format!("{}&digest={digest}", auth.at(&location))).bearer_auth(&carol).body("mine").send().await;
    expect_refusal(response.unwrap(), 404, "BLOB_UPLOAD_UNKNOWN", None).await;
    // The owner's session is untouched.
    let response = auth.get(&location, Some(&alice)).await;
    assert_eq!((response.status().as_u16(), response.headers()["range"].to_str().unwrap()), (204, "0-0"));
}

#[tokio::test]
async fn a_mount_from_a_repository_the_user_cannot_pull_opens_a_session_and_leaks_nothing() {
    let auth = start("token");
    let secret = auth.admin.push_blob("vault/x", b"classified").await;
    let absent = sha256(b"never pushed");
    // bob may push to other/*, not pull vault/x: the token leaves vault/x out.
    let token = auth.token(Some("bob"), &["repository:other/app:pull,push", "repository:vault/x:pull"]).await;
    let mut answers = Vec::new();
    for digest in [&secret, &absent] {
        let path = format!("/v2/other/app/blobs/uploads/?mount={digest}&from=vault/x");
        let response = auth.send(reqwest::Method::POST, &path, Some(&token)).await;
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        answers.push((response.status().as_u16(), location.starts_with("/v2/other/app/blobs/uploads/")));
    }
    assert_eq!(answers, vec![(202, true), (202, true)], "the same answer whether or not vault/x has the blob");
    let response = auth.get(&format!("/v2/other/app/blobs/{secret}"), Some(&token)).await;
    expect_refusal(response, 404, "BLOB_UNKNOWN", None).await;
    // Without `from` (the blob may be anywhere), bob cannot take it either.
    let response =
        auth.send(reqwest::Method::POST, &format!("/v2/other/app/blobs/uploads/?mount={secret}"), Some(&token)).await;
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn a_mount_from_a_repository_the_user_may_pull_is_201() {
    let auth = start("token");
    let digest = auth.admin.push_blob("team/base", b"shared layer").await;
    let token = auth.token(Some("alice"), &["repository:team/app:pull,push", "repository:team/base:pull"]).await;
    let path = format!("/v2/team/app/blobs/uploads/?mount={digest}&from=team/base");
    assert_eq!(auth.send(reqwest::Method::POST, &path, Some(&token)).await.status(), 201);
}

#[tokio::test]
async fn anonymous_pull_is_allowed_only_where_the_policy_says() {
    let auth = start("token");
    auth.admin.push_image("public/app", "v1", 1).await;
    auth.admin.push_image("team/app", "v1", 2).await;
    let body = auth.token_body(None, &["repository:public/app:pull,push", "repository:team/app:pull"]).await;
    assert_eq!(body["scope"], "repository:public/app:pull");
    let token = body["token"].as_str().unwrap();
    assert_eq!(auth.get("/v2/public/app/manifests/v1", Some(token)).await.status(), 200);
    let response = auth.get("/v2/team/app/manifests/v1", Some(token)).await;
    let challenge = auth.challenge(Some("repository:team/app:pull"), Some("insufficient_scope"));
    expect_refusal(response, 401, "UNAUTHORIZED", Some(&challenge)).await;
    let response = auth.send(reqwest::Method::POST, "/v2/public/app/blobs/uploads/", Some(token)).await;
    let challenge = auth.challenge(Some("repository:public/app:pull,push"), Some("insufficient_scope"));
    expect_refusal(response, 401, "UNAUTHORIZED", Some(&challenge)).await;
}

#[tokio::test]
async fn the_catalog_lists_only_repositories_the_caller_may_pull() {
    let auth = start("token");
    for (i, repo) in ["team/app", "other/app", "public/app", "vault/x"].into_iter().enumerate() {
        auth.admin.push_image(repo, "v1", i as u64).await;
    }
    let response = auth.get("/v2/_catalog", None).await;
    let challenge = auth.challenge(Some("registry:catalog:*"), None);
    expect_refusal(response, 401, "UNAUTHORIZED", Some(&challenge)).await;
    let without_scope = auth.token(Some("reader"), &["repository:team/app:pull"]).await;
    let response = auth.get("/v2/_catalog", Some(&without_scope)).await;
    let challenge = auth.challenge(Some("registry:catalog:*"), Some("insufficient_scope"));
    expect_refusal(response, 401, "UNAUTHORIZED", Some(&challenge)).await;
    for (user, expected) in [
        (Some("reader"), vec!["public/app", "team/app"]),
        (Some("bob"), vec!["other/app", "public/app"]),
        (None, vec!["public/app"]),
        (Some("admin"), vec!["other/app", "public/app", "team/app", "vault/x"]),
    ] {
        let token = auth.token(user, &["registry:catalog:*"]).await;
        let body = json(auth.get("/v2/_catalog", Some(&token)).await).await;
        assert_eq!(body["repositories"], serde_json::json!(expected), "{user:?}");
    }
    // Pagination counts only what the caller sees.
    let token = auth.token(Some("reader"), &["registry:catalog:*"]).await;
    let response = auth.get("/v2/_catalog?n=1", Some(&token)).await;
    assert_eq!(response.headers()["link"], r#"</v2/_catalog?n=1&last=public%2Fapp>; rel="next""#);
    let body = json(response).await;
    assert_eq!(body["repositories"], serde_json::json!(["public/app"]));
}

#[tokio::test]
async fn the_referrers_api_needs_pull() {
    let auth = start("token");
    let (_, digest) = auth.admin.push_image("vault/x", "v1", 1).await;
    let token = auth.token(Some("bob"), &["repository:vault/x:pull"]).await;
    let response = auth.get(&format!("/v2/vault/x/referrers/{digest}"), Some(&token)).await;
    let challenge = auth.challenge(Some("repository:vault/x:pull"), Some("insufficient_scope"));
    expect_refusal(response, 401, "UNAUTHORIZED", Some(&challenge)).await;
    let token = auth.token(Some("admin"), &["repository:vault/x:pull"]).await;
    assert_eq!(auth.get(&format!("/v2/vault/x/referrers/{digest}"), Some(&token)).await.status(), 200);
}

// ---- configuration ----------------------------------------------------------------------------

/// A runner started by hand, its stderr collected (the component's log and the start-up probe's
/// report are there), stopped by PID when dropped.
struct Spawned {
    child: std::process::Child,
    url: String,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Spawned {
    fn start(pairs: &[(&str, &str)]) -> (tempfile::TempDir, Spawned) {
        use std::io::{BufRead, BufReader};
        let artifacts = artifacts();
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(&artifacts.runner)
            .args(["up", "--listen", "127.0.0.1:0", "--manifest"])
            .arg(repo_root().join("spin.toml"))
            .arg("--component")
            .arg(&artifacts.component)
            .arg("--data")
            .arg(dir.path())
            .args(vars(pairs))
            .arg("--compile-cache")
            .arg(&artifacts.compile_cache)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let collected = stderr.clone();
        let stderr_lines = BufReader::new(child.stderr.take().unwrap()).lines();
        std::thread::spawn(move || stderr_lines.map_while(Result::ok).for_each(|l| collected.lock().unwrap().push(l)));
        let mut stdout_lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let serving = stdout_lines
            .by_ref()
            .map_while(Result::ok)
            .find(|line| line.starts_with("berth-runner: serving"))
            .expect("the runner announces its address");
        // Drained for the runner's life (a closed pipe would fail its request log).
        std::thread::spawn(move || stdout_lines.for_each(drop));
        let url = serving.split(" on ").nth(1).expect("serving ... on URL").trim().to_owned();
        (dir, Spawned { child, url, stderr })
    }

    /// The stderr lines so far, once one satisfies `wanted` (the reader thread may lag a little
    /// behind the runner's writes); fails after a deadline.
    fn stderr_once(&self, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let lines = self.stderr.lock().unwrap().clone();
            if lines.iter().any(|l| wanted(l)) {
                return lines;
            }
            assert!(std::time::Instant::now() < deadline, "no such line on stderr: {lines:#?}");
            std::thread::yield_now();
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_misconfiguration_is_logged_at_start_and_refuses_every_request_without_saying_why() {
    let bob_with_wrong_separator = format!("bob={SECRET_HASH}");
    for (pairs, variable) in [
        (vec![("auth_mode", "token")], "auth_token_secret"),
        (vec![("auth_mode", "tokens")], "auth_mode"),
        (vec![("auth_mode", "basic"), ("auth_users", "bob:plaintext")], "auth_users"),
        (vec![("auth_mode", "basic"), ("auth_users", bob_with_wrong_separator.as_str())], "auth_users"),
        (vec![("auth_mode", "basic"), ("auth_policy", "* nobody pull")], "auth_policy"),
        (
            vec![("auth_mode", "token"), ("auth_token_secret", TOKEN_SECRET), ("auth_token_lifetime_seconds", "86401")],
            "auth_token_lifetime_seconds",
        ),
    ] {
        let (_dir, runner) = Spawned::start(&pairs);
        // The operator reads what is wrong in the log, at start (the component's line, then the
        // probe's report)...
        let stderr = runner.stderr_once(|l| l.contains("serving anyway"));
        let logged = stderr.iter().find(|l| l.contains("misconfigured")).unwrap_or_else(|| panic!("{stderr:#?}"));
        assert!(logged.contains(&format!("variable {variable}")), "{pairs:?}: {logged}");
        assert!(!logged.contains(&SECRET_HASH[7..]), "not even the log quotes a hash: {logged}");
        // ... clients only learn that it is misconfigured.
        for path in ["/v2/", "/v2/public/app/manifests/v1", "/token"] {
            let response = client().get(format!("{}{path}", runner.url)).send().await.unwrap();
            let (status, code, body) = error_code(response).await;
            assert_eq!((status, code.as_str()), (500, "INTERNAL_ERROR"), "{pairs:?} {path}");
            let text = body.to_string();
            for secret in [variable, &SECRET_HASH[7..], "plaintext", "nobody", "86401"] {
                assert!(!text.contains(secret), "{pairs:?} {path}: the answer says {secret:?}: {text}");
            }
        }
    }
}

#[tokio::test]
async fn any_auth_setting_with_authentication_off_refuses_every_request() {
    // A misspelt mode variable (or none at all) next to users and a policy: refused, never open.
    let users = users();
    for pairs in [
        vec![("auth_users", users.as_str()), ("auth_policy", POLICY)],
        vec![("auth_mode", "none"), ("auth_token_secret", TOKEN_SECRET)],
    ] {
        let (_dir, runner) = Spawned::start(&pairs);
        let stderr = runner.stderr_once(|l| l.contains("serving anyway"));
        assert!(stderr.iter().any(|l| l.contains("variable auth_mode") && l.contains("everybody")), "{stderr:#?}");
        let response = client().put(format!("{}/v2/app/manifests/v1", runner.url)).body("{}").send().await.unwrap();
        let (status, code, _) = error_code(response).await;
        assert_eq!((status, code.as_str()), (500, "INTERNAL_ERROR"), "{pairs:?}");
    }
}

#[tokio::test]
async fn bcrypt_costs_below_10_are_warned_about_at_start() {
    let users = users(); // every test user's hash has cost 4
    let pairs = [("auth_mode", "basic"), ("auth_users", &users), ("auth_groups", GROUPS), ("auth_policy", POLICY)];
    let (_dir, runner) = Spawned::start(&pairs);
    let stderr = runner.stderr_once(|l| l.contains("bcrypt costs below 10"));
    let warning = stderr.iter().find(|l| l.contains("bcrypt costs below 10")).unwrap();
    assert!(warning.contains("warning") && warning.contains("alice (4)"), "{warning}");
    assert!(!stderr.iter().any(|l| l.contains(&SECRET_HASH[7..])), "{stderr:#?}");
}

#[tokio::test]
async fn the_token_endpoint_is_not_served_without_token_mode() {
    for mode in ["none", "basic"] {
        let auth = start(mode);
        let response = auth.token_response(Some("alice"), PASSWORD, &[]).await;
        let (status, code, _) = error_code(response).await;
        assert_eq!((status, code.as_str()), (404, "NOT_FOUND"), "{mode}");
    }
}

// ---- password hashes --------------------------------------------------------------------------

async fn logs_in_with(line: &str, user: &str, password: &str) {
    let dir = tempfile::tempdir().unwrap();
    let policy = format!("* {user} pull");
    let options = RunnerOptions {
        args: vars(&[("auth_mode", "basic"), ("auth_users", line), ("auth_policy", &policy)]),
        ..Default::default()
    };
    let runner = Runner::start_with(dir.path(), options);
    let response = client().get(format!("{}/v2/", runner.url)).basic_auth(user, Some(password)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{line}");
    let response = client().get(format!("{}/v2/", runner.url)).basic_auth(user, Some("other")).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn a_hash_from_berth_runner_hash_password_logs_in() {
    let mut child = Command::new(&artifacts().runner)
        .args(["hash-password", "--cost", "4", "--user", "zed"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"p@ss word\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let line = String::from_utf8(output.stdout).unwrap();
    assert!(line.starts_with("zed:$2b$04$"), "{line}");
    logs_in_with(line.trim(), "zed", "p@ss word").await;
}

#[tokio::test]
async fn a_hash_from_htpasswd_logs_in() {
    common::clients::ensure_installed("htpasswd");
    let output = Command::new("htpasswd").args(["-nbB", "-C", "4", "zed", "p@ss word"]).output().unwrap_or_else(|e| {
        panic!("htpasswd could not run ({e}): .ci/run installs it from Debian (apt-get install apache2-utils)")
    });
    assert!(output.status.success());
    let line = String::from_utf8(output.stdout).unwrap();
    logs_in_with(line.trim(), "zed", "p@ss word").await;
}

// ---- basic mode -------------------------------------------------------------------------------

const BASIC_CHALLENGE: &str = r#"Basic realm="berth",charset="UTF-8""#;

#[tokio::test]
async fn basic_mode_without_credentials_is_401_with_a_basic_challenge() {
    let auth = start("basic");
    auth.admin.push_image("team/app", "v1", 1).await;
    expect_refusal(auth.get("/v2/team/app/manifests/v1", None).await, 401, "UNAUTHORIZED", Some(BASIC_CHALLENGE)).await;
    expect_refusal(auth.get("/v2/", None).await, 401, "UNAUTHORIZED", Some(BASIC_CHALLENGE)).await;
}

#[tokio::test]
async fn basic_mode_wrong_password_and_unknown_user_are_401() {
    let auth = start("basic");
    for (user, password) in [("alice", "wrong"), ("mallory", PASSWORD)] {
        let response = auth.http.get(auth.at("/v2/")).basic_auth(user, Some(password)).send().await.unwrap();
        expect_refusal(response, 401, "UNAUTHORIZED", Some(BASIC_CHALLENGE)).await;
    }
}

#[tokio::test]
async fn basic_mode_a_user_with_pull_only_pushing_is_403_denied() {
    let auth = start("basic");
    auth.admin.push_image("team/app", "v1", 1).await;
    let get = auth.http.get(auth.at("/v2/team/app/manifests/v1")).basic_auth("reader", Some(PASSWORD));
    assert_eq!(get.send().await.unwrap().status(), 200);
    let post = auth.http.post(auth.at("/v2/team/app/blobs/uploads/")).basic_auth("reader", Some(PASSWORD));
    expect_refusal(post.send().await.unwrap(), 403, "DENIED", None).await;
}

#[tokio::test]
async fn basic_mode_anonymous_pull_only_where_the_policy_says() {
    let auth = start("basic");
    auth.admin.push_image("public/app", "v1", 1).await;
    auth.admin.push_image("team/app", "v1", 2).await;
    assert_eq!(auth.get("/v2/public/app/manifests/v1", None).await.status(), 200);
    expect_refusal(auth.get("/v2/team/app/manifests/v1", None).await, 401, "UNAUTHORIZED", Some(BASIC_CHALLENGE)).await;
    let body = json(auth.get("/v2/_catalog", None).await).await;
    assert_eq!(body["repositories"], serde_json::json!(["public/app"]));
}

/// Answers the runner keeps (`runner/src/http/answer_cache.rs`) go only to anonymous requests,
/// and only where anonymous pulls are allowed: a request with credentials is answered by the
/// component every time (a wrong password is refused even where anonymous pulls are allowed),
/// and what a user pulled is never kept for anyone.
#[tokio::test]
async fn kept_answers_go_to_anonymous_requests_only_where_the_policy_lets_them_pull() {
    let auth = start_full("basic", &[], None, &["--metrics-listen", "127.0.0.1:0"]);
    auth.admin.push_image("public/app", "v1", 1).await;
    auth.admin.push_image("team/app", "v1", 2).await;
    let hits = |metrics: String| common::kept::answer_cache_count(&metrics, "hit");
    let before = hits(scrape(&auth.runner).await);
    for _ in 0..3 {
        assert_eq!(auth.get("/v2/public/app/manifests/v1", None).await.status(), 200);
    }
    let after_anonymous = hits(scrape(&auth.runner).await);
    assert!(after_anonymous - before >= 2.0, "anonymous pulls of a public repository are kept");

    for _ in 0..3 {
        let get = auth.http.get(auth.at("/v2/team/app/manifests/v1")).basic_auth("reader", Some(PASSWORD));
        assert_eq!(get.send().await.unwrap().status(), 200);
    }
    expect_refusal(auth.get("/v2/team/app/manifests/v1", None).await, 401, "UNAUTHORIZED", Some(BASIC_CHALLENGE)).await;
    let wrong = auth.http.get(auth.at("/v2/public/app/manifests/v1")).basic_auth("reader", Some("wrong"));
    expect_refusal(wrong.send().await.unwrap(), 401, "UNAUTHORIZED", Some(BASIC_CHALLENGE)).await;
    assert_eq!(
        hits(scrape(&auth.runner).await),
        after_anonymous,
        "no request with credentials was given a kept answer"
    );
}

/// In token mode a token's answers are kept for that token alone, and only until it expires:
/// another token, or none, is answered by the component (refused here), and the token's own
/// requests are refused once it has expired, however often its answer was given before.
#[tokio::test]
async fn kept_answers_go_to_the_same_token_only_and_never_after_it_expires() {
    const LIFETIME: u64 = 3;
    let lifetime = LIFETIME.to_string();
    let auth =
        start_full("token", &[("auth_token_lifetime_seconds", &lifetime)], None, &["--metrics-listen", "127.0.0.1:0"]);
    auth.admin.push_image("team/app", "v1", 3).await;
    let hits = async || common::kept::answer_cache_count(&scrape(&auth.runner).await, "hit");
    let path = "/v2/team/app/manifests/v1";
    let issued = now();
    let reader = auth.token(Some("reader"), &["repository:team/app:pull"]).await;
    let before = hits().await;
    for _ in 0..3 {
        assert_eq!(auth.get(path, Some(&reader)).await.status(), 200);
    }
    assert!(hits().await - before >= 2.0, "a token's pulls are kept");
    let with_hits = hits().await;

    let bob = auth.token(Some("bob"), &["repository:team/app:pull"]).await;
    expect_refusal(
        auth.get(path, Some(&bob)).await,
        401,
        "UNAUTHORIZED",
        Some(&auth.challenge(Some("repository:team/app:pull"), Some("insufficient_scope"))),
    )
    .await;
    expect_refusal(
        auth.get(path, None).await,
        401,
        "UNAUTHORIZED",
        Some(&auth.challenge(Some("repository:team/app:pull"), None)),
    )
    .await;
    assert_eq!(hits().await, with_hits, "another token's request, or none, was given the kept answer");

    // Until the token expires its answer is given; from then on it is refused. Polled, since
    // the condition is the clock's.
    let deadline = issued + LIFETIME + 10;
    loop {
        let status = auth.get(path, Some(&reader)).await.status().as_u16();
        let at = now();
        if status == 401 {
            assert!(at >= issued + LIFETIME - 1, "refused before it expired, at {at} (issued {issued})");
            break;
        }
        assert_eq!(status, 200);
        assert!(at <= issued + LIFETIME + 1, "answered 200 at {at}, after the token expired (issued {issued})");
        assert!(at < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

// ---- real clients -----------------------------------------------------------------------------

fn run(program: &str, args: &[&str], envs: &[(&str, &Path)], stdin: Option<&str>) -> Output {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in envs {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap_or_else(|e| panic!("{program} could not run ({e}): .ci/run installs it"));
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

fn ok(program: &str, args: &[&str], output: Output) -> Output {
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn failed(program: &str, args: &[&str], output: &Output) -> String {
    assert!(!output.status.success(), "{program} {args:?} should have failed");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// skopeo with an empty blob-info cache of its own (see tests/clients.rs).
fn skopeo(work: &Path, args: &[&str]) -> Output {
    let cache = work.join("blob-info-cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::create_dir_all("/var/lib/containers/cache").unwrap();
    let script = format!("mount --bind '{}' /var/lib/containers/cache && exec skopeo \"$@\"", cache.display());
    let mut full = vec!["-m", "sh", "-c", &script, "sh"];
    full.extend_from_slice(args);
    run("unshare", &full, &[], None)
}

fn image_layout(dir: &Path, seed: u64) -> String {
    let layout = Layout::create(dir);
    let manifest = layout.image(seed, "amd64", &[20_000]);
    layout.tag(&manifest, OCI_MANIFEST, "v1");
    format!("oci:{}:v1", dir.display())
}

#[tokio::test]
async fn skopeo_with_creds_src_creds_and_dest_creds() {
    let auth = start("token");
    let work = auth._dir.path().join("work");
    let src = image_layout(&work.join("src"), 1);
    let host = auth.runner.addr();
    let team = format!("docker://{host}/team/app:v1");
    let other = format!("docker://{host}/other/app:v1");

    let args = ["copy", "--dest-tls-verify=false", "--dest-creds", "alice:secret", &src, &team];
    ok("skopeo", &args, skopeo(&work, &args));
    let args = ["inspect", "--tls-verify=false", "--creds", "reader:secret", &team];
    ok("skopeo", &args, skopeo(&work, &args));
    // Registry to registry: reader pulls team/app, bob pushes to other/app (mounting is not
    // possible for bob: he cannot pull team/app, so the blobs are uploaded).
    let args = [
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--src-creds",
        "reader:secret",
        "--dest-creds",
        "bob:secret",
        &team,
        &other,
    ];
    ok("skopeo", &args, skopeo(&work, &args));
    let out = format!("dir:{}", work.join("out").display());
    let args = ["copy", "--src-tls-verify=false", "--src-creds", "bob:secret", &other, &out];
    ok("skopeo", &args, skopeo(&work, &args));

    // Denied: reader pushing, a wrong password, bob reading team/app, nobody reading team/app.
    let team2 = format!("docker://{host}/team/app2:v1");
    let args = ["copy", "--dest-tls-verify=false", "--dest-creds", "reader:secret", &src, &team2];
    let stderr = failed("skopeo", &args, &skopeo(&work, &args));
    assert!(stderr.contains("401") || stderr.to_lowercase().contains("unauthorized"), "{stderr}");
    for creds in [Some("alice:wrong"), Some("bob:secret"), None] {
        let mut args = vec!["inspect", "--tls-verify=false"];
        if let Some(creds) = creds {
            args.extend(["--creds", creds]);
        }
        args.push(&team);
        let stderr = failed("skopeo", &args, &skopeo(&work, &args));
        assert!(stderr.contains("401") || stderr.to_lowercase().contains("unauthorized"), "{creds:?}: {stderr}");
    }
}

#[tokio::test]
async fn podman_login_then_push_and_pull() {
    let auth = start("token");
    let work = auth._dir.path().join("work");
    let host = auth.runner.addr();
    let src = image_layout(&work.join("src"), 3);
    let args = ["copy", "--dest-tls-verify=false", "--dest-creds", "admin:secret", &src];
    let dest = format!("docker://{host}/team/seed:v1");
    let args = [&args[..], &[dest.as_str()]].concat();
    ok("skopeo", &args, skopeo(&work, &args));
    let root = work.join("podman");
    std::fs::create_dir_all(&root).unwrap();
    let authfile = root.join("auth.json");
    let root_flag = format!("--root={}", root.join("root").display());
    let runroot_flag = format!("--runroot={}", root.join("run").display());
    let podman = |args: &[&str], stdin: Option<&str>| {
        let mut full = vec![root_flag.as_str(), runroot_flag.as_str(), "--storage-driver=vfs"];
        full.extend_from_slice(args);
        run("podman", &full, &[("REGISTRY_AUTH_FILE", &authfile)], stdin)
    };
    let podman_ok = |args: &[&str], stdin: Option<&str>| ok("podman", args, podman(args, stdin));
    podman_ok(&["login", "--tls-verify=false", "-u", "alice", "--password-stdin", &host], Some("secret"));

    let seed = format!("{host}/team/seed:v1");
    let image = format!("{host}/team/app:v1");
    podman_ok(&["pull", "--tls-verify=false", &seed], None);
    podman_ok(&["tag", &seed, &image], None);
    podman_ok(&["push", "--tls-verify=false", &image], None);

    // As reader: pulls work, a push is refused.
    podman_ok(&["logout", &host], None);
    podman_ok(&["login", "--tls-verify=false", "-u", "reader", "--password-stdin", &host], Some("secret"));
    podman_ok(&["pull", "--tls-verify=false", &image], None);
    let denied = format!("{host}/team/denied:v1");
    podman_ok(&["tag", &seed, &denied], None);
    let args = ["push", "--tls-verify=false", &denied];
    let stderr = failed("podman", &args, &podman(&args, None));
    assert!(stderr.contains("401") || stderr.to_lowercase().contains("unauthorized"), "{stderr}");
    // A wrong password does not log in.
    let args = ["login", "--tls-verify=false", "-u", "alice", "--password-stdin", &host];
    failed("podman", &args, &podman(&args, Some("nope")));
}

#[tokio::test]
async fn docker_login_then_manifest_inspect() {
    let auth = start("token");
    auth.admin.push_image("team/app", "v1", 4).await;
    let host = auth.runner.addr();
    let config = auth._dir.path().join("docker");
    std::fs::create_dir_all(&config).unwrap();
    let docker = |args: &[&str], stdin: Option<&str>| {
        let mut full = vec!["--config", config.to_str().unwrap()];
        full.extend_from_slice(args);
        run("docker", &full, &[], stdin)
    };
    let image = format!("{host}/team/app:v1");
    let out = docker(&["manifest", "inspect", "--insecure", &image], None);
    failed("docker", &["manifest", "inspect"], &out);
    let out = docker(&["login", "-u", "alice", "--password-stdin", &host], Some("wrong\n"));
    failed("docker", &["login"], &out);
    let out = docker(&["login", "-u", "alice", "--password-stdin", &host], Some("secret\n"));
    ok("docker", &["login"], out);
    let out = ok("docker", &["manifest", "inspect"], docker(&["manifest", "inspect", "--insecure", &image], None));
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    // bob is logged in but may not pull team/app.
    ok("docker", &["logout"], docker(&["logout", &host], None));
    ok("docker", &["login"], docker(&["login", "-u", "bob", "--password-stdin", &host], Some("secret\n")));
    let out = docker(&["manifest", "inspect", "--insecure", &image], None);
    failed("docker", &["manifest", "inspect"], &out);
}

// ---- realm, forwarded headers ----------------------------------------------------------------

#[tokio::test]
async fn the_realm_is_auth_realm_when_it_is_set() {
    let auth = start_with("token", &[("auth_realm", "https://registry.example.com/token")]);
    let response = auth.get("/v2/team/app/tags/list", None).await;
    let challenge = header(&response, "www-authenticate");
    assert!(challenge.starts_with(r#"Bearer realm="https://registry.example.com/token","#), "{challenge}");
}

#[tokio::test]
async fn forwarded_headers_do_not_move_the_realm_unless_trusted() {
    let forged = |auth: &Auth| {
        auth.http
            .get(auth.at("/v2/"))
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "evil.example")
            .send()
    };
    let auth = start("token");
    let challenge = header(&forged(&auth).await.unwrap(), "www-authenticate");
    assert!(challenge.contains(&format!(r#"realm="{}""#, auth.realm())), "any client can send them: {challenge}");
    let trusting = start_with("token", &[("auth_trust_forwarded_headers", "true")]);
    let challenge = header(&forged(&trusting).await.unwrap(), "www-authenticate");
    assert!(challenge.contains(r#"realm="https://evil.example/token""#), "behind a proxy that sets them: {challenge}");
}

// ---- failed-login throttling -----------------------------------------------------------------

fn basic_get(auth: &Auth, user: &str, password: &str) -> reqwest::RequestBuilder {
    auth.http.get(auth.at("/v2/")).basic_auth(user, Some(password))
}

/// A 429 `TOOMANYREQUESTS` with a `Retry-After` within the 5-minute window.
async fn expect_throttled(response: reqwest::Response) {
    let retry_after: u64 = header(&response, "retry-after").parse().expect("Retry-After is a number of seconds");
    assert!((1..=300).contains(&retry_after), "Retry-After {retry_after}");
    expect_error(response, 429, "TOOMANYREQUESTS").await;
}

#[tokio::test]
async fn failed_logins_of_one_user_are_throttled_across_instances_with_429_and_retry_after() {
    // A fresh instance per request: the count lives in key-value, not in an instance's memory.
    let limits = [("auth_login_failures_per_user", "3"), ("auth_login_failures_per_address", "100")];
    let auth = start_full("basic", &limits, None, &["--instance-reuse", "1"]);
    for attempt in 1..=3 {
        let response = basic_get(&auth, "alice", "guess").send().await.unwrap();
        assert_eq!(response.status(), 401, "attempt {attempt}");
    }
    // Refused before the password is checked: the right one too, until the window ends.
    expect_throttled(basic_get(&auth, "alice", "guess").send().await.unwrap()).await;
    expect_throttled(basic_get(&auth, "alice", PASSWORD).send().await.unwrap()).await;
    // Other users are not affected.
    assert_eq!(basic_get(&auth, "bob", PASSWORD).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn failed_logins_from_one_address_are_throttled_whoever_they_name() {
    let auth =
        start_with("basic", &[("auth_login_failures_per_user", "100"), ("auth_login_failures_per_address", "3")]);
    for user in ["alice", "carol", "nobody-at-all"] {
        assert_eq!(basic_get(&auth, user, "guess").send().await.unwrap().status(), 401, "{user}");
    }
    expect_throttled(basic_get(&auth, "bob", PASSWORD).send().await.unwrap()).await;
}

#[tokio::test]
async fn the_token_endpoint_throttles_failed_password_logins() {
    let auth = start_with("token", &[("auth_login_failures_per_user", "2")]);
    for _ in 0..2 {
        assert_eq!(auth.token_response(Some("alice"), "guess", &[]).await.status(), 401);
    }
    expect_throttled(auth.token_response(Some("alice"), PASSWORD, &[]).await).await;
    let form = [("grant_type", "password"), ("username", "alice"), ("password", PASSWORD), ("service", "berth")];
    expect_throttled(auth.http.post(auth.at("/token")).form(&form).send().await.unwrap()).await;
    assert_eq!(auth.token_response(Some("bob"), PASSWORD, &[]).await.status(), 200);
}

#[tokio::test]
async fn no_failure_is_lost_when_guesses_of_one_user_race() {
    // Sixteen wrong passwords for the same user at once: each is counted (an atomic increment
    // of one counter), so afterwards the user is throttled however they interleaved.
    let auth =
        start_with("basic", &[("auth_login_failures_per_user", "16"), ("auth_login_failures_per_address", "1000")]);
    let guesses = (0..16).map(|i| basic_get(&auth, "alice", &format!("guess-{i}")).send());
    let statuses: Vec<u16> =
        futures::future::join_all(guesses).await.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
    expect_throttled(basic_get(&auth, "alice", PASSWORD).send().await.unwrap()).await;
}

#[tokio::test]
async fn concurrent_guesses_of_one_user_check_no_more_passwords_than_the_limit() {
    // Each guess is counted before its password is checked, then compared: of 48 guesses at once,
    // only as many as the limit get a password check (401); the rest are refused (429) unchecked.
    let limit = 4;
    // One request per instance at once: the guesses run side by side on the runner's threads.
    let auth = start_full(
        "basic",
        &[("auth_login_failures_per_user", &limit.to_string()), ("auth_login_failures_per_address", "1000")],
        None,
        &["--instance-concurrency", "1"],
    );
    let window = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 300;
    let before = window();
    let guesses = (0..48).map(|i| basic_get(&auth, "alice", &format!("guess-{i}")).send());
    let statuses: Vec<u16> =
        futures::future::join_all(guesses).await.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
    // A burst that straddles two 5-minute windows is counted in both.
    let bound = if window() == before { limit } else { 2 * limit };
    assert!(checked <= bound && checked >= limit, "{checked} passwords checked, limit {limit}: {statuses:?}");
    expect_throttled(basic_get(&auth, "alice", PASSWORD).send().await.unwrap()).await;
}

#[tokio::test]
async fn a_fleet_logging_in_with_one_account_at_once_is_never_throttled() {
    // Checks of the same password share one count while they run, and a right one gives it back:
    // 48 logins at once (one per instance), by Basic and at the token endpoint, against a limit
    // of 4, are all served; afterwards the user has every failure of the window left.
    let limit = 4;
    let auth = start_full(
        "token",
        &[("auth_login_failures_per_user", &limit.to_string()), ("auth_login_failures_per_address", "1000")],
        None,
        &["--instance-concurrency", "1"],
    );
    for _ in 0..2 {
        let logins = (0..48).map(|_| auth.token_response(Some("alice"), PASSWORD, &[]));
        let statuses: Vec<u16> = futures::future::join_all(logins).await.iter().map(|r| r.status().as_u16()).collect();
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    }
    for attempt in 1..=limit {
        assert_eq!(auth.token_response(Some("alice"), "guess", &[]).await.status(), 401, "failure {attempt}");
    }
    expect_throttled(auth.token_response(Some("alice"), "guess", &[]).await).await;
    // The same in basic mode, where every request checks its password.
    let basic = start_full(
        "basic",
        &[("auth_login_failures_per_user", &limit.to_string()), ("auth_login_failures_per_address", "1000")],
        None,
        &["--instance-concurrency", "1"],
    );
    let logins = (0..48).map(|_| basic_get(&basic, "alice", PASSWORD).send());
    for response in futures::future::join_all(logins).await {
        assert_eq!(response.unwrap().status(), 200);
    }
    assert_eq!(basic_get(&basic, "alice", "guess").send().await.unwrap().status(), 401, "no failure was left counted");
}

// ---- token lifetimes -------------------------------------------------------------------------

/// The claims of a token, read without checking it (the test knows where it came from).
fn payload(token: &str) -> serde_json::Value {
    use base64::Engine;
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn refresh_grants_never_extend_a_login_past_the_longest_session() {
    let auth = start_with("token", &[("auth_session_max_seconds", "100")]);
    let login = [
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", PASSWORD),
        ("service", "berth"),
        ("access_type", "offline"),
    ];
    let body = json(auth.http.post(auth.at("/token")).form(&login).send().await.unwrap()).await;
    let first = body["refresh_token"].as_str().expect("a refresh token").to_owned();
    let claims = payload(&first);
    let auth_time = claims["auth_time"].as_u64().expect("refresh tokens carry the login's time");
    assert!(claims["exp"].as_u64().unwrap() <= auth_time + 100, "{claims}");
    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", first.as_str()),
        ("service", "berth"),
        ("access_type", "offline"),
    ];
    let body = json(auth.http.post(auth.at("/token")).form(&refresh).send().await.unwrap()).await;
    let second = payload(body["refresh_token"].as_str().expect("a new refresh token"));
    assert_eq!(second["auth_time"].as_u64(), Some(auth_time), "the login time is kept, not renewed");
    assert!(second["exp"].as_u64().unwrap() <= auth_time + 100, "{second}");
}

#[tokio::test]
async fn a_token_request_may_ask_for_at_most_64_scopes() {
    let auth = start("token");
    let scopes: Vec<String> = (0..65).map(|i| format!("repository:team/app{i}:pull")).collect();
    let mut query: Vec<(&str, &str)> = vec![("service", "berth")];
    query.extend(scopes.iter().take(64).map(|s| ("scope", s.as_str())));
    assert_eq!(auth.token_response(Some("alice"), PASSWORD, &query).await.status(), 200);
    query.push(("scope", scopes[64].as_str()));
    expect_error(auth.token_response(Some("alice"), PASSWORD, &query).await, 400, "UNSUPPORTED").await;
}
