//! What an S3 answer that is not a success means for Berth's blob store interface.

/// The kinds of failure the `berth:blob-store` error variant tells apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    NotFound,
    AlreadyExists,
    /// S3 is down, overloaded or throttling: the same call may succeed later.
    Unavailable(String),
    /// Another conditional write of the same key is in flight (AWS's `409
    /// ConditionalRequestConflict`): the write may still win or lose, so it is sent again.
    Conflict(String),
    Other(String),
}

/// The `<Code>` of an S3 XML error body, if it has one.
pub fn error_code(body: &str) -> Option<&str> {
    element(body, "Code")
}

/// The text of the first `<name>` element of a small XML answer (S3's answers have no nesting
/// of an element in itself, and the provider reads only leaf elements).
pub fn element<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{name}>"))?;
    Some(&body[start..start + end])
}

/// Classify the answer `status` (with its body) to `what` (e.g. "PUT of uploads/x"), at `origin`.
pub fn classify(status: u16, body: &str, what: &str, origin: &str) -> Failure {
    let code = error_code(body).unwrap_or("no error code");
    match status {
        // A missing key (HEAD answers have no body). A missing bucket or multipart upload is the
        // setup's or a lifecycle rule's doing, not a missing object.
        404 if body.trim().is_empty() || code == "NoSuchKey" => Failure::NotFound,
        // A conditional write lost to an object that exists.
        412 => Failure::AlreadyExists,
        // Another conditional write of the key is in flight: neither won nor lost yet.
        409 if code == "ConditionalRequestConflict" => {
            Failure::Conflict(format!("S3 at {origin}: {what}: {status} {code}"))
        }
        403 => Failure::Other(format!(
            "S3 at {origin} refused {what} ({status} {code}): check blob_s3_access_key_id, \
             blob_s3_secret_access_key and the bucket's policy"
        )),
        429 | 500 | 502 | 503 | 504 => Failure::Unavailable(format!("S3 at {origin}: {what}: {status} {code}")),
        _ => Failure::Other(format!("S3 at {origin}: {what}: {status} {code}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DENIED: &str = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>\
                          <Message>The request signature we calculated does not match</Message></Error>";

    #[test]
    fn the_error_code_comes_from_the_xml_body() {
        assert_eq!(error_code(DENIED), Some("SignatureDoesNotMatch"));
        assert_eq!(error_code("<html>bad gateway</html>"), None);
    }

    #[test]
    fn failures_fall_into_the_store_interfaces_kinds() {
        assert_eq!(classify(404, "", "HEAD of a", "http://s3"), Failure::NotFound);
        assert_eq!(classify(404, "<Error><Code>NoSuchKey</Code></Error>", "GET of a", "http://s3"), Failure::NotFound);
        let no_bucket = classify(404, "<Error><Code>NoSuchBucket</Code></Error>", "GET of a", "http://s3");
        assert!(
            matches!(no_bucket, Failure::Other(m) if m.contains("NoSuchBucket")),
            "a setup mistake, not a missing blob"
        );
        assert_eq!(classify(412, "", "PUT of a", "http://s3"), Failure::AlreadyExists);
        let conflict = "<Error><Code>ConditionalRequestConflict</Code></Error>";
        assert!(
            matches!(classify(409, conflict, "PUT of a", "http://s3"), Failure::Conflict(_)),
            "sent again: it may not exist"
        );
        assert!(
            matches!(classify(503, "<Error><Code>SlowDown</Code></Error>", "GET", "http://s3"), Failure::Unavailable(m) if m.contains("SlowDown"))
        );
        let Failure::Other(message) = classify(403, DENIED, "PUT of a", "http://s3") else { panic!() };
        assert!(
            message.contains("SignatureDoesNotMatch") && message.contains("blob_s3_secret_access_key"),
            "{message}"
        );
    }
}
