//! Criterion benchmark of the S3 body checksums' throughput per
//! implementation, streamed in 1 MiB pieces as `s3/body.rs` hashes a PUT
//! body: SHA-256 (`x-amz-content-sha256`, `x-amz-checksum-sha256`) and
//! SHA-1 (`x-amz-checksum-sha1`) from RustCrypto's `sha2`/`sha1` crates and
//! from OpenSSL (the `openssl` crate's EVP digests), and CRC-64/NVME from
//! `crc-fast` for scale. `cargo bench --bench checksum`; see PERF.md ("S3
//! hardening") for the figures and the choice.
//!
//! Times are the bench thread's CPU time, not wall time: on a machine shared
//! with other work, time spent descheduled would otherwise count as hashing.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use openssl::hash::{Hasher, MessageDigest};
use sha2::Digest as _;

/// Bytes per piece: replication's piece size for large bodies.
const PIECE_BYTES: usize = 1 << 20;

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

    let mut group = c.benchmark_group("sha256_1MiB");
    group.throughput(Throughput::Bytes(PIECE_BYTES as u64));
    let mut rust = sha2::Sha256::new();
    group.bench_function("sha2 crate", |b| {
        b.iter_custom(|iterations| cpu_time(iterations, || rust.update(black_box(&piece))))
    });
    black_box(rust.finalize());
    let mut openssl = Hasher::new(MessageDigest::sha256()).expect("OpenSSL has SHA-256");
    group.bench_function("openssl", |b| {
        b.iter_custom(|iterations| cpu_time(iterations, || openssl.update(black_box(&piece)).expect("update")))
    });
    black_box(openssl.finish().expect("finish"));
    group.finish();

    let mut group = c.benchmark_group("sha1_1MiB");
    group.throughput(Throughput::Bytes(PIECE_BYTES as u64));
    let mut rust = sha1::Sha1::new();
    group.bench_function("sha1 crate", |b| {
        b.iter_custom(|iterations| cpu_time(iterations, || rust.update(black_box(&piece))))
    });
    black_box(rust.finalize());
    let mut openssl = Hasher::new(MessageDigest::sha1()).expect("OpenSSL has SHA-1");
    group.bench_function("openssl", |b| {
        b.iter_custom(|iterations| cpu_time(iterations, || openssl.update(black_box(&piece)).expect("update")))
    });
    black_box(openssl.finish().expect("finish"));
    group.finish();

    let mut group = c.benchmark_group("crc64nvme_1MiB");
    group.throughput(Throughput::Bytes(PIECE_BYTES as u64));
    let mut crc = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme);
    group.bench_function("crc-fast", |b| {
        b.iter_custom(|iterations| cpu_time(iterations, || crc.update(black_box(&piece))))
    });
    black_box(crc.finalize());
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
