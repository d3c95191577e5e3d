//! Paginated listings (tags, catalog) over index objects: `n` and `last` query parameters, and
//! a `Link: <...>; rel="next"` header when more remain.

use crate::blobs::ObjectPages;
use crate::errcode::{ErrorCode, RegistryError};
use crate::message::Request;
use crate::store::{BlobStore, Stores};

/// What a client asked for.
pub struct Page {
    /// `None`: everything.
    pub n: Option<usize>,
    pub last: Option<String>,
}

impl Page {
    pub fn from_request<B>(req: &Request<B>) -> Result<Page, RegistryError> {
        let n = match req.query_param("n") {
            None => None,
            Some(n) => Some(n.parse::<usize>().map_err(|_| {
                RegistryError::new(ErrorCode::PaginationNumberInvalid, format!("n={n:?} is not a count"))
            })?),
        };
        Ok(Page { n, last: req.query_param("last").filter(|l| !l.is_empty()) })
    }
}

/// Up to `page.n` entries after `page.last` whose names (index objects under `prefix`, prefix
/// removed) pass `keep`, in lexical order; and whether more remain.
pub async fn collect<M, B: BlobStore, F>(
    stores: &Stores<M, B>,
    prefix: &str,
    page: &Page,
    mut keep: F,
) -> Result<(Vec<String>, bool), RegistryError>
where
    F: AsyncFnMut(&str) -> Result<bool, RegistryError>,
{
    let wanted = page.n.unwrap_or(usize::MAX);
    let mut out = Vec::new();
    if wanted == 0 {
        return Ok((out, false));
    }
    let mut pages = ObjectPages::new(&stores.blobs, prefix, page.last.as_ref().map(|last| format!("{prefix}{last}")));
    while let Some(objects) = pages.next().await? {
        for object in &objects {
            let entry = &object[prefix.len()..];
            if keep(entry).await? {
                if out.len() == wanted {
                    return Ok((out, true));
                }
                out.push(entry.to_owned());
            }
        }
    }
    Ok((out, false))
}

/// `Link: </path?n=N&last=L>; rel="next"`.
pub fn next_link(path: &str, n: usize, last: &str) -> String {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("n", &n.to_string())
        .append_pair("last", last)
        .finish();
    format!("<{path}?{query}>; rel=\"next\"")
}
