//! Request handlers: one function per method of the native API.
//!
//! Each handler appends its response to the connection's output on success
//! and returns the status it sent; failures come back as `Error` and are
//! written by `respond`, the one place where errors become responses.

use crate::app::App;
use crate::connection::{drain_body, BodyError, BodyReader, Connection};
use crate::error::Error;
use crate::http::{self, query_pairs, write_empty, write_text, BodyFraming, Method, RequestHead};
use crate::listing;
use crate::locks::KeyGuard;
use crate::placement::{entry_host, key2path, KEY_BYTES_MAX};
use crate::record::Record;
use crate::replication::{self, entry_path, ReplicationError};
use crate::store::ReadOutcome;
use crate::volume;

/// Handle the request whose head is `head` and whose bytes start at
/// `request_start` in the connection's input (the head is already consumed).
/// Returns whether the connection may serve another request.
pub async fn handle(app: &App, connection: &mut Connection, head: &RequestHead, request_start: usize) -> bool {
    connection.body_touched = false;
    let result = dispatch(app, connection, head, request_start).await;
    let mut keep_alive = head.keep_alive && !matches!(result, Err(Error::Client(400, _)));
    // A refused request's body may still be on the wire. Unless the client
    // waits for 100-continue (and so never sends it) or the handler already
    // read part of it, drop a small one so the client reads its answer; a
    // large one ends the connection.
    if keep_alive && head.has_body() && result.is_err() {
        keep_alive = !head.expect_continue && !connection.body_touched && drain_body(connection, head.body).await;
    }
    let status = result.as_ref().map_or_else(Error::status, |&status| status);
    // A listing refused for its size closes the connection, as the original does.
    let keep_alive = keep_alive && status != 413;
    if let Err(error) = &result {
        write_error(&mut connection.output, error, keep_alive);
    }
    if app.config.verbose {
        let path = &connection.input[request_start..][head.path.clone()];
        eprintln!("{:?} {} {status}", head.method, String::from_utf8_lossy(path));
    }
    keep_alive
}

/// Append the response for a failed request.
pub fn write_error(output: &mut Vec<u8>, error: &Error, keep_alive: bool) {
    match error {
        // The original answers these with an empty body; clients read the status.
        Error::Client(404, _) | Error::Locked => write_empty(output, error.status(), keep_alive),
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
        Method::Unlink => unlink(app, &mut connection.output, head, key),
        Method::Relink => relink(app, &mut connection.output, head, key).await,
        Method::Rebalance => rebalance(app, &mut connection.output, head, key).await,
        Method::Post => Err(Error::Client(403, "POST is only for S3 requests")),
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
    match app.store.read(key, &mut connection.output, head.keep_alive)? {
        ReadOutcome::Redirected => Ok(302),
        ReadOutcome::Unavailable => Err(Error::Unavailable),
        ReadOutcome::Missing => missing(app, connection, head, request_start),
    }
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

/// The original's GET: HEAD a replica before redirecting to it.
async fn get_verified(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    key: &[u8],
    request_start: usize,
) -> Result<u16, Error> {
    let Some(record) = app.store.get(key)?.filter(Record::is_live) else {
        return missing(app, connection, head, request_start);
    };
    let path = key2path(key);
    for entry in &record.volumes {
        let file = entry_path(entry, &path);
        if let Ok(true) = volume::exists(entry_host(entry), &file, app.config.volume_timeout).await {
            // The store writes the redirect; a healthy replica is
            // what the check just proved, so let it pick among them.
            return match app.store.read(key, &mut connection.output, head.keep_alive)? {
                ReadOutcome::Redirected => Ok(302),
                ReadOutcome::Unavailable => Err(Error::Unavailable),
                ReadOutcome::Missing => Err(Error::Client(404, "not found")),
            };
        }
    }
    Err(Error::Client(404, "not found"))
}

async fn put(app: &App, connection: &mut Connection, head: &RequestHead, key: &[u8]) -> Result<u16, Error> {
    let declared = match head.body {
        BodyFraming::None | BodyFraming::Length(0) => return Err(Error::Client(411, "PUT needs a non-empty body")),
        BodyFraming::Length(length) => Some(length),
        BodyFraming::Chunked => None,
    };
    // Writes are not the hot path: an owned key keeps the input buffer free
    // for reading the body.
    let key = key.to_vec();
    let _guard = app.store.try_lock(&key).ok_or(Error::Locked)?;
    if app.store.get(&key)?.is_some_and(|record| record.is_live()) {
        return Err(Error::Client(403, "key exists; DELETE it first (no overwrite)"));
    }
    let entries = app.store.placement().place(&key);
    // The record goes in as deleted before any volume is touched: a crash from
    // here on leaves at worst an unlinked key, never a live key without bytes.
    app.store.put(&key, &Record::new(entries.clone(), true, None))?;
    if head.expect_continue {
        connection
            .send_continue()
            .await
            .map_err(|_| Error::Client(400, "client went away"))?;
    }
    let path = key2path(&key);
    let mut body = BodyReader::new(head.body);
    let written = replication::replicate(
        connection,
        &mut body,
        declared,
        &entries,
        &path,
        app.config.md5sum,
        app.config.volume_timeout,
    )
    .await;
    match written {
        Ok(written) => {
            app.store.put(&key, &Record::new(entries, false, written.md5))?;
            write_empty(&mut connection.output, 201, head.keep_alive);
            Ok(201)
        }
        Err(failure) => {
            undo_put(app, &key, &entries, &path).await;
            Err(match failure {
                ReplicationError::Empty => Error::Client(411, "PUT needs a non-empty body"),
                ReplicationError::Body(BodyError::TooLong) => Error::Client(400, "body longer than its Content-Length"),
                ReplicationError::Body(BodyError::Malformed(what)) => Error::Client(400, what),
                ReplicationError::Body(_) => Error::Client(400, "request body cut short or timed out"),
                ReplicationError::Volume(error) => Error::Volume(error),
            })
        }
    }
}

/// After a failed PUT: remove what reached the replicas, then the record. If
/// a volume cannot be cleaned, the record stays (deleted) so DELETE can
/// finish the job later.
async fn undo_put(app: &App, key: &[u8], entries: &[String], path: &str) {
    match replication::delete_all(entries, path, app.config.volume_timeout).await {
        Ok(()) => {
            if let Err(error) = app.store.remove(key) {
                eprintln!(
                    "failed PUT of {:?}: cannot drop its record: {error}",
                    String::from_utf8_lossy(key)
                );
            }
        }
        Err(error) => eprintln!(
            "failed PUT of {:?}: cleanup left copies: {error}",
            String::from_utf8_lossy(key)
        ),
    }
}

async fn delete(app: &App, output: &mut Vec<u8>, head: &RequestHead, key: &[u8]) -> Result<u16, Error> {
    let _guard = app.store.try_lock(key).ok_or(Error::Locked)?;
    let Some(record) = app.store.get(key)? else {
        return Err(Error::Client(404, "not found"));
    };
    if app.config.protect && record.is_live() {
        return Err(Error::Client(403, "-protect is on: UNLINK the key before DELETE"));
    }
    if record.is_live() {
        app.store.put(key, &record.with_deleted(true))?;
    }
    replication::delete_all(&record.volumes, &key2path(key), app.config.volume_timeout).await?;
    app.store.remove(key)?;
    write_empty(output, 204, head.keep_alive);
    Ok(204)
}

/// Take `key`'s write lock and read its record, which must be live (`live`)
/// or soft-deleted (`!live`); otherwise 404. The guard holds the lock.
fn lock_record<'a>(app: &'a App, key: &[u8], live: bool) -> Result<(KeyGuard<'a>, Record), Error> {
    let guard = app.store.try_lock(key).ok_or(Error::Locked)?;
    match app.store.get(key)? {
        Some(record) if record.is_live() == live => Ok((guard, record)),
        _ => Err(Error::Client(404, "not found")),
    }
}

fn unlink(app: &App, output: &mut Vec<u8>, head: &RequestHead, key: &[u8]) -> Result<u16, Error> {
    let (_guard, record) = lock_record(app, key, true)?;
    app.store.put(key, &record.with_deleted(true))?;
    write_empty(output, 204, head.keep_alive);
    Ok(204)
}

async fn relink(app: &App, output: &mut Vec<u8>, head: &RequestHead, key: &[u8]) -> Result<u16, Error> {
    let (_guard, record) = lock_record(app, key, false)?;
    // A deleted record may be a PUT that never finished: relink only values
    // whose every copy is really there.
    let path = key2path(key);
    for entry in &record.volumes {
        if !volume::exists(entry_host(entry), &entry_path(entry, &path), app.config.volume_timeout).await? {
            return Err(Error::Client(404, "the value is missing on a volume; cannot relink"));
        }
    }
    app.store.put(key, &record.with_deleted(false))?;
    write_empty(output, 204, head.keep_alive);
    Ok(204)
}

async fn rebalance(app: &App, output: &mut Vec<u8>, head: &RequestHead, key: &[u8]) -> Result<u16, Error> {
    let (_guard, record) = lock_record(app, key, true)?;
    let timeout = app.config.volume_timeout;
    match crate::rebalance::rebalance_key(&app.store, key, &record, timeout).await {
        Ok(_) => {
            write_empty(output, 204, head.keep_alive);
            Ok(204)
        }
        Err(error) => {
            eprintln!("REBALANCE {:?}: {error}", String::from_utf8_lossy(key));
            Err(Error::Client(400, "rebalance failed"))
        }
    }
}
