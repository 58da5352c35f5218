//! The write protocol: how a value becomes a key's live value, whoever
//! sends it (a native PUT, an S3 PutObject, CopyObject or the completion of
//! a multipart upload).
//!
//! With the key's lock held: the record goes in `DELETED` naming the
//! volumes placement chooses, before any volume is touched; the bytes
//! stream to every replica at once (`replication`); only when every replica
//! took them does the record go live, with its metadata, in one atomic
//! index write. A crash anywhere leaves at worst a soft-deleted key, never a
//! live key without its bytes.
//!
//! A failed write puts the key back as it was wherever it can: what the
//! key held before (live, or unlinked and relinkable) stays readable on
//! every replica that did not take the new bytes.

use crate::app::App;
use crate::error::Error;
use crate::index::{Change, IndexError, KeyRead};
use crate::meta::Meta;
use crate::placement::{hex_lower, key2path, path_is_own};
use crate::record::Record;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::journal;
use crate::replication::{self, Failed, Gate, GateError, PieceSource, ReplicationError, Sealed, Target};
use crate::volume::Settled;

/// How long an index write that settles what a key holds after its bytes
/// changed (the commit of a new value, the restoring of the prior one) is
/// tried again while the index fails: a blip (a connection reset by a
/// failover) costs the writer a short wait; an index that stays down is
/// answered within the request's bound (503: the commit journal finishes
/// an overwrite once the index is back, and a new key's bytes were never
/// acknowledged). A try that started is bounded by the index's own
/// statement bound.
const SETTLE_RETRY_FOR: Duration = Duration::from_secs(1);
/// The longest pause between two tries.
const SETTLE_PAUSE_MAX: Duration = Duration::from_millis(250);

/// What to write besides the bytes.
pub struct Plan<'a> {
    /// A live value may be replaced (S3); otherwise a live key is refused
    /// (the native API: DELETE first).
    pub overwrite: bool,
    /// The value's length, when known before it arrives.
    pub declared: Option<u64>,
    /// Record the value's md5 (`-md5sum`; always for S3, whose ETag it is).
    pub with_md5: bool,
    /// The md5 the client says the value has (`Content-MD5`).
    pub expected_md5: Option<[u8; 16]>,
    /// A 0-byte value is a value (S3), not a missing body.
    pub allow_empty: bool,
    /// Metadata stored with the live record; size and mtime are filled in.
    pub meta: Meta,
    /// More index changes made in the same atomic write as the live record
    /// (a completed multipart upload's state removed).
    pub changes: &'a [Change<'a>],
    /// The key's record and journal entry, read with its lock (and its
    /// `DELETED` record perhaps put in: `Store::try_lock_reading_async`);
    /// None: read here.
    pub locked: Option<KeyRead>,
}

impl<'a> Plan<'a> {
    /// An S3 value: it may replace a live one, its md5 is its ETag, and
    /// 0 bytes are a value.
    pub fn s3_value(declared: Option<u64>, meta: Meta) -> Plan<'a> {
        Plan {
            overwrite: true,
            declared,
            with_md5: true,
            expected_md5: None,
            allow_empty: true,
            meta,
            changes: &[],
            locked: None,
        }
    }
}

/// A value written: its record is live.
pub struct Stored {
    pub md5: Option<[u8; 16]>,
    pub meta: Meta,
}

/// Why a write did not happen.
#[derive(Debug)]
pub enum WriteError {
    /// The key is live and the plan does not overwrite.
    Exists,
    /// The key is live and `-protect` is on: no writer replaces it.
    Protected,
    /// The index failed.
    Index(IndexError),
    /// The bytes did not all reach every replica; the key is as it was
    /// wherever the failure allowed.
    Replication(ReplicationError),
}

impl From<IndexError> for WriteError {
    fn from(error: IndexError) -> Self {
        WriteError::Index(error)
    }
}

/// Write the value `source` delivers as `key`'s. The caller holds the
/// key's lock.
pub async fn store_value<S: PieceSource>(
    app: &App,
    key: &[u8],
    source: &mut S,
    mut plan: Plan<'_>,
) -> Result<Stored, WriteError> {
    let (prior, reserved) = match plan.locked.take() {
        Some(read) => (
            journal::record_read_under_lock(app, key, read.record, read.entry).await?,
            read.reserved,
        ),
        None => (journal::record_under_lock(app, key).await?, false),
    };
    if prior.as_ref().is_some_and(Record::is_live) {
        // `-protect` holds for every writer: with it, a live value is
        // replaced by no one (S3 overwrites, copies and completions alike)
        // until it is unlinked.
        if app.config.protect {
            return Err(WriteError::Protected);
        }
        if !plan.overwrite {
            return Err(WriteError::Exists);
        }
    }
    let entries = app.store.placement().place(key);
    // The record goes in as deleted before any volume is touched, unless
    // a live value is being replaced: that one stays readable while the new
    // bytes stream (every replica holds it whole until the new value's last
    // bytes arrive) and goes deleted only then (`Commit`). A prior record
    // naming the same volumes says that already once it is marked deleted
    // (keeping its md5, so RELINK can tell its bytes).
    let committing_record = match prior.as_ref() {
        Some(record) if record.volumes == entries => record.with_deleted(true),
        _ => Record::new(entries.clone(), true, None),
    };
    // Over no record or a deleted one, reads answer as before: other
    // masters need not hear of it (their caches say missing or deleted).
    // A record reserved with the lock is this one: the key had none, and
    // the reservation names what placement chooses
    // (`Store::try_lock_reading_async`).
    let written = reserved && prior.is_none();
    if !written && !prior.as_ref().is_some_and(Record::is_live) && prior.as_ref() != Some(&committing_record) {
        app.store.put_unannounced_async(key, &committing_record).await?;
    }
    let path = key2path(key);
    let target = Target {
        entries: &entries,
        key_path: &path,
        declared: plan.declared,
        with_md5: plan.with_md5,
        expected_md5: plan.expected_md5,
        allow_empty: plan.allow_empty,
        connect_timeout: app.config.volume_timeout,
    };
    let mut commit = Commit {
        app,
        key,
        // The gate record is the old one, deleted: it names where the old
        // value is (placement may have moved since it was written).
        record: prior
            .as_ref()
            .filter(|record| record.is_live())
            .map(|record| record.with_deleted(true)),
        entries: &entries,
        meta: &plan.meta,
        journaled: None,
        committing: None,
    };
    let replicated = replication::replicate(source, &target, &mut commit).await;
    // Readers that wait on the commit look again once it is over, either way.
    let mut committing = commit.committing.take();
    let journaled = commit.journaled.take();
    let entry_key = journaled.as_ref().map(|_| journal::entry_key(key));
    let result = match replicated {
        Ok(written) => {
            let meta = sealed_meta(
                plan.meta,
                &Sealed {
                    bytes: written.bytes,
                    md5: written.md5,
                    checksum: source.checksum(),
                },
            );
            let record = Record::new(entries, false, written.md5.as_ref().map(hex_lower));
            // The commit removes the overwrite's journal entry in the same
            // atomic write.
            let mut changes = plan.changes.to_vec();
            changes.extend(entry_key.as_deref().map(Change::StateDelete));
            // A prior value on volumes placement no longer names (it moved
            // since that write) is named by no record after the commit:
            // removed after it, under the key's lock.
            let stale: Vec<String> = prior
                .map(|prior| prior.volumes)
                .unwrap_or_default()
                .into_iter()
                .filter(|entry| !record.volumes.contains(entry))
                .collect();
            // Every replica holds the new bytes now (an overwritten value's
            // old ones are gone): the record must say so, or the key has no
            // value at all. If it cannot, the journal entry stays, and the
            // sweep finishes the commit from the replicas. With nothing
            // left to do under the lock, the first try also ends the key's
            // lease (`Store::commit_async`); a try after one whose outcome
            // is unknown does not, so that it still finds the lease it
            // checks if the first did not land. If the first did land, the
            // lease is gone and the try fails its check: the record then
            // says whether this write is live (it is this write's, which no
            // one else writes: the new md5 under a live record).
            let releasing = stale.is_empty();
            let mut first = releasing;
            let (live, sealed, all) = (&record, &meta, &changes);
            settle(key, || {
                let release = std::mem::take(&mut first);
                async move {
                    if release {
                        return app.store.commit_async(key, live, sealed, all).await;
                    }
                    match app.store.put_with_meta_async(key, live, sealed, all).await {
                        Err(error) if releasing => match app.store.get_async(key).await {
                            Ok(Some(found)) if found == *live => Ok(()),
                            _ => Err(error),
                        },
                        result => result,
                    }
                }
            })
            .await?;
            committing.take();
            if let Err(error) = replication::delete_all(&stale, &path, app.config.volume_timeout).await {
                eprintln!(
                    "write of {:?}: an old copy is left: {error}",
                    String::from_utf8_lossy(key)
                );
            }
            Ok(Stored { md5: written.md5, meta })
        }
        Err(Failed { error, settled }) => {
            undo(app, key, &entries, prior, &settled, journaled.as_ref()).await;
            Err(WriteError::Replication(error))
        }
    };
    drop(committing);
    result
}

/// The metadata a value's live record gets: the plan's, with the sealed
/// value's size, now as its mtime, and a checksum the source verified when
/// the metadata has room for it (it is optional; the md5 is not).
fn sealed_meta(meta: Meta, sealed: &Sealed) -> Meta {
    let mut meta = Meta {
        size: sealed.bytes,
        mtime_ms: crate::meta::now_ms(),
        ..meta
    };
    if let Some(entry) = sealed.checksum.clone() {
        meta.user.push(entry);
        if !Meta::user_fits(&meta.user) {
            meta.user.pop();
        }
    }
    meta
}

/// The gate of an overwrite of a live value: just before the new value's
/// last bytes go out, the key is marked committing (readers that see the
/// mark wait for the commit rather than read a replica that may be
/// switching) and its record goes deleted, so that no live record names
/// copies that may hold other bytes than its md5 says; in the same atomic
/// write the journal records what the new value will be
/// (`journal::Entry`), so that a write cut short from here on is finished
/// or undone from what the replicas hold, never left without a value.
struct Commit<'a> {
    app: &'a App,
    key: &'a [u8],
    /// The record to write at the gate (None: the record went deleted
    /// before the bytes did, nothing to do).
    record: Option<Record>,
    /// The volumes the new value goes to.
    entries: &'a [String],
    /// The plan's metadata, for the journal entry.
    meta: &'a Meta,
    /// The journal entry written at the gate.
    journaled: Option<journal::Entry>,
    /// Held from the gate until the write ends.
    committing: Option<Committing>,
}

impl Gate for Commit<'_> {
    fn may_send(&self) -> bool {
        self.app.store.still_held(self.key)
    }

    fn fenced(&self) -> bool {
        self.app.store.fenced()
    }

    async fn before_last(&mut self, sealed: &Sealed) -> Result<(), ReplicationError> {
        let Some(record) = self.record.take() else {
            return Ok(());
        };
        self.committing = Some(Committing::mark(self.key));
        let gate_error = |error| ReplicationError::Gate(GateError::Index(error));
        // Overwrites hash their values (S3: the md5 is the ETag); one that
        // did not could not be told from the old value: no journal entry.
        let Some(md5) = sealed.md5.as_ref().map(hex_lower) else {
            return self.app.store.put_async(self.key, &record).await.map_err(gate_error);
        };
        let entry = journal::Entry {
            gate: record,
            new: Record::new(self.entries.to_vec(), false, Some(md5)),
            meta: sealed_meta(self.meta.clone(), sealed),
        };
        let entry_key = journal::entry_key(self.key);
        let encoded = entry.encode();
        let written = self
            .app
            .store
            .put_with_async(self.key, &entry.gate, &[Change::StatePut(&entry_key, &encoded)])
            .await;
        // Written or not (an outcome the index could not tell), the undo
        // of a failure from here on removes the entry with its record.
        self.journaled = Some(entry);
        written.map_err(gate_error)
    }
}

/// Keys whose new value's last bytes are on their way to the replicas
/// (on this master): each replica switches from the old value to the new
/// at a moment of its own until the record says which is live.
static COMMITTING: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());
/// How many keys `COMMITTING` holds: a read of a missing key (the native
/// 404 path) asks no lock when none is committing.
static COMMITTING_COUNT: AtomicUsize = AtomicUsize::new(0);

/// A key marked committing, unmarked on drop (whatever ends the write).
struct Committing {
    key: Box<[u8]>,
}

impl Committing {
    fn mark(key: &[u8]) -> Committing {
        let key: Box<[u8]> = key.into();
        lock_committing().push(key.clone());
        COMMITTING_COUNT.fetch_add(1, Ordering::AcqRel);
        Committing { key }
    }
}

impl Drop for Committing {
    fn drop(&mut self) {
        let mut committing = lock_committing();
        if let Some(at) = committing.iter().position(|key| *key == self.key) {
            committing.swap_remove(at);
            COMMITTING_COUNT.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn lock_committing() -> std::sync::MutexGuard<'static, Vec<Box<[u8]>>> {
    // A panic while the list was held may only have left a key marked
    // longer: readers wait on it up to their bound. The list stays usable.
    COMMITTING.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether `key`'s value is being switched to a new one right now: its
/// replicas may hold either, and its record says neither is live.
pub fn is_committing(key: &[u8]) -> bool {
    if COMMITTING_COUNT.load(Ordering::Acquire) == 0 {
        return false;
    }
    lock_committing().iter().any(|committing| **committing == *key)
}

/// Wait until `key` is not being switched to a new value on this master
/// (`Commit`), until `deadline`: false if it still is then.
pub async fn wait_committed(key: &[u8], deadline: Instant) -> bool {
    let mut pause = Duration::from_micros(200);
    while is_committing(key) {
        if Instant::now() + pause > deadline {
            return false;
        }
        monoio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(10));
    }
    true
}

/// A write stopped because its key's lock lapsed (503: another master may
/// be writing the key).
fn lock_lapsed() -> Error {
    Error::Index(IndexError::Unavailable("the key's lock lapsed".into()))
}

/// Remove `key`'s value: the record goes `DELETED` first, then the copies,
/// then the record. The caller holds the key's lock and read `record`.
/// A failure leaves the record deleted, so a later DELETE finishes it.
pub async fn delete_value(app: &App, key: &[u8], record: &Record) -> Result<(), Error> {
    if record.is_live() {
        app.store.put_async(key, &record.with_deleted(true)).await?;
    }
    // No copy is deleted once the key's lock lapsed: another master may be
    // writing it by then.
    if !app.store.still_held(key) {
        return Err(lock_lapsed());
    }
    let path = key2path(key);
    let timeout = app.config.volume_timeout;
    let copies = if path_is_own(key) {
        record.volumes.clone()
    } else {
        // An older master let such a key be written: the file at its merged
        // name may hold another key's value. Delete only copies that are
        // provably this key's bytes (its recorded md5); leave the rest.
        replication::copies_holding(record, &path, timeout).await?
    };
    // Watched as a write's uploads are: a DELETE held up on its way must
    // not reach a volume after another master took the key and wrote it.
    let deleted = replication::unless_lease_lost(
        app.store.fenced(),
        || app.store.still_held(key),
        replication::delete_all(&copies, &path, timeout),
    )
    .await;
    let Some(deleted) = deleted else {
        return Err(lock_lapsed());
    };
    deleted?;
    // The record says deleted already: removing it changes no answer. The
    // last index write under the key's lock: it ends the lease too.
    app.store.remove_releasing_async(key).await?;
    Ok(())
}

/// Run `write`, an index write that settles what `key` holds, again while
/// it fails, for up to `SETTLE_RETRY_FOR`. Rewriting the same record is
/// harmless if an earlier try did land. The index fences each try: over
/// PostgreSQL the committing transaction checks this master's lease on the
/// key (`mkv_apply_fenced`), so a try after the lock lapsed (another master
/// may be writing the key) fails rather than commits; this master's own
/// view of the lease is not asked, because a commit stuck on the database
/// also holds up the lease's renewal it would wait for.
async fn settle<F, Fut>(key: &[u8], mut write: F) -> Result<(), IndexError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), IndexError>>,
{
    let deadline = Instant::now() + SETTLE_RETRY_FOR;
    let mut pause = Duration::from_millis(50);
    loop {
        match write().await {
            Ok(()) => return Ok(()),
            Err(error) if Instant::now() + pause < deadline => {
                eprintln!(
                    "write of {:?}: the index write that settles it failed ({error}); trying again",
                    String::from_utf8_lossy(key)
                );
                monoio::time::sleep(pause).await;
                pause = (pause * 2).min(SETTLE_PAUSE_MAX);
            }
            Err(error) => {
                eprintln!(
                    "write of {:?}: the index write that settles it failed for {SETTLE_RETRY_FOR:?}: {error}",
                    String::from_utf8_lossy(key)
                );
                return Err(error);
            }
        }
    }
}

/// After a failed write (every upload settled): put the key back as it was.
///
/// The prior value (live or unlinked) survives on every volume of its
/// record that took none of the new bytes: the new copies are removed and
/// the prior record is put back naming those volumes (all of them when no
/// replica took anything: exactly as it was). An overwrite that passed its
/// gate (`journaled`) and whose new value replaced the old one on every
/// copy the old record named is finished instead, on the replicas that
/// took the new value: the old value is gone, the new one is whole there
/// (answered 201/204 with every check done), and a key must never be left
/// with no value; with no replica that surely took it, the journal entry
/// stays and the sweep decides from what the replicas hold. With no prior
/// value, what reached the replicas is removed, then the record; if a
/// volume cannot be cleaned, or an upload's outcome is unknown (it may
/// still land), the record stays (deleted) so a later DELETE can finish
/// the job.
async fn undo(
    app: &App,
    key: &[u8],
    entries: &[String],
    prior: Option<Record>,
    settled: &[Settled],
    journaled: Option<&journal::Entry>,
) {
    let name = String::from_utf8_lossy(key);
    let touched: Vec<String> = entries
        .iter()
        .zip(settled)
        .filter(|(_, settled)| **settled != Settled::NotTaken)
        .map(|(entry, _)| entry.clone())
        .collect();
    let path = key2path(key);
    let timeout = app.config.volume_timeout;
    // A cleanup deletes copies: not once the key's lock lapsed (another
    // master may be writing it); the record stays as the failure left it,
    // and so does a journal entry, for the sweep.
    if !app.store.still_held(key) {
        eprintln!("failed write of {name:?}: its lock lapsed; copies left for a later write or DELETE");
        return;
    }
    let entry_key = journaled.map(|_| journal::entry_key(key));
    let drop_entry: &[Change<'_>] = match &entry_key {
        Some(entry_key) => &[Change::StateDelete(entry_key)],
        None => &[],
    };
    let survivor = prior.and_then(|record| {
        let volumes: Vec<String> = record
            .volumes
            .iter()
            .filter(|entry| !touched.contains(entry))
            .cloned()
            .collect();
        (!volumes.is_empty()).then(|| Record::new(volumes, record.deleted, record.hash))
    });
    if let Some(survivor) = survivor {
        if let Err(error) = replication::delete_all(&touched, &path, timeout).await {
            eprintln!("failed write of {name:?}: cleanup left new copies: {error}");
        }
        if let Err(error) = settle(key, || app.store.put_with_async(key, &survivor, drop_entry)).await {
            eprintln!("failed write of {name:?}: cannot restore its prior record: {error}");
        }
        return;
    }
    if let Some(entry) = journaled {
        let took: Vec<String> = entries
            .iter()
            .zip(settled)
            .filter(|(_, settled)| **settled == Settled::Taken)
            .map(|(entry, _)| entry.clone())
            .collect();
        if took.is_empty() {
            eprintln!("failed overwrite of {name:?}: no replica surely took the new value; the journal decides");
            return;
        }
        let record = Record::new(took, false, entry.new.hash);
        match settle(key, || {
            app.store.put_with_meta_async(key, &record, &entry.meta, drop_entry)
        })
        .await
        {
            Ok(()) => eprintln!(
                "failed overwrite of {name:?}: the old value was replaced on every copy; the new one is live on {:?}",
                record.volumes
            ),
            Err(error) => eprintln!("failed overwrite of {name:?}: cannot record its new value: {error}"),
        }
        return;
    }
    match replication::delete_all(entries, &path, timeout).await {
        Ok(()) if !settled.contains(&Settled::Unknown) => {
            // The record is the write's deleted one: no answer changes.
            if let Err(error) = app.store.remove_unannounced_async(key).await {
                eprintln!("failed write of {name:?}: cannot drop its record: {error}");
            }
        }
        Ok(()) => eprintln!("failed write of {name:?}: a replica did not answer; the record stays deleted"),
        Err(error) => eprintln!("failed write of {name:?}: cleanup left copies: {error}"),
    }
}
