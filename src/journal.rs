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
//! Settling: nginx stores a PUT whole or not at all, so each copy the gate
//! record names holds the old value or the new (or is gone, or its volume
//! cannot be asked). Sizes tell them apart when they differ, md5s otherwise
//! (a read of the copy). The value more copies hold wins (the new one on a
//! tie: every copy of it is whole and its md5 checked before its last byte
//! went out), and the record goes live naming the copies that hold it, with
//! that value's md5 and metadata; the other value's copies are deleted.
//! With no copy that can be told, the entry stays for a later try. A record
//! that is no longer the gate record means the entry is stale: dropped.

use std::time::Duration;

use futures_util::future::join_all;

use crate::app::App;
use crate::index::{Change, IndexError};
use crate::meta::Meta;
use crate::placement::{entry_host, key2path};
use crate::record::{Record, HASH_HEX_BYTES};
use crate::replication::{self, entry_path};
use crate::volume;

/// Where the journal lives in the state column.
pub const PREFIX: &[u8] = b"c/";
/// How often the sweep walks the journal after its first walk at start.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// Entries read from the index per step of a sweep.
const SWEEP_BATCH: usize = 100;
/// The encoding's version byte.
const VERSION: u8 = 1;

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
    /// The record the gate wrote: the old record, deleted.
    pub gate: Record,
    /// The new value's md5 (lower-case hex).
    pub md5: [u8; HASH_HEX_BYTES],
    /// The new value's metadata (its size included).
    pub meta: Meta,
}

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        let gate = self.gate.encode();
        let meta = self.meta.encode();
        let mut bytes = Vec::with_capacity(1 + 4 + gate.len() + HASH_HEX_BYTES + meta.len());
        bytes.push(VERSION);
        bytes.extend_from_slice(&(gate.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&gate);
        bytes.extend_from_slice(&self.md5);
        bytes.extend_from_slice(&meta);
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        let (&version, rest) = bytes.split_first()?;
        if version != VERSION || rest.len() < 4 {
            return None;
        }
        let (length, rest) = rest.split_at(4);
        let length = u32::from_be_bytes(length.try_into().ok()?) as usize;
        if rest.len() < length + HASH_HEX_BYTES {
            return None;
        }
        let (gate, rest) = rest.split_at(length);
        let (md5, meta) = rest.split_at(HASH_HEX_BYTES);
        let gate = Record::decode(gate).ok()?;
        let md5: [u8; HASH_HEX_BYTES] = md5.try_into().ok()?;
        if !md5.iter().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        Some(Entry {
            gate,
            md5,
            meta: Meta::decode(meta).ok()?,
        })
    }
}

/// What one copy named by the gate record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Copy {
    New,
    Old,
    Gone,
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
}

/// `key`'s journal entry, if any (read off the reactor).
pub async fn pending(app: &App, key: &[u8]) -> Result<Option<Entry>, IndexError> {
    let entry_key = entry_key(key);
    let Some(bytes) = app.store.state_async(&entry_key).await? else {
        return Ok(None);
    };
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
    let record = app.store.get_async(key).await?;
    if record.as_ref().is_some_and(Record::is_live) {
        return Ok(record);
    }
    match settle_held(app, key).await? {
        Settled::None | Settled::Stale => Ok(record),
        Settled::New(_) | Settled::Old(_) => app.store.get_async(key).await,
        Settled::Undecided => Err(IndexError::Unavailable(
            "an overwrite of this key is unfinished and no copy can be read to finish it".into(),
        )),
    }
}

/// Settle `key`'s journal entry if it has one; the caller holds the key's
/// lock.
pub async fn settle_held(app: &App, key: &[u8]) -> Result<Settled, IndexError> {
    let Some(entry) = pending(app, key).await? else {
        return Ok(Settled::None);
    };
    let entry_key = entry_key(key);
    let drop_entry = [Change::StateDelete(&entry_key)];
    if app.store.get_async(key).await?.as_ref() != Some(&entry.gate) {
        app.store.apply_async(&drop_entry).await?;
        return Ok(Settled::Stale);
    }
    let old_size = app.store.meta_async(key).await.ok().flatten().map(|meta| meta.size);
    let path = key2path(key);
    let timeout = app.config.volume_timeout;
    let copies = join_all(
        entry
            .gate
            .volumes
            .iter()
            .map(|volume| told(volume, &path, &entry, old_size, timeout)),
    )
    .await;
    let holding = |wanted: Copy| -> Vec<String> {
        entry
            .gate
            .volumes
            .iter()
            .zip(&copies)
            .filter(|(_, copy)| **copy == wanted)
            .map(|(volume, _)| volume.clone())
            .collect()
    };
    let (news, olds) = (holding(Copy::New), holding(Copy::Old));
    let name = String::from_utf8_lossy(key);
    if news.is_empty() && olds.is_empty() {
        eprintln!("journal: no copy of {name:?} can be told yet ({copies:?}); tried again later");
        return Ok(Settled::Undecided);
    }
    let (settled, losers) = if news.len() >= olds.len() {
        let record = Record::new(news.clone(), false, Some(entry.md5));
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

/// What the copy of `entry`'s key on `volume` holds.
async fn told(volume: &str, path: &str, entry: &Entry, old_size: Option<u64>, timeout: Duration) -> Copy {
    let file = entry_path(volume, path);
    let length = match volume::head(entry_host(volume), &file, timeout).await {
        Ok(Some(info)) => info.length,
        Ok(None) => return Copy::Gone,
        Err(_) => return Copy::Unknown,
    };
    if length != entry.meta.size {
        return Copy::Old;
    }
    if old_size.is_some_and(|old| old != length) {
        return Copy::New;
    }
    // The same size either way: the bytes tell.
    match replication::copy_md5(volume, path, timeout).await {
        Ok(Some(md5)) if md5 == entry.md5 => Copy::New,
        Ok(Some(_)) => Copy::Old,
        Ok(None) => Copy::Gone,
        Err(_) => Copy::Unknown,
    }
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
            .read_async(move |index| {
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
            md5: *b"fedcba9876543210fedcba9876543210",
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
            md5: *b"fedcba9876543210fedcba9876543210",
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
