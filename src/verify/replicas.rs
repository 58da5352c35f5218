//! One key's replicas: what each holds (`verify_key`: HEAD, `--md5`
//! read-back), their repair from a verified copy, and `--purge-unlinked`.

use std::fmt;
use std::time::Duration;

use futures_util::future::join_all;
use md5::{Digest, Md5};

use crate::app::App;
use crate::error::Error;
use crate::index::IndexError;
use crate::placement::{entry_host, hex_lower, key2path, path_is_own};
use crate::record::{Record, HASH_HEX_BYTES};
use crate::replication::{copy_md5, entry_path, PIECE_BYTES, VOLUME_IO_TIMEOUT};
use crate::volume::{self, Download, Upload, VolumeError};
use crate::write::delete_value;

use super::Settings;

/// A value's md5, lower-case hex, as records hold it.
type Md5Hex = [u8; HASH_HEX_BYTES];

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
    pub fn is_bad(&self) -> bool {
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
                write!(
                    formatter,
                    "{found} bytes, and no size is recorded or held by more than half of the copies"
                )
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
    /// The copies disagree and nothing recorded (metadata, md5) or held by
    /// more than half of the copies says which is right.
    Disagree,
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
            NotRepaired::Disagree => {
                "not repaired: the copies disagree and nothing recorded or held by more than half of the copies \
                 (counting those that did not answer) says which is right; left as they are"
            }
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
    /// The volumes the record names, when fewer than `-replicas` (a
    /// rebuild that went on without a volume, a write before `-replicas`
    /// grew): verify repairs only the replicas a record names.
    pub under_replicated: Option<usize>,
}

/// How many volumes `record` names (entries on one volume's subvolumes
/// count once) when fewer than `replicas` (pure).
fn under_replicated(record: &Record, replicas: usize) -> Option<usize> {
    let mut hosts: Vec<&str> = record.volumes.iter().map(|entry| entry_host(entry)).collect();
    hosts.sort_unstable();
    hosts.dedup();
    (hosts.len() < replicas).then_some(hosts.len())
}

/// What the value of a key is, as far as the checks tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Expected {
    size: u64,
    /// The md5 copies must hash to: the record's, or (with `--md5`) the one
    /// the copies agree on; None when nothing says.
    md5: Option<Md5Hex>,
}

/// The value held most often among `values`, and how often (the first of
/// equals), if there is one.
fn most_held<T: Copy + Eq>(values: &[T]) -> Option<(T, usize)> {
    let mut most: Option<(T, usize)> = None;
    for value in values {
        let count = values.iter().filter(|other| *other == value).count();
        if most.is_none_or(|(_, most)| count > most) {
            most = Some((*value, count));
        }
    }
    most
}

/// What the copies say the value is when nothing recorded says it: the
/// value more than half of the copies that may hold one have. `values`
/// holds each copy's (None: it holds none, or it was not read), `unknown`
/// counts copies that may hold a value nobody saw (a volume that did not
/// answer, a read that failed), each against every value. Where a copy
/// lies says nothing: a rebuild records every copy it finds, and a placed
/// copy may be the stale one as well as an unplaced one, so they count
/// alike. Without such a majority (a tie included) nothing is known, and
/// nothing is repaired on it (pure).
fn agreed<T: Copy + Eq>(values: &[Option<T>], unknown: usize) -> Option<T> {
    let present: Vec<T> = values.iter().flatten().copied().collect();
    let (value, count) = most_held(&present)?;
    (2 * count > present.len() + unknown).then_some(value)
}

/// What each replica holds, from what its HEAD answered (its size, None
/// on 404, or why it failed), and the value's size: `meta_size`, or what
/// the copies agree on (`agreed`; a HEAD that failed counts against every
/// size) (pure).
fn judge(heads: &[Result<Option<u64>, String>], meta_size: Option<u64>) -> (Vec<Replica>, Option<u64>) {
    let sizes: Vec<Option<u64>> = heads.iter().map(|head| head.as_ref().ok().copied().flatten()).collect();
    let unknown = heads.iter().filter(|head| head.is_err()).count();
    let expected = meta_size.or_else(|| agreed(&sizes, unknown));
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

/// Read back every replica judged Ok and mark those whose md5 is not the
/// value's Corrupt. Returns the md5 the value has, when known: `recorded`,
/// or what the copies agree on (`agreed`: a copy not read counts against
/// every md5 when it may hold the value: one that did not answer, or one
/// of another size when no size is recorded (`size_recorded`)); when
/// nothing says, every copy read is marked Corrupt and none is a source.
async fn check_md5s(
    entries: &[String],
    replicas: &mut [Replica],
    path: &str,
    recorded: Option<Md5Hex>,
    size_recorded: bool,
    timeout: Duration,
) -> Option<Md5Hex> {
    let reads = entries.iter().zip(replicas.iter()).map(|(entry, replica)| async move {
        match replica {
            Replica::Ok => Some(copy_md5(entry, path, timeout).await),
            _ => None,
        }
    });
    let md5s: Vec<Option<Result<Option<Md5Hex>, VolumeError>>> = join_all(reads).await;
    let read: Vec<Option<Md5Hex>> = md5s.iter().map(|md5| md5.as_ref()?.as_ref().ok().copied()?).collect();
    let unread = replicas
        .iter()
        .filter(|replica| match replica {
            Replica::Unreachable(_) => true,
            Replica::WrongSize { .. } => !size_recorded,
            _ => false,
        })
        .count();
    let failed = md5s.iter().filter(|md5| matches!(md5, Some(Err(_)))).count();
    let agreed = recorded.or_else(|| agreed(&read, unread + failed));
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
        md5 = check_md5s(
            &record.volumes,
            &mut replicas,
            &path,
            record.hash,
            meta_size.is_some(),
            settings.timeout,
        )
        .await;
    }
    let mut report = KeyReport {
        replicas: record.volumes.iter().cloned().zip(replicas).collect(),
        under_replicated: under_replicated(record, app.config.replicas),
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
    let has = |wanted: fn(&Replica) -> bool| report.replicas.iter().any(|(_, replica)| wanted(replica));
    let sizes_disagree = size.is_none() && has(|replica| matches!(replica, Replica::WrongSize { .. }));
    let md5s_disagree = settings.md5 && md5.is_none() && has(|replica| *replica == Replica::Corrupt);
    if sizes_disagree || md5s_disagree {
        report.not_repaired = Some(NotRepaired::Disagree);
        return Ok(report);
    }
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
    let Some(_guard) = app.store.try_lock(key)? else {
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
    let Some(_guard) = app.store.try_lock(key)? else {
        return Ok(Purge::Busy);
    };
    if app.store.get(key)?.as_ref() != Some(record) {
        return Ok(Purge::Busy);
    }
    // A soft-deleted record may be an overwrite cut short in its commit:
    // settled from its journal entry, it is a live value, not one to purge.
    match crate::journal::settle_held(app, key).await? {
        crate::journal::Settled::None | crate::journal::Settled::Stale => {}
        _ => return Ok(Purge::Busy),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_needs_more_than_half_of_the_copies() {
        assert_eq!(agreed(&[Some(3), Some(3), Some(5)], 0), Some(3));
        assert_eq!(agreed(&[Some(5), None, None], 0), Some(5));
        assert_eq!(agreed(&[Some(3), Some(5)], 0), None);
        assert_eq!(agreed::<u8>(&[None, None], 0), None);
        // Most, but not more than half: three values, none held by most copies.
        assert_eq!(agreed(&[Some(3), Some(3), Some(5), Some(7)], 0), None);
        // A copy nobody saw counts against every value.
        assert_eq!(agreed(&[Some(3), None], 1), None);
        assert_eq!(agreed(&[Some(3), Some(3), Some(5)], 1), None);
        assert_eq!(agreed(&[Some(3), Some(3), Some(5)], 0), Some(3));
    }

    #[test]
    fn a_record_naming_fewer_volumes_than_replicas_is_under_replicated() {
        let entries = |names: &[&str]| names.iter().map(|name| name.to_string()).collect();
        let one = Record::new(entries(&["a:1"]), false, None);
        assert_eq!(under_replicated(&one, 2), Some(1));
        assert_eq!(under_replicated(&one, 1), None);
        // Two subvolumes of one server are one volume.
        let one_server = Record::new(entries(&["a:1/sv01", "a:1/sv02"]), false, None);
        assert_eq!(under_replicated(&one_server, 2), Some(1));
        let two = Record::new(entries(&["a:1/sv01", "b:1/sv02", "c:1/sv01"]), false, None);
        assert_eq!(under_replicated(&two, 3), None);
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
    fn the_majority_of_the_copies_wins_wherever_they_are_and_a_tie_is_nobodys() {
        // One copy on the volume placement names against two elsewhere that
        // agree (a rebuild recorded all three, in placement's order).
        let heads = [Ok(Some(15)), Ok(Some(3)), Ok(Some(3))];
        let (replicas, size) = judge(&heads, None);
        assert_eq!(size, Some(3));
        assert_eq!(replicas[1], Replica::Ok);
        assert!(replicas[0].is_bad());
        // One against one: nothing is known, nothing is good.
        let (replicas, size) = judge(&[Ok(Some(15)), Ok(Some(3)), Ok(None)], None);
        assert_eq!(size, None);
        assert!(replicas.iter().all(|replica| *replica != Replica::Ok));
        // A copy that did not answer may hold the other value.
        let (_, size) = judge(&[Ok(Some(3)), Ok(Some(3)), Ok(Some(15)), Err("down".into())], None);
        assert_eq!(size, None);
        // Copies that all agree are the value.
        let (replicas, size) = judge(&[Ok(Some(3)), Ok(None)], None);
        assert_eq!(size, Some(3));
        assert_eq!(replicas[0], Replica::Ok);
    }
}
