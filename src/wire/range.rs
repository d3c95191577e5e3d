//! Byte ranges: the `Range` request header of blob GETs (RFC 9110 §14.1.2, one range), and the
//! `Content-Range` of upload chunks (`<start>-<end>`, inclusive, optionally `bytes ` first).

/// What a `Range` header asks for, resolved against a blob of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: send everything (a header we do not understand is ignored, as RFC 9110
    /// allows).
    Whole,
    /// Bytes `start..end` (exclusive end), non-empty.
    Part { start: u64, end: u64 },
    /// Nothing of the blob matches: 416.
    Unsatisfiable,
}

pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return RangeRequest::Whole };
    if spec.contains(',') {
        return RangeRequest::Whole; // multiple ranges: answer with the whole blob
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return RangeRequest::Whole };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    match (first.is_empty(), last.is_empty()) {
        // Suffix: the last `n` bytes.
        (true, false) => match parse(last) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(n) if size > 0 => RangeRequest::Part { start: size.saturating_sub(n), end: size },
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Whole,
        },
        // Open: from `start` to the end.
        (false, true) => match parse(first) {
            Some(start) if start < size => RangeRequest::Part { start, end: size },
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Whole,
        },
        (false, false) => match (parse(first), parse(last)) {
            (Some(start), Some(last)) if start > last => RangeRequest::Unsatisfiable,
            (Some(start), Some(_)) if start >= size => RangeRequest::Unsatisfiable,
            // A range past the end is cut to the end.
            (Some(start), Some(last)) => RangeRequest::Part { start, end: last.saturating_add(1).min(size) },
            _ => RangeRequest::Whole,
        },
        (true, true) => RangeRequest::Whole,
    }
}

/// An upload chunk's `Content-Range`: first and last byte, inclusive. Its length
/// (`last - first + 1`) always fits a `u64`: `0-18446744073709551615` is refused, not a chunk of
/// no bytes.
pub fn parse_content_range(header: &str) -> Option<(u64, u64)> {
    let spec = header.trim();
    let spec = spec.strip_prefix("bytes ").or_else(|| spec.strip_prefix("bytes=")).unwrap_or(spec);
    let spec = spec.split('/').next()?;
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    (first <= last && last - first < u64::MAX).then_some((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    #[test]
    fn ranges_resolve_against_the_size() {
        let cases = [
            (None, Whole),
            (Some("bytes=0-9"), Part { start: 0, end: 10 }),
            (Some("bytes=5-"), Part { start: 5, end: 100 }),
            (Some("bytes=-10"), Part { start: 90, end: 100 }),
            (Some("bytes=-1000"), Part { start: 0, end: 100 }),
            (Some("bytes=90-1000"), Part { start: 90, end: 100 }),
            (Some("bytes=100-"), Unsatisfiable),
            (Some("bytes=500-0"), Unsatisfiable),
            (Some("bytes=200-300"), Unsatisfiable),
            (Some("bytes=-0"), Unsatisfiable),
            (Some("bytes=0-1,5-6"), Whole),
            (Some("items=0-1"), Whole),
            (Some("bytes=x-y"), Whole),
        ];
        for (header, expected) in cases {
            assert_eq!(parse_range(header, 100), expected, "{header:?}");
        }
    }

    #[test]
    fn nothing_is_satisfiable_in_an_empty_blob() {
        assert_eq!(parse_range(Some("bytes=0-0"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-5"), 0), Unsatisfiable);
    }

    #[test]
    fn content_ranges_of_chunks() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/*"), Some((100, 199)));
        assert_eq!(parse_content_range("bytes=5-5"), Some((5, 5)));
        assert_eq!(parse_content_range("9-1"), None);
        assert_eq!(parse_content_range("junk"), None);
    }

    #[test]
    fn a_content_range_whose_length_does_not_fit_a_u64_is_refused() {
        // Found by src/proptests.rs: `last - first + 1` overflowed in the upload handler.
        assert_eq!(parse_content_range("0-18446744073709551615"), None);
        assert_eq!(parse_content_range("bytes 1-18446744073709551615/*"), Some((1, u64::MAX)));
    }
}
