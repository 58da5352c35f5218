//! Blocking calls a reactor must not wait on itself: index writes to
//! PostgreSQL, each a network round trip and a WAL flush (a millisecond or
//! more, during which a blocked reactor would answer nothing, cache hits
//! included), and its reads (a round trip).
//!
//! `write` and `read` hand the call to a small pool of threads and awaits its end on a
//! socket pair: the pool thread writes one byte when done, which the
//! reactor's driver sees like any other socket. That needs no cross-thread
//! waker in the runtime (monoio's `sync` feature) and costs a socket pair
//! per call, microseconds against the call's milliseconds. A call whose
//! request is cancelled (client gone) still runs to its end on the pool.

use std::io::Write;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use monoio::io::AsyncReadRent;

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
/// blocking the reactor.
pub async fn write<R: Send + 'static>(call: impl FnOnce() -> R + Send + 'static) -> R {
    run(&WRITES, call).await
}

/// Run the index read `call` on its pool and await its result without
/// blocking the reactor.
pub async fn read<R: Send + 'static>(call: impl FnOnce() -> R + Send + 'static) -> R {
    run(&READS, call).await
}

/// Run `call` on `pool` and await its result. Falls back to running it
/// here if the pool cannot take it.
async fn run<R: Send + 'static>(pool: &Pool, call: impl FnOnce() -> R + Send + 'static) -> R {
    let Ok((ours, theirs)) = StdUnixStream::pair() else {
        return call();
    };
    let Ok(mut ours) = monoio::net::UnixStream::from_std(ours) else {
        return call();
    };
    let slot: Arc<Mutex<Option<R>>> = Arc::new(Mutex::new(None));
    let filled = slot.clone();
    let job: Job = Box::new(move || {
        let result = call();
        *filled.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(result);
        let _ = (&theirs).write_all(&[1]);
    });
    let sent = pool
        .queue()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send(job);
    if let Err(mpsc::SendError(job)) = sent {
        job();
    }
    // One byte, or end of file if the job died with its thread: either way
    // it is over.
    let (_, _) = ours.read(vec![0u8; 1]).await;
    let result = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
    result.expect("an offloaded call panicked")
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
        let (elsewhere, value) = runtime.block_on(write(move || (std::thread::current().id() != here, 42)));
        assert!(elsewhere, "ran on a pool thread");
        assert_eq!(value, 42);
    }
}
