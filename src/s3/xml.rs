//! S3 XML bodies, without any IO.
//!
//! The rendering functions build the response documents the S3 API sends (listings, multipart results,
//! errors, ...) and return them as bytes; the parsing functions read the two request bodies mkv
//! receives: `CompleteMultipartUpload` and `Delete`. Every rendered document opens with the XML
//! declaration and, except `Error`, carries the S3 namespace on its root element.
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
struct Document {
    writer: Writer<Vec<u8>>,
}

impl Document {
    /// A document holding only the XML declaration.
    fn new() -> Self {
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
    fn open_root(&mut self, name: &str) {
        self.write(Event::Start(
            BytesStart::new(name).with_attributes([("xmlns", NAMESPACE)]),
        ));
    }

    fn open(&mut self, name: &str) {
        self.write(Event::Start(BytesStart::new(name)));
    }

    fn close(&mut self, name: &str) {
        self.write(Event::End(BytesEnd::new(name)));
    }

    /// `<name>text</name>`, text escaped.
    fn element(&mut self, name: &str, text: &str) {
        self.open(name);
        self.write(Event::Text(BytesText::new(text)));
        self.close(name);
    }

    /// An element holding a number or a boolean.
    fn value(&mut self, name: &str, value: impl fmt::Display) {
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

    fn finish(self) -> Vec<u8> {
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

/// `ListAllMyBucketsResult` of every bucket.
pub fn list_buckets(buckets: &[BucketEntry]) -> Vec<u8> {
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
    document.close("ListAllMyBucketsResult");
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
pub fn error(code: &str, message: &str, resource: &str, request_id: &str) -> Vec<u8> {
    let mut document = Document::new();
    document.open("Error");
    document.element("Code", code);
    document.element("Message", message);
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
    let mut document = Document::new();
    document.open_root("CompleteMultipartUploadResult");
    document.element("Location", location);
    document.element("Bucket", bucket);
    document.key("Key", key, false);
    document.etag(etag);
    document.close("CompleteMultipartUploadResult");
    document.finish()
}

/// A root holding an ETag and a LastModified: the results of the two copies.
fn copy_result(root: &str, etag: &str, last_modified_ms: u64) -> Vec<u8> {
    let mut document = Document::new();
    document.open_root(root);
    document.etag(etag);
    document.element("LastModified", &iso8601_ms(last_modified_ms));
    document.close(root);
    document.finish()
}

/// `CopyObjectResult`.
pub fn copy_object(etag: &str, last_modified_ms: u64) -> Vec<u8> {
    copy_result("CopyObjectResult", etag, last_modified_ms)
}

/// `CopyPartResult`.
pub fn copy_part(etag: &str, last_modified_ms: u64) -> Vec<u8> {
    copy_result("CopyPartResult", etag, last_modified_ms)
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
    document.element("Bucket", list.bucket);
    document.key("KeyMarker", list.key_marker, false);
    document.element("UploadIdMarker", list.upload_id_marker);
    if let Some(next_key_marker) = list.next_key_marker {
        document.key("NextKeyMarker", next_key_marker, false);
    }
    if let Some(next_upload_id_marker) = list.next_upload_id_marker {
        document.element("NextUploadIdMarker", next_upload_id_marker);
    }
    document.key("Prefix", list.prefix, false);
    document.value("MaxUploads", list.max_uploads);
    document.value("IsTruncated", list.is_truncated);
    for upload in list.uploads {
        document.open("Upload");
        document.key("Key", &upload.key, false);
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

/// An element just closed, as seen by a visitor of [`walk`].
struct Closed<'a> {
    /// 1 for the root.
    depth: usize,
    /// Local name of the parent element; empty for the root.
    parent: &'a str,
    /// Local name of the element (namespace prefix dropped).
    name: &'a str,
    /// The element's own unescaped text, when it has no child elements; unspecified otherwise.
    text: &'a str,
}

fn malformed(reason: impl fmt::Display) -> XmlError {
    XmlError::Malformed(reason.to_string())
}

/// Walks a document whose root must be named `root` (any namespace), calling `visit` on each element as
/// it closes.
fn walk(body: &[u8], root: &str, mut visit: impl FnMut(Closed<'_>) -> Result<(), XmlError>) -> Result<(), XmlError> {
    let mut reader = Reader::from_reader(body);
    let mut names: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut root_seen = false;
    loop {
        let event = reader.read_event().map_err(malformed)?;
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                let name = start.local_name();
                let name = name.as_ref();
                if names.is_empty() {
                    if root_seen {
                        return Err(malformed("more than one root element"));
                    }
                    if name != root {
                        return Err(malformed(format!("expected root element {root}, found {name}")));
                    }
                    root_seen = true;
                }
                names.push(name.to_owned());
                text.clear();
                if matches!(event, Event::Empty(_)) {
                    close(&mut names, &mut text, &mut visit)?;
                }
            }
            Event::End(_) => close(&mut names, &mut text, &mut visit)?,
            Event::Text(content) => text.push_str(&content.xml10_content()),
            Event::CData(content) => text.push_str(&content.into_inner()),
            Event::GeneralRef(reference) => push_reference(&mut text, &reference)?,
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
    match (root_seen, names.last()) {
        (false, _) => Err(malformed("no root element")),
        (true, Some(name)) => Err(malformed(format!("element {name} is not closed"))),
        (true, None) => Ok(()),
    }
}

/// Visits the innermost open element and closes it.
fn close(
    names: &mut Vec<String>,
    text: &mut String,
    visit: &mut impl FnMut(Closed<'_>) -> Result<(), XmlError>,
) -> Result<(), XmlError> {
    let Some((name, ancestors)) = names.split_last() else {
        return Err(malformed("closing tag without an opening one"));
    };
    visit(Closed {
        depth: names.len(),
        parent: ancestors.last().map_or("", String::as_str),
        name,
        text,
    })?;
    names.pop();
    text.clear();
    Ok(())
}

/// Appends what an entity or character reference (`&amp;`, `&#x41;`) stands for.
fn push_reference(text: &mut String, reference: &BytesRef<'_>) -> Result<(), XmlError> {
    if let Some(character) = reference.resolve_char_ref().map_err(malformed)? {
        text.push(character);
        return Ok(());
    }
    let name: &str = reference;
    let resolved = resolve_predefined_entity(name).ok_or_else(|| malformed(format!("unknown entity &{name};")))?;
    text.push_str(resolved);
    Ok(())
}

/// The parts of a `CompleteMultipartUpload` body: (PartNumber, ETag without quotes), in document order.
///
/// Elements may come in any order inside `Part`, with or without the S3 namespace; any other element
/// (`ChecksumCRC32`, ...) is ignored. Malformed when a part lacks its number or ETag, when a number is
/// not in 1..=10000, or when there is no part at all.
pub fn parse_complete(body: &[u8]) -> Result<Vec<(u32, String)>, XmlError> {
    let mut parts = Vec::new();
    let mut number: Option<u32> = None;
    let mut etag: Option<String> = None;
    walk(body, "CompleteMultipartUpload", |closed| {
        match (closed.depth, closed.parent, closed.name) {
            (3, "Part", "PartNumber") => number = Some(parse_part_number(closed.text)?),
            (3, "Part", "ETag") => etag = Some(closed.text.trim().trim_matches('"').to_owned()),
            (2, _, "Part") => match (number.take(), etag.take()) {
                (Some(number), Some(etag)) => parts.push((number, etag)),
                (None, _) => return Err(malformed("Part without PartNumber")),
                (_, None) => return Err(malformed("Part without ETag")),
            },
            _ => {}
        }
        Ok(())
    })?;
    if parts.is_empty() {
        return Err(malformed("no Part"));
    }
    Ok(parts)
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

/// A `Delete` body: (Quiet, keys). Keys come unescaped, as bytes, in document order; `VersionId` is
/// ignored. `TooMany` past [`DELETE_KEYS_MAX`] keys; malformed when an `Object` has no `Key` or there is
/// no `Object` at all.
pub fn parse_delete(body: &[u8]) -> Result<(bool, Vec<Vec<u8>>), XmlError> {
    let mut quiet = false;
    let mut keys = Vec::new();
    let mut key: Option<Vec<u8>> = None;
    walk(body, "Delete", |closed| {
        match (closed.depth, closed.parent, closed.name) {
            (2, _, "Quiet") => quiet = parse_bool(closed.text)?,
            (3, "Object", "Key") => key = Some(closed.text.as_bytes().to_vec()),
            (2, _, "Object") => {
                let key = key.take().ok_or_else(|| malformed("Object without Key"))?;
                if keys.len() == DELETE_KEYS_MAX {
                    return Err(XmlError::TooMany);
                }
                keys.push(key);
            }
            _ => {}
        }
        Ok(())
    })?;
    if keys.is_empty() {
        return Err(malformed("no Object"));
    }
    Ok((quiet, keys))
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
        assert_eq!(text(list_buckets(&buckets)), expected);
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
            text(error("NoSuchKey", "The key <k> does not exist", "/b/k&1", "r1")),
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
    }

    #[test]
    fn copy_results() {
        let body = "<ETag>&quot;e&quot;</ETag><LastModified>2023-11-14T22:13:20.123Z</LastModified>";
        assert_eq!(
            text(copy_object("e", 1_700_000_000_123)),
            namespaced("CopyObjectResult", body)
        );
        assert_eq!(
            text(copy_part("e", 1_700_000_000_123)),
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
            text(list_buckets(&buckets))
        );
    }
}
