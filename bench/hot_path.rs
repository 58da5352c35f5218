//! Criterion benchmarks of the pure pieces on the GET hot path, and of the
//! index underneath. `cargo bench --bench hot_path`; see PERF.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

use md5::{Digest, Md5};
use mkv::health::Volumes;
use mkv::http::{parse_request, KeepAlive, Method};
use mkv::index::{Index, IndexOptions};
use mkv::metrics::{self, CacheRead, RequestCount};
use mkv::placement::{hex_lower, key2path_into, key2volume};
use mkv::record::Record;
use mkv::store::{Placement, Store};

const GET: &[u8] = b"GET /bench/key-123456 HTTP/1.1\r\nHost: 127.0.0.1:3000\r\nUser-Agent: wrk\r\n\r\n";
const PUT: &[u8] = b"PUT /bench/key-123456 HTTP/1.1\r\nHost: 127.0.0.1:3000\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\nContent-Length: 1048576\r\nExpect: 100-continue\r\n\r\n";

fn volumes(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("127.0.0.1:{}", 3001 + i)).collect()
}

fn http(c: &mut Criterion) {
    c.bench_function("parse_request/get", |b| {
        b.iter(|| parse_request(black_box(GET)).unwrap())
    });
    c.bench_function("parse_request/put", |b| {
        b.iter(|| parse_request(black_box(PUT)).unwrap())
    });
}

fn placement(c: &mut Criterion) {
    let mut group = c.benchmark_group("key2volume");
    for count in [3, 16, 64] {
        let list = volumes(count);
        group.bench_with_input(BenchmarkId::from_parameter(count), &list, |b, list| {
            b.iter(|| key2volume(black_box(b"/bench/key-123456"), list, 3, 10))
        });
    }
    group.finish();
    let mut path = Vec::with_capacity(64);
    c.bench_function("key2path", |b| {
        b.iter(|| {
            path.clear();
            key2path_into(black_box(b"/bench/key-123456"), &mut path);
        })
    });
}

fn record(c: &mut Criterion) {
    let record = Record::new(
        vec![
            "127.0.0.1:3001/sv03".into(),
            "127.0.0.1:3002/sv07".into(),
            "127.0.0.1:3003/sv01".into(),
        ],
        false,
        Some(*b"5d41402abc4b2a76b9719d911017c592"),
    );
    let bytes = record.encode();
    c.bench_function("record/encode", |b| b.iter(|| black_box(&record).encode()));
    c.bench_function("record/decode", |b| {
        b.iter(|| Record::decode(black_box(&bytes)).unwrap())
    });
}

/// A store over a fresh index of `KEYS` live keys (records with an md5, as
/// a PUT leaves them), with the default index options (no block cache) and a
/// record cache of `cache_bytes`.
fn seeded_store(cache_bytes: usize) -> (tempfile::TempDir, Store, Vec<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(
        dir.path(),
        &IndexOptions {
            block_cache_bytes: 0,
            sync: false,
            role: mkv::index::Role::Serve,
        },
    )
    .unwrap();
    let list = volumes(3);
    let placement = Placement {
        volumes: list.clone(),
        replicas: 3,
        subvolumes: 10,
    };
    let keys: Vec<Vec<u8>> = (0..KEYS).map(|i| format!("/bench/key-{i}").into_bytes()).collect();
    for key in &keys {
        let hash = hex_lower(&Md5::digest(key).into());
        index
            .put(key, &Record::new(placement.place(key), false, Some(hash)))
            .unwrap();
    }
    let volumes = Arc::new(Volumes::new(&list));
    let store = Store::new(
        index,
        placement,
        volumes,
        cache_bytes,
        1,
        mkv::coherence::Coherence::owned(),
    );
    (dir, store, keys)
}

/// Keys in the store benchmarks' index.
const KEYS: usize = 100_000;

fn store(c: &mut Criterion) {
    let (_dir, store, keys) = seeded_store(256 << 20);
    let mut out = Vec::with_capacity(4096);
    for key in &keys {
        store.read(key, &mut out, KeepAlive::Open).unwrap();
        out.clear();
    }
    let mut i = 0;
    c.bench_function("store/read_hit_302", |b| {
        b.iter(|| {
            out.clear();
            i = (i + 7919) % keys.len();
            store.read(black_box(&keys[i]), &mut out, KeepAlive::Open).unwrap()
        })
    });
    c.bench_function("index/get_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            store.index().get(black_box(&keys[i])).unwrap()
        })
    });
    c.bench_function("index/get_miss", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            store.index().get(black_box(&keys[i][1..])).unwrap()
        })
    });
    drop(store);
    // The smallest cache (16 shards of 64 KiB) holds ~14% of the keys: most
    // reads are an index read, the placement check and packing the answer.
    let (_dir, store, keys) = seeded_store(0);
    c.bench_function("store/read_miss_302", |b| {
        b.iter(|| {
            out.clear();
            i = (i + 7919) % keys.len();
            store.read(black_box(&keys[i]), &mut out, KeepAlive::Open).unwrap()
        })
    });
}

/// What a GET hit adds for metrics: the server's count around the handler
/// (two clock reads, the status and the histogram), the store's hit note,
/// the status line's note and the connection's byte counts.
fn metrics(c: &mut Criterion) {
    metrics::enter_reactor(0);
    c.bench_function("metrics/count one GET hit", |b| {
        b.iter(|| {
            let counted = RequestCount::start(black_box(Method::Get));
            metrics::note_cache_read(CacheRead::Hit);
            metrics::note_status(black_box(302));
            metrics::count_bytes_in(black_box(80));
            metrics::count_bytes_out(black_box(250));
            drop(counted);
        })
    });
}

criterion_group!(benches, http, placement, record, store, metrics);
criterion_main!(benches);
