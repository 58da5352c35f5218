//! S3 XML bodies, without any IO.
//!
//! The rendering functions build the response documents the S3 API sends (listings, multipart results,
//! errors, ...) and return them as bytes; the parsing functions read the request bodies mkv receives:
//! `CompleteMultipartUpload`, `Delete` and `CreateBucketConfiguration`. Every rendered document opens
//! with the XML declaration and, except `Error`, carries the S3 namespace on its root element.
//!
//! Parsing streams over the body without building a tree, under named limits (`XML_DEPTH_MAX`,
//! `XML_ELEMENTS_MAX`, `XML_NAME_BYTES_MAX`, `XML_TEXT_BYTES_MAX`): what a parse allocates is what it
//! keeps (the keys, the parts) plus a few kilobytes, whatever the document's shape.
//!
//! Text is always XML-escaped by quick-xml. Keys are bytes: they are rendered lossily as UTF-8 unless
//! the listing asked for `encoding-type=url`, in which case they (and the prefixes, delimiters and
//! markers of the listing) are percent-encoded the way S3 does it.
//!
//! Also here: the ISO 8601 timestamps of XML bodies and the HTTP dates of headers.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesDecl, BytesEnd, BytesRef, BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer};

use super::checksum::{Algorithm, ChecksumType};

/// The namespace of every S3 response document except `Error`.
const NAMESPACE: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
/// The owner reported everywhere an owner is expected.
const OWNER: &str = "mkv";
/// Most keys a `Delete` request may name.
pub const DELETE_KEYS_MAX: usize = 1000;
/// Highest part number of a multipart upload.
const PART_NUMBER_MAX: u32 = 10_000;
/// Latest instant `httpdate` can render: 9999-12-31T23:59:59Z.
const HTTP_DATE_MAX_SECONDS: u64 = 253_402_300_799;

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEntry {
    pub key: Vec<u8>,
    /// Unix milliseconds.
    pub last_modified_ms: u64,
    /// Without quotes.
    pub etag: String,
    pub size: u64,
}

/// A `ListObjectsV2` result.
#[derive(Debug, Clone)]
pub struct ListV2<'a> {
    pub bucket: &'a str,
    pub prefix: &'a [u8],
    pub delimiter: Option<&'a [u8]>,
    pub max_keys: usize,
    pub continuation_token: Option<&'a str>,
    pub next_continuation_token: Option<&'a str>,
    pub start_after: Option<&'a [u8]>,
    pub is_truncated: bool,
    pub encoding_url: bool,
    /// `fetch-owner=true`: each object names its owner.
    pub fetch_owner: bool,
    pub contents: &'a [ObjectEntry],
    pub common_prefixes: &'a [Vec<u8>],
}

/// A `ListObjects` (version 1) result.
#[derive(Debug, Clone)]
pub struct ListV1<'a> {
    pub bucket: &'a str,
    pub prefix: &'a [u8],
    pub marker: &'a [u8],
    pub next_marker: Option<&'a [u8]>,
    pub delimiter: Option<&'a [u8]>,
    pub max_keys: usize,
    pub is_truncated: bool,
    pub encoding_url: bool,
    pub contents: &'a [ObjectEntry],
    pub common_prefixes: &'a [Vec<u8>],
}

/// One bucket of `ListBuckets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketEntry {
    pub name: String,
    pub created_ms: u64,
}

/// One uploaded part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartEntry {
    pub number: u32,
    /// Without quotes.
    pub etag: String,
    pub size: u64,
    pub last_modified_ms: u64,
}

/// A `ListParts` result.
#[derive(Debug, Clone)]
pub struct ListParts<'a> {
    pub bucket: &'a str,
    pub key: &'a [u8],
    pub upload_id: &'a str,
    pub part_number_marker: u32,
    pub next_part_number_marker: u32,
    pub max_parts: usize,
    pub is_truncated: bool,
    pub parts: &'a [PartEntry],
}

/// One upload in progress of `ListMultipartUploads`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadEntry {
    pub key: Vec<u8>,
    pub upload_id: String,
    pub initiated_ms: u64,
}

/// A `ListMultipartUploads` result.
#[derive(Debug, Clone)]
pub struct ListUploads<'a> {
    pub bucket: &'a str,
    pub prefix: &'a [u8],
    pub key_marker: &'a [u8],
    pub upload_id_marker: &'a str,
    pub next_key_marker: Option<&'a [u8]>,
    pub next_upload_id_marker: Option<&'a str>,
    pub max_uploads: usize,
    pub is_truncated: bool,
    pub uploads: &'a [UploadEntry],
    /// `encoding-type=url`: keys, prefix and markers percent-encoded (keys
    /// with bytes XML cannot carry list only so).
    pub encoding_url: bool,
}

/// A key a `Delete` request could not delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteError {
    pub key: Vec<u8>,
    pub code: String,
    pub message: String,
}

/// Why a request body was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum XmlError {
    /// Not well-formed, or not the expected document (S3's `MalformedXML`).
    Malformed(String),
    /// More entries than the request may carry.
    TooMany,
}

impl fmt::Display for XmlError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XmlError::Malformed(reason) => write!(formatter, "malformed XML: {reason}"),
            XmlError::TooMany => write!(formatter, "too many entries (at most {DELETE_KEYS_MAX})"),
        }
    }
}

impl std::error::Error for XmlError {}

// ---------------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------------

/// A document being written into memory.
pub(super) struct Document {
    writer: Writer<Vec<u8>>,
}

impl Document {
    /// A document holding only the XML declaration.
    pub(super) fn new() -> Self {
        let mut document = Document {
            writer: Writer::new(Vec::new()),
        };
        document.write(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
        document
    }

    fn write(&mut self, event: Event<'_>) {
        self.writer.write_event(event).expect("writing to a Vec");
    }

    /// Opens the root element, in the S3 namespace.
    pub(super) fn open_root(&mut self, name: &str) {
        self.write(Event::Start(
            BytesStart::new(name).with_attributes([("xmlns", NAMESPACE)]),
        ));
    }

    pub(super) fn open(&mut self, name: &str) {
        self.write(Event::Start(BytesStart::new(name)));
    }

    pub(super) fn close(&mut self, name: &str) {
        self.write(Event::End(BytesEnd::new(name)));
    }

    /// `<name>text</name>`, text escaped.
    pub(super) fn element(&mut self, name: &str, text: &str) {
        self.open(name);
        self.write(Event::Text(BytesText::new(text)));
        self.close(name);
    }

    /// An element holding a number or a boolean.
    pub(super) fn value(&mut self, name: &str, value: impl fmt::Display) {
        self.element(name, &value.to_string());
    }

    /// An element holding a key, a prefix or a marker: percent-encoded or lossy UTF-8.
    fn key(&mut self, name: &str, key: &[u8], encoding_url: bool) {
        self.element(name, &key_text(key, encoding_url));
    }

    /// An ETag, quoted.
    fn etag(&mut self, etag: &str) {
        self.element("ETag", &format!("\"{etag}\""));
    }

    /// The one owner, as `Owner` or `Initiator`.
    fn owner(&mut self, name: &str) {
        self.open(name);
        self.element("ID", OWNER);
        self.element("DisplayName", OWNER);
        self.close(name);
    }

    /// One `Contents` element of a listing, with its `Owner` when `owner`.
    fn contents(&mut self, entry: &ObjectEntry, encoding_url: bool, owner: bool) {
        self.open("Contents");
        self.key("Key", &entry.key, encoding_url);
        self.element("LastModified", &iso8601_ms(entry.last_modified_ms));
        self.etag(&entry.etag);
        self.value("Size", entry.size);
        self.element("StorageClass", "STANDARD");
        if owner {
            self.owner("Owner");
        }
        self.close("Contents");
    }

    /// The `CommonPrefixes` elements of a listing.
    fn common_prefixes(&mut self, prefixes: &[Vec<u8>], encoding_url: bool) {
        for prefix in prefixes {
            self.open("CommonPrefixes");
            self.key("Prefix", prefix, encoding_url);
            self.close("CommonPrefixes");
        }
    }

    /// `Delimiter` when there is one, then `EncodingType` when keys are url-encoded.
    fn delimiter_and_encoding(&mut self, delimiter: Option<&[u8]>, encoding_url: bool) {
        if let Some(delimiter) = delimiter {
            self.key("Delimiter", delimiter, encoding_url);
        }
        if encoding_url {
            self.element("EncodingType", "url");
        }
    }

    pub(super) fn finish(self) -> Vec<u8> {
        self.writer.into_inner()
    }
}

/// A key as rendered: percent-encoded like S3 (`encoding-type=url`) or lossy UTF-8.
fn key_text(key: &[u8], encoding_url: bool) -> Cow<'_, str> {
    if encoding_url {
        Cow::Owned(url_encode(key))
    } else {
        String::from_utf8_lossy(key)
    }
}

/// Percent-encodes every byte but the unreserved ones and `/`, in upper-case hex.
fn url_encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut encoded = String::with_capacity(bytes.len());
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            encoded.push(char::from(byte));
        } else {
            encoded.push('%');
            encoded.push(char::from(HEX[usize::from(byte >> 4)]));
            encoded.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    encoded
}

/// `ListBucketResult` of `ListObjectsV2`.
pub fn list_v2(list: &ListV2) -> Vec<u8> {
    let mut document = Document::new();
    document.open_root("ListBucketResult");
    document.element("Name", list.bucket);
    document.key("Prefix", list.prefix, list.encoding_url);
    if let Some(start_after) = list.start_after {
        document.key("StartAfter", start_after, list.encoding_url);
    }
    if let Some(token) = list.continuation_token {
        document.element("ContinuationToken", token);
    }
    if let Some(token) = list.next_continuation_token {
        document.element("NextContinuationToken", token);
    }
    document.value("KeyCount", list.contents.len() + list.common_prefixes.len());
    document.value("MaxKeys", list.max_keys);
    document.delimiter_and_encoding(list.delimiter, list.encoding_url);
    document.value("IsTruncated", list.is_truncated);
    for entry in list.contents {
        document.contents(entry, list.encoding_url, list.fetch_owner);
    }
    document.common_prefixes(list.common_prefixes, list.encoding_url);
    document.close("ListBucketResult");
    document.finish()
}

/// `ListBucketResult` of `ListObjects` (version 1).
pub fn list_v1(list: &ListV1) -> Vec<u8> {
    let mut document = Document::new();
    document.open_root("ListBucketResult");
    document.element("Name", list.bucket);
    // V1 encodes keys, markers and the delimiter but not the prefix: the
    // clients decode only those (botocore).
    document.key("Prefix", list.prefix, false);
    document.key("Marker", list.marker, list.encoding_url);
    if let Some(next_marker) = list.next_marker {
        document.key("NextMarker", next_marker, list.encoding_url);
    }
    document.value("MaxKeys", list.max_keys);
    document.delimiter_and_encoding(list.delimiter, list.encoding_url);
    document.value("IsTruncated", list.is_truncated);
    for entry in list.contents {
        document.contents(entry, list.encoding_url, true);
    }
    document.common_prefixes(list.common_prefixes, list.encoding_url);
    document.close("ListBucketResult");
    document.finish()
}

/// A `ListVersionsResult` of current objects only.
pub struct ListVersions<'a> {
    pub bucket: &'a str,
    pub prefix: &'a [u8],
    pub key_marker: &'a [u8],
    /// Where the next page starts (exclusive), when truncated.
    pub next_key_marker: Option<&'a [u8]>,
    pub delimiter: Option<&'a [u8]>,
    pub max_keys: usize,
    pub is_truncated: bool,
    pub encoding_url: bool,
    pub contents: &'a [ObjectEntry],
    pub common_prefixes: &'a [Vec<u8>],
}

/// `ListVersionsResult` of current objects only: each is version "null" and the latest.
pub fn list_versions(list: &ListVersions) -> Vec<u8> {
    let mut document = Document::new();
    document.open_root("ListVersionsResult");
    document.element("Name", list.bucket);
    document.key("Prefix", list.prefix, list.encoding_url);
    document.key("KeyMarker", list.key_marker, list.encoding_url);
    document.element("VersionIdMarker", "");
    if let Some(next) = list.next_key_marker {
        document.key("NextKeyMarker", next, list.encoding_url);
        document.element("NextVersionIdMarker", "null");
    }
    document.value("MaxKeys", list.max_keys);
    document.delimiter_and_encoding(list.delimiter, list.encoding_url);
    document.value("IsTruncated", list.is_truncated);
    for entry in list.contents {
        document.open("Version");
        document.key("Key", &entry.key, list.encoding_url);
        document.element("VersionId", "null");
        document.value("IsLatest", true);
        document.element("LastModified", &iso8601_ms(entry.last_modified_ms));
        document.etag(&entry.etag);
        document.value("Size", entry.size);
        document.owner("Owner");
        document.element("StorageClass", "STANDARD");
        document.close("Version");
    }
    document.common_prefixes(list.common_prefixes, list.encoding_url);
    document.close("ListVersionsResult");
    document.finish()
}

/// An empty root element in the S3 namespace.
fn empty_root(name: &str) -> Vec<u8> {
    let mut document = Document::new();
    document.write(Event::Empty(
        BytesStart::new(name).with_attributes([("xmlns", NAMESPACE)]),
    ));
    document.finish()
}

/// `LocationConstraint`, empty: the bucket is in us-east-1.
pub fn location() -> Vec<u8> {
    empty_root("LocationConstraint")
}

/// `VersioningConfiguration`, empty: versioning has never been enabled.
pub fn versioning() -> Vec<u8> {
    empty_root("VersioningConfiguration")
}

/// `Error`, without namespace.
pub fn error(code: &str, message: &str, resource: &str, request_id: &str, details: &[(&str, String)]) -> Vec<u8> {
    let mut document = Document::new();
    document.open("Error");
    document.element("Code", code);
    document.element("Message", message);
    for (name, value) in details {
        document.element(name, value);
    }
    document.element("Resource", resource);
    document.element("RequestId", request_id);
    document.close("Error");
    document.finish()
}

/// `InitiateMultipartUploadResult`.
pub fn initiate_multipart(bucket: &str, key: &[u8], upload_id: &str) -> Vec<u8> {
    let mut document = Document::new();
    document.open_root("InitiateMultipartUploadResult");
    document.element("Bucket", bucket);
    document.key("Key", key, false);
    document.element("UploadId", upload_id);
    document.close("InitiateMultipartUploadResult");
    document.finish()
}

/// `CompleteMultipartUploadResult`; `etag` comes unquoted.
pub fn complete_multipart(location: &str, bucket: &str, key: &[u8], etag: &str) -> Vec<u8> {
    complete_multipart_checksummed(location, bucket, key, etag, None)
}

/// A multipart object's checksum as a result reports it: `<ChecksumCRC32>value</ChecksumCRC32>` then
/// `<ChecksumType>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectChecksum<'a> {
    pub algorithm: Algorithm,
    /// Base64, with its `-N` suffix when composite (`checksum::composite`).
    pub value: &'a str,
    pub checksum_type: ChecksumType,
}

/// `CompleteMultipartUploadResult` with the object's checksum when the upload has one.
pub fn complete_multipart_checksummed(
    location: &str,
    bucket: &str,
    key: &[u8],
    etag: &str,
    checksum: Option<ObjectChecksum<'_>>,
) -> Vec<u8> {
    let mut document = Document::new();
    document.open_root("CompleteMultipartUploadResult");
    document.element("Location", location);
    document.element("Bucket", bucket);
    document.key("Key", key, false);
    document.etag(etag);
    if let Some(checksum) = checksum {
        document.element(checksum.algorithm.xml_element(), checksum.value);
        document.element("ChecksumType", checksum.checksum_type.value());
    }
    document.close("CompleteMultipartUploadResult");
    document.finish()
}

/// A root holding an ETag, a LastModified and a checksum if given: the
/// results of the two copies.
fn copy_result(root: &str, etag: &str, last_modified_ms: u64, checksum: Option<(Algorithm, &str)>) -> Vec<u8> {
    let mut document = Document::new();
    document.open_root(root);
    document.etag(etag);
    document.element("LastModified", &iso8601_ms(last_modified_ms));
    if let Some((algorithm, value)) = checksum {
        document.element(algorithm.xml_element(), value);
    }
    document.close(root);
    document.finish()
}

/// `CopyObjectResult`.
pub fn copy_object(etag: &str, last_modified_ms: u64) -> Vec<u8> {
    copy_result("CopyObjectResult", etag, last_modified_ms, None)
}

/// `CopyPartResult`, with the part's checksum when it has one.
pub fn copy_part(etag: &str, last_modified_ms: u64, checksum: Option<(Algorithm, &str)>) -> Vec<u8> {
    copy_result("CopyPartResult", etag, last_modified_ms, checksum)
}

/// `ListPartsResult`.
pub fn list_parts(list: &ListParts) -> Vec<u8> {
    let mut document = Document::new();
    document.open_root("ListPartsResult");
    document.element("Bucket", list.bucket);
    document.key("Key", list.key, false);
    document.element("UploadId", list.upload_id);
    document.owner("Initiator");
    document.owner("Owner");
    document.element("StorageClass", "STANDARD");
    document.value("PartNumberMarker", list.part_number_marker);
    document.value("NextPartNumberMarker", list.next_part_number_marker);
    document.value("MaxParts", list.max_parts);
    document.value("IsTruncated", list.is_truncated);
    for part in list.parts {
        document.open("Part");
        document.value("PartNumber", part.number);
        document.element("LastModified", &iso8601_ms(part.last_modified_ms));
        document.etag(&part.etag);
        document.value("Size", part.size);
        document.close("Part");
    }
    document.close("ListPartsResult");
    document.finish()
}

/// `ListMultipartUploadsResult`.
pub fn list_uploads(list: &ListUploads) -> Vec<u8> {
    let mut document = Document::new();
    document.open_root("ListMultipartUploadsResult");
    let encoded = list.encoding_url;
    document.element("Bucket", list.bucket);
    document.key("KeyMarker", list.key_marker, encoded);
    document.element("UploadIdMarker", list.upload_id_marker);
    if let Some(next_key_marker) = list.next_key_marker {
        document.key("NextKeyMarker", next_key_marker, encoded);
    }
    if let Some(next_upload_id_marker) = list.next_upload_id_marker {
        document.element("NextUploadIdMarker", next_upload_id_marker);
    }
    document.key("Prefix", list.prefix, encoded);
    if encoded {
        document.element("EncodingType", "url");
    }
    document.value("MaxUploads", list.max_uploads);
    document.value("IsTruncated", list.is_truncated);
    for upload in list.uploads {
        document.open("Upload");
        document.key("Key", &upload.key, encoded);
        document.element("UploadId", &upload.upload_id);
        document.owner("Initiator");
        document.owner("Owner");
        document.element("StorageClass", "STANDARD");
        document.element("Initiated", &iso8601_ms(upload.initiated_ms));
        document.close("Upload");
    }
    document.close("ListMultipartUploadsResult");
    document.finish()
}

/// `DeleteResult`: the deleted keys, then the keys that failed.
pub fn delete_result(deleted: &[Vec<u8>], errors: &[DeleteError]) -> Vec<u8> {
    let mut document = Document::new();
    document.open_root("DeleteResult");
    for key in deleted {
        document.open("Deleted");
        document.key("Key", key, false);
        document.close("Deleted");
    }
    for failure in errors {
        document.open("Error");
        document.key("Key", &failure.key, false);
        document.element("Code", &failure.code);
        document.element("Message", &failure.message);
        document.close("Error");
    }
    document.close("DeleteResult");
    document.finish()
}

// ---------------------------------------------------------------------------------------------------
// Times
// ---------------------------------------------------------------------------------------------------

/// `2026-11-24T19:21:19.123Z`, the timestamps of XML bodies.
pub fn iso8601_ms(unix_ms: u64) -> String {
    let seconds = unix_ms / 1000;
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let second_of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        unix_ms % 1000
    )
}

/// (year, month, day) of a count of days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468; // days since 0000-03-01
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// Unix milliseconds of an ISO 8601 UTC instant as S3 writes them
/// (`2026-11-24T19:21:19Z`, `2026-11-24T19:21:19.123Z`); None otherwise.
/// The date and time are read as SigV4's basic form is (`Timestamp`).
pub fn parse_iso8601(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if bytes.len() < 20 || separators.iter().any(|&(at, byte)| bytes[at] != byte) {
        return None;
    }
    let millis = match &bytes[19..] {
        b"Z" => 0,
        [b'.', fraction @ .., b'Z'] if (1..=9).contains(&fraction.len()) && fraction.iter().all(u8::is_ascii_digit) => {
            let kept = &fraction[..fraction.len().min(3)];
            let digits = kept.iter().fold(0, |total, digit| total * 10 + u64::from(digit - b'0'));
            digits * 10u64.pow(3 - kept.len() as u32)
        }
        _ => return None,
    };
    let basic: Vec<u8> = [
        &bytes[0..4],
        &bytes[5..7],
        &bytes[8..10],
        b"T",
        &bytes[11..13],
        &bytes[14..16],
        &bytes[17..19],
        b"Z",
    ]
    .concat();
    let seconds = u64::try_from(super::sigv4::Timestamp::parse_basic(&basic)?.unix()).ok()?;
    Some(seconds * 1000 + millis)
}

/// `PostResponse`, POST Object's answer with `success_action_status` 201.
pub fn post_response(location: &str, bucket: &str, key: &str, etag: &str) -> Vec<u8> {
    let mut document = Document::new();
    document.open("PostResponse");
    document.element("Location", location);
    document.element("Bucket", bucket);
    document.element("Key", key);
    document.etag(etag);
    document.close("PostResponse");
    document.finish()
}

/// `Tue, 24 Nov 2026 19:21:19 GMT`, the dates of HTTP headers (milliseconds dropped; instants past
/// the year 9999 are rendered as its last second).
pub fn http_date(unix_ms: u64) -> String {
    let seconds = (unix_ms / 1000).min(HTTP_DATE_MAX_SECONDS);
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(seconds))
}

/// Unix milliseconds of an HTTP date in any of the three formats HTTP allows; `None` when it is not one
/// or is before 1970.
pub fn parse_http_date(text: &str) -> Option<u64> {
    let time: SystemTime = httpdate::parse_http_date(text.trim()).ok()?;
    let since_epoch = time.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since_epoch.as_millis()).ok()
}

// ---------------------------------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------------------------------
//
// A request body is up to `XML_BODY_BYTES_MAX` (2 MiB) of client bytes, and parsing it must cost memory in
// proportion to what the parse keeps (the keys, the parts), never to the document's shape: a body of
// 700,000 nested `<a>` once cost 47 MB of heap. So the walker streams quick-xml's events over the
// borrowed body, builds no tree, and holds only the names of the open elements and the text of the
// innermost one, each under a limit past which the body is refused as MalformedXML.

/// Deepest nesting of elements in a request body. S3's request documents are 3 deep
/// (`Delete/Object/Key`); the slack lets a client wrap things in elements mkv ignores.
pub const XML_DEPTH_MAX: usize = 16;
/// Most elements in a request body: enough for a `CompleteMultipartUpload` of 10,000 parts listing
/// every checksum of each.
pub const XML_ELEMENTS_MAX: usize = 100_000;
/// Longest element name, namespace prefix included (S3's longest is 25 bytes).
pub const XML_NAME_BYTES_MAX: usize = 256;
/// Longest text of one element the walker keeps: an S3 key is at most 1,024 bytes of UTF-8.
pub const XML_TEXT_BYTES_MAX: usize = 4096;
/// Longest reason of a `Malformed` error: reasons quote client text, which is not echoed whole.
const REASON_BYTES_MAX: usize = 256;
/// Elements of one `Part`: itself, `PartNumber`, `ETag` and one per checksum algorithm.
const PART_ELEMENTS_MAX: usize = 3 + Algorithm::ALL.len();
/// Elements of one `Object` of a `Delete`: itself, `Key`, `VersionId`, `ETag`, `LastModifiedTime`, `Size`.
const OBJECT_ELEMENTS_MAX: usize = 6;

// The root and every part with all its elements.
const _: () = assert!(PART_NUMBER_MAX as usize * PART_ELEMENTS_MAX < XML_ELEMENTS_MAX);
const _: () = assert!(DELETE_KEYS_MAX * OBJECT_ELEMENTS_MAX + 2 <= XML_ELEMENTS_MAX);
const _: () = assert!(XML_DEPTH_MAX >= 3 && XML_TEXT_BYTES_MAX >= 1024);

/// An element just closed, as seen by a visitor of [`walk`].
pub(super) struct Closed<'a> {
    /// 1 for the root.
    pub(super) depth: usize,
    /// Local name of the parent element; empty for the root.
    pub(super) parent: &'a str,
    /// Local name of the element (namespace prefix dropped).
    pub(super) name: &'a str,
    /// The element's own unescaped text when it has no child element (empty when it has one); `None`
    /// when that text is longer than [`XML_TEXT_BYTES_MAX`] and so was not kept.
    text: Option<&'a str>,
}

impl<'a> Closed<'a> {
    /// The element's text, for a visitor that keeps it: malformed when it was too long to keep.
    pub(super) fn text(&self) -> Result<&'a str, XmlError> {
        self.text.ok_or_else(|| {
            malformed(format!(
                "the text of {} is longer than {XML_TEXT_BYTES_MAX} bytes",
                self.name
            ))
        })
    }
}

/// A `Malformed` error; its reason is cut to [`REASON_BYTES_MAX`] bytes, on a character boundary.
pub(super) fn malformed(reason: impl fmt::Display) -> XmlError {
    let mut bounded = BoundedText(String::new());
    // A cut reason reports fmt::Error, which only means the rest was dropped.
    let _ = fmt::write(&mut bounded, format_args!("{reason}"));
    XmlError::Malformed(bounded.0)
}

/// Text that stops growing at [`REASON_BYTES_MAX`] bytes.
struct BoundedText(String);

impl fmt::Write for BoundedText {
    fn write_str(&mut self, piece: &str) -> fmt::Result {
        let room = REASON_BYTES_MAX - self.0.len();
        if piece.len() <= room {
            self.0.push_str(piece);
            return Ok(());
        }
        let mut end = room;
        while !piece.is_char_boundary(end) {
            end -= 1;
        }
        self.0.push_str(&piece[..end]);
        Err(fmt::Error)
    }
}

/// The local part of a qualified name: `s3:Key` is `Key`.
fn local_name(name: &str) -> &str {
    name.split_once(':').map_or(name, |(_, local)| local)
}

/// The state of [`walk`] between two events: every allocation it makes is bounded by the limits.
struct Walker<'r> {
    root: &'r str,
    root_seen: bool,
    elements: usize,
    /// Qualified names of the open elements, end to end (at most `XML_DEPTH_MAX * XML_NAME_BYTES_MAX`).
    names: String,
    /// Where each open element's name starts in `names`.
    starts: Vec<usize>,
    /// The innermost element's text so far, while it has no child element.
    text: String,
    /// Whether the innermost element has had no child element yet.
    leaf: bool,
    /// Whether the innermost element's text passed `XML_TEXT_BYTES_MAX` (and is no longer kept).
    overflowed: bool,
}

impl<'r> Walker<'r> {
    fn new(root: &'r str) -> Self {
        Walker {
            root,
            root_seen: false,
            elements: 0,
            names: String::new(),
            starts: Vec::new(),
            text: String::new(),
            leaf: false,
            overflowed: false,
        }
    }

    fn open(&mut self, name: &str) -> Result<(), XmlError> {
        if name.len() > XML_NAME_BYTES_MAX {
            return Err(malformed(format!(
                "an element name is longer than {XML_NAME_BYTES_MAX} bytes"
            )));
        }
        if self.starts.len() == XML_DEPTH_MAX {
            return Err(malformed(format!("elements nested deeper than {XML_DEPTH_MAX}")));
        }
        self.elements += 1;
        if self.elements > XML_ELEMENTS_MAX {
            return Err(malformed(format!("more than {XML_ELEMENTS_MAX} elements")));
        }
        if self.starts.is_empty() {
            if self.root_seen {
                return Err(malformed("more than one root element"));
            }
            if local_name(name) != self.root {
                return Err(malformed(format!(
                    "expected root element {}, found {}",
                    self.root,
                    local_name(name)
                )));
            }
            self.root_seen = true;
        }
        self.starts.push(self.names.len());
        self.names.push_str(name);
        self.text.clear();
        self.leaf = true;
        self.overflowed = false;
        Ok(())
    }

    /// Whether text met now belongs to the innermost element's own text.
    fn keeps_text(&self) -> bool {
        self.leaf && !self.overflowed
    }

    /// Adds a piece of the innermost element's text, `raw_bytes` long before unescaping (which never
    /// lengthens it): `piece` is only called when the text stays within `XML_TEXT_BYTES_MAX`.
    fn push_text<'t>(&mut self, raw_bytes: usize, piece: impl FnOnce() -> Cow<'t, str>) {
        if !self.keeps_text() {
            return;
        }
        if self.text.len() + raw_bytes > XML_TEXT_BYTES_MAX {
            self.overflowed = true;
            self.text.clear();
            return;
        }
        self.text.push_str(&piece());
    }

    /// Visits the innermost element and closes it; `end` is the name of its closing tag, `None` for an
    /// empty element.
    fn close(
        &mut self,
        end: Option<&str>,
        visit: &mut impl FnMut(Closed<'_>) -> Result<(), XmlError>,
    ) -> Result<(), XmlError> {
        let Some(&start) = self.starts.last() else {
            return Err(malformed("closing tag without an opening one"));
        };
        let name = &self.names[start..];
        if let Some(end) = end.filter(|end| *end != name) {
            // Formatted into the bounded reason as it goes: the closing name can be megabytes long.
            return Err(malformed(format_args!("element {name} is closed by {end}")));
        }
        let parent = match self.starts.len() {
            1 => "",
            depth => local_name(&self.names[self.starts[depth - 2]..start]),
        };
        let text = match (self.leaf, self.overflowed) {
            (true, false) => Some(self.text.as_str()),
            (true, true) => None,
            (false, _) => Some(""),
        };
        visit(Closed {
            depth: self.starts.len(),
            parent,
            name: local_name(name),
            text,
        })?;
        self.names.truncate(start);
        self.starts.pop();
        self.text.clear();
        self.leaf = false;
        self.overflowed = false;
        Ok(())
    }

    fn finish(&self) -> Result<(), XmlError> {
        match (self.root_seen, self.starts.last()) {
            (false, _) => Err(malformed("no root element")),
            (true, Some(&start)) => Err(malformed(format!("element {} is not closed", &self.names[start..]))),
            (true, None) => Ok(()),
        }
    }
}

/// Walks a document whose root must be named `root` (any namespace), calling `visit` on each element as
/// it closes. Refused as malformed past [`XML_DEPTH_MAX`], [`XML_ELEMENTS_MAX`] or
/// [`XML_NAME_BYTES_MAX`]; text past [`XML_TEXT_BYTES_MAX`] is not kept (see [`Closed::text`]).
///
/// Memory: the walker's buffers stay within the limits whatever the body; quick-xml borrows the body
/// and copies only the names of open elements, which [`check_next_name`] bounds before it reads them.
pub(super) fn walk(
    body: &[u8],
    root: &str,
    mut visit: impl FnMut(Closed<'_>) -> Result<(), XmlError>,
) -> Result<(), XmlError> {
    let mut reader = Reader::from_reader(body);
    // The walker matches closing tags against its own bounded stack: quick-xml's check would copy both
    // names into its error, however long the closing one is.
    reader.config_mut().check_end_names = false;
    reader.config_mut().allow_unmatched_ends = true;
    let mut walker = Walker::new(root);
    loop {
        let position = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        check_next_name(body.get(position..).unwrap_or_default())?;
        match reader.read_event().map_err(malformed)? {
            Event::Start(start) => walker.open(start.name().as_ref())?,
            Event::Empty(start) => {
                walker.open(start.name().as_ref())?;
                walker.close(None, &mut visit)?;
            }
            Event::End(end) => walker.close(Some(end.name().as_ref()), &mut visit)?,
            Event::Text(content) => walker.push_text(content.len(), || content.xml10_content()),
            Event::CData(content) => walker.push_text(content.len(), || content.into_inner()),
            Event::GeneralRef(reference) => {
                // Resolved even when not kept, so that an unknown entity is refused wherever it is.
                let resolved = resolve_reference(&reference)?;
                walker.push_text(reference.len() + 2, || resolved);
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
    walker.finish()
}

/// Refuses a start tag whose name is longer than [`XML_NAME_BYTES_MAX`] before quick-xml reads it, since
/// quick-xml keeps a copy of every open element's name. `rest` is the body from the next event on.
fn check_next_name(rest: &[u8]) -> Result<(), XmlError> {
    let Some(tag) = rest.strip_prefix(b"<") else {
        return Ok(()); // text
    };
    if matches!(tag.first(), None | Some(b'/' | b'!' | b'?')) {
        return Ok(()); // a closing tag (not copied), a comment, CDATA, a declaration, or the end
    }
    // A name ends at XML's whitespace, at `/` of an empty element or at `>`, as quick-xml reads it.
    let name_ended = tag
        .iter()
        .take(XML_NAME_BYTES_MAX + 1)
        .any(|byte| matches!(byte, b' ' | b'\t' | b'\r' | b'\n' | b'/' | b'>'));
    if name_ended || tag.len() <= XML_NAME_BYTES_MAX {
        return Ok(());
    }
    Err(malformed(format!(
        "an element name is longer than {XML_NAME_BYTES_MAX} bytes"
    )))
}

/// What an entity or character reference (`&amp;`, `&#x41;`) stands for.
fn resolve_reference(reference: &BytesRef<'_>) -> Result<Cow<'static, str>, XmlError> {
    if let Some(character) = reference.resolve_char_ref().map_err(malformed)? {
        return Ok(Cow::Owned(character.to_string()));
    }
    let name: &str = reference;
    let resolved = resolve_predefined_entity(name).ok_or_else(|| malformed(format!("unknown entity &{name};")))?;
    Ok(Cow::Borrowed(resolved))
}

/// Appends what an entity or character reference stands for.
#[cfg(test)]
fn push_reference(text: &mut String, reference: &BytesRef<'_>) -> Result<(), XmlError> {
    text.push_str(&resolve_reference(reference)?);
    Ok(())
}

/// One part listed by a `CompleteMultipartUpload` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    pub number: u32,
    /// Without quotes.
    pub etag: String,
    /// The part's checksum as listed (`<ChecksumCRC32>`, ...): its algorithm and its text, trimmed but
    /// not decoded nor checked (see `checksum::parse_expected`).
    pub checksum: Option<(Algorithm, String)>,
}

/// The parts of a `CompleteMultipartUpload` body, in document order.
///
/// Elements may come in any order inside `Part`, with or without the S3 namespace; other elements are
/// ignored. Malformed when a part lacks its number or ETag, lists two checksums, when a number is not
/// in 1..=10000, when there are more than 10,000 parts or none at all.
pub fn parse_complete_parts(body: &[u8]) -> Result<Vec<CompletedPart>, XmlError> {
    let mut parts = Vec::new();
    let mut number: Option<u32> = None;
    let mut etag: Option<String> = None;
    let mut checksum: Option<(Algorithm, String)> = None;
    walk(body, "CompleteMultipartUpload", |closed| {
        match (closed.depth, closed.parent, closed.name) {
            (3, "Part", "PartNumber") => {
                set_once(&mut number, parse_part_number(closed.text()?)?, "Part", "PartNumber")?
            }
            (3, "Part", "ETag") => set_once(
                &mut etag,
                closed.text()?.trim().trim_matches('"').to_owned(),
                "Part",
                "ETag",
            )?,
            (3, "Part", name) => {
                if let Some(algorithm) = Algorithm::from_xml_element(name) {
                    if checksum.is_some() {
                        return Err(malformed("Part with more than one checksum"));
                    }
                    checksum = Some((algorithm, closed.text()?.trim().to_owned()));
                }
            }
            (2, _, "Part") => {
                let (Some(number), Some(etag)) = (number.take(), etag.take()) else {
                    return Err(malformed("Part without PartNumber or ETag"));
                };
                if parts.len() == PART_NUMBER_MAX as usize {
                    return Err(malformed(format!("more than {PART_NUMBER_MAX} parts")));
                }
                let checksum = checksum.take();
                parts.push(CompletedPart { number, etag, checksum });
            }
            _ => {}
        }
        Ok(())
    })?;
    if parts.is_empty() {
        return Err(malformed("no Part"));
    }
    Ok(parts)
}

/// The parts of a `CompleteMultipartUpload` body: (PartNumber, ETag without quotes), in document order;
/// [`parse_complete_parts`] without the checksums.
pub fn parse_complete(body: &[u8]) -> Result<Vec<(u32, String)>, XmlError> {
    let parts = parse_complete_parts(body)?;
    Ok(parts.into_iter().map(|part| (part.number, part.etag)).collect())
}

fn parse_part_number(text: &str) -> Result<u32, XmlError> {
    match text.trim().parse::<u32>() {
        Ok(number) if (1..=PART_NUMBER_MAX).contains(&number) => Ok(number),
        _ => Err(malformed(format!(
            "PartNumber {:?} is not in 1..={PART_NUMBER_MAX}",
            text.trim()
        ))),
    }
}

/// One object named by a `Delete` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteObject {
    /// Unescaped, as bytes.
    pub key: Vec<u8>,
    /// `VersionId`, trimmed, when the object names one.
    pub version_id: Option<String>,
    /// A condition the object names (`ETag`, `LastModifiedTime`, `Size`):
    /// its element's name.
    pub condition: Option<&'static str>,
}

/// A `Delete` body: (Quiet, objects in document order). `TooMany` past [`DELETE_KEYS_MAX`] objects;
/// malformed when an `Object` has no `Key` or there is no `Object` at all.
pub fn parse_delete_objects(body: &[u8]) -> Result<(bool, Vec<DeleteObject>), XmlError> {
    let mut quiet_given: Option<bool> = None;
    let mut objects = Vec::new();
    let mut key: Option<Vec<u8>> = None;
    let mut version_id: Option<String> = None;
    let mut condition: Option<&'static str> = None;
    walk(body, "Delete", |closed| {
        match (closed.depth, closed.parent, closed.name) {
            (2, _, "Quiet") => set_once(&mut quiet_given, parse_bool(closed.text()?)?, "Delete", "Quiet")?,
            (depth, _, "Object") if depth != 2 => return Err(malformed("an Object inside another element")),
            (3, "Object", "Key") => set_once(&mut key, closed.text()?.as_bytes().to_vec(), "Object", "Key")?,
            (3, "Object", "VersionId") => {
                set_once(&mut version_id, closed.text()?.trim().to_owned(), "Object", "VersionId")?
            }
            (3, "Object", "ETag") => condition = Some("ETag"),
            (3, "Object", "LastModifiedTime") => condition = Some("LastModifiedTime"),
            (3, "Object", "Size") => condition = Some("Size"),
            (2, _, "Object") => {
                let key = key.take().ok_or_else(|| malformed("Object without Key"))?;
                if objects.len() == DELETE_KEYS_MAX {
                    return Err(XmlError::TooMany);
                }
                let version_id = version_id.take();
                let condition = condition.take();
                objects.push(DeleteObject {
                    key,
                    version_id,
                    condition,
                });
            }
            _ => {}
        }
        Ok(())
    })?;
    if objects.is_empty() {
        return Err(malformed("no Object"));
    }
    Ok((quiet_given.unwrap_or(false), objects))
}

/// A `Delete` body: (Quiet, keys), [`parse_delete_objects`] without the version ids.
pub fn parse_delete(body: &[u8]) -> Result<(bool, Vec<Vec<u8>>), XmlError> {
    let (quiet, objects) = parse_delete_objects(body)?;
    Ok((quiet, objects.into_iter().map(|object| object.key).collect()))
}

/// A `CreateBucketConfiguration` body: its `LocationConstraint`, trimmed, when it has one. An empty (or
/// all-whitespace) body is no configuration.
pub fn parse_create_bucket(body: &[u8]) -> Result<Option<String>, XmlError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut location = None;
    walk(body, "CreateBucketConfiguration", |closed| {
        if let (2, "LocationConstraint") = (closed.depth, closed.name) {
            set_once(
                &mut location,
                closed.text()?.trim().to_owned(),
                "CreateBucketConfiguration",
                "LocationConstraint",
            )?;
        }
        Ok(())
    })?;
    Ok(location)
}

/// Fill `slot` with an element's value: malformed if `parent` gave the
/// element already (which of two `VersionId`s, or two `Key`s, a client
/// meant is not for the server to guess; the last one winning once deleted
/// a live object for a request that named an old version too).
fn set_once<T>(slot: &mut Option<T>, value: T, parent: &str, element: &str) -> Result<(), XmlError> {
    if slot.is_some() {
        return Err(malformed(format!("{parent} with more than one {element}")));
    }
    *slot = Some(value);
    Ok(())
}

fn parse_bool(text: &str) -> Result<bool, XmlError> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if text.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(malformed(format!("{text:?} is not a boolean")))
    }
}

/// `ListAllMyBucketsResult` of one page of buckets: `continuation_token`
/// when another page follows, `prefix` when the request named one.
pub fn list_buckets_page(buckets: &[BucketEntry], continuation_token: Option<&str>, prefix: Option<&str>) -> Vec<u8> {
    let mut document = Document::new();
    document.open_root("ListAllMyBucketsResult");
    document.owner("Owner");
    document.open("Buckets");
    for bucket in buckets {
        document.open("Bucket");
        document.element("Name", &bucket.name);
        document.element("CreationDate", &iso8601_ms(bucket.created_ms));
        document.close("Bucket");
    }
    document.close("Buckets");
    if let Some(token) = continuation_token {
        document.element("ContinuationToken", token);
    }
    if let Some(prefix) = prefix {
        document.element("Prefix", prefix);
    }
    document.close("ListAllMyBucketsResult");
    document.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

    fn text(document: Vec<u8>) -> String {
        String::from_utf8(document).expect("documents are UTF-8")
    }

    /// The expected document: the declaration, then `body` with the namespace put on the root.
    fn namespaced(root: &str, body: &str) -> String {
        format!("{DECLARATION}<{root} xmlns=\"{NAMESPACE}\">{body}</{root}>")
    }

    fn object(key: &[u8], size: u64) -> ObjectEntry {
        ObjectEntry {
            key: key.to_vec(),
            last_modified_ms: 1_700_000_000_123,
            etag: "abc".to_owned(),
            size,
        }
    }

    fn contents_xml(key: &str, size: u64) -> String {
        format!(
            "<Contents><Key>{key}</Key><LastModified>2023-11-14T22:13:20.123Z</LastModified>\
             <ETag>&quot;abc&quot;</ETag><Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
        )
    }

    fn list_v2_of<'a>(contents: &'a [ObjectEntry], common_prefixes: &'a [Vec<u8>]) -> ListV2<'a> {
        ListV2 {
            bucket: "photos",
            prefix: b"",
            delimiter: None,
            max_keys: 1000,
            continuation_token: None,
            next_continuation_token: None,
            start_after: None,
            is_truncated: false,
            encoding_url: false,
            fetch_owner: false,
            contents,
            common_prefixes,
        }
    }

    #[test]
    fn list_v2_renders_every_field() {
        let contents = [object(b"a/one", 5)];
        let prefixes = [b"a/b/".to_vec()];
        let list = ListV2 {
            prefix: b"a/",
            delimiter: Some(b"/"),
            max_keys: 2,
            continuation_token: Some("token-in"),
            next_continuation_token: Some("token-out"),
            start_after: Some(b"a/0"),
            is_truncated: true,
            ..list_v2_of(&contents, &prefixes)
        };
        let expected = namespaced(
            "ListBucketResult",
            &format!(
                "<Name>photos</Name><Prefix>a/</Prefix><StartAfter>a/0</StartAfter>\
                 <ContinuationToken>token-in</ContinuationToken><NextContinuationToken>token-out</NextContinuationToken>\
                 <KeyCount>2</KeyCount><MaxKeys>2</MaxKeys><Delimiter>/</Delimiter><IsTruncated>true</IsTruncated>\
                 {}<CommonPrefixes><Prefix>a/b/</Prefix></CommonPrefixes>",
                contents_xml("a/one", 5)
            ),
        );
        assert_eq!(text(list_v2(&list)), expected);
    }

    #[test]
    fn list_v2_minimal_and_key_count_counts_prefixes() {
        let contents = [object(b"x", 1), object(b"y", 2)];
        let prefixes = [b"p/".to_vec(), b"q/".to_vec(), b"r/".to_vec()];
        let rendered = text(list_v2(&list_v2_of(&contents, &prefixes)));
        assert!(rendered.contains("<KeyCount>5</KeyCount>"), "{rendered}");
        let empty = text(list_v2(&list_v2_of(&[], &[])));
        let expected = namespaced(
            "ListBucketResult",
            "<Name>photos</Name><Prefix></Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys>\
             <IsTruncated>false</IsTruncated>",
        );
        assert_eq!(empty, expected);
    }

    #[test]
    fn keys_are_escaped() {
        let contents = [object(br#"a&b<c>d"e'f"#, 1)];
        let rendered = text(list_v2(&list_v2_of(&contents, &[])));
        assert!(
            rendered.contains("<Key>a&amp;b&lt;c&gt;d&quot;e&apos;f</Key>"),
            "{rendered}"
        );
        let mut reader = Reader::from_reader(rendered.as_bytes());
        let mut keys = Vec::new();
        let mut in_key = false;
        let mut key = String::new();
        loop {
            match reader.read_event().expect("well-formed") {
                Event::Start(start) if start.local_name().as_ref() == "Key" => in_key = true,
                Event::End(end) if end.local_name().as_ref() == "Key" => {
                    in_key = false;
                    keys.push(std::mem::take(&mut key));
                }
                Event::Text(content) if in_key => key.push_str(&content.xml10_content()),
                Event::GeneralRef(reference) if in_key => push_reference(&mut key, &reference).expect("known entity"),
                Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(keys, [r#"a&b<c>d"e'f"#]);
    }

    #[test]
    fn invalid_utf8_keys_are_rendered_lossily() {
        let contents = [object(b"bad\xffkey", 1)];
        let rendered = text(list_v2(&list_v2_of(&contents, &[])));
        assert!(rendered.contains("<Key>bad\u{fffd}key</Key>"), "{rendered}");
    }

    #[test]
    fn url_encoding_follows_s3() {
        assert_eq!(url_encode("a b+c%d/é~_-.Z9".as_bytes()), "a%20b%2Bc%25d/%C3%A9~_-.Z9");
        assert_eq!(url_encode(b"\xff&="), "%FF%26%3D");
        let contents = [object("dir/my file+1%.txt".as_bytes(), 3)];
        let prefixes = ["dir/sub dir/".as_bytes().to_vec()];
        let list = ListV2 {
            prefix: "dir/".as_bytes(),
            delimiter: Some(b"/"),
            start_after: Some("dir/ä".as_bytes()),
            encoding_url: true,
            ..list_v2_of(&contents, &prefixes)
        };
        let rendered = text(list_v2(&list));
        for fragment in [
            "<Key>dir/my%20file%2B1%25.txt</Key>",
            "<StartAfter>dir/%C3%A4</StartAfter>",
            "<Prefix>dir/</Prefix>",
            "<Delimiter>/</Delimiter><EncodingType>url</EncodingType>",
            "<CommonPrefixes><Prefix>dir/sub%20dir/</Prefix></CommonPrefixes>",
        ] {
            assert!(rendered.contains(fragment), "{fragment} missing from {rendered}");
        }
    }

    #[test]
    fn list_v1_renders_markers() {
        let contents = [object(b"k 1", 7)];
        let list = ListV1 {
            bucket: "b",
            prefix: b"",
            marker: b"k 0",
            next_marker: Some(b"k 1"),
            delimiter: Some(b" "),
            max_keys: 1,
            is_truncated: true,
            encoding_url: true,
            contents: &contents,
            common_prefixes: &[],
        };
        let expected = namespaced(
            "ListBucketResult",
            &format!(
                "<Name>b</Name><Prefix></Prefix><Marker>k%200</Marker><NextMarker>k%201</NextMarker>\
                 <MaxKeys>1</MaxKeys><Delimiter>%20</Delimiter><EncodingType>url</EncodingType>\
                 <IsTruncated>true</IsTruncated>{}",
                contents_xml("k%201", 7).replace(
                    "</Contents>",
                    "<Owner><ID>mkv</ID><DisplayName>mkv</DisplayName></Owner></Contents>"
                )
            ),
        );
        assert_eq!(text(list_v1(&list)), expected);
    }

    #[test]
    fn list_versions_marks_every_object_latest() {
        let contents = [object(b"k", 4)];
        let prefixes = [b"d/".to_vec()];
        let expected = namespaced(
            "ListVersionsResult",
            "<Name>b</Name><Prefix></Prefix><KeyMarker></KeyMarker><VersionIdMarker></VersionIdMarker>\
             <MaxKeys>10</MaxKeys><Delimiter>/</Delimiter><IsTruncated>false</IsTruncated>\
             <Version><Key>k</Key><VersionId>null</VersionId><IsLatest>true</IsLatest>\
             <LastModified>2023-11-14T22:13:20.123Z</LastModified><ETag>&quot;abc&quot;</ETag><Size>4</Size>\
             <Owner><ID>mkv</ID><DisplayName>mkv</DisplayName></Owner><StorageClass>STANDARD</StorageClass></Version>\
             <CommonPrefixes><Prefix>d/</Prefix></CommonPrefixes>",
        );
        let list = ListVersions {
            bucket: "b",
            prefix: b"",
            key_marker: b"",
            next_key_marker: None,
            delimiter: Some(b"/"),
            max_keys: 10,
            is_truncated: false,
            encoding_url: false,
            contents: &contents,
            common_prefixes: &prefixes,
        };
        assert_eq!(text(list_versions(&list)), expected);
        let truncated = ListVersions {
            next_key_marker: Some(b"k"),
            is_truncated: true,
            ..list
        };
        let rendered = text(list_versions(&truncated));
        assert!(rendered.contains("<NextKeyMarker>k</NextKeyMarker><NextVersionIdMarker>null</NextVersionIdMarker>"));
        assert!(rendered.contains("<IsTruncated>true</IsTruncated>"));
    }

    #[test]
    fn list_buckets_renders_owner_and_buckets() {
        let buckets = [BucketEntry {
            name: "a".to_owned(),
            created_ms: 0,
        }];
        let expected = namespaced(
            "ListAllMyBucketsResult",
            "<Owner><ID>mkv</ID><DisplayName>mkv</DisplayName></Owner>\
             <Buckets><Bucket><Name>a</Name><CreationDate>1970-01-01T00:00:00.000Z</CreationDate></Bucket></Buckets>",
        );
        assert_eq!(text(list_buckets_page(&buckets, None, None)), expected);
    }

    #[test]
    fn empty_configurations() {
        assert_eq!(
            text(location()),
            format!("{DECLARATION}<LocationConstraint xmlns=\"{NAMESPACE}\"/>")
        );
        assert_eq!(
            text(versioning()),
            format!("{DECLARATION}<VersioningConfiguration xmlns=\"{NAMESPACE}\"/>")
        );
    }

    #[test]
    fn error_has_no_namespace() {
        let expected = format!(
            "{DECLARATION}<Error><Code>NoSuchKey</Code><Message>The key &lt;k&gt; does not exist</Message>\
             <Resource>/b/k&amp;1</Resource><RequestId>r1</RequestId></Error>"
        );
        assert_eq!(
            text(error("NoSuchKey", "The key <k> does not exist", "/b/k&1", "r1", &[])),
            expected
        );
    }

    #[test]
    fn multipart_results() {
        let initiate = namespaced(
            "InitiateMultipartUploadResult",
            "<Bucket>b</Bucket><Key>a&amp;b</Key><UploadId>u1</UploadId>",
        );
        assert_eq!(text(initiate_multipart("b", b"a&b", "u1")), initiate);
        let complete = namespaced(
            "CompleteMultipartUploadResult",
            "<Location>http://host/b/k</Location><Bucket>b</Bucket><Key>k</Key><ETag>&quot;e-2&quot;</ETag>",
        );
        assert_eq!(text(complete_multipart("http://host/b/k", "b", b"k", "e-2")), complete);
        let checksum = ObjectChecksum {
            algorithm: Algorithm::Crc32,
            value: "1Fu2mQ==-2",
            checksum_type: ChecksumType::Composite,
        };
        let checksummed = namespaced(
            "CompleteMultipartUploadResult",
            "<Location>l</Location><Bucket>b</Bucket><Key>k</Key><ETag>&quot;e-2&quot;</ETag>\
             <ChecksumCRC32>1Fu2mQ==-2</ChecksumCRC32><ChecksumType>COMPOSITE</ChecksumType>",
        );
        assert_eq!(
            text(complete_multipart_checksummed("l", "b", b"k", "e-2", Some(checksum))),
            checksummed
        );
    }

    #[test]
    fn copy_results() {
        let body = "<ETag>&quot;e&quot;</ETag><LastModified>2023-11-14T22:13:20.123Z</LastModified>";
        assert_eq!(
            text(copy_object("e", 1_700_000_000_123)),
            namespaced("CopyObjectResult", body)
        );
        assert_eq!(
            text(copy_part("e", 1_700_000_000_123, None)),
            namespaced("CopyPartResult", body)
        );
    }

    #[test]
    fn list_parts_renders_parts() {
        let parts = [PartEntry {
            number: 3,
            etag: "p3".to_owned(),
            size: 10,
            last_modified_ms: 0,
        }];
        let list = ListParts {
            bucket: "b",
            key: b"k",
            upload_id: "u",
            part_number_marker: 2,
            next_part_number_marker: 3,
            max_parts: 1,
            is_truncated: true,
            parts: &parts,
        };
        let owner = "<ID>mkv</ID><DisplayName>mkv</DisplayName>";
        let expected = namespaced(
            "ListPartsResult",
            &format!(
                "<Bucket>b</Bucket><Key>k</Key><UploadId>u</UploadId><Initiator>{owner}</Initiator>\
                 <Owner>{owner}</Owner><StorageClass>STANDARD</StorageClass><PartNumberMarker>2</PartNumberMarker>\
                 <NextPartNumberMarker>3</NextPartNumberMarker><MaxParts>1</MaxParts><IsTruncated>true</IsTruncated>\
                 <Part><PartNumber>3</PartNumber><LastModified>1970-01-01T00:00:00.000Z</LastModified>\
                 <ETag>&quot;p3&quot;</ETag><Size>10</Size></Part>"
            ),
        );
        assert_eq!(text(list_parts(&list)), expected);
    }

    #[test]
    fn list_uploads_renders_uploads() {
        let uploads = [UploadEntry {
            key: b"k<1>".to_vec(),
            upload_id: "u1".to_owned(),
            initiated_ms: 0,
        }];
        let list = ListUploads {
            bucket: "b",
            prefix: b"k",
            key_marker: b"",
            upload_id_marker: "",
            next_key_marker: Some(b"k<1>"),
            next_upload_id_marker: Some("u1"),
            max_uploads: 1,
            is_truncated: true,
            uploads: &uploads,
            encoding_url: false,
        };
        let owner = "<ID>mkv</ID><DisplayName>mkv</DisplayName>";
        let expected = namespaced(
            "ListMultipartUploadsResult",
            &format!(
                "<Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>\
                 <NextKeyMarker>k&lt;1&gt;</NextKeyMarker><NextUploadIdMarker>u1</NextUploadIdMarker>\
                 <Prefix>k</Prefix><MaxUploads>1</MaxUploads><IsTruncated>true</IsTruncated>\
                 <Upload><Key>k&lt;1&gt;</Key><UploadId>u1</UploadId><Initiator>{owner}</Initiator>\
                 <Owner>{owner}</Owner><StorageClass>STANDARD</StorageClass>\
                 <Initiated>1970-01-01T00:00:00.000Z</Initiated></Upload>"
            ),
        );
        assert_eq!(text(list_uploads(&list)), expected);
        // Keys XML cannot carry list percent-encoded when asked.
        let control = [UploadEntry {
            key: b"a\x01b".to_vec(),
            upload_id: "u2".to_owned(),
            initiated_ms: 0,
        }];
        let encoded = text(list_uploads(&ListUploads {
            uploads: &control,
            encoding_url: true,
            ..list
        }));
        assert!(encoded.contains("<Key>a%01b</Key>") && encoded.contains("<EncodingType>url</EncodingType>"));
    }

    #[test]
    fn delete_result_renders_deleted_and_errors() {
        let errors = [DeleteError {
            key: b"x'y".to_vec(),
            code: "AccessDenied".to_owned(),
            message: "no".to_owned(),
        }];
        let expected = namespaced(
            "DeleteResult",
            "<Deleted><Key>a</Key></Deleted><Deleted><Key>b&amp;c</Key></Deleted>\
             <Error><Key>x&apos;y</Key><Code>AccessDenied</Code><Message>no</Message></Error>",
        );
        assert_eq!(
            text(delete_result(&[b"a".to_vec(), b"b&c".to_vec()], &errors)),
            expected
        );
        assert_eq!(text(delete_result(&[], &[])), namespaced("DeleteResult", ""));
    }

    #[test]
    fn iso8601_known_instants() {
        assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(iso8601_ms(1_709_164_800_000), "2024-02-29T00:00:00.000Z");
        assert_eq!(iso8601_ms(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(iso8601_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601_ms(1_795_548_079_123), "2026-11-24T19:21:19.123Z");
        assert_eq!(iso8601_ms(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn iso8601_agrees_with_httpdate_day_by_day() {
        for day in (0..40_000u64).step_by(3) {
            let unix_ms = day * 86_400_000 + 45_296_789; // 12:34:56.789
            let iso = iso8601_ms(unix_ms);
            let http = http_date(unix_ms);
            assert_eq!(&iso[8..10], &http[5..7], "day of month: {iso} vs {http}");
            assert_eq!(&iso[..4], &http[12..16], "year: {iso} vs {http}");
            assert_eq!(&iso[10..], "T12:34:56.789Z");
            assert_eq!(parse_http_date(&http), Some(unix_ms - 789), "{http}");
        }
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_700_000_000_123), "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(http_date(1_709_164_800_000), "Thu, 29 Feb 2024 00:00:00 GMT");
        assert_eq!(http_date(1_795_548_079_123), "Tue, 24 Nov 2026 19:21:19 GMT");
        assert_eq!(http_date(u64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn iso8601_instants_parse_back() {
        for unix_ms in [0, 951_782_400_000, 1_764_627_200_123, 4_102_444_800_000] {
            assert_eq!(parse_iso8601(&iso8601_ms(unix_ms)), Some(unix_ms));
        }
        assert_eq!(parse_iso8601("2026-12-02T00:00:00Z"), Some(1_796_169_600_000));
        for bad in [
            "2026-12-02 00:00:00",
            "2026-13-02T00:00:00Z",
            "2026-12-02T24:00:00Z",
            "2026-12-02T00:00:00+01:00",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }

    #[test]
    fn parse_http_dates() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Tue, 14 Nov 2023 22:13:20 GMT"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT"),
            Some(1_709_164_800_000)
        );
        assert_eq!(
            parse_http_date("Thursday, 29-Feb-24 00:00:00 GMT"),
            Some(1_709_164_800_000)
        );
        assert_eq!(parse_http_date("Thu Feb 29 00:00:00 2024"), Some(1_709_164_800_000));
        assert_eq!(parse_http_date("Fri, 30 Feb 2024 00:00:00 GMT"), None);
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date(""), None);
    }

    #[test]
    fn parse_complete_with_namespace_and_checksums() {
        let body = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
            <CompleteMultipartUpload xmlns="{NAMESPACE}">
              <Part><PartNumber>1</PartNumber><ETag>"aaa"</ETag></Part>
              <Part><ChecksumCRC32>AAAAAA==</ChecksumCRC32><ETag>&quot;bbb&quot;</ETag><PartNumber> 2 </PartNumber></Part>
              <Part><ETag>ccc</ETag><ChecksumSHA256>x</ChecksumSHA256><PartNumber>10000</PartNumber></Part>
            </CompleteMultipartUpload>"#
        );
        let expected = vec![(1, "aaa".to_owned()), (2, "bbb".to_owned()), (10_000, "ccc".to_owned())];
        assert_eq!(parse_complete(body.as_bytes()), Ok(expected));
    }

    #[test]
    fn parse_complete_without_namespace_or_with_a_prefix() {
        let plain = b"<CompleteMultipartUpload><Part><PartNumber>5</PartNumber><ETag>&#34;e&#x22;</ETag></Part>\
                      </CompleteMultipartUpload>";
        assert_eq!(parse_complete(plain), Ok(vec![(5, "e".to_owned())]));
        let prefixed = format!(
            "<s3:CompleteMultipartUpload xmlns:s3=\"{NAMESPACE}\"><s3:Part><s3:ETag>e</s3:ETag>\
             <s3:PartNumber>7</s3:PartNumber></s3:Part></s3:CompleteMultipartUpload>"
        );
        assert_eq!(parse_complete(prefixed.as_bytes()), Ok(vec![(7, "e".to_owned())]));
    }

    fn is_malformed<T: fmt::Debug>(result: Result<T, XmlError>) -> bool {
        matches!(result, Err(XmlError::Malformed(_)))
    }

    #[test]
    fn parse_complete_refuses_bad_parts() {
        let part = |inner: &str| format!("<CompleteMultipartUpload><Part>{inner}</Part></CompleteMultipartUpload>");
        assert!(is_malformed(parse_complete(
            part("<PartNumber>1</PartNumber>").as_bytes()
        )));
        assert!(is_malformed(parse_complete(part("<ETag>e</ETag>").as_bytes())));
        assert!(is_malformed(parse_complete(
            part("<PartNumber>0</PartNumber><ETag>e</ETag>").as_bytes()
        )));
        assert!(is_malformed(parse_complete(
            part("<PartNumber>10001</PartNumber><ETag>e</ETag>").as_bytes()
        )));
        assert!(is_malformed(parse_complete(
            part("<PartNumber>-1</PartNumber><ETag>e</ETag>").as_bytes()
        )));
        assert!(is_malformed(parse_complete(
            part("<PartNumber>one</PartNumber><ETag>e</ETag>").as_bytes()
        )));
        assert!(is_malformed(parse_complete(
            b"<CompleteMultipartUpload></CompleteMultipartUpload>"
        )));
        assert!(is_malformed(parse_complete(
            b"<Other><Part><PartNumber>1</PartNumber><ETag>e</ETag></Part></Other>"
        )));
        assert!(is_malformed(parse_complete(
            b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>"
        )));
        assert!(is_malformed(parse_complete(
            b"<CompleteMultipartUpload><Part></Oops></CompleteMultipartUpload>"
        )));
        assert!(is_malformed(parse_complete(b"not xml at all")));
        assert!(is_malformed(parse_complete(b"")));
        assert!(is_malformed(parse_complete(
            b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&bogus;</ETag></Part></CompleteMultipartUpload>"
        )));
    }

    fn delete_body(quiet: Option<&str>, keys: &[String]) -> String {
        let mut body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Delete xmlns=\"{NAMESPACE}\">");
        if let Some(quiet) = quiet {
            body.push_str(&format!("<Quiet>{quiet}</Quiet>"));
        }
        for key in keys {
            body.push_str(&format!("<Object><Key>{key}</Key><VersionId>v</VersionId></Object>"));
        }
        body.push_str("</Delete>");
        body
    }

    #[test]
    fn parse_delete_reads_quiet_and_keys() {
        let keys = vec!["a".to_owned(), "b".to_owned()];
        let expected_keys = vec![b"a".to_vec(), b"b".to_vec()];
        assert_eq!(
            parse_delete(delete_body(Some("true"), &keys).as_bytes()),
            Ok((true, expected_keys.clone()))
        );
        assert_eq!(
            parse_delete(delete_body(Some("false"), &keys).as_bytes()),
            Ok((false, expected_keys.clone()))
        );
        assert_eq!(
            parse_delete(delete_body(None, &keys).as_bytes()),
            Ok((false, expected_keys))
        );
        assert!(is_malformed(parse_delete(delete_body(Some("maybe"), &keys).as_bytes())));
    }

    #[test]
    fn parse_delete_unescapes_keys() {
        let keys = vec![
            "a&amp;b&lt;c&gt;d&quot;e&apos;f".to_owned(),
            "caf&#xE9; &#233;t&#233;".to_owned(),
            " spaced ".to_owned(),
            "<![CDATA[raw <cdata> & more]]>".to_owned(),
            "dir/ünïcode".to_owned(),
        ];
        let (quiet, parsed) = parse_delete(delete_body(None, &keys).as_bytes()).expect("valid body");
        assert!(!quiet);
        let expected: Vec<Vec<u8>> = [
            r#"a&b<c>d"e'f"#,
            "café été",
            " spaced ",
            "raw <cdata> & more",
            "dir/ünïcode",
        ]
        .iter()
        .map(|key| key.as_bytes().to_vec())
        .collect();
        assert_eq!(parsed, expected);
    }

    #[test]
    fn parse_delete_limits_keys() {
        let keys: Vec<String> = (0..DELETE_KEYS_MAX).map(|index| format!("key-{index}")).collect();
        let (_, parsed) = parse_delete(delete_body(Some("true"), &keys).as_bytes()).expect("1000 keys are fine");
        assert_eq!(parsed.len(), DELETE_KEYS_MAX);
        assert_eq!(parsed[999], b"key-999");
        let keys: Vec<String> = (0..=DELETE_KEYS_MAX).map(|index| format!("key-{index}")).collect();
        assert_eq!(
            parse_delete(delete_body(Some("true"), &keys).as_bytes()),
            Err(XmlError::TooMany)
        );
    }

    #[test]
    fn parse_delete_refuses_bad_bodies() {
        assert!(is_malformed(parse_delete(
            b"<Delete><Object><VersionId>v</VersionId></Object></Delete>"
        )));
        assert!(is_malformed(parse_delete(b"<Delete></Delete>")));
        assert!(is_malformed(parse_delete(b"<Delete><Object><Key>a</Key></Object>")));
        assert!(is_malformed(parse_delete(
            b"<Remove><Object><Key>a</Key></Object></Remove>"
        )));
        assert!(is_malformed(parse_delete(
            b"<Delete><Object><Key>a</Key></Object></Delete><Delete/>"
        )));
        assert!(is_malformed(parse_delete(
            b"<Delete><Object><Key>\xff</Key></Object></Delete>"
        )));
    }

    #[test]
    fn errors_display() {
        assert_eq!(XmlError::Malformed("x".to_owned()).to_string(), "malformed XML: x");
        assert_eq!(XmlError::TooMany.to_string(), "too many entries (at most 1000)");
    }

    fn reason<T: fmt::Debug>(result: Result<T, XmlError>) -> String {
        match result {
            Err(XmlError::Malformed(reason)) => reason,
            other => panic!("expected a malformed body, got {other:?}"),
        }
    }

    /// A `Delete` of key `k` whose `Object` is wrapped in `wrappers` nested unknown elements.
    fn wrapped_delete(wrappers: usize) -> String {
        format!(
            "<Delete><Object><Key>k</Key></Object>{}{}</Delete>",
            "<w>".repeat(wrappers),
            "</w>".repeat(wrappers)
        )
    }

    /// The largest body the S3 API reads (`XML_BODY_BYTES_MAX`) of `unit` repeated after `head`.
    fn two_mebibytes_of(head: &str, unit: &str) -> Vec<u8> {
        let mut body = head.as_bytes().to_vec();
        while body.len() + unit.len() <= 2 * 1024 * 1024 {
            body.extend_from_slice(unit.as_bytes());
        }
        body
    }

    #[test]
    fn deep_nesting_is_refused() {
        assert!(parse_delete(wrapped_delete(XML_DEPTH_MAX - 1).as_bytes()).is_ok());
        let deep = reason(parse_delete(wrapped_delete(XML_DEPTH_MAX).as_bytes()));
        assert!(deep.contains("nested deeper than 16"), "{deep}");
        let nested = two_mebibytes_of("<CompleteMultipartUpload>", "<a>");
        assert!(reason(parse_complete(&nested)).contains("nested deeper"));
        let nested = two_mebibytes_of("<Delete><Object>", "<Key>");
        assert!(reason(parse_delete(&nested)).contains("nested deeper"));
        let nested = two_mebibytes_of("<CreateBucketConfiguration>", "<LocationConstraint>");
        assert!(reason(parse_create_bucket(&nested)).contains("nested deeper"));
    }

    #[test]
    fn too_many_elements_are_refused() {
        let elements = |count: usize| format!("<Delete><Object><Key>k</Key></Object>{}</Delete>", "<a/>".repeat(count));
        assert!(parse_delete(elements(XML_ELEMENTS_MAX - 3).as_bytes()).is_ok());
        let many = reason(parse_delete(elements(XML_ELEMENTS_MAX - 2).as_bytes()));
        assert!(many.contains("more than 100000 elements"), "{many}");
        let flat = two_mebibytes_of("<CompleteMultipartUpload>", "<a></a>");
        assert!(reason(parse_complete(&flat)).contains("more than 100000 elements"));
    }

    #[test]
    fn long_names_are_refused() {
        let name = |bytes: usize| "n".repeat(bytes);
        let longest = format!(
            "<Delete><{0}/><{0}></{0}><Object><Key>k</Key></Object></Delete>",
            name(XML_NAME_BYTES_MAX)
        );
        assert!(parse_delete(longest.as_bytes()).is_ok());
        for tag in [
            format!("<Delete><{}>", name(XML_NAME_BYTES_MAX + 1)),
            format!("<Delete><{}/>", name(XML_NAME_BYTES_MAX + 1)),
            format!("<Delete><{} attribute='1'>", name(XML_NAME_BYTES_MAX + 1)),
            format!("<Delete><s3:{}>", name(XML_NAME_BYTES_MAX - 2)),
            format!("<Delete><{}", name(2 * 1024 * 1024)),
        ] {
            let long = reason(parse_delete(tag.as_bytes()));
            assert!(long.contains("longer than 256 bytes"), "{long}");
        }
        // A long closing tag is not copied, and the reason does not echo it whole.
        let closing = format!("<Delete></{}>", name(1024 * 1024));
        let mismatched = reason(parse_delete(closing.as_bytes()));
        assert!(
            mismatched.starts_with("element Delete is closed by nnn"),
            "{mismatched}"
        );
        assert_eq!(mismatched.len(), REASON_BYTES_MAX);
    }

    #[test]
    fn text_is_kept_up_to_its_limit() {
        let delete_of = |key: &str| format!("<Delete><Object><Key>{key}</Key></Object></Delete>");
        let longest = "k".repeat(XML_TEXT_BYTES_MAX);
        assert_eq!(
            parse_delete(delete_of(&longest).as_bytes()),
            Ok((false, vec![longest.as_bytes().to_vec()]))
        );
        let too_long = reason(parse_delete(delete_of(&format!("{longest}k")).as_bytes()));
        assert!(
            too_long.contains("the text of Key is longer than 4096 bytes"),
            "{too_long}"
        );
        let in_pieces = reason(parse_delete(delete_of(&format!("{longest}&amp;")).as_bytes()));
        assert!(in_pieces.contains("longer than 4096"), "{in_pieces}");
        let escaped = "&amp;".repeat(XML_TEXT_BYTES_MAX / 2);
        let (_, keys) = parse_delete(delete_of(&escaped).as_bytes()).expect("its unescaped text is short enough");
        assert_eq!(keys, [b"&".repeat(XML_TEXT_BYTES_MAX / 2)]);
        // Text that is not kept (an ignored element's, whitespace between elements) has no limit.
        let ignored = format!(
            "<Delete>{0}<Ignored>{0}</Ignored><Object>{0}<Key>k</Key>{0}</Object>{0}</Delete>",
            " ".repeat(1024 * 1024)
        );
        assert_eq!(parse_delete(ignored.as_bytes()), Ok((false, vec![b"k".to_vec()])));
        // Unknown entities are refused even in text that is not kept.
        assert!(is_malformed(parse_delete(
            b"<Delete><Ignored>&bogus;</Ignored><Object><Key>k</Key></Object></Delete>"
        )));
        // An element with children has no text of its own.
        assert_eq!(
            parse_delete(b"<Delete><Object><Key>a<b/>c</Key></Object></Delete>"),
            Ok((false, vec![Vec::new()]))
        );
    }

    #[test]
    fn complete_lists_checksums_and_at_most_10000_parts() {
        let body = b"<CompleteMultipartUpload>\
            <Part><PartNumber>1</PartNumber><ETag>\"a\"</ETag><ChecksumCRC64NVME> jSnVw/bqjr4= </ChecksumCRC64NVME></Part>\
            <Part><ChecksumSHA256>x</ChecksumSHA256><ETag>b</ETag><PartNumber>2</PartNumber></Part>\
            <Part><PartNumber>3</PartNumber><ETag>c</ETag><ChecksumType>COMPOSITE</ChecksumType></Part>\
            </CompleteMultipartUpload>";
        let expected = vec![
            CompletedPart {
                number: 1,
                etag: "a".to_owned(),
                checksum: Some((Algorithm::Crc64Nvme, "jSnVw/bqjr4=".to_owned())),
            },
            CompletedPart {
                number: 2,
                etag: "b".to_owned(),
                checksum: Some((Algorithm::Sha256, "x".to_owned())),
            },
            CompletedPart {
                number: 3,
                etag: "c".to_owned(),
                checksum: None,
            },
        ];
        assert_eq!(parse_complete_parts(body), Ok(expected));
        let two = b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>a</ETag>\
            <ChecksumCRC32>AAAAAA==</ChecksumCRC32><ChecksumCRC32C>AAAAAA==</ChecksumCRC32C></Part></CompleteMultipartUpload>";
        assert!(reason(parse_complete_parts(two)).contains("more than one checksum"));
        let parts = |count: u32| {
            let mut body = "<CompleteMultipartUpload>".to_owned();
            for index in 0..count {
                let number = index % PART_NUMBER_MAX + 1;
                let element = Algorithm::ALL[index as usize % Algorithm::ALL.len()].xml_element();
                body.push_str(&format!(
                    "<Part><PartNumber>{number}</PartNumber><ETag>e</ETag><{element}>c</{element}></Part>"
                ));
            }
            body + "</CompleteMultipartUpload>"
        };
        let listed = parse_complete_parts(parts(PART_NUMBER_MAX).as_bytes()).expect("10000 parts are fine");
        assert_eq!(listed.len(), 10_000);
        assert_eq!(listed[9_999].number, 10_000);
        let too_many = reason(parse_complete_parts(parts(PART_NUMBER_MAX + 1).as_bytes()));
        assert!(too_many.contains("more than 10000 parts"), "{too_many}");
    }

    #[test]
    fn delete_objects_keep_version_ids() {
        let body = b"<Delete><Quiet>true</Quiet><Object><Key>a</Key><VersionId> v1 </VersionId></Object>\
            <Object><Key>b</Key></Object><Object><VersionId>null</VersionId><Key>c</Key><ETag>e</ETag></Object></Delete>";
        let object = |key: &[u8], version_id: Option<&str>, condition| DeleteObject {
            key: key.to_vec(),
            version_id: version_id.map(str::to_owned),
            condition,
        };
        assert_eq!(
            parse_delete_objects(body),
            Ok((
                true,
                vec![
                    object(b"a", Some("v1"), None),
                    object(b"b", None, None),
                    object(b"c", Some("null"), Some("ETag"))
                ]
            ))
        );
    }

    #[test]
    fn create_bucket_configuration() {
        assert_eq!(parse_create_bucket(b""), Ok(None));
        assert_eq!(parse_create_bucket(b" \r\n"), Ok(None));
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <CreateBucketConfiguration xmlns=\"{NAMESPACE}\"><LocationConstraint> eu-west-1 </LocationConstraint>\
             </CreateBucketConfiguration>"
        );
        assert_eq!(parse_create_bucket(body.as_bytes()), Ok(Some("eu-west-1".to_owned())));
        assert_eq!(parse_create_bucket(b"<CreateBucketConfiguration/>"), Ok(None));
        assert_eq!(
            parse_create_bucket(b"<CreateBucketConfiguration><LocationConstraint/></CreateBucketConfiguration>"),
            Ok(Some(String::new()))
        );
        assert!(is_malformed(parse_create_bucket(b"<Other/>")));
        assert!(is_malformed(parse_create_bucket(b"<CreateBucketConfiguration>")));
        assert!(is_malformed(parse_create_bucket(b"us-east-1")));
    }

    #[test]
    fn malformed_reasons_are_cut_on_a_character_boundary() {
        let number = "é".repeat(1000);
        let body = format!("<CompleteMultipartUpload><Part><PartNumber>{number}</PartNumber><ETag>e</ETag></Part></CompleteMultipartUpload>");
        let cut = reason(parse_complete(body.as_bytes()));
        assert!(cut.starts_with("PartNumber \"éé"), "{cut}");
        assert!(
            cut.len() <= REASON_BYTES_MAX && cut.len() > REASON_BYTES_MAX - 2,
            "{}",
            cut.len()
        );
        assert_eq!(malformed("short").to_string(), "malformed XML: short");
    }

    /// A global allocator counting each thread's live bytes, so that a test can bound what one parse
    /// allocates while other tests run on other threads.
    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
            static PEAK_BYTES: Cell<isize> = const { Cell::new(0) };
        }

        fn record(delta: isize) {
            // `try_with`: an allocation can come while the thread's locals are being torn down.
            let _ = LIVE_BYTES.try_with(|live| {
                live.set(live.get() + delta);
                let _ = PEAK_BYTES.try_with(|peak| peak.set(peak.get().max(live.get())));
            });
        }

        fn signed(bytes: usize) -> isize {
            isize::try_from(bytes).unwrap_or(isize::MAX)
        }

        pub struct Counting;

        // SAFETY: every call is forwarded unchanged to the system allocator; counting touches only
        // thread-local cells, which need no allocation.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                record(signed(layout.size()));
                // SAFETY: the caller's contract is the system allocator's.
                unsafe { System.alloc(layout) }
            }

            unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                record(signed(layout.size()));
                // SAFETY: as above.
                unsafe { System.alloc_zeroed(layout) }
            }

            unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
                record(-signed(layout.size()));
                // SAFETY: as above.
                unsafe { System.dealloc(pointer, layout) }
            }

            unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                record(signed(new_size) - signed(layout.size()));
                // SAFETY: as above.
                unsafe { System.realloc(pointer, layout, new_size) }
            }
        }

        /// What `run` returns, and the most bytes it had allocated at once on this thread.
        pub fn peak_bytes<T>(run: impl FnOnce() -> T) -> (T, usize) {
            let before = LIVE_BYTES.with(Cell::get);
            PEAK_BYTES.with(|peak| peak.set(before));
            let result = run();
            let peak = PEAK_BYTES.with(Cell::get) - before;
            (result, usize::try_from(peak).unwrap_or(0))
        }
    }

    #[global_allocator]
    static ALLOCATOR: counting::Counting = counting::Counting;

    /// The most a refused body may cost the walker: its bounded stack and text, and an error.
    const WALKER_BYTES_MAX: usize = 2 * XML_DEPTH_MAX * (XML_NAME_BYTES_MAX + 8) + XML_TEXT_BYTES_MAX + 1024;

    #[test]
    fn parsing_memory_is_bounded_by_what_is_kept() {
        let hostile = [
            two_mebibytes_of("<CompleteMultipartUpload>", "<a>"),
            two_mebibytes_of("<Delete><Object>", "<Key>"),
            two_mebibytes_of("<Delete>", "<a/>"),
            two_mebibytes_of("<Delete><Object><Key>", "k"),
            two_mebibytes_of("<Delete><Object><Key>", "&#x10FFFF;"),
            two_mebibytes_of("<Delete><", "n"),
            two_mebibytes_of("<Delete></", "n"),
            [two_mebibytes_of("<Delete></", "n"), b">".to_vec()].concat(),
            two_mebibytes_of("<Delete><Object><Key>k</Key></Object><!--", "-"),
        ];
        for body in &hostile {
            let head = String::from_utf8_lossy(&body[..40]);
            let (result, peak) = counting::peak_bytes(|| parse_delete(body));
            assert!(result.is_err(), "{head}");
            assert!(peak <= WALKER_BYTES_MAX, "{head}...: {peak} bytes");
            let (result, peak) = counting::peak_bytes(|| parse_complete(body));
            assert!(result.is_err(), "{head}");
            assert!(peak <= WALKER_BYTES_MAX, "{head}...: {peak} bytes");
        }
        // What is kept costs in proportion: 1000 keys of 100 bytes.
        let keys: Vec<String> = (0..DELETE_KEYS_MAX).map(|index| format!("{index:0>100}")).collect();
        let body = delete_body(Some("true"), &keys);
        let (result, peak) = counting::peak_bytes(|| parse_delete(body.as_bytes()));
        assert_eq!(result.map(|(_, keys)| keys.len()), Ok(DELETE_KEYS_MAX));
        let kept_bytes = DELETE_KEYS_MAX * (100 + size_of::<DeleteObject>());
        assert!(peak <= 2 * kept_bytes + WALKER_BYTES_MAX, "{peak} bytes");
    }

    #[test]
    fn list_v1_leaves_the_prefix_unencoded_and_names_owners() {
        let contents = [object(b"a b", 1)];
        let list = ListV1 {
            bucket: "b",
            prefix: b"a ",
            marker: b"",
            next_marker: None,
            delimiter: None,
            max_keys: 1,
            is_truncated: false,
            encoding_url: true,
            contents: &contents,
            common_prefixes: &[],
        };
        let rendered = text(list_v1(&list));
        assert!(rendered.contains("<Prefix>a </Prefix>"), "{rendered}");
        assert!(rendered.contains("<Key>a%20b</Key>"), "{rendered}");
        assert!(rendered.contains("<Owner><ID>mkv</ID>"), "{rendered}");
    }

    #[test]
    fn list_v2_names_owners_when_asked() {
        let contents = [object(b"k", 1)];
        let plain = text(list_v2(&list_v2_of(&contents, &[])));
        assert!(!plain.contains("<Owner>"), "{plain}");
        let owned = text(list_v2(&ListV2 {
            fetch_owner: true,
            ..list_v2_of(&contents, &[])
        }));
        assert!(
            owned.contains("<StorageClass>STANDARD</StorageClass><Owner><ID>mkv</ID><DisplayName>mkv</DisplayName></Owner></Contents>"),
            "{owned}"
        );
    }

    #[test]
    fn list_buckets_page_names_the_next_page() {
        let buckets = [BucketEntry {
            name: "a".to_owned(),
            created_ms: 0,
        }];
        let rendered = text(list_buckets_page(&buckets, Some("tok"), Some("a")));
        assert!(
            rendered.ends_with(
                "</Buckets><ContinuationToken>tok</ContinuationToken><Prefix>a</Prefix></ListAllMyBucketsResult>"
            ),
            "{rendered}"
        );
        assert_eq!(
            text(list_buckets_page(&buckets, None, None)),
            text(list_buckets_page(&buckets, None, None))
        );
    }
}
