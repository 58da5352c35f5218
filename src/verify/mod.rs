//! Verify: scrub the store, and with `--repair` mend what it finds.
//!
//! For every live key (`verify_key`), every replica its record names is
//! HEADed: it must be there with the value's size (the size in the key's
//! metadata; for a key without metadata, the size more than half of the
//! copies have, wherever they lie, a copy that did not answer counting
//! against it). With `--md5` each copy that passes is read back and its md5
//! compared with the record's (without one, agreed the same way). Nothing
//! else is evidence: `rebuild` records a size or md5 only when every copy
//! it found agrees, and where a copy lies says nothing of which is right.
//! When the copies disagree and no majority says which is right (a tie
//! included), they are reported and left as they are. A
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
//! A live record naming fewer volumes than `-replicas` is reported (a
//! rebuild that went on without a volume leaves such records).
//!
//! Then the volumes are walked (nginx's JSON autoindex, as `rebuild` walks
//! them) for orphans (`orphans.rs`): a file at the path of a key that has
//! no record at all, or an S3 part file whose upload is gone, older than
//! `--orphan-grace` so writes in flight are left alone. A copy of a
//! recorded key (live or soft-deleted) on a volume its record does not
//! name is no orphan: it is reported and kept, since it may be the only
//! other copy of the value. With `--repair` orphans are deleted (after
//! checking again under the key's lock), unless the index holds no live
//! record: it would take every file for an orphan (an index made empty by
//! mistake), so that needs `--confirm-empty-index`. Otherwise orphans are
//! reported.
//!
//! Everything a key needs is in `verify_key`, `purge_unlinked` and
//! `remove_orphan`, over the shared `App`, so a running master can call them
//! too. One bad key, replica or directory is reported and counted, and only
//! the exit code shows it; only an index failure ends the run. Each repair
//! copies the same bytes to the same place and each removal deletes a file
//! that stays an orphan, so a run killed anywhere and run again converges.

mod orphans;
mod replicas;

use std::fmt;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};

use crate::app::{shutting_down, App};
use crate::config::Config;
use crate::index::IndexError;
use crate::progress::{Progress, Sink};
use crate::rebalance::Records;
use crate::record::{Record, RecordError};

pub use orphans::{remove_orphan, Orphan, Removal};
pub use replicas::{purge_unlinked, verify_key, KeyReport, NotRepaired, Purge, Replica};

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
    /// Keys in flight at most (`--concurrency`).
    pub concurrency: usize,
    /// Remove orphans even when the index holds no live record.
    pub confirm_empty_index: bool,
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
            concurrency: config.concurrency,
            confirm_empty_index: config.confirm_empty_index,
        }
    }
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
    /// Keys with bad replicas and no good copy, or copies that disagree
    /// with nothing to say which is right (left as they are).
    pub no_good_copy: u64,
    /// Records that do not decode.
    pub corrupt_records: u64,
    /// Live records naming fewer volumes than `-replicas`.
    pub under_replicated: u64,
    pub orphans: u64,
    pub orphans_removed: u64,
    /// Files no record names that are younger than the grace: left alone.
    pub orphans_young: u64,
    /// Old files at a recorded key's path on a volume its record does not
    /// name: kept (never orphans: they may be the only other copy).
    pub unrecorded_copies: u64,
    /// Files outside the layout, or names that are no key's.
    pub strays: u64,
    /// Directories that could not be listed.
    pub unlisted: u64,
    pub purged: u64,
    /// Soft-deleted keys that could not be purged.
    pub purge_failed: u64,
    pub elapsed: Duration,
    /// The run ended early: the master shut down.
    pub stopped: bool,
}

impl Summary {
    /// Problems the exit code should show: anything unhealthy left as it is.
    pub fn failures(&self) -> u64 {
        self.unrepaired
            + self.unreachable
            + self.no_good_copy
            + self.corrupt_records
            + self.under_replicated
            + (self.orphans - self.orphans_removed)
            + self.unrecorded_copies
            + self.strays
            + self.unlisted
            + self.purge_failed
            + u64::from(self.stopped)
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
        self.under_replicated += u64::from(report.under_replicated.is_some());
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
        self.no_good_copy += u64::from(matches!(
            report.not_repaired,
            Some(NotRepaired::NoGoodCopy | NotRepaired::Disagree)
        ));
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} keys checked; replicas: {} ok, {} missing, {} wrong size, {} corrupt, {} unreachable; \
             {} repaired, {} keys with no good copy, {} records naming fewer volumes than -replicas; \
             orphans: {} found, {} removed ({} younger than the grace left alone); {} copies on volumes \
             their records do not name (kept); {} unlinked keys purged; errors: {} corrupt records, \
             {} stray files, {} unreadable directories, {} failed purges; {:.1}s",
            self.keys,
            self.replicas_ok,
            self.missing,
            self.wrong_size,
            self.corrupt,
            self.unreachable,
            self.repaired,
            self.no_good_copy,
            self.under_replicated,
            self.orphans,
            self.orphans_removed,
            self.orphans_young,
            self.unrecorded_copies,
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
/// are counted in the summary; an index failure ends the run. The lines go
/// to `sink` when given (a running master's job, `admin`), else to stderr.
pub async fn run(app: &App, settings: &Settings, sink: Option<Sink>) -> Result<Summary, IndexError> {
    let index = app.store.index();
    let (mut total, mut live) = (0u64, 0u64);
    index.view().scan(b"", b"", |_, record| {
        total += 1;
        live += u64::from(record.is_ok_and(|record| record.is_live()));
        true
    })?;
    let progress = Progress::with_sink("verify", "keys", Some(total), sink.clone());
    let mut summary = Summary::default();
    // A serving master that shuts down ends the run: the keys in flight
    // finish, no new one starts, and the orphan walk is left out.
    let records = stream::iter(Records::new(index)).take_while(|_| std::future::ready(!shutting_down()));
    let outcomes = records
        .map(|item| async move {
            let (key, record) = item?;
            let outcome = check_record(app, settings, &key, record).await?;
            Ok::<_, IndexError>((key, outcome))
        })
        .buffer_unordered(settings.concurrency);
    let mut outcomes = std::pin::pin!(outcomes);
    while let Some(item) = outcomes.next().await {
        let (key, outcome) = item?;
        tally(&String::from_utf8_lossy(&key), outcome, &mut summary, &progress);
        progress.advance(1, || summary.status());
    }
    if shutting_down() {
        summary.stopped = true;
        summary.elapsed = progress.elapsed();
        progress.report("stopped: the master is shutting down; run the verify again to finish");
        progress.finish(&summary.to_string());
        return Ok(summary);
    }
    progress.finish(&format!("{}; looking for orphans", summary.status()));
    let progress = Progress::with_sink("verify", "directories", None, sink);
    // An index with no live record takes every file for an orphan: an
    // index made empty by mistake (a mistyped -db that exists, a rebuild
    // not run) must not empty the volumes too.
    let refused = settings.repair && live == 0 && !settings.confirm_empty_index;
    let walk = Settings {
        repair: settings.repair && !refused,
        ..*settings
    };
    orphans::find_orphans(app, &walk, &mut summary, &progress).await?;
    if refused && summary.orphans > 0 {
        progress.report(&format!(
            "no orphan removed: the index holds no live record, and {} files on the volumes no record names \
             would all go (is -db the right index? `mkv rebuild` fills an index from the volumes); \
             --confirm-empty-index (confirm-empty-index=true on the admin port) removes them",
            summary.orphans
        ));
    }
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
            if let Some(named) = report.under_replicated {
                progress.report(&format!(
                    "{key:?}: its record names {named} volumes, fewer than -replicas: `mkv rebuild` with every \
                     volume up records the copies it missed, `mkv rebalance` copies the value where placement wants it"
                ));
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
