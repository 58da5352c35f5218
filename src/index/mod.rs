//! The index: key -> `Record` (plus metadata and S3 state), behind one
//! interface with two engines.
//!
//! - `rocks`: an embedded RocksDB, the default (`-db /path`): no setup, the
//!   fastest path, one master.
//! - `pg`: PostgreSQL (`-db postgres://...`): many masters over one index
//!   that PostgreSQL replicates; it adds what many masters need, per-key
//!   write locks that hold across masters and change notifications that keep
//!   each master's record cache coherent (`coherence`).
//!
//! Only these modules talk to a database. Both store a record as the
//! original master's bytes (SPEC.md) and its metadata beside it, written in
//! one atomic change; both scan in key byte order. What each operation
//! promises is what the code above relies on; the tests at the end of this
//! file run against both engines.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::meta::{Meta, MetaError};
use crate::record::{Record, RecordError};

pub mod pg;
mod rocks;

pub use pg::{Event, KeyRead, LockToken};

/// How an index write goes out besides its changes (`Index::apply_async_as`).
#[derive(Clone, Copy, Debug)]
pub struct WriteAs {
    /// Other masters are notified (their caches' coherence). Changes no
    /// read can tell from what they replace (a record that is not live over
    /// one that is not live either, or none) need not be: PostgreSQL
    /// serialises notifying commits cluster-wide (RELIABILITY.md, "the
    /// cost of NOTIFY"), and a cache elsewhere that holds the key's former
    /// answer (missing or soft-deleted) gives the same answer.
    pub announce: bool,
    /// The last index write of a write under a key lock (`KeyGuard`): the
    /// commit also removes the leases of the keys it writes, so that
    /// dropping the guard costs no round trip. Nothing of those keys may be
    /// written after it under the same guard.
    pub release: bool,
}

impl WriteAs {
    pub const ANNOUNCED: WriteAs = WriteAs {
        announce: true,
        release: false,
    };
    pub const UNANNOUNCED: WriteAs = WriteAs {
        announce: false,
        release: false,
    };

    /// The same, ending the written keys' leases (`release`).
    pub const fn releasing(self) -> WriteAs {
        WriteAs { release: true, ..self }
    }
}

/// Records per write batch when filling the index in bulk.
pub const BATCH_RECORDS_MAX: usize = 10_000;

/// How to open the index.
#[derive(Clone, Debug)]
pub struct IndexOptions {
    /// RocksDB's block cache.
    pub block_cache_bytes: usize,
    /// fsync the write-ahead log on every write (RocksDB; PostgreSQL's
    /// durability is its own `synchronous_commit` setting).
    pub sync: bool,
    /// What the opener is: a serving master shares the index with other
    /// masters (PostgreSQL), an offline command (rebuild, rebalance,
    /// verify, seed) needs it to itself.
    pub role: Role,
}

/// Who opens the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Serve,
    Offline,
}

/// What went wrong in the index.
#[derive(Debug)]
pub enum IndexError {
    /// Another process (a running master?) holds the index's lock.
    Locked(PathBuf),
    /// RocksDB refused to open the directory.
    Open(PathBuf, String),
    /// A read or write failed.
    Io(String),
    /// The index cannot be reached now (PostgreSQL down or failing over);
    /// a write answered so did not take effect or its outcome is unknown,
    /// and a retry may succeed.
    Unavailable(String),
    /// A stored record does not decode.
    Corrupt { key: Vec<u8>, error: RecordError },
    /// Stored metadata does not decode.
    CorruptMeta { key: Vec<u8>, error: MetaError },
}

impl fmt::Display for IndexError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndexError::Locked(path) => write!(
                formatter,
                "index {} is locked by another process (is a master or another mkv command running on it?)",
                path.display()
            ),
            IndexError::Open(path, message) => write!(formatter, "cannot open index {}: {message}", path.display()),
            IndexError::Io(message) => write!(formatter, "index error: {message}"),
            IndexError::Unavailable(message) => write!(formatter, "index unavailable: {message}"),
            IndexError::Corrupt { key, error } => {
                write!(
                    formatter,
                    "record of key {:?} is corrupt: {error}",
                    String::from_utf8_lossy(key)
                )
            }
            IndexError::CorruptMeta { key, error } => {
                write!(formatter, "{error} for key {:?}", String::from_utf8_lossy(key))
            }
        }
    }
}

impl std::error::Error for IndexError {}

/// One change of an atomic write (`Index::apply`).
#[derive(Clone, Copy)]
pub enum Change<'a> {
    /// Store a record.
    Record(&'a [u8], &'a Record),
    /// Store a record's metadata.
    Meta(&'a [u8], &'a Meta),
    /// Remove a record and its metadata.
    Remove(&'a [u8]),
    /// Store an S3 state entry.
    StatePut(&'a [u8], &'a [u8]),
    /// Remove an S3 state entry.
    StateDelete(&'a [u8]),
}

/// The persistent index, in one of its engines.
pub enum Index {
    Rocks(rocks::Rocks),
    /// Boxed: its connection settings are large, and the index is made once.
    Postgres(Box<pg::Postgres>),
}

/// Whether `-db` names a PostgreSQL database rather than a directory.
pub fn is_postgres_url(db: &Path) -> bool {
    db.to_str()
        .is_some_and(|text| text.starts_with("postgres://") || text.starts_with("postgresql://"))
}

impl Index {
    /// Open the index `db` names: a PostgreSQL URL, or a RocksDB directory
    /// (created if missing).
    pub fn open(db: &Path, options: &IndexOptions) -> Result<Index, IndexError> {
        if is_postgres_url(db) {
            let url = db.to_str().expect("a URL is text");
            return pg::Postgres::open(url, options).map(|engine| Index::Postgres(Box::new(engine)));
        }
        rocks::Rocks::open(db, options).map(Index::Rocks)
    }

    /// The PostgreSQL engine, if that is the one.
    pub fn postgres(&self) -> Option<&pg::Postgres> {
        match self {
            Index::Postgres(engine) => Some(engine),
            Index::Rocks(_) => None,
        }
    }

    /// The record of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, IndexError> {
        match self {
            Index::Rocks(engine) => engine.get(key),
            Index::Postgres(engine) => engine.get(key),
        }
    }

    /// The record of `key` and the S3 state entry at `state_key` (one
    /// round trip on PostgreSQL).
    pub fn get_with_state(
        &self,
        key: &[u8],
        state_key: &[u8],
    ) -> Result<(Option<Record>, Option<Vec<u8>>), IndexError> {
        match self {
            Index::Rocks(engine) => Ok((engine.get(key)?, engine.state(state_key)?)),
            Index::Postgres(engine) => engine.get_with_state(key, state_key),
        }
    }

    /// Store `record` under `key` (durable on return).
    pub fn put(&self, key: &[u8], record: &Record) -> Result<(), IndexError> {
        self.apply(&[Change::Record(key, record)])
    }

    /// Remove `key`'s record and metadata (hard delete).
    pub fn delete(&self, key: &[u8]) -> Result<(), IndexError> {
        self.apply(&[Change::Remove(key)])
    }

    /// The metadata of `key`, if any was recorded.
    pub fn meta(&self, key: &[u8]) -> Result<Option<Meta>, IndexError> {
        match self {
            Index::Rocks(engine) => engine.meta(key),
            Index::Postgres(engine) => engine.meta(key),
        }
    }

    /// Apply `changes` in one atomic write.
    pub fn apply(&self, changes: &[Change<'_>]) -> Result<(), IndexError> {
        validate(changes)?;
        match self {
            Index::Rocks(engine) => engine.apply(changes),
            Index::Postgres(engine) => engine.apply(changes),
        }
    }

    /// `apply`, awaited without blocking the reactor where the engine's
    /// write waits on the network (PostgreSQL: `offload`); RocksDB's write
    /// is a WAL append and runs here.
    pub async fn apply_async(self: &Arc<Index>, changes: &[Change<'_>]) -> Result<(), IndexError> {
        self.apply_async_as(changes, WriteAs::ANNOUNCED).await
    }

    /// `apply_async`, sent as `how` says (PostgreSQL; RocksDB has no other
    /// master to tell and no lease to end).
    pub async fn apply_async_as(self: &Arc<Index>, changes: &[Change<'_>], how: WriteAs) -> Result<(), IndexError> {
        validate(changes)?;
        match &**self {
            Index::Rocks(engine) => engine.apply(changes),
            Index::Postgres(engine) => {
                let mut batch = engine.prepare(changes);
                if !how.announce {
                    batch = batch.unannounced();
                }
                if how.release {
                    batch = batch.releasing();
                }
                let index = self.clone();
                crate::offload::write(move || match &*index {
                    Index::Postgres(engine) => engine.apply_batch(batch),
                    Index::Rocks(_) => unreachable!("the engine does not change"),
                })
                .await
                .unwrap_or_else(|| Err(not_answered()))
            }
        }
    }

    /// The S3 state entry at `key`.
    pub fn state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, IndexError> {
        match self {
            Index::Rocks(engine) => engine.state(key),
            Index::Postgres(engine) => engine.state(key),
        }
    }

    /// Visit S3 state entries starting with `prefix`, from `start` on, in
    /// byte order, until `visit` returns false or `visits_max` were seen.
    pub fn scan_state(
        &self,
        prefix: &[u8],
        start: &[u8],
        visits_max: usize,
        visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), IndexError> {
        match self {
            Index::Rocks(engine) => engine.scan_state(prefix, start, visits_max, visit),
            Index::Postgres(engine) => engine.scan_state(prefix, start, visits_max, visit),
        }
    }

    /// Store many records in one atomic write.
    pub fn put_batch<'a>(&self, records: impl IntoIterator<Item = (&'a [u8], &'a Record)>) -> Result<(), IndexError> {
        match self {
            Index::Rocks(engine) => engine.put_batch(records),
            Index::Postgres(engine) => engine.put_batch(records),
        }
    }

    /// The engine's integer property `name` (RocksDB's
    /// `rocksdb.cur-size-all-mem-tables`, ...) for metrics; `None` when the
    /// engine does not know it.
    pub fn property(&self, name: &str) -> Option<u64> {
        match self {
            Index::Rocks(engine) => engine.property(name),
            Index::Postgres(_) => None,
        }
    }

    /// Settle the index after a bulk load (RocksDB compacts, PostgreSQL
    /// refreshes the planner's statistics).
    pub fn compact(&self) {
        match self {
            Index::Rocks(engine) => engine.compact(),
            Index::Postgres(engine) => engine.analyze(),
        }
    }

    /// Remove every record and its metadata (rebuild starts from nothing).
    /// Returns how many records.
    pub fn clear(&self) -> Result<u64, IndexError> {
        match self {
            Index::Rocks(engine) => engine.clear(),
            Index::Postgres(engine) => engine.clear(),
        }
    }

    /// A view for scans that take more than one pass: a point-in-time
    /// snapshot on RocksDB; on PostgreSQL each batch of a scan is its own
    /// query (no long transaction pins old row versions), so a scan sees a
    /// key's latest record as of when its batch was read.
    pub fn view(&self) -> View<'_> {
        match self {
            Index::Rocks(engine) => View::Rocks(engine.view()),
            Index::Postgres(engine) => View::Postgres(engine),
        }
    }

    /// Take `key`'s write lock across masters (PostgreSQL); always granted
    /// by RocksDB, which one master holds alone. `Ok(false)`: another
    /// master holds it. Waits here, on the lock pool's thread, at most
    /// `offload::INDEX_WAIT_MS_MAX` (a caller on a reactor blocks that
    /// long at worst; `try_lock_key_async` does not block).
    pub fn try_lock_key(self: &Arc<Index>, key: &[u8]) -> Result<Option<LockToken>, IndexError> {
        if self.postgres().is_none() {
            return Ok(Some(0));
        }
        let (call, undo) = self.lock_call(key, plain_lock);
        let granted = crate::offload::block_within(call, undo).unwrap_or_else(|| Err(lock_not_answered()));
        Ok(granted?.map(|(token, ())| token))
    }

    /// A lock call for the lock pool (`lock`, one of `pg::Postgres`'s key
    /// locks, run with the key), and what undoes its grant when the caller
    /// gave up waiting for it.
    fn lock_call<T: Send + 'static>(
        self: &Arc<Index>,
        key: &[u8],
        lock: impl FnOnce(&pg::Postgres, &[u8]) -> LockGrant<T> + Send + 'static,
    ) -> (
        impl FnOnce() -> LockGrant<T> + Send + 'static,
        impl FnOnce(LockGrant<T>) + Send + 'static,
    ) {
        let (index, undone) = (self.clone(), self.clone());
        let (key, unlocked) = (key.to_vec(), key.to_vec());
        let call = move || lock(index.postgres().expect("a PostgreSQL index"), &key);
        let undo = move |granted: LockGrant<T>| {
            if let Ok(Some((token, _))) = granted {
                undone
                    .postgres()
                    .expect("a PostgreSQL index")
                    .unlock_key(&unlocked, token);
            }
        };
        (call, undo)
    }

    /// `try_lock_key`, awaited without blocking the reactor.
    pub async fn try_lock_key_async(self: &Arc<Index>, key: &[u8]) -> Result<Option<LockToken>, IndexError> {
        if self.postgres().is_none() {
            return Ok(Some(0));
        }
        let (call, undo) = self.lock_call(key, plain_lock);
        let granted = crate::offload::lock_within(call, undo)
            .await
            .unwrap_or_else(|| Err(lock_not_answered()));
        Ok(granted?.map(|(token, ())| token))
    }

    /// `try_lock_key_async`, reading with the lock (PostgreSQL: in the
    /// same round trip, `pg::Postgres::try_lock_key_reading`) `key`'s
    /// record and the state entry at `entry_key`, and putting in `reserve`
    /// as the key's record when it has neither. The read is None where the
    /// engine reads as usual instead (RocksDB: reads cost no round trip).
    /// A grant its caller gave up waiting for is released; a reserved
    /// record stays (a soft-deleted key, as a write refused before its
    /// bytes leaves).
    pub async fn try_lock_key_reading_async(
        self: &Arc<Index>,
        key: &[u8],
        entry_key: &[u8],
        reserve: Option<Record>,
    ) -> LockGrant<Option<KeyRead>> {
        if self.postgres().is_none() {
            return Ok(Some((0, None)));
        }
        let entry_key = entry_key.to_vec();
        let (call, undo) = self.lock_call(key, move |engine, key| {
            engine.try_lock_key_reading(key, &entry_key, reserve.as_ref())
        });
        crate::offload::lock_within(call, undo)
            .await
            .unwrap_or_else(|| Err(lock_not_answered()))
    }

    /// Release a lock `try_lock_key` granted as `token`: at once in this
    /// process (no renewal, no check in a commit), then in the database
    /// on the lock pool, which the caller (a guard dropped on a reactor)
    /// waits for at most `offload::UNLOCK_WAIT_MS_MAX`.
    pub fn unlock_key(self: &Arc<Index>, key: &[u8], token: LockToken) {
        if let Some(engine) = self.postgres() {
            engine.release_key(key, token);
            // Its write's commit removed the lease already: no round trip.
            if engine.released(token) {
                return;
            }
            let index = self.clone();
            let key = key.to_vec();
            crate::offload::lock_briefly(move || index.postgres().expect("checked above").unlock_key(&key, token));
        }
    }

    /// Whether this process still holds `key`'s lock with at least
    /// `pg::KEY_LEASE_LEFT_MIN_MS` of its lease left: a writer checks it
    /// before each piece of a value it sends and before the last one.
    /// Always on RocksDB (one master; its lock cannot be lost).
    pub fn still_held(&self, key: &[u8]) -> bool {
        match self {
            Index::Rocks(_) => true,
            Index::Postgres(engine) => engine
                .key_lease_left(key)
                .is_some_and(|left| left >= Duration::from_millis(pg::KEY_LEASE_LEFT_MIN_MS)),
        }
    }
}

/// What a key-lock call answers: the holding's token and what the call
/// read with it, or None (held elsewhere).
pub type LockGrant<T> = Result<Option<(LockToken, T)>, IndexError>;

/// `pg::Postgres::try_lock_key` as a `lock_call`.
fn plain_lock(engine: &pg::Postgres, key: &[u8]) -> LockGrant<()> {
    Ok(engine.try_lock_key(key)?.map(|token| (token, ())))
}

/// An offloaded index call that did not answer within
/// `offload::INDEX_WAIT_MS_MAX` (503 with Retry-After).
pub fn not_answered() -> IndexError {
    IndexError::Unavailable(format!(
        "the index did not answer within {} ms",
        crate::offload::INDEX_WAIT_MS_MAX
    ))
}

fn lock_not_answered() -> IndexError {
    IndexError::Unavailable(format!(
        "the index did not answer a key lock within {} ms",
        crate::offload::INDEX_WAIT_MS_MAX
    ))
}

/// A view of the index for scans (`Index::view`).
pub enum View<'a> {
    Rocks(rocks::RocksView<'a>),
    Postgres(&'a pg::Postgres),
}

impl View<'_> {
    /// The metadata of `key` as of the view.
    pub fn meta(&self, key: &[u8]) -> Result<Option<Meta>, IndexError> {
        match self {
            View::Rocks(view) => view.meta(key),
            View::Postgres(engine) => engine.meta(key),
        }
    }

    /// Visit records with keys starting with `prefix`, from `start` (or the
    /// prefix) in byte order, until `visit` returns false. Returns whether the
    /// scan stopped early.
    pub fn scan(
        &self,
        prefix: &[u8],
        start: &[u8],
        mut visit: impl FnMut(&[u8], Result<Record, RecordError>) -> bool,
    ) -> Result<bool, IndexError> {
        let stopped_at = self.scan_bounded(prefix, start, usize::MAX, |key, record| visit(key, record))?;
        Ok(stopped_at.is_some())
    }

    /// Visit at most `visits_max` records with keys starting with `prefix`,
    /// from `start` (or the prefix) in byte order, until `visit` returns
    /// false. Returns the key of the first record not visited (the one
    /// `visit` declined, or the first one past `visits_max`): where a scan
    /// resumes. `None` when no record is left.
    pub fn scan_bounded(
        &self,
        prefix: &[u8],
        start: &[u8],
        visits_max: usize,
        visit: impl FnMut(&[u8], Result<Record, RecordError>) -> bool,
    ) -> Result<Option<Vec<u8>>, IndexError> {
        match self {
            View::Rocks(view) => view.scan_bounded(prefix, start, visits_max, visit),
            View::Postgres(engine) => engine.scan_bounded(prefix, start, visits_max, visit),
        }
    }
}

/// Every record of `changes` encodes (a write never stores what it
/// could not read back).
fn validate(changes: &[Change<'_>]) -> Result<(), IndexError> {
    for change in changes {
        if let Change::Record(key, record) = change {
            record.validate().map_err(|error| IndexError::Corrupt {
                key: key.to_vec(),
                error,
            })?;
        }
    }
    Ok(())
}

/// `key`'s stored record `bytes` decoded (a corrupt one is an error naming
/// the key).
fn decode_record(key: &[u8], bytes: Option<&[u8]>) -> Result<Option<Record>, IndexError> {
    bytes
        .map(|bytes| {
            Record::decode(bytes).map_err(|error| IndexError::Corrupt {
                key: key.to_vec(),
                error,
            })
        })
        .transpose()
}

/// `key`'s stored metadata `bytes` decoded (a corrupt one is an error
/// naming the key).
fn decode_meta(key: &[u8], bytes: Option<&[u8]>) -> Result<Option<Meta>, IndexError> {
    bytes
        .map(|bytes| {
            Meta::decode(bytes).map_err(|error| IndexError::CorruptMeta {
                key: key.to_vec(),
                error,
            })
        })
        .transpose()
}

/// The smallest key after `key`: where a scan resumes after reading `key`.
pub fn key_after(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// The smallest key greater than every key starting with `prefix` (None:
/// there is none, the prefix is all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests;
