//! Criterion benchmark of the record cache under contention: hits on keys
//! spread over every shard, from 1, 2, 4 and 8 threads at once, on one cache
//! all threads share (the design today: any reactor reads any shard behind
//! its mutex) and on one private cache per thread holding the same number of
//! keys (what per-reactor ownership would cost, before routing). The time
//! reported is CPU time per lookup, averaged over the threads: what a lookup
//! costs its core, shared cache lines and contended locks included, whether
//! or not the threads had cores of their own (on a machine shared with other
//! work, or with fewer cores than threads, wall time would count the turns
//! threads wait for a core). `cargo bench --bench cache`; see PERF.md.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use mkv::cache::{Cache, Lookup, Weigh};

/// Keys each thread reads: far more than the 32 KiB L1 holds, within the
/// cache's budget, so every lookup is a hit.
const KEYS_PER_THREAD: usize = 100_000;
/// Cache shards per thread, as `Store` gives each reactor.
const SHARDS_PER_THREAD: usize = 16;
/// Budget large enough that nothing is evicted.
const CACHE_BYTES: usize = 1 << 30;
/// Thread counts measured.
const THREAD_COUNTS: [usize; 4] = [1, 2, 4, 8];

/// A value the size of a cached `Compact` answer.
struct Answer([u8; 32]);

impl Weigh for Answer {
    fn weight_bytes(&self) -> usize {
        0
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("/bench/key-{i}").into_bytes()
}

fn filled(keys: &[Vec<u8>], shards: usize) -> Cache<Answer> {
    let cache = Cache::new(CACHE_BYTES, shards);
    for (i, key) in keys.iter().enumerate() {
        cache.put(key, Answer([i as u8; 32]));
    }
    cache
}

/// `lookups` hits on random keys of `keys`, each copying the value out
/// under the shard's lock as a 302 render does.
fn hits(cache: &Cache<Answer>, keys: &[Vec<u8>], lookups: u64, seed: u64) {
    let mut state = seed | 1;
    let mut out = [0u8; 32];
    for _ in 0..lookups {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let key = &keys[(state % keys.len() as u64) as usize];
        match cache.lookup(key, |answer| out.copy_from_slice(&answer.0)) {
            Lookup::Hit(()) => {}
            Lookup::Miss(_) => panic!("every key is cached"),
        }
        black_box(&out);
    }
}

/// CPU time this thread has used so far.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec for the call to write.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// The mean CPU time `threads` threads, started together, take for
/// `lookups` hits each; `cache_of(thread)` is the cache a thread reads.
fn timed<'a>(
    threads: usize,
    lookups: u64,
    cache_of: impl Fn(usize) -> (&'a Cache<Answer>, &'a [Vec<u8>]) + Sync,
) -> Duration {
    let start = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let (start, cache_of) = (&start, &cache_of);
                scope.spawn(move || {
                    let (cache, keys) = cache_of(thread);
                    start.wait();
                    let started = thread_cpu_time();
                    hits(cache, keys, lookups, 0x9e37_79b9_7f4a_7c15 ^ thread as u64);
                    thread_cpu_time() - started
                })
            })
            .collect();
        start.wait();
        let total: Duration = workers
            .into_iter()
            .map(|worker| worker.join().expect("a lookup thread panicked"))
            .sum();
        total / threads as u32
    })
}

fn contention(c: &mut Criterion) {
    let mut group = c.benchmark_group("cache_lookup");
    for threads in THREAD_COUNTS {
        group.throughput(Throughput::Elements(1));
        let keys: Vec<Vec<u8>> = (0..threads * KEYS_PER_THREAD).map(key).collect();
        let shared = filled(&keys, threads * SHARDS_PER_THREAD);
        group.bench_with_input(BenchmarkId::new("shared", threads), &threads, |b, &threads| {
            b.iter_custom(|lookups| timed(threads, lookups, |_| (&shared, &keys[..])))
        });
        drop(shared);
        let parts: Vec<&[Vec<u8>]> = keys.chunks(KEYS_PER_THREAD).collect();
        let private: Vec<Cache<Answer>> = parts.iter().map(|part| filled(part, SHARDS_PER_THREAD)).collect();
        group.bench_with_input(BenchmarkId::new("private", threads), &threads, |b, &threads| {
            b.iter_custom(|lookups| timed(threads, lookups, |thread| (&private[thread], parts[thread])))
        });
    }
    group.finish();
}

criterion_group!(benches, contention);
criterion_main!(benches);
