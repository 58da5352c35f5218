//! The record store: the index, the cache of prepared redirects in front of
//! it, and the per-key write locks, kept coherent in one place.
//!
//! Every write goes through `Store::put` or `Store::remove`, which write the
//! index first and then the cache, so a read on any reactor that follows an
//! acknowledged write sees it. Reads (`Store::read`) are answered from the
//! cache when they can: a cached entry is the complete set of response bytes
//! for the key (status line aside), so a hit copies bytes into the
//! connection's buffer and allocates nothing.

use std::cell::Cell;
use std::sync::Arc;

use crate::cache::{Cache, Lookup, Weigh};
use crate::http::{write_connection, write_status_line};
use crate::index::{Index, IndexError};
use crate::locks::{KeyGuard, KeyLocks};
use crate::placement::{entry_host, key2path_into, key2volume, needs_rebalance};
use crate::record::Record;
use crate::volume::Volumes;

/// Cache shards per reactor thread: enough that two reactors rarely meet.
const CACHE_SHARDS_PER_THREAD: usize = 16;
/// A volume id for a record's volume that `-volumes` does not list.
const VOLUME_UNKNOWN: u16 = u16::MAX;

/// Where placement puts keys: `-volumes`, `-replicas`, `-subvolumes`.
#[derive(Clone, Debug)]
pub struct Placement {
    pub volumes: Vec<String>,
    pub replicas: usize,
    pub subvolumes: u32,
}

impl Placement {
    /// The volume entries that should hold `key`.
    pub fn place(&self, key: &[u8]) -> Vec<String> {
        key2volume(key, &self.volumes, self.replicas, self.subvolumes)
    }
}

/// The prepared 302 for one live key.
pub struct Redirect {
    /// `Location: http://<entry><path>\r\n` for each replica, concatenated.
    locations: Box<[u8]>,
    /// End offset of each replica's line in `locations`.
    location_ends: Box<[u32]>,
    /// Each replica's position in `-volumes` (its health flag).
    volume_ids: Box<[u16]>,
    /// `Content-Length`, `Content-Md5`, `Key-Volumes`, `Key-Balance` lines.
    headers: Box<[u8]>,
}

impl Weigh for Option<Redirect> {
    fn weight_bytes(&self) -> usize {
        self.as_ref().map_or(0, |redirect| {
            redirect.locations.len() + redirect.headers.len() + redirect.location_ends.len() * 6
        })
    }
}

/// What a read answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// A 302 was written.
    Redirected,
    /// No live record: nothing was written.
    Missing,
    /// Live, but no replica's volume is healthy: nothing was written.
    Unavailable,
}

thread_local! {
    /// Per-reactor xorshift state for spreading reads over replicas.
    static RANDOM: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let address = &RANDOM as *const _ as u64;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |elapsed| elapsed.as_nanos() as u64);
    (address ^ nanos) | 1
}

fn random() -> u64 {
    RANDOM.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    })
}

impl Redirect {
    fn new(key: &[u8], record: &Record, placement: &Placement, volumes: &Volumes) -> Redirect {
        let mut path = Vec::with_capacity(8 + key.len() * 4 / 3 + 4);
        key2path_into(key, &mut path);
        let mut locations = Vec::new();
        let mut location_ends = Vec::with_capacity(record.volumes.len());
        for entry in &record.volumes {
            locations.extend_from_slice(b"Location: http://");
            locations.extend_from_slice(entry.as_bytes());
            locations.extend_from_slice(&path);
            locations.extend_from_slice(b"\r\n");
            location_ends.push(u32::try_from(locations.len()).expect("locations are short"));
        }
        let volume_ids = record
            .volumes
            .iter()
            .map(|entry| volumes.id_of(entry_host(entry)).unwrap_or(VOLUME_UNKNOWN))
            .collect();
        let mut headers = Vec::with_capacity(128);
        headers.extend_from_slice(b"Content-Length: 0\r\n");
        if let Some(hash) = &record.hash {
            headers.extend_from_slice(b"Content-Md5: ");
            headers.extend_from_slice(hash);
            headers.extend_from_slice(b"\r\n");
        }
        headers.extend_from_slice(b"Key-Volumes: ");
        headers.extend_from_slice(record.volumes.join(",").as_bytes());
        headers.extend_from_slice(b"\r\nKey-Balance: ");
        let balanced = !needs_rebalance(&record.volumes, &placement.place(key));
        headers.extend_from_slice(if balanced { b"balanced\r\n" } else { b"unbalanced\r\n" });
        Redirect {
            locations: locations.into(),
            location_ends: location_ends.into(),
            volume_ids,
            headers: headers.into(),
        }
    }

    /// A random replica whose volume is healthy (unknown volumes count as healthy).
    fn pick(&self, volumes: &Volumes) -> Option<usize> {
        let count = self.volume_ids.len();
        if count == 0 {
            return None;
        }
        let first = (random() % count as u64) as usize;
        (0..count).map(|step| (first + step) % count).find(|&replica| {
            let id = self.volume_ids[replica];
            id == VOLUME_UNKNOWN || volumes.is_healthy(id)
        })
    }

    /// The `Location` line of replica `replica`.
    fn location(&self, replica: usize) -> &[u8] {
        let start = if replica == 0 {
            0
        } else {
            self.location_ends[replica - 1] as usize
        };
        &self.locations[start..self.location_ends[replica] as usize]
    }

    fn write(&self, out: &mut Vec<u8>, keep_alive: bool, volumes: &Volumes) -> ReadOutcome {
        let Some(replica) = self.pick(volumes) else {
            return ReadOutcome::Unavailable;
        };
        write_status_line(out, 302);
        out.extend_from_slice(self.location(replica));
        out.extend_from_slice(&self.headers);
        write_connection(out, keep_alive);
        out.extend_from_slice(b"\r\n");
        ReadOutcome::Redirected
    }
}

fn render(entry: &Option<Redirect>, out: &mut Vec<u8>, keep_alive: bool, volumes: &Volumes) -> ReadOutcome {
    match entry {
        Some(redirect) => redirect.write(out, keep_alive, volumes),
        None => ReadOutcome::Missing,
    }
}

/// The index, its read cache and the key locks.
pub struct Store {
    index: Index,
    cache: Cache<Option<Redirect>>,
    locks: KeyLocks,
    placement: Placement,
    volumes: Arc<Volumes>,
}

impl Store {
    /// A store over an open index.
    pub fn new(index: Index, placement: Placement, volumes: Arc<Volumes>, cache_bytes: usize, threads: usize) -> Store {
        Store {
            index,
            cache: Cache::new(cache_bytes, threads * CACHE_SHARDS_PER_THREAD),
            locks: KeyLocks::default(),
            placement,
            volumes,
        }
    }

    /// The index under the store (listing, maintenance).
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Placement settings.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Answer a GET/HEAD: append a 302 for a live key to `out`.
    pub fn read(&self, key: &[u8], out: &mut Vec<u8>, keep_alive: bool) -> Result<ReadOutcome, IndexError> {
        let volumes = &*self.volumes;
        match self.cache.lookup(key, |entry| render(entry, out, keep_alive, volumes)) {
            Lookup::Hit(outcome) => Ok(outcome),
            Lookup::Miss(ticket) => {
                // A miss allocates (the record and its prepared response); it
                // is paid once per key while the key stays cached.
                let entry = self.prepare(key, self.index.get(key)?.as_ref());
                let outcome = render(&entry, out, keep_alive, volumes);
                // Misses are not cached: a stream of random missing keys would
                // only evict live ones, and a miss is a bloom-filter check.
                if entry.is_some() {
                    self.cache.fill(ticket, key, entry);
                }
                Ok(outcome)
            }
        }
    }

    fn prepare(&self, key: &[u8], record: Option<&Record>) -> Option<Redirect> {
        record
            .filter(|record| record.is_live())
            .map(|record| Redirect::new(key, record, &self.placement, &self.volumes))
    }

    /// The record of `key`, straight from the index.
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, IndexError> {
        self.index.get(key)
    }

    /// Write `record` under `key`: index first, then cache.
    pub fn put(&self, key: &[u8], record: &Record) -> Result<(), IndexError> {
        self.index.put(key, record)?;
        self.cache.put(key, self.prepare(key, Some(record)));
        Ok(())
    }

    /// Remove `key`'s record: index first, then cache.
    pub fn remove(&self, key: &[u8]) -> Result<(), IndexError> {
        self.index.delete(key)?;
        self.cache.put(key, None);
        Ok(())
    }

    /// Take `key`'s write lock, or None if another write holds it.
    pub fn try_lock(&self, key: &[u8]) -> Option<KeyGuard<'_>> {
        self.locks.try_lock(key)
    }
}
