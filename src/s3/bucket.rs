//! Bucket operations: CreateBucket, HeadBucket, DeleteBucket, ListBuckets,
//! GetBucketLocation, GetBucketVersioning.
//!
//! A bucket exists when it was created, or when native keys live under
//! `/bucket/` (keys written through the native API are that bucket's
//! objects). ListBuckets shows created buckets.

use crate::app::App;
use crate::connection::Connection;
use crate::http::{Method, RequestHead};
use crate::meta::now_ms;

use super::request::{native_key, S3Request};
use super::{state, xml, Reply, S3Error, Sent};

/// Records looked at to find whether a bucket holds a live object: soft-
/// deleted ones are skipped, and a bucket of only those counts as empty
/// once this many were seen (the answer must not scan without end).
const EMPTY_CHECK_VISITS_MAX: usize = 10_000;

/// Whether `name` follows S3's bucket naming rules.
fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b'.' || *byte == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
}

/// Whether bucket `name` holds a key (`live_only`: a live one).
fn holds_keys(app: &App, name: &str, live_only: bool) -> Result<bool, S3Error> {
    let prefix = native_key(name, b"");
    let view = app.store.index().view();
    let mut found = false;
    view.scan_bounded(&prefix, &prefix, EMPTY_CHECK_VISITS_MAX, |_, record| {
        found = !live_only || record.is_ok_and(|record| record.is_live());
        !found
    })?;
    Ok(found)
}

/// Whether bucket `name` exists.
pub fn exists(app: &App, name: &str) -> Result<bool, S3Error> {
    if state::bucket_created(app.store.index(), name)?.is_some() {
        return Ok(true);
    }
    holds_keys(app, name, false)
}

/// Fail with NoSuchBucket unless bucket `name` exists.
pub fn check_exists(app: &App, name: &str) -> Result<(), S3Error> {
    if exists(app, name)? {
        Ok(())
    } else {
        Err(S3Error::no_such_bucket())
    }
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
        super::object::read_small_body(app, connection, head).await?;
    }
    // Creating a bucket one already owns succeeds, as in us-east-1.
    if state::bucket_created(app.store.index(), &request.bucket)?.is_none() {
        state::create_bucket(&app.store, &request.bucket, now_ms()).await?;
    }
    Reply::empty(200)
        .header("Location", format_args!("/{}", request.bucket))
        .write(&mut connection.output, head.keep_alive, false);
    Ok(Sent::status(200))
}

pub fn head(app: &App, connection: &mut Connection, head: &RequestHead, request: &S3Request) -> Result<Sent, S3Error> {
    check_exists(app, &request.bucket)?;
    Reply::empty(200)
        .header("x-amz-bucket-region", "us-east-1")
        .write(&mut connection.output, head.keep_alive, true);
    Ok(Sent::status(200))
}

pub async fn delete(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    check_exists(app, &request.bucket)?;
    if holds_keys(app, &request.bucket, true)? {
        return Err(S3Error::new(
            409,
            "BucketNotEmpty",
            "The bucket you tried to delete is not empty",
        ));
    }
    state::delete_bucket(&app.store, &request.bucket).await?;
    Reply::empty(204).write(&mut connection.output, head.keep_alive, false);
    Ok(Sent::status(204))
}

pub fn list_buckets(app: &App, connection: &mut Connection, head: &RequestHead) -> Result<Sent, S3Error> {
    let buckets: Vec<xml::BucketEntry> = state::buckets(app.store.index())?
        .into_iter()
        .map(|(name, created_ms)| xml::BucketEntry { name, created_ms })
        .collect();
    Reply::xml(200, xml::list_buckets(&buckets)).write(
        &mut connection.output,
        head.keep_alive,
        head.method == Method::Head,
    );
    Ok(Sent::status(200))
}

/// GetBucketLocation and GetBucketVersioning: fixed answers for a bucket
/// that exists (us-east-1; versioning never enabled).
pub fn fixed_answer(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
    document: Vec<u8>,
) -> Result<Sent, S3Error> {
    check_exists(app, &request.bucket)?;
    Reply::xml(200, document).write(&mut connection.output, head.keep_alive, false);
    Ok(Sent::status(200))
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for good in ["abc", "my-bucket.1", "a1b", "000"] {
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
            long.as_str(),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
