//! The record cache: a bounded, sharded key -> value map in front of the index.
//!
//! Shards are picked by key hash; each is a small mutex-guarded table with
//! CLOCK (second-chance) eviction under a byte budget. Any reactor may read or
//! fill any shard: a lock held for a hash probe and a memcpy is cheaper than
//! routing the request to an owner core (see ARCHITECTURE.md).
//!
//! Coherence with the index: writers update the index first and then `put`
//! the new value here, bumping the shard's epoch. A reader that missed notes
//! the epoch in a `Ticket` before reading the index and `fill`s only if no
//! write touched the shard since, so a stale read can never overwrite a newer
//! write (read-your-writes across cores).
//!
//! The warm fill at start (`Store::warm`) does the same for a batch of keys
//! read from one index snapshot: it notes every shard's epoch (`Epochs`)
//! before taking the snapshot, and `fill_warm` keeps a value only if its
//! shard saw no write since, the key is not cached yet, and the shard has
//! room without evicting anything a reactor cached.

use std::hash::BuildHasher;
use std::sync::Mutex;

use hashbrown::HashTable;

/// Keys up to this long are stored inside their slot; longer keys take a
/// heap allocation. 22 bytes keeps `StoredKey` at 24 bytes, the size of a
/// boxed slice plus its tag, and covers short names like `/bench/key-1234567`.
const INLINE_KEY_BYTES: usize = 22;
/// Hash-table bytes charged per entry: a `u32` bucket and a control byte at
/// the table's lowest load (7/16, after rounding buckets up to a power of two).
const TABLE_BYTES_PER_ENTRY: usize = 12;
/// Slots per chunk of a shard's slot storage: about 64 KiB of 64-byte slots.
/// Not 1024: blocks of exactly 64 KiB fall in an allocator size class that
/// wastes space between them (measured: a full 64 MiB cache took 141 MiB of
/// RSS with 1024, 126 MiB with 1000).
const CHUNK_SLOTS: usize = 1000;
/// Smallest budget a shard gets, so tiny caches still hold something.
const SHARD_BYTES_MIN: usize = 64 * 1024;

/// Something the cache can weigh.
pub trait Weigh {
    /// Heap bytes the value holds outside its slot.
    fn weight_bytes(&self) -> usize;
}

/// A key as the cache stores it: short keys inline, so a probe compares
/// bytes in the slot it already loaded instead of chasing a pointer.
enum StoredKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY_BYTES] },
    Heap(Box<[u8]>),
}

const _: () = assert!(INLINE_KEY_BYTES < u8::MAX as usize);
const _: () = assert!(std::mem::size_of::<StoredKey>() == 24);

impl StoredKey {
    fn new(key: &[u8]) -> StoredKey {
        if key.len() <= INLINE_KEY_BYTES {
            let mut bytes = [0u8; INLINE_KEY_BYTES];
            bytes[..key.len()].copy_from_slice(key);
            StoredKey::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            StoredKey::Heap(key.into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            StoredKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            StoredKey::Heap(bytes) => bytes,
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            StoredKey::Inline { .. } => 0,
            StoredKey::Heap(bytes) => bytes.len(),
        }
    }
}

struct Slot<V> {
    key: StoredKey,
    value: V,
    visited: bool,
}

impl<V: Weigh> Slot<V> {
    /// Bytes this entry costs: its slot, its share of the table, its heap.
    fn weight(&self) -> usize {
        std::mem::size_of::<Slot<V>>() + TABLE_BYTES_PER_ENTRY + self.key.heap_bytes() + self.value.weight_bytes()
    }
}

/// A shard's slots in fixed-size chunks: memory grows one chunk at a time as
/// entries arrive, never doubling, so what is resident stays within a chunk
/// of what is charged (a doubled `Vec` would hold up to half its memory
/// uncharged; a `Vec` sized up front for the whole budget is resident early
/// where the allocator backs it with huge pages).
struct Slots<V> {
    chunks: Vec<Vec<Slot<V>>>,
    len: usize,
}

impl<V> Slots<V> {
    fn new() -> Slots<V> {
        Slots {
            chunks: Vec::new(),
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, slot: Slot<V>) {
        if self.len % CHUNK_SLOTS == 0 {
            self.chunks.push(Vec::with_capacity(CHUNK_SLOTS));
        }
        self.chunks.last_mut().expect("a chunk with room").push(slot);
        self.len += 1;
    }

    /// Remove slot `index`, moving the last slot into its place.
    fn swap_remove(&mut self, index: usize) -> Slot<V> {
        let last_chunk = self.chunks.last_mut().expect("swap_remove on empty slots");
        let mut removed = last_chunk.pop().expect("chunks are never empty");
        if last_chunk.is_empty() {
            self.chunks.pop();
        }
        self.len -= 1;
        if index != self.len {
            std::mem::swap(&mut self[index], &mut removed);
        }
        removed
    }
}

impl<V> std::ops::Index<usize> for Slots<V> {
    type Output = Slot<V>;

    fn index(&self, index: usize) -> &Slot<V> {
        &self.chunks[index / CHUNK_SLOTS][index % CHUNK_SLOTS]
    }
}

impl<V> std::ops::IndexMut<usize> for Slots<V> {
    fn index_mut(&mut self, index: usize) -> &mut Slot<V> {
        &mut self.chunks[index / CHUNK_SLOTS][index % CHUNK_SLOTS]
    }
}

struct Shard<V> {
    table: HashTable<u32>,
    slots: Slots<V>,
    hand: usize,
    bytes: usize,
    bytes_max: usize,
    epoch: u64,
    /// Entries evicted for room since start (metrics).
    evictions: u64,
    /// The cache's hasher (seeded once per cache), to rehash keys on eviction.
    hasher: hashbrown::DefaultHashBuilder,
}

/// Proof that a reader missed at a given shard epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    shard: usize,
    hash: u64,
    epoch: u64,
}

/// Every shard's epoch at one moment: a `Ticket` for each key of a batch
/// read from an index snapshot taken after it.
pub struct Epochs(Box<[u64]>);

/// Result of `Cache::fill_warm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WarmFill {
    /// The value was cached.
    Filled,
    /// Not cached: the key already is, or a write touched its shard since
    /// the epochs were taken.
    Skipped,
    /// Not cached: its shard has no room left without evicting.
    Full,
}

/// Result of `Cache::lookup`.
pub enum Lookup<R> {
    Hit(R),
    Miss(Ticket),
}

/// A bounded, sharded cache.
pub struct Cache<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl<V: Weigh> Cache<V> {
    /// A cache of about `bytes_max` bytes in `shard_count` shards (rounded up to a power of two).
    pub fn new(bytes_max: usize, shard_count: usize) -> Cache<V> {
        let shard_count = shard_count.max(1).next_power_of_two();
        let shard_bytes_max = (bytes_max / shard_count).max(SHARD_BYTES_MIN);
        let hasher = hashbrown::DefaultHashBuilder::default();
        let shards = (0..shard_count)
            .map(|_| {
                Mutex::new(Shard {
                    table: HashTable::new(),
                    slots: Slots::new(),
                    hand: 0,
                    bytes: 0,
                    bytes_max: shard_bytes_max,
                    epoch: 0,
                    evictions: 0,
                    hasher: hasher.clone(),
                })
            })
            .collect();
        Cache { shards, hasher }
    }

    fn locate(&self, key: &[u8]) -> (usize, u64) {
        let hash = self.hasher.hash_one(key);
        // High bits pick the shard; the table uses all of them.
        let shard = (hash >> 48) as usize & (self.shards.len() - 1);
        (shard, hash)
    }

    fn shard(&self, index: usize) -> std::sync::MutexGuard<'_, Shard<V>> {
        // A panic while a shard was held may have left it half-updated (a
        // slot without its table entry, a wrong byte count), and a wrong
        // answer is a redirect to the wrong bytes: the process ends instead
        // (ARCHITECTURE.md, "Panics"); a supervisor restarts it.
        self.shards[index].lock().unwrap_or_else(|_| {
            eprintln!("mkv: a cache shard was poisoned by a panic; aborting");
            std::process::abort()
        })
    }

    /// Look `key` up; on a hit call `read` with the value under the lock.
    pub fn lookup<R>(&self, key: &[u8], read: impl FnOnce(&V) -> R) -> Lookup<R> {
        let (index, hash) = self.locate(key);
        let mut shard = self.shard(index);
        let shard = &mut *shard;
        match shard
            .table
            .find(hash, |&slot| shard.slots[slot as usize].key.as_bytes() == key)
        {
            Some(&slot) => {
                let slot = &mut shard.slots[slot as usize];
                slot.visited = true;
                Lookup::Hit(read(&slot.value))
            }
            None => Lookup::Miss(Ticket {
                shard: index,
                hash,
                epoch: shard.epoch,
            }),
        }
    }

    /// Insert a value read from the index after a miss, unless a write has
    /// touched the shard since the ticket was taken.
    pub fn fill(&self, ticket: Ticket, key: &[u8], value: V) {
        let mut shard = self.shard(ticket.shard);
        if shard.epoch == ticket.epoch {
            shard.upsert(ticket.hash, key, value);
        }
    }

    /// Every shard's epoch now, for `fill_warm`.
    pub fn epochs(&self) -> Epochs {
        Epochs((0..self.shards.len()).map(|index| self.shard(index).epoch).collect())
    }

    /// Insert a value read from an index snapshot taken after `epochs`,
    /// unless a write has touched its shard since, the key is cached
    /// already, or the shard would have to evict to make room.
    pub fn fill_warm(&self, epochs: &Epochs, key: &[u8], value: V) -> WarmFill {
        let (index, hash) = self.locate(key);
        let mut shard = self.shard(index);
        if shard.epoch != epochs.0[index] || shard.find(hash, key).is_some() {
            return WarmFill::Skipped;
        }
        let new = Slot {
            key: StoredKey::new(key),
            value,
            visited: false,
        };
        if shard.bytes + new.weight() > shard.bytes_max {
            return WarmFill::Full;
        }
        shard.insert(hash, new);
        WarmFill::Filled
    }

    /// Store the value a writer just wrote to the index.
    pub fn put(&self, key: &[u8], value: V) {
        let (index, hash) = self.locate(key);
        let mut shard = self.shard(index);
        shard.epoch += 1;
        shard.upsert(hash, key, value);
    }

    /// Forget `key` after a writer removed it from the index: the next read
    /// goes to the index, and no fill that started before can bring it back.
    pub fn invalidate(&self, key: &[u8]) {
        let (index, hash) = self.locate(key);
        let mut shard = self.shard(index);
        shard.epoch += 1;
        if let Some(slot) = shard.find(hash, key) {
            shard.remove_at(slot);
        }
    }

    /// Forget every entry (another master's changes may have been missed);
    /// no fill that started before can bring one back.
    pub fn clear(&self) {
        for index in 0..self.shards.len() {
            let mut shard = self.shard(index);
            shard.epoch += 1;
            shard.table.clear();
            shard.slots = Slots::new();
            shard.hand = 0;
            shard.bytes = 0;
        }
    }

    /// Entries evicted for room since start, over all shards (metrics).
    pub fn evictions(&self) -> u64 {
        (0..self.shards.len()).map(|index| self.shard(index).evictions).sum()
    }

    /// Entries and charged bytes over all shards (tests and metrics).
    pub fn usage(&self) -> (usize, usize) {
        (0..self.shards.len()).fold((0, 0), |(entries, bytes), index| {
            let shard = self.shard(index);
            (entries + shard.slots.len(), bytes + shard.bytes)
        })
    }
}

impl<V: Weigh> Shard<V> {
    /// The slot holding `key`, if any.
    fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let slots = &self.slots;
        self.table
            .find(hash, |&slot| slots[slot as usize].key.as_bytes() == key)
            .map(|&slot| slot as usize)
    }

    fn upsert(&mut self, hash: u64, key: &[u8], value: V) {
        if let Some(slot) = self.find(hash, key) {
            let slot = &mut self.slots[slot];
            self.bytes -= slot.weight();
            slot.value = value;
            slot.visited = true;
            self.bytes += slot.weight();
        } else {
            let new = Slot {
                key: StoredKey::new(key),
                value,
                visited: false,
            };
            let weight = new.weight();
            if weight > self.bytes_max {
                return;
            }
            while self.bytes + weight > self.bytes_max && !self.slots.is_empty() {
                self.evict_one();
                self.evictions += 1;
            }
            self.insert(hash, new);
        }
    }

    /// Add a slot for a key the shard does not hold.
    fn insert(&mut self, hash: u64, new: Slot<V>) {
        let weight = new.weight();
        let slot = u32::try_from(self.slots.len()).expect("shard holds fewer than 2^32 entries");
        self.slots.push(new);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.table
            .insert_unique(hash, slot, |&slot| hasher.hash_one(slots[slot as usize].key.as_bytes()));
        self.bytes += weight;
    }

    /// The table stores slot numbers, not hashes: rehash the slot's key.
    fn hash_of(&self, slot: usize) -> u64 {
        self.hasher.hash_one(self.slots[slot].key.as_bytes())
    }

    /// CLOCK: skip (and clear) recently used slots, evict the first cold one.
    fn evict_one(&mut self) {
        loop {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let slot = &mut self.slots[self.hand];
            if slot.visited {
                slot.visited = false;
                self.hand += 1;
                continue;
            }
            self.remove_at(self.hand);
            return;
        }
    }

    /// Remove slot `index` by moving the last slot into its place.
    fn remove_at(&mut self, index: usize) {
        let hash = self.hash_of(index);
        let removed = self
            .table
            .find_entry(hash, |&slot| slot as usize == index)
            .expect("every slot is in the table");
        removed.remove();
        let last = self.slots.len() - 1;
        if index != last {
            let last_hash = self.hash_of(last);
            let moved = self
                .table
                .find_mut(last_hash, |&slot| slot as usize == last)
                .expect("every slot is in the table");
            *moved = index as u32;
        }
        let slot = self.slots.swap_remove(index);
        self.bytes -= slot.weight();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Weigh for u64 {
        fn weight_bytes(&self) -> usize {
            0
        }
    }

    fn get(cache: &Cache<u64>, key: &[u8]) -> Option<u64> {
        match cache.lookup(key, |value| *value) {
            Lookup::Hit(value) => Some(value),
            Lookup::Miss(_) => None,
        }
    }

    #[test]
    fn put_then_lookup() {
        let cache = Cache::new(1 << 20, 4);
        cache.put(b"a", 1);
        cache.put(b"b", 2);
        cache.put(b"a", 3);
        assert_eq!(get(&cache, b"a"), Some(3));
        assert_eq!(get(&cache, b"b"), Some(2));
        assert_eq!(get(&cache, b"c"), None);
    }

    #[test]
    fn invalidate_forgets_and_beats_an_earlier_fill() {
        let cache = Cache::new(1 << 20, 1);
        cache.put(b"k", 1);
        let Lookup::Miss(ticket) = cache.lookup(b"j", |value| *value) else {
            panic!("empty cache hit")
        };
        cache.invalidate(b"k");
        assert_eq!(get(&cache, b"k"), None);
        assert_eq!(cache.usage(), (0, 0));
        cache.fill(ticket, b"j", 7);
        assert_eq!(get(&cache, b"j"), None, "a fill from before the invalidation was kept");
        cache.invalidate(b"absent");
        assert_eq!(cache.usage(), (0, 0));
    }

    #[test]
    fn stale_fill_loses_to_a_write() {
        let cache = Cache::new(1 << 20, 1);
        let Lookup::Miss(ticket) = cache.lookup(b"k", |value| *value) else {
            panic!("empty cache hit")
        };
        cache.put(b"k", 2);
        cache.fill(ticket, b"k", 1);
        assert_eq!(get(&cache, b"k"), Some(2));
        let Lookup::Miss(ticket) = cache.lookup(b"j", |value| *value) else {
            panic!("miss expected")
        };
        cache.fill(ticket, b"j", 7);
        assert_eq!(get(&cache, b"j"), Some(7));
    }

    #[test]
    fn warm_fill_never_overwrites_never_evicts_and_loses_to_writes() {
        let cache = Cache::new(SHARD_BYTES_MIN, 1);
        cache.put(b"written", 1);
        let epochs = cache.epochs();
        assert_eq!(cache.fill_warm(&epochs, b"written", 0), WarmFill::Skipped);
        assert_eq!(get(&cache, b"written"), Some(1));
        assert_eq!(cache.fill_warm(&epochs, b"new", 2), WarmFill::Filled);
        assert_eq!(get(&cache, b"new"), Some(2));
        cache.invalidate(b"new");
        assert_eq!(
            cache.fill_warm(&epochs, b"new", 2),
            WarmFill::Skipped,
            "a fill from before a delete"
        );
        assert_eq!(get(&cache, b"new"), None);
        let epochs = cache.epochs();
        let mut filled = 0u64;
        while cache.fill_warm(&epochs, format!("key-{filled}").as_bytes(), filled) == WarmFill::Filled {
            filled += 1;
        }
        assert!(filled > 100, "{filled}");
        assert_eq!(
            get(&cache, b"written"),
            Some(1),
            "the warm fill evicted a written entry"
        );
        assert_eq!(get(&cache, b"key-0"), Some(0));
        let (entries, bytes) = cache.usage();
        assert_eq!(entries as u64, filled + 1);
        assert!(bytes <= SHARD_BYTES_MIN, "{bytes}");
    }

    #[test]
    fn stays_within_budget_and_keeps_hot_keys() {
        let cache = Cache::new(SHARD_BYTES_MIN, 1);
        cache.put(b"hot", 0);
        for i in 0..10_000u64 {
            cache.put(format!("key-{i}").as_bytes(), i);
            assert!(get(&cache, b"hot").is_some(), "hot key evicted at {i}");
        }
        let (entries, bytes) = cache.usage();
        assert!(bytes <= SHARD_BYTES_MIN, "{bytes}");
        assert!(entries > 100 && entries < 10_000, "{entries}");
        assert_eq!(get(&cache, b"key-9999"), Some(9999));
    }

    #[test]
    fn long_keys_are_told_apart_past_the_inline_bytes() {
        let cache = Cache::new(1 << 20, 1);
        let short = vec![b'k'; INLINE_KEY_BYTES];
        let mut long_a = vec![b'k'; INLINE_KEY_BYTES + 1];
        let mut long_b = long_a.clone();
        long_a.push(b'a');
        long_b.push(b'b');
        cache.put(&short, 1);
        cache.put(&long_a, 2);
        cache.put(&long_b, 3);
        assert_eq!(get(&cache, &short), Some(1));
        assert_eq!(get(&cache, &long_a), Some(2));
        assert_eq!(get(&cache, &long_b), Some(3));
        assert_eq!(get(&cache, &long_a[..INLINE_KEY_BYTES + 1]), None);
        let (entries, bytes) = cache.usage();
        assert_eq!(entries, 3);
        let slot_bytes = std::mem::size_of::<Slot<u64>>() + TABLE_BYTES_PER_ENTRY;
        assert_eq!(bytes, 3 * slot_bytes + long_a.len() + long_b.len());
    }

    #[test]
    fn eviction_across_chunks_keeps_every_entry_whole() {
        let cache = Cache::new(1 << 20, 1);
        let total = 50_000u64;
        for i in 0..total {
            cache.put(format!("key-{i}").as_bytes(), i);
        }
        let (entries, bytes) = cache.usage();
        assert!(entries > 2 * CHUNK_SLOTS, "{entries} entries should span chunks");
        assert!(bytes <= 1 << 20, "{bytes}");
        let found = (0..total)
            .filter(|&i| match get(&cache, format!("key-{i}").as_bytes()) {
                Some(value) => {
                    assert_eq!(value, i);
                    true
                }
                None => false,
            })
            .count();
        assert_eq!(found, entries);
    }
}
