//! Object operations: PutObject, GetObject/HeadObject (streamed by the
//! master), CopyObject, DeleteObject, DeleteObjects.
//!
//! Writes go through `write::store_value`, the native write protocol with
//! overwrite allowed: the record is `DELETED` while the new bytes go out
//! and live again only when every replica holds them, so a key is never
//! live while its replicas disagree; a failed overwrite leaves the prior
//! value readable wherever no replica took the new one.
//!
//! GET streams the value from one replica (a healthy one first; another
//! if one fails before the first byte) in pieces of `PIECE_BYTES`, reading
//! the next piece from the volume while the last goes to the client: at
//! most two pieces in memory.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::app::App;
use crate::connection::{BodyReader, Connection};
use crate::http::{BodyFraming, Method, RequestHead};
use crate::index::IndexError;
use crate::journal;
use crate::meta::{now_ms, Meta, CONTENT_TYPE_BYTES_MAX};
use crate::placement::{entry_host, key2path, path_is_own, KEY_BYTES_MAX};
use crate::record::Record;
use crate::replication::{entry_path, PieceSource, ReplicationError, PIECE_BYTES, VOLUME_IO_TIMEOUT};
use crate::store::random_below;
use crate::volume::{self, Download};
use crate::write::{self, Plan};

use super::body::{request_body, CHECKSUM_ENTRY_PREFIX};
use super::checksum::{Algorithm, Checksummer};
use super::list::{etag_hex, etag_of};
use super::request::{native_key, parse_range, ByteRange, RangeAsk, S3Request};
use super::{bucket, parts, write_head, xml, Reply, S3Error, Sent};

/// Largest XML request body read (DeleteObjects of 1000 long keys,
/// CompleteMultipartUpload of 10,000 parts).
pub const XML_BODY_BYTES_MAX: u64 = 2 * 1024 * 1024;
/// Content type of a value stored without one.
const CONTENT_TYPE_DEFAULT: &str = "binary/octet-stream";

/// The native key of the request's object, refused if it cannot be stored.
pub fn checked_key(request: &S3Request) -> Result<Vec<u8>, S3Error> {
    checked_native_key(request.native_key())
}

/// `key`, a native key of an S3 object, if it can be stored.
pub fn checked_native_key(key: Vec<u8>) -> Result<Vec<u8>, S3Error> {
    if key.len() > KEY_BYTES_MAX {
        return Err(S3Error::new(
            400,
            "KeyTooLongError",
            format!("Your key is too long: /bucket/key may be at most {KEY_BYTES_MAX} bytes"),
        ));
    }
    if !path_is_own(&key) {
        return Err(S3Error::invalid_argument(
            "this key cannot be stored: its base64 file name has a leading, trailing or doubled '/'",
        ));
    }
    Ok(key)
}

/// The md5 a `Content-MD5` header names.
pub fn content_md5(request: &S3Request) -> Result<Option<[u8; 16]>, S3Error> {
    let Some(text) = request.headers.content_md5.as_deref() else {
        return Ok(None);
    };
    let bytes = STANDARD
        .decode(text)
        .ok()
        .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok());
    match bytes {
        Some(md5) => Ok(Some(md5)),
        None => Err(S3Error::new(
            400,
            "InvalidDigest",
            "The Content-MD5 you specified was invalid.",
        )),
    }
}

/// The user metadata and stored headers to keep with the value, from the
/// request (`Content-Encoding` less the upload's own `aws-chunked`).
pub fn user_metadata(request: &S3Request) -> Result<Vec<(String, String)>, S3Error> {
    if request.headers.user_not_utf8 {
        return Err(S3Error::invalid_argument(
            "a user metadata value is not UTF-8 (it could not be returned as sent)",
        ));
    }
    let mut user = request.headers.user.clone();
    for (name, value) in &request.headers.stored {
        let value = if name == ":content-encoding" {
            let tokens: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|token| !token.is_empty() && *token != "aws-chunked")
                .collect();
            tokens.join(", ")
        } else {
            value.clone()
        };
        if !value.is_empty() {
            user.push((name.clone(), value));
        }
    }
    checked_user_metadata(user)
}

/// User metadata (and stored headers) to keep with a value, if it may be.
pub fn checked_user_metadata(user: Vec<(String, String)>) -> Result<Vec<(String, String)>, S3Error> {
    // `x-amz-meta-!...` would pose as mkv's own entries (a checksum the
    // value was never checked against).
    if user.iter().any(|(name, _)| parts::is_internal(name)) {
        return Err(S3Error::new(
            400,
            "InvalidArgument",
            "User metadata names may not start with '!'",
        ));
    }
    // Each is sent back as a header line: nothing in it may end the line.
    let sendable = |(name, value): &(String, String)| {
        crate::http::is_header_name(name.strip_prefix(':').unwrap_or(name)) && crate::http::is_header_value(value)
    };
    if !user.iter().all(sendable) {
        return Err(S3Error::invalid_argument(
            "a metadata name is not a header name, or its value holds a control character",
        ));
    }
    if !Meta::user_fits(&user) {
        return Err(S3Error::new(
            400,
            "MetadataTooLarge",
            "Your metadata headers exceed the maximum allowed metadata size.",
        ));
    }
    Ok(user)
}

/// The content type to store, from the request.
fn content_type(request: &S3Request) -> Result<Option<String>, S3Error> {
    match request.headers.content_type.as_deref() {
        Some(text) if text.len() > CONTENT_TYPE_BYTES_MAX => Err(S3Error::invalid_argument("Content-Type is too long")),
        Some(text) => Ok(Some(text.to_owned())),
        None => Ok(None),
    }
}

pub async fn put(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    let key = checked_key(request)?;
    bucket::check_writable(app, &request.bucket).await?;
    let expected_md5 = content_md5(request)?;
    let meta = Meta {
        content_type: content_type(request)?,
        user: user_metadata(request)?,
        ..Meta::default()
    };
    let _guard = super::lock(app, &key).await?;
    // Conditional writes are decided under the key's lock: no other write
    // of the key can come between the check and the write.
    write_precondition(app, request, &key).await?;
    let keep_alive = head.keep_alive;
    let (mut body, declared) = request_body(app, connection, head, request)?;
    let plan = Plan {
        expected_md5,
        ..Plan::s3_value(declared, meta)
    };
    let stored = write::store_value(app, &key, &mut body, plan).await?;
    drop(body);
    // Recorded once the value is: a refused body makes no bucket.
    bucket::ensure_for_write(app, &request.bucket).await?;
    let etag = stored.md5.as_ref().map(etag_hex).unwrap_or_default();
    let mut reply = Reply::empty(200).header("ETag", format_args!("\"{etag}\""));
    for (name, value) in &stored.meta.user {
        if let Some(checksum) = name.strip_prefix(CHECKSUM_ENTRY_PREFIX) {
            reply = reply.header(checksum, value);
        }
    }
    reply.write(connection, keep_alive, false);
    Ok(Sent::status(200))
}

/// A conditional PUT: `If-None-Match: *` writes only a new key, `If-Match`
/// only over the named ETag (412 otherwise; If-Match of a missing key is
/// NoSuchKey). The caller holds the key's lock.
pub async fn write_precondition(app: &App, request: &S3Request, key: &[u8]) -> Result<(), S3Error> {
    let headers = &request.headers;
    if headers.if_match.is_none() && headers.if_none_match.is_none() {
        return Ok(());
    }
    let current = match app.store.get_async(key).await?.filter(Record::is_live) {
        Some(record) => {
            let meta_etag = app.store.meta_async(key).await?.and_then(|meta| meta.etag);
            Some(etag_of(&record, meta_etag.as_deref()))
        }
        None => None,
    };
    if let Some(list) = headers.if_match.as_deref() {
        match &current {
            None => return Err(S3Error::no_such_key()),
            Some(etag) if !etag_listed(list, etag) => return Err(precondition_failed()),
            Some(_) => {}
        }
    }
    if let (Some(list), Some(etag)) = (headers.if_none_match.as_deref(), &current) {
        if etag_listed(list, etag) {
            return Err(precondition_failed());
        }
    }
    Ok(())
}

/// Read a small request body (XML) whole, and check it against the
/// digests the request declares: its `Content-MD5` and the payload hash
/// `x-amz-content-sha256` (which a signature covers).
pub async fn read_small_body(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Vec<u8>, S3Error> {
    let body = read_small_body_unchecked(app, connection, head).await?;
    check_small_body(request, &body, true)?;
    Ok(body)
}

/// `read_small_body` for CompleteMultipartUpload, whose `x-amz-checksum-*`
/// header is the completed object's checksum, not its body's.
pub async fn read_complete_body(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Vec<u8>, S3Error> {
    let body = read_small_body_unchecked(app, connection, head).await?;
    check_small_body(request, &body, false)?;
    Ok(body)
}

fn check_small_body(request: &S3Request, body: &[u8], checksum_headers: bool) -> Result<(), S3Error> {
    if request.headers.is_aws_chunked() {
        return Err(S3Error::invalid_argument("an XML request body may not be aws-chunked"));
    }
    if let Some(expected) = content_md5(request)? {
        use md5::{Digest, Md5};
        if <[u8; 16]>::from(Md5::digest(body)) != expected {
            return Err(S3Error::new(
                400,
                "BadDigest",
                "The Content-MD5 you specified did not match what we received.",
            ));
        }
    }
    // An additional checksum header (boto3 sends `x-amz-checksum-crc32`
    // with DeleteObjects and PutBucketCors) is checked, never ignored.
    for algorithm in super::checksum::Algorithm::ALL.into_iter().filter(|_| checksum_headers) {
        let Some(value) = request.headers.amz(algorithm.header()) else {
            continue;
        };
        let checked = super::checksum::parse_expected(algorithm, value).and_then(|expected| {
            let mut checksummer = super::checksum::Checksummer::new(algorithm);
            checksummer.update(body);
            checksummer.verify(&expected)
        });
        if let Err(error) = checked {
            return Err(S3Error::new(400, error.code(), error.to_string()));
        }
    }
    let declared = request.headers.content_sha256.as_deref().unwrap_or("");
    if declared.len() == 64 && declared.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        use sha2::{Digest, Sha256};
        let computed = super::checksum::hex(&Sha256::digest(body));
        if !computed.eq_ignore_ascii_case(declared) {
            return Err(S3Error::new(
                400,
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ));
        }
    }
    Ok(())
}

async fn read_small_body_unchecked(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
) -> Result<Vec<u8>, S3Error> {
    let too_large = || S3Error::new(400, "MaxMessageLengthExceeded", "Your request was too big.");
    if matches!(head.body, BodyFraming::Length(length) if length > XML_BODY_BYTES_MAX) {
        return Err(too_large());
    }
    if head.expect_continue && connection.send_continue().await.is_err() {
        return Err(S3Error::new(400, "IncompleteBody", "the client went away"));
    }
    let mut reader = BodyReader::new(head.body, app.config.body_limits);
    let mut body = Vec::new();
    loop {
        match reader.next(connection, PIECE_BYTES).await {
            Ok(Some(piece)) => {
                body.extend_from_slice(&piece);
                if body.len() as u64 > XML_BODY_BYTES_MAX {
                    return Err(too_large());
                }
            }
            Ok(None) => return Ok(body),
            Err(_) => return Err(S3Error::new(400, "IncompleteBody", "the request body was cut short")),
        }
    }
}

/// A live object: its record and what S3 says about it.
pub struct Object {
    pub record: Record,
    pub size: u64,
    pub mtime_ms: u64,
    pub etag: String,
    pub content_type: String,
    pub user: Vec<(String, String)>,
}

/// Times a read opens a copy before it gives up on a key that keeps
/// being overwritten (503 SlowDown).
const READ_ATTEMPTS_MAX: usize = 20;
/// Longest wait of a read for an overwrite's commit: the last piece's
/// write to the volumes and the index write, both bounded by timeouts
/// shorter than this.
const COMMIT_WAIT: Duration = Duration::from_secs(40);

/// Wait until `key` is not being switched to a new value (`write::Commit`).
async fn wait_for_commit(key: &[u8]) -> Result<(), S3Error> {
    match write::wait_committed(key, Instant::now() + COMMIT_WAIT).await {
        true => Ok(()),
        false => Err(S3Error::slow_down()),
    }
}

/// The live record of `key`, whose record was read soft-deleted
/// (`deleted`), once a journal entry it has is settled (`journal`): an
/// overwrite in its commit on another master (its writer holds the key:
/// wait, at most `COMMIT_WAIT`), or one cut short (settled here). None:
/// the key is deleted (its record read twice the same, with no entry
/// between: a writer on another master may have committed and begun its
/// next overwrite between two reads).
async fn journal_settled(app: &App, key: &[u8], deleted: Record) -> Result<Option<Record>, S3Error> {
    let deadline = Instant::now() + COMMIT_WAIT;
    let mut pause = Duration::from_millis(1);
    let mut seen = deleted;
    loop {
        let pending = journal::pending(app, key).await?.is_some();
        if pending {
            match journal::settle(app, key).await? {
                Some(journal::Settled::Undecided) => {
                    return Err(S3Error::unavailable(
                        "an overwrite of this key is unfinished and no copy can be read to finish it",
                    ))
                }
                // Its writer is committing (None), or it was cut short
                // moments ago (Young): wait.
                Some(journal::Settled::Young) | None if Instant::now() + pause > deadline => {
                    return Err(S3Error::slow_down())
                }
                Some(journal::Settled::Young) | None => {
                    monoio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(250));
                }
                Some(_) => {}
            }
        }
        match app.store.get_async(key).await? {
            Some(record) if record.is_live() => return Ok(Some(record)),
            None => return Ok(None),
            // Deleted, with no entry, as it was read before: deleted.
            Some(record) if record == seen && !pending => return Ok(None),
            // Deleted again, otherwise: another overwrite's gate.
            Some(record) if Instant::now() < deadline => seen = record,
            Some(_) => return Err(S3Error::slow_down()),
        }
    }
}

/// The live object at native `key`: NoSuchKey (or NoSuchBucket) if none.
/// A key being overwritten is the old value until the new one is live.
pub async fn object(app: &App, bucket_name: &str, key: &[u8]) -> Result<Object, S3Error> {
    wait_for_commit(key).await?;
    let record = match app.store.get_async(key).await? {
        Some(record) if record.is_live() => Some(record),
        Some(deleted) => journal_settled(app, key, deleted).await?,
        None => None,
    };
    let Some(record) = record else {
        bucket::check_exists(app, bucket_name).await?;
        return Err(S3Error::no_such_key());
    };
    let meta = match app.store.meta_async(key).await {
        Ok(Some(meta)) => meta,
        // Written by a master that kept no metadata (or metadata that can
        // no longer be read): ask a replica.
        Ok(None) | Err(IndexError::CorruptMeta { .. }) => probe_meta(app, key, &record).await?,
        Err(error) => return Err(error.into()),
    };
    Ok(Object {
        size: meta.size,
        mtime_ms: meta.mtime_ms,
        etag: etag_of(&record, meta.etag.as_deref()),
        content_type: meta.content_type.unwrap_or_else(|| CONTENT_TYPE_DEFAULT.to_owned()),
        user: meta.user,
        record,
    })
}

/// Size and mtime of a value without metadata, from a replica's HEAD.
pub async fn probe_meta(app: &App, key: &[u8], record: &Record) -> Result<Meta, S3Error> {
    let path = key2path(key);
    for entry in replica_order(app, record) {
        let file = entry_path(entry, &path);
        let Ok(head) = volume::head(entry_host(entry), &file, app.config.volume_timeout).await else {
            continue;
        };
        if let Some(head) = head {
            return Ok(Meta {
                size: head.length,
                mtime_ms: head.last_modified_ms.unwrap_or(0),
                ..Meta::default()
            });
        }
    }
    Err(S3Error::unavailable("no replica of this key answered"))
}

/// The replicas of `record` to read from, in order: from a random one on,
/// those on volumes the health thread sees down last.
fn replica_order<'a>(app: &App, record: &'a Record) -> Vec<&'a String> {
    let count = record.volumes.len();
    let start = random_below(count.max(1));
    let mut order: Vec<&String> = (0..count).map(|step| &record.volumes[(start + step) % count]).collect();
    order.sort_by_key(|entry| {
        app.volumes
            .id_of(entry_host(entry))
            .is_some_and(|id| !app.volumes.is_healthy(id))
    });
    order
}

/// Whether an `If-Match`/`If-None-Match` list names `etag`.
fn etag_listed(list: &str, etag: &str) -> bool {
    list.split(',').any(|candidate| {
        let candidate = candidate.trim();
        let candidate = candidate.strip_prefix("W/").unwrap_or(candidate);
        candidate == "*" || candidate.trim_matches('"') == etag
    })
}

/// The four conditional headers of a read (or of a copy's source).
struct Conditions<'a> {
    if_match: Option<&'a str>,
    if_none_match: Option<&'a str>,
    if_modified_since: Option<&'a str>,
    if_unmodified_since: Option<&'a str>,
}

/// The status a conditional request gets instead of the value, if any:
/// 412 when a match or unmodified condition fails, 304 when a none-match
/// or modified-since one does.
fn precondition(conditions: &Conditions<'_>, object: &Object) -> Option<u16> {
    let seconds = |ms: u64| ms / 1000;
    let since = |text: Option<&str>| text.and_then(xml::parse_http_date);
    if let Some(list) = conditions.if_match {
        if !etag_listed(list, &object.etag) {
            return Some(412);
        }
    } else if let Some(date) = since(conditions.if_unmodified_since) {
        if seconds(object.mtime_ms) > seconds(date) {
            return Some(412);
        }
    }
    if let Some(list) = conditions.if_none_match {
        if etag_listed(list, &object.etag) {
            return Some(304);
        }
    } else if let Some(date) = since(conditions.if_modified_since) {
        if seconds(object.mtime_ms) <= seconds(date) {
            return Some(304);
        }
    }
    None
}

fn precondition_failed() -> S3Error {
    S3Error::new(
        412,
        "PreconditionFailed",
        "At least one of the pre-conditions you specified did not hold",
    )
}

/// The headers every answer about an object carries; its stored checksum
/// when the client asked for it (`x-amz-checksum-mode: ENABLED`) and the
/// answer is the whole value (a client checks a range's bytes against it).
fn object_headers(object: &Object, checksum_mode: bool) -> Reply {
    let mut reply = Reply::empty(200)
        .header("ETag", format_args!("\"{}\"", object.etag))
        .header("Last-Modified", xml::http_date(object.mtime_ms))
        .header("Accept-Ranges", "bytes");
    for (name, value) in &object.user {
        if parts::is_internal(name) {
            if let Some(checksum) = name
                .strip_prefix(CHECKSUM_ENTRY_PREFIX)
                .filter(|_| name != parts::PARTS_ENTRY)
            {
                if checksum_mode {
                    // A checksum of checksums carries its part count.
                    let kind = match value.contains('-') {
                        true => "COMPOSITE",
                        false => "FULL_OBJECT",
                    };
                    reply = reply.header(checksum, value).header("x-amz-checksum-type", kind);
                }
            }
            continue;
        }
        reply = match name.strip_prefix(':') {
            Some(stored) => reply.header(stored, value),
            None => reply.header(&format!("x-amz-meta-{name}"), value),
        };
    }
    reply
}

/// GetObject's `response-*` parameters (presigned download links set
/// them) and the response header each replaces.
const RESPONSE_OVERRIDES: &[(&str, &str)] = &[
    ("response-content-type", "content-type"),
    ("response-content-language", "content-language"),
    ("response-expires", "expires"),
    ("response-cache-control", "cache-control"),
    ("response-content-disposition", "content-disposition"),
    ("response-content-encoding", "content-encoding"),
];

/// The object as GetObject's `response-*` parameters ask it to be
/// described: each replaces the stored header (or content type) of its
/// name. A value that could end the header line is refused.
fn with_overrides(mut object: Object, request: &S3Request) -> Result<Object, S3Error> {
    for (parameter, header) in RESPONSE_OVERRIDES {
        let Some(value) = request.param(parameter) else {
            continue;
        };
        // As S3: a public object's link cannot restyle it (as HTML).
        if matches!(request.access, super::auth::Access::Anonymous(_)) {
            return Err(S3Error::new(
                400,
                "InvalidRequest",
                "Request specific response headers cannot be used for anonymous GET requests.",
            ));
        }
        let value = std::str::from_utf8(value)
            .ok()
            .filter(|text| crate::http::is_header_value(text))
            .ok_or_else(|| S3Error::invalid_argument("a response-* parameter is not a header value"))?;
        if *header == "content-type" {
            object.content_type = value.to_owned();
            continue;
        }
        let stored = format!(":{header}");
        object.user.retain(|(name, _)| *name != stored);
        object.user.push((stored, value.to_owned()));
    }
    Ok(object)
}

pub async fn get(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    let key = request.native_key();
    let head_only = head.method == Method::Head;
    let checksum_mode = request
        .headers
        .amz("x-amz-checksum-mode")
        .is_some_and(|mode| mode.eq_ignore_ascii_case("enabled"));
    let part_number = parts::requested(request)?;
    let mut attempts = 0;
    let (reply, length, mut download) = loop {
        attempts += 1;
        let object = with_overrides(object(app, &request.bucket, &key).await?, request)?;
        let headers = &request.headers;
        let conditions = Conditions {
            if_match: headers.if_match.as_deref(),
            if_none_match: headers.if_none_match.as_deref(),
            if_modified_since: headers.if_modified_since.as_deref(),
            if_unmodified_since: headers.if_unmodified_since.as_deref(),
        };
        match precondition(&conditions, &object) {
            Some(412) => return Err(precondition_failed()),
            Some(status) => {
                let mut reply = object_headers(&object, false);
                reply.status = status;
                reply.write(connection, head.keep_alive, true);
                return Ok(Sent::status(status));
            }
            None => {}
        }
        // A part is answered as the range it covers (206 and
        // Content-Range, an empty one as the whole empty value).
        let (range, part_length, parts_count) = match part_number {
            Some(number) => {
                let (range, length, count) = parts::range(number, object.size, &object.etag, &object.user)?;
                (range, Some(length), count)
            }
            None => match parse_range(request.headers.range.as_deref(), object.size) {
                RangeAsk::Whole => (None, None, None),
                RangeAsk::Part(range) => (Some(range), None, None),
                RangeAsk::Unsatisfiable => {
                    return Err(
                        S3Error::new(416, "InvalidRange", "The requested range is not satisfiable")
                            .header("Content-Range", format_args!("bytes */{}", object.size)),
                    );
                }
            },
        };
        let mut reply = object_headers(&object, checksum_mode && range.is_none() && part_number.is_none())
            .header("Content-Type", &object.content_type);
        if let Some(count) = parts_count {
            reply = reply.header("x-amz-mp-parts-count", count);
        }
        let length = match range {
            Some(ByteRange { first, last }) => {
                reply.status = 206;
                reply = reply.header("Content-Range", format_args!("bytes {first}-{last}/{}", object.size));
                last - first + 1
            }
            // The whole value, or an empty part of it.
            None => part_length.unwrap_or(object.size),
        };
        if head_only || length == 0 {
            write_head(connection, reply.status, &reply.headers, length, head.keep_alive);
            return Ok(Sent::status(reply.status));
        }
        match open_as_recorded(app, &key, &object.record, range, length).await? {
            Some(download) => break (reply, length, download),
            None if attempts >= READ_ATTEMPTS_MAX => return Err(S3Error::slow_down()),
            None => monoio::time::sleep(Duration::from_millis(attempts as u64)).await,
        }
    };
    write_head(connection, reply.status, &reply.headers, length, head.keep_alive);
    let complete = stream(connection, &mut download, length).await;
    if complete {
        download.finish();
    }
    Ok(Sent {
        status: reply.status,
        close: !complete,
    })
}

/// A download of `length` bytes (of `range`) of `key`'s value from the
/// first replica that starts one.
pub async fn open_download(
    app: &App,
    key: &[u8],
    record: &Record,
    range: Option<ByteRange>,
    length: u64,
) -> Result<Download, S3Error> {
    let path = key2path(key);
    let range = range.map(|range| (range.first, range.last));
    let mut failure = None;
    for entry in replica_order(app, record) {
        let file = entry_path(entry, &path);
        let begun = Download::begin_range(
            entry_host(entry),
            &file,
            range,
            app.config.volume_timeout,
            VOLUME_IO_TIMEOUT,
        )
        .await;
        match begun {
            Ok(Some(download)) if download.length() == Some(length) => return Ok(download),
            Ok(Some(_)) => failure = Some(format!("volume {entry}: the copy's length is not the recorded one")),
            Ok(None) => failure = Some(format!("volume {entry}: the copy is missing")),
            Err(error) => failure = Some(error.to_string()),
        }
    }
    Err(S3Error::unavailable(
        failure.unwrap_or_else(|| "the key has no replica".into()),
    ))
}

/// Copy `length` bytes from `download` to the client, reading the next
/// piece while the last is written. Returns whether all went out.
async fn stream(connection: &mut Connection, download: &mut Download, length: u64) -> bool {
    let mut sent = 0u64;
    let mut piece = match download.next(PIECE_BYTES).await {
        Ok(Some(piece)) => piece,
        _ => return false,
    };
    loop {
        sent += piece.len() as u64;
        if sent >= length {
            return connection.write_piece(piece).await.is_ok() && sent == length;
        }
        let (written, next) = monoio::join!(connection.write_piece(piece), download.next(PIECE_BYTES));
        match (written, next) {
            (Ok(()), Ok(Some(next))) => piece = next,
            _ => return false,
        }
    }
}

pub async fn delete(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    bucket::check_exists(app, &request.bucket).await?;
    delete_one(app, &request.bucket, &request.key, request.headers.if_match.as_deref()).await?;
    Reply::empty(204).write(connection, head.keep_alive, false);
    Ok(Sent::status(204))
}

/// Delete one object; absent is success, as S3 has it.
async fn delete_one(app: &App, bucket_name: &str, key: &[u8], if_match: Option<&str>) -> Result<(), S3Error> {
    let key = native_key(bucket_name, key);
    let _guard = super::lock(app, &key).await?;
    let record = crate::journal::record_under_lock(app, &key).await?;
    // `If-Match` deletes only the named value, decided under the lock.
    if let Some(list) = if_match {
        let live = record.as_ref().filter(|record| record.is_live());
        let Some(live) = live else {
            return Err(S3Error::no_such_key());
        };
        let meta_etag = app
            .store
            .meta_async(&key)
            .await
            .ok()
            .flatten()
            .and_then(|meta| meta.etag);
        if !etag_listed(list, &etag_of(live, meta_etag.as_deref())) {
            return Err(precondition_failed());
        }
    }
    let Some(record) = record else {
        return Ok(());
    };
    if app.config.protect && record.is_live() {
        return Err(S3Error::protected());
    }
    write::delete_value(app, &key, &record).await?;
    Ok(())
}

pub async fn delete_objects(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    bucket::check_exists(app, &request.bucket).await?;
    let body = read_small_body(app, connection, head, request).await?;
    let (quiet, objects) =
        xml::parse_delete_objects(&body).map_err(|error| S3Error::malformed_xml(error.to_string()))?;
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for xml::DeleteObject {
        key,
        version_id,
        condition,
    } in objects
    {
        // Only the `null` version exists: naming another never deletes the
        // current value.
        let version = version_id
            .as_deref()
            .map(str::as_bytes)
            .map(super::refuse::check_version);
        let outcome = match (version, condition) {
            (Some(Err(error)), _) => Err(error),
            // A condition mkv does not check is refused, never ignored:
            // the object stays.
            (_, Some(element)) => Err(S3Error::new(
                501,
                "NotImplemented",
                format!("DeleteObjects conditions ({element}) are not implemented"),
            )),
            _ => delete_one(app, &request.bucket, &key, None).await,
        };
        match outcome {
            Ok(()) if quiet => {}
            Ok(()) => deleted.push(key),
            Err(error) => errors.push(xml::DeleteError {
                key,
                code: error.code.to_owned(),
                message: error.message,
            }),
        }
    }
    Reply::xml(200, xml::delete_result(&deleted, &errors)).write(connection, head.keep_alive, false);
    Ok(Sent::status(200))
}

/// The bucket and key an `x-amz-copy-source` names.
fn copy_source(request: &S3Request) -> Result<(String, Vec<u8>), S3Error> {
    let text = request.headers.copy_source.as_deref().unwrap_or("");
    let text = match text.split_once("?versionId=") {
        Some((source, version)) => {
            super::refuse::check_version(version.as_bytes())?;
            source
        }
        None => text,
    };
    let mut decoded = Vec::new();
    if !crate::http::percent_decode_into(text.as_bytes(), &mut decoded) {
        return Err(S3Error::invalid_argument("x-amz-copy-source is not valid"));
    }
    let path = decoded.strip_prefix(b"/").unwrap_or(&decoded);
    let slash = path.iter().position(|&byte| byte == b'/');
    match slash {
        Some(slash) if slash > 0 && slash + 1 < path.len() => {
            let bucket_name = String::from_utf8(path[..slash].to_vec())
                .map_err(|_| S3Error::invalid_argument("x-amz-copy-source names no bucket"))?;
            Ok((bucket_name, path[slash + 1..].to_vec()))
        }
        _ => Err(S3Error::invalid_argument("x-amz-copy-source must be bucket/key")),
    }
}

/// A value read from a replica of another key (a copy's source).
pub struct CopySource {
    /// None: an empty value (nothing to open).
    download: Option<Download>,
    /// A checksum computed over the bytes copied (a part of an upload that
    /// declared one).
    checksummer: Option<Checksummer>,
}

impl CopySource {
    /// The bytes `download` reads (none without one), with `algorithm`'s
    /// checksum computed as they are copied and kept with them
    /// (`PieceSource::checksum`) if given.
    pub fn new(download: Option<Download>, algorithm: Option<Algorithm>) -> CopySource {
        CopySource {
            download,
            checksummer: algorithm.map(Checksummer::new),
        }
    }

    /// The copy is read whole: its volume connection goes back to the pool.
    pub fn finish(self) {
        if let Some(download) = self.download {
            download.finish();
        }
    }
}

impl PieceSource for CopySource {
    async fn next_piece(&mut self, bytes_max: usize) -> Result<Option<Bytes>, ReplicationError> {
        let Some(download) = self.download.as_mut() else {
            return Ok(None);
        };
        let piece = download.next(bytes_max).await.map_err(ReplicationError::Source)?;
        if let (Some(checksummer), Some(piece)) = (self.checksummer.as_mut(), piece.as_ref()) {
            checksummer.update(piece);
        }
        Ok(piece)
    }

    fn delivered(&self) -> u64 {
        self.download.as_ref().map_or(0, Download::delivered)
    }

    fn checksum(&self) -> Option<(String, String)> {
        let checksummer = self.checksummer.clone()?;
        Some(super::body::checksum_entry(
            checksummer.algorithm(),
            checksummer.base64(),
        ))
    }
}

/// The object `x-amz-copy-source` names (its native key), if it is live
/// and meets the request's `x-amz-copy-source-if-*` conditions (412 if
/// not, whichever kind failed).
async fn copy_source_object(app: &App, request: &S3Request) -> Result<(Vec<u8>, Object), S3Error> {
    let (source_bucket, source_key) = copy_source(request)?;
    let source_native = native_key(&source_bucket, &source_key);
    let source = object(app, &source_bucket, &source_native).await?;
    let headers = &request.headers;
    let conditions = Conditions {
        if_match: headers.copy_if_match.as_deref(),
        if_none_match: headers.copy_if_none_match.as_deref(),
        if_modified_since: headers.copy_if_modified_since.as_deref(),
        if_unmodified_since: headers.copy_if_unmodified_since.as_deref(),
    };
    if precondition(&conditions, &source).is_some() {
        return Err(precondition_failed());
    }
    Ok((source_native, source))
}

/// A copy source read and opened (`open_copy_source`).
pub struct CopySourceRead {
    /// The source's native key.
    pub native: Vec<u8>,
    pub object: Object,
    /// How many bytes of it are to be read (the span opened).
    pub length: u64,
    /// Open on a replica; None when `length` is 0.
    pub download: Option<Download>,
}

/// Read the copy source `request` names and open a download of the span
/// `span` picks of it, as a GET does: an overwrite of the source may
/// switch the replica between the record's read and the copy's opening,
/// so the bytes opened count only if the source was not committing and
/// its record is unchanged once they are open; otherwise it is read again
/// (at most `READ_ATTEMPTS_MAX` times, then 503 SlowDown).
pub async fn open_copy_source(
    app: &App,
    request: &S3Request,
    span: impl Fn(&Object) -> Result<(Option<ByteRange>, u64), S3Error>,
) -> Result<CopySourceRead, S3Error> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (native, object) = copy_source_object(app, request).await?;
        let (range, length) = span(&object)?;
        if length == 0 {
            return Ok(CopySourceRead {
                native,
                object,
                length,
                download: None,
            });
        }
        match open_as_recorded(app, &native, &object.record, range, length).await? {
            Some(download) => {
                return Ok(CopySourceRead {
                    native,
                    object,
                    length,
                    download: Some(download),
                })
            }
            None if attempts >= READ_ATTEMPTS_MAX => return Err(S3Error::slow_down()),
            None => monoio::time::sleep(Duration::from_millis(attempts as u64)).await,
        }
    }
}

/// Open `length` bytes (`range`) of `key`'s value where `record` names it,
/// if they are the record's value: an overwrite may switch the replica
/// between the record's read and the opening, so the bytes opened count
/// only if the key was not committing and its record is unchanged once
/// they are open (a replica switches only after the committing mark is
/// set). None: read the record again (so is a download that did not open
/// if the key changed: its length may already be the new value's).
async fn open_as_recorded(
    app: &App,
    key: &[u8],
    record: &Record,
    range: Option<ByteRange>,
    length: u64,
) -> Result<Option<Download>, S3Error> {
    let opened = open_download(app, key, record, range, length).await;
    let stable = !write::is_committing(key) && app.store.get_async(key).await?.as_ref() == Some(record);
    match opened {
        Ok(download) if stable => Ok(Some(download)),
        Err(error) if stable => Err(error),
        _ => Ok(None),
    }
}

pub async fn copy(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    let key = checked_key(request)?;
    // The destination's lock first: a copy onto itself then reads the
    // record it rewrites under that lock.
    let _guard = super::lock(app, &key).await?;
    let CopySourceRead {
        native: source_native,
        object: source,
        download,
        ..
    } = open_copy_source(app, request, |object| Ok((None, object.size))).await?;
    // Conditions on the destination, as a PutObject's, under its lock.
    write_precondition(app, request, &key).await?;
    bucket::check_writable(app, &request.bucket).await?;
    let headers = &request.headers;
    // COPY (the default) or REPLACE: another word is not read as either.
    let replace = match headers.metadata_directive.as_deref() {
        None | Some("COPY") => false,
        Some("REPLACE") => true,
        Some(_) => return Err(S3Error::invalid_argument("Unknown metadata directive.")),
    };
    let (content_type, mut user) = if replace {
        (content_type(request)?, user_metadata(request)?)
    } else {
        (Some(source.content_type.clone()), source.user.clone())
    };
    if source_native == key {
        // New metadata on the same bytes: mkv's own entries (checksum,
        // part sizes) stay true.
        let internal = source.user.iter().filter(|(name, _)| parts::is_internal(name));
        user.extend(
            internal
                .filter(|entry| !user.contains(entry))
                .cloned()
                .collect::<Vec<_>>(),
        );
    } else {
        // A copy is one part, whatever its source was.
        user.retain(|(name, _)| name != parts::PARTS_ENTRY);
    }
    let (etag, mtime_ms) = if source_native == key {
        if !replace {
            return Err(S3Error::new(
                400,
                "InvalidRequest",
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata.",
            ));
        }
        // A copy onto itself changes only the metadata, which `-protect`
        // keeps as it is too.
        if app.config.protect {
            return Err(S3Error::protected());
        }
        let meta = Meta {
            size: source.size,
            mtime_ms: now_ms(),
            etag: app.store.meta_async(&key).await?.and_then(|meta| meta.etag),
            content_type,
            user,
        };
        app.store.put_with_meta_async(&key, &source.record, &meta, &[]).await?;
        (source.etag, meta.mtime_ms)
    } else {
        let meta = Meta {
            content_type,
            user,
            ..Meta::default()
        };
        let plan = Plan::s3_value(Some(source.size), meta);
        let mut copied = CopySource::new(download, None);
        let stored = write::store_value(app, &key, &mut copied, plan).await?;
        copied.finish();
        (
            stored.md5.as_ref().map(etag_hex).unwrap_or_default(),
            stored.meta.mtime_ms,
        )
    };
    // Recorded once the copy is stored: a failed copy makes no bucket.
    bucket::ensure_for_write(app, &request.bucket).await?;
    Reply::xml(200, xml::copy_object(&etag, mtime_ms)).write(connection, head.keep_alive, false);
    Ok(Sent::status(200))
}

#[cfg(test)]
mod tests {
    use super::etag_listed;

    #[test]
    fn etag_lists_match_quoted_weak_and_star() {
        assert!(etag_listed("\"abc\"", "abc"));
        assert!(etag_listed("abc", "abc"));
        assert!(etag_listed("W/\"abc\"", "abc"));
        assert!(etag_listed("\"x\", \"abc\"", "abc"));
        assert!(etag_listed("*", "abc"));
        assert!(!etag_listed("\"abd\"", "abc"));
    }
}
