//! The access decisions, one behaviour a test.

use super::*;
use crate::wire::route::Route;
use http::{HeaderMap, HeaderValue};
use std::collections::BTreeMap;

const HASH: &str = "$2y$04$bKOFBbX2st4s.3cifBS8CeTKuRnPHiEmAhGnQkwQxJGjeuGt/ERWa"; // "secret"
const SECRET: &str = "0123456789abcdef0123456789abcdef";
const NOW: u64 = 1_000_000;

fn config(mode: &str) -> AuthConfig {
    let users = format!("alice:{HASH}\nbob:{HASH}");
    let vars = BTreeMap::from([
        ("auth_mode", mode.to_owned()),
        ("auth_users", users),
        ("auth_policy", "team/* alice pull,push,delete\nteam/* bob pull\npublic/* anonymous pull".to_owned()),
        ("auth_token_secret", SECRET.to_owned()),
    ]);
    AuthConfig::parse(&|name| vars.get(name).cloned()).unwrap()
}

fn request(method: Method, path: &str, authorization: Option<String>) -> (Request<()>, Need) {
    let mut headers = HeaderMap::new();
    if let Some(value) = authorization {
        headers.insert(http::header::AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
    }
    let need = need(&method, &Route::parse(path).unwrap());
    let req = Request {
        method,
        path: path.into(),
        query: None,
        headers,
        body: (),
        origin: Some("http://reg.test:5000".into()),
    };
    (req, need)
}

fn basic(user: &str, password: &str) -> Option<String> {
    use base64::Engine;
    Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))))
}

fn bearer(config: &AuthConfig, user: Option<&str>, scopes: &[&str]) -> Option<String> {
    let granted = issue::grant(config, user, &Scope::parse_all(scopes.iter().copied()));
    Some(format!("Bearer {}", issue::access_token(config, user, &granted, NOW, [0; 16])))
}

fn check(config: &AuthConfig, method: Method, path: &str, auth: Option<String>) -> Result<Identity, Denied> {
    let (req, need) = request(method, path, auth);
    authorize(config, &req, &need, NOW)
}

fn code(denied: &Denied) -> (u16, &'static str) {
    (denied.error.status().as_u16(), denied.error.code.as_str())
}

#[test]
fn what_each_route_needs() {
    let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let pull = Actions::PULL;
    let push = Actions::PULL.union(Actions::PUSH);
    let cases = [
        (Method::GET, "/v2/".to_owned(), Need::Login),
        (Method::GET, "/v2/_catalog".into(), Need::Catalog),
        (Method::GET, "/v2/a/tags/list".into(), Need::Repository("a".into(), pull)),
        (Method::HEAD, "/v2/a/manifests/x".into(), Need::Repository("a".into(), pull)),
        (Method::PUT, "/v2/a/manifests/x".into(), Need::Repository("a".into(), push)),
        (Method::DELETE, "/v2/a/manifests/x".into(), Need::Repository("a".into(), Actions::DELETE)),
        (Method::GET, format!("/v2/a/blobs/{d}"), Need::Repository("a".into(), pull)),
        (Method::DELETE, format!("/v2/a/blobs/{d}"), Need::Repository("a".into(), Actions::DELETE)),
        (Method::POST, "/v2/a/b/blobs/uploads/".into(), Need::Repository("a/b".into(), push)),
        (Method::GET, "/v2/a/blobs/uploads/x".into(), Need::Repository("a".into(), push)),
        (Method::DELETE, "/v2/a/blobs/uploads/x".into(), Need::Repository("a".into(), push)),
        (Method::GET, format!("/v2/a/referrers/{d}"), Need::Repository("a".into(), pull)),
        (Method::GET, "/v2/_berth/quotas".into(), Need::Admin),
        (Method::POST, "/v2/_berth/quotas/recount".into(), Need::Admin),
        (Method::POST, "/v2/_berth/storage/check".into(), Need::Admin),
        (Method::POST, "/v2/_berth/gc".into(), Need::Admin),
    ];
    for (method, path, expected) in cases {
        assert_eq!(need(&method, &Route::parse(&path).unwrap()), expected, "{method} {path}");
    }
}

#[test]
fn mode_none_lets_everyone_do_everything() {
    let identity = check(&AuthConfig::default(), Method::DELETE, "/v2/x/manifests/y", None).unwrap();
    assert!(identity.may(&AuthConfig::default(), "x", Actions::ALL));
    assert_eq!(identity.subject(), None);
}

#[test]
fn token_mode_without_a_token_is_401_with_a_scoped_challenge() {
    let denied = check(&config("token"), Method::GET, "/v2/team/app/manifests/v1", None).unwrap_err();
    assert_eq!(code(&denied), (401, "UNAUTHORIZED"));
    assert_eq!(
        denied.challenge.as_deref(),
        Some(r#"Bearer realm="http://reg.test:5000/token",service="berth",scope="repository:team/app:pull""#)
    );
    let denied = check(&config("token"), Method::GET, "/v2/", None).unwrap_err();
    assert_eq!(denied.challenge.as_deref(), Some(r#"Bearer realm="http://reg.test:5000/token",service="berth""#));
}

#[test]
fn token_mode_lets_a_token_do_what_it_grants() {
    let c = config("token");
    let token = bearer(&c, Some("alice"), &["repository:team/app:pull,push"]);
    let identity = check(&c, Method::PUT, "/v2/team/app/manifests/v1", token.clone()).unwrap();
    assert_eq!(identity.subject(), Some("alice"));
    assert!(check(&c, Method::GET, "/v2/", token).is_ok(), "any valid token logs in");
}

#[test]
fn token_mode_insufficient_scope() {
    let c = config("token");
    let token = bearer(&c, Some("bob"), &["repository:team/app:pull,push"]);
    let denied = check(&c, Method::PUT, "/v2/team/app/manifests/v1", token).unwrap_err();
    assert_eq!(code(&denied), (401, "UNAUTHORIZED"));
    assert!(denied.challenge.unwrap().ends_with(r#"scope="repository:team/app:pull,push",error="insufficient_scope""#));
}

#[test]
fn token_mode_invalid_token() {
    let c = config("token");
    let denied = check(&c, Method::GET, "/v2/team/app/tags/list", Some("Bearer x.y.z".into())).unwrap_err();
    assert_eq!(code(&denied), (401, "UNAUTHORIZED"));
    assert!(denied.challenge.unwrap().ends_with(r#"error="invalid_token""#));
}

#[test]
fn token_mode_catalog_needs_the_catalog_scope_and_lists_what_the_policy_lets_pull() {
    let c = config("token");
    let without = bearer(&c, Some("bob"), &["repository:team/app:pull"]);
    assert_eq!(code(&check(&c, Method::GET, "/v2/_catalog", without).unwrap_err()), (401, "UNAUTHORIZED"));
    let identity = check(&c, Method::GET, "/v2/_catalog", bearer(&c, Some("bob"), &["registry:catalog:*"])).unwrap();
    assert!(identity.lists(&c, "team/app") && identity.lists(&c, "public/x") && !identity.lists(&c, "secret"));
    let anonymous = check(&c, Method::GET, "/v2/_catalog", bearer(&c, None, &["registry:catalog:*"])).unwrap();
    assert!(anonymous.lists(&c, "public/x") && !anonymous.lists(&c, "team/app"));
}

#[test]
fn basic_mode_checks_credentials_on_every_request() {
    let c = config("basic");
    let identity = check(&c, Method::PUT, "/v2/team/app/manifests/v1", basic("alice", "secret")).unwrap();
    assert_eq!(identity.subject(), Some("alice"));
    for auth in [basic("alice", "wrong"), basic("mallory", "secret"), Some("Bearer abc".into())] {
        let denied = check(&c, Method::GET, "/v2/team/app/manifests/v1", auth).unwrap_err();
        assert_eq!(code(&denied), (401, "UNAUTHORIZED"));
        assert_eq!(denied.challenge.as_deref(), Some(r#"Basic realm="berth",charset="UTF-8""#));
    }
}

#[test]
fn basic_mode_a_user_without_the_action_is_403_denied() {
    let c = config("basic");
    let denied = check(&c, Method::PUT, "/v2/team/app/manifests/v1", basic("bob", "secret")).unwrap_err();
    assert_eq!((code(&denied), denied.challenge), ((403, "DENIED"), None));
}

#[test]
fn basic_mode_anonymous_pull_where_the_policy_says() {
    let c = config("basic");
    assert!(check(&c, Method::GET, "/v2/public/x/manifests/v1", None).is_ok());
    let denied = check(&c, Method::GET, "/v2/team/app/manifests/v1", None).unwrap_err();
    assert_eq!(code(&denied), (401, "UNAUTHORIZED"));
    assert_eq!(code(&check(&c, Method::GET, "/v2/", None).unwrap_err()), (401, "UNAUTHORIZED"));
}

#[test]
fn mounting_without_from_needs_pull_everywhere() {
    let c = config("basic");
    let alice = check(&c, Method::GET, "/v2/", basic("alice", "secret")).unwrap();
    assert!(!alice.pulls_everywhere(&c));
    assert!(Identity::everyone().pulls_everywhere(&c));
}

fn admin_config(mode: &str) -> AuthConfig {
    let users = format!("alice:{HASH}\nbob:{HASH}");
    let vars = BTreeMap::from([
        ("auth_mode", mode.to_owned()),
        ("auth_users", users),
        ("auth_policy", "* alice admin\n* bob *".to_owned()),
        ("auth_token_secret", SECRET.to_owned()),
    ]);
    AuthConfig::parse(&|name| vars.get(name).cloned()).unwrap()
}

#[test]
fn the_admin_api_needs_admin_named_for_every_repository_in_basic_mode() {
    let c = admin_config("basic");
    assert!(check(&c, Method::GET, "/v2/_berth/quotas", basic("alice", "secret")).is_ok());
    let denied = check(&c, Method::GET, "/v2/_berth/quotas", basic("bob", "secret")).unwrap_err();
    assert_eq!(code(&denied), (403, "DENIED"), "`*` is pull, push and delete, not admin");
    let denied = check(&c, Method::GET, "/v2/_berth/quotas", None).unwrap_err();
    assert_eq!(code(&denied), (401, "UNAUTHORIZED"));
}

#[test]
fn the_admin_api_needs_a_token_granting_registry_admin() {
    let c = admin_config("token");
    let token = bearer(&c, Some("alice"), &["registry:admin:*"]);
    assert!(check(&c, Method::GET, "/v2/_berth/quotas", token).is_ok());
    let denied =
        check(&c, Method::GET, "/v2/_berth/quotas", bearer(&c, Some("bob"), &["registry:admin:*"])).unwrap_err();
    assert_eq!(code(&denied), (401, "UNAUTHORIZED"), "bob's token grants nothing there: insufficient_scope");
    let denied = check(&c, Method::GET, "/v2/_berth/quotas", None).unwrap_err();
    assert_eq!(
        denied.challenge.as_deref(),
        Some(r#"Bearer realm="http://reg.test:5000/token",service="berth",scope="registry:admin:*""#)
    );
    // A repository rule naming admin does not open the admin API.
    let scoped = AuthConfig::parse(&|name| match name {
        "auth_mode" => Some("basic".into()),
        "auth_users" => Some(format!("carol:{HASH}")),
        "auth_policy" => Some("team/* carol admin".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(
        code(&check(&scoped, Method::GET, "/v2/_berth/quotas", basic("carol", "secret")).unwrap_err()),
        (403, "DENIED")
    );
}
