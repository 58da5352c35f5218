//! Per-key write locks: at most one PUT, DELETE, UNLINK, RELINK or REBALANCE
//! of a key at a time, across all reactors.
//!
//! A second writer does not wait: `try_lock` fails and the request answers
//! 409 at once, as the original does. The guard unlocks on drop, so a handler
//! that errors or is cancelled mid-way (client gone) never leaves a key locked.

use std::hash::BuildHasher;
use std::sync::Mutex;

use hashbrown::HashSet;

/// Lock shards; enough that reactors rarely meet on one mutex.
const SHARD_COUNT: usize = 64;

/// One shard: the locked keys that hash to it.
type LockShard = Mutex<HashSet<Box<[u8]>>>;

/// The set of keys being written.
pub struct KeyLocks {
    shards: Box<[LockShard]>,
    hasher: hashbrown::DefaultHashBuilder,
}

/// Holds a key's lock; dropping it unlocks.
pub struct LocalGuard<'a> {
    locks: &'a KeyLocks,
    shard: usize,
    key: Box<[u8]>,
}

impl Default for KeyLocks {
    fn default() -> Self {
        KeyLocks {
            shards: (0..SHARD_COUNT).map(|_| Mutex::new(HashSet::new())).collect(),
            hasher: hashbrown::DefaultHashBuilder::default(),
        }
    }
}

impl KeyLocks {
    /// Lock `key`, or `None` if another request holds it.
    pub fn try_lock(&self, key: &[u8]) -> Option<LocalGuard<'_>> {
        let shard = self.hasher.hash_one(key) as usize % SHARD_COUNT;
        // Allocation is deliberate: writes are not the hot path.
        let key: Box<[u8]> = key.into();
        let inserted = self.lock_shard(shard).insert(key.clone());
        // Lazily: a guard built and dropped on failure would unlock the holder.
        inserted.then(|| LocalGuard {
            locks: self,
            shard,
            key,
        })
    }

    fn lock_shard(&self, shard: usize) -> std::sync::MutexGuard<'_, HashSet<Box<[u8]>>> {
        // A panic inside an insert or remove may have left the set
        // half-updated: a key locked forever, or two writers of one key. The
        // process ends instead (ARCHITECTURE.md, "Panics"); a supervisor
        // restarts it.
        self.shards[shard].lock().unwrap_or_else(|_| {
            eprintln!("mkv: a key-lock shard was poisoned by a panic; aborting");
            std::process::abort()
        })
    }
}

impl Drop for LocalGuard<'_> {
    fn drop(&mut self) {
        let removed = self.locks.lock_shard(self.shard).remove(&self.key);
        debug_assert!(removed, "a held key is in its shard");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_writer_is_refused_until_the_first_drops() {
        let locks = KeyLocks::default();
        let first = locks.try_lock(b"/k").expect("free key locks");
        assert!(locks.try_lock(b"/k").is_none());
        assert!(
            locks.try_lock(b"/k").is_none(),
            "a refused attempt must not release the holder's lock"
        );
        assert!(locks.try_lock(b"/other").is_some());
        drop(first);
        assert!(locks.try_lock(b"/k").is_some());
    }
}
