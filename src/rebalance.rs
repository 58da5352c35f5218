//! Rebalance: move values to the volumes placement chooses for them now.
//!
//! For one key (`rebalance_key`, used by `REBALANCE /key` and the bulk
//! command): find the recorded volumes that really hold the value, copy it
//! (streamed, never whole in memory) from a good copy to each placed volume
//! that lacks it, rewrite the record (keeping its md5) only once every new
//! copy is confirmed, then delete the copies placement no longer wants. The
//! last good copy is never deleted.

use std::fmt;
use std::time::Duration;

use crate::placement::{entry_host, key2path};
use crate::record::Record;
use crate::replication::{entry_path, PIECE_BYTES, VOLUME_IO_TIMEOUT};
use crate::store::Store;
use crate::volume::{self, Download, Upload, VolumeError};

/// What happened to one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moved {
    /// Already where placement wants it.
    AlreadyPlaced,
    /// Copied (this many bytes) and the record rewritten.
    Moved { bytes: u64 },
}

/// Why one key could not be rebalanced.
#[derive(Debug)]
pub enum RebalanceError {
    /// No recorded volume holds the value.
    NoCopy,
    Volume(VolumeError),
    Index(crate::index::IndexError),
}

impl fmt::Display for RebalanceError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RebalanceError::NoCopy => write!(formatter, "no recorded volume holds the value"),
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

/// Rebalance one live key whose record is `record`. The caller holds its lock.
pub async fn rebalance_key(
    store: &Store,
    key: &[u8],
    record: &Record,
    timeout: Duration,
) -> Result<Moved, RebalanceError> {
    let placed = store.placement().place(key);
    if record.volumes == placed {
        return Ok(Moved::AlreadyPlaced);
    }
    let path = key2path(key);
    // Which entries (recorded or placed) hold the value now. A timeout is an
    // error for this key, never taken as "missing".
    let mut holders = Vec::new();
    for entry in record
        .volumes
        .iter()
        .chain(placed.iter().filter(|entry| !record.volumes.contains(entry)))
    {
        if volume::exists(entry_host(entry), &entry_path(entry, &path), timeout).await? {
            holders.push(entry.clone());
        }
    }
    let Some(source) = holders.first().cloned() else {
        return Err(RebalanceError::NoCopy);
    };
    let mut bytes = 0;
    for target in placed.iter().filter(|entry| !holders.contains(entry)) {
        bytes += copy(&source, target, &path, timeout).await?;
    }
    store
        .put(key, &Record::new(placed.clone(), false, record.hash))
        .map_err(RebalanceError::Index)?;
    for stale in holders.iter().filter(|entry| !placed.contains(entry)) {
        // The placed copies are confirmed; a failed delete only leaves an orphan.
        if let Err(error) = volume::delete(entry_host(stale), &entry_path(stale, &path), timeout).await {
            eprintln!("rebalance {:?}: leftover copy: {error}", String::from_utf8_lossy(key));
        }
    }
    Ok(Moved::Moved { bytes })
}

/// Stream the file at `path` from entry `source` to entry `target`.
async fn copy(source: &str, target: &str, path: &str, timeout: Duration) -> Result<u64, RebalanceError> {
    let source_path = entry_path(source, path);
    let mut download = Download::begin(entry_host(source), &source_path, timeout, VOLUME_IO_TIMEOUT)
        .await?
        .ok_or(RebalanceError::NoCopy)?;
    let mut upload = Upload::begin(
        entry_host(target),
        &entry_path(target, path),
        download.length(),
        timeout,
        VOLUME_IO_TIMEOUT,
    )
    .await?;
    let mut bytes = 0u64;
    while let Some(piece) = download.next(PIECE_BYTES).await? {
        bytes += piece.len() as u64;
        upload.send(piece).await?;
    }
    download.finish();
    upload.finish().await?;
    Ok(bytes)
}
