//! AWS Signature Version 4, verified (sans-IO).
//!
//! A signed S3 request proves that its sender holds the secret of an access
//! key: it carries an HMAC-SHA256 of a canonical form of itself, keyed by a
//! key derived from the secret and a scope (day, region, service). Clients
//! sign in one of two places:
//!
//! - the `Authorization` header: `AWS4-HMAC-SHA256 Credential=AK/20130524/
//!   us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=…`,
//!   the time in `x-amz-date` (or `Date`), the payload's SHA-256 (or how it
//!   is sent) in `x-amz-content-sha256`;
//! - a presigned URL's query: `X-Amz-Algorithm`, `X-Amz-Credential`,
//!   `X-Amz-Date`, `X-Amz-Expires`, `X-Amz-SignedHeaders`, `X-Amz-Signature`;
//!   the payload is `UNSIGNED-PAYLOAD`.
//!
//! Checking a request is two steps with a look-up between them, which is
//! the caller's: [`parse`] finds the claim (who says they signed, and how)
//! in a [`RequestView`] of the request as it was sent; the caller finds the
//! claimed access key's secret and its derived [`SigningKey`] (one HMAC
//! chain, cached per key and day by [`SigningKeyCache`]); [`Claim::verify`]
//! rebuilds the canonical request and compares signatures in constant
//! time. What it returns, [`Verified`], says how the body must be checked
//! ([`Payload`]): against a SHA-256, not at all, or chunk by chunk with a
//! [`ChunkSigner`]. Browser form uploads sign their policy document
//! instead ([`PostClaim`]).
//!
//! Canonicalisation follows S3, which differs from the other AWS services:
//! the path is percent-decoded and encoded once with AWS's `UriEncode`, with
//! no dot-segment or double-slash normalisation (a key may be `a/../b`).
//! The published SigV4 test suite is for a generic service (`service`,
//! normalised and doubly-encoded paths), so the rules are a `Profile`
//! that the suite's tests swap.
//!
//! Here: the claim, its parsing and canonicalisation, [`Verified`]. Beside:
//! `time` ([`Timestamp`]), `key` ([`Scope`], [`SigningKey`], the cache),
//! `chunk` (the streaming chain), `post` (POST policies), `error`
//! ([`AuthError`]); `suite` and `tests` are the unit tests.
//!
//! Decisions where clients and servers differ:
//!
//! - SigV2 (`Authorization: AWS AK:sig`, `?AWSAccessKeyId=…&Signature=…`) is
//!   refused as AWS's newer regions refuse it: 400 `InvalidRequest`, "The
//!   authorization mechanism you have provided is not supported. Please use
//!   AWS4-HMAC-SHA256."
//! - A security token (`x-amz-security-token`, `X-Amz-Security-Token`) is
//!   refused with 400 `InvalidToken`: mkv issues no temporary credentials, so
//!   a request with one was signed with a key that is not mkv's.
//! - `+` in a raw query is a literal plus, as mkv's query parser reads it
//!   (`crate::http::percent_decode_into`), so it is canonicalised as `%2B`.
//!   The SDKs never send a bare `+` (they encode a plus as `%2B` and a space
//!   as `%20`), so this only decides which hand-made URLs verify.
//! - Without `x-amz-date` the HTTP `Date` header gives the time, and the
//!   string to sign carries it in the ISO 8601 basic form.
//! - Every `x-amz-*` header sent must be signed, as S3 requires, except
//!   `x-amz-content-sha256`, which S3 tolerates unsigned: an unsigned one
//!   (say `x-amz-copy-source`) added to a captured request or a presigned
//!   URL would change what the request does.
//! - The region is not checked: it is part of the signed scope, so a
//!   signature for any region proves the same thing. `Claim::scope` tells it.

use std::ops::Range;

use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};

use crate::http::{percent_decode_into, query_pairs};

mod chunk;
mod error;
mod key;
mod post;
mod time;

pub use chunk::{trailer_sha256, ChunkSigner};
pub use error::{AuthError, Mismatch};
pub use key::{Scope, SigningKey, SigningKeyCache};
pub use post::{verify_post_policy, PostClaim};
pub use time::Timestamp;

type HmacSha256 = Hmac<Sha256>;

/// The one signing algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a header-signed request's time may be from ours, either way
/// (and how far in the future a presigned URL may start): S3's 15 minutes.
pub const SKEW_SECONDS_MAX: i64 = 15 * 60;
/// Longest life of a presigned URL: S3's seven days.
pub const PRESIGNED_EXPIRES_SECONDS_MAX: i64 = 7 * 24 * 60 * 60;
/// Most header names one signature may cover; SDKs sign about ten, and the
/// bound keeps a hostile list from costing one scan of the headers each.
pub const SIGNED_HEADERS_MAX: usize = 64;
/// Longest access key or region accepted in a credential; AWS's keys are
/// 20 characters and regions about 15.
pub const CREDENTIAL_PART_BYTES_MAX: usize = 128;
/// Derived signing keys kept by a [`SigningKeyCache`]: one per access key,
/// day and region in use; when full it starts again empty.
pub const SIGNING_KEYS_MAX: usize = 1024;

/// SHA-256 of nothing, the payload hash of a chunk string to sign.
const EMPTY_SHA256_HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// A request as it was sent, borrowed from the connection's buffer.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    pub method: &'a str,
    /// The path as sent: still percent-encoded, without the query.
    pub path: &'a [u8],
    /// The raw query string, without the `?`.
    pub query: &'a [u8],
    /// Every header as sent, in order, names in any case.
    pub headers: &'a [(&'a str, &'a [u8])],
}

impl<'a> RequestView<'a> {
    /// Every value of header `name` (case-insensitive), in the order sent.
    fn values<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + 'n
    where
        'a: 'n,
    {
        self.headers
            .iter()
            .filter(move |(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| *value)
    }

    /// The one value of header `name`: `Err` when it was sent twice.
    fn single(&self, name: &str) -> Result<Option<&'a [u8]>, ()> {
        let mut values = self.values(name);
        let first = values.next();
        match values.next() {
            Some(_) => Err(()),
            None => Ok(first),
        }
    }
}

/// Canonicalisation rules: S3's, or the generic service's of the published
/// test suite.
#[derive(Debug)]
struct Profile {
    /// The service the credential scope must name.
    service: &'static str,
    path: PathRule,
    /// Whether a presigned request's payload hash is its
    /// `x-amz-content-sha256` header (the generic suite signs the body
    /// hash) rather than `UNSIGNED-PAYLOAD` (S3).
    presigned_payload_from_header: bool,
}

#[derive(Debug)]
enum PathRule {
    /// Percent-decode, then encode once; no normalisation.
    S3,
    /// Encode the path as sent (so `%` becomes `%25`: the generic services'
    /// double encoding), after removing dot segments and empty segments
    /// when `normalize`.
    #[cfg_attr(not(test), allow(dead_code))]
    Generic { normalize: bool },
}

static S3: Profile = Profile {
    service: "s3",
    path: PathRule::S3,
    presigned_payload_from_header: false,
};

/// How the request's body is covered by the signature: what the caller
/// must check while it reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// The body's SHA-256 must be this (`x-amz-content-sha256: <hex>`).
    Hash([u8; 32]),
    /// The body is not signed (`UNSIGNED-PAYLOAD`; every presigned URL).
    Unsigned,
    /// `aws-chunked`, each chunk signed in a chain from the seed signature
    /// (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`): see [`ChunkSigner::chunk`].
    StreamingSigned,
    /// As `StreamingSigned`, then trailers signed too
    /// (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`): [`ChunkSigner::trailer`].
    StreamingSignedTrailer,
    /// `aws-chunked` with unsigned chunks and trailers
    /// (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`): the trailer's checksum is
    /// the body's only check.
    StreamingUnsignedTrailer,
}

impl Payload {
    /// The meaning of an `x-amz-content-sha256` value.
    pub fn parse(value: &str) -> Option<Payload> {
        match value {
            UNSIGNED_PAYLOAD => Some(Payload::Unsigned),
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => Some(Payload::StreamingSigned),
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => Some(Payload::StreamingSignedTrailer),
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => Some(Payload::StreamingUnsignedTrailer),
            hash => decode_hex_32(hash.as_bytes()).map(Payload::Hash),
        }
    }
}

/// Where a claim was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Header,
    /// A presigned URL, valid this many seconds from its date.
    Presigned {
        expires_seconds: i64,
    },
}

/// A request's claim to be signed by an access key: what [`parse`] found,
/// not yet verified.
#[derive(Clone, Debug)]
pub struct Claim {
    kind: Kind,
    access_key: String,
    scope: Scope,
    timestamp: Timestamp,
    /// Lower-case names, `;`-separated, in the client's order.
    signed_headers: String,
    signature: [u8; 32],
    /// The last line of the canonical request, as the client sent it.
    payload_hash: String,
    payload: Payload,
    profile: &'static Profile,
}

/// Find the SigV4 claim of `view`: `None` for an anonymous request.
pub fn parse(view: &RequestView) -> Result<Option<Claim>, AuthError> {
    parse_with(view, &S3)
}

fn parse_with(view: &RequestView, profile: &'static Profile) -> Result<Option<Claim>, AuthError> {
    let authorization = view
        .single("authorization")
        .map_err(|()| AuthError::HeaderMalformed("more than one Authorization header"))?;
    let mut presigned = false;
    let mut sigv2 = false;
    let mut token = view.values("x-amz-security-token").next().is_some();
    for (name, _) in query_pairs(view.query) {
        match name {
            b"X-Amz-Algorithm" | b"X-Amz-Credential" | b"X-Amz-Signature" => presigned = true,
            b"AWSAccessKeyId" => sigv2 = true,
            b"X-Amz-Security-Token" => token = true,
            _ => {}
        }
    }
    let claim = match (authorization, presigned || sigv2) {
        (None, false) => return Ok(None),
        (Some(_), true) => return Err(AuthError::InvalidArgument(MULTIPLE_MECHANISMS)),
        (None, true) if !presigned => return Err(AuthError::SigV2),
        _ if token => return Err(AuthError::InvalidToken),
        (Some(authorization), false) => parse_header(view, authorization, profile)?,
        (None, true) => parse_presigned(view, profile)?,
    };
    Ok(Some(claim))
}

const MULTIPLE_MECHANISMS: &str = "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, \
     Signature query string parameter or the Authorization header should be specified";

fn parse_header(view: &RequestView, value: &[u8], profile: &'static Profile) -> Result<Claim, AuthError> {
    let malformed = AuthError::HeaderMalformed;
    let value = std::str::from_utf8(value).map_err(|_| malformed("the header is not text"))?;
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    match scheme {
        ALGORITHM => {}
        "AWS" => return Err(AuthError::SigV2),
        _ => return Err(AuthError::InvalidArgument("Unsupported Authorization Type")),
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for component in rest.split(',').map(str::trim).filter(|component| !component.is_empty()) {
        let (name, field_value) = component
            .split_once('=')
            .ok_or(malformed("a component is not Name=value"))?;
        let slot = match name.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => {
                return Err(malformed(
                    "unknown component; expecting Credential, SignedHeaders and Signature",
                ))
            }
        };
        if slot.replace(field_value.trim()).is_some() {
            return Err(malformed("a component is given twice"));
        }
    }
    let credential = credential.ok_or(malformed("missing Credential"))?;
    let signed_headers = signed_headers.ok_or(malformed("missing SignedHeaders"))?;
    let signature = signature.ok_or(malformed("missing Signature"))?;
    let (access_key, scope) = parse_credential(credential, profile, Place::Header)?;
    let amz_date = view.single("x-amz-date").map_err(|()| AuthError::MissingDate)?;
    let timestamp = match amz_date {
        Some(text) => Timestamp::parse_basic(text.trim_ascii()),
        None => match view.single("date") {
            Ok(Some(text)) => Timestamp::parse_http_date(text),
            _ => None,
        },
    }
    .ok_or(AuthError::MissingDate)?;
    if timestamp.day().as_bytes() != scope.date {
        return Err(malformed(
            "Invalid credential date. Date is not the same as X-Amz-Date.",
        ));
    }
    let signed_headers = parse_signed_headers(signed_headers, Place::Header)?;
    let signature = decode_hex_32(signature.as_bytes()).ok_or(malformed("the Signature is not 64 hex digits"))?;
    let payload_hash = match view.single("x-amz-content-sha256") {
        Ok(Some(value)) => std::str::from_utf8(value)
            .map_err(|_| AuthError::InvalidArgument(CONTENT_SHA256_VALUES))?
            .trim(),
        Ok(None) => return Err(AuthError::MissingContentSha256),
        Err(()) => return Err(AuthError::InvalidArgument(CONTENT_SHA256_VALUES)),
    };
    let payload = Payload::parse(payload_hash).ok_or(AuthError::InvalidArgument(CONTENT_SHA256_VALUES))?;
    Ok(Claim {
        kind: Kind::Header,
        access_key,
        scope,
        timestamp,
        signed_headers,
        signature,
        payload_hash: payload_hash.to_owned(),
        payload,
        profile,
    })
}

const CONTENT_SHA256_VALUES: &str = "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, \
     STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, \
     STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid sha256 value.";

const PRESIGNED_REQUIRES: &str = "Query-string authentication version 4 requires the X-Amz-Algorithm, \
     X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.";

fn parse_presigned(view: &RequestView, profile: &'static Profile) -> Result<Claim, AuthError> {
    let malformed = AuthError::QueryMalformed;
    // [algorithm, credential, date, expires, signed headers, signature, content sha256]
    const NAMES: [&[u8]; 7] = [
        b"X-Amz-Algorithm",
        b"X-Amz-Credential",
        b"X-Amz-Date",
        b"X-Amz-Expires",
        b"X-Amz-SignedHeaders",
        b"X-Amz-Signature",
        b"X-Amz-Content-Sha256",
    ];
    let mut values: [Option<String>; 7] = Default::default();
    let mut decoded = Vec::new();
    for (name, value) in query_pairs(view.query) {
        let Some(index) = NAMES.iter().position(|known| *known == name) else {
            continue;
        };
        if !percent_decode_into(value, &mut decoded) {
            return Err(AuthError::InvalidUri);
        }
        let text = String::from_utf8(std::mem::take(&mut decoded)).map_err(|_| malformed(PRESIGNED_REQUIRES))?;
        if values[index].replace(text).is_some() {
            return Err(malformed("an X-Amz-* authentication parameter is given twice"));
        }
    }
    let [Some(algorithm), Some(credential), Some(date), Some(expires), Some(signed_headers), Some(signature), content_sha256] =
        values
    else {
        return Err(malformed(PRESIGNED_REQUIRES));
    };
    if algorithm != ALGORITHM {
        return Err(malformed("X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\""));
    }
    let (access_key, scope) = parse_credential(&credential, profile, Place::Query)?;
    let timestamp = Timestamp::parse_basic(date.as_bytes()).ok_or(malformed(
        "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
    ))?;
    let expires_seconds = parse_expires(&expires)?;
    if timestamp.day().as_bytes() != scope.date {
        return Err(malformed(
            "Invalid credential date. Date is not the same as X-Amz-Date.",
        ));
    }
    let signed_headers = parse_signed_headers(&signed_headers, Place::Query)?;
    let signature = decode_hex_32(signature.as_bytes()).ok_or(malformed("X-Amz-Signature is not 64 hex digits"))?;
    let payload_hash = match content_sha256 {
        Some(value) => value,
        None if profile.presigned_payload_from_header => match view.single("x-amz-content-sha256") {
            Ok(Some(value)) => String::from_utf8_lossy(value).trim().to_owned(),
            _ => return Err(AuthError::MissingContentSha256),
        },
        None => UNSIGNED_PAYLOAD.to_owned(),
    };
    let payload = match Payload::parse(&payload_hash) {
        Some(payload @ (Payload::Hash(_) | Payload::Unsigned)) => payload,
        _ => return Err(AuthError::InvalidArgument(CONTENT_SHA256_VALUES)),
    };
    Ok(Claim {
        kind: Kind::Presigned { expires_seconds },
        access_key,
        scope,
        timestamp,
        signed_headers,
        signature,
        payload_hash,
        payload,
        profile,
    })
}

/// `X-Amz-Expires`: whole seconds, at most a week.
fn parse_expires(text: &str) -> Result<i64, AuthError> {
    let malformed = AuthError::QueryMalformed;
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(malformed("X-Amz-Expires should be a number"));
    }
    if digits.len() < text.len() {
        return Err(malformed("X-Amz-Expires must be non-negative"));
    }
    let seconds: i64 = digits
        .parse()
        .map_err(|_| malformed("X-Amz-Expires should be a number"))?;
    if seconds > PRESIGNED_EXPIRES_SECONDS_MAX {
        return Err(malformed(
            "X-Amz-Expires must be less than a week (in seconds) that is 604800",
        ));
    }
    Ok(seconds)
}

/// Which of S3's two malformed-credential errors applies.
#[derive(Clone, Copy)]
enum Place {
    Header,
    Query,
}

impl Place {
    fn malformed(self, detail: &'static str) -> AuthError {
        match self {
            Place::Header => AuthError::HeaderMalformed(detail),
            Place::Query => AuthError::QueryMalformed(detail),
        }
    }

    fn credential_malformed(self, detail: &'static str) -> AuthError {
        match self {
            Place::Header => AuthError::HeaderMalformed(detail),
            Place::Query => AuthError::QueryCredentialMalformed(detail),
        }
    }
}

const CREDENTIAL_SHAPE: &str =
    "the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".";

/// `AK/20130524/us-east-1/s3/aws4_request` into the access key and scope.
fn parse_credential(text: &str, profile: &Profile, place: Place) -> Result<(String, Scope), AuthError> {
    // Split from the right: the scope has four parts, the key is the rest.
    let mut parts = text.rsplitn(5, '/');
    let (Some(terminal), Some(service), Some(region), Some(date), Some(access_key)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(place.credential_malformed(CREDENTIAL_SHAPE));
    };
    if access_key.is_empty()
        || access_key.len() > CREDENTIAL_PART_BYTES_MAX
        || region.is_empty()
        || region.len() > CREDENTIAL_PART_BYTES_MAX
    {
        return Err(place.credential_malformed(CREDENTIAL_SHAPE));
    }
    let date: [u8; 8] =
        date.as_bytes()
            .try_into()
            .ok()
            .filter(|date: &[u8; 8]| date.iter().all(u8::is_ascii_digit))
            .ok_or(place.credential_malformed(
                "incorrect date format in the Credential; it must be in the format \"yyyyMMdd\".",
            ))?;
    if service != profile.service {
        return Err(place.credential_malformed("incorrect service in the Credential; this endpoint belongs to \"s3\"."));
    }
    if terminal != "aws4_request" {
        return Err(
            place.credential_malformed("incorrect terminal in the Credential; this endpoint uses \"aws4_request\".")
        );
    }
    let scope = Scope {
        date,
        region: region.to_owned(),
        service: profile.service,
    };
    Ok((access_key.to_owned(), scope))
}

/// Check a `SignedHeaders` list; it must name `host`.
fn parse_signed_headers(text: &str, place: Place) -> Result<String, AuthError> {
    let mut count = 0;
    let mut host = false;
    for name in text.split(';') {
        count += 1;
        let token = |byte: u8| byte.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&byte);
        if name.is_empty() || !name.bytes().all(token) {
            return Err(place.malformed("SignedHeaders must be header names separated by ';'"));
        }
        host |= name.eq_ignore_ascii_case("host");
    }
    if count > SIGNED_HEADERS_MAX {
        return Err(place.malformed("SignedHeaders names too many headers"));
    }
    if !host {
        return Err(AuthError::HeadersNotSigned("host".to_owned()));
    }
    Ok(text.to_ascii_lowercase())
}

impl Claim {
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
    }

    /// How the body is covered, as the claim says (verified or not).
    pub fn payload(&self) -> Payload {
        self.payload
    }

    pub fn is_presigned(&self) -> bool {
        matches!(self.kind, Kind::Presigned { .. })
    }

    /// The signing key for this claim's scope, derived from `secret`
    /// (uncached: see [`SigningKeyCache`]).
    pub fn signing_key(&self, secret: &str) -> SigningKey {
        SigningKey::derive(secret, &self.scope)
    }

    /// Check the claim against the request it came from, `key` being the
    /// claimed access key's signing key for `scope()`, at time `now_unix`.
    pub fn verify(&self, view: &RequestView, key: &SigningKey, now_unix: i64) -> Result<Verified, AuthError> {
        self.check_time(now_unix)?;
        self.check_all_amz_signed(view)?;
        let canonical_request = self.canonical_request(view)?;
        let string_to_sign = self.string_to_sign(&canonical_request);
        let mut mac = key.mac();
        mac.update(&string_to_sign);
        // `verify_slice` compares in constant time.
        if mac.verify_slice(&self.signature).is_err() {
            return Err(AuthError::SignatureDoesNotMatch(Some(Box::new(Mismatch {
                access_key: self.access_key.clone(),
                signature_provided: hex(&self.signature),
                string_to_sign,
                canonical_request,
            }))));
        }
        Ok(Verified {
            access_key: self.access_key.clone(),
            payload: self.payload,
            seed_signature: self.signature,
            timestamp: self.timestamp,
            scope: self.scope.clone(),
            signing_key: *key,
            presigned: self.is_presigned(),
        })
    }

    fn check_time(&self, now_unix: i64) -> Result<(), AuthError> {
        let signed = self.timestamp.unix;
        match self.kind {
            Kind::Header if (now_unix - signed).abs() > SKEW_SECONDS_MAX => Err(AuthError::TimeTooSkewed {
                request_time: self.timestamp,
                server_time: now_unix,
            }),
            Kind::Presigned { .. } if signed - now_unix > SKEW_SECONDS_MAX => Err(AuthError::NotYetValid),
            Kind::Presigned { expires_seconds } if now_unix > signed + expires_seconds => Err(AuthError::Expired {
                expires_seconds,
                expired_at: signed + expires_seconds,
                server_time: now_unix,
            }),
            _ => Ok(()),
        }
    }

    /// Every `x-amz-*` header sent must be signed (but for
    /// `x-amz-content-sha256`, as S3).
    fn check_all_amz_signed(&self, view: &RequestView) -> Result<(), AuthError> {
        let mut unsigned = String::new();
        for (name, _) in view.headers {
            let amz = name.len() > 6 && name.as_bytes()[..6].eq_ignore_ascii_case(b"x-amz-");
            if !amz || name.eq_ignore_ascii_case("x-amz-content-sha256") {
                continue;
            }
            if self
                .signed_headers
                .split(';')
                .any(|signed| signed.eq_ignore_ascii_case(name))
            {
                continue;
            }
            let lower = name.to_ascii_lowercase();
            if !unsigned.split(", ").any(|listed| listed == lower) {
                if !unsigned.is_empty() {
                    unsigned.push_str(", ");
                }
                unsigned.push_str(&lower);
            }
        }
        if unsigned.is_empty() {
            Ok(())
        } else {
            Err(AuthError::HeadersNotSigned(unsigned))
        }
    }

    /// The canonical request, byte for byte as the client built it.
    fn canonical_request(&self, view: &RequestView) -> Result<Vec<u8>, AuthError> {
        // Deliberate allocations, one buffer per signed request (and one
        // for the query's parameters): a few hundred bytes, kept for the
        // error body when the signatures differ.
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(view.method.as_bytes());
        out.push(b'\n');
        self.profile.path.canonical_uri(view.path, &mut out)?;
        out.push(b'\n');
        canonical_query(view.query, self.is_presigned(), &mut out)?;
        out.push(b'\n');
        for name in self.signed_headers.split(';') {
            out.extend_from_slice(name.as_bytes());
            out.push(b':');
            for (index, value) in view.values(name).enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                push_trimmed(value, &mut out);
            }
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(self.signed_headers.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(self.payload_hash.as_bytes());
        Ok(out)
    }

    fn string_to_sign(&self, canonical_request: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(ALGORITHM.len() + 1 + 16 + 1 + 64 + 1 + 64);
        out.extend_from_slice(ALGORITHM.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&self.timestamp.basic);
        out.push(b'\n');
        out.extend_from_slice(self.scope.to_string().as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&hex_32(&Sha256::digest(canonical_request).into()));
        out
    }
}

impl PathRule {
    fn canonical_uri(&self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), AuthError> {
        if raw.is_empty() {
            out.push(b'/');
            return Ok(());
        }
        match self {
            PathRule::S3 => {
                let mut decoded = Vec::with_capacity(raw.len());
                if !percent_decode_into(raw, &mut decoded) {
                    return Err(AuthError::InvalidUri);
                }
                uri_encode(&decoded, true, out);
            }
            PathRule::Generic { normalize: false } => uri_encode(raw, true, out),
            PathRule::Generic { normalize: true } => uri_encode(&remove_dot_segments(raw), true, out),
        }
        Ok(())
    }
}

/// A path with `.`, `..` and empty segments resolved (generic services
/// only; S3 keys keep them).
fn remove_dot_segments(path: &[u8]) -> Vec<u8> {
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in path.split(|&byte| byte == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for segment in &segments {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    let directory = path.ends_with(b"/") || path.ends_with(b"/.") || path.ends_with(b"/..");
    if out.is_empty() || directory {
        out.push(b'/');
    }
    out
}

/// The canonical query: every parameter (less `X-Amz-Signature` of a
/// presigned URL) decoded and encoded again, sorted by name then value.
fn canonical_query(query: &[u8], presigned: bool, out: &mut Vec<u8>) -> Result<(), AuthError> {
    let mut encoded = Vec::with_capacity(query.len() * 2);
    let mut pairs: Vec<(Range<usize>, Range<usize>)> = Vec::new();
    let mut decoded = Vec::new();
    for (name, value) in query_pairs(query) {
        if presigned && name == b"X-Amz-Signature" {
            continue;
        }
        let mut encode = |raw: &[u8]| -> Result<Range<usize>, AuthError> {
            if !percent_decode_into(raw, &mut decoded) {
                return Err(AuthError::InvalidUri);
            }
            let start = encoded.len();
            uri_encode(&decoded, false, &mut encoded);
            Ok(start..encoded.len())
        };
        let name = encode(name)?;
        let value = encode(value)?;
        pairs.push((name, value));
    }
    pairs.sort_by(|(name_a, value_a), (name_b, value_b)| {
        (&encoded[name_a.clone()], &encoded[value_a.clone()])
            .cmp(&(&encoded[name_b.clone()], &encoded[value_b.clone()]))
    });
    for (index, (name, value)) in pairs.into_iter().enumerate() {
        if index > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(&encoded[name]);
        out.push(b'=');
        out.extend_from_slice(&encoded[value]);
    }
    Ok(())
}

/// AWS's `UriEncode`: every byte but the unreserved `A-Za-z0-9-._~` as
/// `%XX` (upper-case hex); `/` kept in a path.
fn uri_encode(bytes: &[u8], keep_slash: bool, out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in bytes {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(byte),
            b'/' if keep_slash => out.push(byte),
            _ => out.extend_from_slice(&[b'%', DIGITS[usize::from(byte >> 4)], DIGITS[usize::from(byte & 15)]]),
        }
    }
}

/// A header value trimmed, its inner runs of whitespace one space each.
fn push_trimmed(value: &[u8], out: &mut Vec<u8>) {
    let mut words = value
        .split(|byte| byte.is_ascii_whitespace() || *byte == 0x0b)
        .filter(|word| !word.is_empty());
    if let Some(first) = words.next() {
        out.extend_from_slice(first);
    }
    for word in words {
        out.push(b' ');
        out.extend_from_slice(word);
    }
}

/// A request whose signature checked out.
#[derive(Clone, Debug)]
pub struct Verified {
    pub access_key: String,
    /// How the body is covered; for a presigned URL, `Unsigned` (or its
    /// signed `X-Amz-Content-Sha256`), whatever an unsigned
    /// `x-amz-content-sha256` header says.
    pub payload: Payload,
    /// The request's signature: the first link of a streaming chain.
    pub seed_signature: [u8; 32],
    pub timestamp: Timestamp,
    pub scope: Scope,
    pub signing_key: SigningKey,
    pub presigned: bool,
}

impl Verified {
    /// The chain verifier of a streaming signed body, `None` unless the
    /// payload is `StreamingSigned` or `StreamingSignedTrailer`.
    pub fn chunk_signer(&self) -> Option<ChunkSigner> {
        matches!(self.payload, Payload::StreamingSigned | Payload::StreamingSignedTrailer).then(|| ChunkSigner {
            key: self.signing_key,
            timestamp: self.timestamp,
            scope: self.scope.clone(),
            previous: self.seed_signature,
            broken: false,
        })
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    super::checksum::hex(bytes)
}

fn hex_32(bytes: &[u8; 32]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 15)];
    }
    out
}

/// 64 hex digits (either case) into 32 bytes.
fn decode_hex_32(text: &[u8]) -> Option<[u8; 32]> {
    super::checksum::parse_hex_32(std::str::from_utf8(text).ok()?)
}

#[cfg(test)]
mod suite;
#[cfg(test)]
mod tests;
