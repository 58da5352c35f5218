//! Multipart uploads, durable: parts on the volumes, state in the index.
//!
//! Each part is written like a value (to every replica placement names for
//! the final key, md5 on the way) at `/mkv-parts/<upload id>/<part>` and
//! recorded in the index's S3 state, so an upload survives a master
//! restart and its memory is bounded whatever its size. Completion streams
//! the listed parts, in order, from a replica of each into one value on the
//! key's replicas through the write protocol (`write::store_value`): the
//! result is an ordinary value in the original layout (native GET, rebuild
//! and rebalance see one file), its record's md5 the md5 of the whole
//! value, its ETag S3's `md5(part md5s)-N` kept in the key's metadata. The
//! record goes live and the upload's state goes away in one atomic write;
//! the part files are removed after.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use md5::{Digest, Md5};

use crate::app::App;
use crate::connection::Connection;
use crate::http::RequestHead;
use crate::meta::{now_ms, Meta};
use crate::placement::{entry_host, hex_lower};
use crate::replication::{self, entry_path, Gate, GateError, PieceSource, ReplicationError, Target, VOLUME_IO_TIMEOUT};
use crate::store::KeyGuard;
use crate::volume::{Download, Settled, VolumeError};
use crate::write::{self, Plan};

use super::body::{checksum_entry, request_body, CHECKSUM_ENTRY_PREFIX};
use super::checksum::{self, Algorithm, ChecksumType};
use super::object::{
    checked_key, content_md5, open_copy_source, read_complete_body, user_metadata, write_precondition, CopySource,
};
use super::request::ByteRange;
use super::request::S3Request;
use super::state::{self, Part, Upload};
use super::{bucket, xml, Reply, S3Error, Sent};

/// Highest part number (S3's).
const PART_NUMBER_MAX: u32 = 10_000;
/// Smallest part but the last (S3's rule; clients size parts by it).
const PART_BYTES_MIN: u64 = 5 * 1024 * 1024;
/// Most parts or uploads one listing returns.
const LIST_ENTRIES_MAX: u64 = 1000;

/// The upload a request names, which must be of its bucket and key.
async fn named_upload(app: &App, request: &S3Request) -> Result<(String, Upload), S3Error> {
    let id = request
        .param_text("uploadId")
        .filter(|id| state::is_upload_id(id))
        .ok_or_else(S3Error::no_such_upload)?;
    let upload = state::upload_async(&app.store, id)
        .await?
        .filter(|upload| upload.bucket == request.bucket && upload.key == request.key)
        .ok_or_else(S3Error::no_such_upload)?;
    Ok((id.to_owned(), upload))
}

/// The lock that keeps Complete and Abort of one upload apart.
fn upload_lock_key(id: &str) -> Vec<u8> {
    format!("\0mkv-upload/{id}").into_bytes()
}

pub async fn create(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    checked_key(request)?;
    let user = user_metadata(request)?;
    let checksum = declared_checksum(request)?;
    bucket::ensure_for_write(app, &request.bucket).await?;
    let id = state::new_upload_id();
    let upload = Upload {
        bucket: request.bucket.clone(),
        key: request.key.clone(),
        content_type: request.headers.content_type.clone(),
        user,
        initiated_ms: now_ms(),
        checksum: checksum.map(|(algorithm, kind)| (algorithm.value().to_owned(), kind.value().to_owned())),
    };
    state::put_upload(&app.store, &id, &upload).await?;
    let body = xml::initiate_multipart(&request.bucket, &request.key, &id);
    Reply::xml(200, body).write(connection, head.keep_alive, false);
    Ok(Sent::status(200))
}

/// The checksum an upload declares at create (`x-amz-checksum-algorithm`,
/// `x-amz-checksum-type`), checked now so that its Complete can honour it:
/// an unknown algorithm or type, a type without an algorithm, and the
/// pairs S3 does not make (`FULL_OBJECT` of a digest, `COMPOSITE` of
/// CRC64NVME) are refused, never ignored. An algorithm alone takes S3's
/// default type (`FULL_OBJECT` for CRC64NVME, `COMPOSITE` otherwise).
fn declared_checksum(request: &S3Request) -> Result<Option<(Algorithm, ChecksumType)>, S3Error> {
    let invalid = |message: &str| S3Error::new(400, "InvalidRequest", message);
    let algorithm = match request.headers.amz("x-amz-checksum-algorithm") {
        None => None,
        Some(value) => Some(Algorithm::from_value(value).ok_or_else(|| {
            invalid("Checksum algorithm provided is unsupported. Please try again with any of the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]")
        })?),
    };
    let kind = match request.headers.amz("x-amz-checksum-type") {
        None => None,
        Some(value) => Some(
            ChecksumType::from_value(value)
                .ok_or_else(|| invalid("Value for x-amz-checksum-type header is invalid."))?,
        ),
    };
    let Some(algorithm) = algorithm else {
        return match kind {
            None => Ok(None),
            Some(_) => Err(invalid(
                "The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header.",
            )),
        };
    };
    let kind = kind.unwrap_or(match algorithm {
        Algorithm::Crc64Nvme => ChecksumType::FullObject,
        _ => ChecksumType::Composite,
    });
    match (algorithm, kind) {
        (algorithm, ChecksumType::FullObject) if !algorithm.is_crc() => Err(invalid(&format!(
            "The FULL_OBJECT checksum type cannot be used with the {} checksum algorithm.",
            algorithm.value().to_ascii_lowercase()
        ))),
        (Algorithm::Crc64Nvme, ChecksumType::Composite) => Err(invalid(
            "The COMPOSITE checksum type cannot be used with the crc64nvme checksum algorithm.",
        )),
        declared => Ok(Some(declared)),
    }
}

/// The part number a request names.
fn part_number(request: &S3Request) -> Result<u32, S3Error> {
    let number = request.param_number("partNumber", 0)?;
    u32::try_from(number)
        .ok()
        .filter(|number| (1..=PART_NUMBER_MAX).contains(number))
        .ok_or_else(|| S3Error::invalid_argument("Part number must be an integer between 1 and 10000, inclusive"))
}

/// What a part request (UploadPart, UploadPartCopy) names: the part
/// number, the upload, the object's native key; and the part's lock, held.
async fn part_of<'a>(app: &'a App, request: &S3Request) -> Result<PartOf<'a>, S3Error> {
    let number = part_number(request)?;
    let (id, upload) = named_upload(app, request).await?;
    let key = checked_key(request)?;
    let lock_key = format!("\0mkv-part/{id}/{number}").into_bytes();
    let guard = super::lock(app, &lock_key).await?;
    let declared = upload
        .checksum
        .as_ref()
        .and_then(|(algorithm, _)| Algorithm::from_value(algorithm));
    Ok(PartOf {
        number,
        id,
        key,
        declared,
        _guard: guard,
    })
}

/// A part request's part: see `part_of`.
struct PartOf<'a> {
    number: u32,
    id: String,
    key: Vec<u8>,
    /// The checksum algorithm the upload declared at create.
    declared: Option<Algorithm>,
    _guard: KeyGuard<'a>,
}

/// An UploadPart of an upload that declared a checksum algorithm must not
/// name another (a header, a trailer, or the SDK's algorithm): refused
/// before its body is read, as S3 does, rather than at Complete.
fn check_part_algorithm(request: &S3Request, declared: Option<Algorithm>) -> Result<(), S3Error> {
    let Some(declared) = declared else { return Ok(()) };
    let mut named = Algorithm::ALL
        .into_iter()
        .filter(|algorithm| request.headers.amz(algorithm.header()).is_some())
        .collect::<Vec<_>>();
    named.extend(request.headers.amz("x-amz-trailer").and_then(Algorithm::from_trailer));
    named.extend(
        request
            .headers
            .amz("x-amz-sdk-checksum-algorithm")
            .and_then(Algorithm::from_value),
    );
    match named.into_iter().find(|algorithm| *algorithm != declared) {
        None => Ok(()),
        Some(other) => Err(S3Error::new(
            400,
            "InvalidRequest",
            format!(
                "Checksum Type mismatch occurred, expected checksum Type: {}, actual checksum Type: {}",
                declared.value().to_ascii_lowercase(),
                other.value().to_ascii_lowercase()
            ),
        )),
    }
}

pub async fn upload_part(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    let target = part_of(app, request).await?;
    check_part_algorithm(request, target.declared)?;
    let expected_md5 = content_md5(request)?;
    let keep_alive = head.keep_alive;
    let (mut body, declared) = request_body(app, connection, head, request)?;
    let part = write_part(app, &target, &mut body, declared, expected_md5).await;
    drop(body);
    let part = part?;
    let mut reply = Reply::empty(200).header("ETag", format_args!("\"{}\"", part.md5));
    if let Some((name, value)) = &part.checksum {
        reply = reply.header(name, value);
    }
    reply.write(connection, keep_alive, false);
    Ok(Sent::status(200))
}

/// UploadPartCopy: a part copied from a live object, whole or the range
/// `x-amz-copy-source-range` names, streamed from one of its replicas.
pub async fn upload_part_copy(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    let target = part_of(app, request).await?;
    let source = open_copy_source(app, request, |object| {
        let range = match request.headers.copy_source_range.as_deref() {
            None => None,
            Some(text) => Some(copy_range(text, object.size)?),
        };
        Ok((range, range.map_or(object.size, |range| range.last - range.first + 1)))
    })
    .await?;
    // A copied part gets the checksum its upload declared, computed as
    // it is copied (no client can send one), for Complete to combine.
    let mut copied = CopySource::new(source.download, target.declared);
    let part = write_part(app, &target, &mut copied, Some(source.length), None).await?;
    copied.finish();
    let checksum = part
        .checksum
        .as_ref()
        .and_then(|(name, value)| Algorithm::from_header(name).map(|algorithm| (algorithm, value.as_str())));
    Reply::xml(200, xml::copy_part(&part.md5, part.mtime_ms, checksum)).write(connection, head.keep_alive, false);
    Ok(Sent::status(200))
}

/// An `x-amz-copy-source-range` (`bytes=first-last`, both given) over a
/// source of `size` bytes.
fn copy_range(text: &str, size: u64) -> Result<ByteRange, S3Error> {
    let malformed = || {
        S3Error::invalid_argument(
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy",
        )
    };
    let (first, last) = text
        .trim()
        .strip_prefix("bytes=")
        .and_then(|range| range.split_once('-'))
        .ok_or_else(malformed)?;
    let first: u64 = first.trim().parse().map_err(|_| malformed())?;
    let last: u64 = last.trim().parse().map_err(|_| malformed())?;
    if first > last || last >= size {
        return Err(S3Error::new(
            416,
            "InvalidRange",
            "The requested range is not satisfiable",
        ));
    }
    Ok(ByteRange { first, last })
}

/// Write part `number` of upload `id` (of native `key`) from `source` to
/// every replica placement names for the key, and record it. The part's
/// last bytes go out only under the upload's lock, held until the part is
/// recorded: a CompleteMultipartUpload (which holds that lock while it
/// reads and streams the parts) never sees a part replaced under it, and
/// a part that arrives after the upload completed or was aborted replaces
/// nothing. The caller holds the part's lock.
async fn write_part<S: PieceSource>(
    app: &App,
    part: &PartOf<'_>,
    source: &mut S,
    declared: Option<u64>,
    expected_md5: Option<[u8; 16]>,
) -> Result<Part, S3Error> {
    let (id, number) = (part.id.as_str(), part.number);
    let entries = app.store.placement().place(&part.key);
    let path = state::part_path(id, number);
    let target = Target {
        entries: &entries,
        key_path: &path,
        declared,
        with_md5: true,
        expected_md5,
        allow_empty: true,
        connect_timeout: app.config.volume_timeout,
    };
    let mut gate = PartGate { app, id, guard: None };
    let written = replication::replicate(source, &target, &mut gate).await;
    let timeout = app.config.volume_timeout;
    let written = match written {
        Ok(written) => written,
        Err(failed) => {
            // Copies of this part that took new bytes no longer hold an
            // earlier upload of the same part: forget it.
            let touched: Vec<String> = entries
                .iter()
                .zip(&failed.settled)
                .filter(|(_, settled)| **settled != Settled::NotTaken)
                .map(|(entry, _)| entry.clone())
                .collect();
            if !touched.is_empty() {
                state::delete_part(&app.store, id, number).await?;
                let _ = replication::delete_all(&touched, &path, timeout).await;
            }
            return Err(write::WriteError::Replication(failed.error).into());
        }
    };
    let md5 = written.md5.expect("parts are hashed");
    let checksum = source.checksum().map(|(name, value)| {
        let name = name.strip_prefix(CHECKSUM_ENTRY_PREFIX).unwrap_or(&name).to_owned();
        (name, value)
    });
    let part = Part {
        size: written.bytes,
        md5: String::from_utf8_lossy(&hex_lower(&md5)).into_owned(),
        mtime_ms: now_ms(),
        volumes: entries.clone(),
        checksum,
    };
    state::put_part(&app.store, id, number, &part).await?;
    drop(gate);
    Ok(part)
}

/// The gate of a part: the upload's lock, taken before the part's last
/// bytes go out and held until the part is recorded, and the upload still
/// there under it.
struct PartGate<'a> {
    app: &'a App,
    id: &'a str,
    guard: Option<KeyGuard<'a>>,
}

impl Gate for PartGate<'_> {
    async fn before_last(&mut self, _sealed: &replication::Sealed) -> Result<(), ReplicationError> {
        let gate_error = |error| ReplicationError::Gate(error);
        let guard = super::lock(self.app, &upload_lock_key(self.id))
            .await
            .map_err(|_| gate_error(GateError::Busy))?;
        let upload = state::upload_async(&self.app.store, self.id)
            .await
            .map_err(|error| gate_error(GateError::Index(error)))?;
        if upload.is_none() {
            return Err(gate_error(GateError::Gone));
        }
        self.guard = Some(guard);
        Ok(())
    }
}

pub async fn list_parts(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    let (id, _) = named_upload(app, request).await?;
    let marker = u32::try_from(request.param_number("part-number-marker", 0)?).unwrap_or(u32::MAX);
    let max_parts = request
        .param_number("max-parts", LIST_ENTRIES_MAX)?
        .min(LIST_ENTRIES_MAX) as usize;
    let mut parts = state::parts(&app.store, &id, marker, max_parts + 1).await?;
    let truncated = parts.len() > max_parts;
    parts.truncate(max_parts);
    let entries: Vec<xml::PartEntry> = parts
        .iter()
        .map(|(number, part)| xml::PartEntry {
            number: *number,
            etag: part.md5.clone(),
            size: part.size,
            last_modified_ms: part.mtime_ms,
        })
        .collect();
    let body = xml::list_parts(&xml::ListParts {
        bucket: &request.bucket,
        key: &request.key,
        upload_id: &id,
        part_number_marker: marker,
        next_part_number_marker: entries.last().map_or(0, |part| part.number),
        max_parts,
        is_truncated: truncated,
        parts: &entries,
    });
    Reply::xml(200, body).write(connection, head.keep_alive, false);
    Ok(Sent::status(200))
}

pub async fn list_uploads(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    bucket::check_exists(app, &request.bucket).await?;
    let prefix = request.param("prefix").unwrap_or(b"");
    let key_marker = request.param("key-marker").unwrap_or(b"");
    let id_marker = request.param_text("upload-id-marker").unwrap_or("");
    let max_uploads = request
        .param_number("max-uploads", LIST_ENTRIES_MAX)?
        .min(LIST_ENTRIES_MAX) as usize;
    let listed = state::bucket_uploads(
        &app.store,
        &request.bucket,
        prefix,
        key_marker,
        id_marker,
        max_uploads + 1,
    )
    .await?;
    let truncated = listed.len() > max_uploads;
    let uploads: Vec<xml::UploadEntry> = listed
        .into_iter()
        .take(max_uploads)
        .map(|upload| xml::UploadEntry {
            key: upload.key,
            upload_id: upload.upload_id,
            initiated_ms: upload.initiated_ms,
        })
        .collect();
    let last = uploads.last().filter(|_| truncated);
    let body = xml::list_uploads(&xml::ListUploads {
        bucket: &request.bucket,
        prefix,
        key_marker,
        upload_id_marker: id_marker,
        next_key_marker: last.map(|upload| upload.key.as_slice()),
        next_upload_id_marker: last.map(|upload| upload.upload_id.as_str()),
        max_uploads,
        is_truncated: truncated,
        uploads: &uploads,
        encoding_url: request.param("encoding-type") == Some(b"url"),
    });
    Reply::xml(200, body).write(connection, head.keep_alive, false);
    Ok(Sent::status(200))
}

/// Remove upload `id`'s directory, with every part file in it, from
/// each volume entry that holds one of `parts` (or that placement names
/// for the upload's key: a part whose upload failed leaves no state but
/// may leave its file). The first error, if any.
async fn delete_upload_files(app: &App, id: &str, key: &[u8], parts: &[(u32, Part)]) -> Result<(), VolumeError> {
    let mut entries: Vec<String> = app.store.placement().place(key);
    for (_, part) in parts {
        for entry in &part.volumes {
            if !entries.contains(entry) {
                entries.push(entry.clone());
            }
        }
    }
    // A WebDAV DELETE of a collection (the trailing slash) removes it
    // whole; nginx answers 404 when it is already gone.
    let directory = state::upload_directory(id);
    replication::delete_all(&entries, &directory, app.config.volume_timeout).await
}

/// Every part of upload `id`.
async fn all_parts(app: &App, id: &str) -> Result<Vec<(u32, Part)>, S3Error> {
    Ok(state::parts(&app.store, id, 0, PART_NUMBER_MAX as usize + 1).await?)
}

pub async fn abort(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    let (id, upload) = named_upload(app, request).await?;
    let lock_key = upload_lock_key(&id);
    let _guard = super::lock(app, &lock_key).await?;
    // Completed (or aborted) while this request waited for the lock.
    if state::upload_async(&app.store, &id).await?.is_none() {
        return Err(S3Error::no_such_upload());
    }
    remove_upload(app, &id, &upload).await?;
    Reply::empty(204).write(connection, head.keep_alive, false);
    Ok(Sent::status(204))
}

/// Abort every upload open in `bucket` (DeleteBucket: S3 deletes a bucket
/// whose only content is uploads in progress, and they go with it), each
/// under its upload's lock, as AbortMultipartUpload does.
pub async fn abort_all_in(app: &App, bucket: &str) -> Result<(), S3Error> {
    loop {
        let listed = state::bucket_uploads(&app.store, bucket, b"", b"", "", LIST_ENTRIES_MAX as usize).await?;
        if listed.is_empty() {
            return Ok(());
        }
        for upload in listed {
            let _guard = super::lock(app, &upload_lock_key(&upload.upload_id)).await?;
            if let Some(state) = state::upload_async(&app.store, &upload.upload_id).await? {
                remove_upload(app, &upload.upload_id, &state).await?;
            }
        }
    }
}

/// Remove upload `id` whole: its files (the directory on every volume),
/// then its state. If a volume cannot be reached the upload stays, and an
/// abort (or the expiry sweep) retried later removes what is left. The
/// caller holds the upload's lock.
async fn remove_upload(app: &App, id: &str, upload: &Upload) -> Result<(), S3Error> {
    let parts = all_parts(app, id).await?;
    let key = super::request::native_key(&upload.bucket, &upload.key);
    delete_upload_files(app, id, &key, &parts).await?;
    let upload_keys = state::upload_keys(id, upload);
    let part_keys: Vec<Vec<u8>> = parts.iter().map(|(number, _)| state::part_key(id, *number)).collect();
    app.store.apply_async(&state::removal(&upload_keys, &part_keys)).await?;
    Ok(())
}

/// How often the expiry sweep walks the uploads.
const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);
/// The first sweep waits this long after start, so a restart is not
/// slowed by it.
const SWEEP_DELAY: Duration = Duration::from_secs(10);
/// Uploads read from the index per step of a sweep: the walk is bounded
/// per step, and the reactor serves between steps.
const SWEEP_BATCH: usize = 100;

/// Sweep the uploads every `SWEEP_INTERVAL`, for as long as the master
/// serves (reactor 0 runs it).
pub async fn expire_forever(app: std::sync::Arc<App>) {
    let expiry = app.config.s3_upload_expiry;
    if expiry.is_zero() {
        return;
    }
    // An expiry shorter than the interval is swept as often as it lasts.
    monoio::time::sleep(SWEEP_DELAY.min(expiry)).await;
    loop {
        let (expired, failed) = sweep(&app, expiry).await;
        if expired > 0 || failed > 0 {
            eprintln!("s3: {expired} abandoned multipart uploads removed, {failed} could not be (tried again later)");
        }
        monoio::time::sleep(SWEEP_INTERVAL.min(expiry)).await;
    }
}

/// One walk over every upload: those begun more than `expiry` ago are
/// removed (files and state, under the upload's lock: one being completed
/// or aborted is left to that request); the others are given their
/// bucket listing entry if they predate it. Returns (removed, failed).
pub async fn sweep(app: &App, expiry: Duration) -> (usize, usize) {
    let cutoff = now_ms().saturating_sub(expiry.as_millis() as u64);
    let (mut removed, mut failed) = (0, 0);
    let mut after = String::new();
    loop {
        let batch = match state::uploads(&app.store, &after, SWEEP_BATCH).await {
            Ok(batch) => batch,
            Err(error) => {
                eprintln!("s3: the upload sweep cannot read the index: {error}");
                return (removed, failed + 1);
            }
        };
        let Some((last, _)) = batch.last() else {
            return (removed, failed);
        };
        after = last.clone();
        for (id, upload) in &batch {
            let outcome = sweep_one(app, id, upload, upload.initiated_ms < cutoff).await;
            match outcome {
                Ok(gone) => removed += usize::from(gone),
                Err(error) => {
                    failed += 1;
                    eprintln!("s3: multipart upload {id}: {}", error.message);
                }
            }
        }
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Remove one upload if `expired`, else give it its bucket listing entry
/// if it predates them; under the upload's lock, skipped while a request
/// holds it. Returns whether the upload was removed.
async fn sweep_one(app: &App, id: &str, upload: &Upload, expired: bool) -> Result<bool, S3Error> {
    let Some(_guard) = app.store.try_lock_async(&upload_lock_key(id)).await? else {
        return Ok(false);
    };
    // Completed or aborted since the batch was read: nothing to do.
    if state::upload_async(&app.store, id).await?.is_none() {
        return Ok(false);
    }
    if expired {
        remove_upload(app, id, upload).await?;
        return Ok(true);
    }
    if !state::is_listed(&app.store, id, upload).await? {
        state::list_upload(&app.store, id, upload).await?;
    }
    Ok(false)
}

/// The parts a CompleteMultipartUpload lists, checked against those
/// uploaded: order, ETags, sizes.
fn checked_parts(listed: &[(u32, String)], uploaded: &[(u32, Part)]) -> Result<Vec<(u32, Part)>, S3Error> {
    if listed.is_empty() {
        return Err(S3Error::malformed_xml("the upload lists no parts"));
    }
    if listed.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
        return Err(S3Error::new(
            400,
            "InvalidPartOrder",
            "The list of parts was not in ascending order. The parts list must be specified in order by part number.",
        ));
    }
    let by_number: HashMap<u32, &Part> = uploaded.iter().map(|(number, part)| (*number, part)).collect();
    let invalid = || {
        S3Error::new(
            400,
            "InvalidPart",
            "One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part's entity tag.",
        )
    };
    let mut chosen = Vec::with_capacity(listed.len());
    for (position, (number, etag)) in listed.iter().enumerate() {
        let part = by_number.get(number).ok_or_else(invalid)?;
        if !part.md5.eq_ignore_ascii_case(etag) {
            return Err(invalid());
        }
        if position + 1 < listed.len() && part.size < PART_BYTES_MIN {
            return Err(S3Error::new(
                400,
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed object size.",
            ));
        }
        chosen.push((*number, (*part).clone()));
    }
    Ok(chosen)
}

/// The checksum of a completed upload: each listed part checksum must be
/// the one its part was uploaded with (else InvalidPart), and when every
/// chosen part has one of the same algorithm, the value's is S3's
/// checksum of checksums (`COMPOSITE`, `base64-N`).
fn completed_checksum(
    completed: &[xml::CompletedPart],
    parts: &[(u32, Part)],
    declared: Option<(Algorithm, ChecksumType)>,
) -> Result<Option<(Algorithm, String, ChecksumType)>, S3Error> {
    let invalid = || {
        S3Error::new(
            400,
            "InvalidPart",
            "One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part's entity tag.",
        )
    };
    for (listed, (_, part)) in completed.iter().zip(parts) {
        if let Some((algorithm, value)) = &listed.checksum {
            let stored = part.checksum.as_ref().filter(|(name, _)| name == algorithm.header());
            if stored.is_none_or(|(_, stored)| stored != value) {
                return Err(invalid());
            }
        }
    }
    if let Some((algorithm, kind)) = declared {
        // Declared at create: every part must carry it.
        let mut raw = Vec::with_capacity(parts.len());
        for (number, part) in parts {
            let value = part
                .checksum
                .as_ref()
                .filter(|(name, _)| name == algorithm.header())
                .and_then(|(_, value)| checksum::parse_expected(algorithm, value).ok());
            match value {
                Some(bytes) => raw.push((bytes, part.size)),
                None => {
                    return Err(S3Error::new(
                        400,
                        "InvalidRequest",
                        format!(
                            "The upload was created using a {} checksum. The complete request must include the checksum for each part. It was missing for part {number} in the request.",
                            algorithm.value().to_ascii_lowercase()
                        ),
                    ))
                }
            }
        }
        let value = match kind {
            ChecksumType::Composite => checksum::composite(algorithm, raw.iter().map(|(bytes, _)| bytes.as_slice())),
            ChecksumType::FullObject => {
                let whole =
                    checksum::combine_full_object(algorithm, raw.iter().map(|(bytes, size)| (bytes.as_slice(), *size)))
                        .ok_or_else(|| S3Error::internal("a full-object checksum of a digest"))?;
                checksum::base64(&whole)
            }
        };
        return Ok(Some((algorithm, value, kind)));
    }
    let Some((first_name, _)) = parts.first().and_then(|(_, part)| part.checksum.as_ref()) else {
        return Ok(None);
    };
    let Some(algorithm) = Algorithm::from_header(first_name) else {
        return Ok(None);
    };
    let mut raw = Vec::with_capacity(parts.len());
    for (_, part) in parts {
        match &part.checksum {
            Some((name, value)) if name == first_name => match checksum::parse_expected(algorithm, value) {
                Ok(bytes) => raw.push(bytes),
                Err(_) => return Ok(None),
            },
            _ => return Ok(None),
        }
    }
    Ok(Some((
        algorithm,
        checksum::composite(algorithm, raw.iter().map(Vec::as_slice)),
        ChecksumType::Composite,
    )))
}

/// A whole-object checksum sent with CompleteMultipartUpload
/// (`x-amz-checksum-<algorithm>`) is checked against the one the parts
/// make (`computed`), before anything is stored: BadDigest when it differs
/// or when the parts make none of that algorithm (it cannot be verified
/// without reading the object, and is never taken on trust). A composite
/// value may be sent with or without its `-N` part count.
fn check_complete_checksum(
    request: &S3Request,
    computed: Option<&(Algorithm, String, ChecksumType)>,
) -> Result<(), S3Error> {
    for algorithm in Algorithm::ALL {
        let Some(sent) = request.headers.amz(algorithm.header()) else {
            continue;
        };
        let matches = computed.is_some_and(|(made, value, _)| {
            *made == algorithm && (sent == value || value.split_once('-').is_some_and(|(bare, _)| sent == bare))
        });
        if !matches {
            return Err(S3Error::new(
                400,
                "BadDigest",
                format!(
                    "The {} you specified did not match the calculated checksum.",
                    algorithm.value().to_ascii_lowercase()
                ),
            ));
        }
    }
    Ok(())
}

/// S3's ETag of a multipart value: the md5 of the parts' binary md5s,
/// and their count.
fn multipart_etag(part_md5s: &[[u8; 16]]) -> String {
    let mut md5 = Md5::new();
    for digest in part_md5s {
        md5.update(digest);
    }
    let digest: [u8; 16] = md5.finalize().into();
    format!("{}-{}", String::from_utf8_lossy(&hex_lower(&digest)), part_md5s.len())
}

/// The md5 a part's ETag (32 hex digits, any case) names; None for any
/// other text, which names no part this master stored.
fn etag_md5(etag: &str) -> Option<[u8; 16]> {
    let bytes = etag.as_bytes();
    if bytes.len() != 32 {
        return None;
    }
    let mut md5 = [0u8; 16];
    for (byte, pair) in md5.iter_mut().zip(bytes.chunks_exact(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(md5)
}

/// A CompleteMultipartUpload of an upload that is gone: a retry of one
/// that succeeded (its answer was lost) finds the key holding exactly the
/// value those parts made, and gets the same answer; anything else is
/// NoSuchUpload.
async fn complete_again(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    let body = read_complete_body(app, connection, head, request).await?;
    let listed = xml::parse_complete(&body).map_err(|_| S3Error::no_such_upload())?;
    let md5s: Option<Vec<[u8; 16]>> = listed.iter().map(|(_, etag)| etag_md5(etag)).collect();
    let etag = multipart_etag(&md5s.ok_or_else(S3Error::no_such_upload)?);
    let key = request.native_key();
    let live = app.store.get_async(&key).await?.is_some_and(|record| record.is_live());
    let meta_etag = app.store.meta_async(&key).await?.and_then(|meta| meta.etag);
    if !live || meta_etag.as_deref() != Some(etag.as_str()) {
        return Err(S3Error::no_such_upload());
    }
    let location = format!("/{}/{}", request.bucket, String::from_utf8_lossy(&request.key));
    let body = xml::complete_multipart(&location, &request.bucket, &request.key, &etag);
    Reply::xml(200, body).write(connection, head.keep_alive, false);
    Ok(Sent::status(200))
}

pub async fn complete(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<Sent, S3Error> {
    let (id, upload) = match named_upload(app, request).await {
        Ok(named) => named,
        Err(error) if error.code == "NoSuchUpload" => return complete_again(app, connection, head, request).await,
        Err(error) => return Err(error),
    };
    let key = checked_key(request)?;
    let lock_key = upload_lock_key(&id);
    let _upload_guard = super::lock(app, &lock_key).await?;
    // Completed (or aborted) while this request waited for the lock: a
    // retry of a completion that succeeded gets the same answer.
    if state::upload_async(&app.store, &id).await?.is_none() {
        return complete_again(app, connection, head, request).await;
    }
    let body = read_complete_body(app, connection, head, request).await?;
    let completed = xml::parse_complete_parts(&body).map_err(|error| S3Error::malformed_xml(error.to_string()))?;
    let listed: Vec<(u32, String)> = completed.iter().map(|part| (part.number, part.etag.clone())).collect();
    let uploaded = all_parts(app, &id).await?;
    let parts = checked_parts(&listed, &uploaded)?;
    let declared = upload
        .checksum
        .as_ref()
        .and_then(|(algorithm, kind)| Some((Algorithm::from_value(algorithm)?, ChecksumType::from_value(kind)?)));
    let made = completed_checksum(&completed, &parts, declared)?;
    check_complete_checksum(request, made.as_ref())?;
    let checksum_type = made.as_ref().map(|(_, _, kind)| *kind);
    let checksum = made.map(|(algorithm, value, _)| (algorithm, value));
    let md5s: Option<Vec<[u8; 16]>> = parts.iter().map(|(_, part)| etag_md5(&part.md5)).collect();
    let etag = multipart_etag(&md5s.ok_or_else(|| S3Error::internal("a stored part's md5 is corrupt"))?);
    let total: u64 = parts.iter().map(|(_, part)| part.size).sum();
    let _key_guard = super::lock(app, &key).await?;
    write_precondition(app, request, &key).await?;
    let upload_keys = state::upload_keys(&id, &upload);
    let part_keys: Vec<Vec<u8>> = uploaded
        .iter()
        .map(|(number, _)| state::part_key(&id, *number))
        .collect();
    let changes = state::removal(&upload_keys, &part_keys);
    let meta = Meta {
        etag: Some(etag.clone()),
        content_type: upload.content_type.clone(),
        user: upload
            .user
            .iter()
            .cloned()
            .chain(super::parts::entry(parts.iter().map(|(_, part)| part.size)))
            .collect(),
        ..Meta::default()
    };
    let plan = Plan {
        changes: &changes,
        ..Plan::s3_value(Some(total), meta)
    };
    let mut source = PartsSource {
        app,
        id: &id,
        parts: &parts,
        next: 0,
        download: None,
        delivered: 0,
        checksum: checksum.clone(),
    };
    write::store_value(app, &key, &mut source, plan).await?;
    if let Some(download) = source.download.take() {
        download.finish();
    }
    if let Err(error) = delete_upload_files(app, &id, &key, &uploaded).await {
        eprintln!("multipart upload {id} completed; some part files are left: {error}");
    }
    let location = format!("/{}/{}", request.bucket, String::from_utf8_lossy(&request.key));
    let object_checksum = checksum.as_ref().map(|(algorithm, value)| xml::ObjectChecksum {
        algorithm: *algorithm,
        value,
        checksum_type: checksum_type.unwrap_or(ChecksumType::Composite),
    });
    let body = xml::complete_multipart_checksummed(&location, &request.bucket, &request.key, &etag, object_checksum);
    Reply::xml(200, body).write(connection, head.keep_alive, false);
    Ok(Sent::status(200))
}

/// The listed parts of an upload, read in order from a replica of each.
struct PartsSource<'a> {
    app: &'a App,
    id: &'a str,
    parts: &'a [(u32, Part)],
    /// The next part to open.
    next: usize,
    download: Option<Download>,
    delivered: u64,
    /// The value's checksum of checksums, kept with it (`store_value`).
    checksum: Option<(Algorithm, String)>,
}

impl PartsSource<'_> {
    /// Open the next part from the first replica that has it whole.
    async fn open_next(&mut self) -> Result<Option<Download>, ReplicationError> {
        let Some((number, part)) = self.parts.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        let path = state::part_path(self.id, *number);
        let mut failure = None;
        for entry in &part.volumes {
            let file = entry_path(entry, &path);
            let begun = Download::begin(
                entry_host(entry),
                &file,
                self.app.config.volume_timeout,
                VOLUME_IO_TIMEOUT,
            )
            .await;
            match begun {
                Ok(Some(download)) if download.length() == Some(part.size) => return Ok(Some(download)),
                Ok(_) => {
                    failure = Some(VolumeError::Protocol(
                        entry.clone(),
                        "a part's copy is missing or has the wrong length",
                    ))
                }
                Err(error) => failure = Some(error),
            }
        }
        Err(ReplicationError::Source(failure.unwrap_or_else(|| {
            VolumeError::Protocol(String::new(), "a part has no replica")
        })))
    }
}

impl PieceSource for PartsSource<'_> {
    async fn next_piece(&mut self, bytes_max: usize) -> Result<Option<Bytes>, ReplicationError> {
        loop {
            if self.download.is_none() {
                match self.open_next().await? {
                    Some(download) => self.download = Some(download),
                    None => return Ok(None),
                }
            }
            let download = self.download.as_mut().expect("opened above");
            match download.next(bytes_max).await.map_err(ReplicationError::Source)? {
                Some(piece) => {
                    self.delivered += piece.len() as u64;
                    return Ok(Some(piece));
                }
                None => {
                    if let Some(download) = self.download.take() {
                        download.finish();
                    }
                }
            }
        }
    }

    fn delivered(&self) -> u64 {
        self.delivered
    }

    fn checksum(&self) -> Option<(String, String)> {
        let (algorithm, value) = self.checksum.clone()?;
        Some(checksum_entry(algorithm, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(md5: &str, size: u64) -> Part {
        Part {
            size,
            md5: md5.to_owned(),
            mtime_ms: 0,
            volumes: vec!["v:1".into()],
            checksum: None,
        }
    }

    #[test]
    fn completion_checks_order_etags_and_sizes() {
        let big = PART_BYTES_MIN;
        let uploaded = vec![(1, part("aa", big)), (2, part("bb", 1)), (3, part("cc", big))];
        let listed = |items: &[(u32, &str)]| -> Vec<(u32, String)> {
            items.iter().map(|(number, etag)| (*number, etag.to_string())).collect()
        };
        assert!(checked_parts(&listed(&[(1, "aa"), (2, "bb")]), &uploaded).is_ok());
        assert!(checked_parts(&listed(&[(1, "aa"), (3, "cc")]), &uploaded).is_ok());
        let code = |items: &[(u32, &str)]| checked_parts(&listed(items), &uploaded).unwrap_err().code;
        assert_eq!(code(&[(2, "bb"), (1, "aa")]), "InvalidPartOrder");
        assert_eq!(code(&[(1, "aa"), (1, "aa")]), "InvalidPartOrder");
        assert_eq!(code(&[(1, "ab")]), "InvalidPart");
        assert_eq!(code(&[(4, "dd")]), "InvalidPart");
        assert_eq!(code(&[(2, "bb"), (3, "cc")]), "EntityTooSmall");
        assert_eq!(code(&[]), "MalformedXML");
    }

    #[test]
    fn multipart_etag_is_the_md5_of_the_part_md5s() {
        let parts = [
            (1, part("0123456789abcdef0123456789abcdef", 1)),
            (2, part("fedcba9876543210fedcba9876543210", 1)),
        ];
        let mut md5 = Md5::new();
        md5.update([
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc,
            0xba, 0x98, 0x76, 0x54, 0x32, 0x10, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10,
        ]);
        let digest: [u8; 16] = md5.finalize().into();
        let expected = format!("{}-2", String::from_utf8_lossy(&hex_lower(&digest)));
        let md5s: Vec<[u8; 16]> = parts.iter().map(|(_, part)| etag_md5(&part.md5).unwrap()).collect();
        assert_eq!(multipart_etag(&md5s), expected);
    }

    #[test]
    fn etags_that_are_not_32_hex_digits_name_no_part() {
        assert_eq!(etag_md5("aé"), None);
        assert_eq!(etag_md5("0123456789abcdef0123456789abcdeé"), None);
        assert_eq!(etag_md5("0123456789abcdef0123456789abcdeg"), None);
        assert_eq!(
            etag_md5("0123456789ABCDEF0123456789abcdef").map(|md5| md5[1]),
            Some(0x23)
        );
    }
}
