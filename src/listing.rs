//! Listings: `GET /prefix?list` and `?unlinked`, the original's JSON of the
//! live (or soft-deleted) keys under a path, paged with `start`, `limit` and
//! `next`.
//!
//! A listing reads one snapshot of the index (`Source`) twice: a first pass
//! counts the page (the `Content-Length` and the 413 rule need it before the
//! head goes out, and `next` opens the body), a second writes it. On
//! RocksDB the snapshot is the engine's and is read on the reactor; on
//! PostgreSQL it is a REPEATABLE READ transaction of its own, read on the
//! read pool (`offload`), so a listing never waits on the database on its
//! reactor. Both passes see the same records, so the body is exactly as
//! long as the head says; should it not be (or should the body fail half
//! way: the index lost, the client not reading), the connection is cut
//! (`abandon`) rather than followed by another response. Each pass visits
//! records in batches of at most `VISIT_BATCH_RECORDS` and yields to the
//! reactor between batches, so a listing that skips millions of records
//! holds its reactor for a few milliseconds at a time, never for the whole
//! scan. A page visits at most `LIST_VISITS_MAX` records, wanted or not;
//! one that reaches the bound answers the keys found so far with `next` set
//! to the first record not visited, and paging goes on from there.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::connection::{Connection, OUTPUT_FLUSH_BYTES};
use crate::error::Error;
use crate::http::{self, query_value, Method, RequestHead};
use crate::index::pg::Snapshot;
use crate::index::{prefix_end, Index, IndexError, View};
use crate::record::{Record, RecordError};

/// Most keys one listing returns without `limit` (the original's cap).
pub const LIST_KEYS_MAX: u64 = 1_000_000;
/// Most records one page visits, wanted or not (1M take about 0.6 s of one
/// core per pass, measured on a busy 2-core machine). More than
/// `LIST_KEYS_MAX`, so a listing whose every record is wanted still finds the
/// key past the cap and answers 413 as the original does.
pub const LIST_VISITS_MAX: u64 = 2 * LIST_KEYS_MAX;
/// Records visited between yields to the reactor: 2-3 ms of reading and
/// decoding, the longest a listing keeps the other connections of its
/// reactor waiting.
const VISIT_BATCH_RECORDS: usize = 4096;
/// The pause between batches: the timer's resolution, so the reactor parks
/// (reaping I/O completions) between two batches of a listing.
const YIELD_PAUSE: Duration = Duration::from_millis(1);

const _: () = assert!(LIST_VISITS_MAX > LIST_KEYS_MAX);

/// `GET /prefix?list` and `?unlinked`: live (or soft-deleted) keys under the
/// path, as the original's JSON, with a Content-Length computed in a first
/// pass over the same snapshot.
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
    let mut source = Source::open(app.store.index_shared()).await?;
    let from = if start.as_slice() > prefix {
        start
    } else {
        prefix.to_vec()
    };
    let page = count(&mut source, prefix, &from, unlinked, cap).await?;
    if limit == 0 && page.more {
        return Err(Error::Client(413, "more than 1,000,000 keys: page with &limit=N"));
    }
    let opening = format!("{{\"next\":{},\"keys\":[", json_string(&page.next));
    // Opening, keys, commas between them, closing `]}`.
    let body_bytes =
        opening.len() + page.key_bytes + usize::try_from(page.keys.saturating_sub(1)).unwrap_or(usize::MAX) + 2;

    let output = &mut connection.output;
    http::write_status_line(output, 200);
    output.extend_from_slice(format!("Content-Type: application/json\r\nContent-Length: {body_bytes}\r\n").as_bytes());
    http::write_connection(output, head.keep_alive);
    output.extend_from_slice(b"\r\n");
    if head.method == Method::Head {
        source.close().await;
        return Ok(200);
    }
    output.extend_from_slice(opening.as_bytes());
    let written = match write_keys(connection, &mut source, prefix, from, unlinked, &page).await {
        Ok(written) => written,
        Err(error) => return Err(abandon(connection, error).await),
    };
    source.close().await;
    connection.output.extend_from_slice(b"]}");
    if written.keys != page.keys || opening.len() + written.bytes + 2 != body_bytes {
        // Never with one snapshot; were it to happen, the head's length
        // would be a lie, and the next response would be read as body.
        let disagree = Error::Index(IndexError::Io("a listing's two passes disagree".into()));
        return Err(abandon(connection, disagree).await);
    }
    Ok(200)
}

/// End a listing whose head went out but whose body cannot be completed:
/// send what is queued (earlier pipelined responses, the body so far) if
/// the client takes it, then close the write side and drop any pipelined
/// requests, so the short body ends with the connection and nothing is
/// spliced after it. The error response the caller queues next cannot be
/// sent: the connection's next write fails and it closes.
async fn abandon(connection: &mut Connection, error: Error) -> Error {
    let _ = connection.flush().await;
    connection.output.clear();
    let _ = connection.shutdown_write().await;
    connection.start = connection.input.len();
    error
}

/// One snapshot of the records a listing reads.
enum Source<'a> {
    /// RocksDB: the engine's snapshot, read on the reactor (a batch takes
    /// milliseconds and no I/O wait).
    Local(View<'a>),
    /// PostgreSQL: a transaction of its own, read on the read pool; None
    /// while a batch is out being read.
    Shared(Arc<Index>, Option<Box<Snapshot>>),
}

impl<'a> Source<'a> {
    async fn open(index: &'a Arc<Index>) -> Result<Source<'a>, Error> {
        if index.postgres().is_none() {
            return Ok(Source::Local(index.view()));
        }
        let shared = index.clone();
        let snapshot = crate::offload::read(move || postgres(&shared).snapshot())
            .await
            .unwrap_or_else(|| Err(crate::index::not_answered()))?;
        Ok(Source::Shared(index.clone(), Some(Box::new(snapshot))))
    }

    /// `View::scan_bounded` over the snapshot: visit at most `visits_max`
    /// records under `prefix` from `start` until `visit` declines one;
    /// the key of the first record not visited, None when none is left.
    async fn scan_bounded(
        &mut self,
        prefix: &[u8],
        start: &[u8],
        visits_max: usize,
        mut visit: impl FnMut(&[u8], Result<Record, RecordError>) -> bool,
    ) -> Result<Option<Vec<u8>>, IndexError> {
        let (index, slot) = match self {
            Source::Local(view) => return view.scan_bounded(prefix, start, visits_max, visit),
            Source::Shared(index, slot) => (index, slot),
        };
        let Some(mut snapshot) = slot.take() else {
            return Err(IndexError::Unavailable("a listing's snapshot was lost".into()));
        };
        let shared = index.clone();
        let from = if start > prefix { start } else { prefix }.to_vec();
        let end = prefix_end(prefix);
        // One row past the visits allowed, to tell where the scan resumes.
        let rows_max = visits_max.saturating_add(1);
        let read = crate::offload::read(move || {
            let rows = postgres(&shared).snapshot_scan(&mut snapshot, &from, end.as_deref(), rows_max);
            (snapshot, rows)
        })
        .await;
        // Past the bound the snapshot stays with the call (dropped there).
        let Some((snapshot, rows)) = read else {
            return Err(crate::index::not_answered());
        };
        *slot = Some(snapshot);
        let rows = rows?;
        for (visits, (key, value)) in rows.iter().enumerate() {
            if visits == visits_max || !visit(key, Record::decode(value)) {
                return Ok(Some(key.clone()));
            }
        }
        Ok(None)
    }

    /// End the snapshot (PostgreSQL: its transaction, off the reactor).
    async fn close(self) {
        if let Source::Shared(index, Some(snapshot)) = self {
            let _ = crate::offload::read(move || postgres(&index).end_snapshot(*snapshot)).await;
        }
    }
}

fn postgres(index: &Index) -> &crate::index::pg::Postgres {
    index.postgres().expect("a shared source is PostgreSQL's")
}

/// What the first pass found.
struct Page {
    keys: u64,
    /// The keys' bytes as JSON strings.
    key_bytes: usize,
    /// Where the next page starts: the first wanted key past the cap, or
    /// the first record not visited; empty at the end.
    next: Vec<u8>,
    /// More wanted keys than the cap follow.
    more: bool,
}

/// The first pass: up to `cap` wanted keys from `from`, and where the next
/// page starts.
async fn count(source: &mut Source<'_>, prefix: &[u8], from: &[u8], unlinked: bool, cap: u64) -> Result<Page, Error> {
    let mut page = Page {
        keys: 0,
        key_bytes: 0,
        next: Vec::new(),
        more: false,
    };
    let mut walk = Walk::new(from.to_vec());
    loop {
        let step = walk
            .step(source, prefix, unlinked, |key, wanted| {
                if !wanted {
                    return true;
                }
                if page.keys == cap {
                    return false;
                }
                page.keys += 1;
                page.key_bytes += json_string_len(key);
                true
            })
            .await?;
        match step {
            Step::Batch => yield_now().await,
            Step::End => return Ok(page),
            Step::Declined => {
                page.more = true;
                page.next = walk.cursor;
                return Ok(page);
            }
            Step::Bound => {
                page.next = walk.cursor;
                return Ok(page);
            }
        }
    }
}

/// What the second pass wrote.
struct Written {
    keys: u64,
    /// The keys as JSON strings and the commas between them.
    bytes: usize,
}

/// The second pass: the first `page.keys` wanted keys from `from`, as JSON
/// strings separated by commas, flushed as the output grows.
async fn write_keys(
    connection: &mut Connection,
    source: &mut Source<'_>,
    prefix: &[u8],
    from: Vec<u8>,
    unlinked: bool,
    page: &Page,
) -> Result<Written, Error> {
    let keys = page.keys;
    let mut written = Written { keys: 0, bytes: 0 };
    let mut walk = Walk::new(from);
    while written.keys < keys {
        let output = &mut connection.output;
        let step = walk
            .step(source, prefix, unlinked, |key, wanted| {
                if !wanted {
                    return true;
                }
                // Pause at a full output; the key is visited again after the flush.
                if written.keys == keys || output.len() >= OUTPUT_FLUSH_BYTES {
                    return false;
                }
                let before = output.len();
                if written.keys > 0 {
                    output.push(b',');
                }
                write_json_string(output, key);
                written.bytes += output.len() - before;
                written.keys += 1;
                true
            })
            .await?;
        match step {
            Step::End | Step::Bound => break,
            Step::Batch | Step::Declined if connection.output.len() >= OUTPUT_FLUSH_BYTES => {
                connection
                    .flush()
                    .await
                    .map_err(|_| Error::Client(400, "the client did not read its listing"))?
            }
            Step::Batch | Step::Declined => yield_now().await,
        }
    }
    Ok(written)
}

/// How one batch of a walk ended.
enum Step {
    /// `VISIT_BATCH_RECORDS` visited; the cursor is the next record.
    Batch,
    /// The visitor declined the record at the cursor (not counted).
    Declined,
    /// `LIST_VISITS_MAX` visited; the cursor is the first record not visited.
    Bound,
    /// No record left under the prefix.
    End,
}

/// A scan of a snapshot in batches, bounded in records visited.
struct Walk {
    /// Where the next batch starts.
    cursor: Vec<u8>,
    visits: u64,
}

impl Walk {
    fn new(from: Vec<u8>) -> Walk {
        Walk {
            cursor: from,
            visits: 0,
        }
    }

    /// Visit the next batch of records, telling `visit` each key and whether
    /// its record is one the listing wants (a record that does not decode
    /// is not), until it returns false.
    async fn step(
        &mut self,
        source: &mut Source<'_>,
        prefix: &[u8],
        unlinked: bool,
        mut visit: impl FnMut(&[u8], bool) -> bool,
    ) -> Result<Step, Error> {
        let left = LIST_VISITS_MAX - self.visits;
        let batch = left.min(VISIT_BATCH_RECORDS as u64) as usize;
        let mut visited = 0u64;
        let mut declined = false;
        let stopped_at = source
            .scan_bounded(prefix, &self.cursor, batch, |key, record| {
                let wanted = record.is_ok_and(|record| record.deleted == unlinked);
                declined = !visit(key, wanted);
                visited += u64::from(!declined);
                !declined
            })
            .await?;
        self.visits += visited;
        let Some(key) = stopped_at else {
            return Ok(Step::End);
        };
        self.cursor = key;
        Ok(if declined {
            Step::Declined
        } else if self.visits == LIST_VISITS_MAX {
            Step::Bound
        } else {
            Step::Batch
        })
    }
}

/// Let the reactor serve its other connections before going on. Waking
/// itself would not do: monoio runs a self-woken task again at once, and
/// with io_uring's DEFER_TASKRUN completions are only reaped when the
/// reactor parks, which it does only when no task is runnable. A short
/// sleep takes the listing off the run queue until the reactor has parked.
async fn yield_now() {
    monoio::time::sleep(YIELD_PAUSE).await;
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
