//! The server: one monoio reactor per thread, each with its own
//! `SO_REUSEPORT` listener, accepting connections and serving them to the end
//! on that thread. io_uring where the kernel allows it, epoll otherwise
//! (`MONOIO_FORCE_LEGACY_DRIVER=1` forces epoll).
//!
//! Panics (ARCHITECTURE.md, "Panics"): a panic while serving a connection is
//! caught, logged and counted, and closes that connection only; a reactor or
//! the health thread that ends, for any reason, ends the process with
//! `shutdown::EXIT_THREAD_ENDED` so a supervisor restarts it.
//!
//! Shutdown (ARCHITECTURE.md, "Shutdown"): SIGTERM or SIGINT sets a flag
//! every reactor reads and shuts the listeners down (which wakes their
//! accepts); each reactor then closes its idle connections, lets those in a
//! request finish (reads end at `--shutdown-timeout`) and ends. When every
//! reactor has ended the process exits 0; at the limit, plus a grace for
//! cut writes to clean up, it exits anyway. The main thread's part of
//! that (the signals, the wait, the exit) is `shutdown`.
//!
//! File descriptors: `main` raises the soft limit to the hard one
//! (`raise_fd_limit`), and each reactor admits at most `clients_per_reactor`
//! client connections, so volume connections and the index always find a
//! descriptor. At that cap a new client closes the longest-idle keep-alive
//! connection, as nginx reuses its idle connections.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_util::future::{select, Either};
use futures_util::FutureExt;
use monoio::net::{ListenerOpts, TcpListener};

use crate::admin;
use crate::app::{shutting_down, App};
use crate::coherence;
use crate::connection::{Connection, OUTPUT_FLUSH_BYTES};
use crate::handlers;
use crate::http::{self, write_text, KeepAlive, Method};
use crate::metrics::{self, Gauges, VolumeGauge};
use crate::s3;
use crate::shutdown::{self, Event, REACTOR_THREAD_PREFIX};

/// Open client connections per reactor at most, whatever the fd limit.
pub const CONNECTIONS_PER_REACTOR_MAX: usize = 16 * 1024;
/// Client connections per reactor at least, however low the fd limit: a
/// master must serve someone (accept backs off if descriptors run out).
const CONNECTIONS_PER_REACTOR_MIN: usize = 1;
/// File descriptors kept from client connections for the whole process:
/// stdio, the health thread's probes (up to 64 at once), RocksDB's files
/// (lock, log, manifest, write-ahead log and its open tables) and a margin.
const FDS_RESERVED: u64 = 160;
/// File descriptors kept from client connections per reactor: its listener,
/// its io_uring or epoll instance and wake-up eventfd, and a margin.
const FDS_RESERVED_PER_REACTOR: u64 = 4;
/// A keep-alive connection idle this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A request head must arrive completely within this time of its first byte.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// After the master answered and chose to close (a refused upload it did not
/// drain, a bad request), it reads and drops what the client still sends for
/// at most this long, so the client reads its answer rather than a reset
/// (nginx's `lingering_time`).
const LINGER_TIME_MAX: Duration = Duration::from_secs(30);
/// ... and stops lingering once the client sends nothing for this long
/// (nginx's `lingering_timeout`).
const LINGER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait after a failed accept (EMFILE: no descriptor left), doubled
/// while accepts keep failing.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest wait between failing accepts.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Bytes of a request's path shown in the log line of a contained panic.
const PANIC_PATH_BYTES_MAX: usize = 256;
/// io_uring submission queue entries per reactor.
const URING_ENTRIES: u32 = 4096;
/// Listen backlog per reactor.
const LISTEN_BACKLOG: i32 = 4096;

/// Shutting down, how long a connection accepted before the signal may take
/// to send its first request: a client that just connected has its request
/// on the way (closing would cut a request the master never read), one that
/// connected to hold a connection open must not delay the exit.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);
/// RocksDB properties exposed as metrics: (metric, property, help).
const INDEX_PROPERTIES: [(&str, &str, &str); 4] = [
    (
        "mkv_index_memtable_bytes",
        "rocksdb.cur-size-all-mem-tables",
        "Bytes in the index's memtables.",
    ),
    (
        "mkv_index_sst_bytes",
        "rocksdb.total-sst-files-size",
        "Bytes of the index's table files.",
    ),
    (
        "mkv_index_pending_compaction_bytes",
        "rocksdb.estimate-pending-compaction-bytes",
        "Bytes RocksDB estimates compaction still has to rewrite.",
    ),
    (
        "mkv_index_keys_estimate",
        "rocksdb.estimate-num-keys",
        "Keys in the index, as RocksDB estimates them (records, metadata, state).",
    ),
];

/// Panics in request handling caught and confined to their connection.
static PANICS_CONTAINED: AtomicU64 = AtomicU64::new(0);

/// Panics in request handling caught and confined to their connection since start.
pub fn panics_contained() -> u64 {
    PANICS_CONTAINED.load(Ordering::Relaxed)
}

/// The server could not start.
#[derive(Debug)]
pub enum ServerError {
    /// The port is taken (by another process, or another mkv).
    PortInUse(u16, std::io::Error),
    /// A reactor could not start.
    Reactor(usize, std::io::Error),
    /// The health thread could not start.
    Health(std::io::Error),
    /// The metrics, admin or signal thread could not start.
    Thread(&'static str, std::io::Error),
    /// The admin port's token file cannot be used.
    AdminToken(String),
}

impl fmt::Display for ServerError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::PortInUse(port, error) => write!(formatter, "cannot listen on port {port}: {error}"),
            ServerError::Reactor(id, error) => write!(formatter, "reactor {id} failed to start: {error}"),
            ServerError::Health(error) => write!(formatter, "the health thread failed to start: {error}"),
            ServerError::Thread(name, error) => write!(formatter, "the {name} thread failed to start: {error}"),
            ServerError::AdminToken(error) => write!(formatter, "{error}"),
        }
    }
}

impl std::error::Error for ServerError {}

/// Start one reactor per configured thread, the health thread, the signal
/// thread and (with `--metrics-port`) the metrics thread, and serve until
/// the process ends: if a reactor or the health thread ends, the process
/// exits with `shutdown::EXIT_THREAD_ENDED`; on SIGTERM or SIGINT it shuts down
/// (`shut_down`) and exits 0.
pub fn serve(app: Arc<App>) -> Result<Infallible, ServerError> {
    let address = SocketAddr::new(app.config.bind, app.config.port);
    // Every reactor binds with SO_REUSEPORT, which would happily share the
    // port with another mkv; one plain bind first turns that into an error.
    StdTcpListener::bind(address).map_err(|error| ServerError::PortInUse(app.config.port, error))?;
    if let Some(s3_port) = app.config.s3_port {
        StdTcpListener::bind(SocketAddr::new(app.config.s3_bind, s3_port))
            .map_err(|error| ServerError::PortInUse(s3_port, error))?;
    }
    let (events_sender, events) = mpsc::channel();
    // Before the reactors, so a signal during start already shuts down.
    shutdown::spawn_signal_thread(&events_sender).map_err(|error| ServerError::Thread("signal", error))?;
    if let Some(port) = app.config.metrics_port {
        spawn_metrics_thread(&app, port)?;
    }
    if let Some(port) = app.config.admin_port {
        spawn_admin_thread(&app, port)?;
    }
    let fd_limit = fd_limits().map_or(u64::MAX, |(soft, _)| soft);
    let clients_max = clients_per_reactor(fd_limit, app.config.threads, app.config.replicas);
    let (ready_sender, ready) = mpsc::channel();
    for id in 0..app.config.threads {
        let app = app.clone();
        let ready_sender = ready_sender.clone();
        shutdown::spawn_watched(format!("{REACTOR_THREAD_PREFIX}{id}"), &events_sender, move || {
            run_reactor(id, app, address, clients_max, ready_sender)
        })
        .map_err(|error| ServerError::Reactor(id, error))?;
    }
    drop(ready_sender);
    let mut listeners = Vec::new();
    for _ in 0..app.config.threads {
        match ready.recv() {
            Ok(Ok(reactor_listeners)) => listeners.extend(reactor_listeners),
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                return Err(ServerError::Reactor(
                    0,
                    std::io::Error::other("reactor exited during start"),
                ))
            }
        }
    }
    let volumes = app.volumes.clone();
    let (interval, timeout) = (app.config.health_interval, app.config.volume_timeout);
    shutdown::spawn_watched("mkv-health".into(), &events_sender, move || {
        volumes.check_forever(interval, timeout)
    })
    .map_err(ServerError::Health)?;
    let s3_port = app
        .config
        .s3_port
        .map(|port| format!(", S3 on :{port}"))
        .unwrap_or_default();
    let metrics = app
        .config
        .metrics_port
        .map(|port| format!(", metrics on {}:{port}", app.config.metrics_bind))
        .unwrap_or_default();
    let metrics = metrics
        + &app
            .config
            .admin_port
            .map(|port| format!(", admin on {}:{port}", app.config.admin_bind))
            .unwrap_or_default();
    eprintln!(
        "mkv listening on :{}{s3_port}{metrics} with {} reactors, at most {clients_max} client connections each (fd limit {fd_limit})",
        app.config.port, app.config.threads
    );
    // Our own sender stays alive, so this waits for an event.
    loop {
        match events.recv() {
            Ok(Event::Reload) => s3::auth::reload(),
            Ok(Event::Signal(signal)) => shutdown::shut_down(signal, listeners, &events, &app),
            Ok(Event::Ended(name)) => shutdown::thread_ended(&name),
            Err(_) => shutdown::thread_ended("(unknown)"),
        }
    }
}

/// The metrics thread: `GET /metrics` on `--metrics-bind`:`port`.
fn spawn_metrics_thread(app: &Arc<App>, port: u16) -> Result<(), ServerError> {
    let address = SocketAddr::new(app.config.metrics_bind, port);
    let listener = StdTcpListener::bind(address).map_err(|error| ServerError::PortInUse(port, error))?;
    let app = app.clone();
    std::thread::Builder::new()
        .name("mkv-metrics".into())
        .spawn(move || metrics::serve_forever(listener, move || gauges(&app)))
        .map_err(|error| ServerError::Thread("metrics", error))?;
    Ok(())
}

/// The admin thread: the maintenance jobs (`admin`) on
/// `--admin-bind`:`port`, for requests with the token of
/// `--admin-token-file` (read, or made, here).
fn spawn_admin_thread(app: &Arc<App>, port: u16) -> Result<(), ServerError> {
    let path = app.config.admin_token_file.as_deref();
    let path = path.ok_or_else(|| ServerError::AdminToken("--admin-port needs --admin-token-file".into()))?;
    let token = admin::Token::load_or_create(path).map_err(ServerError::AdminToken)?;
    let address = SocketAddr::new(app.config.admin_bind, port);
    let listener = StdTcpListener::bind(address).map_err(|error| ServerError::PortInUse(port, error))?;
    let app = app.clone();
    std::thread::Builder::new()
        .name("mkv-admin".into())
        .spawn(move || admin::serve_forever(listener, app, token))
        .map_err(|error| ServerError::Thread("admin", error))?;
    Ok(())
}

/// What a scrape reads from the shared state.
fn gauges(app: &App) -> Gauges {
    let (cache_entries, cache_bytes, cache_evictions) = app.store.cache_figures();
    let volumes = (0..app.volumes.hosts().len() as u16)
        .map(|id| VolumeGauge {
            host: app.volumes.hosts()[usize::from(id)].clone(),
            up: app.volumes.is_healthy(id),
            probe: app.volumes.probe_time(id),
        })
        .collect();
    let index = INDEX_PROPERTIES
        .iter()
        .filter_map(|&(name, property, help)| Some((name, help, app.store.index().property(property)?)))
        .collect();
    Gauges {
        cache_entries: cache_entries as u64,
        cache_bytes: cache_bytes as u64,
        cache_evictions,
        volumes,
        index,
        panics_contained: panics_contained(),
    }
}

/// The current (soft, hard) limit on open file descriptors.
fn fd_limits() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

fn set_soft_fd_limit(soft: u64, hard: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `limit` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The soft fd limit before and after `raise_fd_limit`.
#[derive(Clone, Copy, Debug)]
pub struct FdLimit {
    pub before: u64,
    pub now: u64,
}

impl fmt::Display for FdLimit {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "fd limit {}", self.now)?;
        if self.now != self.before {
            write!(formatter, " (raised from {})", self.before)?;
        }
        Ok(())
    }
}

/// Raise the soft limit on open files to the hard limit, as Go's runtime does
/// at start: the soft limit (often 1024) is a default for old `select`
/// programs, and a master holds a descriptor per client and per volume
/// connection. An unlimited hard limit is capped by the kernel's `nr_open`.
pub fn raise_fd_limit() -> io::Result<FdLimit> {
    let (soft, hard) = fd_limits()?;
    let mut target = hard;
    if hard == libc::RLIM_INFINITY {
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").ok();
        target = nr_open.and_then(|text| text.trim().parse().ok()).unwrap_or(soft);
    }
    if target > soft {
        set_soft_fd_limit(target, hard)?;
    }
    let now = fd_limits()?.0;
    Ok(FdLimit { before: soft, now })
}

/// Client connections each reactor admits under a soft fd limit of
/// `fd_limit`. A client connection costs its own descriptor and, at most, one
/// volume connection per replica plus a source during `REBALANCE` (a volume
/// pool only keeps connections that were once in use, so it never holds
/// more). What the reserves leave is shared by the reactors.
pub fn clients_per_reactor(fd_limit: u64, threads: usize, replicas: usize) -> usize {
    let threads = threads.max(1) as u64;
    let reserved = FDS_RESERVED + FDS_RESERVED_PER_REACTOR * threads;
    let per_client = 2 + replicas as u64;
    let clients = fd_limit.saturating_sub(reserved) / (threads * per_client);
    usize::try_from(clients)
        .unwrap_or(usize::MAX)
        .clamp(CONNECTIONS_PER_REACTOR_MIN, CONNECTIONS_PER_REACTOR_MAX)
}

fn run_reactor(
    id: usize,
    app: Arc<App>,
    address: SocketAddr,
    clients_max: usize,
    ready: mpsc::Sender<Result<Vec<OwnedFd>, ServerError>>,
) {
    let runtime = build_runtime();
    let mut runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(ServerError::Reactor(id, error)));
            return;
        }
    };
    let driver = match &runtime {
        monoio::FusionRuntime::Uring(_) => "io_uring",
        monoio::FusionRuntime::Legacy(_) => "epoll",
    };
    eprintln!("reactor {id}: driver {driver}");
    metrics::enter_reactor(id);
    runtime.block_on(async move {
        let options = ListenerOpts::new().reuse_port(true).backlog(LISTEN_BACKLOG);
        let listener = match TcpListener::bind_with_config(address, &options) {
            Ok(listener) => listener,
            Err(error) => {
                let _ = ready.send(Err(ServerError::PortInUse(address.port(), error)));
                return;
            }
        };
        let clients = Rc::new(Clients::new(clients_max));
        let mut listeners = vec![listener.as_raw_fd()];
        if let Some(s3_port) = app.config.s3_port {
            let s3_address = SocketAddr::new(app.config.s3_bind, s3_port);
            match TcpListener::bind_with_config(s3_address, &options) {
                Ok(s3_listener) => {
                    listeners.push(s3_listener.as_raw_fd());
                    monoio::spawn(accept_loop(id, app.clone(), s3_listener, clients.clone(), true));
                }
                Err(error) => {
                    let _ = ready.send(Err(ServerError::PortInUse(s3_port, error)));
                    return;
                }
            }
        }
        let _ = ready.send(duplicate_all(&listeners).map_err(|error| ServerError::Reactor(id, error)));
        if id == 0 {
            monoio::spawn(s3::multipart::expire_forever(app.clone()));
            monoio::spawn(crate::journal::sweep_forever(app.clone()));
        }
        let limit = app.config.shutdown_timeout;
        accept_loop(id, app, listener, clients.clone(), false).await;
        finish_connections(&clients, limit).await;
    });
}

/// Shutting down: wait for the connections still in a request, at most
/// `limit`; then stop receiving on every one (a request waiting on its
/// client fails, a PUT through the write protocol's failure path, which
/// still talks to the volumes) and wait for them to close.
async fn finish_connections(clients: &Clients, limit: Duration) {
    let deadline = Instant::now() + limit;
    let closed = pin!(clients.all_closed());
    let grace = pin!(monoio::time::sleep(FIRST_REQUEST_GRACE.min(limit)));
    let Either::Right((_, closed)) = select(closed, grace).await else {
        return;
    };
    clients.close_idle(true);
    let rest = pin!(monoio::time::sleep(deadline.saturating_duration_since(Instant::now())));
    if let Either::Right((_, closed)) = select(closed, rest).await {
        clients.stop_receiving();
        closed.await;
    }
}

/// Copies of `fds` for the main thread, which shuts the listeners down on
/// a signal: its own descriptors, whose numbers stay taken until it closes
/// them, however soon a reactor closes its listener.
fn duplicate_all(fds: &[i32]) -> io::Result<Vec<OwnedFd>> {
    fds.iter()
        .map(|&fd| {
            // SAFETY: `fd` is an open listener of the calling reactor.
            let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
            if copy < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `copy` was just opened and is owned by nobody else.
            Ok(unsafe { OwnedFd::from_raw_fd(copy) })
        })
        .collect()
}

pub use crate::app::Runtime;

/// io_uring setup flag sets to try, best first. COOP_TASKRUN (5.19) stops the
/// kernel from interrupting the reactor with IPIs to run completion work;
/// SINGLE_ISSUER (6.0) and DEFER_TASKRUN (6.1) batch that work until the
/// reactor waits. Measured: 9.7 -> 8.0 us of CPU per 302 (PERF.md). Older
/// kernels refuse the flags and get the next set; no io_uring at all (or
/// `MONOIO_FORCE_LEGACY_DRIVER=1`) gets epoll.
const URING_FLAG_SETS: [&[UringFlag]; 3] = [
    &[
        io_uring::Builder::setup_coop_taskrun,
        io_uring::Builder::setup_single_issuer,
        io_uring::Builder::setup_defer_taskrun,
    ],
    &[io_uring::Builder::setup_coop_taskrun],
    &[],
];

/// Sets one io_uring setup flag on a builder.
type UringFlag = fn(&mut io_uring::Builder) -> &mut io_uring::Builder;

/// Build a reactor's runtime with the best io_uring flags the kernel takes.
fn build_runtime() -> std::io::Result<Runtime> {
    let mut last_error = None;
    for flags in URING_FLAG_SETS {
        let mut uring = io_uring::IoUring::builder();
        for set_flag in flags {
            set_flag(&mut uring);
        }
        let built = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .with_entries(URING_ENTRIES)
            .uring_builder(uring)
            .enable_timer()
            .build();
        match built {
            Ok(runtime) => return Ok(runtime),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.expect("at least one flag set was tried"))
}

/// One reactor's client connections: how many are open, and which are idle.
struct Clients {
    /// At most this many open at once (`clients_per_reactor`).
    max: usize,
    /// The open connections; each knows its position here.
    open: RefCell<Vec<Rc<Client>>>,
    /// Counts idle periods: the smallest `idle_since` is the longest idle.
    tick: Cell<u64>,
    /// The tasks waiting for a connection to close: a reactor's accept
    /// loops (the native port's and, with `--s3-port`, the S3 port's share
    /// the cap) and, shutting down, the wait for all to close. Each is woken
    /// on every close; one slot for all lost the first waiter's waker, and
    /// with it that port's accepts for good.
    accept_wakers: RefCell<Vec<Waker>>,
}

/// A client connection's standing, shared by its task and the accept loop.
struct Client {
    /// Its socket, to stop receiving on shutdown.
    fd: i32,
    /// Its position in `Clients::open`.
    position: Cell<usize>,
    /// The tick at which it began waiting for a new request; `None` while it
    /// holds a request or part of one.
    idle_since: Cell<Option<u64>>,
    /// Set by the accept loop: close at once.
    evicted: Cell<bool>,
    /// No request has arrived yet: shutting down, it gets
    /// `FIRST_REQUEST_GRACE` for one rather than being closed as idle.
    fresh: Cell<bool>,
    /// The connection's task, waiting for a request.
    waker: Cell<Option<Waker>>,
}

impl Clients {
    fn new(max: usize) -> Clients {
        Clients {
            max,
            open: RefCell::new(Vec::new()),
            tick: Cell::new(0),
            accept_wakers: RefCell::new(Vec::new()),
        }
    }

    fn count(&self) -> usize {
        self.open.borrow().len()
    }

    fn admit(&self, fd: i32) -> Rc<Client> {
        let mut open = self.open.borrow_mut();
        let client = Rc::new(Client {
            fd,
            position: Cell::new(open.len()),
            idle_since: Cell::new(None),
            evicted: Cell::new(false),
            fresh: Cell::new(true),
            waker: Cell::new(None),
        });
        open.push(client.clone());
        metrics::set_connections(open.len());
        client
    }

    fn release(&self, client: &Client) {
        let position = client.position.get();
        let mut open = self.open.borrow_mut();
        open.swap_remove(position);
        if let Some(moved) = open.get(position) {
            moved.position.set(position);
        }
        metrics::set_connections(open.len());
        drop(open);
        let wakers = std::mem::take(&mut *self.accept_wakers.borrow_mut());
        for waker in wakers {
            waker.wake();
        }
    }

    /// Close the connection idle the longest; false if none is idle.
    fn evict_longest_idle(&self) -> bool {
        let open = self.open.borrow();
        let idle = open
            .iter()
            .filter(|client| !client.evicted.get())
            .filter_map(|client| Some((client.idle_since.get()?, client)))
            .min_by_key(|(since, _)| *since);
        let Some((_, client)) = idle else { return false };
        client.evicted.set(true);
        if let Some(waker) = client.waker.take() {
            waker.wake();
        }
        true
    }

    /// Close every idle connection (shutting down); those that have not
    /// sent a request yet only if `fresh_too`.
    fn close_idle(&self, fresh_too: bool) {
        for client in self.open.borrow().iter() {
            if client.idle_since.get().is_some() && (fresh_too || !client.fresh.get()) {
                client.evicted.set(true);
                if let Some(waker) = client.waker.take() {
                    waker.wake();
                }
            }
        }
    }

    /// Stop receiving on every connection (the shutdown limit passed): a
    /// pending read ends as if the client had closed.
    fn stop_receiving(&self) {
        for client in self.open.borrow().iter() {
            // SAFETY: shutdown takes no pointers; the descriptor is open as
            // long as its client is in `open` (this reactor's thread closes
            // it, after `release`).
            unsafe { libc::shutdown(client.fd, libc::SHUT_RD) };
        }
    }

    /// Be woken by the next close (each waiting task once).
    fn wait_for_close(&self, waker: &Waker) {
        let mut wakers = self.accept_wakers.borrow_mut();
        if !wakers.iter().any(|waiting| waiting.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    /// Wait until every connection has closed (shutting down).
    async fn all_closed(&self) {
        poll_fn(|context| {
            if self.count() == 0 {
                return Poll::Ready(());
            }
            self.wait_for_close(context.waker());
            Poll::Pending
        })
        .await
    }

    /// Wait until fewer than `max` connections are open.
    async fn below_max(&self) {
        poll_fn(|context| {
            if self.count() < self.max {
                return Poll::Ready(());
            }
            self.wait_for_close(context.waker());
            Poll::Pending
        })
        .await
    }
}

impl Client {
    /// Resolves once the accept loop evicted this connection.
    async fn evicted(&self) {
        poll_fn(|context| {
            if self.evicted.get() {
                return Poll::Ready(());
            }
            self.waker.set(Some(context.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

/// Failed accepts in a row and the wait before the next attempt.
#[derive(Default)]
struct AcceptBackoff {
    failures: u64,
    delay: Duration,
}

impl AcceptBackoff {
    /// How long to wait after a failed accept; logs the first of a run.
    fn failed(&mut self, reactor: usize, error: &io::Error) -> Duration {
        if self.failures == 0 {
            eprintln!("reactor {reactor}: accept failed: {error}; retrying, waiting up to {ACCEPT_BACKOFF_MAX:?}");
            self.delay = ACCEPT_BACKOFF_MIN;
        } else {
            self.delay = (self.delay * 2).min(ACCEPT_BACKOFF_MAX);
        }
        self.failures += 1;
        self.delay
    }

    fn succeeded(&mut self, reactor: usize) {
        if self.failures > 0 {
            eprintln!("reactor {reactor}: accept works again after {} failures", self.failures);
            self.failures = 0;
        }
    }
}

/// Accept and serve connections until the master shuts down; on the S3
/// port (`s3_only`) every request is an S3 one. Both listeners of a reactor
/// share its client cap. On shutdown the main thread shuts the listener
/// down, which ends a pending accept with an error under both drivers; the
/// loop then closes the idle connections and returns (dropping, so closing,
/// the listener).
async fn accept_loop(id: usize, app: Arc<App>, listener: TcpListener, clients: Rc<Clients>, s3_only: bool) {
    let mut backoff = AcceptBackoff::default();
    while !shutting_down() {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) if shutting_down() => break,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                monoio::time::sleep(backoff.failed(id, &error)).await;
                continue;
            }
        };
        backoff.succeeded(id);
        if clients.count() >= clients.max {
            if !clients.evict_longest_idle() {
                // Every connection is in a request: refuse this one.
                drop(stream);
                continue;
            }
            // The new connection waits for the evicted one to close, so the
            // reactor holds at most one descriptor over its share.
            clients.below_max().await;
        }
        let _ = stream.set_nodelay(true);
        let client = clients.admit(stream.as_raw_fd());
        let (app, clients) = (app.clone(), clients.clone());
        monoio::spawn(async move {
            let mut connection = Connection::new(stream);
            connection.s3_only = s3_only;
            let mut request = RequestInFlight::default();
            let serving = serve_connection(&app, &mut connection, &clients, &client, &mut request);
            let served = AssertUnwindSafe(serving).catch_unwind().await;
            if let Err(panic) = served {
                report_contained_panic(id, &request, &connection, panic.as_ref());
            }
            clients.release(&client);
        });
    }
    clients.close_idle(false);
}

/// The request a connection is serving, for the log line of a contained
/// panic: where its path lies in the connection's input, not a copy, so
/// the hot path pays three stores for it.
#[derive(Default)]
struct RequestInFlight {
    method: Option<Method>,
    /// The path's bytes in `Connection::input`...
    path: Range<usize>,
    /// ... while `Connection::moves` still has this value.
    moves: u64,
}

impl RequestInFlight {
    fn note(&mut self, method: Method, path: Range<usize>, moves: u64) {
        self.method = Some(method);
        self.path = path;
        self.moves = moves;
    }

    /// The path, if the connection's input still holds it where it was.
    fn path<'a>(&self, connection: &'a Connection) -> Option<&'a [u8]> {
        if connection.moves != self.moves {
            return None;
        }
        let path = connection.input.get(self.path.clone())?;
        Some(&path[..path.len().min(PANIC_PATH_BYTES_MAX)])
    }
}

/// Log and count a panic caught while serving a connection. The panic hook
/// already printed the message and where it happened.
fn report_contained_panic(
    reactor: usize,
    request: &RequestInFlight,
    connection: &Connection,
    panic: &(dyn Any + Send),
) {
    let count = PANICS_CONTAINED.fetch_add(1, Ordering::Relaxed) + 1;
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic");
    let request = match (request.method, request.path(connection)) {
        (Some(method), Some(path)) => format!("{method:?} {}", String::from_utf8_lossy(path)),
        (Some(method), None) => format!("{method:?} (path no longer buffered)"),
        (None, _) => "a connection".into(),
    };
    eprintln!(
        "reactor {reactor}: {request} panicked ({message}); only its connection was closed ({count} contained since start)"
    );
}

/// How a connection's request loop ended.
enum Closing {
    /// Close at once: the client left, idled out or was evicted.
    Now,
    /// The master answered and chose to close: send the answer, then close
    /// lingering.
    Lingering,
}

/// Serve requests on one connection until it closes, fails or idles out.
async fn serve_connection(
    app: &App,
    connection: &mut Connection,
    clients: &Clients,
    client: &Client,
    request: &mut RequestInFlight,
) {
    if let Closing::Lingering = serve_requests(app, connection, clients, client, request).await {
        close_lingering(connection).await;
    }
}

/// Answer 408 to a request head that did not arrive in time; the
/// connection then closes.
fn head_too_slow(connection: &mut Connection) -> Closing {
    write_text(
        &mut connection.output,
        408,
        KeepAlive::Close,
        b"",
        "request head took too long",
    );
    Closing::Lingering
}

async fn serve_requests(
    app: &App,
    connection: &mut Connection,
    clients: &Clients,
    client: &Client,
    request: &mut RequestInFlight,
) -> Closing {
    let mut head_started: Option<Instant> = None;
    loop {
        // Answer every complete request already buffered (pipelining).
        loop {
            let parsed = http::parse_request(connection.buffered());
            match parsed {
                Ok(Some(head)) => {
                    head_started = None;
                    client.fresh.set(false);
                    let request_start = connection.start;
                    let path = request_start + head.path.start..request_start + head.path.end;
                    request.note(head.method, path, connection.moves);
                    connection.start += head.head_bytes;
                    let query = head
                        .query
                        .clone()
                        .map(|query| request_start + query.start..request_start + query.end);
                    let is_s3 = connection.s3_only
                        || head.s3
                        || query.is_some_and(|query| s3::is_s3_query(&connection.input[query]));
                    if head.expect_other && !is_s3 {
                        let error = http::HttpError::ExpectationFailed;
                        write_text(
                            &mut connection.output,
                            error.status(),
                            KeepAlive::Close,
                            b"",
                            &format!("{error:?}"),
                        );
                        return Closing::Lingering;
                    }
                    let handled = async {
                        if is_s3 {
                            s3::handle(app, connection, &head, request_start).await
                        } else {
                            handlers::handle(app, connection, &head, request_start).await
                        }
                    };
                    let open = metrics::counted(head.method, handled).await;
                    if !open {
                        return Closing::Lingering;
                    }
                    if connection.output.len() >= OUTPUT_FLUSH_BYTES && connection.flush().await.is_err() {
                        return Closing::Now;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    write_text(
                        &mut connection.output,
                        error.status(),
                        KeepAlive::Close,
                        b"",
                        &format!("{error:?}"),
                    );
                    return Closing::Lingering;
                }
            }
        }
        // Shutting down, a connection between requests closes; one that
        // has not sent its first yet waits for it (`FIRST_REQUEST_GRACE`).
        if connection.flush().await.is_err() || (shutting_down() && !client.fresh.get()) {
            return Closing::Now;
        }
        let partial_head = !connection.buffered().is_empty();
        let timeout = if !partial_head {
            IDLE_TIMEOUT
        } else {
            let started = *head_started.get_or_insert_with(Instant::now);
            match HEADER_READ_TIMEOUT.checked_sub(started.elapsed()) {
                Some(left) => left,
                None => {
                    return head_too_slow(connection);
                }
            }
        };
        let read = if partial_head {
            connection.read_more(timeout).await
        } else {
            match read_unless_evicted(connection, clients, client, timeout).await {
                Some(read) => read,
                None => return Closing::Now,
            }
        };
        match read {
            Ok(0) => return Closing::Now,
            Ok(_) => {}
            Err(error) => {
                if error.kind() == io::ErrorKind::TimedOut && partial_head {
                    return head_too_slow(connection);
                }
                return Closing::Now;
            }
        }
    }
}

/// Wait for a new request on an idle connection; `None` if the accept loop
/// evicted it meanwhile (then it closes, even if a request just arrived).
async fn read_unless_evicted(
    connection: &mut Connection,
    clients: &Clients,
    client: &Client,
    timeout: Duration,
) -> Option<io::Result<usize>> {
    let tick = clients.tick.get() + 1;
    clients.tick.set(tick);
    client.idle_since.set(Some(tick));
    if shutting_down() && !client.fresh.get() {
        // `close_idle` may have run before this connection became idle.
        client.idle_since.set(None);
        return None;
    }
    let read = pin!(connection.read_more(timeout));
    let evicted = pin!(client.evicted());
    let outcome = match select(read, evicted).await {
        Either::Left((read, _)) => Some(read),
        Either::Right(_) => None,
    };
    client.idle_since.set(None);
    outcome.filter(|_| !client.evicted.get())
}

/// Send what is queued, close the write side, then read and drop whatever
/// the client still sends until it closes too, or `LINGER_READ_TIMEOUT` of
/// silence, or `LINGER_TIME_MAX` in all. Closing a socket with unread input
/// makes the kernel send a reset, which can destroy the answer before the
/// client reads it (a refused upload the client is still sending).
async fn close_lingering(connection: &mut Connection) {
    if connection.flush().await.is_err() || connection.shutdown_write().await.is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER_TIME_MAX;
    loop {
        connection.start = connection.input.len();
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match connection.read_more(left.min(LINGER_READ_TIMEOUT)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Start following other masters' changes (PostgreSQL index; the state is
/// `coherence`'s, the threads start here, above `app`): one thread
/// applies the index's notifications to the record cache, one re-checks
/// freshness every `TICK`. Both run until the process ends.
pub fn follow(app: Arc<App>) -> std::io::Result<()> {
    let listening = app.clone();
    std::thread::Builder::new().name("mkv-follow".into()).spawn(move || {
        let store = &listening.store;
        let engine = store.index().postgres().expect("follow is for the PostgreSQL index");
        engine.listen(store.coherence().beat(), |event| store.observe(event))
    })?;
    std::thread::Builder::new()
        .name("mkv-coherence".into())
        .spawn(move || loop {
            app.store.coherence().tick();
            std::thread::sleep(coherence::TICK);
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_connections_fit_the_fd_limit() {
        // Three replicas: a client may hold its socket and four volume connections.
        assert_eq!(clients_per_reactor(256, 2, 3), (256 - 160 - 8) / 10);
        let per_reactor = clients_per_reactor(1024, 4, 3);
        assert!(160 + 4 * 4 + per_reactor as u64 * 4 * 5 <= 1024);
        assert_eq!(clients_per_reactor(100, 2, 3), CONNECTIONS_PER_REACTOR_MIN);
        assert_eq!(clients_per_reactor(u64::MAX, 2, 3), CONNECTIONS_PER_REACTOR_MAX);
        assert_eq!(clients_per_reactor(1 << 20, 2, 3), CONNECTIONS_PER_REACTOR_MAX);
    }

    #[test]
    fn fd_limit_log_says_whether_it_was_raised() {
        let raised = FdLimit { before: 256, now: 4096 };
        assert_eq!(raised.to_string(), "fd limit 4096 (raised from 256)");
        assert_eq!(FdLimit { before: 256, now: 256 }.to_string(), "fd limit 256");
    }
}
