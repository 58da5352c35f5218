//! Blocking calls a reactor must not wait on itself: index writes to
//! PostgreSQL, each a network round trip and a WAL flush (a millisecond or
//! more, during which a blocked reactor would answer nothing, cache hits
//! included), and its reads (a round trip).
//!
//! `write` and `read` hand the call to a small pool of threads and await its end on a
//! socket pair: the pool thread writes one byte when done, which the
//! reactor's driver sees like any other socket. That needs no cross-thread
//! waker in the runtime (monoio's `sync` feature) and costs a socket pair
//! per call, microseconds against the call's milliseconds. A call whose
//! request is cancelled (client gone) still runs to its end on the pool.
//!
//! Every wait is bounded (`INDEX_WAIT_MS_MAX`): past it the caller gets
//! None (`index::not_answered`: 503 with Retry-After), and a call no pool
//! thread has started yet is skipped, so a write the client was told
//! failed is not applied later when the database comes back. A call
//! already started runs to its end (its outcome is unknown to the caller;
//! `Store` treats the keys it wrote as changed).

use std::io::Write;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use monoio::io::AsyncReadRent;

/// The longest a caller waits for an offloaded index call: a database that
/// hangs (a stuck disk, a network that drops rather than refuses, a commit
/// waiting on a standby that is gone) is answered 503 within this. Above a
/// healthy commit's worst (tens of milliseconds with a synchronous standby
/// in another zone) by far.
pub const INDEX_WAIT_MS_MAX: u64 = 5_000;
/// The longest a reactor waits for a key's unlock (`lock_briefly`): a
/// round trip and an asynchronous commit take a millisecond or two.
pub const UNLOCK_WAIT_MS_MAX: u64 = 50;

/// A pool of threads for one kind of call, started on first use.
struct Pool {
    name: &'static str,
    threads: usize,
    queue: OnceLock<Mutex<Sender<Job>>>,
}

/// Index writes: each holds a database connection while it works (and
/// PostgreSQL allows 100 by default across all masters); enough that writes
/// from every reactor overlap in the database, which flushes concurrent
/// commits' WAL together.
static WRITES: Pool = Pool {
    name: "mkv-write",
    threads: 8,
    queue: OnceLock::new(),
};

/// Key locks and unlocks: apart from reads and writes, so that a lock
/// session that hangs (its calls queue on one mutex) takes no read or
/// write thread with it.
static LOCKS: Pool = Pool {
    name: "mkv-lock",
    threads: 4,
    queue: OnceLock::new(),
};

/// Index reads (a cache miss): apart from the writes, so that a read is
/// not queued behind commits that wait on WAL flushes.
static READS: Pool = Pool {
    name: "mkv-read",
    threads: 8,
    queue: OnceLock::new(),
};

type Job = Box<dyn FnOnce() + Send>;

impl Pool {
    fn queue(&self) -> &Mutex<Sender<Job>> {
        self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel::<Job>();
            let receiver = Arc::new(Mutex::new(receiver));
            for number in 0..self.threads {
                let receiver = receiver.clone();
                let started = std::thread::Builder::new()
                    .name(format!("{}-{number}", self.name))
                    .spawn(move || work(&receiver));
                if let Err(error) = started {
                    eprintln!("cannot start a {} thread: {error}", self.name);
                }
            }
            Mutex::new(sender)
        })
    }
}

fn work(receiver: &Mutex<Receiver<Job>>) {
    loop {
        let job = match receiver.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Run the index write `call` on its pool and await its result without
/// blocking the reactor, at most `INDEX_WAIT_MS_MAX`: None past it (the
/// call's outcome unknown if it started; skipped if it had not).
pub async fn write<R: Send + 'static>(call: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    run(&WRITES, call, drop).await
}

/// Run the index read `call` on its pool and await its result without
/// blocking the reactor, at most `INDEX_WAIT_MS_MAX`: None past it.
pub async fn read<R: Send + 'static>(call: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    run(&READS, call, drop).await
}

/// Run the key-lock call `call` on the lock pool and await it, at most
/// `INDEX_WAIT_MS_MAX`; None past it, and if the call still ends, its
/// result goes to `undo` (a lock granted to a request that already gave up
/// is released, not left held).
pub async fn lock_within<R: Send + 'static>(
    call: impl FnOnce() -> R + Send + 'static,
    undo: impl FnOnce(R) + Send + 'static,
) -> Option<R> {
    run(&LOCKS, call, undo).await
}

/// `lock_within`, waited for here, blocking the calling thread: for the
/// key-lock calls that synchronous callers make on a reactor (bounded,
/// where running them in place was not).
pub fn block_within<R: Send + 'static>(
    call: impl FnOnce() -> R + Send + 'static,
    undo: impl FnOnce(R) + Send + 'static,
) -> Option<R> {
    let handoff = Arc::new(Handoff::new());
    let theirs = handoff.clone();
    submit(
        &LOCKS,
        Box::new(move || {
            if theirs.deliver(call, undo) {
                theirs.ready.notify_one();
            }
        }),
    );
    let deadline = std::time::Instant::now() + wait_max();
    let mut slot = handoff.lock();
    loop {
        if let Slot::Done(_) = &*slot {
            let Slot::Done(result) = std::mem::replace(&mut *slot, Slot::Taken) else {
                unreachable!("matched above")
            };
            return Some(result);
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            *slot = Slot::Abandoned;
            return None;
        }
        slot = handoff
            .ready
            .wait_timeout(slot, left)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0;
    }
}

/// Run `call` on the lock pool and wait here for it at most
/// `UNLOCK_WAIT_MS_MAX`; past that it goes on alone (a key's unlock, from
/// a guard dropped on a reactor: a healthy database releases the key
/// before the request's answer goes out, so the client's next write of it,
/// on any master, finds it free; a slow one holds the reactor no longer
/// than this).
pub fn lock_briefly(call: impl FnOnce() + Send + 'static) {
    let (sender, receiver) = mpsc::channel();
    submit(
        &LOCKS,
        Box::new(move || {
            call();
            let _ = sender.send(());
        }),
    );
    let _ = receiver.recv_timeout(Duration::from_millis(UNLOCK_WAIT_MS_MAX));
}

/// Run `call` on the read pool without waiting for it (closing a
/// connection whose request was cancelled).
pub fn detach(call: impl FnOnce() + Send + 'static) {
    submit(&READS, Box::new(call));
}

fn wait_max() -> Duration {
    Duration::from_millis(INDEX_WAIT_MS_MAX)
}

/// Queue `job` on `pool`, or run it here if the pool cannot take it.
fn submit(pool: &Pool, job: Job) {
    let sent = pool
        .queue()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send(job);
    if let Err(mpsc::SendError(job)) = sent {
        job();
    }
}

/// Where an offloaded call's result meets its waiter.
enum Slot<R> {
    Waiting,
    /// The waiter gave up: a call not started is skipped, a result that
    /// comes later goes to the call's `undo`.
    Abandoned,
    Done(R),
    Taken,
}

struct Handoff<R> {
    slot: Mutex<Slot<R>>,
    ready: Condvar,
}

impl<R> Handoff<R> {
    fn new() -> Handoff<R> {
        Handoff {
            slot: Mutex::new(Slot::Waiting),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot<R>> {
        self.slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Run `call` unless the waiter gave up already, and hand its result
    /// over, or to `undo` if the waiter gave up meanwhile. Whether the
    /// waiter has a result to take.
    fn deliver(&self, call: impl FnOnce() -> R, undo: impl FnOnce(R)) -> bool {
        if matches!(*self.lock(), Slot::Abandoned) {
            return false;
        }
        let result = call();
        let mut slot = self.lock();
        if matches!(*slot, Slot::Abandoned) {
            drop(slot);
            undo(result);
            return false;
        }
        *slot = Slot::Done(result);
        true
    }
}

/// Run `call` on `pool` and await its result for at most
/// `INDEX_WAIT_MS_MAX`; None past it, and the call is skipped if no pool
/// thread has started it yet (a write answered 503 must not be applied
/// later, when the database is back), or its result goes to `undo`. Falls
/// back to running it here if the pool cannot take it.
async fn run<R: Send + 'static>(
    pool: &Pool,
    call: impl FnOnce() -> R + Send + 'static,
    undo: impl FnOnce(R) + Send + 'static,
) -> Option<R> {
    let Ok((ours, theirs)) = StdUnixStream::pair() else {
        return Some(call());
    };
    let Ok(mut ours) = monoio::net::UnixStream::from_std(ours) else {
        return Some(call());
    };
    let handoff = Arc::new(Handoff::new());
    let filled = handoff.clone();
    submit(
        pool,
        Box::new(move || {
            if filled.deliver(call, undo) {
                // The waiter may be gone meanwhile: nothing reads the byte.
                let _ = (&theirs).write_all(&[1]);
            }
        }),
    );
    // One byte, or end of file if the job died with its thread.
    let waited = monoio::time::timeout(wait_max(), ours.read(vec![0u8; 1])).await;
    let mut slot = handoff.lock();
    match std::mem::replace(&mut *slot, Slot::Taken) {
        Slot::Done(result) => Some(result),
        _ if waited.is_err() => {
            *slot = Slot::Abandoned;
            None
        }
        _ => panic!("an offloaded call panicked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_runs_on_the_pool_and_its_result_comes_back() {
        let mut runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let here = std::thread::current().id();
        let (elsewhere, value) = runtime
            .block_on(read(move || (std::thread::current().id() != here, 42)))
            .expect("answered in time");
        assert!(elsewhere, "ran on a pool thread");
        assert_eq!(value, 42);
        assert_eq!(runtime.block_on(write(|| 7)), Some(7));
    }
}
