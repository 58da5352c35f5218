//! Criterion benchmark of md5 throughput per implementation, streamed in
//! 1 MiB pieces as replication hashes a PUT body: the `md-5` crate as mkv
//! builds it, the `md5-asm` compression function that `md-5`'s `asm`
//! feature uses, and OpenSSL's MD5 (the `openssl` crate). `cargo bench
//! --bench md5`; see PERF.md for the figures and the choice.
//!
//! Times are the bench thread's CPU time, not wall time: on a machine shared
//! with other work, time spent descheduled would otherwise count as hashing.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use md5::{Digest, Md5};

/// Bytes per piece: replication's piece size for large bodies.
const PIECE_BYTES: usize = 1 << 20;
/// A small value, hashed whole.
const SMALL_VALUE_BYTES: usize = 1024;
/// md5's block.
const BLOCK_BYTES: usize = 64;

fn piece() -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..PIECE_BYTES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// CPU time this thread has used so far.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec for the call to write.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// The thread CPU time `iterations` calls of `hash` take.
fn cpu_time(iterations: u64, mut hash: impl FnMut()) -> Duration {
    let started = thread_cpu_time();
    for _ in 0..iterations {
        hash();
    }
    thread_cpu_time() - started
}

fn throughput(c: &mut Criterion) {
    let piece = piece();
    let mut group = c.benchmark_group("md5_1MiB");
    group.throughput(Throughput::Bytes(PIECE_BYTES as u64));
    // Whichever backend Cargo.toml gives `md-5`: pure Rust unless its `asm`
    // feature is on (then it is the compression function below).
    let mut md5 = Md5::new();
    group.bench_function("md-5 crate", |b| {
        b.iter_custom(|iterations| cpu_time(iterations, || md5.update(black_box(&piece))))
    });
    black_box(md5.finalize());
    let blocks: Vec<[u8; BLOCK_BYTES]> = piece
        .chunks_exact(BLOCK_BYTES)
        .map(|block| block.try_into().expect("64-byte chunks"))
        .collect();
    let mut state = [0x6745_2301u32, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    group.bench_function("md5-asm compress", |b| {
        b.iter_custom(|iterations| cpu_time(iterations, || md5_asm::compress(&mut state, black_box(&blocks))))
    });
    black_box(state);
    let mut openssl = openssl::hash::Hasher::new(openssl::hash::MessageDigest::md5()).expect("OpenSSL has MD5");
    group.bench_function("openssl", |b| {
        b.iter_custom(|iterations| cpu_time(iterations, || openssl.update(black_box(&piece)).expect("MD5 update")))
    });
    black_box(openssl.finish().expect("MD5 finish"));
    group.finish();
    // A small value is hashed whole: what a context costs to set up and
    // finish weighs as much as the bytes.
    let small = &piece[..SMALL_VALUE_BYTES];
    let mut group = c.benchmark_group("md5_1KiB_whole");
    group.throughput(Throughput::Bytes(SMALL_VALUE_BYTES as u64));
    group.bench_function("md-5 crate", |b| {
        b.iter_custom(|iterations| cpu_time(iterations, || _ = black_box(Md5::digest(black_box(small)))))
    });
    group.bench_function("openssl", |b| {
        b.iter_custom(|iterations| {
            cpu_time(iterations, || {
                _ = black_box(openssl::hash::hash(
                    openssl::hash::MessageDigest::md5(),
                    black_box(small),
                ))
            })
        })
    });
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
