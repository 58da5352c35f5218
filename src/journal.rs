//! The commit journal of overwrites: what an overwrite of a live value was
//! about to make live when its last bytes went out, so that a write cut
//! short in its commit (the master killed, the index down past the settle
//! retry, a lock lost) is finished or undone by reading the replicas back,
//! never left as a key with no value.
//!
//! At the gate (`write::Commit`) the key's record goes `DELETED` (the *gate
//! record*: the old record marked deleted) and, in the same atomic index
//! write, an entry under `c/<key>` in the state column records the new
//! value's md5 and metadata. The commit that makes the new value live, and
//! the undo that puts the old one back, remove the entry in their own
//! atomic write. An entry left behind is settled here, under the key's
//! lock, by whichever comes first: the sweep (`sweep_forever`, at start and
//! every `SWEEP_INTERVAL`), an S3 read that finds the key soft-deleted, or
//! a write, DELETE, UNLINK, RELINK or rebalance of the key
//! (`record_under_lock`), so that nothing acts on the gate record as if it
//! were a deleted key's.
//!
//! Settling: nginx stores a PUT whole or not at all, so each copy holds the
//! old value or the new one, whole (or is gone, or holds something else, or
//! its volume cannot be asked). The old value's copies are looked for on
//! the volumes the old record names, the new value's on those its bytes
//! went to (placement may have moved between the two writes): a copy of
//! the right size is read through and its md5 compared with the value's
//! (the old record's md5; without one, the size decides). The value more
//! copies hold wins (the new one on a tie: every copy of it is whole and
//! its md5 checked before its last byte went out), and the record goes live
//! naming the copies that hold it, with that value's md5 and metadata; the
//! other value's copies are deleted. With no copy that can be told, the
//! entry stays for a later try. A record that is no longer the gate record
//! means the entry is stale: dropped.
//!
//! An entry is settled only once `SETTLE_AFTER` has passed since its gate:
//! bytes a writer sent before it died (or before its lock lapsed) may still
//! be in a volume's socket buffer, and a copy read before they land would
//! be told wrong. Until then a read waits (at most its bound) and a write
//! answers 503. This assumes the masters' clocks agree within seconds and
//! that a volume that holds a whole body stores it within `SETTLE_AFTER`
//! (an nginx frozen longer than that with a complete body in its socket
//! can still switch a copy after the settling: RELIABILITY.md).

use std::time::Duration;

use futures_util::future::join_all;

use crate::app::App;
use crate::index::{Change, Index, IndexError};
use crate::meta::{now_ms, Meta};
use crate::placement::{entry_host, key2path};
use crate::record::Record;
use crate::replication::{self, entry_path};
use crate::volume;

/// Where the journal lives in the state column.
pub const PREFIX: &[u8] = b"c/";
/// How often the sweep walks the journal after its first walk at start
/// (a range scan of `c/`, empty but for overwrites in their commit).
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// Entries read from the index per step of a sweep.
const SWEEP_BATCH: usize = 100;
/// The encoding's version byte.
const VERSION: u8 = 2;
/// How long after its gate an entry may be settled: the volumes' own bound
/// on a write that makes no progress, by when bytes a writer sent before
/// it died have landed or never will.
const SETTLE_AFTER: Duration = replication::VOLUME_IO_TIMEOUT;

/// The state key of `key`'s entry.
pub fn entry_key(key: &[u8]) -> Vec<u8> {
    let mut entry_key = Vec::with_capacity(PREFIX.len() + key.len());
    entry_key.extend_from_slice(PREFIX);
    entry_key.extend_from_slice(key);
    entry_key
}

/// An overwrite in its commit.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The record the gate wrote: the old record, deleted (the volumes
    /// that hold the old value, and its md5 if it has one).
    pub gate: Record,
    /// The new value's record, live: the volumes its bytes went to, and
    /// its md5.
    pub new: Record,
    /// The new value's metadata (its size included; its mtime is the
    /// gate's).
    pub meta: Meta,
}

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        let (gate, new, meta) = (self.gate.encode(), self.new.encode(), self.meta.encode());
        let mut bytes = Vec::with_capacity(1 + 8 + gate.len() + new.len() + meta.len());
        bytes.push(VERSION);
        for part in [&gate, &new] {
            bytes.extend_from_slice(&(part.len() as u32).to_be_bytes());
            bytes.extend_from_slice(part);
        }
        bytes.extend_from_slice(&meta);
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        fn part(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
            let length = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
            let rest = &bytes[4..];
            (rest.len() >= length).then(|| rest.split_at(length))
        }
        let (&version, rest) = bytes.split_first()?;
        if version != VERSION {
            return None;
        }
        let (gate, rest) = part(rest)?;
        let (new, meta) = part(rest)?;
        let (gate, new) = (Record::decode(gate).ok()?, Record::decode(new).ok()?);
        if !gate.deleted || !new.is_live() || new.hash.is_none() {
            return None;
        }
        Some(Entry {
            gate,
            new,
            meta: Meta::decode(meta).ok()?,
        })
    }
}

/// What one copy holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Copy {
    New,
    Old,
    Gone,
    /// Neither value (a leftover of another write).
    Other,
    /// Its volume did not answer.
    Unknown,
}

/// How a journal entry was settled.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// No entry.
    None,
    /// The key's record is no longer the gate record: the entry was stale.
    Stale,
    /// The new value went live on this many copies.
    New(usize),
    /// The old value went back live on this many copies.
    Old(usize),
    /// No copy could be told: the entry stays.
    Undecided,
    /// Too soon after its gate to read the copies (`SETTLE_AFTER`).
    Young,
}

/// `key`'s journal entry, if any (read off the reactor).
pub async fn pending(app: &App, key: &[u8]) -> Result<Option<Entry>, IndexError> {
    let entry_key = entry_key(key);
    let bytes = app.store.state_async(&entry_key).await?;
    decoded(app, key, bytes).await
}

/// The journal entry of `key` read as `bytes`, if any; one that cannot be
/// read is dropped.
async fn decoded(app: &App, key: &[u8], bytes: Option<Vec<u8>>) -> Result<Option<Entry>, IndexError> {
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    let entry_key = entry_key(key);
    match Entry::decode(&bytes) {
        Some(entry) => Ok(Some(entry)),
        None => {
            // Nothing can be done with it; it must not block the key.
            eprintln!(
                "journal: the entry of {:?} cannot be read; dropped",
                String::from_utf8_lossy(key)
            );
            app.store.apply_async(&[Change::StateDelete(&entry_key)]).await?;
            Ok(None)
        }
    }
}

/// `key`'s record read by a holder of its lock, with a journal entry the
/// key may have left settled first: a soft-deleted record may be an
/// overwrite's gate record, which no writer may take for a deleted key's.
pub async fn record_under_lock(app: &App, key: &[u8]) -> Result<Option<Record>, IndexError> {
    // The record and the entry in one read: a write of a new key pays one
    // round trip for both (PostgreSQL).
    let (record, entry) = app.store.get_with_state_async(key, &entry_key(key)).await?;
    record_read_under_lock(app, key, record, entry).await
}

/// `record_under_lock` of a record and journal entry (`entry`, as stored)
/// already read under the key's lock (`Store::try_lock_reading_async`).
pub async fn record_read_under_lock(
    app: &App,
    key: &[u8],
    record: Option<Record>,
    entry: Option<Vec<u8>>,
) -> Result<Option<Record>, IndexError> {
    if record.as_ref().is_some_and(Record::is_live) {
        return Ok(record);
    }
    let entry = decoded(app, key, entry).await?;
    match settle_entry(app, key, entry).await? {
        Settled::None | Settled::Stale => Ok(record),
        Settled::New(_) | Settled::Old(_) => app.store.get_async(key).await,
        Settled::Undecided => Err(IndexError::Unavailable(
            "an overwrite of this key is unfinished and no copy can be read to finish it".into(),
        )),
        Settled::Young => Err(IndexError::Unavailable(
            "an overwrite of this key was cut short moments ago; it is settled shortly".into(),
        )),
    }
}

/// Settle `key`'s journal entry if it has one; the caller holds the key's
/// lock.
pub async fn settle_held(app: &App, key: &[u8]) -> Result<Settled, IndexError> {
    let entry = pending(app, key).await?;
    settle_entry(app, key, entry).await
}

/// Settle `key`'s journal entry `entry`, read under the key's lock.
async fn settle_entry(app: &App, key: &[u8], entry: Option<Entry>) -> Result<Settled, IndexError> {
    let Some(entry) = entry else {
        return Ok(Settled::None);
    };
    let entry_key = entry_key(key);
    let drop_entry = [Change::StateDelete(&entry_key)];
    let name = String::from_utf8_lossy(key);
    if app.store.get_async(key).await?.as_ref() != Some(&entry.gate) {
        eprintln!("journal: the entry of {name:?} no longer matches its record (changed since); dropped");
        app.store.apply_async(&drop_entry).await?;
        return Ok(Settled::Stale);
    }
    if now_ms() < entry.meta.mtime_ms.saturating_add(SETTLE_AFTER.as_millis() as u64) {
        return Ok(Settled::Young);
    }
    let old_size = app.store.meta_async(key).await.ok().flatten().map(|meta| meta.size);
    let path = key2path(key);
    let timeout = app.config.volume_timeout;
    let mut volumes: Vec<String> = entry.gate.volumes.clone();
    for volume in &entry.new.volumes {
        if !volumes.contains(volume) {
            volumes.push(volume.clone());
        }
    }
    let copies = join_all(
        volumes
            .iter()
            .map(|volume| told(volume, &path, &entry, old_size, timeout)),
    )
    .await;
    let holding = |wanted: Copy| -> Vec<String> {
        volumes
            .iter()
            .zip(&copies)
            .filter(|(_, copy)| **copy == wanted)
            .map(|(volume, _)| volume.clone())
            .collect()
    };
    let (news, olds) = (holding(Copy::New), holding(Copy::Old));
    if news.is_empty() && olds.is_empty() {
        eprintln!("journal: no copy of {name:?} can be told yet ({copies:?}); tried again later");
        return Ok(Settled::Undecided);
    }
    let (settled, losers) = if news.len() >= olds.len() {
        let record = Record::new(news.clone(), false, entry.new.hash);
        app.store
            .put_with_meta_async(key, &record, &entry.meta, &drop_entry)
            .await?;
        (Settled::New(news.len()), olds)
    } else {
        let record = Record::new(olds.clone(), false, entry.gate.hash);
        app.store.put_with_async(key, &record, &drop_entry).await?;
        (Settled::Old(olds.len()), news)
    };
    eprintln!("journal: the unfinished overwrite of {name:?} settled: {settled:?} ({copies:?})");
    // The other value's copies are named by no record now.
    if let Err(error) = replication::delete_all(&losers, &path, timeout).await {
        eprintln!("journal: {name:?}: a copy of the value that lost is left: {error}");
    }
    Ok(settled)
}

/// Settle `key`'s entry unless a request holds the key's lock (its writer
/// is still committing, or it settles it itself). Returns None when the
/// lock was busy.
pub async fn settle(app: &App, key: &[u8]) -> Result<Option<Settled>, IndexError> {
    let Some(_guard) = app.store.try_lock_async(key).await? else {
        return Ok(None);
    };
    settle_held(app, key).await.map(Some)
}

/// What the copy of `entry`'s key on `volume` holds: the new value only
/// where its bytes went, the old one only where the old record names it.
async fn told(volume: &str, path: &str, entry: &Entry, old_size: Option<u64>, timeout: Duration) -> Copy {
    let file = entry_path(volume, path);
    let length = match volume::head(entry_host(volume), &file, timeout).await {
        Ok(Some(info)) => info.length,
        Ok(None) => return Copy::Gone,
        Err(_) => return Copy::Unknown,
    };
    let may_be_new = entry.new.volumes.iter().any(|entry| entry == volume) && length == entry.meta.size;
    let may_be_old = entry.gate.volumes.iter().any(|entry| entry == volume)
        && old_size.is_none_or(|old| old == length)
        && (old_size.is_some() || entry.gate.hash.is_some());
    if !may_be_new && !may_be_old {
        return Copy::Other;
    }
    // Without an md5 the old value is told by its size alone.
    if !may_be_new && entry.gate.hash.is_none() {
        return Copy::Old;
    }
    let md5 = match replication::copy_md5(volume, path, timeout).await {
        Ok(Some(md5)) => md5,
        Ok(None) => return Copy::Gone,
        Err(_) => return Copy::Unknown,
    };
    if may_be_new && Some(md5) == entry.new.hash {
        Copy::New
    } else if may_be_old && entry.gate.hash.is_none_or(|old| old == md5) {
        Copy::Old
    } else {
        Copy::Other
    }
}

/// Whether `key` has a journal entry, read in place: for maintenance that
/// walks records on its own thread (`rebalance`), which leaves such a key
/// to the journal rather than move its gate record.
pub fn is_pending(index: &Index, key: &[u8]) -> Result<bool, IndexError> {
    Ok(index.state(&entry_key(key))?.is_some())
}

/// Settle every entry the journal holds: at start (a master killed in a
/// commit left it) and every `SWEEP_INTERVAL` (a commit the index refused
/// for longer than the writer retried, or whose writer died, on this
/// master or another). Reactor 0 runs it.
pub async fn sweep_forever(app: std::sync::Arc<App>) {
    loop {
        sweep(&app).await;
        monoio::time::sleep(SWEEP_INTERVAL).await;
    }
}

/// One walk over the journal; entries whose key is locked are left to
/// the request holding it.
pub async fn sweep(app: &App) {
    let mut after: Vec<u8> = Vec::new();
    loop {
        let start = after.clone();
        let batch = app
            .store
            .read_index(move |index| {
                let mut keys = Vec::new();
                index.scan_state(PREFIX, &start, SWEEP_BATCH, |key, _| {
                    keys.push(key[PREFIX.len()..].to_vec());
                    true
                })?;
                Ok(keys)
            })
            .await;
        let keys = match batch {
            Ok(keys) => keys,
            Err(error) => {
                eprintln!("journal: the sweep cannot read the index: {error}");
                return;
            }
        };
        let Some(last) = keys.last() else {
            return;
        };
        after = crate::index::key_after(&entry_key(last));
        for key in &keys {
            if let Err(error) = settle(app, key).await {
                eprintln!("journal: {:?}: {error}", String::from_utf8_lossy(key));
            }
        }
        // Entries too young to settle are taken by the next walk.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_as_written() {
        let entry = Entry {
            gate: Record::new(
                vec!["127.0.0.1:3001".into(), "127.0.0.1:3002/sv01".into()],
                true,
                Some(*b"0123456789abcdef0123456789abcdef"),
            ),
            new: Record::new(
                vec!["127.0.0.1:3003".into(), "127.0.0.1:3002/sv01".into()],
                false,
                Some(*b"fedcba9876543210fedcba9876543210"),
            ),
            meta: Meta {
                size: 1 << 33,
                mtime_ms: 1_700_000_000_000,
                etag: Some("\"abc-2\"".into()),
                content_type: Some("text/plain".into()),
                user: vec![("color".into(), "blue".into())],
            },
        };
        assert_eq!(Entry::decode(&entry.encode()), Some(entry));
    }

    #[test]
    fn a_damaged_entry_is_refused() {
        let entry = Entry {
            gate: Record::new(vec!["127.0.0.1:3001".into()], true, None),
            new: Record::new(
                vec!["127.0.0.1:3001".into()],
                false,
                Some(*b"fedcba9876543210fedcba9876543210"),
            ),
            meta: Meta::written_now(5),
        };
        let bytes = entry.encode();
        for cut in 0..bytes.len() - 1 {
            assert!(Entry::decode(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(Entry::decode(&other).is_none());
    }
}
