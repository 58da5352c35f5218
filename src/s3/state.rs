//! S3 state that is not a key's: buckets and multipart uploads, kept in
//! the index's S3 column (`Index::state`), so they survive a restart.
//!
//! Layout (keys are bytes, values JSON):
//!
//! ```text
//! b/<bucket>                      {"created_ms": ..}
//! u/<upload id>                   Upload: bucket, key, content type, initiated
//! m/<bucket>/<key>\0<upload id>   initiated ms (decimal): the upload listed
//!                                 under its bucket, in ListMultipartUploads'
//!                                 order (key, then upload id)
//! p/<upload id>/<part, 5 digits>  Part: size, md5, mtime, volumes
//! ```
//!
//! An upload's `u/` and `m/` entries are written and removed together, in
//! one index write, so a listing of one bucket scans that bucket's range
//! alone. (Uploads made before `m/` existed are given theirs by the expiry
//! sweep, `multipart::sweep`.)
//!
//! Every read here that a request (or the upload sweep) makes is awaited
//! through `Store::read_index`: on PostgreSQL each is a round trip, run on
//! the read pool and bounded, so a database that hangs answers 503 and the
//! reactor's other connections (cache hits) go on; RocksDB reads stay on
//! the reactor. `upload` alone has a blocking form, for offline tools.
//!
//! A part's bytes live on volumes at `/mkv-parts/<upload id>/<part>`
//! (under the entry's subvolume), outside the `/hh/hh/` shard directories,
//! so `rebuild` never takes them for keys.

use serde::{Deserialize, Serialize};

use super::cors::Rule;
use crate::index::{Change, Index, IndexError};
use crate::store::Store;

/// Where the parts of uploads live on a volume.
pub const PARTS_DIRECTORY: &str = "/mkv-parts";

#[derive(Serialize, Deserialize)]
struct BucketState {
    created_ms: u64,
    /// The bucket's CORS rules (PutBucketCors), if it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cors: Option<Vec<Rule>>,
}

/// A multipart upload in progress.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Upload {
    pub bucket: String,
    pub key: Vec<u8>,
    pub content_type: Option<String>,
    /// `x-amz-meta-*` given at create, for the completed value.
    #[serde(default)]
    pub user: Vec<(String, String)>,
    pub initiated_ms: u64,
    /// The checksum declared at create (`x-amz-checksum-algorithm`, and
    /// `x-amz-checksum-type`): the algorithm's value and the type's.
    #[serde(default)]
    pub checksum: Option<(String, String)>,
}

/// One uploaded part.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Part {
    pub size: u64,
    /// Lower-case hex md5 of the part: its ETag.
    pub md5: String,
    pub mtime_ms: u64,
    /// The volume entries holding the part.
    pub volumes: Vec<String>,
    /// The additional checksum the part was verified against or computed
    /// with: (`x-amz-checksum-*` header name, base64).
    #[serde(default)]
    pub checksum: Option<(String, String)>,
}

fn corrupt(key: &[u8]) -> IndexError {
    IndexError::Io(format!("S3 state entry {:?} is corrupt", String::from_utf8_lossy(key)))
}

pub fn bucket_key(bucket: &str) -> Vec<u8> {
    format!("b/{bucket}").into_bytes()
}

pub fn upload_key(upload_id: &str) -> Vec<u8> {
    format!("u/{upload_id}").into_bytes()
}

/// The `m/` prefix of every upload of `bucket`.
pub fn bucket_uploads_prefix(bucket: &str) -> Vec<u8> {
    format!("m/{bucket}/").into_bytes()
}

/// The `m/` entry of upload `upload_id` of `key` in `bucket`.
pub fn listed_upload_key(bucket: &str, key: &[u8], upload_id: &str) -> Vec<u8> {
    let mut listed = bucket_uploads_prefix(bucket);
    listed.extend_from_slice(key);
    listed.push(0);
    listed.extend_from_slice(upload_id.as_bytes());
    listed
}

/// The changes that remove upload `upload_id` (its entries and those of
/// `part_keys`), for one atomic index write.
pub fn removal<'a>(upload_keys: &'a [Vec<u8>], part_keys: &'a [Vec<u8>]) -> Vec<Change<'a>> {
    upload_keys
        .iter()
        .chain(part_keys)
        .map(|key| Change::StateDelete(key))
        .collect()
}

/// The `u/` and `m/` keys of an upload.
pub fn upload_keys(upload_id: &str, upload: &Upload) -> Vec<Vec<u8>> {
    vec![
        upload_key(upload_id),
        listed_upload_key(&upload.bucket, &upload.key, upload_id),
    ]
}

pub fn part_key(upload_id: &str, number: u32) -> Vec<u8> {
    format!("p/{upload_id}/{number:05}").into_bytes()
}

fn parts_prefix(upload_id: &str) -> Vec<u8> {
    format!("p/{upload_id}/").into_bytes()
}

/// The path of an upload's directory (with its trailing slash) under a
/// volume entry's prefix.
pub fn upload_directory(upload_id: &str) -> String {
    format!("{PARTS_DIRECTORY}/{upload_id}/")
}

/// The path of a part's file under a volume entry's prefix.
pub fn part_path(upload_id: &str, number: u32) -> String {
    format!("{PARTS_DIRECTORY}/{upload_id}/{number:05}")
}

fn bucket_state(index: &Index, bucket: &str) -> Result<Option<BucketState>, IndexError> {
    let key = bucket_key(bucket);
    match index.state(&key)? {
        None => Ok(None),
        Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|_| corrupt(&key))?)),
    }
}

/// When `bucket` was created, if it was.
pub async fn bucket_created(store: &Store, bucket: &str) -> Result<Option<u64>, IndexError> {
    let bucket = bucket.to_owned();
    store
        .read_index(move |index| Ok(bucket_state(index, &bucket)?.map(|state| state.created_ms)))
        .await
}

/// The CORS rules of `bucket`, if it is recorded and has any.
pub async fn bucket_cors(store: &Store, bucket: &str) -> Result<Option<Vec<Rule>>, IndexError> {
    let bucket = bucket.to_owned();
    store
        .read_index(move |index| Ok(bucket_state(index, &bucket)?.and_then(|state| state.cors)))
        .await
}

/// Give `bucket` these CORS rules (None: none), recording it (created
/// `created_ms`) if it is not.
pub async fn set_bucket_cors(
    store: &Store,
    bucket: &str,
    cors: Option<Vec<Rule>>,
    created_ms: u64,
) -> Result<(), IndexError> {
    let created_ms = bucket_created(store, bucket).await?.unwrap_or(created_ms);
    let value = serde_json::to_vec(&BucketState { created_ms, cors }).expect("serializable");
    store
        .apply_async(&[Change::StatePut(&bucket_key(bucket), &value)])
        .await
}

pub async fn create_bucket(store: &Store, bucket: &str, created_ms: u64) -> Result<(), IndexError> {
    let value = serde_json::to_vec(&BucketState { created_ms, cors: None }).expect("serializable");
    store
        .apply_async(&[Change::StatePut(&bucket_key(bucket), &value)])
        .await
}

pub async fn delete_bucket(store: &Store, bucket: &str) -> Result<(), IndexError> {
    store.apply_async(&[Change::StateDelete(&bucket_key(bucket))]).await
}

/// Every created bucket, by name, with its creation time.
pub fn buckets(index: &Index) -> Result<Vec<(String, u64)>, IndexError> {
    let mut found = Vec::new();
    let mut failure = None;
    index.scan_state(b"b/", b"", usize::MAX, |key, value| {
        match serde_json::from_slice::<BucketState>(value) {
            Ok(state) => found.push((String::from_utf8_lossy(&key[2..]).into_owned(), state.created_ms)),
            Err(_) => failure = Some(corrupt(key)),
        }
        failure.is_none()
    })?;
    failure.map_or(Ok(found), Err)
}

/// Upload `upload_id`, if it is in progress; blocking (offline tools:
/// a request awaits `upload_async`).
pub fn upload(index: &Index, upload_id: &str) -> Result<Option<Upload>, IndexError> {
    let key = upload_key(upload_id);
    match index.state(&key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|_| corrupt(&key)),
    }
}

/// `upload`, awaited without blocking the reactor.
pub async fn upload_async(store: &Store, upload_id: &str) -> Result<Option<Upload>, IndexError> {
    let upload_id = upload_id.to_owned();
    store.read_index(move |index| upload(index, &upload_id)).await
}

/// Whether `upload` (`upload_id`) has its bucket listing entry (`m/`).
pub async fn is_listed(store: &Store, upload_id: &str, upload: &Upload) -> Result<bool, IndexError> {
    let listed = listed_upload_key(&upload.bucket, &upload.key, upload_id);
    store.read_index(move |index| Ok(index.state(&listed)?.is_some())).await
}

pub async fn put_upload(store: &Store, upload_id: &str, upload: &Upload) -> Result<(), IndexError> {
    let value = serde_json::to_vec(upload).expect("serializable");
    let listed = listed_upload_key(&upload.bucket, &upload.key, upload_id);
    let initiated = upload.initiated_ms.to_string();
    store
        .apply_async(&[
            Change::StatePut(&upload_key(upload_id), &value),
            Change::StatePut(&listed, initiated.as_bytes()),
        ])
        .await
}

/// Give an upload made before `m/` entries existed its entry.
pub async fn list_upload(store: &Store, upload_id: &str, upload: &Upload) -> Result<(), IndexError> {
    let listed = listed_upload_key(&upload.bucket, &upload.key, upload_id);
    let initiated = upload.initiated_ms.to_string();
    store
        .apply_async(&[Change::StatePut(&listed, initiated.as_bytes())])
        .await
}

/// One upload of a bucket, as ListMultipartUploads shows it.
pub struct ListedUpload {
    pub key: Vec<u8>,
    pub upload_id: String,
    pub initiated_ms: u64,
}

/// Uploads of `bucket` whose keys start with `prefix`, in (key, upload
/// id) order, after the markers (a key marker alone: keys after it; with
/// an upload id marker: that key's later uploads too), at most
/// `count_max`. Only the bucket's own range of the index is read.
pub async fn bucket_uploads(
    store: &Store,
    bucket: &str,
    prefix: &[u8],
    key_marker: &[u8],
    upload_id_marker: &str,
    count_max: usize,
) -> Result<Vec<ListedUpload>, IndexError> {
    let mut scan_prefix = bucket_uploads_prefix(bucket);
    let bucket_bytes = scan_prefix.len();
    scan_prefix.extend_from_slice(prefix);
    let start = if key_marker.is_empty() {
        scan_prefix.clone()
    } else if upload_id_marker.is_empty() {
        // Past every upload of the marker key: `key\0id` < `key\x01`.
        let mut start = bucket_uploads_prefix(bucket);
        start.extend_from_slice(key_marker);
        start.push(1);
        start
    } else {
        crate::index::key_after(&listed_upload_key(bucket, key_marker, upload_id_marker))
    };
    store
        .read_index(move |index| scan_bucket_uploads(index, &scan_prefix, bucket_bytes, &start, count_max))
        .await
}

/// `bucket_uploads`' scan: the entries under `scan_prefix` from `start`,
/// whose first `bucket_bytes` are the bucket's `m/` prefix.
fn scan_bucket_uploads(
    index: &Index,
    scan_prefix: &[u8],
    bucket_bytes: usize,
    start: &[u8],
    count_max: usize,
) -> Result<Vec<ListedUpload>, IndexError> {
    let mut found = Vec::new();
    let mut failure = None;
    index.scan_state(scan_prefix, start, count_max, |key, value| {
        let entry = &key[bucket_bytes..];
        // The id is the 32 hex digits after the last NUL.
        let split = entry.len().checked_sub(33).filter(|&at| entry[at] == 0);
        let initiated = std::str::from_utf8(value).ok().and_then(|text| text.parse().ok());
        match (split, initiated) {
            (Some(at), Some(initiated_ms)) => found.push(ListedUpload {
                key: entry[..at].to_vec(),
                upload_id: String::from_utf8_lossy(&entry[at + 1..]).into_owned(),
                initiated_ms,
            }),
            _ => failure = Some(corrupt(key)),
        }
        failure.is_none()
    })?;
    failure.map_or(Ok(found), Err)
}

pub async fn put_part(store: &Store, upload_id: &str, number: u32, part: &Part) -> Result<(), IndexError> {
    let value = serde_json::to_vec(part).expect("serializable");
    store
        .apply_async(&[Change::StatePut(&part_key(upload_id, number), &value)])
        .await
}

pub async fn delete_part(store: &Store, upload_id: &str, number: u32) -> Result<(), IndexError> {
    store
        .apply_async(&[Change::StateDelete(&part_key(upload_id, number))])
        .await
}

/// Parts of an upload numbered above `after`, in order, at most `count_max`.
pub async fn parts(
    store: &Store,
    upload_id: &str,
    after: u32,
    count_max: usize,
) -> Result<Vec<(u32, Part)>, IndexError> {
    let prefix = parts_prefix(upload_id);
    let start = part_key(upload_id, after.saturating_add(1));
    store
        .read_index(move |index| scan_parts(index, &prefix, &start, count_max))
        .await
}

/// `parts`' scan: the parts under `prefix` from `start` on.
fn scan_parts(index: &Index, prefix: &[u8], start: &[u8], count_max: usize) -> Result<Vec<(u32, Part)>, IndexError> {
    let mut found = Vec::new();
    let mut failure = None;
    index.scan_state(prefix, start, count_max, |key, value| {
        let number = std::str::from_utf8(&key[prefix.len()..])
            .ok()
            .and_then(|digits| digits.parse().ok());
        match (number, serde_json::from_slice::<Part>(value)) {
            (Some(number), Ok(part)) => found.push((number, part)),
            _ => failure = Some(corrupt(key)),
        }
        failure.is_none()
    })?;
    failure.map_or(Ok(found), Err)
}

/// Uploads in progress, by upload id from `after` on (exclusive), at most
/// `count_max` visited.
pub async fn uploads(store: &Store, after: &str, count_max: usize) -> Result<Vec<(String, Upload)>, IndexError> {
    let start = if after.is_empty() {
        b"u/".to_vec()
    } else {
        crate::index::key_after(&upload_key(after))
    };
    store
        .read_index(move |index| scan_uploads(index, &start, count_max))
        .await
}

/// `uploads`' scan, from `start` on.
fn scan_uploads(index: &Index, start: &[u8], count_max: usize) -> Result<Vec<(String, Upload)>, IndexError> {
    let mut found = Vec::new();
    let mut failure = None;
    index.scan_state(b"u/", start, count_max, |key, value| {
        match serde_json::from_slice::<Upload>(value) {
            Ok(upload) => found.push((String::from_utf8_lossy(&key[2..]).into_owned(), upload)),
            Err(_) => failure = Some(corrupt(key)),
        }
        failure.is_none()
    })?;
    failure.map_or(Ok(found), Err)
}

/// A new upload id: 32 random hex digits.
pub fn new_upload_id() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into `bytes`.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if filled != bytes.len() as isize {
        // No kernel randomness: the clock and a counter still make ids unique.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        bytes[..8].copy_from_slice(&nanos.to_le_bytes());
        bytes[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    }
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Whether `text` can be an upload id this master made.
pub fn is_upload_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}
