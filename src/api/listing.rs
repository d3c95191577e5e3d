//! Paginated listings (tags, catalog, referrers) over index objects: `n` and `last` query
//! parameters, and a `Link: <...>; rel="next"` header when more remain.
//!
//! Every page is bounded, whatever the repository holds: at most [`MAX_ENTRIES`] entries (a
//! larger `n` is clamped, and a request without `n` gets that many) and about
//! [`MAX_PAGE_BYTES`] of them. The spec allows fewer results than `n` when a `Link` follows, and
//! clients follow it. The entries are read from the store a store page at a time
//! ([`ObjectPages`]), so answering one page never holds more than one store page of names and
//! one response page of entries.

use crate::registry::store::{BlobStore, ObjectPages, Stores};
use crate::wire::errcode::{ErrorCode, RegistryError};
use crate::wire::manifest::MAX_MANIFEST_SIZE;
use crate::wire::message::Request;

/// The most entries one page holds (CNCF Distribution's default `maxentries` for the catalog).
pub const MAX_ENTRIES: usize = 1000;

/// The most bytes of entries one page holds, a little under the manifest limit: a referrers page
/// is an image index, and clients read it with the limit they use for manifests (4 MiB in
/// oras-go). Tags and repository names never come near it (1000 names of 255 bytes).
pub const MAX_PAGE_BYTES: usize = MAX_MANIFEST_SIZE - 64 * 1024;

/// What a client asked for, bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// How many entries at most: `n` clamped to [`MAX_ENTRIES`], or that without `n`.
    pub n: usize,
    /// The entry the page starts after (exclusive), as the client names it.
    pub last: Option<String>,
}

impl Page {
    pub fn from_request<B>(req: &Request<B>) -> Result<Page, RegistryError> {
        let n = match req.query_param("n") {
            None => MAX_ENTRIES,
            Some(n) => parse_count(&n)?.min(MAX_ENTRIES),
        };
        Ok(Page { n, last: req.query_param("last").filter(|l| !l.is_empty()) })
    }
}

/// A count: any run of digits, however large (it is clamped afterwards); anything else is
/// `PAGINATION_NUMBER_INVALID`.
fn parse_count(n: &str) -> Result<usize, RegistryError> {
    if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(n.parse().unwrap_or(usize::MAX));
    }
    Err(RegistryError::new(ErrorCode::PaginationNumberInvalid, format!("n={n:?} is not a count")))
}

/// One listed entry and what it adds to the response, in bytes.
pub struct Kept<T> {
    pub entry: T,
    pub bytes: usize,
}

impl Kept<String> {
    /// A name listed as it is (a tag, a repository).
    pub fn name(name: &str) -> Kept<String> {
        Kept { entry: name.to_owned(), bytes: name.len() }
    }
}

/// Up to `n` entries (and [`MAX_PAGE_BYTES`]) after the index object `<prefix><after>`, in
/// lexical order of their names (index objects under `prefix`, prefix removed), each as `keep`
/// makes it (`None`: not listed); and whether more remain. A page always holds at least one
/// entry when any remains, however large: else a listing could never get past it.
pub async fn collect<M, B: BlobStore, T, F>(
    stores: &Stores<M, B>,
    prefix: &str,
    after: Option<&str>,
    n: usize,
    keep: F,
) -> Result<(Vec<T>, bool), RegistryError>
where
    F: AsyncFnMut(&str) -> Result<Option<Kept<T>>, RegistryError>,
{
    let collected = collect_within(stores, prefix, after, n, usize::MAX, keep).await?;
    Ok((collected.entries, collected.more))
}

/// A page of entries, and where it stopped.
pub struct Collected<T> {
    pub entries: Vec<T>,
    /// More may remain.
    pub more: bool,
    /// The last name looked at, when the page stopped because it had looked at as many names as
    /// it may (the next page starts after it, whether or not it was listed).
    pub looked_to: Option<String>,
}

/// As [`collect`], looking at `examine` names at most: a listing that keeps few of the names
/// (a catalog for a caller who may pull little) stops there, with fewer entries than `n`.
pub async fn collect_within<M, B: BlobStore, T, F>(
    stores: &Stores<M, B>,
    prefix: &str,
    after: Option<&str>,
    n: usize,
    examine: usize,
    mut keep: F,
) -> Result<Collected<T>, RegistryError>
where
    F: AsyncFnMut(&str) -> Result<Option<Kept<T>>, RegistryError>,
{
    let mut out = Vec::new();
    if n == 0 {
        return Ok(Collected { entries: out, more: false, looked_to: None });
    }
    let (mut bytes, mut examined) = (0, 0);
    let mut last_examined: Option<String> = None;
    let mut pages = ObjectPages::new(&stores.blobs, prefix, after.map(|after| format!("{prefix}{after}")));
    while let Some(objects) = pages.next().await? {
        for object in &objects {
            let name = &object[prefix.len()..];
            if examined == examine && last_examined.is_some() {
                // `name` is not looked at: the next page starts after the last one that was.
                return Ok(Collected { entries: out, more: true, looked_to: last_examined });
            }
            examined += 1;
            if examine != usize::MAX {
                last_examined = Some(name.to_owned());
            }
            let Some(kept) = keep(name).await? else { continue };
            if out.len() == n || (!out.is_empty() && bytes + kept.bytes > MAX_PAGE_BYTES) {
                return Ok(Collected { entries: out, more: true, looked_to: None });
            }
            bytes += kept.bytes;
            out.push(kept.entry);
        }
    }
    Ok(Collected { entries: out, more: false, looked_to: None })
}

/// `Link: </path?n=N&last=L&...>; rel="next"`; `extra`: query parameters the next page must keep
/// (a filter).
pub fn next_link(path: &str, n: usize, last: &str, extra: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("n", &n.to_string()).append_pair("last", last);
    for (key, value) in extra {
        query.append_pair(key, value);
    }
    format!("<{path}?{}>; rel=\"next\"", query.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{block_on, memory_stores};
    use http::{HeaderMap, Method};

    fn page(query: &str) -> Result<Page, RegistryError> {
        let req = Request {
            method: Method::GET,
            path: "/v2/a/tags/list".into(),
            query: Some(query.into()),
            headers: HeaderMap::new(),
            body: (),
            origin: None,
        };
        Page::from_request(&req)
    }

    #[test]
    fn n_above_the_maximum_is_clamped_and_no_n_is_the_maximum() {
        assert_eq!(page("n=5").unwrap().n, 5);
        assert_eq!(page("n=0").unwrap().n, 0);
        assert_eq!(page("n=1000").unwrap().n, MAX_ENTRIES);
        assert_eq!(page("n=5000").unwrap().n, MAX_ENTRIES);
        assert_eq!(page("n=99999999999999999999999999").unwrap().n, MAX_ENTRIES, "past u64");
        assert_eq!(page("last=x").unwrap(), Page { n: MAX_ENTRIES, last: Some("x".into()) });
    }

    #[test]
    fn a_count_that_is_not_a_number_is_pagination_number_invalid() {
        for bad in ["n=-1", "n=", "n=abc", "n=1.5", "n=%2B5"] {
            assert_eq!(page(bad).unwrap_err().code, ErrorCode::PaginationNumberInvalid, "{bad}");
        }
    }

    fn stores_with(
        names: &[&str],
    ) -> crate::registry::store::Stores<crate::testing::MemMeta, crate::testing::MemBlobs> {
        let stores = memory_stores();
        for name in names {
            stores.blobs.0.borrow_mut().insert(format!("p/{name}"), Vec::new());
        }
        stores
    }

    #[test]
    fn a_page_stops_at_n_and_says_whether_more_remain() {
        let stores = stores_with(&["a", "b", "c"]);
        let list = |after: Option<&str>, n| {
            block_on(collect(&stores, "p/", after, n, async |e: &str| Ok(Some(Kept::name(e))))).unwrap()
        };
        assert_eq!(list(None, 2), (vec!["a".to_owned(), "b".to_owned()], true));
        assert_eq!(list(Some("b"), 2), (vec!["c".to_owned()], false));
        assert_eq!(list(None, 3), (vec!["a".to_owned(), "b".to_owned(), "c".to_owned()], false));
        assert_eq!(list(None, 0), (vec![], false));
    }

    #[test]
    fn a_page_stops_before_its_bytes_pass_the_bound_but_holds_one_entry_at_least() {
        let stores = stores_with(&["a", "b", "c"]);
        let big = async |e: &str| Ok(Some(Kept { entry: e.to_owned(), bytes: MAX_PAGE_BYTES / 2 + 1 }));
        let (entries, more) = block_on(collect(&stores, "p/", None, 10, big)).unwrap();
        assert_eq!((entries, more), (vec!["a".to_owned()], true));
        let huge = async |e: &str| Ok(Some(Kept { entry: e.to_owned(), bytes: MAX_PAGE_BYTES * 2 }));
        let (entries, more) = block_on(collect(&stores, "p/", Some("b"), 10, huge)).unwrap();
        assert_eq!((entries, more), (vec!["c".to_owned()], false));
    }

    #[test]
    fn the_next_link_keeps_the_filter() {
        assert_eq!(
            next_link("/v2/a/referrers/sha256:00", 2, "sha256:11", &[("artifactType", "application/x+y")]),
            r#"</v2/a/referrers/sha256:00?n=2&last=sha256%3A11&artifactType=application%2Fx%2By>; rel="next""#
        );
    }
}
