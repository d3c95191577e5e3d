//! Property tests of every parser of untrusted input (issue 12, fuzzing): whatever a client
//! sends, a parser answers with a value or an error, never a panic; values generated from the
//! spec's grammars parse, and print back as they were sent, where a type prints.
//!
//! One property a rule, named after it. Counts are modest (see [`config`]) so the whole file
//! runs in seconds in a debug build; a failing case is printed shrunk, and the case found is
//! then pinned by a plain unit test next to the parser.

use crate::api;
use crate::auth::challenge;
use crate::auth::config::{AuthConfig, Mode};
use crate::auth::password::{basic_credentials, is_bcrypt};
use crate::auth::policy::Policy;
use crate::auth::scope::{Actions, Resource, Scope};
use crate::auth::token::{self, Access, Audience, Claims};
use crate::registry::store::Stores;
use crate::testing::{MemBlobs, MemMeta, block_on, memory_stores};
use crate::wire::digest::{Algorithm, Digest};
use crate::wire::errcode::ErrorCode;
use crate::wire::glob::glob_match;
use crate::wire::manifest::{self, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use crate::wire::message::{Body, Request, Response};
use crate::wire::name::{MAX_NAME_LEN, RepoName, Tag};
use crate::wire::range::{RangeRequest, parse_content_range, parse_range};
use crate::wire::reference::Reference;
use crate::wire::route::{Route, url};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// `cases` per property (`PROPTEST_CASES` overrides it, for a long hunt); no regression files are
/// written into the source tree (a case found is kept as a unit test instead).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------------------------
// Generators from the grammars.

/// `[a-z0-9]+ (separator [a-z0-9]+)*`, separator `.` | `_` | `__` | `-+`.
fn component() -> impl Strategy<Value = String> + Clone {
    ("[a-z0-9]{1,20}", vec(("\\.|_|__|-{1,3}", "[a-z0-9]{1,20}"), 0..3)).prop_map(|(first, rest)| {
        rest.into_iter().fold(first, |mut c, (sep, run)| {
            c.push_str(&sep);
            c.push_str(&run);
            c
        })
    })
}

/// A repository name: components joined by `/`, at most 255 characters (trailing components
/// dropped until it fits, so long names near the limit come up too).
fn repo_name() -> impl Strategy<Value = String> + Clone {
    vec(component(), 1..8).prop_map(|mut components| {
        while components.join("/").len() > MAX_NAME_LEN {
            components.pop();
        }
        components.join("/")
    })
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
fn tag() -> impl Strategy<Value = String> + Clone {
    "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"
}

/// A digest Berth supports: `sha256:` + 64 or `sha512:` + 128 lowercase hex characters.
fn digest() -> impl Strategy<Value = String> + Clone {
    prop_oneof!["[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}")), "[0-9a-f]{128}".prop_map(|h| format!("sha512:{h}"))]
}

/// Strings a fuzzer would send: any Unicode, or text over the alphabet the parser looks at
/// (so the interesting branches are reached, not only the first refusal).
fn noise(alphabet: &'static str) -> BoxedStrategy<String> {
    prop_oneof![any::<String>(), proptest::string::string_regex(&format!("[{alphabet}]{{0,80}}")).unwrap()].boxed()
}

// ---------------------------------------------------------------------------------------------
// Repository names and tags (src/wire/name.rs).

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn a_valid_repository_name_round_trips(name in repo_name()) {
        let parsed = RepoName::parse(&name).unwrap();
        prop_assert_eq!(parsed.as_str(), name.as_str());
        prop_assert_eq!(RepoName::parse(&parsed.to_string()).unwrap(), parsed);
    }

    /// Anything accepted is within the alphabet and the length limit, whatever else is wrong.
    #[test]
    fn no_string_panics_the_name_parser(s in noise("a-zA-Z0-9._/\\-%:é")) {
        match RepoName::parse(&s) {
            Ok(name) => {
                prop_assert!(name.as_str().len() <= MAX_NAME_LEN);
                prop_assert!(name.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b)));
            }
            Err(e) => prop_assert_eq!(e.code, ErrorCode::NameInvalid),
        }
    }

    /// Uppercase, `:`, `%`, spaces, non-ASCII, `@`: none is in a repository name.
    #[test]
    fn a_name_with_a_foreign_character_is_name_invalid(
        name in repo_name(),
        at in any::<Index>(),
        foreign in "[A-Z:%@ #?\\\\\u{0}-\u{1f}\u{80}-\u{10ffff}]",
    ) {
        let mut bad = name.clone();
        let at = at.index(name.len() + 1);
        bad.insert_str(at, &foreign);
        prop_assert_eq!(RepoName::parse(&bad).unwrap_err().code, ErrorCode::NameInvalid);
    }

    /// `..`, `___`, `._`, `-.`, a separator at either end of a component, an empty component.
    #[test]
    fn a_name_with_a_bad_separator_or_an_empty_component_is_name_invalid(
        before in component(),
        after in component(),
        bad in select(vec!["..", "___", "._", "_.", "-.", ".-", "_-", "-_", "//", "/.", "./", "/-", "-/", "/_", "_/"]),
        end in select(vec!["", "/", ".", "-", "_"]),
    ) {
        let joined = format!("{before}{bad}{after}");
        prop_assert_eq!(RepoName::parse(&joined).unwrap_err().code, ErrorCode::NameInvalid, "{}", joined);
        if !end.is_empty() {
            for name in [format!("{end}{before}"), format!("{before}{end}")] {
                prop_assert_eq!(RepoName::parse(&name).unwrap_err().code, ErrorCode::NameInvalid, "{}", name);
            }
        }
    }

    /// A name that would be valid but for its length, from 256 characters on.
    #[test]
    fn a_name_longer_than_255_characters_is_name_invalid(name in repo_name(), extra in 0usize..50) {
        let pad = (MAX_NAME_LEN + 1 + extra).saturating_sub(name.len() + 1).max(1);
        let long = format!("{name}/{}", "a".repeat(pad));
        prop_assert!(long.len() > MAX_NAME_LEN);
        prop_assert_eq!(RepoName::parse(&long).unwrap_err().code, ErrorCode::NameInvalid);
    }

    #[test]
    fn a_valid_tag_round_trips(tag in tag()) {
        let parsed = Tag::parse(&tag).unwrap();
        prop_assert_eq!(parsed.as_str(), tag.as_str());
    }

    /// Accepted tags have the grammar's first character and length: an oracle written apart from
    /// the parser.
    #[test]
    fn no_string_panics_the_tag_parser(s in noise("a-zA-Z0-9._\\-:/@")) {
        match Tag::parse(&s) {
            Ok(tag) => {
                let b = tag.as_str().as_bytes();
                prop_assert!((1..=128).contains(&b.len()));
                prop_assert!(!matches!(b[0], b'.' | b'-'));
                prop_assert!(b.iter().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c)));
            }
            Err(e) => prop_assert_eq!(e.code, ErrorCode::TagInvalid),
        }
    }

    #[test]
    fn a_tag_longer_than_128_characters_is_tag_invalid(tag in "[a-zA-Z0-9_][a-zA-Z0-9._-]{128,200}") {
        prop_assert_eq!(Tag::parse(&tag).unwrap_err().code, ErrorCode::TagInvalid);
    }
}

// ---------------------------------------------------------------------------------------------
// Digests and references (src/wire/digest.rs, src/wire/reference.rs).

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn a_valid_digest_round_trips(s in digest()) {
        let d = Digest::parse(&s).unwrap();
        prop_assert_eq!(d.to_string(), s.clone());
        prop_assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
    }

    #[test]
    fn the_digest_of_any_content_round_trips(bytes in vec(any::<u8>(), 0..256), sha512 in any::<bool>()) {
        let algorithm = if sha512 { Algorithm::Sha512 } else { Algorithm::Sha256 };
        let d = Digest::of(algorithm, &bytes);
        prop_assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
    }

    #[test]
    fn no_string_panics_the_digest_parser(s in noise("a-z0-9A-Z:+._=\\-")) {
        match Digest::parse(&s) {
            Ok(d) => prop_assert_eq!(d.to_string(), s),
            Err(e) => prop_assert_eq!(e.code, ErrorCode::DigestInvalid),
        }
    }

    /// One character changed to something that is not lowercase hex, one too many or too few:
    /// refused (Berth never stores content under a digest it cannot verify).
    #[test]
    fn a_digest_with_a_wrong_length_or_a_foreign_character_is_digest_invalid(
        s in digest(),
        at in any::<Index>(),
        foreign in "[^0-9a-f]",
        cut in 1usize..8,
    ) {
        let (algorithm, hex) = s.split_once(':').unwrap();
        let i = at.index(hex.len());
        let replaced = format!("{algorithm}:{}{foreign}{}", &hex[..i], &hex[i + 1..]);
        let short = format!("{algorithm}:{}", &hex[..hex.len() - cut]);
        let long = format!("{s}{}", &hex[..cut]);
        for bad in [replaced, short, long] {
            prop_assert_eq!(Digest::parse(&bad).unwrap_err().code, ErrorCode::DigestInvalid, "{}", bad);
        }
    }

    #[test]
    fn a_reference_round_trips(s in prop_oneof![tag(), digest()]) {
        let reference = Reference::parse(&s).unwrap();
        prop_assert_eq!(matches!(reference, Reference::Digest(_)), s.contains(':'));
        prop_assert_eq!(reference.to_string(), s);
    }

    /// A reference with `:` is judged as a digest, anything else as a tag.
    #[test]
    fn no_string_panics_the_reference_parser(s in noise("a-zA-Z0-9._\\-:")) {
        match Reference::parse(&s) {
            Ok(reference) => prop_assert_eq!(reference.to_string(), s),
            Err(e) if s.contains(':') => prop_assert_eq!(e.code, ErrorCode::DigestInvalid),
            Err(e) => prop_assert_eq!(e.code, ErrorCode::TagInvalid),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// `Range` and `Content-Range` (src/wire/range.rs).

/// Range headers: the usual forms with numbers anywhere in u64 (edges included), or junk.
fn range_header() -> impl Strategy<Value = String> {
    let n = prop_oneof![any::<u64>(), 0u64..300, Just(0), Just(u64::MAX), Just(u64::MAX - 1)];
    prop_oneof![
        (n.clone(), n.clone()).prop_map(|(a, b)| format!("bytes={a}-{b}")),
        n.clone().prop_map(|a| format!("bytes={a}-")),
        n.clone().prop_map(|b| format!("bytes=-{b}")),
        (n.clone(), n).prop_map(|(a, b)| format!("bytes {a}-{b}/*")),
        noise("bytes=0-9 ,/*\\-+"),
    ]
}

proptest! {
    #![proptest_config(config(1000))]

    /// Whatever the header, the answer is the whole blob, nothing, or a non-empty part inside
    /// the blob (so the extents read later are always in bounds).
    #[test]
    fn no_string_panics_the_range_parser(header in range_header(), size in prop_oneof![0u64..1000, any::<u64>()]) {
        match parse_range(Some(&header), size) {
            RangeRequest::Part { start, end } => prop_assert!(start < end && end <= size, "{}: {}..{}", header, start, end),
            RangeRequest::Whole | RangeRequest::Unsatisfiable => {}
        }
    }

    /// `bytes=<first>-<last>` is exactly bytes first..=last, cut at the end of the blob.
    #[test]
    fn a_range_selects_exactly_the_bytes_asked_for(first in 0u64..2000, len in 1u64..2000, size in 0u64..2000) {
        let last = first + len - 1;
        let expected = if first < size {
            RangeRequest::Part { start: first, end: (last + 1).min(size) }
        } else {
            RangeRequest::Unsatisfiable
        };
        prop_assert_eq!(parse_range(Some(&format!("bytes={first}-{last}")), size), expected);
    }

    /// `bytes=-<n>` is the last n bytes (all of a shorter blob).
    #[test]
    fn a_suffix_range_selects_the_last_bytes(n in 1u64..2000, size in 1u64..2000) {
        let expected = RangeRequest::Part { start: size.saturating_sub(n), end: size };
        prop_assert_eq!(parse_range(Some(&format!("bytes=-{n}")), size), expected);
    }

    /// A chunk's range is first ≤ last, and its length (last - first + 1) is a number: the
    /// upload handler computes it without a check.
    #[test]
    fn no_string_panics_the_content_range_parser(header in range_header()) {
        if let Some((first, last)) = parse_content_range(&header) {
            prop_assert!(first <= last);
            prop_assert!((last - first).checked_add(1).is_some(), "{}: length overflows", header);
        }
    }

    /// Any range whose length fits a u64 (the last byte may be u64::MAX, from byte 1 on).
    #[test]
    fn a_content_range_round_trips(
        first in prop_oneof![any::<u64>(), 0u64..1000, Just(1)],
        len in prop_oneof![1u64..1000, any::<u64>().prop_map(|n| n.max(1)), Just(u64::MAX)],
        form in select(vec!["{}-{}", "bytes {}-{}/*", "bytes={}-{}", " {}-{}/1000 "]),
    ) {
        let last = first.saturating_add(len - 1);
        let header = form.replacen("{}", &first.to_string(), 1).replacen("{}", &last.to_string(), 1);
        prop_assert_eq!(parse_content_range(&header), Some((first, last)));
    }

    #[test]
    fn a_backwards_content_range_is_refused(first in 1u64..u64::MAX, back in 1u64..1000) {
        let last = first.saturating_sub(back);
        prop_assert_eq!(parse_content_range(&format!("{first}-{last}")), None);
    }
}

// ---------------------------------------------------------------------------------------------
// Manifests and indexes (src/wire/manifest.rs).

/// Any JSON, with the manifest vocabulary as keys and media types and digests as strings often
/// enough that the parser gets past the shape checks.
fn json_value() -> impl Strategy<Value = Value> {
    let string = prop_oneof![
        select(vec![OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST, "application/json", ""])
            .prop_map(String::from),
        digest(),
        any::<String>(),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop_oneof![Just(2i64), Just(-1), any::<i64>()].prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        string.prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            select(vec![
                "schemaVersion",
                "mediaType",
                "config",
                "layers",
                "manifests",
                "subject",
                "artifactType",
                "annotations",
                "digest",
                "size",
                "urls",
            ])
            .prop_map(String::from),
            any::<String>(),
        ];
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(key, inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A descriptor: (media type, digest, size, whether it is non-distributable).
type Descriptor = (String, String, i64, bool);

fn descriptor() -> impl Strategy<Value = Descriptor> {
    (
        select(vec![
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "application/vnd.oci.image.config.v1+json",
        ]),
        digest(),
        0i64..i64::MAX,
    )
        .prop_map(|(media_type, digest, size)| {
            let foreign = media_type.contains(".nondistributable.") || media_type.contains(".foreign.");
            (media_type.to_owned(), digest, size, foreign)
        })
}

fn descriptor_json((media_type, digest, size, _): &Descriptor) -> Value {
    json!({ "mediaType": media_type, "digest": digest, "size": size })
}

/// The `Content-Type` a client may send with a manifest of `media_type`.
fn content_type(media_type: &'static str) -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(media_type.to_owned())),
        Just(Some(format!("{media_type}; charset=utf-8"))),
        Just(Some("application/json".to_owned())),
        Just(Some("application/octet-stream".to_owned())),
    ]
}

/// An image manifest with an optional subject and artifactType, as JSON.
fn image_manifest() -> impl Strategy<Value = (Value, Descriptor, Vec<Descriptor>)> {
    (descriptor(), vec(descriptor(), 0..5), proptest::option::of(digest()), proptest::option::of("[a-z/.+]{1,30}"))
        .prop_map(|(config, layers, subject, artifact_type)| {
            let mut m = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": descriptor_json(&config),
                "layers": layers.iter().map(descriptor_json).collect::<Vec<_>>(),
            });
            if let Some(subject) = subject {
                m["subject"] = json!({ "mediaType": OCI_MANIFEST, "digest": subject, "size": 1 });
            }
            if let Some(artifact_type) = artifact_type {
                m["artifactType"] = artifact_type.into();
            }
            (m, config, layers)
        })
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn no_bytes_panic_the_manifest_parser(bytes in vec(any::<u8>(), 0..512), content_type in proptest::option::of(any::<String>())) {
        let err = manifest::parse(&bytes, content_type.as_deref());
        prop_assert_eq!(err.map_err(|e| e.code).err(), Some(ErrorCode::ManifestInvalid));
    }

    /// Any JSON document: a manifest, or `MANIFEST_INVALID`; every digest it lists is one the
    /// document holds.
    #[test]
    fn no_json_document_panics_the_manifest_parser(value in json_value(), content_type in content_type(OCI_MANIFEST)) {
        let bytes = serde_json::to_vec(&value).unwrap();
        match manifest::parse(&bytes, content_type.as_deref()) {
            Ok(m) => {
                let text = String::from_utf8(bytes).unwrap();
                for d in m.blobs.iter().chain(&m.children).chain(&m.subject) {
                    prop_assert!(text.contains(&d.to_string()));
                }
            }
            Err(e) => prop_assert_eq!(e.code, ErrorCode::ManifestInvalid),
        }
    }

    /// The same, with schemaVersion 2 and a media type set, so the descriptors are looked at.
    #[test]
    fn no_json_object_with_the_right_version_panics_the_manifest_parser(
        fields in btree_map(select(vec!["config", "layers", "manifests", "subject", "artifactType", "annotations"]), json_value(), 0..6),
        media_type in select(vec![OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST]),
    ) {
        let mut value = json!({ "schemaVersion": 2, "mediaType": media_type });
        for (k, v) in fields {
            value[k] = v;
        }
        if let Err(e) = manifest::parse(&serde_json::to_vec(&value).unwrap(), None) {
            prop_assert_eq!(e.code, ErrorCode::ManifestInvalid);
        }
    }

    /// What a valid image manifest references comes back exactly: the config and every
    /// distributable layer, in order; the subject; the artifact type (or the config's).
    #[test]
    fn an_image_manifest_lists_its_config_and_distributable_layers(
        (m, config, layers) in image_manifest(),
        content_type in content_type(OCI_MANIFEST),
    ) {
        let parsed = manifest::parse(&serde_json::to_vec(&m).unwrap(), content_type.as_deref()).unwrap();
        let expected: Vec<String> =
            std::iter::once(&config).chain(layers.iter().filter(|l| !l.3)).map(|d| d.1.clone()).collect();
        prop_assert_eq!(parsed.blobs.iter().map(Digest::to_string).collect::<Vec<_>>(), expected);
        prop_assert!(parsed.children.is_empty());
        prop_assert_eq!(parsed.media_type.as_str(), OCI_MANIFEST);
        prop_assert_eq!(parsed.subject.map(|d| d.to_string()), m["subject"]["digest"].as_str().map(String::from));
        let artifact_type = m["artifactType"].as_str().map(String::from).unwrap_or(config.0);
        prop_assert_eq!(parsed.artifact_type, Some(artifact_type));
    }

    #[test]
    fn an_index_lists_its_manifests(children in vec(digest(), 0..8), docker in any::<bool>()) {
        let media_type = if docker { DOCKER_LIST } else { OCI_INDEX };
        let index = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": children.iter().map(|d| json!({ "mediaType": OCI_MANIFEST, "digest": d, "size": 7 })).collect::<Vec<_>>(),
        });
        let parsed = manifest::parse(&serde_json::to_vec(&index).unwrap(), Some(media_type)).unwrap();
        prop_assert_eq!(parsed.children.iter().map(Digest::to_string).collect::<Vec<_>>(), children);
        prop_assert!(parsed.blobs.is_empty());
    }

    /// A manifest cut short anywhere is not a manifest (never a half-read one).
    #[test]
    fn a_truncated_manifest_is_manifest_invalid((m, _, _) in image_manifest(), cut in any::<Index>()) {
        let bytes = serde_json::to_vec(&m).unwrap();
        let cut = cut.index(bytes.len());
        prop_assert_eq!(manifest::parse(&bytes[..cut], None).unwrap_err().code, ErrorCode::ManifestInvalid);
    }

    /// A negative size or a digest Berth cannot verify, anywhere in the manifest.
    #[test]
    fn a_descriptor_with_a_negative_size_or_a_bad_digest_is_manifest_invalid(
        (mut m, _, layers) in image_manifest(),
        which in any::<Index>(),
        size in i64::MIN..0,
        bad_digest in prop_oneof![Just("sha256:zz".to_owned()), "md5:[0-9a-f]{32}", any::<String>()],
        break_size in any::<bool>(),
    ) {
        let target = match which.index(layers.len() + 1) {
            0 => &mut m["config"],
            i => &mut m["layers"][i - 1],
        };
        if break_size { target["size"] = size.into() } else { target["digest"] = bad_digest.into() }
        prop_assert_eq!(manifest::parse(&serde_json::to_vec(&m).unwrap(), None).unwrap_err().code, ErrorCode::ManifestInvalid);
    }

    /// A header that names another media type than the body's is refused.
    #[test]
    fn a_content_type_that_contradicts_the_body_is_manifest_invalid(
        (m, _, _) in image_manifest(),
        header in prop_oneof![Just(OCI_INDEX.to_owned()), Just(DOCKER_MANIFEST.to_owned()), "application/x\\.[a-z]{1,10}"],
    ) {
        prop_assert_eq!(manifest::parse(&serde_json::to_vec(&m).unwrap(), Some(&header)).unwrap_err().code, ErrorCode::ManifestInvalid);
    }
}

// ---------------------------------------------------------------------------------------------
// Routes (src/wire/route.rs).

proptest! {
    #![proptest_config(config(1000))]

    /// Unknown shapes are NOT_FOUND, known shapes with a bad name or digest NAME_INVALID or
    /// DIGEST_INVALID; nothing else, and no panic.
    #[test]
    fn no_path_panics_the_router(path in prop_oneof![
        noise("a-z0-9/._:\\-"),
        "/v2/[a-zA-Z0-9/._:%\\-]{0,60}",
        "/v2/([a-z0-9]{1,3}/){0,4}(tags|list|manifests|blobs|uploads|referrers|_catalog|/){0,4}[a-z0-9:]{0,10}",
    ]) {
        if let Err(e) = Route::parse(&path) {
            prop_assert!(matches!(e.code, ErrorCode::NotFound | ErrorCode::NameInvalid | ErrorCode::DigestInvalid), "{}: {:?}", path, e);
        }
    }

    /// Every URL the registry hands out (and every path a client builds the same way) routes
    /// back to what it was built from, whatever words the name holds.
    #[test]
    fn every_endpoint_url_routes_back(
        name in prop_oneof![
            repo_name(),
            // Names made of the endpoint words themselves.
            vec(select(vec!["tags", "list", "manifests", "blobs", "uploads", "referrers", "v2", "a"]), 1..5).prop_map(|w| w.join("/")),
        ],
        reference in prop_oneof![tag(), digest()],
        d in digest(),
        id in "[0-9a-f]{32}",
    ) {
        let name = RepoName::parse(&name).unwrap();
        let d = Digest::parse(&d).unwrap();
        let cases = [
            (url::manifest(&name, &reference), Route::Manifest(name.clone(), reference.clone())),
            (url::blob(&name, &d), Route::Blob(name.clone(), d.clone())),
            (url::upload(&name, &id), Route::Upload(name.clone(), id.clone())),
            (url::upload(&name, ""), Route::UploadStart(name.clone())),
            (format!("/v2/{name}/tags/list"), Route::Tags(name.clone())),
            (format!("/v2/{name}/referrers/{d}"), Route::Referrers(name.clone(), d.clone())),
        ];
        for (path, route) in cases {
            prop_assert_eq!(Route::parse(&path), Ok(route), "{}", path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Query strings (src/wire/message.rs).

fn request_with_query(query: Option<String>) -> Request<()> {
    Request { method: Method::GET, path: "/v2/".into(), query, headers: HeaderMap::new(), body: (), origin: None }
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn no_string_panics_the_query_parser(query in noise("a-zA-Z0-9=&%+;?#/"), key in "[a-z_]{1,6}") {
        let _ = request_with_query(Some(query)).query_param(&key);
    }

    /// A query as a client encodes it gives back the first value of each key, decoded.
    #[test]
    fn an_encoded_query_parameter_round_trips(pairs in vec(("[a-zA-Z_]{1,4}", any::<String>()), 1..6)) {
        let query = ::url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
        let req = request_with_query(Some(query));
        for (key, _) in &pairs {
            let first = pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            prop_assert_eq!(req.query_param(key), first);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scopes (src/auth/scope.rs).

fn actions() -> impl Strategy<Value = Actions> {
    (0u8..16).prop_map(|bits| {
        [Actions::PULL, Actions::PUSH, Actions::DELETE, Actions::ADMIN]
            .into_iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .fold(Actions::NONE, |acc, (_, a)| acc.union(a))
    })
}

/// A scope's repository name: a repository name, maybe behind `host[:port]/`.
fn scope_name() -> impl Strategy<Value = String> {
    (proptest::option::of("[a-z0-9.]{1,12}(:[0-9]{1,5})?"), repo_name())
        .prop_map(|(host, name)| host.map_or(name.clone(), |h| format!("{h}/{name}")))
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn a_scope_round_trips(name in scope_name(), actions in actions(), kind in 0..3u8) {
        let scope = match kind {
            0 => Scope::catalog(),
            1 => Scope::admin(),
            _ => Scope::repository(&name, actions),
        };
        prop_assert_eq!(Scope::parse(&scope.to_string()), Some(scope));
    }

    /// Actions in any order, repeated, with unknown ones mixed in: the known ones, once.
    #[test]
    fn a_scope_keeps_the_known_actions_in_any_order(
        name in scope_name(),
        listed in vec(select(vec!["pull", "push", "delete", "frobnicate", "", "PULL"]), 0..6),
    ) {
        let expected = listed.iter().filter_map(|a| Actions::named(a)).fold(Actions::NONE, Actions::union);
        let parsed = Scope::parse(&format!("repository:{name}:{}", listed.join(","))).unwrap();
        prop_assert_eq!(parsed, Scope::repository(&name, expected));
    }

    #[test]
    fn no_string_panics_the_scope_parser(s in noise("a-z0-9:/,*. \\-"), more in noise("a-z0-9:/,* ")) {
        if let Some(scope) = Scope::parse(&s) {
            match scope.resource {
                Resource::Repository(name) => prop_assert!(!name.is_empty() && s.starts_with("repository:")),
                Resource::Catalog => prop_assert!(s.starts_with("registry:catalog:")),
                Resource::Admin => prop_assert!(s.starts_with("registry:admin:")),
            }
        }
        let all = Scope::parse_all([s.as_str(), more.as_str()]);
        prop_assert!(all.len() <= s.split_whitespace().count() + more.split_whitespace().count());
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens (src/auth/token.rs).

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const NOW: u64 = 1_700_000_000;

fn claims() -> impl Strategy<Value = (String, Claims)> {
    let access = (any::<String>(), any::<String>(), vec(any::<String>(), 0..4))
        .prop_map(|(kind, name, actions)| Access { kind, name, actions });
    (
        "[ -~&&[^\"\\\\]]{1,20}",
        any::<String>(),
        any::<bool>(),
        1u64..1_000_000,
        0u64..=NOW + 30,
        any::<String>(),
        vec(access, 0..4),
        proptest::option::of(any::<String>()),
    )
        .prop_map(|(service, sub, many, lifetime, nbf, jti, access, refresh)| {
            let aud = if many {
                Audience::Many(vec!["other".into(), service.clone()])
            } else {
                Audience::One(service.clone())
            };
            let claims = Claims {
                iss: service.clone(),
                sub,
                aud,
                exp: NOW + lifetime,
                nbf,
                iat: nbf,
                jti,
                access,
                refresh,
                auth_time: None,
            };
            (service, claims)
        })
}

proptest! {
    #![proptest_config(config(500))]

    /// Random text, text shaped like a JWT (three base64url parts), and base64url-encoded JSON
    /// with any `alg`: never accepted without the secret, never a panic.
    #[test]
    fn no_string_panics_the_token_verifier(
        token in prop_oneof![
            noise("A-Za-z0-9_.\\-="),
            "[A-Za-z0-9_\\-]{0,40}\\.[A-Za-z0-9_\\-]{0,40}\\.[A-Za-z0-9_\\-]{0,43}",
            (any::<String>(), json_value(), "[A-Za-z0-9_\\-]{0,43}").prop_map(|(alg, claims, sig)| {
                use base64::Engine;
                let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
                let header = b64(json!({ "alg": alg, "typ": "JWT" }).to_string().as_bytes());
                format!("{header}.{}.{sig}", b64(claims.to_string().as_bytes()))
            }),
        ],
    ) {
        prop_assert!(token::verify(&token, SECRET, "berth", NOW).is_err());
    }

    #[test]
    fn a_signed_token_verifies_to_its_claims((service, claims) in claims()) {
        let signed = token::sign(&claims, SECRET);
        prop_assert_eq!(token::verify(&signed, SECRET, &service, NOW), Ok(claims));
    }

    /// Any one character of a signed token changed: refused (a forged claim or signature, or a
    /// broken encoding).
    #[test]
    fn a_token_with_a_changed_character_is_refused(
        (service, claims) in claims(),
        at in any::<Index>(),
        replacement in "[A-Za-z0-9_.=+/\\-]",
    ) {
        let signed = token::sign(&claims, SECRET);
        let i = at.index(signed.len());
        prop_assume!(signed[i..i + 1] != replacement);
        let forged = format!("{}{replacement}{}", &signed[..i], &signed[i + 1..]);
        prop_assert!(token::verify(&forged, SECRET, &service, NOW).is_err(), "{}", forged);
    }
}

// ---------------------------------------------------------------------------------------------
// Policy (src/auth/policy.rs).

/// A naive `*` / `?` matcher (exponential, fine for short inputs): the oracle for the
/// backtracking one.
fn naive_glob(p: &[u8], t: &[u8]) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some((b'*', rest)) => (0..=t.len()).any(|i| naive_glob(rest, &t[i..])),
        Some((b'?', rest)) => !t.is_empty() && naive_glob(rest, &t[1..]),
        Some((c, rest)) => t.first() == Some(c) && naive_glob(rest, &t[1..]),
    }
}

fn policy_users() -> BTreeSet<String> {
    ["alice", "bob", "carol"].map(String::from).into()
}

fn policy_groups() -> BTreeMap<String, BTreeSet<String>> {
    BTreeMap::from([("devs".to_owned(), ["alice", "bob"].map(String::from).into())])
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn the_glob_matcher_agrees_with_a_naive_one(pattern in "[ab/*?]{0,10}", text in "[ab/]{0,14}") {
        prop_assert_eq!(glob_match(&pattern, &text), naive_glob(pattern.as_bytes(), text.as_bytes()), "{} ~ {}", pattern, text);
    }

    #[test]
    fn no_string_panics_the_glob_matcher(pattern in noise("a-z/*?é"), text in noise("a-z/é")) {
        let _ = glob_match(&pattern, &text);
    }

    #[test]
    fn no_text_panics_the_policy_parser(text in prop_oneof![
        noise("a-z0-9*?/@,;#\n \t\\-"),
        vec("[a-z*/]{1,8} (alice|bob|@devs|@x|anonymous|authenticated|dave|) (pull|push|delete|\\*|fly)(,(pull|push))?", 0..5)
            .prop_map(|lines| lines.join("\n")),
    ]) {
        let _ = Policy::parse(&text, &policy_users(), &policy_groups());
    }

    /// Rules written one a line (or separated by `;`), with comments: each grants its subject
    /// at least its actions on the repository its literal pattern names; `anonymous` rules
    /// grant everybody.
    #[test]
    fn a_policy_rule_grants_what_it_says(
        rules in vec((repo_name(), select(vec!["alice", "bob", "@devs", "anonymous", "authenticated"]), actions()), 1..6),
        semicolons in any::<bool>(),
    ) {
        let rules: Vec<_> = rules.into_iter().filter(|(_, _, a)| !a.is_empty()).collect();
        let text = rules
            .iter()
            .map(|(pattern, subject, actions)| format!("  {pattern}\t{subject} {actions} # rule"))
            .collect::<Vec<_>>()
            .join(if semicolons { ";" } else { "\n" });
        let policy = Policy::parse(&text, &policy_users(), &policy_groups()).unwrap();
        for (pattern, subject, actions) in &rules {
            let who: &[Option<&str>] = match *subject {
                "@devs" => &[Some("alice"), Some("bob")],
                "anonymous" => &[None, Some("carol")],
                "authenticated" => &[Some("carol")],
                user => &[Some(user)],
            };
            for user in who {
                prop_assert!(policy.allowed(*user, pattern).contains(*actions), "{:?} on {}: {}", user, pattern, text);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// htpasswd lines, Basic credentials, the auth configuration (src/auth/password.rs, config.rs).

/// A bcrypt hash as htpasswd writes it (shape only: nothing here checks a password).
fn bcrypt_hash() -> impl Strategy<Value = String> {
    "\\$2[aby]\\$(0[4-9]|[12][0-9]|3[01])\\$[./A-Za-z0-9]{53}"
}

fn basic_config(users: &str) -> Result<AuthConfig, crate::auth::config::ConfigError> {
    AuthConfig::parse(&|name: &str| match name {
        "auth_mode" => Some("basic".to_owned()),
        "auth_users" => Some(users.to_owned()),
        _ => None,
    })
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn no_string_panics_the_bcrypt_check(s in prop_oneof![
        noise("$2aby0-9./A-Za-z"),
        "\\$2[abxy]\\$.{2}\\$.{53}",
        // Sixty bytes with a multi-byte character where the cost is read.
        "\\$2a\\$[é€😀0-9]{1,2}\\$[./A-Za-z0-9]{50,54}",
    ]) {
        let _ = is_bcrypt(&s);
    }

    #[test]
    fn a_bcrypt_hash_is_recognised(hash in bcrypt_hash()) {
        prop_assert!(is_bcrypt(&hash));
    }

    /// htpasswd lines with bcrypt hashes, separated by newlines or commas, with blank lines and
    /// comments: every user comes back with their hash.
    #[test]
    fn valid_htpasswd_lines_give_their_users(
        users in btree_map("[A-Za-z0-9._@-]{1,20}", bcrypt_hash(), 1..6),
        commas in any::<bool>(),
    ) {
        let users: BTreeMap<String, String> =
            users.into_iter().filter(|(name, _)| !["anonymous", "authenticated"].contains(&name.as_str())).collect();
        let mut lines: Vec<String> = users.iter().map(|(name, hash)| format!(" {name}:{hash} ")).collect();
        lines.insert(0, "# users".into());
        lines.push(String::new());
        let config = basic_config(&lines.join(if commas { "," } else { "\n" })).unwrap();
        prop_assert_eq!(config.users, users);
    }

    /// A line that is not `name:bcrypt` (no colon, another hash scheme, a cost out of range, a
    /// name with other characters) is an error naming `auth_users`, never a panic.
    #[test]
    fn no_text_panics_the_htpasswd_parser(text in prop_oneof![
        noise("a-zA-Z0-9:$./,#\n \\-"),
        (("[a-z]{1,6}", "[:é ]?"), prop_oneof![bcrypt_hash(), "\\$(apr1|1|2x|2a)\\$[0-9]{0,3}\\$[./A-Za-z0-9]{0,60}", "\\{SHA\\}[A-Za-z0-9+/=]{28}"])
            .prop_map(|((name, sep), hash)| format!("{name}{sep}{hash}")),
    ]) {
        if let Err(e) = basic_config(&text) {
            prop_assert_eq!(e.variable, "auth_users");
        }
    }

    #[test]
    fn basic_credentials_round_trip(user in "[^:]{0,20}", password in any::<String>(), scheme in select(vec!["Basic", "basic", "BASIC"])) {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        prop_assert_eq!(basic_credentials(&format!(" {scheme} {encoded} ")), Some((user, password)));
    }

    #[test]
    fn no_string_panics_the_basic_credentials_parser(header in noise("A-Za-z0-9+/= :")) {
        let _ = basic_credentials(&header);
    }

    /// Any values of every auth variable: a configuration, or an error naming one of them.
    #[test]
    fn no_variables_panic_the_auth_configuration(
        mode in select(vec!["none", "token", "basic", " token ", "open"]),
        values in btree_map(select(crate::auth::config::variables().collect::<Vec<_>>()), noise("a-z0-9:$./@ \n;,#*"), 0..8),
    ) {
        let get = |name: &str| if name == "auth_mode" { Some(mode.to_owned()) } else { values.get(name).cloned() };
        if let Err(e) = AuthConfig::parse(&get) {
            prop_assert!(crate::auth::config::variables().any(|v| v == e.variable));
        }
    }

    /// The realm comes from client headers (`X-Forwarded-*`, `Host`): whatever they hold, it
    /// stays a quotable `<scheme>://<host>/token`.
    #[test]
    fn no_forwarded_header_breaks_the_token_realm(
        proto in vec(any::<u8>(), 0..20),
        host in vec(any::<u8>(), 0..40),
        // The origin's scheme is the runner's own; its authority is the client's `Host`.
        origin in proptest::option::of((select(vec!["http", "https"]), noise("a-z:/0-9.\"\\\\ "))),
    ) {
        let mut headers = HeaderMap::new();
        for (name, value) in [("x-forwarded-proto", proto), ("x-forwarded-host", host.clone()), ("host", host)] {
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                headers.insert(name, value);
            }
        }
        let origin = origin.map(|(scheme, authority)| format!("{scheme}://{authority}"));
        let trusting = AuthConfig { trust_forwarded: true, ..AuthConfig::default() };
        let realm = challenge::realm(&trusting, origin.as_deref(), &headers);
        prop_assert!(realm.ends_with("/token"));
        prop_assert!(!realm.contains(['"', '\\']) && !realm.chars().any(char::is_control), "{:?}", realm);
    }
}

// ---------------------------------------------------------------------------------------------
// Whole requests through the registry logic (in-memory stores): the parsers above together, and
// what the handlers do with what they return.

const REPO: &str = "fuzz/app";
const CONFIG: &[u8] = br#"{"architecture":"amd64","os":"linux"}"#;
const LAYER: &[u8] = b"the layer of the image every case starts with";

fn known_manifest() -> Vec<u8> {
    let d = |b: &[u8]| Digest::of(Algorithm::Sha256, b).to_string();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": d(CONFIG), "size": CONFIG.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d(LAYER), "size": LAYER.len() }],
    }))
    .unwrap()
}

fn send(
    stores: &Stores<MemMeta, MemBlobs>,
    method: Method,
    target: &str,
    headers: HeaderMap,
    body: Vec<u8>,
) -> Response<Vec<u8>> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    block_on(api::handle(stores, Request { method, path, query, headers, body, origin: None }))
}

/// Stores holding one image (`fuzz/app:v1`) and one open upload session; the session's id.
fn registry_with_an_image() -> (Stores<MemMeta, MemBlobs>, String) {
    let stores = memory_stores();
    for blob in [CONFIG, LAYER] {
        let digest = Digest::of(Algorithm::Sha256, blob);
        let r = send(
            &stores,
            Method::POST,
            &format!("/v2/{REPO}/blobs/uploads/?digest={digest}"),
            HeaderMap::new(),
            blob.to_vec(),
        );
        assert_eq!(r.status, 201);
    }
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(OCI_MANIFEST));
    assert_eq!(send(&stores, Method::PUT, &format!("/v2/{REPO}/manifests/v1"), headers, known_manifest()).status, 201);
    let r = send(&stores, Method::POST, &format!("/v2/{REPO}/blobs/uploads/"), HeaderMap::new(), vec![]);
    let location = r.headers["location"].to_str().unwrap();
    let id = location.split('/').next_back().unwrap().split('?').next().unwrap().to_owned();
    (stores, id)
}

/// One mutated request: (method, path and query, headers, body). `{upload}` in the path is the
/// open session's id.
type FuzzedRequest = (Method, String, Vec<(String, Vec<u8>)>, Vec<u8>);

fn fuzzed_request() -> impl Strategy<Value = FuzzedRequest> {
    let known = |b: &[u8]| Digest::of(Algorithm::Sha256, b).to_string();
    let manifest_digest = Digest::of(Algorithm::Sha256, &known_manifest()).to_string();
    let method = select(vec!["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "FUZZ"]);
    let name = prop_oneof![4 => Just(REPO.to_owned()), 1 => repo_name(), 1 => noise("a-zA-Z0-9/._%\\-")];
    let digests = prop_oneof![
        Just(known(CONFIG)),
        Just(known(LAYER)),
        Just(manifest_digest.clone()),
        digest(),
        noise("a-z0-9:"),
    ];
    let reference = prop_oneof![Just("v1".to_owned()), Just(manifest_digest), tag(), digests.clone()];
    let number = prop_oneof![
        Just("0".to_owned()),
        any::<u64>().prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_owned()),
        Just("-1".to_owned()),
        noise("0-9a-z")
    ];
    let query = vec(
        (
            select(vec!["n", "last", "digest", "mount", "from", "_v", "artifactType", "tag"]),
            prop_oneof![number.clone(), digests.clone(), noise("a-z0-9/%:&=")],
        ),
        0..3,
    )
    .prop_map(|pairs| ::url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish());
    // Each shape with the methods it serves: three times in four one of those, so requests get
    // past the router into the handlers; else any method.
    let shapes = vec![
        ("/v2/", &["GET"][..]),
        ("/v2/_catalog", &["GET"]),
        ("tags", &["GET"]),
        ("manifest", &["GET", "HEAD", "PUT", "DELETE"]),
        ("blob", &["GET", "HEAD", "DELETE"]),
        ("start", &["POST"]),
        ("upload", &["PATCH", "PUT", "GET", "DELETE"]),
        ("upload", &["PATCH", "PUT"]),
        ("referrers", &["GET"]),
        ("other", &["GET"]),
    ];
    let method = (select(shapes), proptest::bool::weighted(0.75), any::<Index>(), method);
    let path = (
        method,
        name,
        reference,
        digests,
        prop_oneof![4 => Just("{upload}".to_owned()), 1 => "[0-9a-f]{32}", 1 => noise("a-z0-9/.")],
        noise("a-zA-Z0-9/._%:\\-"),
        query,
    )
        .prop_map(|((shape_methods, natural, which, any_method), name, reference, digest, id, other, query)| {
            let (shape, methods) = shape_methods;
            let method = if natural { methods[which.index(methods.len())] } else { any_method };
            let path = match shape {
                "tags" => format!("/v2/{name}/tags/list"),
                "manifest" => format!("/v2/{name}/manifests/{reference}"),
                "blob" => format!("/v2/{name}/blobs/{digest}"),
                "start" => format!("/v2/{name}/blobs/uploads/"),
                "upload" => format!("/v2/{name}/blobs/uploads/{id}"),
                "referrers" => format!("/v2/{name}/referrers/{digest}"),
                "other" => other,
                fixed => fixed.to_owned(),
            };
            let target = if query.is_empty() { path } else { format!("{path}?{query}") };
            (Method::from_bytes(method.as_bytes()).unwrap(), target)
        });
    let header_value = |values: Vec<&'static str>| {
        prop_oneof![select(values).prop_map(|v| v.as_bytes().to_vec()), vec(any::<u8>(), 0..30)]
    };
    let content_range = prop_oneof![
        (0u64..100, 0u64..100).prop_map(|(a, b)| format!("{a}-{b}")),
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| format!("bytes {a}-{b}/*")),
        Just(format!("0-{}", u64::MAX)),
        Just(format!("bytes=0-{}", u64::MAX - 1)),
        noise("0-9 bytes=\\-/*"),
    ]
    .prop_map(String::into_bytes);
    let headers = vec(
        prop_oneof![
            1 => header_value(vec![OCI_MANIFEST, OCI_INDEX, "application/json", "text/plain", ""])
                .prop_map(|v| ("content-type".to_owned(), v)),
            1 => number.prop_map(|n| ("content-length".to_owned(), n.into_bytes())),
            2 => content_range.prop_map(|v| ("content-range".to_owned(), v)),
            1 => range_header().prop_map(|v| ("range".to_owned(), v.into_bytes())),
            1 => header_value(vec!["Basic Zm9vOmJhcg==", "Bearer x.y.z", "Basic", "Bearer"])
                .prop_map(|v| ("authorization".to_owned(), v)),
            1 => header_value(vec![OCI_MANIFEST, "*/*"]).prop_map(|v| ("accept".to_owned(), v)),
        ],
        0..4,
    );
    let body = prop_oneof![
        Just(Vec::new()),
        vec(any::<u8>(), 0..300),
        Just(known_manifest()),
        any::<Index>().prop_map(|cut| {
            let m = known_manifest();
            m[..cut.index(m.len())].to_vec()
        }),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ];
    (path, headers, body).prop_map(|((method, target), headers, body)| (method, target, headers, body))
}

proptest! {
    #![proptest_config(config(300))]

    /// A short run of mutated requests against a registry holding an image: every answer is
    /// below 500 (a client's mistake is a 4xx), nothing panics, and the image is still there,
    /// byte for byte.
    #[test]
    fn no_request_makes_the_registry_fail(requests in vec(fuzzed_request(), 1..6)) {
        let (stores, upload) = registry_with_an_image();
        for (method, target, headers, body) in requests {
            let target = target.replace("{upload}", &upload);
            let mut map = HeaderMap::new();
            for (name, value) in &headers {
                if let Ok(value) = HeaderValue::from_bytes(value) {
                    map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
                }
            }
            let response = send(&stores, method.clone(), &target, map, body.clone());
            prop_assert!(
                response.status.as_u16() < 500,
                "{} {} {:?} body {:?}: {}", method, target, headers, String::from_utf8_lossy(&body[..body.len().min(80)]),
                match &response.body { Body::Full(b) => String::from_utf8_lossy(b).into_owned(), _ => String::new() },
            );
        }
        let r = send(&stores, Method::GET, &format!("/v2/{REPO}/manifests/v1"), HeaderMap::new(), vec![]);
        // A DELETE among the requests may have removed the image: that is a client's right.
        if r.status == 200 {
            prop_assert!(matches!(r.body, Body::Stream(ref b) if *b == known_manifest()));
        }
    }

    /// The token endpoint in token mode: any query, form, or credentials give a token or a 4xx;
    /// a token's `scope` lists what it grants, in the scope syntax.
    #[test]
    fn no_token_request_makes_the_registry_fail(
        post in any::<bool>(),
        params in vec((select(vec!["service", "scope", "offline_token", "grant_type", "username", "password", "refresh_token", "access_type"]),
                       prop_oneof![Just("berth".to_owned()), scope_name().prop_map(|n| format!("repository:{n}:pull,push")), Just("registry:catalog:*".to_owned()), Just("password".to_owned()), noise("a-z0-9:/,* ")]), 0..5),
        authorization in proptest::option::of(prop_oneof![Just("Basic YWxpY2U6c2VjcmV0".to_owned()), noise("A-Za-z0-9+/= ")]),
    ) {
        let mut stores = memory_stores();
        stores.config.auth = token_mode();
        let form = ::url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&params).finish();
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization.and_then(|a| HeaderValue::from_str(&a).ok()) {
            headers.insert(http::header::AUTHORIZATION, value);
        }
        let response = if post {
            send(&stores, Method::POST, "/token", headers, form.clone().into_bytes())
        } else {
            send(&stores, Method::GET, &format!("/token?{form}"), headers, vec![])
        };
        prop_assert!(response.status.as_u16() < 500, "{:?} {}", response.status, form);
        if response.status == 200 {
            let Body::Full(bytes) = &response.body else { panic!("a token without a body") };
            let body: Value = serde_json::from_slice(bytes).unwrap();
            let scope = body["scope"].as_str().unwrap();
            let granted = Scope::parse_all([scope]);
            prop_assert_eq!(granted.len(), scope.split_whitespace().count(), "{}", scope);
            prop_assert!(token::verify_access(body["token"].as_str().unwrap(), SECRET, "berth", crate::testing::test_clock()).is_ok());
        }
    }
}

proptest! {
    #![proptest_config(config(300))]

    /// `n` of the tag list and the catalog: a count (any run of digits) lists, anything else is
    /// `PAGINATION_NUMBER_INVALID`, not a failure and not a silent default.
    #[test]
    fn a_page_count_is_a_number_or_pagination_number_invalid(
        n in prop_oneof!["[0-9]{1,19}", "[0-9]{0,5}[a-zA-Z .,\\-][0-9a-z]{0,5}", Just(String::new())],
        catalog in any::<bool>(),
    ) {
        let (stores, _) = registry_with_an_image();
        let query = ::url::form_urlencoded::Serializer::new(String::new()).append_pair("n", &n).finish();
        let path = if catalog { "/v2/_catalog".to_owned() } else { format!("/v2/{REPO}/tags/list") };
        let response = send(&stores, Method::GET, &format!("{path}?{query}"), HeaderMap::new(), vec![]);
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            prop_assert_eq!(response.status, 200);
        } else {
            let Body::Full(bytes) = &response.body else { panic!("an error without a body") };
            let body: Value = serde_json::from_slice(bytes).unwrap();
            prop_assert_eq!((response.status.as_u16(), body["errors"][0]["code"].as_str()), (400, Some("PAGINATION_NUMBER_INVALID")));
        }
    }
}

/// Token mode with `alice` (password `secret`) allowed to pull and push `team/*`.
fn token_mode() -> AuthConfig {
    let users: BTreeSet<String> = ["alice".to_owned()].into();
    AuthConfig {
        mode: Mode::Token,
        users: [("alice".to_owned(), "$2y$04$bKOFBbX2st4s.3cifBS8CeTKuRnPHiEmAhGnQkwQxJGjeuGt/ERWa".to_owned())].into(),
        policy: Policy::parse("team/* alice pull,push\n* anonymous pull", &users, &BTreeMap::new()).unwrap(),
        secret: SECRET.to_vec(),
        ..AuthConfig::default()
    }
}

#[test]
fn the_oracles_of_these_properties_can_fail() {
    // The naive glob is an oracle only if it says no sometimes.
    assert!(naive_glob(b"a*b", b"axxb") && !naive_glob(b"a*b", b"axxc") && !naive_glob(b"?", b""));
    // The fixture's image is really there before the requests run.
    let (stores, upload) = registry_with_an_image();
    assert_eq!(upload.len(), 32);
    let r = send(&stores, Method::GET, &format!("/v2/{REPO}/manifests/v1"), HeaderMap::new(), vec![]);
    assert!(matches!(r.body, Body::Stream(ref b) if *b == known_manifest()));
}
