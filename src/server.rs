//! The server: one monoio reactor per thread, each with its own
//! `SO_REUSEPORT` listener, accepting connections and serving them to the end
//! on that thread. io_uring where the kernel allows it, epoll otherwise
//! (`MONOIO_FORCE_LEGACY_DRIVER=1` forces epoll).

use std::cell::Cell;
use std::fmt;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::{ListenerOpts, TcpListener, TcpStream};

use crate::app::App;
use crate::connection::{Connection, OUTPUT_FLUSH_BYTES};
use crate::handlers;
use crate::http::{self, write_text, KeepAlive};

/// Open client connections per reactor; more are closed on accept.
pub const CONNECTIONS_PER_REACTOR_MAX: usize = 16 * 1024;
/// A keep-alive connection idle this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A request head must arrive completely within this time of its first byte.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// io_uring submission queue entries per reactor.
const URING_ENTRIES: u32 = 4096;
/// Listen backlog per reactor.
const LISTEN_BACKLOG: i32 = 4096;

/// The server could not start.
#[derive(Debug)]
pub enum ServerError {
    /// The port is taken (by another process, or another mkv).
    PortInUse(u16, std::io::Error),
    /// A reactor could not start.
    Reactor(usize, std::io::Error),
}

impl fmt::Display for ServerError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::PortInUse(port, error) => write!(formatter, "cannot listen on port {port}: {error}"),
            ServerError::Reactor(id, error) => write!(formatter, "reactor {id} failed to start: {error}"),
        }
    }
}

impl std::error::Error for ServerError {}

/// Start one reactor per configured thread and serve until the process ends.
pub fn serve(app: Arc<App>) -> Result<(), ServerError> {
    let address = SocketAddr::from(([0, 0, 0, 0], app.config.port));
    // Every reactor binds with SO_REUSEPORT, which would happily share the
    // port with another mkv; one plain bind first turns that into an error.
    StdTcpListener::bind(address).map_err(|error| ServerError::PortInUse(app.config.port, error))?;
    let (ready_sender, ready) = mpsc::channel();
    let mut reactors = Vec::new();
    for id in 0..app.config.threads {
        let app = app.clone();
        let ready_sender = ready_sender.clone();
        let reactor = std::thread::Builder::new()
            .name(format!("mkv-reactor-{id}"))
            .spawn(move || run_reactor(id, app, address, ready_sender))
            .map_err(|error| ServerError::Reactor(id, error))?;
        reactors.push(reactor);
    }
    drop(ready_sender);
    for _ in 0..app.config.threads {
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                return Err(ServerError::Reactor(
                    0,
                    std::io::Error::other("reactor exited during start"),
                ))
            }
        }
    }
    eprintln!(
        "mkv listening on :{} with {} reactors",
        app.config.port, app.config.threads
    );
    for reactor in reactors {
        let _ = reactor.join();
    }
    Ok(())
}

fn run_reactor(id: usize, app: Arc<App>, address: SocketAddr, ready: mpsc::Sender<Result<(), ServerError>>) {
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
    runtime.block_on(async move {
        let options = ListenerOpts::new().reuse_port(true).backlog(LISTEN_BACKLOG);
        let listener = match TcpListener::bind_with_config(address, &options) {
            Ok(listener) => listener,
            Err(error) => {
                let _ = ready.send(Err(ServerError::PortInUse(address.port(), error)));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        accept_loop(app, listener).await;
    });
}

/// A reactor's runtime: io_uring, or epoll where io_uring is unavailable.
pub type Runtime = monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
>;

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

async fn accept_loop(app: Arc<App>, listener: TcpListener) {
    let open = Rc::new(Cell::new(0usize));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("accept failed: {error}");
                monoio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if open.get() >= CONNECTIONS_PER_REACTOR_MAX {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        open.set(open.get() + 1);
        let (app, open) = (app.clone(), open.clone());
        monoio::spawn(async move {
            serve_connection(&app, stream).await;
            open.set(open.get() - 1);
        });
    }
}

/// Serve requests on one connection until it closes, fails or idles out.
async fn serve_connection(app: &App, stream: TcpStream) {
    let mut connection = Connection::new(stream);
    let mut head_started: Option<Instant> = None;
    loop {
        // Answer every complete request already buffered (pipelining).
        loop {
            let parsed = http::parse_request(connection.buffered());
            match parsed {
                Ok(Some(head)) => {
                    head_started = None;
                    let request_start = connection.start;
                    connection.start += head.head_bytes;
                    if !handlers::handle(app, &mut connection, &head, request_start).await {
                        let _ = connection.flush().await;
                        return;
                    }
                    if connection.output.len() >= OUTPUT_FLUSH_BYTES && connection.flush().await.is_err() {
                        return;
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
                    let _ = connection.flush().await;
                    return;
                }
            }
        }
        if connection.flush().await.is_err() {
            return;
        }
        let partial_head = !connection.buffered().is_empty();
        let timeout = if !partial_head {
            IDLE_TIMEOUT
        } else {
            let started = *head_started.get_or_insert_with(Instant::now);
            match HEADER_READ_TIMEOUT.checked_sub(started.elapsed()) {
                Some(left) => left,
                None => {
                    write_text(
                        &mut connection.output,
                        408,
                        KeepAlive::Close,
                        b"",
                        "request head took too long",
                    );
                    let _ = connection.flush().await;
                    return;
                }
            }
        };
        match connection.read_more(timeout).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) => {
                if error.kind() == std::io::ErrorKind::TimedOut && partial_head {
                    write_text(
                        &mut connection.output,
                        408,
                        KeepAlive::Close,
                        b"",
                        "request head took too long",
                    );
                    let _ = connection.flush().await;
                }
                return;
            }
        }
    }
}
