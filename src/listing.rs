//! Listings: `GET /prefix?list` and `?unlinked`, the original's JSON of the
//! live (or soft-deleted) keys under a path, paged with `start`, `limit` and
//! `next`.

use crate::app::App;
use crate::connection::Connection;
use crate::error::Error;
use crate::http::{self, query_value, Method, RequestHead};
use crate::index::key_after;
use crate::record::Record;

/// Most keys one listing returns without `limit` (the original's cap).
pub const LIST_KEYS_MAX: u64 = 1_000_000;
/// Keys fetched from the index per step while writing a listing.
const LIST_BATCH_KEYS: usize = 1024;

/// `GET /prefix?list` and `?unlinked`: live (or soft-deleted) keys under the
/// path, as the original's JSON, streamed in batches with a Content-Length
/// computed in a first pass over the same snapshot.
pub async fn list(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    prefix: &[u8],
    query: &[u8],
    unlinked: bool,
) -> Result<u16, Error> {
    let mut start = Vec::new();
    if let Some(raw) = query_value(query, b"start") {
        if !http::percent_decode_into(raw, &mut start) {
            return Err(Error::Client(400, "invalid percent-encoding in the start key"));
        }
    }
    let limit = match query_value(query, b"limit") {
        None => 0,
        Some(raw) => http::parse_decimal(raw).ok_or(Error::Client(400, "limit must be a whole number"))?,
    };
    let cap = if limit == 0 {
        LIST_KEYS_MAX
    } else {
        limit.min(LIST_KEYS_MAX)
    };
    let wanted = |record: &Result<Record, _>| record.as_ref().is_ok_and(|record: &Record| record.deleted == unlinked);
    let view = app.store.index().view();

    // Pass 1: how many keys, which key starts the next page, how many bytes.
    let (mut count, mut body_bytes, mut next) = (0u64, 0usize, Vec::new());
    view.scan(prefix, &start, |key, record| {
        if !wanted(&record) {
            return true;
        }
        if count == cap {
            next = key.to_vec();
            return false;
        }
        count += 1;
        body_bytes += json_string_len(key);
        true
    })?;
    if limit == 0 && !next.is_empty() {
        return Err(Error::Client(413, "more than 1,000,000 keys: page with &limit=N"));
    }
    let opening = format!("{{\"next\":{},\"keys\":[", json_string(&next));
    // Opening, keys, commas between them, closing `]}`.
    body_bytes += opening.len() + usize::try_from(count.saturating_sub(1)).unwrap_or(usize::MAX) + 2;

    let output = &mut connection.output;
    http::write_status_line(output, 200);
    output.extend_from_slice(format!("Content-Type: application/json\r\nContent-Length: {body_bytes}\r\n").as_bytes());
    http::write_connection(output, head.keep_alive);
    output.extend_from_slice(b"\r\n");
    if head.method == Method::Head {
        return Ok(200);
    }
    output.extend_from_slice(opening.as_bytes());

    // Pass 2: the keys, a batch at a time, flushing as the output grows.
    let mut cursor = if start.as_slice() > prefix {
        start
    } else {
        prefix.to_vec()
    };
    let mut written = 0u64;
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(LIST_BATCH_KEYS);
    while written < count {
        batch.clear();
        view.scan(prefix, &cursor, |key, record| {
            if wanted(&record) {
                batch.push(key.to_vec());
            }
            batch.len() < LIST_BATCH_KEYS && written + (batch.len() as u64) < count
        })?;
        let Some(last) = batch.last() else { break };
        cursor = key_after(last);
        for key in &batch {
            if written > 0 {
                connection.output.push(b',');
            }
            write_json_string(&mut connection.output, key);
            written += 1;
        }
        if connection.output.len() >= crate::connection::OUTPUT_FLUSH_BYTES {
            connection
                .flush()
                .await
                .map_err(|_| Error::Client(400, "client went away"))?;
        }
    }
    debug_assert_eq!(written, count);
    connection.output.extend_from_slice(b"]}");
    Ok(200)
}

fn json_escape(byte: u8) -> Option<&'static [u8]> {
    // Go's encoding/json also escapes <, > and & (HTML safety); so do we.
    Some(match byte {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        b'<' => b"\\u003c",
        b'>' => b"\\u003e",
        b'&' => b"\\u0026",
        _ => return None,
    })
}

/// Append `key` as a JSON string (invalid UTF-8 becomes U+FFFD, as in Go).
fn write_json_string(output: &mut Vec<u8>, key: &[u8]) {
    let text = String::from_utf8_lossy(key);
    output.push(b'"');
    for &byte in text.as_bytes() {
        match json_escape(byte) {
            Some(escaped) => output.extend_from_slice(escaped),
            None if byte < 0x20 => output.extend_from_slice(format!("\\u{byte:04x}").as_bytes()),
            None => output.push(byte),
        }
    }
    output.push(b'"');
}

/// The length `write_json_string` will write, without allocating for valid UTF-8.
fn json_string_len(key: &[u8]) -> usize {
    let text = String::from_utf8_lossy(key);
    let escaped: usize = text
        .as_bytes()
        .iter()
        .map(|&byte| match json_escape(byte) {
            Some(escaped) => escaped.len(),
            None if byte < 0x20 => 6,
            None => 1,
        })
        .sum();
    escaped + 2
}

fn json_string(key: &[u8]) -> String {
    let mut out = Vec::new();
    write_json_string(&mut out, key);
    String::from_utf8(out).expect("escaped JSON is UTF-8")
}
