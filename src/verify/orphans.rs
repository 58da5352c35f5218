//! Orphans: files on the volumes that no record names, found by walking
//! nginx's JSON autoindex as `rebuild` does, and removed (`--repair`) only
//! when old and still orphans under the key's lock.
//!
//! A file at the path of a key the index has a record of is never an
//! orphan, whichever volumes the record names: a record naming fewer
//! volumes than it should (`rebuild --allow-down-volumes`, whose down
//! volume then came back) leaves that volume's copies unnamed, and they
//! may be the only other copy of the value. Such a copy is reported as
//! unrecorded and kept; `mkv rebuild` (every volume up) records it, and a
//! copy known to be stale is for the operator to delete.

use std::time::{Duration, SystemTime};

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::app::App;
use crate::index::IndexError;
use crate::progress::Progress;
use crate::rebuild::{classify, list, stray_line, volume_of, Directory, Found, Level, Listed, ListingError};
use crate::record::Record;
use crate::s3::state::{is_upload_id, upload, PARTS_DIRECTORY};
use crate::volume::{self, VolumeError};

use super::{Settings, Summary};

/// A file on a volume that nothing in the index names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Orphan {
    /// A file at `key`'s path on `entry` that no record names there.
    Key { key: Vec<u8>, entry: String },
    /// A part of S3 multipart upload `upload_id`, which no longer exists.
    Part { upload_id: String },
}

/// What a file at a key's path on `entry` is, by the key's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyFile {
    /// A replica the record names.
    Named,
    /// A copy on a volume the record does not name: kept.
    Unrecorded,
    /// No record names the key: an orphan.
    Orphan,
}

/// What the file of a key at `entry` is, judged by the key's record (pure).
fn key_file(record: Option<&Record>, entry: &str) -> KeyFile {
    match record {
        None => KeyFile::Orphan,
        Some(record) if record.volumes.iter().any(|named| named == entry) => KeyFile::Named,
        Some(_) => KeyFile::Unrecorded,
    }
}

/// Whether `orphan` is still one (checked again just before it is removed).
fn still_orphan(app: &App, orphan: &Orphan) -> Result<bool, IndexError> {
    match orphan {
        Orphan::Key { key, .. } => match app.store.get(key) {
            Ok(record) => Ok(record.is_none()),
            // A record that does not decode names who knows what: keep.
            Err(IndexError::Corrupt { .. }) => Ok(false),
            Err(error) => Err(error),
        },
        // A state entry that does not decode may be a live upload: keep.
        Orphan::Part { upload_id } => Ok(matches!(upload(app.store.index(), upload_id), Ok(None))),
    }
}

/// How often removing an orphan tries its key's lock before it gives up:
/// the other copies of one key are removed at the same time and each holds
/// the lock for one DELETE round trip.
const ORPHAN_LOCK_TRIES_MAX: u32 = 100;
/// Wait between two tries of an orphan's key lock.
const ORPHAN_LOCK_RETRY: Duration = Duration::from_millis(20);

/// What removing one orphan did.
#[derive(Debug, PartialEq, Eq)]
pub enum Removal {
    /// Deleted.
    Removed,
    /// A record names it now: kept.
    NoLongerOrphan,
    /// Another write held the key's lock throughout: left for a later run.
    Busy,
}

/// Delete the orphan file at `path` on volume `host`, if it still is one
/// (under its key's lock, waited for a while: the removals of one key's
/// other copies take it too).
pub async fn remove_orphan(
    app: &App,
    orphan: &Orphan,
    host: &str,
    path: &str,
    timeout: Duration,
) -> Result<Result<Removal, VolumeError>, IndexError> {
    let mut tries = 0;
    let _guard = match orphan {
        Orphan::Key { key, .. } => loop {
            if let Some(guard) = app.store.try_lock(key)? {
                break Some(guard);
            }
            tries += 1;
            if tries == ORPHAN_LOCK_TRIES_MAX {
                return Ok(Ok(Removal::Busy));
            }
            monoio::time::sleep(ORPHAN_LOCK_RETRY).await;
        },
        Orphan::Part { .. } => None,
    };
    if !still_orphan(app, orphan)? {
        return Ok(Ok(Removal::NoLongerOrphan));
    }
    Ok(volume::delete(host, path, timeout).await.map(|()| Removal::Removed))
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
        result: Result<Removal, VolumeError>,
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
/// most the job's `concurrency` (`--concurrency`) requests in flight, depth first.
pub(super) async fn find_orphans(
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
        while running.len() < settings.concurrency {
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
            Done::Removed {
                result: Ok(Removal::Removed),
                ..
            } => summary.orphans_removed += 1,
            Done::Removed {
                result: Ok(Removal::Busy),
                host,
                path,
            } => progress.report(&format!(
                "{host}{path}: not removed: another write of the key is in progress; left for the next run"
            )),
            Done::Removed {
                result: Ok(Removal::NoLongerOrphan),
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
                    progress.report(&stray_line(directory, listed, what));
                    return Ok(None);
                }
                Found::Key(key) => {
                    let record = match app.store.get(&key) {
                        Ok(record) => record,
                        Err(IndexError::Corrupt { .. }) => return Ok(None),
                        Err(error) => return Err(error),
                    };
                    match key_file(record.as_ref(), &directory.entry) {
                        KeyFile::Named => return Ok(None),
                        KeyFile::Unrecorded => {
                            unrecorded(directory, listed, &key, settings, summary, progress);
                            return Ok(None);
                        }
                        KeyFile::Orphan => Orphan::Key {
                            key,
                            entry: directory.entry.clone(),
                        },
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

/// Count and report an old copy of the recorded `key` on a volume its
/// record does not name; it is kept. One younger than the grace may be a
/// rebalance's copy whose record is not written yet: left unsaid.
fn unrecorded(
    directory: &Directory,
    listed: &Listed,
    key: &[u8],
    settings: &Settings,
    summary: &mut Summary,
    progress: &Progress,
) {
    if !older_than(listed.mtime.as_deref(), settings.orphan_grace) {
        return;
    }
    summary.unrecorded_copies += 1;
    progress.report(&format!(
        "{}{}{}: a copy of {:?} on a volume its record does not name: kept (`mkv rebuild` with every volume \
         up records it; delete it by hand if it is stale)",
        volume_of(directory),
        directory.path,
        listed.name,
        String::from_utf8_lossy(key)
    ));
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
    fn orphans_are_files_of_keys_without_a_record() {
        assert_eq!(key_file(None, "a:1/sv01"), KeyFile::Orphan);
        let record = Record::new(entries(&["a:1/sv01"]), false, None);
        assert_eq!(key_file(Some(&record), "a:1/sv01"), KeyFile::Named);
        // A recorded key's copy elsewhere may be the only other copy: kept.
        assert_eq!(key_file(Some(&record), "a:1/sv02"), KeyFile::Unrecorded);
        assert_eq!(key_file(Some(&record), "b:1/sv01"), KeyFile::Unrecorded);
        // Soft-deleted records keep their files for RELINK.
        let unlinked = Record::new(entries(&["b:1/sv01"]), true, None);
        assert_eq!(key_file(Some(&unlinked), "b:1/sv01"), KeyFile::Named);
        assert_eq!(key_file(Some(&unlinked), "a:1/sv01"), KeyFile::Unrecorded);
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
