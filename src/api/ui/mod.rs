//! The web UI at `/ui/`: server-rendered pages of what the caller may pull (no JavaScript, no
//! asset from elsewhere: one stylesheet in the component), with the API's access control.
//!
//! ```text
//! GET  /ui/                                  repositories (?q= prefix, ?cursor= next page)
//! GET  /ui/repo/<name>                       its tags (?last= next page): digest, push time, size, platforms
//! GET  /ui/repo/<name>/manifest/<digest>     layers, config, platforms, referrers, pull commands
//! POST /ui/repo/<name>/untag                delete a tag (form: tag, csrf), for who may delete
//! GET  /ui/admin                             quotas, GC, retention, mirrors, event outboxes (admins)
//! GET  /ui/login, POST /ui/login             a form; the session cookie
//! POST /ui/logout
//! GET  /ui/style-2.css
//! ```
//!
//! **Access.** A page shows a repository only to a caller the policy lets pull it (everyone when
//! authentication is off); a repository the caller may not pull answers exactly as one that does
//! not exist, and never appears in a listing or a search. The caller is the user of the session
//! cookie (`__Host-berth_ui`: the user, an expiry and a digest of the user's password hash,
//! sealed with ChaCha20-Poly1305 under a key from `auth_token_secret` alone, so that neither the
//! users' hashes nor an old password make one; `HttpOnly; Secure; SameSite=Strict`), else
//! anonymous. Without `auth_token_secret` there are no sessions (the form says so). A password
//! change ends that user's sessions, and so does a logout: it moves the user's session
//! generation on (`keys::ui_session_generation`, a counter), which a session carries from its
//! login and every page with a session compares, so a copied cookie ends with the browser's.
//! The login form is throttled like every password check (`super::login`). Forms that change
//! state carry a CSRF token that must equal the `__Host-berth_csrf` cookie (double submit,
//! besides `SameSite=Strict`). The `__Host-` cookies need HTTPS (browsers take `localhost` and
//! `127.0.0.1` for secure too).
//!
//! Every page reads the store a page at a time (at most [`PAGE`] entries).

mod admin;
mod pages;

use crate::auth::config::Mode;
use crate::auth::scope::Actions;
use crate::registry::keys;
use crate::registry::store::{BlobStore, MetaStore, Stores, internal};
use crate::wire::errcode::RegistryError;
use crate::wire::message::{Request, Response};
use crate::wire::name::RepoName;
use crate::wire::route::Route;
use http::{HeaderValue, Method, StatusCode, header};

/// Entries one page shows at most.
pub const PAGE: usize = 50;
/// How long a session lasts.
const SESSION_SECS: u64 = 12 * 3600;
const SESSION_COOKIE: &str = "__Host-berth_ui";
const CSRF_COOKIE: &str = "__Host-berth_csrf";
const SESSION_PURPOSE: &[u8] = b"berth ui session v1";
/// The stylesheet, named by its version so it can be cached for good.
const STYLE: &str = include_str!("style.css");
const STYLE_PATH: &str = "/ui/style-2.css";
/// The last component of a tag delete's path.
const UNTAG: &str = "/untag";
/// Nothing but this origin's stylesheet and form posts: no script, no frame, no other origin.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

pub fn serves(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// Who is looking: the session's user, if any.
#[derive(Clone)]
pub struct Viewer {
    pub user: Option<String>,
    /// The user as the policy sees them (the API's rules).
    identity: crate::auth::Identity,
    /// The CSRF token of the forms on this page (the cookie's, or a new one to set).
    csrf: String,
    new_csrf: bool,
    /// The admin page is linked from every page.
    admin: bool,
}

impl Viewer {
    /// Whether this viewer may see repository `name`: the catalog's rule (they may pull it).
    pub fn sees<M, B>(&self, stores: &Stores<M, B>, name: &str) -> bool {
        self.identity.lists(&stores.config.auth, name)
    }

    /// Whether this viewer may delete tags of repository `name` (the API's rule: the policy's
    /// `delete`; a mirrored repository is read-only).
    pub fn may_delete<M, B>(&self, stores: &Stores<M, B>, name: &RepoName) -> bool {
        self.identity.may(&stores.config.auth, name.as_str(), Actions::DELETE)
            && stores.config.mirrors.target(name).is_none()
    }

    /// Whether this viewer may see the admin page (the admin API's rule).
    pub fn administers(&self) -> bool {
        self.admin
    }

    /// A form's hidden CSRF field.
    pub fn csrf_field(&self) -> String {
        format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", esc(&self.csrf))
    }
}

/// A UI request's answer: a page, also when the store fails (with the API's status and words).
pub async fn handle<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    req: Request<B::Incoming>,
) -> Result<Response<B::Outgoing>, RegistryError> {
    // The stylesheet needs no viewer (nor the store).
    if req.method == Method::GET && req.path == STYLE_PATH {
        return Ok(Response::new(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/css; charset=utf-8")
            .header(header::CACHE_CONTROL, "public, max-age=31536000, immutable")
            .full(STYLE.as_bytes().to_vec()));
    }
    // A logout the store cannot record still ends this browser's session.
    let logging_out = req.method == Method::POST && req.path.trim_end_matches('/') == "/ui/logout";
    let error_page = |viewer: &Viewer, err: &RegistryError| {
        let page = failed(stores, viewer, err);
        if logging_out { set_cookie(page, &ended_session_cookie()) } else { page }
    };
    let viewer = match viewer(stores, &req).await {
        Ok(viewer) => viewer,
        Err(err) => {
            let nobody = Viewer {
                identity: crate::auth::Identity::of_user(&stores.config.auth, None),
                user: None,
                csrf: String::new(),
                new_csrf: false,
                admin: false,
            };
            return Ok(error_page(&nobody, &err));
        }
    };
    match route(stores, &viewer, req).await {
        Ok(response) => Ok(response),
        Err(err) => Ok(error_page(&viewer, &err)),
    }
}

/// The cookie that ends this browser's session.
fn ended_session_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
}

/// An error as a page: the status and words the API would answer (an internal error's detail
/// only in the log, the request id on the page).
fn failed<M, B, S>(stores: &Stores<M, B>, viewer: &Viewer, err: &RegistryError) -> Response<S> {
    let told = super::as_told(stores, err);
    let mut said = told.detail.as_deref().unwrap_or(told.code.message()).to_owned();
    // The request id, for a report (the API's JSON bodies carry it the same way).
    let id = stores.request_id.as_str();
    if !said.contains(id) {
        said = format!("{said} (request {id})");
    }
    let body = format!("<p class=\"said\">{}</p><p><a href=\"/ui/\">Repositories</a></p>", esc(&said));
    refused(viewer, told.status(), "Something went wrong", body)
}

async fn route<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    viewer: &Viewer,
    req: Request<B::Incoming>,
) -> Result<Response<B::Outgoing>, RegistryError> {
    let viewer = viewer.clone();
    let path = req.path.trim_end_matches('/').to_owned();
    let page = match (req.method.clone(), path.as_str()) {
        (Method::GET, "/ui") => pages::repositories(stores, &viewer, &req).await?,
        (Method::GET, "/ui/admin") => admin::page(stores, &viewer).await?,
        (Method::GET, "/ui/login") => Html::page("Log in", login_form(&viewer, None)),
        (Method::POST, "/ui/login") => return login(stores, viewer, req).await,
        (Method::POST, "/ui/logout") => return logout(stores, viewer, req).await,
        (Method::POST, p) if let Some(name) = p.strip_prefix("/ui/repo/").and_then(|r| r.strip_suffix(UNTAG)) => {
            let name = name.to_owned();
            return untag(stores, viewer, req, &name).await;
        }
        (Method::GET, p) if p.starts_with("/ui/repo/") => pages::repository(stores, &viewer, &req, &p[9..]).await?,
        _ => Html::not_found(),
    };
    Ok(respond(&viewer, page))
}

/// A page with the headers every page has.
fn respond<S>(viewer: &Viewer, page: Html) -> Response<S> {
    let mut response = Response::new(page.status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::CONTENT_SECURITY_POLICY, CSP)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::REFERRER_POLICY, "same-origin");
    if viewer.new_csrf {
        response =
            set_cookie(response, &format!("{CSRF_COOKIE}={}; Path=/; HttpOnly; Secure; SameSite=Strict", viewer.csrf));
    }
    let body = layout(viewer, &page);
    response.full(body.into_bytes())
}

fn set_cookie<S>(mut response: Response<S>, cookie: &str) -> Response<S> {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers.append(header::SET_COOKIE, value);
    }
    response
}

/// A page's content, before the layout.
pub struct Html {
    status: StatusCode,
    title: String,
    body: String,
}

impl Html {
    pub fn page(title: &str, body: String) -> Html {
        Html { status: StatusCode::OK, title: title.to_owned(), body }
    }

    /// The same answer for what does not exist and what the viewer may not see.
    pub fn not_found() -> Html {
        Html {
            status: StatusCode::NOT_FOUND,
            title: "Not found".to_owned(),
            body: "<p>Nothing here, or nothing you may see. <a href=\"/ui/\">Repositories</a></p>".to_owned(),
        }
    }
}

fn layout(viewer: &Viewer, page: &Html) -> String {
    let who = match &viewer.user {
        Some(user) => format!(
            "<form method=\"post\" action=\"/ui/logout\" class=\"who\">{} {}<button>Log out</button></form>",
            esc(user),
            viewer.csrf_field()
        ),
        None => "<a class=\"who\" href=\"/ui/login\">Log in</a>".to_owned(),
    };
    let admin = if viewer.admin { "<a class=\"admin\" href=\"/ui/admin\">Administration</a>" } else { "" };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><title>{} · Berth</title><link rel=\"stylesheet\" \
         href=\"{STYLE_PATH}\"></head><body><header><a class=\"brand\" href=\"/ui/\">Berth</a><nav>{admin}{who}</nav></header>\
         <main><h1>{}</h1>{}</main></body></html>",
        esc(&page.title),
        esc(&page.title),
        page.body
    )
}

/// Text made safe for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A query or form value made safe for a URL.
pub fn url_escape(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn cookie<'a, B>(req: &'a Request<B>, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn viewer<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    req: &Request<B::Incoming>,
) -> Result<Viewer, RegistryError> {
    let auth = &stores.config.auth;
    let session = cookie(req, SESSION_COOKIE)
        .zip(auth.secret_key(SESSION_PURPOSE))
        .and_then(|(sealed, key)| super::cursor::open_with(&key, sealed))
        .and_then(|session| {
            let mut parts = session.split('\n');
            let (user, expiry, hash) = (parts.next()?, parts.next()?.parse::<u64>().ok()?, parts.next()?);
            // The user's session generation when it was made (sessions made before there were
            // generations: 0).
            let generation = parts.next().map_or(Some(0), |g| g.parse::<i64>().ok())?;
            let live = expiry > (stores.now)();
            let same_password = auth.users.get(user).is_some_and(|h| password_tag(h) == hash);
            (live && auth.mode != Mode::None && same_password).then(|| (user.to_owned(), generation))
        });
    // A logout ends every session of its user made before it, wherever it was copied to: it
    // moves the user's generation on (a counter, not a clock: instances' clocks may differ).
    let user = match session {
        Some((user, generation)) => (session_generation(stores, &user).await? == generation).then_some(user),
        None => None,
    };
    let identity = crate::auth::Identity::of_user(auth, user.clone());
    let admin = identity.administers(auth);
    Ok(match cookie(req, CSRF_COOKIE).filter(|c| c.len() == 32 && c.bytes().all(|b| b.is_ascii_hexdigit())) {
        Some(csrf) => Viewer { identity, user, csrf: csrf.to_owned(), new_csrf: false, admin },
        None => Viewer { identity, user, csrf: hex::encode((stores.random)()), new_csrf: true, admin },
    })
}

/// The user's session generation: how many times they logged out (0 before the first).
async fn session_generation<M: MetaStore, B>(stores: &Stores<M, B>, user: &str) -> Result<i64, RegistryError> {
    // An increment of 0 reads a counter in whichever form the store keeps it.
    stores.meta.increment(&keys::ui_session_generation(user), 0).await.map_err(internal)
}

/// What a session says of the password it was made with: a digest of the user's hash, so that a
/// new password ends the sessions made with the old one.
fn password_tag(hash: &str) -> String {
    crate::wire::digest::Digest::of(crate::wire::digest::Algorithm::Sha256, hash.as_bytes()).hex()[..16].to_owned()
}

fn login_form(viewer: &Viewer, said: Option<&str>) -> String {
    let said = said.map(|s| format!("<p class=\"said\">{}</p>", esc(s))).unwrap_or_default();
    format!(
        "{said}<form method=\"post\" action=\"/ui/login\" class=\"login\">{}<label>User <input name=\"user\" \
         autocomplete=\"username\" required></label><label>Password <input name=\"password\" type=\"password\" \
         autocomplete=\"current-password\" required></label><button>Log in</button></form>",
        viewer.csrf_field()
    )
}

/// The form fields of a POST (at most 8 KiB).
async fn form<M, B: BlobStore>(
    stores: &Stores<M, B>,
    req: Request<B::Incoming>,
) -> Result<std::collections::HashMap<String, String>, RegistryError> {
    let bytes = stores
        .blobs
        .collect(req.body, 8 * 1024)
        .await
        .map_err(|e| super::body_error(e, crate::wire::errcode::ErrorCode::Unsupported))?
        .unwrap_or_default();
    Ok(url::form_urlencoded::parse(&bytes).into_owned().collect())
}

/// Whether a form's CSRF token is the cookie's.
fn csrf_ok(viewer: &Viewer, fields: &std::collections::HashMap<String, String>) -> bool {
    !viewer.new_csrf && fields.get("csrf").is_some_and(|c| *c == viewer.csrf)
}

/// A page with an error's status (a form refused: `403` for a CSRF token that does not match,
/// `401` for a wrong password; a failure).
fn refused<S>(viewer: &Viewer, status: StatusCode, title: &str, body: String) -> Response<S> {
    let mut page = Html::page(title, body);
    page.status = status;
    respond(viewer, page)
}

/// The answer that ends a form that worked: back to the repositories, with `cookie` set.
fn done<S>(cookie: &str) -> Response<S> {
    set_cookie(see_other("/ui/"), cookie).empty()
}

fn see_other<S>(location: &str) -> Response<S> {
    Response::new(StatusCode::SEE_OTHER).header(header::LOCATION, location).header(header::CACHE_CONTROL, "no-store")
}

async fn login<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    viewer: Viewer,
    req: Request<B::Incoming>,
) -> Result<Response<B::Outgoing>, RegistryError> {
    let headers = req.headers.clone();
    let fields = form(stores, req).await?;
    if !csrf_ok(&viewer, &fields) {
        let body = login_form(&viewer, Some("The form expired: try again."));
        return Ok(refused(&viewer, StatusCode::FORBIDDEN, "Log in", body));
    }
    let auth = &stores.config.auth;
    let key = auth.secret_key(SESSION_PURPOSE);
    let off = match (auth.mode, &key) {
        (Mode::None, _) => Some("Authentication is off: everybody sees everything."),
        (_, None) => Some("Logging in here needs auth_token_secret to be set: it seals the sessions."),
        _ => None,
    };
    let Some(key) = key.filter(|_| off.is_none()) else {
        return Ok(refused(&viewer, StatusCode::FORBIDDEN, "Log in", login_form(&viewer, off)));
    };
    let (user, password) =
        (fields.get("user").cloned().unwrap_or_default(), fields.get("password").cloned().unwrap_or_default());
    // Throttled as every password check is (per user and per client address).
    let attempt = super::login::Attempt::new(stores, &user, &password, &headers);
    if let Some(retry_after) = super::login::reserve(stores, &attempt).await? {
        stores.count("logins_throttled", 1);
        let said = format!("Too many failed logins: try again in {retry_after} s.");
        return Ok(refused(&viewer, StatusCode::TOO_MANY_REQUESTS, "Log in", login_form(&viewer, Some(&said))));
    }
    let right = auth.check_password(&user, &password);
    super::login::settle(stores, &attempt, !right).await?;
    let Some(hash) = auth.users.get(&user).filter(|_| right) else {
        let body = login_form(&viewer, Some("Wrong user or password."));
        return Ok(refused(&viewer, StatusCode::UNAUTHORIZED, "Log in", body));
    };
    stores.log(format_args!("ui: {user} logged in"));
    let generation = session_generation(stores, &user).await?;
    let session = format!("{user}\n{}\n{}\n{generation}", (stores.now)() + SESSION_SECS, password_tag(hash));
    let sealed = super::cursor::seal_with(&key, &session, (stores.random)());
    Ok(done(&format!("{SESSION_COOKIE}={sealed}; Path=/; Max-Age={SESSION_SECS}; HttpOnly; Secure; SameSite=Strict")))
}

async fn logout<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    viewer: Viewer,
    req: Request<B::Incoming>,
) -> Result<Response<B::Outgoing>, RegistryError> {
    let fields = form(stores, req).await?;
    if !csrf_ok(&viewer, &fields) {
        let body = "<p>The form expired: try again.</p>".to_owned();
        return Ok(refused(&viewer, StatusCode::FORBIDDEN, "Log out", body));
    }
    // Not only this browser's cookie: every session of the user made up to now ends.
    if let Some(user) = &viewer.user {
        stores.meta.increment(&keys::ui_session_generation(user), 1).await.map_err(internal)?;
        stores.log(format_args!("ui: {user} logged out"));
    }
    Ok(done(&ended_session_cookie()))
}

/// `POST /ui/repo/<name>/untag`: delete the form's tag, as `DELETE /v2/<name>/manifests/<tag>`
/// does (immutable tags refused, the event recorded before the answer), for a viewer the policy
/// lets delete in `name`. A repository the viewer may not see answers as a missing one.
async fn untag<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    viewer: Viewer,
    req: Request<B::Incoming>,
    name: &str,
) -> Result<Response<B::Outgoing>, RegistryError> {
    let Ok(name) = RepoName::parse(name) else { return Ok(respond(&viewer, Html::not_found())) };
    if !viewer.sees(stores, name.as_str()) || !crate::registry::blobs::marked(stores, &keys::repo_marker(&name)).await?
    {
        return Ok(respond(&viewer, Html::not_found()));
    }
    // What the event says of the request (its address, agent), read before the body is.
    let head = Request {
        method: Method::DELETE,
        path: req.path.clone(),
        query: None,
        headers: req.headers.clone(),
        body: (),
        origin: req.origin.clone(),
    };
    let fields = form(stores, req).await?;
    let tag = fields.get("tag").cloned().unwrap_or_default();
    let back = format!("<p><a href=\"/ui/repo/{}\">Back to {}</a></p>", esc(name.as_str()), esc(name.as_str()));
    if !csrf_ok(&viewer, &fields) {
        let body = format!("<p>The form expired: try again.</p>{back}");
        return Ok(refused(&viewer, StatusCode::FORBIDDEN, "Delete a tag", body));
    }
    if !viewer.may_delete(stores, &name) {
        let body = format!("<p>You may not delete tags here.</p>{back}");
        return Ok(refused(&viewer, StatusCode::FORBIDDEN, "Delete a tag", body));
    }
    if crate::wire::name::Tag::parse(&tag).is_err() {
        let body = format!("<p>{} is not a tag.</p>{back}", esc(&tag));
        return Ok(refused(&viewer, StatusCode::BAD_REQUEST, "Delete a tag", body));
    }
    let response = match super::manifests::delete(stores, &name, &tag).await {
        Ok(response) => response,
        // Told to the viewer as the API tells a client (a tag gone meanwhile, an immutable one).
        Err(err) if err.status().is_client_error() => {
            let said = err.detail.as_deref().unwrap_or(err.code.message());
            let body = format!("<p>{} was not deleted: {}</p>{back}", esc(&tag), esc(said));
            return Ok(refused(&viewer, err.status(), "Delete a tag", body));
        }
        Err(err) => return Err(err),
    };
    let asked = super::events::Asked::of(&head, &Route::Manifest(name.clone(), tag.clone()));
    super::events::record_request(stores, &viewer.identity, &asked, &response).await?;
    stores.log(format_args!("ui: {} deleted tag {name}:{tag}", viewer.user.as_deref().unwrap_or("anonymous")));
    Ok(see_other(&format!("/ui/repo/{}", name.as_str())).empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{MemBlobs, MemMeta, memory_stores};

    type Mem = Stores<MemMeta, MemBlobs>;

    fn request(method: Method, path: &str) -> Request<Vec<u8>> {
        let headers = http::HeaderMap::new();
        Request { method, path: path.into(), query: None, headers, body: Vec::new(), origin: None }
    }

    /// Stores in basic mode with a token secret (so sessions) and one user, alice.
    fn with_alice() -> Mem {
        let mut stores = memory_stores();
        stores.config.auth.mode = Mode::Basic;
        stores.config.auth.secret = b"0123456789abcdef0123456789abcdef".to_vec();
        stores.config.auth.users.insert("alice".into(), "$2y$04$first".into());
        stores
    }

    /// The user a request is seen as.
    fn user_of(stores: &Mem, req: &Request<Vec<u8>>) -> Option<String> {
        crate::testing::block_on(viewer(stores, req)).unwrap().user
    }

    fn request_with(cookie: &str) -> Request<Vec<u8>> {
        let mut req = request(Method::GET, "/ui/");
        req.headers.insert(header::COOKIE, HeaderValue::from_str(cookie).unwrap());
        req
    }

    #[test]
    fn a_session_names_its_user_until_it_expires_or_the_password_changes() {
        let mut stores = with_alice();
        let key = stores.config.auth.secret_key(SESSION_PURPOSE).unwrap();
        let session = |expiry: u64, hash: &str| {
            let sealed =
                super::super::cursor::seal_with(&key, &format!("alice\n{expiry}\n{}", password_tag(hash)), [1; 16]);
            request_with(&format!("{SESSION_COOKIE}={sealed}"))
        };
        let now = (stores.now)();
        assert_eq!(user_of(&stores, &session(now + 60, "$2y$04$first")).as_deref(), Some("alice"));
        assert_eq!(user_of(&stores, &session(now, "$2y$04$first")), None, "expired");
        stores.config.auth.users.insert("alice".into(), "$2y$04$second".into());
        assert_eq!(user_of(&stores, &session(now + 60, "$2y$04$first")), None, "made with the old password");
        // A key from the users' hashes (what the catalog's cursors use) makes no session.
        let forged =
            super::super::cursor::seal_for(&stores.config.auth, SESSION_PURPOSE, "alice\n99999999999\nx", [2; 16]);
        assert_eq!(user_of(&stores, &request_with(&format!("{SESSION_COOKIE}={forged}"))), None);
    }

    #[test]
    fn a_logout_ends_every_session_of_its_user_made_before_it_and_none_made_after() {
        let stores = with_alice();
        let key = stores.config.auth.secret_key(SESSION_PURPOSE).unwrap();
        let now = (stores.now)();
        let made_in = |generation: Option<i64>| {
            let mut session = format!("alice\n{}\n{}", now + SESSION_SECS, password_tag("$2y$04$first"));
            if let Some(generation) = generation {
                session.push_str(&format!("\n{generation}"));
            }
            request_with(&format!("{SESSION_COOKIE}={}", super::super::cursor::seal_with(&key, &session, [3; 16])))
        };
        let user = |req: &Request<Vec<u8>>| user_of(&stores, req);
        assert_eq!(user(&made_in(Some(0))).as_deref(), Some("alice"));
        assert_eq!(user(&made_in(None)).as_deref(), Some("alice"), "a session from before generations");
        // A logout (in the same second as the next login: no clock is compared).
        crate::testing::block_on(stores.meta.increment(&keys::ui_session_generation("alice"), 1)).unwrap();
        assert_eq!(user(&made_in(Some(0))), None, "a copy of a session made before the logout");
        assert_eq!(user(&made_in(None)), None);
        assert_eq!(user(&made_in(Some(1))).as_deref(), Some("alice"), "a session made after it");
    }

    #[test]
    fn anonymous_viewers_never_administer_even_where_the_policy_grants_anonymous_admin() {
        let mut stores = memory_stores();
        stores.config.auth.mode = Mode::Basic;
        let no_users = Default::default();
        stores.config.auth.policy =
            crate::auth::policy::Policy::parse("* anonymous pull,admin", &no_users, &Default::default()).unwrap();
        let anonymous = crate::testing::block_on(viewer(&stores, &request_with("x=y"))).unwrap();
        assert!(anonymous.sees(&stores, "any/repo"), "the rule applies to pulls");
        assert!(!anonymous.administers(), "the admin API refuses anonymous callers in basic mode; so does the UI");
    }

    #[test]
    fn an_untag_post_without_a_repository_name_is_not_found_not_a_trap() {
        let stores = memory_stores();
        for path in ["/ui/repo/untag", "/ui/repo//untag", "/ui/repo/untag/"] {
            let response = crate::testing::block_on(handle(&stores, request(Method::POST, path))).unwrap();
            assert_eq!(response.status, StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[test]
    fn a_store_that_fails_is_a_page_with_the_apis_status_not_a_json_body() {
        let mut stores = memory_stores();
        stores.meta.fail_gets();
        let response = crate::testing::block_on(handle(&stores, request(Method::GET, "/ui/admin"))).unwrap();
        assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let body = match &response.body {
            crate::wire::message::Body::Full(bytes) => String::from_utf8(bytes.clone()).unwrap(),
            _ => panic!("a page"),
        };
        assert!(body.contains("Something went wrong") && body.contains("unavailable: try again later"), "{body}");
        assert!(!body.contains("gc/cursor"), "the backend's words stay in the log: {body}");
        // The stylesheet needs no store; a logout the store cannot record still ends the cookie.
        let style = crate::testing::block_on(handle(&stores, request(Method::GET, STYLE_PATH))).unwrap();
        assert_eq!(style.status, StatusCode::OK);
        stores.config.auth = with_alice().config.auth;
        let mut logout = request(Method::POST, "/ui/logout");
        let session = format!("alice\n{}\n{}\n0", (stores.now)() + SESSION_SECS, password_tag("$2y$04$first"));
        let key = stores.config.auth.secret_key(SESSION_PURPOSE).unwrap();
        let sealed = super::super::cursor::seal_with(&key, &session, [4; 16]);
        logout.headers.insert(header::COOKIE, HeaderValue::from_str(&format!("{SESSION_COOKIE}={sealed}")).unwrap());
        let logout = crate::testing::block_on(handle(&stores, logout)).unwrap();
        assert_eq!(logout.status, StatusCode::SERVICE_UNAVAILABLE);
        let cleared =
            logout.headers.get_all(header::SET_COOKIE).iter().any(|c| c.to_str().unwrap() == ended_session_cookie());
        assert!(cleared, "{:?}", logout.headers);
    }

    #[test]
    fn text_is_escaped_for_html_content_and_attributes() {
        assert_eq!(esc(r#"<a href="x" onclick='y'>&"#), "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;");
    }
}
