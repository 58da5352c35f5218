//! An S3 request, parsed (sans-IO) from the request head into what the
//! operations need: the bucket and key of the path-style URL, the query's
//! sub-resources and parameters, and the headers S3 gives meaning to.
//!
//! Everything is copied out of the connection's input buffer: reading the
//! body moves that buffer, and S3 requests are not the hot path.

use crate::http::{percent_decode_into, query_pairs, Method, RequestHead};
use crate::meta::CONTENT_TYPE_BYTES_MAX;

use super::S3Error;

/// Sub-resources that name an S3 operation (`?uploads`, `?delete`, ...):
/// a request that carries one is S3 even without AWS headers.
pub const SUB_RESOURCES: &[&[u8]] = &[
    b"list-type",
    b"uploads",
    b"uploadId",
    b"partNumber",
    b"delete",
    b"location",
    b"versioning",
    b"versions",
    b"versionId",
    b"acl",
    b"tagging",
    b"policy",
    b"cors",
    b"lifecycle",
    b"encryption",
    b"object-lock",
    b"X-Amz-Algorithm",
    b"X-Amz-Credential",
    b"X-Amz-Signature",
    b"X-Amz-Date",
    b"X-Amz-Expires",
    b"X-Amz-SignedHeaders",
    b"AWSAccessKeyId",
    b"Signature",
];

/// The parts of a request an S3 operation reads.
#[derive(Debug, Default)]
pub struct S3Request {
    pub method: Option<Method>,
    /// The first path segment; empty for the service (`GET /`).
    pub bucket: String,
    /// The rest of the path after `bucket/`, percent-decoded.
    pub key: Vec<u8>,
    /// Query parameters, names as sent, values percent-decoded.
    pub query: Vec<(String, Vec<u8>)>,
    pub headers: Headers,
    /// Who sent it (`auth::check`), once checked.
    pub access: super::auth::Access,
}

/// The headers S3 operations give meaning to.
#[derive(Debug, Default)]
pub struct Headers {
    pub content_type: Option<String>,
    pub content_md5: Option<String>,
    pub content_sha256: Option<String>,
    pub decoded_length: Option<String>,
    pub range: Option<String>,
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    pub if_unmodified_since: Option<String>,
    pub copy_source: Option<String>,
    pub copy_source_range: Option<String>,
    pub metadata_directive: Option<String>,
    pub copy_if_match: Option<String>,
    pub copy_if_none_match: Option<String>,
    pub copy_if_modified_since: Option<String>,
    pub copy_if_unmodified_since: Option<String>,
    pub authorization: Option<String>,
    /// `Origin`, `Access-Control-Request-Method` and
    /// `Access-Control-Request-Headers` (CORS).
    pub origin: Option<String>,
    pub cors_method: Option<String>,
    pub cors_headers: Option<String>,
    /// `x-amz-meta-NAME: VALUE` user metadata, names lower-case without
    /// the prefix, in the order sent.
    pub user: Vec<(String, String)>,
    /// A user metadata value was not UTF-8 (refused where stored).
    pub user_not_utf8: bool,
    /// A header that says one thing (a digest, a length, a source, the
    /// metadata's type) came twice with different values: refused, as
    /// which one the client meant is not for the server to guess.
    pub conflicting: Option<String>,
    /// Standard headers S3 stores with a value and sends back on reads,
    /// names as `:name` (see `Meta::user`).
    pub stored: Vec<(String, String)>,
    /// Other `x-amz-*` headers, names lower-case: `refuse` looks for
    /// features asked for that mkv does not have.
    pub refusable: Vec<(String, String)>,
}

/// Headers a PUT may give that S3 keeps with the value and returns on
/// GET/HEAD (`Content-Encoding` too, less the `aws-chunked` of the upload).
const STORED_HEADERS: &[&str] = &[
    "cache-control",
    "content-disposition",
    "content-language",
    "expires",
    "content-encoding",
];

impl S3Request {
    /// Parse the head of the request whose bytes are `request` (the head
    /// only), with the codec's `head` of it.
    pub fn parse(request: &[u8], head: &RequestHead) -> Result<S3Request, S3Error> {
        let mut path = Vec::new();
        if !percent_decode_into(&request[head.path.clone()], &mut path) {
            return Err(S3Error::invalid_argument("invalid percent-encoding in the path"));
        }
        let path = path.strip_prefix(b"/").unwrap_or(&path);
        let (bucket, key) = match path.iter().position(|&byte| byte == b'/') {
            Some(slash) => (&path[..slash], &path[slash + 1..]),
            None => (path, &path[path.len()..]),
        };
        let bucket = String::from_utf8(bucket.to_vec()).map_err(|_| S3Error::invalid_bucket_name())?;
        let mut query = Vec::new();
        if let Some(range) = head.query.clone() {
            for (name, value) in query_pairs(&request[range]) {
                // Names are decoded as values are, as the signature's
                // canonical query decodes them: `?upload%49d=` is the
                // `uploadId` it was signed as, never another operation.
                let mut decoded_name = Vec::new();
                let mut decoded = Vec::new();
                if !percent_decode_into(name, &mut decoded_name) || !percent_decode_into(value, &mut decoded) {
                    return Err(S3Error::invalid_argument("invalid percent-encoding in the query"));
                }
                let name = String::from_utf8(decoded_name)
                    .map_err(|_| S3Error::invalid_argument("a query parameter's name is not UTF-8"))?;
                query.push((name, decoded));
            }
        }
        // S3 keys are UTF-8: one that is not could not be listed as itself.
        if std::str::from_utf8(key).is_err() {
            return Err(S3Error::invalid_argument("the object key is not valid UTF-8"));
        }
        let headers = Headers::parse(request);
        if let Some(name) = &headers.conflicting {
            return Err(S3Error::invalid_argument(&format!(
                "header {name} is given twice with different values"
            )));
        }
        // Checked here, for every operation, rather than by each that
        // stores it: metadata that cannot be stored must never reach the
        // index (a multipart upload keeps it until its completion).
        if headers
            .content_type
            .as_ref()
            .is_some_and(|text| text.len() > CONTENT_TYPE_BYTES_MAX)
        {
            return Err(S3Error::invalid_argument("Content-Type is too long"));
        }
        Ok(S3Request {
            method: Some(head.method),
            bucket,
            key: key.to_vec(),
            query,
            headers,
            access: super::auth::Access::Open,
        })
    }

    /// Whether the query names `name` (with or without a value: `?uploads`
    /// and `?uploads=` alike).
    pub fn has(&self, name: &str) -> bool {
        self.query.iter().any(|(query_name, _)| query_name == name)
    }

    /// The value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&[u8]> {
        self.query
            .iter()
            .find(|(query_name, _)| query_name == name)
            .map(|(_, value)| value.as_slice())
    }

    /// The value of `name` as UTF-8 text.
    pub fn param_text(&self, name: &str) -> Option<&str> {
        self.param(name).and_then(|value| std::str::from_utf8(value).ok())
    }

    /// The value of `name` as a number; `default` when absent.
    pub fn param_number(&self, name: &str, default: u64) -> Result<u64, S3Error> {
        match self.param_text(name) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| S3Error::invalid_argument("a numeric query parameter is not a number")),
        }
    }

    /// The index key of this request's object: `/bucket/key`, as the
    /// native API names it.
    pub fn native_key(&self) -> Vec<u8> {
        native_key(&self.bucket, &self.key)
    }
}

/// The native key of object `key` in `bucket`.
pub fn native_key(bucket: &str, key: &[u8]) -> Vec<u8> {
    let mut native = Vec::with_capacity(bucket.len() + key.len() + 2);
    native.push(b'/');
    native.extend_from_slice(bucket.as_bytes());
    native.push(b'/');
    native.extend_from_slice(key);
    native
}

/// Headers whose second value cannot be read as part of a list: the
/// first winning let a wrong digest after a right one through unchecked.
const SINGLE_VALUED: &[&str] = &[
    "content-type",
    "content-md5",
    "x-amz-content-sha256",
    "x-amz-decoded-content-length",
    "range",
    "x-amz-copy-source",
    "x-amz-copy-source-range",
    "x-amz-metadata-directive",
    "authorization",
];

/// Headers read as a list, whose lines are joined: a condition sent as two
/// lines must not lose its second.
const LIST_VALUED: &[&str] = &[
    "if-match",
    "if-none-match",
    "x-amz-copy-source-if-match",
    "x-amz-copy-source-if-none-match",
];

/// `x-amz-*` headers (kept in `refusable`) that say one thing.
const AMZ_SINGLE_VALUED: &[&str] = &[
    "x-amz-checksum-algorithm",
    "x-amz-checksum-type",
    "x-amz-sdk-checksum-algorithm",
    "x-amz-trailer",
];

impl Headers {
    fn parse(request: &[u8]) -> Headers {
        let mut raw = [httparse::EMPTY_HEADER; crate::http::HEADER_COUNT_MAX];
        let mut parsed = httparse::Request::new(&mut raw);
        // The codec already parsed this head: it is complete and valid.
        let _ = parsed.parse(request);
        let mut headers = Headers::default();
        for header in parsed.headers.iter() {
            let value = String::from_utf8_lossy(header.value).trim().to_owned();
            let name = header.name.to_ascii_lowercase();
            if let Some(user_name) = name.strip_prefix("x-amz-meta-") {
                // Kept as sent or refused, never altered: a value that is not
                // UTF-8 would come back with its bytes replaced.
                headers.user_not_utf8 |= std::str::from_utf8(header.value).is_err();
                headers.user.push((user_name.to_owned(), value));
                continue;
            }
            if STORED_HEADERS.contains(&name.as_str()) {
                headers.stored.push((format!(":{name}"), value));
                continue;
            }
            let slot = match name.as_str() {
                "content-type" => &mut headers.content_type,
                "content-md5" => &mut headers.content_md5,
                "x-amz-content-sha256" => &mut headers.content_sha256,
                "x-amz-decoded-content-length" => &mut headers.decoded_length,
                "range" => &mut headers.range,
                "if-match" => &mut headers.if_match,
                "if-none-match" => &mut headers.if_none_match,
                "if-modified-since" => &mut headers.if_modified_since,
                "if-unmodified-since" => &mut headers.if_unmodified_since,
                "x-amz-copy-source" => &mut headers.copy_source,
                "x-amz-copy-source-range" => &mut headers.copy_source_range,
                "x-amz-metadata-directive" => &mut headers.metadata_directive,
                "x-amz-copy-source-if-match" => &mut headers.copy_if_match,
                "x-amz-copy-source-if-none-match" => &mut headers.copy_if_none_match,
                "x-amz-copy-source-if-modified-since" => &mut headers.copy_if_modified_since,
                "x-amz-copy-source-if-unmodified-since" => &mut headers.copy_if_unmodified_since,
                "authorization" => &mut headers.authorization,
                "origin" => &mut headers.origin,
                "access-control-request-method" => &mut headers.cors_method,
                "access-control-request-headers" => &mut headers.cors_headers,
                _ if name.starts_with("x-amz-") => {
                    headers.refusable.push((name, value));
                    continue;
                }
                _ => continue,
            };
            let differs = slot.as_ref().is_some_and(|first| *first != value);
            match slot {
                // A list split over two lines means what one line with
                // both would (`If-None-Match: "e"` and `If-None-Match: *`).
                Some(first) if differs && LIST_VALUED.contains(&name.as_str()) => {
                    first.push_str(", ");
                    first.push_str(&value);
                }
                Some(_) => {}
                None => *slot = Some(value),
            }
            if differs && SINGLE_VALUED.contains(&name.as_str()) {
                headers.conflicting.get_or_insert(name);
            }
        }
        for name in AMZ_SINGLE_VALUED {
            let mut values = headers.refusable.iter().filter(|(header, _)| header == name);
            if let Some((_, first)) = values.next() {
                if values.any(|(_, value)| value != first) {
                    headers.conflicting.get_or_insert(name.to_string());
                }
            }
        }
        headers
    }

    /// The value of another `x-amz-*` header (`name` lower-case), the
    /// first if it came more than once.
    pub fn amz(&self, name: &str) -> Option<&str> {
        self.refusable
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body is `aws-chunked` (SigV4 streaming, signed or not).
    pub fn is_aws_chunked(&self) -> bool {
        let encoded = self.stored.iter().any(|(name, value)| {
            name == ":content-encoding" && value.split(',').any(|token| token.trim() == "aws-chunked")
        });
        let streaming = self
            .content_sha256
            .as_deref()
            .is_some_and(|sha| sha.starts_with("STREAMING-"));
        encoded || streaming
    }
}

/// Whether a query string carries an S3 sub-resource or presigned-URL
/// parameter.
pub fn is_s3_query(query: &[u8]) -> bool {
    let mut decoded = Vec::new();
    query_pairs(query).any(|(name, _)| {
        // Decoded as `S3Request::parse` decodes it.
        let name = match name.contains(&b'%') && percent_decode_into(name, &mut decoded) {
            true => decoded.as_slice(),
            false => name,
        };
        SUB_RESOURCES.contains(&name)
            || super::refuse::UNSUPPORTED_SUB_RESOURCES
                .iter()
                .any(|sub_resource| sub_resource.as_bytes() == name)
    })
}

/// One byte range of a `Range: bytes=...` header, resolved against a value
/// of `size` bytes: `first..=last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

/// A decimal byte position; one too large for 64 bits is past any value's
/// end (S3 answers such a range as if it named the last byte).
fn parse_position(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    Some(text.parse::<u64>().unwrap_or(u64::MAX))
}

/// What a `Range` header asks of a value of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAsk {
    /// No range, or one this server ignores (several ranges, another unit):
    /// the whole value.
    Whole,
    Part(ByteRange),
    /// No byte of the range is in the value: 416.
    Unsatisfiable,
}

/// Resolve a `Range` header against `size`.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeAsk {
    let Some(spec) = header.and_then(|header| header.trim().strip_prefix("bytes=")) else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        // A suffix: the last n bytes.
        let Some(count) = parse_position(last) else {
            return RangeAsk::Whole;
        };
        if count == 0 || size == 0 {
            return RangeAsk::Unsatisfiable;
        }
        ByteRange {
            first: size.saturating_sub(count),
            last: size - 1,
        }
    } else {
        let Some(first) = parse_position(first) else {
            return RangeAsk::Whole;
        };
        let last = if last.is_empty() {
            u64::MAX
        } else {
            match parse_position(last) {
                Some(last) if last >= first => last,
                _ => return RangeAsk::Whole,
            }
        };
        if first >= size {
            return RangeAsk::Unsatisfiable;
        }
        ByteRange {
            first,
            last: last.min(size - 1),
        }
    };
    RangeAsk::Part(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> S3Request {
        let head = crate::http::parse_request(text.as_bytes()).unwrap().unwrap();
        S3Request::parse(&text.as_bytes()[..head.head_bytes], &head).unwrap()
    }

    #[test]
    fn path_style_bucket_key_and_query() {
        let request = parsed(
            "PUT /bkt/a%20b/c?partNumber=2&uploadId=x%2By HTTP/1.1\r\nHost: h\r\nContent-MD5: abc\r\n\
             x-amz-decoded-content-length: 5\r\nX-Amz-Meta-Colour: blue\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(request.bucket, "bkt");
        assert_eq!(request.key, b"a b/c");
        assert_eq!(request.native_key(), b"/bkt/a b/c");
        assert_eq!(request.param("uploadId"), Some(&b"x+y"[..]));
        assert_eq!(request.param_number("partNumber", 0).unwrap(), 2);
        assert_eq!(request.headers.content_md5.as_deref(), Some("abc"));
        assert_eq!(request.headers.decoded_length.as_deref(), Some("5"));
        assert_eq!(request.headers.user, [("colour".to_owned(), "blue".to_owned())]);
        let service = parsed("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((service.bucket.as_str(), service.key.len()), ("", 0));
        let bucket = parsed("GET /bkt/?list-type=2&prefix= HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((bucket.bucket.as_str(), bucket.key.len()), ("bkt", 0));
        assert!(bucket.has("list-type") && bucket.has("prefix") && !bucket.has("delimiter"));
    }

    #[test]
    fn s3_queries_are_recognised() {
        assert!(is_s3_query(b"uploads"));
        assert!(is_s3_query(b"uploads="));
        assert!(is_s3_query(b"delete="));
        assert!(is_s3_query(b"list-type=2&prefix=a"));
        assert!(is_s3_query(b"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=0"));
        assert!(!is_s3_query(b"list"));
        assert!(!is_s3_query(b"unlinked&start=a"));
        // Names percent-encoded are recognised as the names they encode.
        assert!(is_s3_query(b"upload%49d=u"));
        assert!(is_s3_query(b"%61cl"));
    }

    #[test]
    fn ranges_resolve_against_the_size() {
        let part = |first, last| RangeAsk::Part(ByteRange { first, last });
        assert_eq!(parse_range(None, 10), RangeAsk::Whole);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), part(0, 4));
        assert_eq!(parse_range(Some("bytes=5-"), 10), part(5, 9));
        assert_eq!(parse_range(Some("bytes=5-100"), 10), part(5, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), part(7, 9));
        assert_eq!(parse_range(Some("bytes=-30"), 10), part(0, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=4-2"), 10), RangeAsk::Whole);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), RangeAsk::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), RangeAsk::Whole);
        assert_eq!(
            parse_range(Some("bytes=0-99999999999999999999"), 10),
            RangeAsk::Part(ByteRange { first: 0, last: 9 }),
            "a last byte past 64 bits is the value's last"
        );
        assert_eq!(
            parse_range(Some("bytes=99999999999999999999-"), 10),
            RangeAsk::Unsatisfiable
        );
        assert_eq!(parse_range(Some("bytes=+1-2"), 10), RangeAsk::Whole);
    }
}
