//! Verify: scrub the store, and with `--repair` mend what it finds.
//!
//! For every live key (`verify_key`), every replica its record names is
//! HEADed: it must be there with the value's size (the size in the key's
//! metadata; for a key without metadata, the size most replicas agree on).
//! With `--md5` each copy that passes is read back and its md5 compared
//! with the record's (without one, with the md5 most copies agree on). A
//! volume that does not answer, or answers with an error, makes its replica
//! "unreachable": a timeout is never "missing", and nothing is repaired on
//! that evidence. With `--repair`, each missing, short or corrupt replica is
//! copied over from a good one (one that passed every check made, and
//! whose bytes hash to the record's md5 on the way through: a bad source
//! never reaches the target, its body is abandoned before the last piece),
//! under the key's write lock, and HEADed again. A key with no good copy is
//! reported and left alone.
//!
//! Soft-deleted keys are not checked (their bytes are kept for RELINK and
//! may be a failed PUT's leftovers); `--purge-unlinked AGE` hard-deletes
//! those written longer ago than AGE (`purge_unlinked`).
//!
//! Then the volumes are walked (nginx's JSON autoindex, as `rebuild` walks
//! them) for orphans (`orphan_of`): a file at a key's path that no record
//! names on that volume entry (a record in any state, soft-deleted
//! included, keeps its files), or an S3 part file whose upload is gone,
//! older than `--orphan-grace` so writes in flight are left alone. With
//! `--repair` orphans are deleted (after checking again under the key's
//! lock); otherwise they are reported.
//!
//! Everything a key needs is in `verify_key`, `purge_unlinked` and
//! `remove_orphan`, over the shared `App`, so a running master can call them
//! too. One bad key, replica or directory is reported and counted, and only
//! the exit code shows it; only an index failure ends the run. Each repair
//! copies the same bytes to the same place and each removal deletes a file
//! that stays an orphan, so a run killed anywhere and run again converges.

use std::fmt;
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use futures_util::stream::{self, FuturesUnordered, StreamExt};
use md5::{Digest, Md5};

use crate::app::App;
use crate::config::Config;
use crate::error::Error;
use crate::index::IndexError;
use crate::placement::{entry_host, hex_lower, key2path, path_is_own};
use crate::progress::Progress;
use crate::rebalance::Records;
use crate::rebuild::{classify, list, volume_of, Directory, Found, Level, Listed, ListingError};
use crate::record::{Record, RecordError, HASH_HEX_BYTES};
use crate::replication::{entry_path, PIECE_BYTES, VOLUME_IO_TIMEOUT};
use crate::s3::state::{is_upload_id, upload, PARTS_DIRECTORY};
use crate::volume::{self, Download, Upload, VolumeError};
use crate::write::delete_value;

/// A value's md5, lower-case hex, as records hold it.
type Md5Hex = [u8; HASH_HEX_BYTES];

/// What a verify run does besides looking.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Read every copy back and check its md5.
    pub md5: bool,
    /// Restore bad replicas, delete orphans.
    pub repair: bool,
    /// Files younger than this are never orphans.
    pub orphan_grace: Duration,
    /// Hard-delete soft-deleted keys written longer ago than this.
    pub purge_unlinked: Option<Duration>,
    /// Connect timeout for volume requests (`-voltimeout`).
    pub timeout: Duration,
}

impl Settings {
    /// The settings `mkv verify`'s flags give.
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            md5: config.md5,
            repair: config.repair,
            orphan_grace: config.orphan_grace,
            purge_unlinked: config.purge_unlinked,
            timeout: config.volume_timeout,
        }
    }
}

/// What one replica held when it was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replica {
    /// There, with the right size (and md5, when read).
    Ok,
    /// The volume answered 404.
    Missing,
    /// There, with `found` bytes; `expected` None when the replicas
    /// disagree and nothing says which is right.
    WrongSize { found: u64, expected: Option<u64> },
    /// Right size, wrong bytes (`--md5`).
    Corrupt,
    /// The volume did not answer, or failed: the replica's state is unknown.
    Unreachable(String),
}

impl Replica {
    /// Whether a repair should replace this replica.
    fn is_bad(&self) -> bool {
        matches!(self, Replica::Missing | Replica::WrongSize { .. } | Replica::Corrupt)
    }
}

impl fmt::Display for Replica {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Replica::Ok => write!(formatter, "ok"),
            Replica::Missing => write!(formatter, "missing"),
            Replica::WrongSize {
                found,
                expected: Some(expected),
            } => write!(formatter, "wrong size: {found} bytes, the value has {expected}"),
            Replica::WrongSize { found, expected: None } => {
                write!(formatter, "{found} bytes, and the replicas disagree on the size")
            }
            Replica::Corrupt => write!(formatter, "corrupt: its md5 is not the value's"),
            Replica::Unreachable(error) => write!(formatter, "unreachable: {error}"),
        }
    }
}

/// Why bad replicas of a key were left as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotRepaired {
    /// No replica passed every check.
    NoGoodCopy,
    /// Another write holds the key's lock.
    Busy,
    /// The record changed since it was checked.
    Changed,
    /// The key's file name is not its own (`placement::path_is_own`):
    /// writing it could overwrite another key's value.
    SharedPath,
}

impl fmt::Display for NotRepaired {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            NotRepaired::NoGoodCopy => "no good copy to repair from",
            NotRepaired::Busy => "not repaired: another write of the key is in progress",
            NotRepaired::Changed => "not repaired: the record changed while it was checked",
            NotRepaired::SharedPath => "not repaired: the key's file name is shared with other keys",
        })
    }
}

/// What verifying one key found and did.
#[derive(Debug, Default)]
pub struct KeyReport {
    /// Each recorded entry and what it held when checked, in record order.
    pub replicas: Vec<(String, Replica)>,
    /// Entries repaired (copied over and confirmed), with their source.
    pub repaired: Vec<(String, String)>,
    /// Entries whose repair failed, and why.
    pub failed: Vec<(String, String)>,
    /// Why bad replicas were not repaired, if they were not.
    pub not_repaired: Option<NotRepaired>,
}

/// What the value of a key is, as far as the checks tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Expected {
    size: u64,
    /// The md5 copies must hash to: the record's, or (with `--md5`) the one
    /// the copies agree on; None when nothing says.
    md5: Option<Md5Hex>,
}

/// The value held by more of `values` than any other value, if one is.
fn majority<T: Copy + Eq>(values: impl IntoIterator<Item = T>) -> Option<T> {
    let mut counts: Vec<(T, usize)> = Vec::new();
    for value in values {
        match counts.iter_mut().find(|(seen, _)| *seen == value) {
            Some((_, count)) => *count += 1,
            None => counts.push((value, 1)),
        }
    }
    counts.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    match counts.as_slice() {
        [] => None,
        [(only, _)] => Some(*only),
        [(first, most), (_, next), ..] => (most > next).then_some(*first),
    }
}

/// What each replica holds, from what its HEAD answered (its size, None
/// on 404, or why it failed), and the value's size: `meta_size`, or the
/// size most replicas have (pure).
fn judge(heads: &[Result<Option<u64>, String>], meta_size: Option<u64>) -> (Vec<Replica>, Option<u64>) {
    let sizes = heads.iter().filter_map(|head| head.as_ref().ok().copied().flatten());
    let expected = meta_size.or_else(|| majority(sizes));
    let replicas = heads
        .iter()
        .map(|head| match head {
            Err(error) => Replica::Unreachable(error.clone()),
            Ok(None) => Replica::Missing,
            Ok(Some(found)) if Some(*found) == expected => Replica::Ok,
            Ok(Some(found)) => Replica::WrongSize {
                found: *found,
                expected,
            },
        })
        .collect();
    (replicas, expected)
}

/// HEAD every replica: its size, None on 404, an error otherwise.
async fn head_all(entries: &[String], path: &str, timeout: Duration) -> Vec<Result<Option<u64>, String>> {
    let heads = entries.iter().map(|entry| async move {
        let info = volume::head(entry_host(entry), &entry_path(entry, path), timeout).await;
        info.map(|info| info.map(|info| info.length))
            .map_err(|error| error.to_string())
    });
    join_all(heads).await
}

/// The md5 of the file at `path` on `entry`, read through; None on 404.
async fn read_md5(entry: &str, path: &str, timeout: Duration) -> Result<Option<Md5Hex>, VolumeError> {
    let path = entry_path(entry, path);
    let download = Download::begin(entry_host(entry), &path, timeout, VOLUME_IO_TIMEOUT);
    let Some(mut download) = download.await? else {
        return Ok(None);
    };
    let mut md5 = Md5::new();
    while let Some(piece) = download.next(PIECE_BYTES).await? {
        md5.update(&piece);
    }
    download.finish();
    Ok(Some(hex_lower(&md5.finalize().into())))
}

/// Read back every replica judged Ok and mark those whose md5 is not the
/// value's Corrupt. Returns the md5 the value has, when known.
async fn check_md5s(
    entries: &[String],
    replicas: &mut [Replica],
    path: &str,
    recorded: Option<Md5Hex>,
    timeout: Duration,
) -> Option<Md5Hex> {
    let reads = entries.iter().zip(replicas.iter()).map(|(entry, replica)| async move {
        match replica {
            Replica::Ok => Some(read_md5(entry, path, timeout).await),
            _ => None,
        }
    });
    let md5s: Vec<Option<Result<Option<Md5Hex>, VolumeError>>> = join_all(reads).await;
    let agreed = recorded.or_else(|| majority(md5s.iter().filter_map(|md5| md5.as_ref()?.as_ref().ok().copied()?)));
    for (replica, md5) in replicas.iter_mut().zip(md5s) {
        match md5 {
            None => {}
            Some(Ok(Some(md5))) if Some(md5) == agreed => {}
            Some(Ok(Some(_))) => *replica = Replica::Corrupt,
            // It vanished between the HEAD and the read.
            Some(Ok(None)) => *replica = Replica::Missing,
            Some(Err(error)) => *replica = Replica::Unreachable(error.to_string()),
        }
    }
    agreed
}

/// Check every replica of the live `key` (recorded as `record`) and, with
/// `--repair`, restore the bad ones from a good one. A failure of the index
/// is the only error; everything else is in the report.
pub async fn verify_key(app: &App, settings: &Settings, key: &[u8], record: &Record) -> Result<KeyReport, IndexError> {
    let path = key2path(key);
    let meta_size = app.store.meta(key)?.map(|meta| meta.size);
    let heads = head_all(&record.volumes, &path, settings.timeout).await;
    let (mut replicas, size) = judge(&heads, meta_size);
    let mut md5 = record.hash;
    if settings.md5 {
        md5 = check_md5s(&record.volumes, &mut replicas, &path, record.hash, settings.timeout).await;
    }
    let mut report = KeyReport {
        replicas: record.volumes.iter().cloned().zip(replicas).collect(),
        ..KeyReport::default()
    };
    if !report.replicas.iter().any(|(_, replica)| replica.is_bad()) {
        return Ok(report);
    }
    let sources: Vec<String> = report
        .replicas
        .iter()
        .filter(|(_, replica)| *replica == Replica::Ok)
        .map(|(entry, _)| entry.clone())
        .collect();
    let Some(size) = size.filter(|_| !sources.is_empty()) else {
        report.not_repaired = Some(NotRepaired::NoGoodCopy);
        return Ok(report);
    };
    if !settings.repair {
        return Ok(report);
    }
    if !path_is_own(key) {
        report.not_repaired = Some(NotRepaired::SharedPath);
        return Ok(report);
    }
    let Some(_guard) = app.store.try_lock(key) else {
        report.not_repaired = Some(NotRepaired::Busy);
        return Ok(report);
    };
    if app.store.get(key)?.as_ref() != Some(record) {
        report.not_repaired = Some(NotRepaired::Changed);
        return Ok(report);
    }
    let expected = Expected { size, md5 };
    let targets: Vec<String> = report
        .replicas
        .iter()
        .filter(|(_, replica)| replica.is_bad())
        .map(|(entry, _)| entry.clone())
        .collect();
    let repairs = targets
        .iter()
        .map(|target| repair_replica(&sources, target, &path, expected, settings.timeout));
    for (target, repaired) in targets.iter().zip(join_all(repairs).await) {
        match repaired {
            Ok(source) => report.repaired.push((target.clone(), source)),
            Err(error) => report.failed.push((target.clone(), error)),
        }
    }
    Ok(report)
}

/// Why one copy from a source to a target failed.
enum CopyError {
    /// The source is not a good copy after all (or went away): try another.
    Source(String),
    /// The target failed.
    Target(VolumeError),
}

/// Copy the value to `target` from the first of `sources` that is good,
/// then HEAD it. Returns the source used.
async fn repair_replica(
    sources: &[String],
    target: &str,
    path: &str,
    expected: Expected,
    timeout: Duration,
) -> Result<String, String> {
    let mut why = String::from("no source");
    for source in sources {
        match copy_value(source, target, path, expected, timeout).await {
            Ok(()) => {
                let head = volume::head(entry_host(target), &entry_path(target, path), timeout).await;
                return match head {
                    Ok(Some(info)) if info.length == expected.size => Ok(source.clone()),
                    Ok(Some(info)) => Err(format!("copied, but it now has {} bytes", info.length)),
                    Ok(None) => Err("copied, but it is not there".to_owned()),
                    Err(error) => Err(format!("copied, but the check failed: {error}")),
                };
            }
            Err(CopyError::Source(error)) => why = format!("source {source}: {error}"),
            Err(CopyError::Target(error)) => return Err(error.to_string()),
        }
    }
    Err(why)
}

/// Stream the value at `path` from `source` to `target`. Each piece goes out
/// only once the next one is read, so the last piece is in hand when the
/// size and md5 are checked: a source that fails them never completes the
/// target's body, and the volume discards it (the target stays as it was).
async fn copy_value(
    source: &str,
    target: &str,
    path: &str,
    expected: Expected,
    timeout: Duration,
) -> Result<(), CopyError> {
    let source_error = |error: VolumeError| CopyError::Source(error.to_string());
    let source_path = entry_path(source, path);
    let download = Download::begin(entry_host(source), &source_path, timeout, VOLUME_IO_TIMEOUT);
    let mut download = download
        .await
        .map_err(source_error)?
        .ok_or_else(|| CopyError::Source("the copy vanished".to_owned()))?;
    if download.length() != Some(expected.size) {
        return Err(CopyError::Source("its size changed".to_owned()));
    }
    let target_path = entry_path(target, path);
    let mut md5 = Md5::new();
    let mut upload: Option<Upload> = None;
    let mut piece = download
        .next(PIECE_BYTES)
        .await
        .map_err(source_error)?
        .unwrap_or_default();
    loop {
        md5.update(&piece);
        let next = download.next(PIECE_BYTES).await.map_err(source_error)?;
        if next.is_none() {
            let digest = hex_lower(&md5.clone().finalize().into());
            let matches = expected.md5.is_none_or(|md5| md5 == digest);
            if download.delivered() != expected.size || !matches {
                if let Some(upload) = upload {
                    upload.settle().await;
                }
                return Err(CopyError::Source("its bytes are not the value's".to_owned()));
            }
        }
        match upload.as_mut() {
            Some(upload) => upload.send(piece).await.map_err(CopyError::Target)?,
            None => {
                let begun = Upload::begin_with(
                    entry_host(target),
                    &target_path,
                    Some(expected.size),
                    piece,
                    timeout,
                    VOLUME_IO_TIMEOUT,
                );
                upload = Some(begun.await.map_err(CopyError::Target)?);
            }
        }
        match next {
            Some(next) => piece = next,
            None => break,
        }
    }
    download.finish();
    upload
        .expect("the first piece began the upload")
        .finish()
        .await
        .map_err(CopyError::Target)
}

/// What `--purge-unlinked` did with one soft-deleted key.
#[derive(Debug)]
pub enum Purge {
    /// Written more recently than the threshold: kept.
    Young,
    /// Its copies and its record are gone.
    Purged,
    /// Another write holds the key's lock, or the record changed.
    Busy,
    /// Its age could not be told, or a copy could not be deleted (the
    /// record stays, deleted, for the next run).
    Failed(String),
}

/// Hard-delete the soft-deleted `key` if it was written longer than
/// `older_than` ago: by its metadata's mtime, or without metadata the
/// newest of its files (a key none of whose volumes holds a file has
/// nothing left to keep).
pub async fn purge_unlinked(
    app: &App,
    settings: &Settings,
    key: &[u8],
    record: &Record,
    older_than: Duration,
) -> Result<Purge, IndexError> {
    let written_ms = match app.store.meta(key)? {
        Some(meta) => meta.mtime_ms,
        None => match newest_file_ms(record, &key2path(key), settings.timeout).await {
            Ok(newest) => newest.unwrap_or(0),
            Err(error) => return Ok(Purge::Failed(format!("cannot tell its age: {error}"))),
        },
    };
    if crate::meta::now_ms().saturating_sub(written_ms) < older_than.as_millis() as u64 {
        return Ok(Purge::Young);
    }
    let Some(_guard) = app.store.try_lock(key) else {
        return Ok(Purge::Busy);
    };
    if app.store.get(key)?.as_ref() != Some(record) {
        return Ok(Purge::Busy);
    }
    match delete_value(app, key, record).await {
        Ok(()) => Ok(Purge::Purged),
        Err(Error::Index(error)) => Err(error),
        Err(error) => Ok(Purge::Failed(error.to_string())),
    }
}

/// The newest mtime of `record`'s files, None when none exists.
async fn newest_file_ms(record: &Record, path: &str, timeout: Duration) -> Result<Option<u64>, VolumeError> {
    let heads = record
        .volumes
        .iter()
        .map(|entry| async move { volume::head(entry_host(entry), &entry_path(entry, path), timeout).await });
    let mut newest = None;
    for info in join_all(heads).await {
        if let Some(info) = info? {
            // A file without a date is taken as written now: kept.
            let modified = info.last_modified_ms.unwrap_or_else(crate::meta::now_ms);
            newest = newest.max(Some(modified));
        }
    }
    Ok(newest)
}

/// A file on a volume that nothing in the index names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Orphan {
    /// A file at `key`'s path on `entry` that no record names there.
    Key { key: Vec<u8>, entry: String },
    /// A part of S3 multipart upload `upload_id`, which no longer exists.
    Part { upload_id: String },
}

/// Whether a file found at a key's path on `entry` is an orphan, judged by
/// the key's record: none, or one that names other entries only. A record
/// naming a host that `-volumes` does not list keeps the file (the same
/// server may be spelled two ways: nothing is deleted on a guess).
fn key_file_is_orphan(record: Option<&Record>, entry: &str, volumes: &[String]) -> bool {
    let Some(record) = record else { return true };
    let listed = |named: &String| volumes.iter().any(|volume| volume == entry_host(named));
    record.volumes.iter().all(|named| named != entry && listed(named))
}

/// Whether `orphan` is still one (checked again just before it is removed).
fn still_orphan(app: &App, orphan: &Orphan) -> Result<bool, IndexError> {
    match orphan {
        Orphan::Key { key, entry } => match app.store.get(key) {
            Ok(record) => Ok(key_file_is_orphan(record.as_ref(), entry, &app.config.volumes)),
            // A record that does not decode names who knows what: keep.
            Err(IndexError::Corrupt { .. }) => Ok(false),
            Err(error) => Err(error),
        },
        // A state entry that does not decode may be a live upload: keep.
        Orphan::Part { upload_id } => Ok(matches!(upload(app.store.index(), upload_id), Ok(None))),
    }
}

/// Delete the orphan file at `path` on volume `host`, if it still is one
/// (under its key's lock). Returns whether it was deleted.
pub async fn remove_orphan(
    app: &App,
    orphan: &Orphan,
    host: &str,
    path: &str,
    timeout: Duration,
) -> Result<Result<bool, VolumeError>, IndexError> {
    let _guard = match orphan {
        Orphan::Key { key, .. } => match app.store.try_lock(key) {
            Some(guard) => Some(guard),
            None => return Ok(Ok(false)),
        },
        Orphan::Part { .. } => None,
    };
    if !still_orphan(app, orphan)? {
        return Ok(Ok(false));
    }
    Ok(volume::delete(host, path, timeout).await.map(|()| true))
}

/// The counts of a verify run.
#[derive(Debug, Default)]
pub struct Summary {
    /// Live keys checked.
    pub keys: u64,
    pub replicas_ok: u64,
    pub missing: u64,
    pub wrong_size: u64,
    pub corrupt: u64,
    pub unreachable: u64,
    /// Replicas restored and confirmed.
    pub repaired: u64,
    /// Bad replicas left as they were (repair off, failed, or refused).
    pub unrepaired: u64,
    /// Keys with bad replicas and no good copy.
    pub no_good_copy: u64,
    /// Records that do not decode.
    pub corrupt_records: u64,
    pub orphans: u64,
    pub orphans_removed: u64,
    /// Files no record names that are younger than the grace: left alone.
    pub orphans_young: u64,
    /// Files outside the layout, or names that are no key's.
    pub strays: u64,
    /// Directories that could not be listed.
    pub unlisted: u64,
    pub purged: u64,
    /// Soft-deleted keys that could not be purged.
    pub purge_failed: u64,
    pub elapsed: Duration,
}

impl Summary {
    /// Problems the exit code should show: anything unhealthy left as it is.
    pub fn failures(&self) -> u64 {
        self.unrepaired
            + self.unreachable
            + self.no_good_copy
            + self.corrupt_records
            + (self.orphans - self.orphans_removed)
            + self.strays
            + self.unlisted
            + self.purge_failed
    }

    fn status(&self) -> String {
        format!(
            "{} keys, {} bad replicas, {} repaired, {} unreachable, {} orphans",
            self.keys,
            self.missing + self.wrong_size + self.corrupt,
            self.repaired,
            self.unreachable,
            self.orphans
        )
    }

    fn add(&mut self, report: &KeyReport) {
        self.keys += 1;
        for (_, replica) in &report.replicas {
            match replica {
                Replica::Ok => self.replicas_ok += 1,
                Replica::Missing => self.missing += 1,
                Replica::WrongSize { .. } => self.wrong_size += 1,
                Replica::Corrupt => self.corrupt += 1,
                Replica::Unreachable(_) => self.unreachable += 1,
            }
        }
        let bad = report.replicas.iter().filter(|(_, replica)| replica.is_bad()).count();
        self.repaired += report.repaired.len() as u64;
        self.unrepaired += (bad - report.repaired.len()) as u64;
        self.no_good_copy += u64::from(report.not_repaired == Some(NotRepaired::NoGoodCopy));
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} keys checked; replicas: {} ok, {} missing, {} wrong size, {} corrupt, {} unreachable; \
             {} repaired, {} keys with no good copy; orphans: {} found, {} removed ({} younger than the \
             grace left alone); {} unlinked keys purged; errors: {} corrupt records, {} stray files, \
             {} unreadable directories, {} failed purges; {:.1}s",
            self.keys,
            self.replicas_ok,
            self.missing,
            self.wrong_size,
            self.corrupt,
            self.unreachable,
            self.repaired,
            self.no_good_copy,
            self.orphans,
            self.orphans_removed,
            self.orphans_young,
            self.purged,
            self.corrupt_records,
            self.strays,
            self.unlisted,
            self.purge_failed,
            self.elapsed.as_secs_f64()
        )
    }
}

/// What the run did with one record.
enum Outcome {
    Checked(KeyReport),
    Purge(Purge),
    /// Soft-deleted and not being purged: not checked.
    Unlinked,
    CorruptRecord(RecordError),
}

async fn check_record(
    app: &App,
    settings: &Settings,
    key: &[u8],
    record: Result<Record, RecordError>,
) -> Result<Outcome, IndexError> {
    let record = match record {
        Ok(record) => record,
        Err(error) => return Ok(Outcome::CorruptRecord(error)),
    };
    if record.is_live() {
        return Ok(Outcome::Checked(verify_key(app, settings, key, &record).await?));
    }
    match settings.purge_unlinked {
        Some(older_than) => Ok(Outcome::Purge(
            purge_unlinked(app, settings, key, &record, older_than).await?,
        )),
        None => Ok(Outcome::Unlinked),
    }
}

/// `mkv verify`: check every key, then look for orphans. Per-item problems
/// are counted in the summary; an index failure ends the run.
pub async fn run(app: &App) -> Result<Summary, IndexError> {
    let settings = Settings::from_config(&app.config);
    let index = app.store.index();
    let mut total = 0u64;
    index.view().scan(b"", b"", |_, _| {
        total += 1;
        true
    })?;
    let progress = Progress::new("verify", "keys", Some(total));
    let mut summary = Summary::default();
    let settings = &settings;
    let outcomes = stream::iter(Records::new(index))
        .map(|item| async move {
            let (key, record) = item?;
            let outcome = check_record(app, settings, &key, record).await?;
            Ok::<_, IndexError>((key, outcome))
        })
        .buffer_unordered(app.config.concurrency);
    let mut outcomes = std::pin::pin!(outcomes);
    while let Some(item) = outcomes.next().await {
        let (key, outcome) = item?;
        tally(&String::from_utf8_lossy(&key), outcome, &mut summary, &progress);
        progress.advance(1, || summary.status());
    }
    progress.finish(&format!("{}; looking for orphans", summary.status()));
    let progress = Progress::new("verify", "directories", None);
    find_orphans(app, settings, &mut summary, &progress).await?;
    summary.elapsed = progress.elapsed();
    progress.finish(&summary.to_string());
    Ok(summary)
}

/// Count one record's outcome and report its problems.
fn tally(key: &str, outcome: Outcome, summary: &mut Summary, progress: &Progress) {
    match outcome {
        Outcome::Checked(report) => {
            summary.add(&report);
            for (entry, replica) in &report.replicas {
                if *replica != Replica::Ok {
                    progress.report(&format!("{key:?} on {entry}: {replica}"));
                }
            }
            for (entry, source) in &report.repaired {
                progress.report(&format!("{key:?} on {entry}: repaired from {source}"));
            }
            for (entry, error) in &report.failed {
                progress.report(&format!("{key:?} on {entry}: repair failed: {error}"));
            }
            if let Some(why) = report.not_repaired {
                progress.report(&format!("{key:?}: {why}"));
            }
        }
        Outcome::Purge(Purge::Purged) => summary.purged += 1,
        Outcome::Purge(Purge::Young) | Outcome::Unlinked => {}
        Outcome::Purge(Purge::Busy) => {
            summary.purge_failed += 1;
            progress.report(&format!("{key:?}: not purged: another write of the key is in progress"));
        }
        Outcome::Purge(Purge::Failed(error)) => {
            summary.purge_failed += 1;
            progress.report(&format!("{key:?}: not purged: {error}"));
        }
        Outcome::CorruptRecord(error) => {
            summary.corrupt_records += 1;
            progress.report(&format!("{key:?}: the record is corrupt: {error}"));
        }
    }
}

/// Where a listed directory sits: the key layout (`rebuild`'s levels), or
/// the S3 parts directory.
#[derive(Clone, Debug)]
enum Within {
    Layout,
    /// `/mkv-parts/`: one directory per upload.
    Parts,
    /// `/mkv-parts/<upload id>/`: the upload's part files.
    Upload(String),
}

/// One request of the orphan walk.
enum Task {
    List(Directory, Within),
    Remove { orphan: Orphan, host: String, path: String },
}

enum Done {
    Listed(Directory, Within, Result<Vec<Listed>, ListingError>),
    Removed {
        path: String,
        host: String,
        result: Result<bool, VolumeError>,
    },
}

async fn perform(app: &App, task: Task, timeout: Duration) -> Result<Done, IndexError> {
    match task {
        Task::List(directory, within) => {
            let listing = list(volume_of(&directory), &directory.path).await;
            Ok(Done::Listed(directory, within, listing))
        }
        Task::Remove { orphan, host, path } => {
            let result = remove_orphan(app, &orphan, &host, &path, timeout).await?;
            Ok(Done::Removed { path, host, result })
        }
    }
}

/// Walk every volume and count (and with `--repair`, remove) orphans. At
/// most `--concurrency` requests in flight, depth first.
async fn find_orphans(
    app: &App,
    settings: &Settings,
    summary: &mut Summary,
    progress: &Progress,
) -> Result<(), IndexError> {
    let mut pending: Vec<Task> = app
        .config
        .volumes
        .iter()
        .enumerate()
        .map(|(host, volume)| Task::List(Directory::root(host, volume), Within::Layout))
        .collect();
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < app.config.concurrency {
            let Some(task) = pending.pop() else { break };
            running.push(perform(app, task, settings.timeout));
        }
        let Some(done) = running.next().await else { break };
        match done? {
            Done::Listed(directory, within, Ok(listing)) => {
                for listed in &listing {
                    let task = examine(app, settings, &directory, &within, listed, summary, progress)?;
                    pending.extend(task);
                }
                progress.advance(1, || summary.status());
            }
            Done::Listed(directory, _, Err(error)) => {
                summary.unlisted += 1;
                progress.report(&format!("{}{}: {error}", volume_of(&directory), directory.path));
            }
            Done::Removed { result: Ok(true), .. } => summary.orphans_removed += 1,
            Done::Removed {
                result: Ok(false),
                host,
                path,
            } => {
                progress.report(&format!("{host}{path}: no longer an orphan; kept"));
                // Not an orphan after all: nothing is left to fix.
                summary.orphans -= 1;
            }
            Done::Removed {
                result: Err(error),
                host,
                path,
            } => progress.report(&format!("{host}{path}: cannot remove the orphan: {error}")),
        }
    }
    Ok(())
}

/// Act on one entry of a listing: a directory to list next, an orphan to
/// remove, or nothing.
fn examine(
    app: &App,
    settings: &Settings,
    directory: &Directory,
    within: &Within,
    listed: &Listed,
    summary: &mut Summary,
    progress: &Progress,
) -> Result<Option<Task>, IndexError> {
    let is_directory = listed.kind == "directory";
    let found = match within {
        Within::Layout => {
            let at_top = matches!(directory.level, Level::Root | Level::Subvolume);
            if at_top && is_directory && PARTS_DIRECTORY.strip_prefix('/') == Some(listed.name.as_str()) {
                let parts = directory.child(&listed.name, directory.level);
                return Ok(Some(Task::List(parts, Within::Parts)));
            }
            match classify(directory, listed) {
                Found::Directory(child) => return Ok(Some(Task::List(child, Within::Layout))),
                Found::Skip => return Ok(None),
                Found::Stray(what) => {
                    summary.strays += 1;
                    progress.report(&format!(
                        "{}{}{}: {what}",
                        volume_of(directory),
                        directory.path,
                        listed.name
                    ));
                    return Ok(None);
                }
                Found::Key(key) => {
                    let record = match app.store.get(&key) {
                        Ok(record) => record,
                        Err(IndexError::Corrupt { .. }) => return Ok(None),
                        Err(error) => return Err(error),
                    };
                    if !key_file_is_orphan(record.as_ref(), &directory.entry, &app.config.volumes) {
                        return Ok(None);
                    }
                    Orphan::Key {
                        key,
                        entry: directory.entry.clone(),
                    }
                }
            }
        }
        Within::Parts if is_directory && is_upload_id(&listed.name) => {
            let upload_id = listed.name.clone();
            let child = directory.child(&listed.name, directory.level);
            return Ok(Some(Task::List(child, Within::Upload(upload_id))));
        }
        Within::Upload(upload_id) if listed.kind == "file" => {
            if !matches!(upload(app.store.index(), upload_id), Ok(None)) {
                return Ok(None);
            }
            Orphan::Part {
                upload_id: upload_id.clone(),
            }
        }
        Within::Parts | Within::Upload(_) => return Ok(None),
    };
    let host = volume_of(directory).to_owned();
    let path = format!("{}{}", directory.path, listed.name);
    if !older_than(listed.mtime.as_deref(), settings.orphan_grace) {
        summary.orphans_young += 1;
        return Ok(None);
    }
    summary.orphans += 1;
    if !settings.repair {
        progress.report(&format!("{host}{path}: orphan (no record names it)"));
        return Ok(None);
    }
    Ok(Some(Task::Remove {
        orphan: found,
        host,
        path,
    }))
}

/// Whether a listing's `mtime` (an HTTP date) is more than `grace` ago. A
/// missing or unreadable date is taken as now: nothing is deleted on a guess.
fn older_than(mtime: Option<&str>, grace: Duration) -> bool {
    let Some(modified) = mtime.and_then(|text| httpdate::parse_http_date(text).ok()) else {
        return false;
    };
    SystemTime::now().duration_since(modified).unwrap_or_default() > grace
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn majority_needs_more_than_any_other() {
        assert_eq!(majority([3, 3, 5]), Some(3));
        assert_eq!(majority([5]), Some(5));
        assert_eq!(majority([3, 5]), None);
        assert_eq!(majority(Vec::<u8>::new()), None);
    }

    #[test]
    fn a_timeout_is_never_missing() {
        let heads = [Ok(Some(5)), Err("volume a: timed out".to_owned()), Ok(None)];
        let (replicas, size) = judge(&heads, Some(5));
        assert_eq!(size, Some(5));
        assert_eq!(replicas[0], Replica::Ok);
        assert!(matches!(replicas[1], Replica::Unreachable(_)));
        assert!(!replicas[1].is_bad());
        assert_eq!(replicas[2], Replica::Missing);
    }

    #[test]
    fn sizes_come_from_metadata_or_the_replicas_agreement() {
        let (replicas, _) = judge(&[Ok(Some(4)), Ok(Some(5))], Some(5));
        assert_eq!(
            replicas[0],
            Replica::WrongSize {
                found: 4,
                expected: Some(5)
            }
        );
        let (replicas, size) = judge(&[Ok(Some(4)), Ok(Some(5)), Ok(Some(5))], None);
        assert_eq!(size, Some(5));
        assert!(replicas[0].is_bad() && replicas[1] == Replica::Ok);
        // Two replicas that disagree, and nothing to say which is right.
        let (replicas, size) = judge(&[Ok(Some(4)), Ok(Some(5))], None);
        assert_eq!(size, None);
        assert!(replicas.iter().all(Replica::is_bad));
    }

    #[test]
    fn orphans_are_files_no_record_names() {
        let volumes = entries(&["a:1", "b:1"]);
        assert!(key_file_is_orphan(None, "a:1/sv01", &volumes));
        let record = Record::new(entries(&["a:1/sv01"]), false, None);
        assert!(!key_file_is_orphan(Some(&record), "a:1/sv01", &volumes));
        assert!(key_file_is_orphan(Some(&record), "a:1/sv02", &volumes));
        assert!(key_file_is_orphan(Some(&record), "b:1/sv01", &volumes));
        // Soft-deleted records keep their files for RELINK.
        let unlinked = Record::new(entries(&["b:1/sv01"]), true, None);
        assert!(!key_file_is_orphan(Some(&unlinked), "b:1/sv01", &volumes));
        // A host -volumes does not list may be one of ours spelled otherwise.
        let foreign = Record::new(entries(&["localhost:1/sv01"]), false, None);
        assert!(!key_file_is_orphan(Some(&foreign), "a:1/sv01", &volumes));
    }

    #[test]
    fn only_old_files_are_orphans() {
        let hour = Duration::from_secs(3600);
        assert!(older_than(Some("Wed, 01 Jan 2025 00:00:00 GMT"), hour));
        let now = httpdate::fmt_http_date(SystemTime::now());
        assert!(!older_than(Some(&now), hour));
        assert!(!older_than(None, hour));
        assert!(!older_than(Some("yesterday"), hour));
    }
}
