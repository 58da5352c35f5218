//! The record store: the index, the cache of answers in front of it, and the
//! per-key write locks, kept coherent in one place.
//!
//! Every write goes through `Store::put` or `Store::remove`, which write the
//! index first and then the cache, so a read on any reactor that follows an
//! acknowledged write sees it. Reads (`Store::read`) are answered from the
//! cache when they can. A cached `Answer` is everything a GET needs, packed
//! small so the cache holds many keys: volume ids instead of host names, the
//! md5 as 16 bytes, the path's two hash bytes. A hit renders the 302 from it
//! into the connection's buffer with a few memcpys and no allocation.
//!
//! At start, `Store::warm` fills the cache from the index in key order on a
//! thread of its own, up to the cache's budget, so the first reads after a
//! restart hit it too; it never overwrites what a reactor cached meanwhile.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use crate::cache::{Cache, Lookup, Ticket, WarmFill, Weigh};
use crate::coherence::Coherence;
use crate::health::Volumes;
use crate::http::{write_connection, write_status_line, KeepAlive};
use crate::index::Event;
use crate::index::{Change, Index, IndexError, KeyRead, LockToken, WriteAs};
use crate::locks::{KeyLocks, LocalGuard};
use crate::meta::Meta;
use crate::metrics::{self, CacheRead};
use crate::placement::{
    entry_host, entry_prefix, hex_lower, key2path_into, key2volume, needs_rebalance, parse_subvolume, path_hash,
    push_path, push_subvolume,
};
use crate::record::{Record, HASH_HEX_BYTES};

/// Cache shards per reactor thread: enough that two reactors rarely meet.
const CACHE_SHARDS_PER_THREAD: usize = 16;
/// A volume id for a record's volume that `-volumes` does not list.
const VOLUME_UNKNOWN: u16 = u16::MAX;
/// Replicas a `Compact` answer holds; records with more are `Prepared`.
const COMPACT_REPLICAS_MAX: usize = 3;
/// `Compact::subvolumes` value for an entry without a `/svXX` suffix.
const SUBVOLUME_NONE: u8 = u8::MAX;
/// Records the warm fill reads from one index snapshot, under one set of
/// epochs: a write to a shard while a batch runs makes the rest of the batch
/// skip that shard, and a snapshot held for long pins the index's memtables.
const WARM_BATCH_RECORDS: usize = 4096;
/// Heap bytes the allocator adds to each allocation of a `Redirect`, charged
/// so the cache's byte budget stays an honest bound on its memory.
const ALLOCATION_OVERHEAD_BYTES: usize = 16;

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

/// What a GET of one key answers, as the cache holds it.
enum Answer {
    /// No live record: 404.
    Gone,
    /// A 302 whose volume entries are all `-volumes` hosts (with an optional
    /// `/svXX`): the common case, about 32 bytes inside the cache slot.
    Compact(Compact),
    /// Any other live record: the prepared response bytes.
    Prepared(Box<Redirect>),
}

/// A live record packed into ids and bytes; rendered on every hit.
struct Compact {
    /// md5(key)[0..2]: the `/hh/hh/` directories of the key's path.
    path_hash: [u8; 2],
    /// Replicas in use (1..=COMPACT_REPLICAS_MAX).
    count: u8,
    /// Each replica's position in `-volumes`.
    volume_ids: [u16; COMPACT_REPLICAS_MAX],
    /// Each replica's subvolume, or SUBVOLUME_NONE.
    subvolumes: [u8; COMPACT_REPLICAS_MAX],
    /// The value's md5, when the record has one.
    hash: Option<[u8; 16]>,
    /// Whether the record's volumes are where placement puts the key now.
    balanced: bool,
}

/// The prepared 302 for a live key that `Compact` cannot hold.
struct Redirect {
    /// `Location: http://<entry><path>\r\n` for each replica, concatenated.
    locations: Box<[u8]>,
    /// End offset of each replica's line in `locations`.
    location_ends: Box<[u32]>,
    /// Each replica's position in `-volumes` (its health flag).
    volume_ids: Box<[u16]>,
    /// `Content-Length`, `Content-Md5`, `Key-Volumes`, `Key-Balance` lines.
    headers: Box<[u8]>,
}

impl Weigh for Answer {
    fn weight_bytes(&self) -> usize {
        match self {
            Answer::Gone | Answer::Compact(_) => 0,
            Answer::Prepared(redirect) => {
                std::mem::size_of::<Redirect>()
                    + redirect.locations.len()
                    + redirect.location_ends.len() * std::mem::size_of::<u32>()
                    + redirect.volume_ids.len() * std::mem::size_of::<u16>()
                    + redirect.headers.len()
                    + 5 * ALLOCATION_OVERHEAD_BYTES
            }
        }
    }
}

/// What `Store::read` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// Answered from the cache or the index.
    Done(ReadOutcome),
    /// Not answered yet: the record is to be read from an index whose reads
    /// would block the reactor (PostgreSQL); `Store::fetch` does, with this
    /// ticket to cache what it reads (None: the cache is not to be filled).
    Fetch(Option<Ticket>),
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

/// A random index below `count` (which is not 0), from the generator that
/// spreads reads over replicas.
pub fn random_below(count: usize) -> usize {
    (random() % count as u64) as usize
}

/// A random replica (of `count`) whose volume is healthy; unknown volumes
/// count as healthy.
fn pick(count: usize, volume_id: impl Fn(usize) -> u16, volumes: &Volumes) -> Option<usize> {
    if count == 0 {
        return None;
    }
    let first = random_below(count);
    (0..count).map(|step| (first + step) % count).find(|&replica| {
        let id = volume_id(replica);
        id == VOLUME_UNKNOWN || volumes.is_healthy(id)
    })
}

impl Answer {
    fn new(key: &[u8], record: Option<&Record>, placement: &Placement, volumes: &Volumes) -> Answer {
        let Some(record) = record.filter(|record| record.is_live()) else {
            return Answer::Gone;
        };
        let balanced = !needs_rebalance(&record.volumes, &placement.place(key));
        match Compact::new(key, record, balanced, volumes) {
            Some(compact) => Answer::Compact(compact),
            None => Answer::Prepared(Box::new(Redirect::new(key, record, balanced, volumes))),
        }
    }

    /// Append the answer for `key` to `out` (a 302), or say why not.
    fn write(&self, key: &[u8], out: &mut Vec<u8>, keep_alive: KeepAlive, volumes: &Volumes) -> ReadOutcome {
        let replica = match self {
            Answer::Gone => return ReadOutcome::Missing,
            Answer::Compact(compact) => pick(
                usize::from(compact.count),
                |replica| compact.volume_ids[replica],
                volumes,
            ),
            Answer::Prepared(redirect) => pick(
                redirect.volume_ids.len(),
                |replica| redirect.volume_ids[replica],
                volumes,
            ),
        };
        let Some(replica) = replica else {
            return ReadOutcome::Unavailable;
        };
        self.write_replica(replica, key, out, keep_alive, volumes);
        ReadOutcome::Redirected
    }

    /// Append the 302 that sends the client to replica `replica`.
    fn write_replica(&self, replica: usize, key: &[u8], out: &mut Vec<u8>, keep_alive: KeepAlive, volumes: &Volumes) {
        write_status_line(out, 302);
        match self {
            Answer::Gone => unreachable!("a gone key has no replica"),
            Answer::Compact(compact) => compact.write_headers(replica, key, out, volumes),
            Answer::Prepared(redirect) => {
                out.extend_from_slice(redirect.location(replica));
                out.extend_from_slice(&redirect.headers);
            }
        }
        write_connection(out, keep_alive);
        out.extend_from_slice(b"\r\n");
    }
}

impl Compact {
    /// The record packed, or None when it does not fit: more replicas than
    /// COMPACT_REPLICAS_MAX, a host not in `-volumes`, or an entry suffix
    /// other than `/svXX` (which `Prepared` keeps byte for byte).
    fn new(key: &[u8], record: &Record, balanced: bool, volumes: &Volumes) -> Option<Compact> {
        if record.volumes.is_empty() || record.volumes.len() > COMPACT_REPLICAS_MAX {
            return None;
        }
        let mut volume_ids = [0u16; COMPACT_REPLICAS_MAX];
        let mut subvolumes = [SUBVOLUME_NONE; COMPACT_REPLICAS_MAX];
        for (replica, entry) in record.volumes.iter().enumerate() {
            volume_ids[replica] = volumes.id_of(entry_host(entry))?;
            let suffix = entry_prefix(entry);
            if !suffix.is_empty() {
                subvolumes[replica] = parse_subvolume(suffix).filter(|&subvolume| subvolume != SUBVOLUME_NONE)?;
            }
        }
        Some(Compact {
            path_hash: path_hash(key),
            count: record.volumes.len() as u8,
            volume_ids,
            subvolumes,
            hash: record.hash.as_ref().map(hash_bytes),
            balanced,
        })
    }

    /// Replica `replica`'s volume entry, as the record spells it.
    fn push_entry(&self, replica: usize, out: &mut Vec<u8>, volumes: &Volumes) {
        out.extend_from_slice(volumes.hosts()[usize::from(self.volume_ids[replica])].as_bytes());
        if self.subvolumes[replica] != SUBVOLUME_NONE {
            push_subvolume(out, self.subvolumes[replica]);
        }
    }

    /// The same header lines `Redirect::new` prepares, for replica `replica`.
    fn write_headers(&self, replica: usize, key: &[u8], out: &mut Vec<u8>, volumes: &Volumes) {
        out.extend_from_slice(b"Location: http://");
        self.push_entry(replica, out, volumes);
        push_path(out, self.path_hash, key);
        out.extend_from_slice(b"\r\nContent-Length: 0\r\n");
        if let Some(hash) = &self.hash {
            out.extend_from_slice(b"Content-Md5: ");
            out.extend_from_slice(&hex_lower(hash));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Key-Volumes: ");
        for replica in 0..usize::from(self.count) {
            if replica > 0 {
                out.push(b',');
            }
            self.push_entry(replica, out, volumes);
        }
        out.extend_from_slice(b"\r\nKey-Balance: ");
        out.extend_from_slice(balance_word(self.balanced));
    }
}

fn balance_word(balanced: bool) -> &'static [u8] {
    if balanced {
        b"balanced\r\n"
    } else {
        b"unbalanced\r\n"
    }
}

/// The 16 bytes of a record's hex md5 (validated lower-case hex).
fn hash_bytes(hex: &[u8; HASH_HEX_BYTES]) -> [u8; 16] {
    let nibble = |digit: u8| match digit {
        b'0'..=b'9' => digit - b'0',
        _ => digit - b'a' + 10,
    };
    std::array::from_fn(|i| nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]))
}

impl Redirect {
    fn new(key: &[u8], record: &Record, balanced: bool, volumes: &Volumes) -> Redirect {
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
        headers.extend_from_slice(balance_word(balanced));
        Redirect {
            locations: locations.into(),
            location_ends: location_ends.into(),
            volume_ids,
            headers: headers.into(),
        }
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
}

/// The index, its read cache and the key locks.
pub struct Store {
    /// Shared with offloaded writes (`Index::apply_async`).
    index: Arc<Index>,
    cache: Cache<Answer>,
    locks: KeyLocks,
    placement: Placement,
    volumes: Arc<Volumes>,
    /// Whether a cached record may be served (`coherence`).
    coherence: Coherence,
}

/// A key's write lock, within this process and, on PostgreSQL, across
/// masters; dropping it unlocks both.
pub struct KeyGuard<'a> {
    /// The index holds the key's lock too (PostgreSQL).
    shared: Option<SharedLock<'a>>,
    _local: LocalGuard<'a>,
}

/// The index's part of a `KeyGuard`.
struct SharedLock<'a> {
    index: &'a Arc<Index>,
    key: Box<[u8]>,
    token: LockToken,
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        // On the lock pool, waited for briefly (`offload::lock_briefly`);
        // should it run late, this master may lock the key again first,
        // and the late unlock, naming its own token, removes nothing.
        if let Some(shared) = &self.shared {
            shared.index.unlock_key(&shared.key, shared.token);
        }
    }
}

/// A live (or soft-deleted) `record` of `key` with its `meta` and `more`
/// changes, as one write's changes.
fn with_meta<'c>(key: &'c [u8], record: &'c Record, meta: &'c Meta, more: &[Change<'c>]) -> Vec<Change<'c>> {
    let mut changes = Vec::with_capacity(2 + more.len());
    changes.extend([Change::Record(key, record), Change::Meta(key, meta)]);
    changes.extend_from_slice(more);
    changes
}

impl Store {
    /// A store over an open index.
    /// A store over an open index, whose cached records are served as
    /// `coherence` allows.
    pub fn new(
        index: Index,
        placement: Placement,
        volumes: Arc<Volumes>,
        cache_bytes: usize,
        threads: usize,
        coherence: Coherence,
    ) -> Store {
        Store {
            coherence,
            index: Arc::new(index),
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

    /// The index, shareable with calls that leave the reactor (listings'
    /// snapshots).
    pub fn index_shared(&self) -> &Arc<Index> {
        &self.index
    }

    /// Placement settings.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Answer a GET/HEAD: append a 302 for a live key to `out`, or say to
    /// `fetch` the record.
    pub fn read(&self, key: &[u8], out: &mut Vec<u8>, keep_alive: KeepAlive) -> Result<Read, IndexError> {
        let volumes = &*self.volumes;
        if !self.coherence.fresh() {
            // Only a shared index's cache goes stale, and such an index is
            // read off the reactor.
            metrics::note_cache_read(CacheRead::Miss);
            return Ok(Read::Fetch(None));
        }
        match self
            .cache
            .lookup(key, |answer| answer.write(key, out, keep_alive, volumes))
        {
            Lookup::Hit(outcome) => {
                metrics::note_cache_read(CacheRead::Hit);
                Ok(Read::Done(outcome))
            }
            Lookup::Miss(ticket) => {
                metrics::note_cache_read(CacheRead::Miss);
                if self.index.postgres().is_some() {
                    return Ok(Read::Fetch(Some(ticket)));
                }
                // A miss allocates (the decoded record, the placement it is
                // checked against); it is paid once per key while the key
                // stays cached.
                let started = Instant::now();
                let record = self.index.get(key)?;
                metrics::observe_index_read(started.elapsed());
                let answer = self.answer(key, record.as_ref());
                let outcome = answer.write(key, out, keep_alive, volumes);
                // Misses are not cached: a stream of random missing keys would
                // only evict live ones, and a miss is a bloom-filter check.
                if !matches!(answer, Answer::Gone) {
                    self.cache.fill(ticket, key, answer);
                }
                Ok(Read::Done(outcome))
            }
        }
    }

    /// Finish a `read` that said `Fetch`: read the record on the read pool
    /// (`offload`), answer as `read` would, and cache it under `ticket`.
    pub async fn fetch(
        &self,
        key: &[u8],
        ticket: Option<Ticket>,
        out: &mut Vec<u8>,
        keep_alive: KeepAlive,
    ) -> Result<ReadOutcome, IndexError> {
        let started = Instant::now();
        let record = self.get_async(key).await?;
        metrics::observe_index_read(started.elapsed());
        let answer = self.answer(key, record.as_ref());
        let outcome = answer.write(key, out, keep_alive, &self.volumes);
        if let Some(ticket) = ticket {
            if !matches!(answer, Answer::Gone) {
                self.cache.fill(ticket, key, answer);
            }
        }
        Ok(outcome)
    }

    /// Take in what the index reports of other masters' changes.
    pub fn observe(&self, event: Event) {
        match event {
            Event::Changed(key) | Event::ChangedHere(key) => self.cache.invalidate(&key),
            Event::Everything => self.cache.clear(),
            Event::Confirmed(sent) => self.coherence.confirm(sent),
        }
    }

    /// How cached records may be served.
    pub fn coherence(&self) -> &Coherence {
        &self.coherence
    }

    /// Fill the cache from the index in key order until its budget is
    /// reached (the first shard with no room left) or the index ends; log
    /// what was loaded. Runs beside the reactors: each batch is read from a
    /// snapshot taken after noting the shards' epochs, so a value a writer
    /// changed or removed meanwhile is never cached (as in `read`).
    pub fn warm(&self) {
        let started = Instant::now();
        let mut start = Vec::new();
        let (mut loaded, mut full) = (0u64, false);
        let ended = loop {
            let epochs = self.cache.epochs();
            let view = self.index.view();
            let next = view.scan_bounded(b"", &start, WARM_BATCH_RECORDS, |key, record| {
                // A record that does not decode is left to `read` to report.
                let Ok(record) = record else { return true };
                let answer = self.answer(key, Some(&record));
                if matches!(answer, Answer::Gone) {
                    return true;
                }
                match self.cache.fill_warm(&epochs, key, answer) {
                    WarmFill::Filled => loaded += 1,
                    WarmFill::Skipped => {}
                    WarmFill::Full => full = true,
                }
                !full
            });
            match next {
                Err(error) => break format!("stopped by an index error: {error}"),
                Ok(_) if full => break "the cache is full".to_string(),
                Ok(None) => break "the index ended".to_string(),
                Ok(Some(key)) => start = key,
            }
        };
        eprintln!(
            "warm fill: {loaded} keys loaded into the record cache in {:.1}s; {ended}",
            started.elapsed().as_secs_f64()
        );
    }

    /// Append the 302 that sends a GET of `key` to replica `replica` of
    /// `record` (one the caller checked: `--verify-get`), the same bytes
    /// `read` writes when it picks that replica. Missing (nothing written)
    /// when the record is not live or has no such replica.
    pub fn write_redirect_to(
        &self,
        key: &[u8],
        record: &Record,
        replica: usize,
        out: &mut Vec<u8>,
        keep_alive: KeepAlive,
    ) -> ReadOutcome {
        if replica >= record.volumes.len() {
            return ReadOutcome::Missing;
        }
        // Built per call (it may allocate): verified reads pay a volume round
        // trip anyway, and the record is the one the caller checked.
        let answer = self.answer(key, Some(record));
        if matches!(answer, Answer::Gone) {
            return ReadOutcome::Missing;
        }
        answer.write_replica(replica, key, out, keep_alive, &self.volumes);
        ReadOutcome::Redirected
    }

    fn answer(&self, key: &[u8], record: Option<&Record>) -> Answer {
        Answer::new(key, record, &self.placement, &self.volumes)
    }

    /// The record of `key`, straight from the index.
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, IndexError> {
        self.index.get(key)
    }

    /// `get`, awaited without blocking the reactor (PostgreSQL: on the
    /// read pool; RocksDB reads here).
    pub async fn get_async(&self, key: &[u8]) -> Result<Option<Record>, IndexError> {
        self.read_off_reactor(key, Index::get).await
    }

    /// `key`'s record and the S3 state entry at `state_key`, awaited
    /// without blocking the reactor (one round trip on PostgreSQL).
    pub async fn get_with_state_async(
        &self,
        key: &[u8],
        state_key: &[u8],
    ) -> Result<(Option<Record>, Option<Vec<u8>>), IndexError> {
        if self.index.postgres().is_none() {
            return self.index.get_with_state(key, state_key);
        }
        let (key, state_key) = (key.to_vec(), state_key.to_vec());
        self.read_index(move |index| index.get_with_state(&key, &state_key))
            .await
    }

    /// `meta`, awaited without blocking the reactor.
    pub async fn meta_async(&self, key: &[u8]) -> Result<Option<Meta>, IndexError> {
        self.read_off_reactor(key, Index::meta).await
    }

    /// The S3 state entry at `key`, awaited without blocking the reactor.
    pub async fn state_async(&self, key: &[u8]) -> Result<Option<Vec<u8>>, IndexError> {
        self.read_off_reactor(key, Index::state).await
    }

    /// Run the index read `read` of `key` where it does not block the
    /// reactor (`read_index`).
    async fn read_off_reactor<T: Send + 'static>(
        &self,
        key: &[u8],
        read: fn(&Index, &[u8]) -> Result<T, IndexError>,
    ) -> Result<T, IndexError> {
        // RocksDB reads in place: no copy of the key for it.
        if self.index.postgres().is_none() {
            return read(&self.index, key);
        }
        let key = key.to_vec();
        self.read_index(move |index| read(index, &key)).await
    }

    /// Run the index read `read` (a lookup, a scan, S3 state) where it does
    /// not block the reactor: on PostgreSQL on the read pool, awaited at
    /// most `offload::INDEX_WAIT_MS_MAX` (past it `index::not_answered`:
    /// 503 with Retry-After), since each query is a round trip and a
    /// database that hangs would otherwise stop every connection of the
    /// reactor, cache hits included; on RocksDB here (microseconds, no
    /// I/O wait).
    pub async fn read_index<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Index) -> Result<T, IndexError> + Send + 'static,
    ) -> Result<T, IndexError> {
        if self.index.postgres().is_none() {
            return read(&self.index);
        }
        let index = self.index.clone();
        crate::offload::read(move || read(&index))
            .await
            .unwrap_or_else(|| Err(crate::index::not_answered()))
    }

    /// A write of `changes` failed, and may still have happened (its
    /// commit was sent, the answer lost): the cache must not keep serving
    /// the records from before it. The keys are forgotten now, and on
    /// PostgreSQL this master follows its own change notifications from
    /// now on, so a commit that becomes visible later (one that waited on
    /// a synchronous standby) evicts what a read cached meanwhile, within
    /// the coherence bound like another master's change. Following is
    /// turned on first: a notification of a commit that landed before the
    /// failure was seen here is then either followed or older than the
    /// eviction.
    fn forget_after_failure(&self, changes: &[Change<'_>]) {
        if let Some(engine) = self.index.postgres() {
            engine.follow_own_changes();
        }
        for change in changes {
            if let Change::Record(key, _) | Change::Remove(key) = *change {
                self.cache.invalidate(key);
            }
        }
    }

    /// Write `record` under `key`: index first, then cache.
    pub fn put(&self, key: &[u8], record: &Record) -> Result<(), IndexError> {
        let started = Instant::now();
        if let Err(error) = self.index.put(key, record) {
            self.forget_after_failure(&[Change::Record(key, record)]);
            return Err(error);
        }
        metrics::observe_index_write(started.elapsed());
        self.cache.put(key, self.answer(key, Some(record)));
        Ok(())
    }

    /// `put`, awaited without blocking the reactor (`Index::apply_async`).
    pub async fn put_async(&self, key: &[u8], record: &Record) -> Result<(), IndexError> {
        self.write(key, Some(record), &[Change::Record(key, record)], WriteAs::ANNOUNCED)
            .await
    }

    /// Write the live (or soft-deleted) `record` of `key` with its `meta`,
    /// and any `more` changes, in one atomic write; then the cache. Awaited
    /// without blocking the reactor.
    pub async fn put_with_meta_async(
        &self,
        key: &[u8],
        record: &Record,
        meta: &Meta,
        more: &[Change<'_>],
    ) -> Result<(), IndexError> {
        let changes = with_meta(key, record, meta, more);
        self.write(key, Some(record), &changes, WriteAs::ANNOUNCED).await
    }

    /// `put_with_meta_async` as the last index write of a write under
    /// `key`'s lock: on PostgreSQL the commit also ends the key's lease
    /// (`WriteAs::release`), so the guard's drop costs no round trip.
    /// Nothing of `key` may be written after it under the same guard.
    pub async fn commit_async(
        &self,
        key: &[u8],
        record: &Record,
        meta: &Meta,
        more: &[Change<'_>],
    ) -> Result<(), IndexError> {
        let changes = with_meta(key, record, meta, more);
        self.write(key, Some(record), &changes, WriteAs::ANNOUNCED.releasing())
            .await
    }

    /// Write `key`'s `record` and `more` changes in one atomic write; then
    /// the cache. Awaited without blocking the reactor.
    pub async fn put_with_async(&self, key: &[u8], record: &Record, more: &[Change<'_>]) -> Result<(), IndexError> {
        let mut changes = Vec::with_capacity(1 + more.len());
        changes.push(Change::Record(key, record));
        changes.extend_from_slice(more);
        self.write(key, Some(record), &changes, WriteAs::ANNOUNCED).await
    }

    /// `put_async` of a record that no read can tell from the one it
    /// replaces: neither is live (a write's `DELETED` record over none or
    /// over a deleted one). Other masters are not notified
    /// (`WriteAs::announce`).
    pub async fn put_unannounced_async(&self, key: &[u8], record: &Record) -> Result<(), IndexError> {
        debug_assert!(!record.is_live());
        self.write(key, Some(record), &[Change::Record(key, record)], WriteAs::UNANNOUNCED)
            .await
    }

    /// `remove_async` of a record that is not live: other masters are not
    /// notified (a missing key reads as a deleted one).
    pub async fn remove_unannounced_async(&self, key: &[u8]) -> Result<(), IndexError> {
        self.write(key, None, &[Change::Remove(key)], WriteAs::UNANNOUNCED)
            .await
    }

    /// `remove_unannounced_async` as the last index write under `key`'s
    /// lock, ending its lease in the same commit (`commit_async`).
    pub async fn remove_releasing_async(&self, key: &[u8]) -> Result<(), IndexError> {
        self.write(key, None, &[Change::Remove(key)], WriteAs::UNANNOUNCED.releasing())
            .await
    }

    /// Remove `key`'s record: index first, then cache (forgotten rather than
    /// cached as gone: a removed key is rarely read again). Awaited without
    /// blocking the reactor.
    pub async fn remove_async(&self, key: &[u8]) -> Result<(), IndexError> {
        self.write(key, None, &[Change::Remove(key)], WriteAs::ANNOUNCED).await
    }

    /// Apply `changes` that no cached record reflects (S3 state), awaited
    /// without blocking the reactor.
    pub async fn apply_async(&self, changes: &[Change<'_>]) -> Result<(), IndexError> {
        self.index.apply_async(changes).await
    }

    /// Apply `changes` to the index as `how` says, then leave `key`'s
    /// `record` in the cache (None: forget it).
    async fn write(
        &self,
        key: &[u8],
        record: Option<&Record>,
        changes: &[Change<'_>],
        how: WriteAs,
    ) -> Result<(), IndexError> {
        let started = Instant::now();
        if let Err(error) = self.index.apply_async_as(changes, how).await {
            self.forget_after_failure(changes);
            return Err(error);
        }
        metrics::observe_index_write(started.elapsed());
        match record {
            Some(record) => self.cache.put(key, self.answer(key, Some(record))),
            None => self.cache.invalidate(key),
        }
        Ok(())
    }

    /// The metadata of `key`, straight from the index.
    pub fn meta(&self, key: &[u8]) -> Result<Option<Meta>, IndexError> {
        self.index.meta(key)
    }

    /// The record cache's entries, charged bytes and evictions (metrics).
    pub fn cache_figures(&self) -> (usize, usize, u64) {
        let (entries, bytes) = self.cache.usage();
        (entries, bytes, self.cache.evictions())
    }

    /// Take `key`'s write lock, or None if another write holds it (in this
    /// master or, on PostgreSQL, in another). On PostgreSQL this blocks
    /// the caller for the lock's round trip, at most
    /// `offload::INDEX_WAIT_MS_MAX`: a handler on a reactor calls
    /// `try_lock_async` instead.
    pub fn try_lock(&self, key: &[u8]) -> Result<Option<KeyGuard<'_>>, IndexError> {
        let Some(local) = self.locks.try_lock(key) else {
            return Ok(None);
        };
        if self.index.postgres().is_none() {
            return Ok(Some(self.guard(key, local, None)));
        }
        Ok(self
            .index
            .try_lock_key(key)?
            .map(|token| self.guard(key, local, Some(token))))
    }

    /// `try_lock`, awaited without blocking the reactor (PostgreSQL: the
    /// lock is taken on the lock pool, bounded by
    /// `offload::INDEX_WAIT_MS_MAX`).
    pub async fn try_lock_async(&self, key: &[u8]) -> Result<Option<KeyGuard<'_>>, IndexError> {
        let Some(local) = self.locks.try_lock(key) else {
            return Ok(None);
        };
        if self.index.postgres().is_none() {
            return Ok(Some(self.guard(key, local, None)));
        }
        Ok(self
            .index
            .try_lock_key_async(key)
            .await?
            .map(|token| self.guard(key, local, Some(token))))
    }

    /// `try_lock_async` for a write of a value, reading with the lock
    /// `key`'s record and the state entry at `entry_key` (its journal
    /// entry), and putting in, when the key has neither, the `DELETED`
    /// record naming the volumes placement chooses, which the write
    /// protocol writes first (`Index::try_lock_key_reading_async`: on
    /// PostgreSQL one round trip and one commit instead of three). The
    /// read is None where the engine did not make it (RocksDB: the writer
    /// reads as usual).
    pub async fn try_lock_reading_async(
        &self,
        key: &[u8],
        entry_key: &[u8],
    ) -> Result<Option<(KeyGuard<'_>, Option<KeyRead>)>, IndexError> {
        let Some(local) = self.locks.try_lock(key) else {
            return Ok(None);
        };
        if self.index.postgres().is_none() {
            return Ok(Some((self.guard(key, local, None), None)));
        }
        let reserve = Record::new(self.placement.place(key), true, None);
        let locked = match self
            .index
            .try_lock_key_reading_async(key, entry_key, Some(reserve))
            .await
        {
            Ok(locked) => locked,
            Err(error) => {
                // A reserve may have landed: the key's cached answer is
                // not trusted (it says missing or deleted either way).
                self.cache.invalidate(key);
                return Err(error);
            }
        };
        Ok(locked.map(|(token, read)| {
            if let Some(KeyRead { reserved: true, .. }) = &read {
                // As a `DELETED` record written here would be: missing.
                self.cache.put(key, Answer::Gone);
            }
            (self.guard(key, local, Some(token)), read)
        }))
    }

    /// The guard of `key`'s lock: `local` in this process and, on
    /// PostgreSQL, the holding `token` of its lease.
    fn guard<'a>(&'a self, key: &[u8], local: LocalGuard<'a>, token: Option<LockToken>) -> KeyGuard<'a> {
        KeyGuard {
            shared: token.map(|token| SharedLock {
                index: &self.index,
                key: key.into(),
                token,
            }),
            _local: local,
        }
    }

    /// Whether this master may still send bytes of `key`, whose lock it
    /// took: true unless, on PostgreSQL, its lease on the key has less than
    /// `pg::KEY_LEASE_LEFT_MIN_MS` left (renewals failing: the database
    /// unreachable). A writer checks it before each piece it sends and
    /// before the last one, and stops (fails the write) when it is false;
    /// another master can take the key only once the lease has expired in
    /// the database plus `LEASE_MARGIN_MS`, by when every piece sent before
    /// the check has arrived or failed.
    pub fn still_held(&self, key: &[u8]) -> bool {
        self.index.still_held(key)
    }

    /// Whether a key's hold can lapse while its write runs (PostgreSQL's
    /// key leases; RocksDB's keys are this process's alone).
    pub fn fenced(&self) -> bool {
        self.index.postgres().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    fn volumes() -> Volumes {
        Volumes::new(&strings(&["127.0.0.1:3001", "127.0.0.1:3002", "vol3.example:80"]))
    }

    fn rendered(answer: &Answer, replica: usize, key: &[u8], keep_alive: KeepAlive) -> String {
        let mut out = Vec::new();
        answer.write_replica(replica, key, &mut out, keep_alive, &volumes());
        String::from_utf8(out).unwrap()
    }

    /// Every record shape `Compact` holds renders exactly the bytes of the
    /// prepared form it replaces, for every replica.
    #[test]
    fn compact_renders_the_prepared_bytes() {
        let hash = *b"0123456789abcdeffedcba9876543210";
        let records = [
            Record::new(strings(&["127.0.0.1:3001/sv00"]), false, None),
            Record::new(
                strings(&["127.0.0.1:3002/sv0A", "vol3.example:80/svFE"]),
                false,
                Some(hash),
            ),
            Record::new(
                strings(&["vol3.example:80", "127.0.0.1:3001", "127.0.0.1:3002"]),
                false,
                Some(hash),
            ),
        ];
        for key in [&b"/k"[..], b"/some/longer key with spaces and %", &[0xffu8, 0, 7][..]] {
            for record in &records {
                for balanced in [true, false] {
                    let compact = Compact::new(key, record, balanced, &volumes()).expect("compactable");
                    let compact = Answer::Compact(compact);
                    let prepared = Answer::Prepared(Box::new(Redirect::new(key, record, balanced, &volumes())));
                    for replica in 0..record.volumes.len() {
                        for keep_alive in [KeepAlive::Open, KeepAlive::Close, KeepAlive::Open10] {
                            assert_eq!(
                                rendered(&compact, replica, key, keep_alive),
                                rendered(&prepared, replica, key, keep_alive)
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn records_compact_cannot_spell_stay_prepared() {
        let odd = [
            strings(&["127.0.0.1:9999/sv01"]),
            strings(&["127.0.0.1:3001/sv0a"]),
            strings(&["127.0.0.1:3001/sv100"]),
            strings(&["127.0.0.1:3001/svFF"]),
            strings(&["127.0.0.1:3001/other"]),
            strings(&[
                "127.0.0.1:3001",
                "127.0.0.1:3002",
                "vol3.example:80",
                "127.0.0.1:3001/sv01",
            ]),
        ];
        for volumes_of_record in odd {
            let record = Record::new(volumes_of_record, false, None);
            assert!(Compact::new(b"/k", &record, true, &volumes()).is_none(), "{record:?}");
            let placement = Placement {
                volumes: volumes().hosts().to_vec(),
                replicas: 3,
                subvolumes: 10,
            };
            let answer = Answer::new(b"/k", Some(&record), &placement, &volumes());
            let location = rendered(&answer, 0, b"/k", KeepAlive::Open);
            assert!(
                location.contains(&format!("Location: http://{}/", record.volumes[0])),
                "{location}"
            );
        }
    }

    #[test]
    fn soft_deleted_and_absent_records_are_gone() {
        let placement = Placement {
            volumes: volumes().hosts().to_vec(),
            replicas: 1,
            subvolumes: 1,
        };
        let deleted = Record::new(strings(&["127.0.0.1:3001"]), true, None);
        for record in [Some(&deleted), None] {
            let answer = Answer::new(b"/k", record, &placement, &volumes());
            let mut out = Vec::new();
            assert_eq!(
                answer.write(b"/k", &mut out, KeepAlive::Open, &volumes()),
                ReadOutcome::Missing
            );
            assert!(out.is_empty());
        }
    }
}
