//! The refusals of authentication, as S3 words them.

use std::fmt;

use super::{Timestamp, SKEW_SECONDS_MAX};

/// Why a request's authentication is refused: each maps to the S3 error
/// code, status and message that AWS answers. None carries a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// 400 `InvalidArgument`, with AWS's message.
    InvalidArgument(&'static str),
    /// SigV2: 400 `InvalidRequest`.
    SigV2,
    /// 400 `AuthorizationHeaderMalformed`.
    HeaderMalformed(&'static str),
    /// 400 `AuthorizationQueryParametersError`.
    QueryMalformed(&'static str),
    /// 400 `AuthorizationQueryParametersError` about `X-Amz-Credential`.
    QueryCredentialMalformed(&'static str),
    /// 400 `InvalidRequest`: S3 needs `x-amz-content-sha256` with SigV4.
    MissingContentSha256,
    /// 400 `XAmzContentSHA256Mismatch`: the body's hash is not the signed one
    /// (the caller's to find, while it reads the body).
    ContentSha256Mismatch,
    /// 400 `InvalidToken`: a security token, which mkv never issues.
    InvalidToken,
    /// 400 `InvalidURI`: a bad percent-escape in the path or query.
    InvalidUri,
    /// 400 `InvalidArgument`: a POST form lacks the field.
    PostFieldMissing(&'static str),
    /// 403 `AccessDenied`: no usable `x-amz-date` or `Date`.
    MissingDate,
    /// 403 `AccessDenied`: these headers (comma-separated) were sent
    /// unsigned.
    HeadersNotSigned(String),
    /// 403 `RequestTimeTooSkewed`.
    TimeTooSkewed { request_time: Timestamp, server_time: i64 },
    /// 403 `AccessDenied`, "Request has expired".
    Expired {
        expires_seconds: i64,
        expired_at: i64,
        server_time: i64,
    },
    /// 403 `AccessDenied`: a presigned URL dated in the future.
    NotYetValid,
    /// 403 `InvalidAccessKeyId` (the caller's, after its look-up).
    InvalidAccessKeyId(String),
    /// 403 `SignatureDoesNotMatch`, with what we signed when there is
    /// something to show (a request; not a chunk or a policy).
    SignatureDoesNotMatch(Option<Box<Mismatch>>),
}

/// What the server signed, for the client to compare with what it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub access_key: String,
    /// Hex, as the client sent it.
    pub signature_provided: String,
    pub string_to_sign: Vec<u8>,
    pub canonical_request: Vec<u8>,
}

impl AuthError {
    /// An unknown access key.
    pub fn unknown_key(access_key: &str) -> AuthError {
        AuthError::InvalidAccessKeyId(access_key.to_owned())
    }

    pub fn status(&self) -> u16 {
        match self {
            AuthError::InvalidArgument(_)
            | AuthError::SigV2
            | AuthError::HeaderMalformed(_)
            | AuthError::QueryMalformed(_)
            | AuthError::QueryCredentialMalformed(_)
            | AuthError::MissingContentSha256
            | AuthError::ContentSha256Mismatch
            | AuthError::InvalidToken
            | AuthError::InvalidUri
            | AuthError::PostFieldMissing(_) => 400,
            AuthError::MissingDate
            | AuthError::HeadersNotSigned(_)
            | AuthError::TimeTooSkewed { .. }
            | AuthError::Expired { .. }
            | AuthError::NotYetValid
            | AuthError::InvalidAccessKeyId(_)
            | AuthError::SignatureDoesNotMatch(_) => 403,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AuthError::InvalidArgument(_) | AuthError::PostFieldMissing(_) => "InvalidArgument",
            AuthError::SigV2 | AuthError::MissingContentSha256 => "InvalidRequest",
            AuthError::HeaderMalformed(_) => "AuthorizationHeaderMalformed",
            AuthError::QueryMalformed(_) | AuthError::QueryCredentialMalformed(_) => {
                "AuthorizationQueryParametersError"
            }
            AuthError::ContentSha256Mismatch => "XAmzContentSHA256Mismatch",
            AuthError::InvalidToken => "InvalidToken",
            AuthError::InvalidUri => "InvalidURI",
            AuthError::MissingDate
            | AuthError::HeadersNotSigned(_)
            | AuthError::Expired { .. }
            | AuthError::NotYetValid => "AccessDenied",
            AuthError::TimeTooSkewed { .. } => "RequestTimeTooSkewed",
            AuthError::InvalidAccessKeyId(_) => "InvalidAccessKeyId",
            AuthError::SignatureDoesNotMatch(_) => "SignatureDoesNotMatch",
        }
    }

    pub fn message(&self) -> String {
        match self {
            AuthError::InvalidArgument(message) | AuthError::QueryMalformed(message) => (*message).to_owned(),
            AuthError::SigV2 => {
                "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.".to_owned()
            }
            AuthError::HeaderMalformed(detail) => format!("The authorization header is malformed; {detail}"),
            AuthError::QueryCredentialMalformed(detail) => {
                format!("Error parsing the X-Amz-Credential parameter; {detail}")
            }
            AuthError::MissingContentSha256 => "Missing required header for this request: x-amz-content-sha256".to_owned(),
            AuthError::ContentSha256Mismatch => {
                "The provided 'x-amz-content-sha256' header does not match what was computed.".to_owned()
            }
            AuthError::InvalidToken => "The provided token is malformed or otherwise invalid.".to_owned(),
            AuthError::InvalidUri => "Couldn't parse the specified URI.".to_owned(),
            AuthError::PostFieldMissing(name) => format!(
                "Bucket POST must contain a field named '{name}'.  If it is specified, please check the order of the fields."
            ),
            AuthError::MissingDate => "AWS authentication requires a valid Date or x-amz-date header".to_owned(),
            AuthError::HeadersNotSigned(_) => "There were headers present in the request which were not signed".to_owned(),
            AuthError::TimeTooSkewed { .. } => {
                "The difference between the request time and the current time is too large.".to_owned()
            }
            AuthError::Expired { .. } => "Request has expired".to_owned(),
            AuthError::NotYetValid => "Request is not valid yet".to_owned(),
            AuthError::InvalidAccessKeyId(_) => {
                "The AWS Access Key Id you provided does not exist in our records.".to_owned()
            }
            AuthError::SignatureDoesNotMatch(_) => "The request signature we calculated does not match the signature \
                 you provided. Check your key and signing method."
                .to_owned(),
        }
    }

    /// The extra elements of the error body, in AWS's order (name, text;
    /// the caller escapes the text).
    pub fn details(&self) -> Vec<(&'static str, String)> {
        let time = |unix: i64| {
            Timestamp::from_unix(unix)
                .map(|time| time.iso8601())
                .unwrap_or_default()
        };
        match self {
            AuthError::HeadersNotSigned(names) => vec![("HeadersNotSigned", names.clone())],
            AuthError::TimeTooSkewed {
                request_time,
                server_time,
            } => vec![
                ("RequestTime", request_time.as_str().to_owned()),
                ("ServerTime", time(*server_time)),
                ("MaxAllowedSkewMilliseconds", (SKEW_SECONDS_MAX * 1000).to_string()),
            ],
            AuthError::Expired {
                expires_seconds,
                expired_at,
                server_time,
            } => vec![
                ("X-Amz-Expires", expires_seconds.to_string()),
                ("Expires", time(*expired_at)),
                ("ServerTime", time(*server_time)),
            ],
            AuthError::InvalidAccessKeyId(access_key) => vec![("AWSAccessKeyId", access_key.clone())],
            AuthError::SignatureDoesNotMatch(Some(mismatch)) => vec![
                ("AWSAccessKeyId", mismatch.access_key.clone()),
                (
                    "StringToSign",
                    String::from_utf8_lossy(&mismatch.string_to_sign).into_owned(),
                ),
                ("SignatureProvided", mismatch.signature_provided.clone()),
                ("StringToSignBytes", spaced_hex(&mismatch.string_to_sign)),
                (
                    "CanonicalRequest",
                    String::from_utf8_lossy(&mismatch.canonical_request).into_owned(),
                ),
                ("CanonicalRequestBytes", spaced_hex(&mismatch.canonical_request)),
            ],
            _ => Vec::new(),
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for AuthError {}

/// `41 57 53 34`: bytes as S3 shows them in `*Bytes` error elements.
fn spaced_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 3);
    for (index, byte) in bytes.iter().enumerate() {
        if index > 0 {
            text.push(' ');
        }
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 15)]));
    }
    text
}
