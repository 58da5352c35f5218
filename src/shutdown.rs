//! The process's end: the main thread's wait for events (a signal, or a
//! thread the master cannot run without ending), the orderly shutdown on
//! SIGTERM or SIGINT, and the watchdog's exit when a reactor or the health
//! thread ends. It changes when shutdown policy does; `server` starts the
//! threads and hands their events here (ARCHITECTURE.md, "Shutdown").

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::admin;
use crate::app::App;

/// The exit status when a reactor or the health thread ended
/// (`EX_SOFTWARE`, sysexits.h).
pub const EXIT_THREAD_ENDED: i32 = 70;

/// After the shutdown limit, how long writes cut by it get to go through
/// their failure path (delete the copies written, drop the record) before
/// the process exits anyway: a few volume round trips.
const SHUTDOWN_CLEANUP_GRACE: Duration = Duration::from_secs(5);

/// Reactor threads are named this, then their number.
pub const REACTOR_THREAD_PREFIX: &str = "mkv-reactor-";

/// What the main thread waits for.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A watched thread ended, by return or by panic.
    Ended(String),
    /// SIGTERM or SIGINT arrived.
    Signal(i32),
    /// SIGHUP arrived: read the S3 credentials again.
    Reload,
}

/// A thread the master cannot serve without ended: exit so a supervisor
/// restarts it.
pub fn thread_ended(name: &str) -> ! {
    eprintln!(
        "mkv: thread {name} ended; exiting with status {EXIT_THREAD_ENDED} (a supervisor should restart the master)"
    );
    exit_now(EXIT_THREAD_ENDED)
}

/// The orderly end: stop accepting (shut the listeners down, which wakes
/// every reactor's accept), let the requests in flight finish within
/// `--shutdown-timeout`, exit 0 once every reactor has ended. At the limit
/// every read from a client fails (a PUT whose body is still arriving goes
/// through the write protocol's failure path) and after
/// `SHUTDOWN_CLEANUP_GRACE` the process exits anyway, as a killed master
/// would (ARCHITECTURE.md, "Shutdown"). A second signal exits at once.
pub fn shut_down(signal: i32, listeners: Vec<OwnedFd>, events: &mpsc::Receiver<Event>, app: &App) -> ! {
    let limit = app.config.shutdown_timeout;
    eprintln!("mkv: signal {signal}: closing the listeners, finishing requests in flight (at most {limit:?})");
    let started = Instant::now();
    crate::app::start_shutting_down();
    for listener in &listeners {
        // SAFETY: `listener` is an open descriptor this thread owns (a dup
        // of a reactor's listener, so its number cannot be reused meanwhile).
        unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
    }
    drop(listeners);
    let exit_by = started + limit + SHUTDOWN_CLEANUP_GRACE;
    let mut reactors_left = app.config.threads;
    loop {
        let left = exit_by.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(Event::Ended(name)) if name.starts_with(REACTOR_THREAD_PREFIX) => {
                reactors_left -= 1;
                if reactors_left == 0 {
                    eprintln!("mkv: every request finished in {:?}", started.elapsed());
                    // A maintenance job stops taking items, finishes those
                    // in flight and its pending deletes, and tells its
                    // operator how it ended.
                    if !admin::wait_for_job(exit_by) {
                        eprintln!("mkv: the maintenance job did not end in time; exiting");
                    }
                    eprintln!("mkv: exiting");
                    exit_now(0);
                }
            }
            Ok(Event::Ended(name)) => thread_ended(&name),
            Ok(Event::Reload) => {}
            Ok(Event::Signal(signal)) => {
                eprintln!("mkv: signal {signal} again: exiting at once");
                exit_now(128 + signal);
            }
            Err(_) => {
                eprintln!(
                    "mkv: requests still in flight after {:?}; exiting (a cut write leaves at most a deleted record and stray copies, as a killed master does)",
                    started.elapsed()
                );
                exit_now(0);
            }
        }
    }
}

/// The signal thread: SIGTERM and SIGINT become events for the main
/// thread, SIGHUP a reload.
pub fn spawn_signal_thread(events: &mpsc::Sender<Event>) -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let events = events.clone();
    std::thread::Builder::new().name("mkv-signals".into()).spawn(move || {
        for signal in signals.forever() {
            let event = if signal == SIGHUP {
                Event::Reload
            } else {
                Event::Signal(signal)
            };
            let _ = events.send(event);
        }
    })?;
    Ok(())
}

/// End the process at once with `status`. `_exit` skips atexit handlers and
/// static destructors (RocksDB has some) that would race the threads still
/// running; like a `kill -9`, which the index survives (WAL).
pub fn exit_now(status: i32) -> ! {
    // SAFETY: `_exit` takes no pointers and cannot fail.
    unsafe { libc::_exit(status) }
}

/// Reports a watched thread's name when it ends, by return or by panic
/// (unwinding drops it too).
struct Ending {
    name: String,
    ended: mpsc::Sender<Event>,
}

impl Drop for Ending {
    fn drop(&mut self) {
        let _ = self.ended.send(Event::Ended(std::mem::take(&mut self.name)));
    }
}

/// Spawn a thread the server cannot run without: its name goes to `ended`
/// when it ends, however it ends.
pub fn spawn_watched(
    name: String,
    ended: &mpsc::Sender<Event>,
    body: impl FnOnce() + Send + 'static,
) -> io::Result<std::thread::JoinHandle<()>> {
    let ending = Ending {
        name: name.clone(),
        ended: ended.clone(),
    };
    std::thread::Builder::new().name(name).spawn(move || {
        let _ending = ending;
        body();
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watched_thread_reports_its_end_by_return_or_by_panic() {
        let (sender, ended) = mpsc::channel();
        spawn_watched("returns".into(), &sender, || {}).unwrap();
        spawn_watched("panics".into(), &sender, || panic!("a watched thread panics")).unwrap();
        let name = |event| match event {
            Event::Ended(name) => name,
            other => panic!("{other:?}"),
        };
        let mut names = [name(ended.recv().unwrap()), name(ended.recv().unwrap())];
        names.sort();
        assert_eq!(names, ["panics", "returns"]);
    }
}
