//! The S3 API: path-style S3 requests served over the same index, volumes
//! and write protocol as the native API.
//!
//! An S3 request is told from a native one by what only S3 clients send:
//! an AWS `Authorization`, an `x-amz-*` header (the codec flags both while
//! it parses), an S3 sub-resource or presigned-URL parameter in the query
//! (`is_s3_query`); on `--s3-port` every request is S3. The first path
//! segment is the bucket; object `k` of bucket `b` is the native key
//! `/b/k`, so native and S3 clients see the same values.
//!
//! Unlike the native API, S3 reads are answered by the master itself: S3
//! clients do not follow (or mishandle) a 302, so GET streams the value
//! from a replica. Writes go through `write`, the native write protocol,
//! with overwrite allowed. What S3 needs beyond the record (size, mtime,
//! content type, multipart ETag) is the key's `Meta`; buckets and
//! multipart uploads are `state`.
//!
//! - `request`: parsing (sans-IO): bucket, key, query, headers, ranges.
//! - `chunked`: the `aws-chunked` body decoder (sans-IO).
//! - `body`: the body of a value: decoded, and checked against its
//!   declared length, checksum and payload hash before its last piece.
//! - `xml`: response documents and request bodies (sans-IO, quick-xml).
//! - `operation`: which operation a request asks for and what it needs:
//!   the one reading both the dispatch and `auth` use.
//! - `auth`: who sent a request and whether they may run its operation
//!   (off unless configured): `sigv4` verifies signatures, `identity`
//!   reads the credentials file.
//! - `cors`: CORS rules per bucket, preflights. `post`: POST Object.
//! - `refuse`: features asked for that mkv does not have, refused before
//!   anything is touched rather than ignored.
//! - `object`, `bucket`, `list`, `multipart`: the operations.
//! - `state`: buckets and uploads in the index.

pub mod auth;
pub mod body;
pub mod bucket;
pub mod checksum;
pub mod chunked;
pub mod cors;
pub mod identity;
pub mod list;
pub mod multipart;
pub mod object;
pub mod operation;
pub mod parts;
pub mod post;
pub mod refuse;
pub mod request;
pub mod sigv4;
pub mod state;
pub mod xml;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::app::App;
use crate::connection::{settle_body, Connection};
use crate::error::Error;
use crate::http::{write_connection, write_status_line, KeepAlive, Method, RequestHead};
use crate::index::IndexError;
use crate::store::KeyGuard;
use crate::volume::VolumeError;
use crate::write::WriteError;

use operation::Operation;
pub use request::is_s3_query;
use request::S3Request;

/// How long an S3 write of a key waits for its turn while another write
/// holds the key. S3 clients expect concurrent writes of one key to all
/// succeed (the last one wins) and most do not retry a 409, so a write
/// waits rather than being refused as the native API's are; past this it
/// gets 503 SlowDown with `Retry-After`, which every SDK retries.
pub const WRITE_TURN_WAIT: Duration = Duration::from_secs(30);
/// Longest pause between two tries for a held key: short next to a
/// write's own time, so a key freed is taken soon after.
const WRITE_TURN_POLL_MAX: Duration = Duration::from_millis(20);

/// The lock of `key` (an object's native key, or a multipart upload's or
/// part's lock name), waited for up to `WRITE_TURN_WAIT`.
pub async fn lock<'a>(app: &'a App, key: &[u8]) -> Result<KeyGuard<'a>, S3Error> {
    let deadline = Instant::now() + WRITE_TURN_WAIT;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(guard) = app.store.try_lock_async(key).await? {
            return Ok(guard);
        }
        if Instant::now() + pause > deadline {
            return Err(S3Error::slow_down());
        }
        monoio::time::sleep(pause).await;
        pause = (pause * 2).min(WRITE_TURN_POLL_MAX);
    }
}

/// An S3 request that failed: its status, S3 error code and message.
#[derive(Debug)]
pub struct S3Error {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Header lines the error's answer carries, each ending in CRLF.
    pub headers: String,
    /// More elements of the error document (a signature mismatch's
    /// `StringToSign`, `CanonicalRequest`, ...).
    pub details: Vec<(&'static str, String)>,
}

impl S3Error {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> S3Error {
        S3Error {
            status,
            code,
            message: message.into(),
            headers: String::new(),
            details: Vec::new(),
        }
    }

    /// Add a header line to the error's answer.
    pub fn header(mut self, name: &str, value: impl std::fmt::Display) -> S3Error {
        let _ = write!(self.headers, "{name}: {value}\r\n");
        self
    }

    pub fn invalid_argument(message: &str) -> S3Error {
        S3Error::new(400, "InvalidArgument", message)
    }

    pub fn invalid_bucket_name() -> S3Error {
        S3Error::new(400, "InvalidBucketName", "The specified bucket is not valid.")
    }

    pub fn no_such_bucket() -> S3Error {
        S3Error::new(404, "NoSuchBucket", "The specified bucket does not exist")
    }

    pub fn no_such_key() -> S3Error {
        S3Error::new(404, "NoSuchKey", "The specified key does not exist.")
    }

    pub fn no_such_upload() -> S3Error {
        S3Error::new(
            404,
            "NoSuchUpload",
            "The specified multipart upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
        )
    }

    pub fn not_implemented() -> S3Error {
        S3Error::new(
            501,
            "NotImplemented",
            "A header or query you provided implies functionality that is not implemented.",
        )
    }

    /// A live value under `-protect`: no writer replaces or removes it.
    pub fn protected() -> S3Error {
        S3Error::new(403, "AccessDenied", "-protect is on: unlink the key first")
    }

    pub fn malformed_xml(message: impl Into<String>) -> S3Error {
        S3Error::new(400, "MalformedXML", message)
    }

    pub fn slow_down() -> S3Error {
        S3Error::new(
            503,
            "SlowDown",
            "Another write of this key took too long to finish. Please try again.",
        )
    }

    pub fn internal(message: impl std::fmt::Display) -> S3Error {
        S3Error::new(500, "InternalError", message.to_string())
    }

    pub fn unavailable(message: impl std::fmt::Display) -> S3Error {
        S3Error::new(503, "ServiceUnavailable", message.to_string())
    }
}

impl From<IndexError> for S3Error {
    fn from(error: IndexError) -> Self {
        match error {
            IndexError::Unavailable(_) => S3Error::unavailable(error),
            _ => S3Error::internal(error),
        }
    }
}

impl From<VolumeError> for S3Error {
    fn from(error: VolumeError) -> Self {
        S3Error::unavailable(error)
    }
}

impl From<Error> for S3Error {
    fn from(error: Error) -> Self {
        match error {
            Error::Locked => S3Error::slow_down(),
            Error::Unavailable => S3Error::unavailable(error),
            Error::Volume(error) => error.into(),
            Error::Index(error) => error.into(),
            Error::Client(status, message) => S3Error::new(status, "InvalidRequest", message),
        }
    }
}

impl From<WriteError> for S3Error {
    fn from(error: WriteError) -> Self {
        use crate::connection::BodyError;
        use crate::replication::{GateError, ReplicationError};
        match error {
            WriteError::Exists => S3Error::internal("the key exists"),
            WriteError::Protected => S3Error::protected(),
            WriteError::Index(error) => error.into(),
            WriteError::Replication(error) => match error {
                ReplicationError::BadDigest => S3Error::new(
                    400,
                    "BadDigest",
                    "The Content-MD5 you specified did not match what we received.",
                ),
                ReplicationError::Empty => S3Error::new(400, "IncompleteBody", "The request body is empty."),
                ReplicationError::Body(BodyError::Timeout) => S3Error::new(
                    400,
                    "RequestTimeout",
                    "Your socket connection to the server was not read from or written to within the timeout period.",
                ),
                ReplicationError::Body(BodyError::Malformed(what)) => S3Error::new(400, "InvalidRequest", what),
                ReplicationError::Body(BodyError::Rejected { status, code, message }) => {
                    S3Error::new(status, code, message)
                }
                ReplicationError::Body(BodyError::TooLong) => {
                    S3Error::new(400, "InvalidRequest", "the body is longer than its declared length")
                }
                ReplicationError::Body(_) => S3Error::new(
                    400,
                    "IncompleteBody",
                    "You did not provide the number of bytes specified by the Content-Length HTTP header.",
                ),
                ReplicationError::Volume(error) => error.into(),
                ReplicationError::Source(error) => error.into(),
                ReplicationError::Gate(GateError::Index(error)) => error.into(),
                ReplicationError::Gate(GateError::Gone) => S3Error::no_such_upload(),
                ReplicationError::Gate(GateError::Busy) => S3Error::slow_down(),
                ReplicationError::Gate(GateError::LockLost) => {
                    S3Error::unavailable("the write's lock on its key lapsed (the index did not answer)")
                }
            },
        }
    }
}

/// A response to write: status, header lines, body.
pub struct Reply {
    pub status: u16,
    /// Header lines, each ending in CRLF (no Content-Length: it is added).
    pub headers: String,
    pub body: Vec<u8>,
}

impl Reply {
    /// An empty answer.
    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: String::new(),
            body: Vec::new(),
        }
    }

    /// An XML document.
    pub fn xml(status: u16, body: Vec<u8>) -> Reply {
        Reply {
            status,
            headers: "Content-Type: application/xml\r\n".into(),
            body,
        }
    }

    /// Add a header line.
    pub fn header(mut self, name: &str, value: impl std::fmt::Display) -> Reply {
        let _ = write!(self.headers, "{name}: {value}\r\n");
        self
    }

    /// Append the response; a HEAD gets the headers only, with the length
    /// the body would have.
    pub fn write(&self, connection: &mut Connection, keep_alive: KeepAlive, head_only: bool) {
        write_head(
            connection,
            self.status,
            &self.headers,
            self.body.len() as u64,
            keep_alive,
        );
        if !head_only {
            connection.output.extend_from_slice(&self.body);
        }
    }
}

/// Append a status line, `headers`, the request's `x-amz-request-id`,
/// `Content-Length` and the connection header.
pub fn write_head(connection: &mut Connection, status: u16, headers: &str, length: u64, keep_alive: KeepAlive) {
    let request_id = connection.request_id;
    let output = &mut connection.output;
    write_status_line(output, status);
    output.extend_from_slice(headers.as_bytes());
    output.extend_from_slice(connection.s3_headers.as_bytes());
    // Written in place: no allocation per answer.
    let _ = std::io::Write::write_fmt(output, format_args!("x-amz-request-id: {}\r\n", RequestId(request_id)));
    if status != 304 && status != 204 {
        output.extend_from_slice(format!("Content-Length: {length}\r\n").as_bytes());
    }
    write_connection(output, keep_alive);
    output.extend_from_slice(b"\r\n");
}

/// A request's id as clients see it (`x-amz-request-id`, the error body's
/// `RequestId`): 16 upper-case hex digits, as AWS writes them.
struct RequestId(u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{:016X}", self.0)
    }
}

/// A new request id, unique in this process and unlikely to repeat across
/// restarts and masters: 24 bits of the process's start time mixed with its
/// pid in the high bits, the reactor thread in the next 8, a per-thread
/// count in the low 32 (4 billion requests a thread before it wraps).
fn next_request_id() -> u64 {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static BASE: OnceLock<u64> = OnceLock::new();
    static THREADS: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static NEXT: Cell<u64> = const { Cell::new(0) };
    }
    let base = *BASE.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        // Mixed so that two masters started in the same second differ.
        (nanos ^ u64::from(std::process::id()).rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) & 0xFF_FFFF << 40
    });
    NEXT.with(|next| {
        if next.get() == 0 {
            next.set(((THREADS.fetch_add(1, Ordering::Relaxed) & 0xFF) << 32) | 1);
        }
        let count = next.get();
        // The count stays in its thread's 32 bits.
        next.set((count & !0xFFFF_FFFF) | ((count + 1) & 0xFFFF_FFFF));
        base | count
    })
}

/// What an operation sent.
pub struct Sent {
    pub status: u16,
    /// The connection cannot serve another request (a streamed body was
    /// cut short).
    pub close: bool,
}

impl Sent {
    pub fn status(status: u16) -> Sent {
        Sent { status, close: false }
    }
}

/// Handle an S3 request whose head is `head`, its bytes at `request_start`
/// in the connection's input (the head already consumed). Returns whether
/// the connection may serve another request.
pub async fn handle(app: &App, connection: &mut Connection, head: &RequestHead, request_start: usize) -> bool {
    connection.begin_request(head);
    connection.request_id = next_request_id();
    connection.s3_headers.clear();
    let request = &connection.input[request_start..request_start + head.head_bytes];
    let parsed = match S3Request::parse(request, head) {
        Ok(mut parsed) => {
            let operation = operation::classify(head.method, &parsed);
            // Who asks, and whether they may: before anything is touched.
            match auth::check(app, request, &parsed, operation).await {
                Ok(access) => {
                    parsed.access = access;
                    // A presigned URL may sign the body's hash in its query:
                    // the body is checked against it as against the header's.
                    if let Some(hash) = parsed.access.signed_payload_hash() {
                        parsed.headers.content_sha256 = Some(checksum::hex(&hash));
                    }
                    Ok((parsed, operation))
                }
                Err(error) => Err(error),
            }
        }
        Err(error) => Err(error),
    };
    let result = match parsed {
        Ok((request, operation)) => match cors::actual_request_headers(app, head.method, &request).await {
            Ok(headers) => {
                connection.s3_headers = headers;
                dispatch(app, connection, head, &request, operation).await
            }
            Err(error) => Err(error),
        },
        Err(error) => Err(error),
    };
    let framing_lost = matches!(&result, Err(error) if error.status == 400) && connection.body_touched;
    let mut keep_alive = head.keep_alive.unless(framing_lost);
    if let Ok(sent) = &result {
        keep_alive = keep_alive.unless(sent.close);
    }
    // Whatever the answer, a body left on the wire is read and dropped or
    // the connection closes: it must never be parsed as the next request.
    let keep_alive = settle_body(connection, head, keep_alive, app.config.body_limits).await;
    let status = match &result {
        Ok(sent) => sent.status,
        Err(error) => error.status,
    };
    if let Err(error) = &result {
        let request_id = RequestId(connection.request_id).to_string();
        let body = xml::error(error.code, &error.message, "", &request_id, &error.details);
        let mut reply = Reply::xml(error.status, body);
        reply.headers.push_str(&error.headers);
        if error.status == 503 {
            // As the native API: a busy or failing-over index is worth a retry.
            reply = reply.header("Retry-After", 1);
        }
        reply.write(connection, keep_alive, head.method == Method::Head);
    }
    if app.config.verbose {
        eprintln!("S3 {:?} {status}", head.method);
    }
    keep_alive.is_open()
}

async fn dispatch(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
    operation: Operation,
) -> Result<Sent, S3Error> {
    refuse::check(request)?;
    use Operation::*;
    match operation {
        ListBuckets => bucket::list_buckets(app, connection, head, request).await,
        ServiceMethodNotAllowed => Err(S3Error::new(
            405,
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
        )),
        CreateBucket => bucket::create(app, connection, head, request).await,
        HeadBucket => bucket::head(app, connection, head, request).await,
        DeleteBucket => bucket::delete(app, connection, head, request).await,
        GetBucketLocation => bucket::fixed_answer(app, connection, head, request, xml::location()).await,
        GetBucketVersioning => bucket::fixed_answer(app, connection, head, request, xml::versioning()).await,
        ListMultipartUploads => multipart::list_uploads(app, connection, head, request).await,
        ListObjectVersions => list::list(app, connection, head, request, list::Flavour::Versions).await,
        ListObjectsV2 => list::list(app, connection, head, request, list::Flavour::V2).await,
        ListObjectsV1 => list::list(app, connection, head, request, list::Flavour::V1).await,
        DeleteObjects => object::delete_objects(app, connection, head, request).await,
        UploadPartCopy => multipart::upload_part_copy(app, connection, head, request).await,
        UploadPart => multipart::upload_part(app, connection, head, request).await,
        CopyObject => object::copy(app, connection, head, request).await,
        PutObject => object::put(app, connection, head, request).await,
        ListParts => multipart::list_parts(app, connection, head, request).await,
        GetObject | HeadObject => object::get(app, connection, head, request).await,
        AbortMultipartUpload => multipart::abort(app, connection, head, request).await,
        DeleteObject => object::delete(app, connection, head, request).await,
        CreateMultipartUpload => multipart::create(app, connection, head, request).await,
        CompleteMultipartUpload => multipart::complete(app, connection, head, request).await,
        PutBucketCors => cors::put(app, connection, head, request).await,
        GetBucketCors => cors::get(app, connection, head, request).await,
        DeleteBucketCors => cors::delete(app, connection, head, request).await,
        Preflight => cors::preflight(app, connection, head, request).await,
        PostObject => post::post(app, connection, head, request, &request.access).await,
        NotImplemented => Err(S3Error::not_implemented()),
    }
}
