//! ListObjectsV2, ListObjects (V1) and ListObjectVersions (current objects
//! only) over one index snapshot.
//!
//! Object `k` of bucket `b` is the native key `/b/k`, so a listing is an
//! ordered scan of the index under `/b/<prefix>`. With a delimiter, the
//! first key of each common prefix reports the prefix and the scan seeks
//! past every key under it (a directory of a million keys costs one seek,
//! not a million visits). Soft-deleted records are skipped; at most
//! `LIST_VISITS_MAX` records are visited per page, after which the page
//! ends truncated, with a token to go on from (V1 and versions: a marker,
//! the last key visited, so a run of soft-deleted keys longer than a
//! page's budget is crossed page by page).
//!
//! A key written by a master that kept no metadata (the original) is listed
//! with what a replica's HEAD says, as HeadObject reports it, and the probed
//! size and mtime are stored so the key is probed once. A page probes at
//! most `LIST_PROBES_MAX` keys, `LIST_PROBES_CONCURRENT` at a time; past
//! that it ends truncated before the next key that needs one.
//!
//! The scan and its metadata reads run through `Store::read_index`: on
//! PostgreSQL, where each batch and each key's metadata is a round trip,
//! on the read pool and bounded (503 past the bound), never on the
//! reactor; on RocksDB in place.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::stream::{self, StreamExt};

use crate::app::App;
use crate::connection::Connection;
use crate::http::{Method, RequestHead};
use crate::index::{key_after, Change, View};
use crate::meta::Meta;
use crate::placement::hex_lower;
use crate::record::Record;

use super::request::{native_key, S3Request};
use super::{bucket, object, xml, Reply, S3Error, Sent};

/// Most keys a page holds (S3's limit too).
pub const PAGE_KEYS_MAX: u64 = 1000;
/// Records visited for one page at most: soft-deleted ones are skipped,
/// and a page must not scan without end.
pub const LIST_VISITS_MAX: usize = 100_000;
/// Keys without metadata whose replica one page asks for their size at
/// most: a page of them costs this many volume HEADs (16 rounds), not a
/// thousand.
pub const LIST_PROBES_MAX: usize = 256;
/// Volume HEADs one page has in flight at once.
const LIST_PROBES_CONCURRENT: usize = 16;

/// Which listing a request asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    V1,
    V2,
    Versions,
}

/// One page of a listing.
#[derive(Default)]
struct Page {
    contents: Vec<xml::ObjectEntry>,
    common_prefixes: Vec<Vec<u8>>,
    /// Where the next page starts (a native key, inclusive), when truncated.
    resume: Option<Vec<u8>>,
    /// The S3 key (or rolled-up prefix) visited last before `resume`: V1's
    /// and versions' next marker, which must move past the soft-deleted
    /// keys a page skipped.
    last_visited: Option<Vec<u8>>,
    /// Entries of `contents` (by position) without metadata, with their
    /// records: their size and mtime are asked of a replica.
    unprobed: Vec<(usize, Vec<u8>, Record)>,
}

/// What to list (owned: the scan may run on the read pool).
struct Query {
    /// `/bucket/`.
    bucket_prefix: Vec<u8>,
    /// The S3 prefix.
    prefix: Vec<u8>,
    delimiter: Option<Vec<u8>>,
    /// Items before and at this S3 key are not listed (marker, start-after).
    after: Option<Vec<u8>>,
    /// The native key to scan from.
    start: Vec<u8>,
    keys_max: u64,
}

pub async fn list(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
    flavour: Flavour,
) -> Result<Sent, S3Error> {
    bucket::check_exists(app, &request.bucket).await?;
    let prefix = request.param("prefix").unwrap_or(b"");
    let delimiter = request.param("delimiter").filter(|delimiter| !delimiter.is_empty());
    let keys_max = request.param_number("max-keys", PAGE_KEYS_MAX)?.min(PAGE_KEYS_MAX);
    let encoding_url = request.param("encoding-type") == Some(b"url");
    let fetch_owner = request.param("fetch-owner") == Some(b"true");
    let token = request
        .param_text("continuation-token")
        .filter(|_| flavour == Flavour::V2);
    let token_key = match token {
        Some(token) => Some(
            URL_SAFE_NO_PAD
                .decode(token)
                .map_err(|_| S3Error::invalid_argument("The continuation token provided is incorrect"))?,
        ),
        None => None,
    };
    let after = match flavour {
        Flavour::V1 => request.param("marker"),
        Flavour::V2 => request.param("start-after"),
        Flavour::Versions => request.param("key-marker"),
    }
    .filter(|after| !after.is_empty());
    let bucket_prefix = native_key(&request.bucket, b"");
    let start = match (&token_key, after) {
        (Some(token_key), _) => token_key.clone(),
        (None, Some(after)) => key_after(&native_key(&request.bucket, after)),
        (None, None) => Vec::new(),
    };
    let query = Query {
        bucket_prefix,
        prefix: prefix.to_vec(),
        delimiter: delimiter.map(<[u8]>::to_vec),
        after: if token_key.is_some() {
            None
        } else {
            after.map(<[u8]>::to_vec)
        },
        start,
        keys_max,
    };
    // max-keys=0 asks for nothing: an empty page, not a truncated one.
    let mut page = if keys_max == 0 {
        Page::default()
    } else {
        app.store
            .read_index(move |index| Ok(scan(&index.view(), &query)))
            .await??
    };
    probe_unprobed(app, &mut page).await;
    let truncated = page.resume.is_some();
    let body = match flavour {
        Flavour::V2 => {
            let next_token = page.resume.as_ref().map(|resume| URL_SAFE_NO_PAD.encode(resume));
            xml::list_v2(&xml::ListV2 {
                bucket: &request.bucket,
                prefix,
                delimiter,
                max_keys: keys_max as usize,
                continuation_token: token,
                next_continuation_token: next_token.as_deref(),
                start_after: request.param("start-after"),
                is_truncated: truncated,
                encoding_url,
                fetch_owner,
                contents: &page.contents,
                common_prefixes: &page.common_prefixes,
            })
        }
        Flavour::V1 => {
            let next_marker = truncated.then(|| next_marker(&page)).flatten();
            xml::list_v1(&xml::ListV1 {
                bucket: &request.bucket,
                prefix,
                marker: request.param("marker").unwrap_or(b""),
                next_marker,
                delimiter,
                max_keys: keys_max as usize,
                is_truncated: truncated,
                encoding_url,
                contents: &page.contents,
                common_prefixes: &page.common_prefixes,
            })
        }
        Flavour::Versions => xml::list_versions(&xml::ListVersions {
            bucket: &request.bucket,
            prefix,
            key_marker: request.param("key-marker").unwrap_or(b""),
            next_key_marker: truncated.then(|| next_marker(&page)).flatten(),
            delimiter,
            max_keys: keys_max as usize,
            is_truncated: truncated,
            encoding_url,
            contents: &page.contents,
            common_prefixes: &page.common_prefixes,
        }),
    };
    Reply::xml(200, body).write(connection, head.keep_alive, head.method == Method::Head);
    Ok(Sent::status(200))
}

/// Where a truncated page's marker-paged listing goes on from (V1's
/// NextMarker): its greatest key or common prefix, or past it the last key
/// visited, when a visit budget ended the page among skipped records.
fn next_marker(page: &Page) -> Option<&[u8]> {
    let key = page.contents.last().map(|entry| entry.key.as_slice());
    let prefix = page.common_prefixes.last().map(Vec::as_slice);
    key.max(prefix).max(page.last_visited.as_deref())
}

/// Ask a replica the size and mtime of each listed key without metadata,
/// and store them. A key none of whose replicas answers is listed as the
/// index knows it (no size) and probed again next time.
async fn probe_unprobed(app: &App, page: &mut Page) {
    let unprobed = std::mem::take(&mut page.unprobed);
    let probed: Vec<(usize, Option<Meta>)> = stream::iter(unprobed)
        .map(|(position, key, record)| async move {
            let meta = object::probe_meta(app, &key, &record).await.ok();
            if let Some(meta) = &meta {
                store_probed(app, &key, &record, meta).await;
            }
            (position, meta)
        })
        .buffer_unordered(LIST_PROBES_CONCURRENT)
        .collect()
        .await;
    for (position, meta) in probed {
        if let Some(meta) = meta {
            let entry = &mut page.contents[position];
            entry.size = meta.size;
            entry.last_modified_ms = meta.mtime_ms;
        }
    }
}

/// Keep a probed key's metadata, unless a write holds or changed the key
/// since it was probed (then that write's metadata stands). Best effort: a
/// key not stored is probed again.
async fn store_probed(app: &App, key: &[u8], record: &Record, meta: &Meta) {
    let Ok(Some(_guard)) = app.store.try_lock_async(key).await else {
        return;
    };
    let unchanged = matches!(app.store.get_async(key).await, Ok(Some(current)) if current == *record);
    if unchanged && matches!(app.store.meta_async(key).await, Ok(None)) {
        let _ = app.store.apply_async(&[Change::Meta(key, meta)]).await;
    }
}

/// One page of `query` from `view`.
fn scan(view: &View<'_>, query: &Query) -> Result<Page, S3Error> {
    let mut scan_prefix = query.bucket_prefix.clone();
    scan_prefix.extend_from_slice(&query.prefix);
    let mut cursor = query.start.clone().max(scan_prefix.clone());
    let mut page = Page::default();
    let mut count = 0u64;
    let mut visits_left = LIST_VISITS_MAX;
    let mut failure = None;
    loop {
        let mut jump: Option<Option<Vec<u8>>> = None;
        let mut visited = 0usize;
        let stopped_at = view.scan_bounded(&scan_prefix, &cursor, visits_left, |key, record| {
            visited += 1;
            let s3_key = &key[query.bucket_prefix.len()..];
            // A key whose overwrite is committing is deleted in the index
            // for that moment, and still its old value to readers.
            let live = matches!(&record, Ok(record) if record.is_live() || crate::write::is_committing(key));
            if !live {
                page.last_visited = Some(s3_key.to_vec());
                return true;
            }
            let rolled = query
                .delimiter
                .as_deref()
                .and_then(|delimiter| common_prefix(s3_key, &query.prefix, delimiter));
            if count == query.keys_max {
                page.resume = Some(key.to_vec());
                return false;
            }
            if let Some(rolled) = rolled {
                if query.after.as_deref().is_none_or(|after| reports_prefix(rolled, after)) {
                    page.common_prefixes.push(rolled.to_vec());
                    count += 1;
                }
                page.last_visited = Some(rolled.to_vec());
                let mut native = query.bucket_prefix.clone();
                native.extend_from_slice(rolled);
                jump = Some(crate::index::prefix_end(&native));
                return false;
            }
            let record = record.expect("live");
            let meta = match view.meta(key) {
                Ok(meta) => meta,
                // One key's unreadable metadata never fails a listing: it is
                // listed as a key without any (its size asked of a replica).
                Err(crate::index::IndexError::CorruptMeta { .. }) => None,
                Err(error) => {
                    failure = Some(error.into());
                    return false;
                }
            };
            if meta.is_none() {
                if page.unprobed.len() == LIST_PROBES_MAX {
                    // This page asked enough replicas: the next one goes on here.
                    page.resume = Some(key.to_vec());
                    return false;
                }
                page.unprobed.push((page.contents.len(), key.to_vec(), record.clone()));
            }
            page.contents
                .push(object_entry(s3_key, &record, meta.unwrap_or_default()));
            page.last_visited = Some(s3_key.to_vec());
            count += 1;
            true
        })?;
        if let Some(error) = failure {
            return Err(error);
        }
        visits_left = visits_left.saturating_sub(visited);
        match (stopped_at, jump) {
            (None, _) | (Some(_), Some(None)) => return Ok(page),
            (Some(_), Some(Some(next))) => cursor = next,
            (Some(at), None) => {
                if page.resume.is_none() {
                    // The visit budget ran out: go on from here next page.
                    page.resume = Some(at);
                }
                return Ok(page);
            }
        }
        if visits_left == 0 {
            page.resume = Some(cursor);
            return Ok(page);
        }
    }
}

/// The common prefix `s3_key` rolls up into: up to and including the first
/// `delimiter` after `prefix`.
fn common_prefix<'a>(s3_key: &'a [u8], prefix: &[u8], delimiter: &[u8]) -> Option<&'a [u8]> {
    let rest = s3_key.get(prefix.len()..)?;
    let position = rest.windows(delimiter.len()).position(|window| window == delimiter)?;
    Some(&s3_key[..prefix.len() + position + delimiter.len()])
}

/// Whether a page listing after marker `after` reports common prefix
/// `rolled`: one past the marker, or one the marker lies inside (keys
/// after the marker roll up into it; a page that reported it went past
/// every key under it, so its own marker is never inside it).
fn reports_prefix(rolled: &[u8], after: &[u8]) -> bool {
    rolled > after || (after.starts_with(rolled) && after != rolled)
}

/// A listed object: its ETag the record's md5 unless the metadata names
/// another (multipart).
fn object_entry(s3_key: &[u8], record: &Record, meta: Meta) -> xml::ObjectEntry {
    xml::ObjectEntry {
        key: s3_key.to_vec(),
        last_modified_ms: meta.mtime_ms,
        etag: etag_of(record, meta.etag.as_deref()),
        size: meta.size,
    }
}

/// The ETag of a value: the metadata's, else the record's md5, else none.
pub fn etag_of(record: &Record, meta_etag: Option<&str>) -> String {
    match (meta_etag, &record.hash) {
        (Some(etag), _) => etag.to_owned(),
        (None, Some(hash)) => String::from_utf8_lossy(hash).into_owned(),
        (None, None) => String::new(),
    }
}

/// The hex ETag of an md5.
pub fn etag_hex(md5: &[u8; 16]) -> String {
    String::from_utf8_lossy(&hex_lower(md5)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::common_prefix;

    #[test]
    fn common_prefixes_end_at_the_first_delimiter_after_the_prefix() {
        assert_eq!(common_prefix(b"a/b/c", b"", b"/"), Some(&b"a/"[..]));
        assert_eq!(common_prefix(b"a/b/c", b"a/", b"/"), Some(&b"a/b/"[..]));
        assert_eq!(common_prefix(b"a/b", b"a/", b"/"), None);
        assert_eq!(common_prefix(b"x--y--z", b"x", b"--"), Some(&b"x--"[..]));
        assert_eq!(common_prefix(b"abc", b"abcd", b"/"), None);
    }
}
