//! The one table of wire error codes: each code declared once with its status and message, and
//! the one function that renders the OCI error envelope `{"errors":[{code,message,detail}]}`.

use http::StatusCode;
use serde::Serialize;

/// Error codes of the OCI Distribution Spec v1.1 (and Docker's extras).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    TagInvalid,
    PaginationNumberInvalid,
    RangeInvalid,
    /// Not a spec code: an unknown path or method (Distribution answers these with 404/405 too).
    NotFound,
    MethodNotAllowed,
    /// Not a spec code (Distribution's): a storage backend is down or overloaded; try again.
    Unavailable,
    /// Not a spec code: the registry failed, not the client.
    Internal,
}

impl ErrorCode {
    /// (code string, HTTP status, message) — the table.
    const fn spec(self) -> (&'static str, StatusCode, &'static str) {
        use ErrorCode::*;
        match self {
            BlobUnknown => ("BLOB_UNKNOWN", StatusCode::NOT_FOUND, "blob unknown to registry"),
            BlobUploadInvalid => ("BLOB_UPLOAD_INVALID", StatusCode::BAD_REQUEST, "blob upload invalid"),
            BlobUploadUnknown => ("BLOB_UPLOAD_UNKNOWN", StatusCode::NOT_FOUND, "blob upload unknown to registry"),
            DigestInvalid => {
                ("DIGEST_INVALID", StatusCode::BAD_REQUEST, "provided digest did not match uploaded content")
            }
            ManifestBlobUnknown => (
                "MANIFEST_BLOB_UNKNOWN",
                StatusCode::BAD_REQUEST,
                "manifest references a manifest or blob unknown to registry",
            ),
            ManifestInvalid => ("MANIFEST_INVALID", StatusCode::BAD_REQUEST, "manifest invalid"),
            ManifestUnknown => ("MANIFEST_UNKNOWN", StatusCode::NOT_FOUND, "manifest unknown to registry"),
            NameInvalid => ("NAME_INVALID", StatusCode::BAD_REQUEST, "invalid repository name"),
            NameUnknown => ("NAME_UNKNOWN", StatusCode::NOT_FOUND, "repository name not known to registry"),
            SizeInvalid => ("SIZE_INVALID", StatusCode::BAD_REQUEST, "provided length did not match content length"),
            Unauthorized => ("UNAUTHORIZED", StatusCode::UNAUTHORIZED, "authentication required"),
            Denied => ("DENIED", StatusCode::FORBIDDEN, "requested access to the resource is denied"),
            Unsupported => ("UNSUPPORTED", StatusCode::METHOD_NOT_ALLOWED, "the operation is unsupported"),
            TooManyRequests => ("TOOMANYREQUESTS", StatusCode::TOO_MANY_REQUESTS, "too many requests"),
            TagInvalid => ("TAG_INVALID", StatusCode::BAD_REQUEST, "manifest tag did not match URI"),
            PaginationNumberInvalid => {
                ("PAGINATION_NUMBER_INVALID", StatusCode::BAD_REQUEST, "invalid number of results requested")
            }
            RangeInvalid => ("RANGE_INVALID", StatusCode::RANGE_NOT_SATISFIABLE, "invalid content range"),
            NotFound => ("NOT_FOUND", StatusCode::NOT_FOUND, "no such endpoint"),
            MethodNotAllowed => ("UNSUPPORTED", StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint"),
            Unavailable => ("UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE, "service unavailable"),
            Internal => ("INTERNAL_ERROR", StatusCode::INTERNAL_SERVER_ERROR, "internal registry error"),
        }
    }

    pub const fn as_str(self) -> &'static str {
        self.spec().0
    }

    pub const fn status(self) -> StatusCode {
        self.spec().1
    }

    pub const fn message(self) -> &'static str {
        self.spec().2
    }
}

/// An error as the client sees it: a code, and a detail saying what exactly was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    pub code: ErrorCode,
    pub detail: Option<String>,
    /// Overrides the code's status (e.g. 413 for an oversized manifest, 416 for a bad chunk).
    pub status: Option<StatusCode>,
    /// The detail is the message too: clients (containers/image in skopeo and podman, docker)
    /// print only the message, and some refusals must be read by the user to be acted on.
    pub told: bool,
}

impl RegistryError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self { code, detail: Some(detail.into()), status: None, told: false }
    }

    pub fn bare(code: ErrorCode) -> Self {
        Self { code, detail: None, status: None, told: false }
    }

    /// Send the detail as the message as well (see [`RegistryError::told`]).
    pub fn told(mut self) -> Self {
        self.told = true;
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or(self.code.status())
    }

    /// The error envelope: `{"errors":[{"code","message","detail"}]}`.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            errors: [Entry<'a>; 1],
        }
        #[derive(Serialize)]
        struct Entry<'a> {
            code: &'static str,
            message: &'a str,
            detail: Option<&'a str>,
        }
        let message = match (&self.detail, self.told) {
            (Some(detail), true) => detail.as_str(),
            _ => self.code.message(),
        };
        let envelope =
            Envelope { errors: [Entry { code: self.code.as_str(), message, detail: self.detail.as_deref() }] };
        serde_json::to_vec(&envelope).expect("the envelope always serializes")
    }
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.detail {
            Some(detail) => write!(f, "{}: {detail}", self.code.as_str()),
            None => f.write_str(self.code.as_str()),
        }
    }
}

impl std::error::Error for RegistryError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_carries_code_message_and_detail() {
        let json = RegistryError::new(ErrorCode::DigestInvalid, "sha256 mismatch").to_json();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["errors"][0]["code"], "DIGEST_INVALID");
        assert_eq!(value["errors"][0]["message"], "provided digest did not match uploaded content");
        assert_eq!(value["errors"][0]["detail"], "sha256 mismatch");
    }

    #[test]
    fn a_told_error_sends_its_detail_as_the_message_too() {
        let json = RegistryError::new(ErrorCode::Denied, "quota exceeded: ...").told().to_json();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            (value["errors"][0]["message"].as_str(), value["errors"][0]["detail"].as_str()),
            (Some("quota exceeded: ..."), Some("quota exceeded: ..."))
        );
    }

    #[test]
    fn detail_is_null_when_absent() {
        let value: serde_json::Value =
            serde_json::from_slice(&RegistryError::bare(ErrorCode::BlobUnknown).to_json()).unwrap();
        assert!(value["errors"][0]["detail"].is_null());
    }

    #[test]
    fn statuses_follow_the_spec() {
        assert_eq!(ErrorCode::BlobUnknown.status(), StatusCode::NOT_FOUND);
        assert_eq!(ErrorCode::DigestInvalid.status(), StatusCode::BAD_REQUEST);
        assert_eq!(ErrorCode::Unauthorized.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(ErrorCode::Denied.status(), StatusCode::FORBIDDEN);
        assert_eq!(ErrorCode::TooManyRequests.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            RegistryError::bare(ErrorCode::SizeInvalid).with_status(StatusCode::PAYLOAD_TOO_LARGE).status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
