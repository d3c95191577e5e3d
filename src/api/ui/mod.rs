//! The web UI at `/ui/`: server-rendered pages of what the caller may pull (no JavaScript, no
//! asset from elsewhere: one stylesheet in the component), with the API's access control.
//!
//! ```text
//! GET  /ui/                                  repositories (?q= prefix, ?cursor= next page)
//! GET  /ui/repo/<name>                       its tags (?last= next page): digest, push time, size, platforms
//! GET  /ui/repo/<name>/manifest/<digest>     layers, config, platforms, referrers, pull commands
//! GET  /ui/login, POST /ui/login             a form; the session cookie
//! POST /ui/logout
//! GET  /ui/style.css
//! ```
//!
//! **Access.** A page shows a repository only to a caller the policy lets pull it (everyone when
//! authentication is off); a repository the caller may not pull answers exactly as one that does
//! not exist, and never appears in a listing, a search or a count. The caller is the user of the
//! session cookie (`berth_ui`: the user and an expiry, sealed with ChaCha20-Poly1305 under a key
//! derived from the deployment's secrets; `HttpOnly; Secure; SameSite=Strict`), else anonymous.
//! Forms that change state (log in, log out) carry a CSRF token that must equal the `berth_csrf`
//! cookie (double submit, besides `SameSite=Strict`).
//!
//! Every page reads the store a page at a time (at most [`PAGE`] entries).

mod pages;

use crate::auth::config::Mode;
use crate::auth::scope::Actions;
use crate::registry::store::{BlobStore, MetaStore, Stores};
use crate::wire::errcode::RegistryError;
use crate::wire::message::{Request, Response};
use http::{HeaderValue, Method, StatusCode, header};

/// Entries one page shows at most.
pub const PAGE: usize = 50;
/// How long a session lasts.
const SESSION_SECS: u64 = 12 * 3600;
const SESSION_COOKIE: &str = "berth_ui";
const CSRF_COOKIE: &str = "berth_csrf";
const SESSION_PURPOSE: &[u8] = b"berth ui session v1";
/// The stylesheet, named by its version so it can be cached for good.
const STYLE: &str = include_str!("style.css");
const STYLE_PATH: &str = "/ui/style-1.css";
/// Nothing but this origin's stylesheet and form posts: no script, no frame, no other origin.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

pub fn serves(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// Who is looking: the session's user, if any.
pub struct Viewer {
    pub user: Option<String>,
    /// The CSRF token of the forms on this page (the cookie's, or a new one to set).
    csrf: String,
    new_csrf: bool,
}

impl Viewer {
    /// Whether this viewer may see repository `name` (pull it).
    pub fn sees<M, B>(&self, stores: &Stores<M, B>, name: &str) -> bool {
        let auth = &stores.config.auth;
        auth.mode == Mode::None || auth.policy.allowed(self.user.as_deref(), name).contains(Actions::PULL)
    }
}

pub async fn handle<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    req: Request<B::Incoming>,
) -> Result<Response<B::Outgoing>, RegistryError> {
    let viewer = viewer(stores, &req);
    let path = req.path.trim_end_matches('/').to_owned();
    let page = match (req.method.clone(), path.as_str()) {
        (Method::GET, p) if p == STYLE_PATH => {
            return Ok(Response::new(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/css; charset=utf-8")
                .header(header::CACHE_CONTROL, "public, max-age=31536000, immutable")
                .full(STYLE.as_bytes().to_vec()));
        }
        (Method::GET, "/ui") => pages::repositories(stores, &viewer, &req).await?,
        (Method::GET, "/ui/login") => Html::page("Log in", login_form(&viewer, None)),
        (Method::POST, "/ui/login") => return login(stores, viewer, req).await,
        (Method::POST, "/ui/logout") => return logout(stores, viewer, req).await,
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
        response = set_cookie(
            response,
            &format!("{CSRF_COOKIE}={}; Path=/ui; HttpOnly; Secure; SameSite=Strict", viewer.csrf),
        );
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
            "<form method=\"post\" action=\"/ui/logout\" class=\"who\">{} <input type=\"hidden\" name=\"csrf\" \
             value=\"{}\"><button>Log out</button></form>",
            esc(user),
            esc(&viewer.csrf)
        ),
        None => "<a class=\"who\" href=\"/ui/login\">Log in</a>".to_owned(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><title>{} · Berth</title><link rel=\"stylesheet\" \
         href=\"{STYLE_PATH}\"></head><body><header><a class=\"brand\" href=\"/ui/\">Berth</a>{who}</header>\
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

fn viewer<M, B>(stores: &Stores<M, B>, req: &Request<B::Incoming>) -> Viewer
where
    B: BlobStore,
{
    let auth = &stores.config.auth;
    let user = cookie(req, SESSION_COOKIE)
        .and_then(|sealed| super::cursor::open_for(auth, SESSION_PURPOSE, sealed))
        .and_then(|session| {
            let (user, expiry) = session.split_once('\n')?;
            let live = expiry.parse::<u64>().ok()? > (stores.now)();
            (live && auth.mode != Mode::None && auth.users.contains_key(user)).then(|| user.to_owned())
        });
    match cookie(req, CSRF_COOKIE).filter(|c| c.len() == 32 && c.bytes().all(|b| b.is_ascii_hexdigit())) {
        Some(csrf) => Viewer { user, csrf: csrf.to_owned(), new_csrf: false },
        None => Viewer { user, csrf: hex::encode((stores.random)()), new_csrf: true },
    }
}

fn login_form(viewer: &Viewer, said: Option<&str>) -> String {
    let said = said.map(|s| format!("<p class=\"said\">{}</p>", esc(s))).unwrap_or_default();
    format!(
        "{said}<form method=\"post\" action=\"/ui/login\" class=\"login\"><input type=\"hidden\" name=\"csrf\" \
         value=\"{}\"><label>User <input name=\"user\" autocomplete=\"username\" required></label><label>Password \
         <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button>Log in</button></form>",
        esc(&viewer.csrf)
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

async fn login<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    viewer: Viewer,
    req: Request<B::Incoming>,
) -> Result<Response<B::Outgoing>, RegistryError> {
    let fields = form(stores, req).await?;
    if !csrf_ok(&viewer, &fields) {
        let mut page = Html::page("Log in", login_form(&viewer, Some("The form expired: try again.")));
        page.status = StatusCode::FORBIDDEN;
        return Ok(respond(&viewer, page));
    }
    let auth = &stores.config.auth;
    let (user, password) =
        (fields.get("user").cloned().unwrap_or_default(), fields.get("password").cloned().unwrap_or_default());
    if auth.mode == Mode::None || !auth.check_password(&user, &password) {
        let said = if auth.mode == Mode::None {
            "Authentication is off: everybody sees everything."
        } else {
            "Wrong user or password."
        };
        let mut page = Html::page("Log in", login_form(&viewer, Some(said)));
        page.status = StatusCode::UNAUTHORIZED;
        return Ok(respond(&viewer, page));
    }
    stores.log(format_args!("ui: {user} logged in"));
    let session = format!("{user}\n{}", (stores.now)() + SESSION_SECS);
    let sealed = super::cursor::seal_for(auth, SESSION_PURPOSE, &session, (stores.random)());
    let response =
        Response::new(StatusCode::SEE_OTHER).header(header::LOCATION, "/ui/").header(header::CACHE_CONTROL, "no-store");
    let cookie =
        format!("{SESSION_COOKIE}={sealed}; Path=/ui; Max-Age={SESSION_SECS}; HttpOnly; Secure; SameSite=Strict");
    Ok(set_cookie(response, &cookie).empty())
}

async fn logout<M: MetaStore, B: BlobStore>(
    stores: &Stores<M, B>,
    viewer: Viewer,
    req: Request<B::Incoming>,
) -> Result<Response<B::Outgoing>, RegistryError> {
    let fields = form(stores, req).await?;
    if !csrf_ok(&viewer, &fields) {
        let mut page = Html::page("Log out", "<p>The form expired: try again.</p>".to_owned());
        page.status = StatusCode::FORBIDDEN;
        return Ok(respond(&viewer, page));
    }
    let response =
        Response::new(StatusCode::SEE_OTHER).header(header::LOCATION, "/ui/").header(header::CACHE_CONTROL, "no-store");
    let cookie = format!("{SESSION_COOKIE}=; Path=/ui; Max-Age=0; HttpOnly; Secure; SameSite=Strict");
    Ok(set_cookie(response, &cookie).empty())
}
