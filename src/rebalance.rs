//! Rebalance: move values to the volumes placement chooses for them now.
//!
//! For one key (`move_key`; `rebalance_key` is the server's `REBALANCE /key`):
//! HEAD every recorded volume to learn which really hold the value (a
//! timeout is an error for the key, never "missing"), copy it (streamed,
//! never whole in memory, checked against the recorded md5) from a good copy
//! to each placed volume that is not a confirmed holder, rewrite the record
//! (keeping its md5 and its soft-deleted flag) only once every new copy is
//! confirmed, then delete the copies placement no longer wants. The record
//! is the truth: a file on a placed volume that the record does not name is
//! overwritten, never trusted, since it may be a leftover of another value.
//! What to copy and delete is a pure function (`plan`) of the record, the
//! placement and which copies exist.
//!
//! The bulk command (`run`) walks the index in key order with at most
//! `--concurrency` keys in flight. One key's failure is reported and counted
//! and the walk goes on. Interrupted at any point and run again, it
//! converges: a key whose record was rewritten is placed and is skipped; a
//! key whose record was not is moved again from the copies the record
//! names, which were never deleted. The one thing an interruption can leave
//! behind is an extra copy of a moved key on an old volume (killed between
//! the record rewrite and the delete); a `rebuild` would list it and the
//! next `rebalance` would remove it.
//!
//! A running master does the same walk beside its traffic (`run_online`,
//! asked for through `admin`): each key under its write lock, its record
//! re-read under the lock, written through the store, and its old copies
//! deleted only `STALE_COPY_GRACE` after the rewrite, so a GET always
//! redirects to a copy that exists. `REBALANCE /key` keeps the same grace.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use md5::{Digest, Md5};
use monoio::task::JoinHandle;

use crate::app::{shutting_down, App};
use crate::config::Config;
use crate::index::{key_after, Index, IndexError};
use crate::placement::{entry_host, hex_lower, key2path, key2volume, path_is_own};
use crate::progress::{Progress, Sink};
use crate::record::{Record, RecordError, HASH_HEX_BYTES};
use crate::replication::{entry_path, PIECE_BYTES, VOLUME_IO_TIMEOUT};
use crate::store::KeyGuard;
use crate::store::Store;
use crate::volume::{self, Download, Upload, VolumeError};

/// Records read from the index per scan; no iterator or snapshot is held
/// while keys are being moved.
const SCAN_BATCH_RECORDS: usize = 1024;

/// What happened to one key.
#[derive(Debug)]
pub enum Moved {
    /// Already where placement wants it.
    AlreadyPlaced,
    /// Copied and the record rewritten.
    Moved {
        /// Bytes copied between volumes.
        bytes: u64,
        /// Old copies that could not be deleted (orphans, not data loss).
        leftovers: Vec<(String, VolumeError)>,
    },
}

/// Why one key could not be rebalanced. The record is unchanged.
#[derive(Debug)]
pub enum RebalanceError {
    /// No recorded volume holds the value.
    NoCopy,
    /// The key's file name is not its own (`placement::path_is_own`):
    /// writing it would overwrite another key's bytes.
    SharedPath,
    /// A copy's bytes do not match the record's md5.
    Mismatch {
        source: String,
    },
    Volume(VolumeError),
    Index(IndexError),
}

impl fmt::Display for RebalanceError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RebalanceError::NoCopy => write!(formatter, "no recorded volume holds the value"),
            RebalanceError::SharedPath => write!(
                formatter,
                "the key's file name has a leading, trailing or doubled '/' that volumes merge with other keys' names; not moved"
            ),
            RebalanceError::Mismatch { source } => {
                write!(formatter, "the copy on {source} does not match the recorded md5")
            }
            RebalanceError::Volume(error) => write!(formatter, "{error}"),
            RebalanceError::Index(error) => write!(formatter, "{error}"),
        }
    }
}

impl From<VolumeError> for RebalanceError {
    fn from(error: VolumeError) -> Self {
        RebalanceError::Volume(error)
    }
}

/// What moving one key takes.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// Recorded entries that hold the value: where to copy from, in record order.
    pub sources: Vec<String>,
    /// Placed entries that must get a copy.
    pub targets: Vec<String>,
    /// Entries to delete from once the record names only the placed ones.
    pub stale: Vec<String>,
}

/// Plan the move of a key recorded on `recorded` (`holds[i]`: whether
/// `recorded[i]` really has the file) to `placed`.
///
/// Only a recorded holder is trusted as a copy, so every placed entry that
/// is not one is a target. Only holders are deleted, and only those that
/// placement does not keep: once the targets are confirmed, every placed
/// entry holds the value, so a delete never takes the last good copy.
pub fn plan(recorded: &[String], holds: &[bool], placed: &[String]) -> Plan {
    assert_eq!(recorded.len(), holds.len());
    assert!(!placed.is_empty(), "placement names at least one volume");
    let sources: Vec<String> = recorded
        .iter()
        .zip(holds)
        .filter(|(_, holds)| **holds)
        .map(|(entry, _)| entry.clone())
        .collect();
    let targets = placed
        .iter()
        .filter(|entry| !sources.contains(entry))
        .cloned()
        .collect();
    let stale: Vec<String> = sources
        .iter()
        .filter(|entry| !placed.contains(entry))
        .cloned()
        .collect();
    debug_assert!(stale.iter().all(|entry| !placed.contains(entry)));
    Plan {
        sources,
        targets,
        stale,
    }
}

/// Rebalance one live key whose record is `record` (`REBALANCE /key`). The
/// caller holds its lock. The old copies are deleted `STALE_COPY_GRACE`
/// after the new record is written, by a task of the calling reactor, as
/// the online walk does: a GET answered from the old record just before
/// the rewrite still finds its copy. Old copies that cannot be deleted are
/// logged (a later verify finds them as orphans).
pub async fn rebalance_key(
    store: &Store,
    key: &[u8],
    record: &Record,
    timeout: Duration,
) -> Result<Moved, RebalanceError> {
    let placed = store.placement().place(key);
    let Some(Relocated { bytes, stale }) = relocate(key, record, &placed, timeout, |record| async move {
        store.put_async(key, &record).await
    })
    .await?
    else {
        return Ok(Moved::AlreadyPlaced);
    };
    let key = key.to_vec();
    // Detached: the request is answered now; its connection may close.
    monoio::spawn(async move {
        monoio::time::sleep(STALE_COPY_GRACE).await;
        for (entry, error) in delete_copies(&key2path(&key), &stale, timeout).await {
            eprintln!(
                "rebalance {:?}: leftover copy on {entry}: {error}",
                String::from_utf8_lossy(&key)
            );
        }
    });
    Ok(Moved::Moved {
        bytes,
        leftovers: Vec::new(),
    })
}

/// Move `key` (recorded as `record`) to the `placed` entries; `write` stores
/// the new record, and is called only once every placed entry holds the value.
/// The old copies are deleted right after the write.
pub async fn move_key<W: Future<Output = Result<(), IndexError>>>(
    key: &[u8],
    record: &Record,
    placed: &[String],
    timeout: Duration,
    write: impl FnOnce(Record) -> W,
) -> Result<Moved, RebalanceError> {
    let Some(relocated) = relocate(key, record, placed, timeout, write).await? else {
        return Ok(Moved::AlreadyPlaced);
    };
    let leftovers = delete_copies(&key2path(key), &relocated.stale, timeout).await;
    Ok(Moved::Moved {
        bytes: relocated.bytes,
        leftovers,
    })
}

/// A key copied to its placed entries and recorded there, whose old copies
/// are still to be deleted.
#[derive(Debug)]
pub struct Relocated {
    /// Bytes copied between volumes.
    pub bytes: u64,
    /// Entries the record no longer names that hold a copy.
    pub stale: Vec<String>,
}

/// `move_key` without the deletes: `None` when already placed, otherwise
/// the old copies, for the caller to delete when no reader can still be on
/// its way to them (`run_online` waits out `STALE_COPY_GRACE`).
pub async fn relocate<W: Future<Output = Result<(), IndexError>>>(
    key: &[u8],
    record: &Record,
    placed: &[String],
    timeout: Duration,
    write: impl FnOnce(Record) -> W,
) -> Result<Option<Relocated>, RebalanceError> {
    if record.volumes == placed {
        return Ok(None);
    }
    if !path_is_own(key) {
        return Err(RebalanceError::SharedPath);
    }
    let path = key2path(key);
    let path = &path;
    let checks = record
        .volumes
        .iter()
        .map(|entry| async move { volume::exists(entry_host(entry), &entry_path(entry, path), timeout).await });
    // Any error, a timeout included, fails the key: a volume that did not
    // answer may hold the only copy.
    let holds = join_all(checks).await.into_iter().collect::<Result<Vec<bool>, _>>()?;
    let plan = plan(&record.volumes, &holds, placed);
    if plan.sources.is_empty() {
        return Err(RebalanceError::NoCopy);
    }
    let copies = plan
        .targets
        .iter()
        .map(|target| copy_from_any(&plan.sources, target, path, record.hash.as_ref(), timeout));
    let mut bytes = 0;
    for copied in join_all(copies).await {
        bytes += copied?;
    }
    // Awaited: on a reactor (`REBALANCE /key`) a PostgreSQL commit leaves
    // it (`Store::put_async`).
    write(Record::new(placed.to_vec(), record.deleted, record.hash))
        .await
        .map_err(RebalanceError::Index)?;
    Ok(Some(Relocated {
        bytes,
        stale: plan.stale,
    }))
}

/// Delete the file at `path` from each of `entries`; the ones that could
/// not be deleted, with why. The placed copies are confirmed and recorded,
/// so a failed delete only leaves an orphan behind.
pub async fn delete_copies(path: &str, entries: &[String], timeout: Duration) -> Vec<(String, VolumeError)> {
    let deletes = entries.iter().map(|entry| async move {
        let result = volume::delete(entry_host(entry), &entry_path(entry, path), timeout).await;
        result.err().map(|error| (entry.clone(), error))
    });
    join_all(deletes).await.into_iter().flatten().collect()
}

/// Copy the file at `path` to `target` from the first source that works.
async fn copy_from_any(
    sources: &[String],
    target: &str,
    path: &str,
    hash: Option<&[u8; HASH_HEX_BYTES]>,
    timeout: Duration,
) -> Result<u64, RebalanceError> {
    let mut last_error = RebalanceError::NoCopy;
    for source in sources {
        match copy(source, target, path, hash, timeout).await {
            Ok(bytes) => return Ok(bytes),
            Err(error) => last_error = error,
        }
    }
    Err(last_error)
}

/// Stream the file at `path` from entry `source` to entry `target`, checking
/// it against `hash` when the record has one.
async fn copy(
    source: &str,
    target: &str,
    path: &str,
    hash: Option<&[u8; HASH_HEX_BYTES]>,
    timeout: Duration,
) -> Result<u64, RebalanceError> {
    let mut download = Download::begin(
        entry_host(source),
        &entry_path(source, path),
        timeout,
        VOLUME_IO_TIMEOUT,
    )
    .await?
    .ok_or(RebalanceError::NoCopy)?;
    let target_path = entry_path(target, path);
    let mut upload = Upload::begin(
        entry_host(target),
        &target_path,
        download.length(),
        timeout,
        VOLUME_IO_TIMEOUT,
    )
    .await?;
    let mut hasher = hash.map(|_| Md5::new());
    let mut bytes = 0u64;
    while let Some(piece) = download.next(PIECE_BYTES).await? {
        bytes += piece.len() as u64;
        if let Some(hasher) = hasher.as_mut() {
            hasher.update(&piece);
        }
        upload.send(piece).await?;
    }
    download.finish();
    upload.finish().await?;
    if let (Some(expected), Some(hasher)) = (hash, hasher) {
        if hex_lower(&hasher.finalize().into()) != *expected {
            // The bad copy is on an entry the record does not name; remove it
            // so a later rebuild cannot list it.
            let _ = volume::delete(entry_host(target), &target_path, timeout).await;
            return Err(RebalanceError::Mismatch {
                source: source.to_owned(),
            });
        }
    }
    Ok(bytes)
}

/// The counts of a bulk rebalance.
#[derive(Debug, Default)]
pub struct Summary {
    /// Records looked at.
    pub keys: u64,
    /// Records already where placement wants them.
    pub placed: u64,
    /// Keys moved (or, in a dry run, that would move).
    pub moved: u64,
    /// Soft-deleted records with no copy left (a PUT that never finished): left as they are.
    pub skipped: u64,
    /// Keys that could not be moved (their records are unchanged).
    pub failed: u64,
    /// Old copies that could not be deleted after a move.
    pub leftovers: u64,
    /// Keys another write held locked through every try (online only): not moved.
    pub busy: u64,
    /// Bytes copied between volumes.
    pub bytes: u64,
    pub elapsed: Duration,
    pub dry_run: bool,
    /// The walk ended early: the master shut down.
    pub stopped: bool,
}

impl Summary {
    /// Problems the exit code should show.
    pub fn failures(&self) -> u64 {
        self.failed + self.leftovers + self.busy + u64::from(self.stopped)
    }

    fn status(&self) -> String {
        format!(
            "{} moved, {} failed, {:.1} MB copied",
            self.moved,
            self.failures(),
            self.bytes as f64 / 1e6
        )
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let moved = if self.dry_run { "would move" } else { "moved" };
        write!(
            formatter,
            "{} keys: {} already placed, {} {moved}, {} failed, {} skipped (soft-deleted, no copy), \
             {} leftover copies; {} bytes copied in {:.1}s",
            self.keys,
            self.placed,
            self.moved,
            self.failed,
            self.skipped,
            self.leftovers,
            self.bytes,
            self.elapsed.as_secs_f64()
        )?;
        if self.busy > 0 {
            write!(
                formatter,
                "; {} keys busy (another write held them), skipped",
                self.busy
            )?;
        }
        Ok(())
    }
}

/// What the bulk command did with one record.
enum Outcome {
    Placed,
    WouldMove {
        from: Vec<String>,
        to: Vec<String>,
    },
    Moved(Moved),
    Skipped,
    Failed(String),
    /// Online: another write held the key's lock through every try.
    Busy,
}

/// How a bulk rebalance runs: `--concurrency`, `--dry-run`.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Keys in flight at most.
    pub concurrency: usize,
    /// Print the plan, move nothing.
    pub dry_run: bool,
}

/// `mkv rebalance`: move every record that placement over `-volumes` wants
/// elsewhere. Per-key failures are counted in the summary; an index failure
/// ends the run.
pub async fn run(index: &Index, config: &Config) -> Result<Summary, IndexError> {
    let options = Options {
        concurrency: config.concurrency,
        dry_run: config.dry_run,
    };
    let progress = Progress::new("rebalance", "keys", Some(count_records(index)?));
    let rebalance = |key: Vec<u8>, record| async move {
        let outcome = rebalance_record(index, config, &key, record).await?;
        Ok((key, outcome))
    };
    let mut summary = walk(index, &options, &progress, rebalance).await?;
    summary.elapsed = progress.elapsed();
    progress.finish(&summary.to_string());
    Ok(summary)
}

/// Records in the index now.
fn count_records(index: &Index) -> Result<u64, IndexError> {
    let mut total = 0u64;
    index.view().scan(b"", b"", |_, _| {
        total += 1;
        true
    })?;
    Ok(total)
}

/// Walk every record with at most `options.concurrency` of `rebalance` in
/// flight, counting and reporting their outcomes.
async fn walk<Rebalance, Done>(
    index: &Index,
    options: &Options,
    progress: &Progress,
    rebalance: Rebalance,
) -> Result<Summary, IndexError>
where
    Rebalance: Fn(Vec<u8>, Result<Record, RecordError>) -> Done,
    Done: std::future::Future<Output = Result<(Vec<u8>, Outcome), IndexError>>,
{
    let mut summary = Summary {
        dry_run: options.dry_run,
        ..Summary::default()
    };
    // A serving master that shuts down ends the walk here: the keys in
    // flight finish, no new one starts.
    let records = stream::iter(Records::new(index)).take_while(|_| std::future::ready(!shutting_down()));
    let outcomes = records
        .map(|item| async {
            let (key, record) = item?;
            rebalance(key, record).await
        })
        .buffer_unordered(options.concurrency);
    let mut outcomes = std::pin::pin!(outcomes);
    while let Some(item) = outcomes.next().await {
        let (key, outcome) = item?;
        tally(&String::from_utf8_lossy(&key), outcome, &mut summary, progress);
        progress.advance(1, || summary.status());
    }
    if shutting_down() {
        summary.stopped = true;
        progress.report("stopped: the master is shutting down; run the rebalance again to finish");
    }
    Ok(summary)
}

/// Count one record's outcome and report its problems (and, in a dry run,
/// its plan: to stdout, for scripts).
fn tally(key: &str, outcome: Outcome, summary: &mut Summary, progress: &Progress) {
    summary.keys += 1;
    match outcome {
        Outcome::Placed | Outcome::Moved(Moved::AlreadyPlaced) => summary.placed += 1,
        Outcome::WouldMove { from, to } => {
            summary.moved += 1;
            progress.output(&format!("{key}\t{} -> {}", from.join(","), to.join(",")));
        }
        Outcome::Moved(Moved::Moved { bytes, leftovers, .. }) => {
            summary.moved += 1;
            summary.bytes += bytes;
            for (entry, error) in leftovers {
                summary.leftovers += 1;
                progress.report(&format!("{key:?}: moved, but the old copy on {entry} remains: {error}"));
            }
        }
        Outcome::Skipped => {
            summary.skipped += 1;
            progress.report(&format!("{key:?}: soft-deleted and no copy exists; left as is"));
        }
        Outcome::Failed(error) => {
            summary.failed += 1;
            progress.report(&format!("{key:?}: {error}"));
        }
        Outcome::Busy => {
            summary.busy += 1;
            progress.report(&format!("{key:?}: another write held the key throughout; not moved"));
        }
    }
}

/// How long a moved key's old copies outlive its new record: a GET answered
/// from the old record just before the rewrite sent its client to an old
/// copy, and that client's request to the volume must still find the file.
/// A redirect is followed within milliseconds; seconds leave a wide margin.
pub const STALE_COPY_GRACE: Duration = Duration::from_secs(2);
/// Tries at a key whose lock another write holds before it counts as busy:
/// a PUT or DELETE holds a key for milliseconds, so a few tries a short
/// delay apart get most keys, and a key written without pause is skipped
/// rather than holding up the walk.
const LOCK_TRIES: u32 = 5;
/// Wait between two tries at a busy key's lock.
const LOCK_RETRY_DELAY: Duration = Duration::from_millis(20);

/// Old copies being deleted once their grace is over: the key and the
/// copies that could not be deleted.
type DeferredDeletes = RefCell<Vec<JoinHandle<(Vec<u8>, Vec<(String, VolumeError)>)>>>;

/// A running master's rebalance (`admin`), beside its traffic: each key
/// placement wants elsewhere is moved under its write lock (a concurrent
/// PUT or DELETE of it gets 409; a key locked through `LOCK_TRIES` is
/// skipped and counted busy), from its record as re-read under the lock, the
/// new record written through the store (so the cache follows at once), and
/// its old copies deleted only `STALE_COPY_GRACE` later: a GET always
/// redirects to a copy that exists. Ends once the last grace is out.
pub async fn run_online(app: &App, options: &Options, sink: Option<Sink>) -> Result<Summary, IndexError> {
    let index = app.store.index();
    let progress = Progress::with_sink("rebalance", "keys", Some(count_records(index)?), sink);
    let deletes: DeferredDeletes = RefCell::new(Vec::new());
    let deletes = &deletes;
    let rebalance = |key: Vec<u8>, record| async move {
        let outcome = rebalance_online(app, options, &key, record, deletes).await?;
        Ok((key, outcome))
    };
    let mut summary = walk(index, options, &progress, rebalance).await?;
    for delete in deletes.take() {
        let (key, leftovers) = delete.await;
        for (entry, error) in leftovers {
            summary.leftovers += 1;
            let key = String::from_utf8_lossy(&key);
            progress.report(&format!("{key:?}: moved, but the old copy on {entry} remains: {error}"));
        }
    }
    summary.elapsed = progress.elapsed();
    progress.finish(&summary.to_string());
    Ok(summary)
}

/// Rebalance one record under its key's lock, leaving the old copies to
/// `deletes`.
async fn rebalance_online(
    app: &App,
    options: &Options,
    key: &[u8],
    record: Result<Record, RecordError>,
    deletes: &DeferredDeletes,
) -> Result<Outcome, IndexError> {
    let record = match record {
        Ok(record) => record,
        Err(error) => return Ok(Outcome::Failed(format!("the record is corrupt: {error}"))),
    };
    let placed = app.store.placement().place(key);
    if record.volumes == placed {
        return Ok(Outcome::Placed);
    }
    if options.dry_run {
        return Ok(Outcome::WouldMove {
            from: record.volumes,
            to: placed,
        });
    }
    let Some(_guard) = lock_key(app, key).await? else {
        return Ok(Outcome::Busy);
    };
    // A write may have changed the key since the scan read it; a key
    // removed since has nothing to move.
    let Some(record) = app.store.get(key)? else {
        return Ok(Outcome::Placed);
    };
    // An overwrite cut short in its commit: its record is the journal's to
    // settle, not to move (a moved record no longer matches the entry).
    if record.deleted && crate::journal::is_pending(app.store.index(), key)? {
        return Ok(Outcome::Busy);
    }
    let timeout = app.config.volume_timeout;
    // The job's own thread: a blocking commit holds up no reactor.
    let write = |record: Record| std::future::ready(app.store.put(key, &record));
    match relocate(key, &record, &placed, timeout, write).await {
        Ok(None) => Ok(Outcome::Placed),
        Ok(Some(Relocated { bytes, stale })) => {
            let key = key.to_vec();
            let due = Instant::now() + STALE_COPY_GRACE;
            deletes.borrow_mut().push(monoio::spawn(async move {
                monoio::time::sleep(due.saturating_duration_since(Instant::now())).await;
                let leftovers = delete_copies(&key2path(&key), &stale, timeout).await;
                (key, leftovers)
            }));
            Ok(Outcome::Moved(Moved::Moved {
                bytes,
                leftovers: Vec::new(),
            }))
        }
        Err(RebalanceError::NoCopy) if record.deleted => Ok(Outcome::Skipped),
        Err(RebalanceError::Index(error)) => Err(error),
        Err(error) => Ok(Outcome::Failed(error.to_string())),
    }
}

/// The key's write lock, tried `LOCK_TRIES` times; `None` if another write
/// held it throughout.
async fn lock_key<'a>(app: &'a App, key: &[u8]) -> Result<Option<KeyGuard<'a>>, IndexError> {
    for attempt in 1..=LOCK_TRIES {
        if let Some(guard) = app.store.try_lock(key)? {
            return Ok(Some(guard));
        }
        if attempt < LOCK_TRIES {
            monoio::time::sleep(LOCK_RETRY_DELAY).await;
        }
    }
    Ok(None)
}

/// Rebalance (or, in a dry run, plan) one record.
async fn rebalance_record(
    index: &Index,
    config: &Config,
    key: &[u8],
    record: Result<Record, RecordError>,
) -> Result<Outcome, IndexError> {
    let record = match record {
        Ok(record) => record,
        Err(error) => return Ok(Outcome::Failed(format!("the record is corrupt: {error}"))),
    };
    let placed = key2volume(key, &config.volumes, config.replicas, config.subvolumes);
    if record.volumes == placed {
        return Ok(Outcome::Placed);
    }
    if config.dry_run {
        return Ok(Outcome::WouldMove {
            from: record.volumes,
            to: placed,
        });
    }
    // An overwrite cut short in its commit: its record is the journal's to
    // settle (by the master, at its start), not to move.
    if record.deleted && crate::journal::is_pending(index, key)? {
        return Ok(Outcome::Skipped);
    }
    let write = |record: Record| std::future::ready(index.put(key, &record));
    match move_key(key, &record, &placed, config.volume_timeout, write).await {
        Ok(moved) => Ok(Outcome::Moved(moved)),
        // A soft-deleted record without any copy is a PUT that never
        // finished; there is nothing to move.
        Err(RebalanceError::NoCopy) if record.deleted => Ok(Outcome::Skipped),
        Err(RebalanceError::Index(error)) => Err(error),
        Err(error) => Ok(Outcome::Failed(error.to_string())),
    }
}

/// Every record in key order, read in batches.
pub(crate) struct Records<'a> {
    index: &'a Index,
    batch: VecDeque<(Vec<u8>, Result<Record, RecordError>)>,
    /// Where the next batch starts; None once the index is exhausted.
    resume: Option<Vec<u8>>,
}

impl<'a> Records<'a> {
    pub(crate) fn new(index: &'a Index) -> Records<'a> {
        Records {
            index,
            batch: VecDeque::with_capacity(SCAN_BATCH_RECORDS),
            resume: Some(Vec::new()),
        }
    }

    fn refill(&mut self) -> Result<(), IndexError> {
        let Some(start) = self.resume.take() else {
            return Ok(());
        };
        let batch = &mut self.batch;
        let stopped = self.index.view().scan(b"", &start, |key, record| {
            batch.push_back((key.to_vec(), record));
            batch.len() < SCAN_BATCH_RECORDS
        })?;
        if stopped {
            self.resume = Some(key_after(&batch.back().expect("a stopped scan read a record").0));
        }
        Ok(())
    }
}

impl Iterator for Records<'_> {
    type Item = Result<(Vec<u8>, Result<Record, RecordError>), IndexError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.batch.is_empty() {
            if let Err(error) = self.refill() {
                return Some(Err(error));
            }
        }
        self.batch.pop_front().map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn plan_copies_to_new_volumes_and_deletes_old_holders() {
        let plan = plan(
            &entries(&["a", "b", "c"]),
            &[true, true, true],
            &entries(&["b", "d", "e"]),
        );
        assert_eq!(plan.sources, entries(&["a", "b", "c"]));
        assert_eq!(plan.targets, entries(&["d", "e"]));
        assert_eq!(plan.stale, entries(&["a", "c"]));
    }

    #[test]
    fn plan_recopies_a_recorded_copy_that_is_missing() {
        let plan = plan(&entries(&["a", "b"]), &[false, true], &entries(&["a", "c"]));
        assert_eq!(plan.sources, entries(&["b"]));
        assert_eq!(plan.targets, entries(&["a", "c"]));
        assert_eq!(plan.stale, entries(&["b"]));
    }

    #[test]
    fn plan_reorders_without_copying_or_deleting() {
        let plan = plan(&entries(&["b", "a"]), &[true, true], &entries(&["a", "b"]));
        assert!(plan.targets.is_empty() && plan.stale.is_empty(), "{plan:?}");
    }

    #[test]
    fn plan_never_deletes_a_placed_entry_or_a_non_holder() {
        let plan = plan(&entries(&["a", "b", "c"]), &[false, true, false], &entries(&["b"]));
        assert_eq!(plan.targets, Vec::<String>::new());
        assert_eq!(plan.stale, Vec::<String>::new());
        let plan = super::plan(&entries(&["a"]), &[false], &entries(&["b"]));
        assert!(plan.sources.is_empty());
    }
}
