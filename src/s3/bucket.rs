//! Bucket operations: CreateBucket, HeadBucket, DeleteBucket, ListBuckets,
//! GetBucketLocation, GetBucketVersioning.
//!
//! A bucket exists when it is recorded (`state`), or when live native keys
//! live under `/bucket/` (keys written through the native API are that
//! bucket's objects). As in the original master, the first path segment of
//! a write names a bucket that exists: an S3 write into a bucket nobody
//! created records it (`ensure_for_write`), so CreateBucket is optional.
//! ListBuckets shows recorded buckets; a bucket holding only native keys
//! is recorded by its first S3 write.
//!
//! Soft-deleted (unlinked) keys do not make a bucket exist nor keep it from
//! being empty: DeleteBucket of a bucket holding only those removes it, and
//! HeadBucket then answers 404.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::app::App;
use crate::connection::Connection;
use crate::http::{Method, RequestHead};
use crate::index::key_after;
use crate::meta::now_ms;

use super::request::{native_key, S3Request};
use super::{state, xml, Reply, S3Error, Sent};

/// Records looked at to find whether a bucket holds a live object: soft-
/// deleted ones are skipped, and past this many the answer is "cannot
/// tell" (the answer must not scan without end).
const EMPTY_CHECK_VISITS_MAX: usize = 10_000;
/// Buckets in one ListBuckets page at most (S3's `max-buckets` limit, and
/// the page size when a client names none).
const BUCKETS_PAGE_MAX: u64 = 10_000;

/// Whether `name` follows S3's bucket naming rules.
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b'.' || *byte == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
        // A label may neither start nor end with '-'.
        && !name.contains(".-")
        && !name.contains("-.")
        && name.parse::<std::net::Ipv4Addr>().is_err()
}

/// What a bounded scan of a bucket's keys found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Holding {
    /// A live key.
    Live,
    /// No live key: none at all, or only soft-deleted ones.
    NoLive,
    /// Only soft-deleted keys within `EMPTY_CHECK_VISITS_MAX` visits: more
    /// may follow.
    Unknown,
}

/// Whether bucket `name` holds a live key (a scan of the index, off the
/// reactor on PostgreSQL: `Store::read_index`).
async fn holding(app: &App, name: &str) -> Result<Holding, S3Error> {
    let prefix = native_key(name, b"");
    let holding = app
        .store
        .read_index(move |index| {
            let mut live = false;
            let stopped_at = index
                .view()
                .scan_bounded(&prefix, &prefix, EMPTY_CHECK_VISITS_MAX, |_, record| {
                    live = record.is_ok_and(|record| record.is_live());
                    !live
                })?;
            Ok(match (live, stopped_at) {
                (true, _) => Holding::Live,
                (false, None) => Holding::NoLive,
                (false, Some(_)) => Holding::Unknown,
            })
        })
        .await?;
    Ok(holding)
}

/// Whether bucket `name` exists: recorded, or holding a live key (or so
/// many soft-deleted ones that it cannot be told empty).
pub async fn exists(app: &App, name: &str) -> Result<bool, S3Error> {
    if state::bucket_created(&app.store, name).await?.is_some() {
        return Ok(true);
    }
    Ok(holding(app, name).await? != Holding::NoLive)
}

/// Fail with NoSuchBucket unless bucket `name` exists.
pub async fn check_exists(app: &App, name: &str) -> Result<(), S3Error> {
    if exists(app, name).await? {
        Ok(())
    } else {
        Err(S3Error::no_such_bucket())
    }
}

/// After a write into bucket `name` (PutObject, CopyObject, POST Object,
/// once the value is stored; CreateMultipartUpload): record the bucket
/// unless it is recorded (again, if a DeleteBucket came while the value
/// streamed), as the original master, where
/// every first path segment is a bucket that exists. A name S3 does not
/// allow is not recorded: such a bucket exists only through native keys.
/// Whether a write into bucket `name` may go ahead (it exists, or may be
/// made): what `ensure_for_write` would refuse, without recording anything.
pub async fn check_writable(app: &App, name: &str) -> Result<(), S3Error> {
    if valid_name(name) || state::bucket_created(&app.store, name).await?.is_some() {
        return Ok(());
    }
    match holding(app, name).await? {
        Holding::NoLive => Err(S3Error::invalid_bucket_name()),
        Holding::Live | Holding::Unknown => Ok(()),
    }
}

pub async fn ensure_for_write(app: &App, name: &str) -> Result<(), S3Error> {
    if state::bucket_created(&app.store, name).await?.is_some() {
        return Ok(());
    }
    check_writable(app, name).await?;
    // A name S3 does not allow exists only through native keys: not recorded.
    if valid_name(name) {
        state::create_bucket(&app.store, name, now_ms()).await?;
    }
    Ok(())
}

pub async fn create(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    if !valid_name(&request.bucket) {
        return Err(S3Error::invalid_bucket_name());
    }
    // A CreateBucketConfiguration body (a region) is read and ignored.
    if head.has_body() {
        super::object::read_small_body(app, connection, head, request).await?;
    }
    // Creating a bucket one already owns succeeds, as in us-east-1.
    if state::bucket_created(&app.store, &request.bucket).await?.is_none() {
        state::create_bucket(&app.store, &request.bucket, now_ms()).await?;
    }
    Reply::empty(200)
        .header("Location", format_args!("/{}", request.bucket))
        .write(connection, head.keep_alive, false);
    Ok(Sent::status(200))
}

pub async fn head(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    check_exists(app, &request.bucket).await?;
    Reply::empty(200)
        .header("x-amz-bucket-region", "us-east-1")
        .write(connection, head.keep_alive, true);
    Ok(Sent::status(200))
}

/// DeleteBucket: an empty bucket (no live key) stops existing; its
/// soft-deleted keys stay in the index for the native API.
pub async fn delete(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    let recorded = state::bucket_created(&app.store, &request.bucket).await?.is_some();
    match holding(app, &request.bucket).await? {
        Holding::Live => {
            return Err(S3Error::new(
                409,
                "BucketNotEmpty",
                "The bucket you tried to delete is not empty",
            ))
        }
        // Refused rather than guessed: removing the record of a bucket that
        // still holds a live key would leave it half there.
        Holding::Unknown => {
            return Err(S3Error::new(
                409,
                "BucketNotEmpty",
                format!(
                    "The bucket holds more than {EMPTY_CHECK_VISITS_MAX} soft-deleted keys before any live one: \
                     it cannot be told empty"
                ),
            ))
        }
        Holding::NoLive if !recorded => return Err(S3Error::no_such_bucket()),
        Holding::NoLive => {}
    }
    // Uploads still open in the bucket go with it, as in S3 (one left
    // would complete into a bucket that is gone).
    super::multipart::abort_all_in(app, &request.bucket).await?;
    state::delete_bucket(&app.store, &request.bucket).await?;
    Reply::empty(204).write(connection, head.keep_alive, false);
    Ok(Sent::status(204))
}

/// ListBuckets: recorded buckets in name order, `max-buckets` a page
/// (all, up to `BUCKETS_PAGE_MAX`, when none is named), from
/// `continuation-token` on, only those starting with `prefix`.
pub async fn list_buckets(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    let buckets_max = request.param_number("max-buckets", BUCKETS_PAGE_MAX)?;
    if !(1..=BUCKETS_PAGE_MAX).contains(&buckets_max) {
        return Err(S3Error::invalid_argument(&format!(
            "max-buckets must be between 1 and {BUCKETS_PAGE_MAX}"
        )));
    }
    let prefix = request.param_text("prefix").unwrap_or("");
    let after = match request.param_text("continuation-token") {
        Some(token) => Some(
            URL_SAFE_NO_PAD
                .decode(token)
                .ok()
                .and_then(|name| String::from_utf8(name).ok())
                .ok_or_else(|| S3Error::invalid_argument("The continuation token provided is incorrect"))?,
        ),
        None => None,
    };
    let scan_prefix = state::bucket_key(prefix);
    let start = after.map_or_else(|| scan_prefix.clone(), |after| key_after(&state::bucket_key(&after)));
    // One more than a page: whether another page follows.
    // Only those the asker may list (all, with access control off).
    let access = request.access.clone();
    let listable = move |name: &str| access.may_list_bucket(name);
    let mut buckets = recorded_buckets(app, scan_prefix, start, buckets_max as usize + 1, listable).await?;
    let next_token = if buckets.len() as u64 > buckets_max {
        buckets.truncate(buckets_max as usize);
        buckets.last().map(|(name, _)| URL_SAFE_NO_PAD.encode(name))
    } else {
        None
    };
    let buckets: Vec<xml::BucketEntry> = buckets
        .into_iter()
        .map(|(name, created_ms)| xml::BucketEntry { name, created_ms })
        .collect();
    let prefix = request.param_text("prefix");
    Reply::xml(200, xml::list_buckets_page(&buckets, next_token.as_deref(), prefix)).write(
        connection,
        head.keep_alive,
        head.method == Method::Head,
    );
    Ok(Sent::status(200))
}

/// Recorded buckets whose state keys start with `scan_prefix`, from
/// `start` on, at most `count_max`: name and creation time. The scan runs
/// off the reactor on PostgreSQL (`Store::read_index`).
async fn recorded_buckets(
    app: &App,
    scan_prefix: Vec<u8>,
    start: Vec<u8>,
    count_max: usize,
    wanted: impl Fn(&str) -> bool + Send + 'static,
) -> Result<Vec<(String, u64)>, S3Error> {
    /// A bucket's state entry (`state`'s `b/<bucket>` value).
    #[derive(serde::Deserialize)]
    struct Recorded {
        created_ms: u64,
    }
    let (found, corrupt) = app
        .store
        .read_index(move |index| {
            let mut found = Vec::new();
            let mut corrupt = false;
            index.scan_state(&scan_prefix, &start, usize::MAX, |key, value| {
                let name = String::from_utf8_lossy(&key[2..]).into_owned();
                if !wanted(&name) {
                    return true;
                }
                match serde_json::from_slice::<Recorded>(value) {
                    Ok(recorded) => found.push((name, recorded.created_ms)),
                    Err(_) => corrupt = true,
                }
                !corrupt && found.len() < count_max
            })?;
            Ok((found, corrupt))
        })
        .await?;
    if corrupt {
        return Err(S3Error::internal("a bucket's state entry is corrupt"));
    }
    Ok(found)
}

/// GetBucketLocation and GetBucketVersioning: fixed answers for a bucket
/// that exists (us-east-1; versioning never enabled).
pub async fn fixed_answer(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
    document: Vec<u8>,
) -> Result<Sent, S3Error> {
    check_exists(app, &request.bucket).await?;
    Reply::xml(200, document).write(connection, head.keep_alive, false);
    Ok(Sent::status(200))
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for good in ["abc", "my-bucket.1", "a1b", "000", "a-b.c-d", "1.2.3.4a"] {
            assert!(valid_name(good), "{good}");
        }
        let long = "a".repeat(64);
        for bad in [
            "ab",
            "Abc",
            "-abc",
            "abc-",
            "a..b",
            "a_b",
            "$extremelyunlikelytoexist$",
            "a.-b",
            "a-.b",
            "192.168.5.4",
            long.as_str(),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
