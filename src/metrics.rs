//! Metrics: what the master is doing, for Prometheus (`--metrics-port`).
//!
//! Counting is per reactor: each reactor thread owns a `ReactorMetrics`
//! (registered once, at its start, in a global list) and is the only writer
//! of its fields. A count is a relaxed load and a relaxed store of an atomic
//! no other core writes, so the hot path takes no lock prefix, shares no
//! cache line with another core's writes and allocates nothing; a scrape
//! sums the reactors (the `Relaxed` reads may miss the last few requests of
//! a reactor still counting, which a monotonic counter tolerates).
//!
//! The server counts around each handler call (method, status, latency,
//! in-flight PUTs); the store notes whether a read hit the cache and times
//! the index; the connection counts bytes. Anything a scrape can read from
//! shared state (cache size, volume health, RocksDB figures, the process)
//! is read at scrape time by the caller and handed to `render` as `Gauges`.
//!
//! `render` writes the Prometheus text format, version 0.0.4
//! (`CONTENT_TYPE`), with `prometheus-client`.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::http::{self, Method};
use crate::side_port;

/// The `Content-Type` of a scrape's answer.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency buckets, in nanoseconds: 10 us to 30 s. A
/// GET hit takes a few microseconds of CPU, a PUT of a large value seconds.
const LATENCY_BOUNDS_NANOS: [u64; 20] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];
/// GET and HEAD requests timed: one in this many. Timing is two clock reads,
/// ~75 ns in this VM, about 1% of a 302's CPU (PERF.md); one in 16 keeps
/// the latency distribution and costs a sixteenth of that. Hits and misses
/// are still counted one by one; every other method is always timed.
const GET_TIMED_ONE_IN: u32 = 16;
/// Buckets per histogram: one per bound and one above the last.
const BUCKETS: usize = LATENCY_BOUNDS_NANOS.len() + 1;

/// Statuses counted by name; any other counts as `STATUS_OTHER`.
const STATUSES: [u16; 23] = [
    200, 201, 204, 206, 302, 304, 307, 400, 403, 404, 405, 409, 411, 412, 413, 414, 416, 500, 501, 502, 503, 504, 507,
];
/// The slot of statuses not in `STATUSES`.
const STATUS_OTHER: usize = STATUSES.len();
/// The methods, in `Method`'s order.
const METHODS: [(Method, &str); 9] = [
    (Method::Get, "GET"),
    (Method::Head, "HEAD"),
    (Method::Put, "PUT"),
    (Method::Delete, "DELETE"),
    (Method::Post, "POST"),
    (Method::Unlink, "UNLINK"),
    (Method::Relink, "RELINK"),
    (Method::Rebalance, "REBALANCE"),
    (Method::Options, "OPTIONS"),
];

/// Add `amount` to a counter only this thread writes: a load and a store,
/// no read-modify-write across cores.
fn bump(counter: &AtomicU64, amount: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(amount), Ordering::Relaxed);
}

/// A latency histogram with fixed buckets, written by one thread.
struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        bump(&self.buckets[bucket], 1);
        bump(&self.sum_nanos, nanos);
    }

    /// Observe `elapsed` if the request was timed.
    fn observe_some(&self, elapsed: Option<Duration>) {
        if let Some(elapsed) = elapsed {
            self.observe(elapsed);
        }
    }

    fn add_to(&self, totals: &mut HistogramTotals) {
        for (total, bucket) in totals.buckets.iter_mut().zip(&self.buckets) {
            *total += bucket.load(Ordering::Relaxed);
        }
        totals.sum_nanos += self.sum_nanos.load(Ordering::Relaxed);
    }
}

/// A histogram summed over reactors.
#[derive(Clone, Debug, Default)]
struct HistogramTotals {
    buckets: [u64; BUCKETS],
    sum_nanos: u64,
}

impl HistogramTotals {
    fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// One reactor's counters; only that reactor's thread writes them. Aligned
/// past a cache line pair so two reactors' counters never share one.
#[repr(align(128))]
struct ReactorMetrics {
    reactor: usize,
    requests: [[AtomicU64; STATUS_OTHER + 1]; METHODS.len()],
    get_hits: Histogram,
    get_misses: Histogram,
    puts: Histogram,
    index_reads: Histogram,
    index_writes: Histogram,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    connections: AtomicU64,
    puts_in_flight: AtomicU64,
    replica_failures: AtomicU64,
}

/// Every reactor's counters, for scrapes. Each entry lives as long as the
/// process (reactors never end but with it), so it is leaked once.
static REACTORS: Mutex<Vec<&'static ReactorMetrics>> = Mutex::new(Vec::new());

/// What the read of the request being handled found in the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheRead {
    /// No read (not a GET, or it failed before the store).
    None,
    Hit,
    Miss,
}

thread_local! {
    /// This thread's counters; `None` outside reactors (maintenance
    /// commands), where counting does nothing.
    static REACTOR: Cell<Option<&'static ReactorMetrics>> = const { Cell::new(None) };
    /// What the current request's read found in the cache.
    static CACHE_READ: Cell<CacheRead> = const { Cell::new(CacheRead::None) };
    /// GET and HEAD requests started on this thread, for `GET_TIMED_ONE_IN`.
    static GETS: Cell<u32> = const { Cell::new(0) };
}

fn with_reactor(count: impl FnOnce(&ReactorMetrics)) {
    if let Some(reactor) = REACTOR.with(Cell::get) {
        count(reactor);
    }
}

/// Register the calling thread as reactor `reactor`; its counts are summed
/// into every scrape from now on.
pub fn enter_reactor(reactor: usize) {
    let metrics: &'static ReactorMetrics = Box::leak(Box::new(ReactorMetrics {
        reactor,
        requests: [const { [const { AtomicU64::new(0) }; STATUS_OTHER + 1] }; METHODS.len()],
        get_hits: Histogram::new(),
        get_misses: Histogram::new(),
        puts: Histogram::new(),
        index_reads: Histogram::new(),
        index_writes: Histogram::new(),
        cache_hits: AtomicU64::new(0),
        cache_misses: AtomicU64::new(0),
        bytes_in: AtomicU64::new(0),
        bytes_out: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        puts_in_flight: AtomicU64::new(0),
        replica_failures: AtomicU64::new(0),
    }));
    REACTORS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(metrics);
    REACTOR.with(|cell| cell.set(Some(metrics)));
}

/// A response with `status` is being written: what `http::write_status_line`
/// notes itself (for callers that write a status line by other means, and
/// the benchmarks).
pub fn note_status(status: u16) {
    http::set_last_status(status);
}

/// The current request's read found its answer in the cache, or not.
pub fn note_cache_read(read: CacheRead) {
    CACHE_READ.with(|cell| cell.set(read));
}

/// Run `request` (the handling of one request of `method`) and count it.
///
/// The status line writer and the store note what they saw in thread-locals
/// of the reactor, which runs many requests: one that awaits (a listing
/// flushing, a PUT reading its body, an S3 GET streaming) lets others write
/// there meanwhile. So each request keeps its own status and cache read,
/// put in the thread-locals before each poll of its future and taken back
/// after: whatever is noted during a poll is the polled request's. Two
/// thread-local writes and reads per poll; no allocation.
pub async fn counted<F: Future>(method: Method, request: F) -> F::Output {
    let count = RequestCount::start(method);
    let mut saved = (0u16, CacheRead::None);
    let mut request = std::pin::pin!(request);
    let output = std::future::poll_fn(|context| {
        http::set_last_status(saved.0);
        CACHE_READ.with(|cell| cell.set(saved.1));
        let poll = request.as_mut().poll(context);
        saved = (http::last_status(), CACHE_READ.with(Cell::get));
        poll
    })
    .await;
    // No await between here and the count: no other request runs.
    http::set_last_status(saved.0);
    CACHE_READ.with(|cell| cell.set(saved.1));
    drop(count);
    output
}

/// A request being handled: counted when dropped, with the status and cache
/// read last noted on this thread (`counted` makes those the request's own).
pub struct RequestCount {
    method: Method,
    /// When it started, if it is timed.
    started: Option<std::time::Instant>,
}

impl RequestCount {
    /// Start counting a request of `method`.
    pub fn start(method: Method) -> RequestCount {
        http::set_last_status(0);
        CACHE_READ.with(|cell| cell.set(CacheRead::None));
        let timed = match method {
            Method::Get | Method::Head => GETS.with(|gets| {
                let count = gets.get().wrapping_add(1);
                gets.set(count);
                count % GET_TIMED_ONE_IN == 0
            }),
            Method::Put => {
                with_reactor(|reactor| bump(&reactor.puts_in_flight, 1));
                true
            }
            _ => true,
        };
        RequestCount {
            method,
            started: timed.then(std::time::Instant::now),
        }
    }
}

impl Drop for RequestCount {
    /// Count the request by method and the status it answered, and its
    /// latency for GET hits, misses and PUTs. On drop, so a request whose
    /// handler panicked still leaves the in-flight gauge.
    fn drop(&mut self) {
        let elapsed = self.started.map(|started| started.elapsed());
        let status = http::last_status();
        let cache_read = CACHE_READ.with(Cell::get);
        let method = self.method;
        with_reactor(|reactor| {
            let slot = STATUSES
                .iter()
                .position(|&known| known == status)
                .unwrap_or(STATUS_OTHER);
            bump(&reactor.requests[method as usize][slot], 1);
            match cache_read {
                CacheRead::Hit => bump(&reactor.cache_hits, 1),
                CacheRead::Miss => bump(&reactor.cache_misses, 1),
                CacheRead::None => {}
            }
            match (method, cache_read) {
                (Method::Get | Method::Head, CacheRead::Hit) => reactor.get_hits.observe_some(elapsed),
                (Method::Get | Method::Head, CacheRead::Miss) => reactor.get_misses.observe_some(elapsed),
                (Method::Put, _) => {
                    reactor.puts.observe_some(elapsed);
                    let in_flight = reactor.puts_in_flight.load(Ordering::Relaxed);
                    reactor
                        .puts_in_flight
                        .store(in_flight.saturating_sub(1), Ordering::Relaxed);
                }
                _ => {}
            }
        });
    }
}

/// Bytes received from clients.
pub fn count_bytes_in(bytes: usize) {
    with_reactor(|reactor| bump(&reactor.bytes_in, bytes as u64));
}

/// Bytes sent to clients.
pub fn count_bytes_out(bytes: usize) {
    with_reactor(|reactor| bump(&reactor.bytes_out, bytes as u64));
}

/// This reactor now holds `open` client connections.
pub fn set_connections(open: usize) {
    with_reactor(|reactor| reactor.connections.store(open as u64, Ordering::Relaxed));
}

/// An index read took `elapsed`.
pub fn observe_index_read(elapsed: Duration) {
    with_reactor(|reactor| reactor.index_reads.observe(elapsed));
}

/// An index write took `elapsed`.
pub fn observe_index_write(elapsed: Duration) {
    with_reactor(|reactor| reactor.index_writes.observe(elapsed));
}

/// A replicated write ended; `volume_failed` when a replica volume failed it.
pub fn count_replica_failure(volume_failed: bool) {
    with_reactor(|reactor| bump(&reactor.replica_failures, u64::from(volume_failed)));
}

/// One volume as a scrape sees it.
#[derive(Clone, Debug)]
pub struct VolumeGauge {
    pub host: String,
    pub up: bool,
    /// How long its last health probe took.
    pub probe: Duration,
}

/// What a scrape reads from shared state; gathered by the caller.
#[derive(Clone, Debug, Default)]
pub struct Gauges {
    pub cache_entries: u64,
    pub cache_bytes: u64,
    pub cache_evictions: u64,
    pub volumes: Vec<VolumeGauge>,
    /// RocksDB's figures: (metric name, help, value).
    pub index: Vec<(&'static str, &'static str, u64)>,
    pub panics_contained: u64,
}

/// Every reactor's counters, summed, with the gauges of one scrape.
#[derive(Debug)]
struct Scrape {
    requests: Vec<(usize, usize, u64)>,
    get_hits: HistogramTotals,
    get_misses: HistogramTotals,
    puts: HistogramTotals,
    index_reads: HistogramTotals,
    index_writes: HistogramTotals,
    cache_hits: u64,
    cache_misses: u64,
    bytes_in: u64,
    bytes_out: u64,
    puts_in_flight: u64,
    replica_failures: u64,
    connections: Vec<(usize, u64)>,
    gauges: Gauges,
    process: Process,
}

impl Scrape {
    fn take(gauges: Gauges) -> Scrape {
        let mut scrape = Scrape {
            requests: Vec::new(),
            get_hits: HistogramTotals::default(),
            get_misses: HistogramTotals::default(),
            puts: HistogramTotals::default(),
            index_reads: HistogramTotals::default(),
            index_writes: HistogramTotals::default(),
            cache_hits: 0,
            cache_misses: 0,
            bytes_in: 0,
            bytes_out: 0,
            puts_in_flight: 0,
            replica_failures: 0,
            connections: Vec::new(),
            gauges,
            process: Process::read(),
        };
        let mut requests = [[0u64; STATUS_OTHER + 1]; METHODS.len()];
        let reactors = REACTORS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for reactor in reactors.iter() {
            for (totals, counters) in requests.iter_mut().zip(&reactor.requests) {
                for (total, counter) in totals.iter_mut().zip(counters) {
                    *total += counter.load(Ordering::Relaxed);
                }
            }
            reactor.get_hits.add_to(&mut scrape.get_hits);
            reactor.get_misses.add_to(&mut scrape.get_misses);
            reactor.puts.add_to(&mut scrape.puts);
            reactor.index_reads.add_to(&mut scrape.index_reads);
            reactor.index_writes.add_to(&mut scrape.index_writes);
            scrape.cache_hits += reactor.cache_hits.load(Ordering::Relaxed);
            scrape.cache_misses += reactor.cache_misses.load(Ordering::Relaxed);
            scrape.bytes_in += reactor.bytes_in.load(Ordering::Relaxed);
            scrape.bytes_out += reactor.bytes_out.load(Ordering::Relaxed);
            // Each reactor's figure is its own starts minus ends, written in
            // order by one thread: never below zero.
            scrape.puts_in_flight += reactor.puts_in_flight.load(Ordering::Relaxed);
            scrape.replica_failures += reactor.replica_failures.load(Ordering::Relaxed);
            let connections = reactor.connections.load(Ordering::Relaxed);
            scrape.connections.push((reactor.reactor, connections));
        }
        scrape.connections.sort_unstable();
        for (method, statuses) in requests.iter().enumerate() {
            for (slot, &count) in statuses.iter().enumerate() {
                if count > 0 {
                    scrape.requests.push((method, slot, count));
                }
            }
        }
        scrape
    }
}

/// The process's resident memory and open descriptors, from /proc.
#[derive(Clone, Copy, Debug, Default)]
struct Process {
    resident_bytes: u64,
    open_fds: u64,
}

impl Process {
    fn read() -> Process {
        // SAFETY: sysconf takes no pointers.
        let page_bytes = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let resident_pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|pages| pages.parse().ok())
            .unwrap_or(0);
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |entries| entries.count() as u64);
        Process {
            resident_bytes: resident_pages * page_bytes,
            open_fds,
        }
    }
}

/// Bytes of a scrape's request head read at most.
const SCRAPE_HEAD_BYTES_MAX: usize = 4096;
/// Scrapes answered at once, each on a thread of its own: a Prometheus
/// server or two scrape every few seconds, and a slot is held only from a
/// complete head to the page written, so this many are far more than
/// scrapers ever need; one more is answered 503.
const SCRAPE_CONNECTIONS_MAX: usize = 64;
/// Connections whose head is still arriving (silent or slow clients): they
/// hold no scrape's slot, and one more closes the oldest of them.
const SCRAPE_WAITING_MAX: usize = 256;

/// Answer scrapes on `listener` forever (the calling thread is the metrics
/// thread): `side_port` reads the heads, so idle or slow clients delay no
/// scrape, and a complete one is answered on a thread of its own, at most
/// `SCRAPE_CONNECTIONS_MAX` at once. `GET /metrics` answers the page with
/// `gather`'s gauges, `HEAD /metrics` its head; anything else 404: nothing
/// here changes data (the maintenance jobs have a port of their own,
/// `admin`). Blocking and on threads of its own, so a scrape takes no
/// reactor's time and no key path of the native API.
pub fn serve_forever(listener: std::net::TcpListener, gather: impl Fn() -> Gauges + Send + Sync + 'static) {
    let limits = side_port::Limits {
        name: "mkv-scrape",
        waiting_max: SCRAPE_WAITING_MAX,
        handling_max: SCRAPE_CONNECTIONS_MAX,
        head_bytes_max: SCRAPE_HEAD_BYTES_MAX,
    };
    let error = side_port::serve_forever(listener, limits, move |request, mut stream| {
        let _ = side_port::answer(&mut stream, &answer_scrape(&request, &gather));
    });
    eprintln!("mkv: the metrics port stopped: {error}");
}

/// The response to one request on the metrics port.
fn answer_scrape(request: &side_port::Request, gather: &impl Fn() -> Gauges) -> Vec<u8> {
    let head_only = request.is_head();
    let text = "text/plain; charset=utf-8";
    match (request.method.as_str(), request.target.as_str()) {
        ("GET" | "HEAD", "/metrics") => {
            side_port::response(head_only, "200 OK", "", CONTENT_TYPE, render(gather()).as_bytes())
        }
        (_, "/metrics") => {
            let why = b"only GET and HEAD /metrics are served here\n";
            side_port::response(head_only, "405 Method Not Allowed", "Allow: GET, HEAD\r\n", text, why)
        }
        _ => {
            let why = b"only GET /metrics is served here (maintenance jobs are on --admin-port)\n";
            side_port::response(head_only, "404 Not Found", "", text, why)
        }
    }
}

/// The metrics page: every reactor's counters summed, with `gauges`, in the
/// Prometheus text format (`CONTENT_TYPE`).
pub fn render(gauges: Gauges) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape::take(gauges)));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        .expect("writing to a String does not fail");
    text
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

fn encode_counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

fn encode_gauge<T>(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: T) -> Result<(), std::fmt::Error>
where
    ConstGauge<T>: EncodeMetric,
{
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// One histogram family with a `kind` label per histogram.
fn encode_histograms(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    histograms: &[(&str, &HistogramTotals)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (kind, totals) in histograms {
        let mut buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_NANOS
            .iter()
            .zip(&totals.buckets)
            .map(|(&bound, &count)| (seconds(bound), count))
            .collect();
        buckets.push((f64::INFINITY, totals.buckets[BUCKETS - 1]));
        let labels = [("kind", *kind)];
        family
            .encode_family(&labels.as_slice())?
            .encode_histogram::<NoLabelSet>(seconds(totals.sum_nanos), totals.count(), &buckets, None)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_requests(&mut encoder)?;
        self.encode_cache(&mut encoder)?;
        self.encode_volumes(&mut encoder)?;
        self.encode_index(&mut encoder)?;
        self.encode_process(&mut encoder)
    }
}

impl Scrape {
    fn encode_requests(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "mkv_requests",
            "Requests answered, by method and status.",
            None,
            MetricType::Counter,
        )?;
        for &(method, slot, count) in &self.requests {
            let status = STATUSES.get(slot).map_or_else(|| "other".to_string(), u16::to_string);
            let labels = [("method", METHODS[method].1.to_string()), ("status", status)];
            ConstCounter::new(count).encode(family.encode_family(&labels.as_slice())?)?;
        }
        encode_histograms(
            encoder,
            "mkv_request_duration_seconds",
            "Time from a parsed request head to its answer, by kind: GET/HEAD hits and misses of the cache (one GET/HEAD in 16 timed), PUTs.",
            &[
                ("get_hit", &self.get_hits),
                ("get_miss", &self.get_misses),
                ("put", &self.puts),
            ],
        )?;
        encode_counter(
            encoder,
            "mkv_received_bytes",
            "Bytes received from clients.",
            self.bytes_in,
        )?;
        encode_counter(encoder, "mkv_sent_bytes", "Bytes sent to clients.", self.bytes_out)?;
        encode_gauge(
            encoder,
            "mkv_puts_in_flight",
            "PUTs being handled.",
            self.puts_in_flight as i64,
        )?;
        encode_counter(
            encoder,
            "mkv_replica_write_failures",
            "Replicated writes (PUTs, copies) that a replica volume failed.",
            self.replica_failures,
        )?;
        let mut family = encoder.encode_descriptor(
            "mkv_connections",
            "Open client connections, by reactor.",
            None,
            MetricType::Gauge,
        )?;
        for &(reactor, open) in &self.connections {
            let labels = [("reactor", reactor.to_string())];
            ConstGauge::new(open as i64).encode(family.encode_family(&labels.as_slice())?)?;
        }
        encode_counter(
            encoder,
            "mkv_panics_contained",
            "Panics in request handling confined to their connection.",
            self.gauges.panics_contained,
        )
    }

    fn encode_cache(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (hits, misses) = (self.cache_hits, self.cache_misses);
        encode_counter(
            encoder,
            "mkv_cache_hits",
            "GET/HEAD answered from the record cache.",
            hits,
        )?;
        encode_counter(encoder, "mkv_cache_misses", "GET/HEAD that read the index.", misses)?;
        encode_counter(
            encoder,
            "mkv_cache_evictions",
            "Entries evicted from the record cache for room.",
            self.gauges.cache_evictions,
        )?;
        encode_gauge(
            encoder,
            "mkv_cache_entries",
            "Entries in the record cache.",
            self.gauges.cache_entries as i64,
        )?;
        encode_gauge(
            encoder,
            "mkv_cache_bytes",
            "Bytes charged to the record cache.",
            self.gauges.cache_bytes as i64,
        )
    }

    fn encode_volumes(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "mkv_volume_up",
            "Whether the volume's last health probe succeeded.",
            None,
            MetricType::Gauge,
        )?;
        for volume in &self.gauges.volumes {
            let labels = [("volume", volume.host.as_str())];
            ConstGauge::new(i64::from(volume.up)).encode(family.encode_family(&labels.as_slice())?)?;
        }
        let mut family = encoder.encode_descriptor(
            "mkv_volume_probe_seconds",
            "How long the volume's last health probe took.",
            None,
            MetricType::Gauge,
        )?;
        for volume in &self.gauges.volumes {
            let labels = [("volume", volume.host.as_str())];
            ConstGauge::new(volume.probe.as_secs_f64()).encode(family.encode_family(&labels.as_slice())?)?;
        }
        Ok(())
    }

    fn encode_index(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_histograms(
            encoder,
            "mkv_index_duration_seconds",
            "Index (RocksDB) point reads on cache misses and record writes.",
            &[("read", &self.index_reads), ("write", &self.index_writes)],
        )?;
        for &(name, help, value) in &self.gauges.index {
            encode_gauge(encoder, name, help, value as i64)?;
        }
        Ok(())
    }

    fn encode_process(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_gauge(
            encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            self.process.resident_bytes as i64,
        )?;
        encode_gauge(
            encoder,
            "process_open_fds",
            "Number of open file descriptors.",
            self.process.open_fds as i64,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_lands_in_the_first_bucket_whose_bound_it_does_not_pass() {
        let histogram = Histogram::new();
        histogram.observe(Duration::from_micros(10));
        histogram.observe(Duration::from_micros(11));
        histogram.observe(Duration::from_secs(60));
        let mut totals = HistogramTotals::default();
        histogram.add_to(&mut totals);
        assert_eq!(totals.buckets[0], 1);
        assert_eq!(totals.buckets[1], 1);
        assert_eq!(totals.buckets[BUCKETS - 1], 1);
        assert_eq!(totals.count(), 3);
    }

    #[test]
    fn every_get_is_counted_one_in_16_timed_every_put_timed() {
        std::thread::spawn(|| {
            enter_reactor(usize::MAX);
            for _ in 0..2 * GET_TIMED_ONE_IN {
                let counted = RequestCount::start(Method::Get);
                note_cache_read(CacheRead::Hit);
                note_status(302);
                drop(counted);
            }
            for _ in 0..3 {
                let counted = RequestCount::start(Method::Put);
                note_status(201);
                drop(counted);
            }
            let reactor = REACTOR.with(Cell::get).unwrap();
            let (mut hits, mut puts) = (HistogramTotals::default(), HistogramTotals::default());
            reactor.get_hits.add_to(&mut hits);
            reactor.puts.add_to(&mut puts);
            assert_eq!(hits.count(), 2);
            assert_eq!(puts.count(), 3);
            assert_eq!(
                reactor.cache_hits.load(Ordering::Relaxed),
                u64::from(2 * GET_TIMED_ONE_IN)
            );
            let slot = STATUSES.iter().position(|&status| status == 302).unwrap();
            let gets = reactor.requests[Method::Get as usize][slot].load(Ordering::Relaxed);
            assert_eq!(gets, u64::from(2 * GET_TIMED_ONE_IN));
            assert_eq!(reactor.puts_in_flight.load(Ordering::Relaxed), 0);
        })
        .join()
        .unwrap();
    }
}
