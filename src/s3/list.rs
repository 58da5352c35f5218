//! ListObjectsV2, ListObjects (V1) and ListObjectVersions (current objects
//! only) over one index snapshot.
//!
//! Object `k` of bucket `b` is the native key `/b/k`, so a listing is an
//! ordered scan of the index under `/b/<prefix>`. With a delimiter, the
//! first key of each common prefix reports the prefix and the scan seeks
//! past every key under it (a directory of a million keys costs one seek,
//! not a million visits). Soft-deleted records are skipped; at most
//! `LIST_VISITS_MAX` records are visited per page, after which the page
//! ends truncated, with a token to go on from.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::app::App;
use crate::connection::Connection;
use crate::http::{Method, RequestHead};
use crate::index::{key_after, View};
use crate::placement::hex_lower;
use crate::record::Record;

use super::request::{native_key, S3Request};
use super::{bucket, xml, Reply, S3Error, Sent};

/// Most keys a page holds (S3's limit too).
pub const PAGE_KEYS_MAX: u64 = 1000;
/// Records visited for one page at most: soft-deleted ones are skipped,
/// and a page must not scan without end.
const LIST_VISITS_MAX: usize = 100_000;

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
}

/// What to list.
struct Query<'a> {
    /// `/bucket/`.
    bucket_prefix: Vec<u8>,
    /// The S3 prefix.
    prefix: &'a [u8],
    delimiter: Option<&'a [u8]>,
    /// Items before and at this S3 key are not listed (marker, start-after).
    after: Option<&'a [u8]>,
    /// The native key to scan from.
    start: Vec<u8>,
    keys_max: u64,
}

pub fn list(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
    flavour: Flavour,
) -> Result<Sent, S3Error> {
    bucket::check_exists(app, &request.bucket)?;
    let prefix = request.param("prefix").unwrap_or(b"");
    let delimiter = request.param("delimiter").filter(|delimiter| !delimiter.is_empty());
    let keys_max = request.param_number("max-keys", PAGE_KEYS_MAX)?.min(PAGE_KEYS_MAX);
    let encoding_url = request.param("encoding-type") == Some(b"url");
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
        prefix,
        delimiter,
        after: if token_key.is_some() { None } else { after },
        start,
        keys_max,
    };
    let view = app.store.index().view();
    // max-keys=0 asks for nothing: an empty page, not a truncated one.
    let page = if keys_max == 0 {
        Page::default()
    } else {
        scan(&view, &query)?
    };
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
                contents: &page.contents,
                common_prefixes: &page.common_prefixes,
            })
        }
        Flavour::V1 => {
            let next_marker = truncated.then(|| last_item(&page)).flatten();
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
            next_key_marker: truncated.then(|| last_item(&page)).flatten(),
            delimiter,
            max_keys: keys_max as usize,
            is_truncated: truncated,
            encoding_url,
            contents: &page.contents,
            common_prefixes: &page.common_prefixes,
        }),
    };
    Reply::xml(200, body).write(&mut connection.output, head.keep_alive, head.method == Method::Head);
    Ok(Sent::status(200))
}

/// The greatest key or common prefix of a page (V1's NextMarker).
fn last_item(page: &Page) -> Option<&[u8]> {
    let key = page.contents.last().map(|entry| entry.key.as_slice());
    let prefix = page.common_prefixes.last().map(Vec::as_slice);
    key.max(prefix)
}

/// One page of `query` from `view`.
fn scan(view: &View<'_>, query: &Query<'_>) -> Result<Page, S3Error> {
    let mut scan_prefix = query.bucket_prefix.clone();
    scan_prefix.extend_from_slice(query.prefix);
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
            // A key whose overwrite is committing is deleted in the index
            // for that moment, and still its old value to readers.
            let live = matches!(&record, Ok(record) if record.is_live() || crate::write::is_committing(key));
            if !live {
                return true;
            }
            let s3_key = &key[query.bucket_prefix.len()..];
            let rolled = query
                .delimiter
                .and_then(|delimiter| common_prefix(s3_key, query.prefix, delimiter));
            if count == query.keys_max {
                page.resume = Some(key.to_vec());
                return false;
            }
            if let Some(rolled) = rolled {
                if query.after.is_none_or(|after| rolled > after) {
                    page.common_prefixes.push(rolled.to_vec());
                    count += 1;
                }
                let mut native = query.bucket_prefix.clone();
                native.extend_from_slice(rolled);
                jump = Some(crate::index::prefix_end(&native));
                return false;
            }
            match object_entry(view, key, s3_key, record.expect("live")) {
                Ok(entry) => page.contents.push(entry),
                Err(error) => {
                    failure = Some(error);
                    return false;
                }
            }
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

/// A listed object: its metadata from the view, its ETag the record's md5
/// unless the metadata names another (multipart).
fn object_entry(view: &View<'_>, key: &[u8], s3_key: &[u8], record: Record) -> Result<xml::ObjectEntry, S3Error> {
    let meta = view.meta(key)?.unwrap_or_default();
    Ok(xml::ObjectEntry {
        key: s3_key.to_vec(),
        last_modified_ms: meta.mtime_ms,
        etag: etag_of(&record, meta.etag.as_deref()),
        size: meta.size,
    })
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
