//! Request handlers: one function per method of the native API.
//!
//! Each handler appends its response to the connection's output on success
//! and returns the status it sent; failures come back as `Error` and are
//! written by `respond`, the one place where errors become responses.

use std::time::{Duration, Instant};

use crate::app::App;
use crate::connection::{drain_body, BodyError, BodyReader, Connection};
use crate::error::Error;
use crate::http::{
    self, query_pairs, write_empty, write_text, write_text_head, BodyFraming, KeepAlive, Method, RequestHead,
};
use crate::listing;
use crate::meta::Meta;
use crate::placement::{entry_host, key2path, path_is_own, KEY_BYTES_MAX};
use crate::record::Record;
use crate::replication::{self, entry_path, ClientBody, GateError, ReplicationError};
use crate::store::{self, KeyGuard, Read, ReadOutcome};
use crate::volume;
use crate::write::{self, Plan, WriteError};

/// Handle the request whose head is `head` and whose bytes start at
/// `request_start` in the connection's input (the head is already consumed).
/// Returns whether the connection may serve another request.
pub async fn handle(app: &App, connection: &mut Connection, head: &RequestHead, request_start: usize) -> bool {
    connection.body_touched = false;
    // Taken now: reading a body moves the input buffer (`read_more` compacts
    // it), so the head's offsets are stale once the request is handled.
    // Allocation is deliberate and only when logging every request.
    let logged_path = app.config.verbose.then(|| {
        let path = &connection.input[request_start..][head.path.clone()];
        String::from_utf8_lossy(path).into_owned()
    });
    let result = dispatch(app, connection, head, request_start).await;
    // A 400 after some of the body was read may have lost the framing: the
    // connection cannot be trusted for another request. Before the body, a
    // refusal is answered like any other (the body drained below).
    let framing_lost = matches!(result, Err(Error::Client(400, _))) && connection.body_touched;
    let mut keep_alive = head.keep_alive.unless(framing_lost);
    // A refused request's body may still be on the wire. Unless the client
    // waits for 100-continue (and so never sends it) or the handler already
    // read part of it, drop a small one so the client reads its answer; a
    // large one ends the connection.
    if keep_alive.is_open() && head.has_body() && result.is_err() {
        let drained = !head.expect_continue
            && !connection.body_touched
            && drain_body(connection, head.body, app.config.body_limits).await;
        keep_alive = keep_alive.unless(!drained);
    }
    let status = result.as_ref().map_or_else(Error::status, |&status| status);
    // A listing refused for its size closes the connection, as the original does.
    let keep_alive = keep_alive.unless(status == 413);
    if let Err(error) = &result {
        write_error(&mut connection.output, error, keep_alive, head.method);
    }
    if let Some(path) = logged_path {
        eprintln!("{:?} {path} {status}", head.method);
    }
    keep_alive.is_open()
}

/// Append the response for a failed request of `method`: a HEAD gets the
/// head alone, whatever the error.
pub fn write_error(output: &mut Vec<u8>, error: &Error, keep_alive: KeepAlive, method: Method) {
    match error {
        // The original answers these with an empty body; clients read the status.
        Error::Client(404, _) | Error::Locked => write_empty(output, error.status(), keep_alive),
        _ if method == Method::Head => {
            write_text_head(output, error.status(), keep_alive, error.headers(), &error.to_string())
        }
        _ => write_text(output, error.status(), keep_alive, error.headers(), &error.to_string()),
    }
}

async fn dispatch(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request_start: usize,
) -> Result<u16, Error> {
    let request = &connection.input[request_start..request_start + head.head_bytes];
    let query = head.query.clone().map(|range| request[range].to_vec());
    if head.method != Method::Put && head.method != Method::Post && head.has_body() {
        return Err(Error::Client(400, "this method takes no request body"));
    }
    let mut key = std::mem::take(&mut connection.scratch);
    let decoded = decode_key(&request[head.path.clone()], &mut key);
    let result = match decoded {
        Err(error) => Err(error),
        Ok(()) => route(app, connection, head, &key, query.as_deref(), request_start).await,
    };
    connection.scratch = key;
    result
}

fn decode_key(raw: &[u8], key: &mut Vec<u8>) -> Result<(), Error> {
    if !http::percent_decode_into(raw, key) {
        return Err(Error::Client(400, "invalid percent-encoding in the path"));
    }
    Ok(())
}

fn check_key_length(key: &[u8]) -> Result<(), Error> {
    if key.len() > KEY_BYTES_MAX {
        return Err(Error::Client(
            414,
            "key too long: its base64 file name would exceed 255 bytes (keys are at most 189 bytes)",
        ));
    }
    Ok(())
}

async fn route(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    key: &[u8],
    query: Option<&[u8]>,
    request_start: usize,
) -> Result<u16, Error> {
    if let Some(query) = query {
        let operation = query_pairs(query).next().map(|(name, _)| name);
        return match (head.method, operation) {
            (Method::Get | Method::Head, Some(b"list")) => {
                listing::list(app, connection, head, key, query, false).await
            }
            (Method::Get | Method::Head, Some(b"unlinked")) => {
                listing::list(app, connection, head, key, query, true).await
            }
            _ => Err(Error::Client(403, "unsupported query")),
        };
    }
    check_key_length(key)?;
    match head.method {
        Method::Get | Method::Head => get(app, connection, head, key, request_start).await,
        Method::Put => put(app, connection, head, key).await,
        Method::Delete => delete(app, &mut connection.output, head, key).await,
        Method::Unlink => unlink(app, &mut connection.output, head, key).await,
        Method::Relink => relink(app, &mut connection.output, head, key).await,
        Method::Rebalance => rebalance(app, &mut connection.output, head, key).await,
        Method::Post => Err(Error::Client(403, "POST is only for S3 requests")),
        Method::Options => Err(Error::Client(405, "OPTIONS is only for S3 requests (CORS preflights)")),
    }
}

async fn get(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    key: &[u8],
    request_start: usize,
) -> Result<u16, Error> {
    if app.config.verify_get {
        return get_verified(app, connection, head, key, request_start).await;
    }
    let mut outcome = read(app, connection, head, key).await?;
    if outcome == ReadOutcome::Missing && committed(key).await? {
        outcome = read(app, connection, head, key).await?;
    }
    match outcome {
        ReadOutcome::Redirected => Ok(302),
        ReadOutcome::Unavailable => Err(Error::Unavailable),
        ReadOutcome::Missing => missing(app, connection, head, request_start),
    }
}

/// Longest wait of a native GET for an overwrite's commit on this master
/// (`write::wait_committed`): past it, 503 with Retry-After.
const NATIVE_COMMIT_WAIT: Duration = Duration::from_millis(crate::offload::INDEX_WAIT_MS_MAX + 1_000);

/// Whether `key`, read missing, was in an S3 overwrite's commit on this
/// master (its record says neither value is live for that moment): then
/// the commit (one piece and one index write, each bounded) is waited for
/// and the key is to be read again, rather than answered 404 while it has
/// a value. Past `NATIVE_COMMIT_WAIT`, 503.
async fn committed(key: &[u8]) -> Result<bool, Error> {
    if !write::is_committing(key) {
        return Ok(false);
    }
    if !write::wait_committed(key, Instant::now() + NATIVE_COMMIT_WAIT).await {
        return Err(Error::Index(crate::index::IndexError::Unavailable(
            "an overwrite of this key is in its commit".into(),
        )));
    }
    Ok(true)
}

/// Answer a GET of `key` from the cache or the index.
async fn read(app: &App, connection: &mut Connection, head: &RequestHead, key: &[u8]) -> Result<ReadOutcome, Error> {
    Ok(match app.store.read(key, &mut connection.output, head.keep_alive)? {
        Read::Done(outcome) => outcome,
        Read::Fetch(ticket) => {
            app.store
                .fetch(key, ticket, &mut connection.output, head.keep_alive)
                .await?
        }
    })
}

/// A key the index lacks: 404, or a redirect to `-fallback`.
fn missing(app: &App, connection: &mut Connection, head: &RequestHead, request_start: usize) -> Result<u16, Error> {
    let Some(fallback) = &app.config.fallback else {
        return Err(Error::Client(404, "not found"));
    };
    let output = &mut connection.output;
    http::write_status_line(output, 302);
    output.extend_from_slice(b"Location: http://");
    output.extend_from_slice(fallback.as_bytes());
    // The path as the client sent it: still percent-encoded, valid in a header.
    let request = &connection.input[request_start..];
    output.extend_from_slice(&request[head.path.clone()]);
    output.extend_from_slice(b"\r\nContent-Length: 0\r\n");
    http::write_connection(output, head.keep_alive);
    output.extend_from_slice(b"\r\n");
    Ok(302)
}

/// The original's GET: HEAD a replica before redirecting to it, and
/// redirect to the one that answered. Replicas are tried from a random one
/// on, so reads spread over them; those on volumes the health thread sees
/// down go last, since a stopped one can cost `-voltimeout`.
async fn get_verified(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    key: &[u8],
    request_start: usize,
) -> Result<u16, Error> {
    let mut record = app.store.get_async(key).await?.filter(Record::is_live);
    if record.is_none() && committed(key).await? {
        record = app.store.get_async(key).await?.filter(Record::is_live);
    }
    let Some(record) = record else {
        return missing(app, connection, head, request_start);
    };
    let path = key2path(key);
    let count = record.volumes.len();
    let start = store::random_below(count.max(1));
    let mut order: Vec<usize> = (0..count).map(|step| (start + step) % count).collect();
    let healthy = |entry: &str| {
        app.volumes
            .id_of(entry_host(entry))
            .is_none_or(|id| app.volumes.is_healthy(id))
    };
    order.sort_by_key(|&replica| !healthy(&record.volumes[replica]));
    for replica in order {
        let entry = &record.volumes[replica];
        let file = entry_path(entry, &path);
        if let Ok(true) = volume::exists(entry_host(entry), &file, app.config.volume_timeout).await {
            let outcome = app
                .store
                .write_redirect_to(key, &record, replica, &mut connection.output, head.keep_alive);
            return match outcome {
                ReadOutcome::Redirected => Ok(302),
                ReadOutcome::Unavailable | ReadOutcome::Missing => Err(Error::Client(404, "not found")),
            };
        }
    }
    Err(Error::Client(404, "not found"))
}

/// Why a key whose file name is not its own is refused (see
/// `placement::path_is_own`).
const SHARED_PATH: &str = "key cannot be stored: its base64 file name has a leading, trailing or doubled '/', which volumes merge into another key's file name";

async fn put(app: &App, connection: &mut Connection, head: &RequestHead, key: &[u8]) -> Result<u16, Error> {
    let declared = match head.body {
        BodyFraming::None | BodyFraming::Length(0) => return Err(Error::Client(411, "PUT needs a non-empty body")),
        BodyFraming::Length(length) => Some(length),
        BodyFraming::Chunked => None,
    };
    if !path_is_own(key) {
        return Err(Error::Client(400, SHARED_PATH));
    }
    // Writes are not the hot path: an owned key keeps the input buffer free
    // for reading the body.
    let key = key.to_vec();
    // The lock, the key's record and journal entry, and a new key's
    // `DELETED` record in one index call (PostgreSQL: one round trip).
    let entry_key = crate::journal::entry_key(&key);
    let (_guard, locked) = app
        .store
        .try_lock_reading_async(&key, &entry_key)
        .await?
        .ok_or(Error::Locked)?;
    let mut source = ClientBody {
        connection: &mut *connection,
        body: BodyReader::new(head.body, app.config.body_limits),
        continue_pending: head.expect_continue,
    };
    let plan = Plan {
        overwrite: false,
        declared,
        with_md5: app.config.md5sum,
        expected_md5: None,
        allow_empty: false,
        meta: Meta::default(),
        changes: &[],
        locked,
    };
    match write::store_value(app, &key, &mut source, plan).await {
        Ok(_) => {
            write_empty(&mut connection.output, 201, head.keep_alive);
            Ok(201)
        }
        Err(WriteError::Exists | WriteError::Protected) => {
            Err(Error::Client(403, "key exists; DELETE it first (no overwrite)"))
        }
        Err(WriteError::Index(error)) => Err(Error::Index(error)),
        Err(WriteError::Replication(error)) => Err(match error {
            ReplicationError::Empty => Error::Client(411, "PUT needs a non-empty body"),
            ReplicationError::Body(BodyError::TooLong) => Error::Client(400, "body longer than its Content-Length"),
            ReplicationError::Body(BodyError::Malformed(what)) => Error::Client(400, what),
            ReplicationError::Body(BodyError::Timeout) => Error::Client(408, "request body too slow"),
            ReplicationError::Body(BodyError::ContinueFailed) => Error::Client(400, "client went away"),
            ReplicationError::Body(_) => Error::Client(400, "request body cut short"),
            ReplicationError::BadDigest => Error::Client(400, "the value's md5 is not the one sent"),
            ReplicationError::Volume(error) | ReplicationError::Source(error) => Error::Volume(error),
            ReplicationError::Gate(GateError::Index(error)) => Error::Index(error),
            ReplicationError::Gate(GateError::LockLost) => Error::Index(crate::index::IndexError::Unavailable(
                "the write's lock on its key lapsed (the index out of reach); its value was not stored".into(),
            )),
            ReplicationError::Gate(_) => Error::Unavailable,
        }),
    }
}

async fn delete(app: &App, output: &mut Vec<u8>, head: &RequestHead, key: &[u8]) -> Result<u16, Error> {
    let _guard = app.store.try_lock_async(key).await?.ok_or(Error::Locked)?;
    let Some(record) = crate::journal::record_under_lock(app, key).await? else {
        return Err(Error::Client(404, "not found"));
    };
    if app.config.protect && record.is_live() {
        return Err(Error::Client(403, "-protect is on: UNLINK the key before DELETE"));
    }
    write::delete_value(app, key, &record).await?;
    write_empty(output, 204, head.keep_alive);
    Ok(204)
}

/// Take `key`'s write lock and read its record, which must be live (`live`)
/// or soft-deleted (`!live`); otherwise 404. The guard holds the lock.
async fn lock_record<'a>(app: &'a App, key: &[u8], live: bool) -> Result<(KeyGuard<'a>, Record), Error> {
    let guard = app.store.try_lock_async(key).await?.ok_or(Error::Locked)?;
    match crate::journal::record_under_lock(app, key).await? {
        Some(record) if record.is_live() == live => Ok((guard, record)),
        _ => Err(Error::Client(404, "not found")),
    }
}

async fn unlink(app: &App, output: &mut Vec<u8>, head: &RequestHead, key: &[u8]) -> Result<u16, Error> {
    let (_guard, record) = lock_record(app, key, true).await?;
    app.store.put_async(key, &record.with_deleted(true)).await?;
    write_empty(output, 204, head.keep_alive);
    Ok(204)
}

async fn relink(app: &App, output: &mut Vec<u8>, head: &RequestHead, key: &[u8]) -> Result<u16, Error> {
    let (_guard, record) = lock_record(app, key, false).await?;
    // A deleted record may be a PUT that never finished, or what a failed PUT
    // over an unlinked value left (copies of two values): relink only when
    // every copy is there and all hold the same bytes, the recorded ones if
    // the record has an md5. This reads every copy through: RELINK is rare,
    // and a live key whose replicas disagree would serve either value.
    let path = key2path(key);
    let agreed = replication::agreed_md5(&record, &path, app.config.volume_timeout).await?;
    let Some(md5) = agreed else {
        return Err(Error::Client(
            404,
            "the value is missing on a volume or its copies differ; cannot relink",
        ));
    };
    let hash = record.hash.or(app.config.md5sum.then_some(md5));
    app.store
        .put_async(key, &Record::new(record.volumes.clone(), false, hash))
        .await?;
    write_empty(output, 204, head.keep_alive);
    Ok(204)
}

async fn rebalance(app: &App, output: &mut Vec<u8>, head: &RequestHead, key: &[u8]) -> Result<u16, Error> {
    let (_guard, record) = lock_record(app, key, true).await?;
    let timeout = app.config.volume_timeout;
    match crate::rebalance::rebalance_key(&app.store, key, &record, timeout).await {
        Ok(_) => {
            write_empty(output, 204, head.keep_alive);
            Ok(204)
        }
        Err(crate::rebalance::RebalanceError::SharedPath) => Err(Error::Client(400, SHARED_PATH)),
        Err(error) => {
            eprintln!("REBALANCE {:?}: {error}", String::from_utf8_lossy(key));
            Err(Error::Client(400, "rebalance failed"))
        }
    }
}
