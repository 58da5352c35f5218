//! Command line: the original master's flags, in Go style (`-db x`,
//! `-md5sum=false`) and in GNU style (`--db x`), plus mkv's own.
//!
//! `Config` is the validated result the rest of the program reads; parsing
//! never panics, every mistake is a message for the operator.

use std::fmt;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

/// The most volume servers one master addresses (volume indexes are `u16`).
pub const VOLUMES_MAX: usize = 4096;
/// The most replicas of one value.
pub const REPLICAS_MAX: usize = 16;
/// The most subvolume directories per volume server (`sv00`..`svFF`).
pub const SUBVOLUMES_MAX: u32 = 256;
/// The most reactor threads.
pub const THREADS_MAX: usize = 256;
/// The most rebuild/rebalance requests in flight: each rebalance in flight
/// may hold a 1 MiB piece per new copy.
pub const CONCURRENCY_MAX: usize = 1024;
/// Default for `--orphan-grace`: a file younger than this may be a PUT (or
/// a rebalance copy) whose record is not written yet, so it is no orphan.
/// An hour is far beyond any PUT's life under the body timeouts.
const ORPHAN_GRACE_DEFAULT: &str = "1h";
/// Default for `--body-timeout`: a body read that makes no progress for this
/// long fails the request (and the same time is the body's grace allowance,
/// see `BodyLimits`).
const BODY_TIMEOUT_DEFAULT: &str = "30s";
/// Default for `--body-rate-min`, in bytes per second: 64 KiB/s (512 kbit/s)
/// is far below any link a blob store's clients write over, so no honest
/// upload fails, while a client that trickles a body has to send ~2 GiB to
/// hold a key's lock and a piece buffer for an hour instead of one byte
/// every 29 seconds.
const BODY_RATE_MIN_DEFAULT_BYTES_PER_SECOND: u64 = 64 * 1024;
/// Default for `--shutdown-timeout`: long enough for a PUT of a few GiB at
/// the speeds volumes write, short enough for a supervisor's stop timeout
/// (systemd's default is 90 s).
const SHUTDOWN_TIMEOUT_DEFAULT: &str = "30s";
/// A verify whose `--orphan-grace` (with `--repair`) or `--purge-unlinked`
/// is shorter than this deletes files and values that may belong to writes
/// still in flight or just undone, so it runs only with
/// `--confirm-short-grace` (or `confirm-short-grace=true` on the admin
/// port): a minute is longer than any PUT's stall under the body timeouts.
pub const SHORT_GRACE_MAX: Duration = Duration::from_secs(60);

/// `--health-interval`: a probe round at least every hour; more often than
/// every 10 ms is a busy loop of HEADs (at 0 it spun a core).
pub const HEALTH_INTERVAL_RANGE: RangeInclusive<Duration> = Duration::from_millis(10)..=Duration::from_secs(3600);
/// `-voltimeout`: a volume answers a connect in under 10 minutes or is down;
/// under 10 ms no real network answers.
pub const VOLUME_TIMEOUT_RANGE: RangeInclusive<Duration> = Duration::from_millis(10)..=Duration::from_secs(600);
/// `--body-timeout`: a body read stalls at most an hour; under 100 ms an
/// honest client's scheduling hiccup fails its PUT.
pub const BODY_TIMEOUT_RANGE: RangeInclusive<Duration> = Duration::from_millis(100)..=Duration::from_secs(3600);
/// `--shutdown-timeout`: 0 cuts requests in flight at once; an hour is
/// past any supervisor's patience.
pub const SHUTDOWN_TIMEOUT_RANGE: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(3600);
/// `--orphan-grace`, `--purge-unlinked`: up to ten years (beyond that the
/// date arithmetic is all a longer grace would buy).
pub const GRACE_RANGE: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(10 * 365 * 24 * 3600);
/// `--s3-upload-expiry` (0 is never, outside the range): at least a second
/// (the expiry sweep runs as often as the expiry lasts, and under a second
/// it spun), at most ten years.
pub const S3_UPLOAD_EXPIRY_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(10 * 365 * 24 * 3600);
/// `--concurrency`: at least one request in flight, at most `CONCURRENCY_MAX`.
pub const CONCURRENCY_RANGE: RangeInclusive<usize> = 1..=CONCURRENCY_MAX;
/// `--coherence-ms`: 0 (no record cache) to 10 minutes.
pub const COHERENCE_MS_RANGE: RangeInclusive<u64> = 0..=600_000;
/// `--cache-mb`, `--block-cache-mb`: up to 1 TiB.
pub const CACHE_MB_RANGE: RangeInclusive<usize> = 0..=(1 << 20);
/// `--body-rate-min`: 0 (off) to 10 GiB/s.
pub const BODY_RATE_MIN_RANGE: RangeInclusive<u64> = 0..=(10 << 30);
/// `seed --count`: up to ten billion keys.
pub const SEED_COUNT_RANGE: RangeInclusive<u64> = 0..=10_000_000_000;

/// What to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Command {
    /// Serve the HTTP API.
    Server,
    /// Empty the index and refill it from what the volumes hold.
    Rebuild,
    /// Move values to the volumes placement chooses for them now.
    Rebalance,
    /// Check every replica of every live key, find orphan files; with
    /// --repair, restore bad replicas from good ones and remove orphans.
    Verify,
    /// Write live records for synthetic keys straight into the index
    /// (benchmarks: a GET never touches the volumes).
    Seed,
}

/// `--coherence-ms`: longer than a tuned Patroni failover (6 s measured,
/// RELIABILITY.md), so cache hits answer through one; a stale answer past a
/// DELETE is a redirect to bytes that are gone (the volume's 404), never
/// to other bytes.
const COHERENCE_MS_DEFAULT: u64 = 10_000;

#[derive(Parser, Debug)]
#[command(name = "mkv", version, about = "A fast master server for minikeyvalue")]
struct Args {
    /// What to run.
    #[arg(value_enum)]
    command: Command,
    /// The index: a directory (RocksDB, the default: one master), or a
    /// PostgreSQL URL (`postgres://user@host1:5432,host2:5432/mkv`: many
    /// masters over one replicated index).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Volume servers, host:port, comma separated.
    #[arg(long)]
    volumes: Option<String>,
    /// Listen port.
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// A second port where every request is S3 (for anonymous S3 clients,
    /// whose requests carry nothing that tells them from native ones). S3
    /// requests on --port are recognised by their AWS headers and queries.
    #[arg(long = "s3-port")]
    s3_port: Option<u16>,
    /// Address --port binds to. The native API has no authentication (as
    /// the original's): bind it where only trusted clients reach it.
    #[arg(long = "bind", default_value = "0.0.0.0")]
    bind: std::net::IpAddr,
    /// Address --s3-port binds to (default: --bind's), so that S3, with
    /// --s3-auth, may face clients the native API must not.
    #[arg(long = "s3-bind")]
    s3_bind: Option<std::net::IpAddr>,
    /// S3 access control: a TOML file of access keys, their secrets and
    /// what each may do in which bucket (README.md, "S3 access control");
    /// reloaded on SIGHUP. With neither it nor MKV_S3_ACCESS_KEY and
    /// MKV_S3_SECRET_KEY, S3 is open to every client, as the original's.
    #[arg(long = "s3-auth")]
    s3_auth: Option<PathBuf>,
    /// Serve Prometheus metrics (`GET /metrics`) on this port; off when
    /// absent. Read-only: nothing on it changes data.
    #[arg(long = "metrics-port")]
    metrics_port: Option<u16>,
    /// Address the metrics port binds to: loopback unless told otherwise.
    #[arg(long = "metrics-bind", default_value = "127.0.0.1")]
    metrics_bind: std::net::IpAddr,
    /// Serve the maintenance jobs (`POST /admin/rebalance`, `/admin/verify`)
    /// on this port, to requests that carry the token of --admin-token-file;
    /// off when absent. `mkv rebalance`/`verify` with the index locked send
    /// their job here.
    #[arg(long = "admin-port")]
    admin_port: Option<u16>,
    /// Address the admin port binds to: loopback unless told otherwise.
    #[arg(long = "admin-bind", default_value = "127.0.0.1")]
    admin_bind: std::net::IpAddr,
    /// The admin port's token: the master reads it at start (creating the
    /// file, mode 0600, with a random token when it does not exist) and
    /// `mkv rebalance`/`verify` read it to send their job.
    #[arg(long = "admin-token-file")]
    admin_token_file: Option<PathBuf>,
    /// On SIGTERM or SIGINT, how long requests in flight may take to finish
    /// before the master exits anyway (Go duration).
    #[arg(long = "shutdown-timeout", default_value = SHUTDOWN_TIMEOUT_DEFAULT, value_parser = parse_duration)]
    shutdown_timeout: Duration,
    /// Copies of each value.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Directories (disks) per volume server.
    #[arg(long, default_value_t = 10)]
    subvolumes: u32,
    /// Where to redirect keys the index lacks (host:port).
    #[arg(long)]
    fallback: Option<String>,
    /// DELETE needs UNLINK first.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value_t = false)]
    protect: bool,
    /// Compute and store the md5 of values.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value_t = true)]
    md5sum: bool,
    /// A volume that does not answer in this time counts as down (Go duration: 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    voltimeout: Duration,
    /// Log every request.
    #[arg(short = 'v', long = "verbose", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value_t = false)]
    verbose: bool,
    /// Reactor threads, one listener each (default: number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// HEAD the value on a volume before every redirect (the original's behaviour).
    #[arg(long = "verify-get", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value_t = false)]
    verify_get: bool,
    /// fsync the index on every write (survives power loss, not just a crash).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value_t = false)]
    sync: bool,
    /// Memory for the in-process record cache, in MiB, shared by all reactors.
    #[arg(long = "cache-mb", default_value_t = 256)]
    cache_mb: usize,
    /// Memory for RocksDB's block cache, in MiB; 0 (the default) turns it off:
    /// the record cache holds hot keys far more densely, and the OS page
    /// cache already holds the index's blocks.
    #[arg(long = "block-cache-mb", default_value_t = 0)]
    block_cache_mb: usize,
    /// With a PostgreSQL index: a cached record is served only while every
    /// other master's change up to this many milliseconds ago is known to
    /// this master (normally within milliseconds; the bound holds when
    /// notifications stop, as in a failover, during which cache hits go on
    /// answering this long); past that, reads go to the index. 0: no record
    /// cache (every GET reads the index: strict read-after-delete across
    /// masters).
    #[arg(long = "coherence-ms", default_value_t = COHERENCE_MS_DEFAULT)]
    coherence_ms: u64,
    /// How often the background health check probes every volume (Go duration).
    #[arg(long = "health-interval", default_value = "1s", value_parser = parse_duration)]
    health_interval: Duration,
    /// S3 multipart uploads neither completed nor aborted this long after
    /// they began are aborted, their parts deleted (Go duration; 0s: never).
    #[arg(long = "s3-upload-expiry", default_value = "168h", value_parser = parse_duration)]
    s3_upload_expiry: Duration,
    /// A request body read that makes no progress for this long fails the
    /// request with 408 (Go duration). It is also the body's grace allowance
    /// for the minimum rate (--body-rate-min).
    #[arg(long = "body-timeout", default_value = BODY_TIMEOUT_DEFAULT, value_parser = parse_duration)]
    body_timeout: Duration,
    /// Slowest average a request body may arrive at, in bytes per second, after
    /// the grace of --body-timeout: a body of n bytes must have arrived within
    /// body-timeout + n / body-rate-min of waiting on the client, or the
    /// request fails with 408. 0 turns the rate check off.
    #[arg(long = "body-rate-min", default_value_t = BODY_RATE_MIN_DEFAULT_BYTES_PER_SECOND)]
    body_rate_min: u64,
    /// rebuild/rebalance/verify: requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// rebuild: read every value back and store its md5. verify: read every
    /// copy back and compare it with the recorded md5.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value_t = false)]
    md5: bool,
    /// rebuild: go on when a volume does not answer (its copies are left out of the index).
    #[arg(long = "allow-down-volumes", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value_t = false)]
    allow_down_volumes: bool,
    /// rebalance: print what would move, change nothing.
    #[arg(long = "dry-run", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value_t = false)]
    dry_run: bool,
    /// verify: restore missing, short or corrupt replicas from a good copy,
    /// and delete orphan files.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value_t = false)]
    repair: bool,
    /// verify: a file no record names is an orphan only once it is older
    /// than this (Go duration), so writes in flight are left alone.
    #[arg(long = "orphan-grace", default_value = ORPHAN_GRACE_DEFAULT, value_parser = parse_duration)]
    orphan_grace: Duration,
    /// verify: hard-delete soft-deleted (UNLINKed) keys written longer ago
    /// than this (Go duration): their copies, then their records.
    #[arg(long = "purge-unlinked", value_parser = parse_duration)]
    purge_unlinked: Option<Duration>,
    /// verify: allow an --orphan-grace (with --repair) or --purge-unlinked
    /// shorter than a minute, which may delete what writes in flight hold.
    #[arg(long = "confirm-short-grace", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value_t = false)]
    confirm_short_grace: bool,
    /// verify: with --repair, delete orphans even when the index holds no
    /// live record (else refused: an empty index takes every file for one).
    #[arg(long = "confirm-empty-index", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value_t = false)]
    confirm_empty_index: bool,
    /// seed: how many keys.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// seed: key prefix; key i is PREFIX + i.
    #[arg(long, default_value = "/bench/key-")]
    prefix: String,
}

// Booleans take their value only after `=` (`-md5sum=false`), as Go's flag
// package does, so `-v server` never reads `server` as the value of `-v`.

/// Validated settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub command: Command,
    pub db: PathBuf,
    pub volumes: Vec<String>,
    pub port: u16,
    pub s3_port: Option<u16>,
    pub bind: std::net::IpAddr,
    pub s3_bind: std::net::IpAddr,
    pub s3_auth: Option<PathBuf>,
    pub metrics_port: Option<u16>,
    pub metrics_bind: std::net::IpAddr,
    pub admin_port: Option<u16>,
    pub admin_bind: std::net::IpAddr,
    pub admin_token_file: Option<PathBuf>,
    pub shutdown_timeout: Duration,
    pub replicas: usize,
    pub subvolumes: u32,
    pub fallback: Option<String>,
    pub protect: bool,
    pub md5sum: bool,
    pub volume_timeout: Duration,
    pub verbose: bool,
    pub threads: usize,
    pub verify_get: bool,
    pub sync: bool,
    pub cache_bytes: usize,
    pub block_cache_bytes: usize,
    pub coherence: Duration,
    pub health_interval: Duration,
    pub s3_upload_expiry: Duration,
    pub body_limits: BodyLimits,
    pub concurrency: usize,
    pub md5: bool,
    pub allow_down_volumes: bool,
    pub dry_run: bool,
    pub repair: bool,
    pub orphan_grace: Duration,
    pub purge_unlinked: Option<Duration>,
    pub confirm_short_grace: bool,
    pub confirm_empty_index: bool,
    pub seed_count: u64,
    pub seed_prefix: String,
}

/// How long the master waits for a request body.
///
/// A body must keep arriving: no read may wait longer than `read_timeout`,
/// and the time spent waiting on the client for a body of n bytes so far may
/// not pass `read_timeout + n / rate_min_bytes_per_second` (the first term
/// is a grace allowance: a body may start late or stall once). A client that
/// sends a byte now and then so holds a key's lock and a piece buffer only
/// for about `read_timeout`, not for as long as it likes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimits {
    pub read_timeout: Duration,
    /// 0: no minimum rate, only the per-read timeout.
    pub rate_min_bytes_per_second: u64,
}

/// A command line that cannot run.
#[derive(Debug)]
pub enum ConfigError {
    /// clap's own message (includes --help and --version output).
    Usage(clap::Error),
    /// A flag value that parsed but makes no sense.
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Usage(error) => write!(formatter, "{error}"),
            ConfigError::Invalid(message) => write!(formatter, "{message}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Flags of more than one letter that the original spells with one dash.
const LONG_FLAGS: &[&str] = &[
    "db",
    "coherence-ms",
    "volumes",
    "port",
    "s3-port",
    "bind",
    "s3-bind",
    "s3-auth",
    "metrics-port",
    "metrics-bind",
    "admin-port",
    "admin-bind",
    "admin-token-file",
    "shutdown-timeout",
    "replicas",
    "subvolumes",
    "fallback",
    "protect",
    "md5sum",
    "voltimeout",
    "threads",
    "verify-get",
    "sync",
    "cache-mb",
    "block-cache-mb",
    "health-interval",
    "s3-upload-expiry",
    "body-timeout",
    "body-rate-min",
    "concurrency",
    "md5",
    "dry-run",
    "repair",
    "orphan-grace",
    "purge-unlinked",
    "confirm-short-grace",
    "confirm-empty-index",
    "count",
    "prefix",
];

/// Rewrite Go-style `-flag` into `--flag` so clap reads both spellings.
pub fn normalize_args<I: IntoIterator<Item = String>>(args: I) -> Vec<String> {
    args.into_iter()
        .map(|arg| {
            let Some(body) = arg.strip_prefix('-') else { return arg };
            if body.starts_with('-') {
                return arg;
            }
            let name = body.split_once('=').map_or(body, |(name, _)| name);
            if LONG_FLAGS.contains(&name) {
                format!("-{arg}")
            } else {
                arg
            }
        })
        .collect()
}

/// Parse and validate a command line (`args[0]` is the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Config, ConfigError> {
    let args = Args::try_parse_from(normalize_args(args)).map_err(ConfigError::Usage)?;
    validate(args)
}

fn validate(args: Args) -> Result<Config, ConfigError> {
    let invalid = |message: String| Err(ConfigError::Invalid(message));
    let Some(db) = args.db else {
        return invalid("missing -db PATH: the index directory is required".into());
    };
    let volumes: Vec<String> = match &args.volumes {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|volume| !volume.is_empty())
            .map(str::to_owned)
            .collect(),
        None => return invalid("missing -volumes host:port,...: at least one volume server is required".into()),
    };
    if volumes.is_empty() {
        return invalid("-volumes lists no volume servers".into());
    }
    if volumes.len() > VOLUMES_MAX {
        return invalid(format!(
            "-volumes lists {} servers, the most is {VOLUMES_MAX}",
            volumes.len()
        ));
    }
    if let Some(bad) = volumes
        .iter()
        .find(|volume| volume.contains('/') || !volume.contains(':'))
    {
        return invalid(format!("-volumes entry {bad:?} is not host:port"));
    }
    if let Some((first, second)) = duplicate_volume(&volumes) {
        return invalid(format!(
            "-volumes names one server more than once ({first:?} and {second:?}): \
             two replicas on one server are one copy"
        ));
    }
    if args.replicas == 0 || args.replicas > REPLICAS_MAX {
        return invalid(format!("-replicas must be 1..={REPLICAS_MAX}, got {}", args.replicas));
    }
    if volumes.len() < args.replicas {
        return invalid(format!(
            "-replicas {} needs at least that many volumes, -volumes lists {}",
            args.replicas,
            volumes.len()
        ));
    }
    if args.subvolumes == 0 || args.subvolumes > SUBVOLUMES_MAX {
        return invalid(format!(
            "-subvolumes must be 1..={SUBVOLUMES_MAX}, got {}",
            args.subvolumes
        ));
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 || threads > THREADS_MAX {
        return invalid(format!("--threads must be 1..={THREADS_MAX}, got {threads}"));
    }
    check_range("-voltimeout", args.voltimeout, &VOLUME_TIMEOUT_RANGE)?;
    check_range("--health-interval", args.health_interval, &HEALTH_INTERVAL_RANGE)?;
    check_range("--body-timeout", args.body_timeout, &BODY_TIMEOUT_RANGE)?;
    check_range("--shutdown-timeout", args.shutdown_timeout, &SHUTDOWN_TIMEOUT_RANGE)?;
    if !args.s3_upload_expiry.is_zero() {
        check_range("--s3-upload-expiry", args.s3_upload_expiry, &S3_UPLOAD_EXPIRY_RANGE)?;
    }
    check_range("--orphan-grace", args.orphan_grace, &GRACE_RANGE)?;
    if let Some(purge_unlinked) = args.purge_unlinked {
        check_range("--purge-unlinked", purge_unlinked, &GRACE_RANGE)?;
    }
    check_range("--coherence-ms", args.coherence_ms, &COHERENCE_MS_RANGE)?;
    check_range("--cache-mb", args.cache_mb, &CACHE_MB_RANGE)?;
    check_range("--block-cache-mb", args.block_cache_mb, &CACHE_MB_RANGE)?;
    check_range("--body-rate-min", args.body_rate_min, &BODY_RATE_MIN_RANGE)?;
    check_range("--count", args.count, &SEED_COUNT_RANGE)?;
    if args.s3_port == Some(args.port) {
        return invalid(format!(
            "--s3-port {} is -port too: the S3 port must be another",
            args.port
        ));
    }
    if let Some(metrics_port) = args
        .metrics_port
        .filter(|&port| port == args.port || Some(port) == args.s3_port)
    {
        return invalid(format!(
            "--metrics-port {metrics_port} is a serving port too: the metrics port must be another"
        ));
    }
    if let Some(admin_port) = args
        .admin_port
        .filter(|&port| port == args.port || Some(port) == args.s3_port || Some(port) == args.metrics_port)
    {
        return invalid(format!(
            "--admin-port {admin_port} is another port of this master: the admin port must be its own"
        ));
    }
    if args.admin_port.is_some() && args.admin_token_file.is_none() {
        return invalid(
            "--admin-port needs --admin-token-file PATH: the token its requests must carry (the master \
             creates the file when it does not exist)"
                .into(),
        );
    }
    if args.command == Command::Verify {
        if let Some(refusal) = short_grace_refusal(
            args.repair,
            args.orphan_grace,
            args.purge_unlinked,
            args.confirm_short_grace,
        ) {
            return invalid(format!("{refusal}; pass --confirm-short-grace if that is meant"));
        }
    }
    check_range("--concurrency", args.concurrency, &CONCURRENCY_RANGE)?;
    Ok(Config {
        command: args.command,
        db,
        volumes,
        port: args.port,
        s3_port: args.s3_port,
        bind: args.bind,
        s3_bind: args.s3_bind.unwrap_or(args.bind),
        s3_auth: args.s3_auth,
        metrics_port: args.metrics_port,
        metrics_bind: args.metrics_bind,
        admin_port: args.admin_port,
        admin_bind: args.admin_bind,
        admin_token_file: args.admin_token_file,
        shutdown_timeout: args.shutdown_timeout,
        replicas: args.replicas,
        subvolumes: args.subvolumes,
        fallback: args.fallback,
        protect: args.protect,
        md5sum: args.md5sum,
        volume_timeout: args.voltimeout,
        verbose: args.verbose,
        threads,
        verify_get: args.verify_get,
        sync: args.sync,
        cache_bytes: args.cache_mb.saturating_mul(1 << 20),
        block_cache_bytes: args.block_cache_mb.saturating_mul(1 << 20),
        coherence: Duration::from_millis(args.coherence_ms),
        health_interval: args.health_interval,
        s3_upload_expiry: args.s3_upload_expiry,
        body_limits: BodyLimits {
            read_timeout: args.body_timeout,
            rate_min_bytes_per_second: args.body_rate_min,
        },
        concurrency: args.concurrency,
        md5: args.md5,
        allow_down_volumes: args.allow_down_volumes,
        dry_run: args.dry_run,
        repair: args.repair,
        orphan_grace: args.orphan_grace,
        purge_unlinked: args.purge_unlinked,
        confirm_short_grace: args.confirm_short_grace,
        confirm_empty_index: args.confirm_empty_index,
        seed_count: args.count,
        seed_prefix: args.prefix,
    })
}

/// `Ok` when `value` of `flag` lies in `range`, else the message saying so.
fn check_range<T: PartialOrd + fmt::Debug>(flag: &str, value: T, range: &RangeInclusive<T>) -> Result<(), ConfigError> {
    in_range(flag, value, range).map(drop).map_err(ConfigError::Invalid)
}

/// `value` of `option` when it lies in `range`, else the message saying
/// so: the one check of a flag's range, which the admin port's options
/// (`admin`) go through too.
pub fn in_range<T: PartialOrd + fmt::Debug>(option: &str, value: T, range: &RangeInclusive<T>) -> Result<T, String> {
    if range.contains(&value) {
        return Ok(value);
    }
    Err(format!(
        "{option} must be {:?}..={:?}, got {value:?}",
        range.start(),
        range.end()
    ))
}

/// Why a verify with these settings needs a confirmation it was not given
/// (`confirmed`): an orphan grace (when repairing) or a purge threshold
/// under `SHORT_GRACE_MAX` deletes what writes in flight may hold.
pub fn short_grace_refusal(
    repair: bool,
    orphan_grace: Duration,
    purge_unlinked: Option<Duration>,
    confirmed: bool,
) -> Option<String> {
    if confirmed {
        return None;
    }
    let limit = SHORT_GRACE_MAX.as_secs();
    if repair && orphan_grace < SHORT_GRACE_MAX {
        return Some(format!(
            "orphan-grace {orphan_grace:?} with repair deletes files younger than {limit}s, which writes in flight may hold"
        ));
    }
    match purge_unlinked {
        Some(older_than) if older_than < SHORT_GRACE_MAX => Some(format!(
            "purge-unlinked {older_than:?} hard-deletes values unlinked less than {limit}s ago"
        )),
        _ => None,
    }
}

/// Two entries of `volumes` that name the same server, spelled alike or not:
/// host names compare without case and without a trailing dot, ports as
/// numbers (`Host:080` is `host:80`). Names that only resolve alike
/// (`localhost` and `127.0.0.1`) are not caught: that needs DNS.
fn duplicate_volume(volumes: &[String]) -> Option<(&str, &str)> {
    let canonical = |volume: &str| {
        let (host, port) = volume.rsplit_once(':')?;
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        Some((host, port.parse::<u16>().ok()?))
    };
    let mut seen = std::collections::HashMap::new();
    for volume in volumes {
        let key = canonical(volume).unwrap_or_else(|| (volume.clone(), 0));
        if let Some(first) = seen.insert(key, volume.as_str()) {
            return Some((first, volume.as_str()));
        }
    }
    None
}

/// Parse a Go duration: a number with a unit (`ns`, `us`, `ms`, `s`, `m`, `h`),
/// possibly several (`1m30s`) and fractional (`1.5s`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let error = || format!("{text:?} is not a duration like 1s, 500ms or 1m30s");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(error());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(error)?;
        let number: f64 = rest[..number_end].parse().map_err(|_| error())?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(error()),
        };
        total += number * seconds_per_unit;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| error())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<String> {
        std::iter::once("mkv")
            .chain(line.split_whitespace())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn go_and_gnu_spellings_agree() {
        let go = parse(argv(
            "-db /tmp/x -volumes a:1,b:2,c:3 -md5sum=false -protect -voltimeout=2s -v server",
        ))
        .unwrap();
        let gnu = parse(argv(
            "--db /tmp/x --volumes a:1,b:2,c:3 --md5sum=false --protect --voltimeout 2s -v server",
        ))
        .unwrap();
        for config in [go, gnu] {
            assert_eq!(config.volumes, ["a:1", "b:2", "c:3"]);
            assert!(!config.md5sum);
            assert!(config.protect);
            assert!(config.verbose);
            assert_eq!(config.volume_timeout, Duration::from_secs(2));
            assert_eq!(config.command, Command::Server);
        }
    }

    #[test]
    fn defaults_match_original() {
        let config = parse(argv("-db /tmp/x -volumes a:1,b:2,c:3 server")).unwrap();
        assert_eq!(config.port, 3000);
        assert_eq!(config.replicas, 3);
        assert_eq!(config.subvolumes, 10);
        assert!(config.md5sum && !config.protect && config.fallback.is_none());
        assert_eq!(config.volume_timeout, Duration::from_secs(1));
        assert_eq!(
            config.body_limits,
            BodyLimits {
                read_timeout: Duration::from_secs(30),
                rate_min_bytes_per_second: 64 * 1024,
            }
        );
    }

    #[test]
    fn body_limits_from_flags() {
        let config = parse(argv(
            "-db /tmp/x -volumes a:1 -replicas 1 -body-timeout 1s --body-rate-min 100 server",
        ))
        .unwrap();
        assert_eq!(config.body_limits.read_timeout, Duration::from_secs(1));
        assert_eq!(config.body_limits.rate_min_bytes_per_second, 100);
        assert!(matches!(
            parse(argv("-db x -volumes a:1 -replicas 1 --body-timeout 0s server")),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn startup_mistakes_are_messages() {
        for line in [
            "-volumes a:1 server",
            "-db x server",
            "-db x -volumes a:1,b:2 server",
            "-db x -volumes a:1 -replicas 0 server",
        ] {
            assert!(matches!(parse(argv(line)), Err(ConfigError::Invalid(_))), "{line}");
        }
        assert!(matches!(
            parse(argv("-db x -volumes a:1 serve")),
            Err(ConfigError::Usage(_))
        ));
    }

    #[test]
    fn a_volume_named_twice_is_refused() {
        for volumes in [
            "a:1,a:1,b:2",
            "a:1,b:2,A:1",
            "a:1,b:2,a.:1",
            "a:01,b:2,a:1",
            "[::1]:80,b:2,[::1]:080",
        ] {
            let line = format!("-db x -volumes {volumes} -replicas 2 server");
            match parse(argv(&line)) {
                Err(ConfigError::Invalid(message)) => assert!(message.contains("more than once"), "{message}"),
                other => panic!("{volumes}: {other:?}"),
            }
        }
        let distinct = parse(argv("-db x -volumes a:1,a:2,b:1 -replicas 2 server")).unwrap();
        assert_eq!(distinct.volumes, ["a:1", "a:2", "b:1"]);
    }

    #[test]
    fn verify_flags_in_both_spellings() {
        let plain = parse(argv("-db x -volumes a:1 -replicas 1 verify")).unwrap();
        assert_eq!(plain.command, Command::Verify);
        assert!(!plain.repair && plain.purge_unlinked.is_none());
        assert_eq!(plain.orphan_grace, Duration::from_secs(3600));
        let go = parse(argv(
            "-db x -volumes a:1 -replicas 1 -repair -md5 -orphan-grace 10m -purge-unlinked 48h verify",
        ))
        .unwrap();
        assert!(go.repair && go.md5);
        assert_eq!(go.orphan_grace, Duration::from_secs(600));
        assert_eq!(go.purge_unlinked, Some(Duration::from_secs(48 * 3600)));
        assert!(matches!(
            parse(argv("-db x -volumes a:1 -replicas 1 --purge-unlinked soon verify")),
            Err(ConfigError::Usage(_))
        ));
    }

    #[test]
    fn s3_upload_expiry_is_never_or_in_its_range() {
        let line = |expiry: &str| format!("-db x -volumes a:1 -replicas 1 --s3-upload-expiry {expiry} server");
        for taken in ["0s", "1s", "168h", "87600h"] {
            assert!(parse(argv(&line(taken))).is_ok(), "{taken}");
        }
        for refused in ["1ms", "999ms", "87600h1s", "1000000h"] {
            match parse(argv(&line(refused))) {
                Err(ConfigError::Invalid(message)) => {
                    assert!(message.contains("--s3-upload-expiry must be"), "{message}")
                }
                other => panic!("{refused}: {other:?}"),
            }
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
    }
}
