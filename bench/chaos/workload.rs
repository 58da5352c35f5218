//! What runs during the chaos: writer threads, each owning its keys and
//! their ledger, and one fault thread that owns the cluster.
//!
//! A writer loops over random operations on its own keys (PUT of fresh and
//! reused keys, GET following the 302, DELETE, UNLINK, RELINK), feeding each
//! answer to the key's ledger. Keys are never shared between writers, so a
//! 409 cannot come from the harness itself. The fault thread, at random
//! moments, `kill -9`s and restarts the master, SIGKILLs a volume's process
//! group and restarts it, or freezes a volume with SIGSTOP for longer than
//! `-voltimeout`, one fault at a time, until its quotas are spent.

use crate::client::Client;
use crate::cluster::Cluster;
use crate::ledger::{md5_hex, splitmix64, Anomaly, KeyLedger, Outcome, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Keys a writer keeps at most: beyond it, PUTs reuse keys (after DELETE or
/// UNLINK) instead of adding new ones, which bounds the disk the run uses
/// (~300 keys x ~270 KiB mean x replicas per writer).
const KEYS_PER_WRITER_MAX: usize = 300;

/// Value sizes: most small, some medium, a few large (a PUT of several
/// pieces of the master's 1 MiB streaming, so a kill can land mid-value).
const SMALL_BYTES: std::ops::Range<usize> = 1024..64 * 1024;
const MEDIUM_BYTES: std::ops::Range<usize> = 64 * 1024..1024 * 1024;
const LARGE_BYTES: std::ops::Range<usize> = 1024 * 1024..4 * 1024 * 1024;
/// Percent of values that are small, and small or medium.
const SMALL_PERCENT: u64 = 70;
const SMALL_OR_MEDIUM_PERCENT: u64 = 95;

/// Random picks tried to find a key in the wanted state before the writer
/// does something else.
const PICK_TRIES: usize = 16;

/// Pause after an operation that got no answer, so writers do not spin
/// while the master is down.
const FAILURE_BACKOFF: Duration = Duration::from_millis(50);

/// Client timeout: longer than anything the master may take with a frozen
/// volume (its own volume timeout is ~1 s per operation).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between faults, and how long a killed server stays down.
const FAULT_GAP_MS: std::ops::Range<u64> = 300..2500;
const MASTER_DOWN_MS: std::ops::Range<u64> = 0..300;
const VOLUME_DOWN_MS: std::ops::Range<u64> = 0..1500;
/// A freeze lasts this many times `-voltimeout`, in tenths (1.5x to 3x).
const FREEZE_TENTHS: std::ops::Range<u64> = 15..30;

/// State shared by the threads of a run.
#[derive(Default)]
pub struct Shared {
    pub stop: AtomicBool,
    /// The fault thread spent its quotas.
    pub faults_done: AtomicBool,
    pub anomalies: Mutex<Vec<Anomaly>>,
    pub counters: Counters,
}

impl Shared {
    pub fn report(&self, anomaly: Option<Anomaly>) {
        if let Some(anomaly) = anomaly {
            eprintln!("chaos: {:?} {}: {}", anomaly.kind, anomaly.key, anomaly.detail);
            self.anomalies
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .push(anomaly);
        }
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Operations and their answers, over the whole run.
#[derive(Default)]
pub struct Counters {
    pub puts: AtomicU64,
    pub puts_created: AtomicU64,
    pub deletes: AtomicU64,
    pub unlinks: AtomicU64,
    pub relinks: AtomicU64,
    pub gets: AtomicU64,
    /// Reads of a value's bytes from a volume that matched the ledger.
    pub reads_verified: AtomicU64,
    /// Reads after a 302 that got no 200 from the volume.
    pub read_misses: AtomicU64,
    /// Operations answered 5xx or not answered.
    pub failed: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A small deterministic random source.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        splitmix64(&mut self.0)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    pub fn within(&mut self, range: std::ops::Range<u64>) -> u64 {
        range.start + self.below(range.end - range.start)
    }
}

fn outcome(result: &std::io::Result<crate::client::Reply>) -> Outcome {
    match result {
        Ok(reply) => Outcome::Status(reply.status),
        Err(error) => Outcome::Failed(error.to_string()),
    }
}

fn count_failure(shared: &Shared, outcome: &Outcome) {
    match outcome {
        Outcome::Status(status) if *status < 500 => {}
        Outcome::Status(_) => bump(&shared.counters.failed),
        Outcome::Failed(_) => {
            bump(&shared.counters.failed);
            std::thread::sleep(FAILURE_BACKOFF);
        }
    }
}

/// The operations, each feeding its answer to the key's ledger. The final
/// check uses them too.
pub struct Operations<'a> {
    pub client: Client,
    pub master: String,
    pub shared: &'a Shared,
}

impl Operations<'_> {
    pub fn put(&mut self, entry: &mut KeyLedger, value: Value) -> Outcome {
        bump(&self.shared.counters.puts);
        let result = self
            .client
            .request("PUT", &self.master, &entry.key, Some(&value.bytes()));
        let outcome = outcome(&result);
        if matches!(outcome, Outcome::Status(201)) {
            bump(&self.shared.counters.puts_created);
        }
        count_failure(self.shared, &outcome);
        self.shared.report(entry.put(value, &outcome));
        outcome
    }

    pub fn delete(&mut self, entry: &mut KeyLedger) -> Outcome {
        bump(&self.shared.counters.deletes);
        let outcome = outcome(&self.client.request("DELETE", &self.master, &entry.key, None));
        count_failure(self.shared, &outcome);
        self.shared.report(entry.delete(&outcome));
        outcome
    }

    pub fn unlink(&mut self, entry: &mut KeyLedger) -> Outcome {
        bump(&self.shared.counters.unlinks);
        let outcome = outcome(&self.client.request("UNLINK", &self.master, &entry.key, None));
        count_failure(self.shared, &outcome);
        self.shared.report(entry.unlink(&outcome));
        outcome
    }

    pub fn relink(&mut self, entry: &mut KeyLedger) -> Outcome {
        bump(&self.shared.counters.relinks);
        let outcome = outcome(&self.client.request("RELINK", &self.master, &entry.key, None));
        count_failure(self.shared, &outcome);
        self.shared.report(entry.relink(&outcome));
        outcome
    }

    /// GET from the master and, on a 302, the bytes from the volume named.
    /// Returns the master's answer and whether the bytes were read.
    pub fn get(&mut self, entry: &mut KeyLedger) -> (Outcome, bool) {
        bump(&self.shared.counters.gets);
        let result = self.client.request("GET", &self.master, &entry.key, None);
        let outcome = outcome(&result);
        count_failure(self.shared, &outcome);
        self.shared.report(entry.get(&outcome));
        let location = match &result {
            Ok(reply) if reply.status == 302 && !entry.retired => reply.header("location").map(str::to_string),
            _ => None,
        };
        let Some(location) = location else {
            return (outcome, false);
        };
        match self.client.get_url(&location) {
            Ok(reply) if reply.status == 200 => {
                let anomaly = entry.read(&location, &md5_hex(&reply.body), reply.body.len());
                if anomaly.is_none() {
                    bump(&self.shared.counters.reads_verified);
                }
                self.shared.report(anomaly);
                (outcome, true)
            }
            other => {
                let answer = match other {
                    Ok(reply) => reply.status.to_string(),
                    Err(error) => error.to_string(),
                };
                entry.note(format!("  read {location} -> {answer}"));
                bump(&self.shared.counters.read_misses);
                (outcome, false)
            }
        }
    }
}

/// A writer: its keys (`/chaos/w<id>/<n>`) and the operations on them.
pub struct Writer<'a> {
    id: usize,
    rng: Rng,
    operations: Operations<'a>,
    keys: Vec<KeyLedger>,
}

impl<'a> Writer<'a> {
    pub fn new(id: usize, seed: u64, master: String, shared: &'a Shared) -> Writer<'a> {
        Writer {
            id,
            rng: Rng::new(seed ^ (id as u64).wrapping_mul(0x5851_f42d_4c95_7f2d)),
            operations: Operations {
                client: Client::new(CLIENT_TIMEOUT),
                master,
                shared,
            },
            keys: Vec::new(),
        }
    }

    /// Run until stopped or `rounds` operations are done (0: no bound).
    pub fn run(mut self, rounds: u64) -> Vec<KeyLedger> {
        let mut done = 0;
        while !self.operations.shared.stopped() && (rounds == 0 || done < rounds) {
            self.round();
            done += 1;
        }
        self.keys
    }

    fn round(&mut self) {
        let roll = self.rng.below(100);
        let picked = match roll {
            0..=34 => None,
            35..=44 => self.pick(|entry| !entry.may_be_live()),
            45..=64 => self.pick(KeyLedger::may_be_live),
            65..=74 => self.pick(|_| true),
            75..=86 => self.pick(KeyLedger::may_be_live),
            _ => self.pick(KeyLedger::may_be_unlinked),
        };
        let Some(index) = picked else {
            return self.put_fresh_or_reuse();
        };
        let mut entry = std::mem::replace(&mut self.keys[index], KeyLedger::new(String::new()));
        match roll {
            35..=44 => {
                let value = self.value();
                self.operations.put(&mut entry, value);
            }
            45..=64 => {
                self.operations.get(&mut entry);
            }
            65..=74 => {
                self.operations.delete(&mut entry);
            }
            75..=86 => {
                self.operations.unlink(&mut entry);
            }
            _ => {
                self.operations.relink(&mut entry);
            }
        }
        self.keys[index] = entry;
    }

    /// A PUT of a new key, or once there are enough keys, of one that is not live.
    fn put_fresh_or_reuse(&mut self) {
        let index = if self.keys.len() < KEYS_PER_WRITER_MAX {
            self.keys
                .push(KeyLedger::new(format!("/chaos/w{}/{}", self.id, self.keys.len())));
            Some(self.keys.len() - 1)
        } else {
            self.pick(|entry| !entry.may_be_live())
        };
        let Some(index) = index else {
            // Every key may be live: make room instead.
            if let Some(index) = self.pick(|_| true) {
                let mut entry = std::mem::replace(&mut self.keys[index], KeyLedger::new(String::new()));
                self.operations.delete(&mut entry);
                self.keys[index] = entry;
            }
            return;
        };
        let value = self.value();
        let mut entry = std::mem::replace(&mut self.keys[index], KeyLedger::new(String::new()));
        self.operations.put(&mut entry, value);
        self.keys[index] = entry;
    }

    /// A random key of this writer, not retired, that `wanted` accepts.
    fn pick(&mut self, wanted: impl Fn(&KeyLedger) -> bool) -> Option<usize> {
        (0..PICK_TRIES).find_map(|_| {
            let index = self.rng.below(self.keys.len() as u64) as usize;
            let entry = self.keys.get(index)?;
            (!entry.retired && wanted(entry)).then_some(index)
        })
    }

    fn value(&mut self) -> Value {
        let roll = self.rng.below(100);
        let range = if roll < SMALL_PERCENT {
            SMALL_BYTES
        } else if roll < SMALL_OR_MEDIUM_PERCENT {
            MEDIUM_BYTES
        } else {
            LARGE_BYTES
        };
        let size = self.rng.within(range.start as u64..range.end as u64) as usize;
        Value::new(self.rng.next(), size)
    }
}

/// How many faults of each kind to do, and how long a freeze lasts.
pub struct FaultPlan {
    pub master_kills: u32,
    pub volume_faults: u32,
    pub voltimeout: Duration,
    pub seed: u64,
}

/// What the fault thread did.
#[derive(Default, Debug)]
pub struct FaultCounts {
    pub master_kills: u32,
    pub volume_kills: u32,
    pub volume_freezes: u32,
    /// Restarts that did not come up (each is retried until it does).
    pub restart_failures: Vec<String>,
    /// Servers that exited without being killed.
    pub unexpected_exits: Vec<String>,
}

impl FaultCounts {
    pub fn volume_faults(&self) -> u32 {
        self.volume_kills + self.volume_freezes
    }
}

/// Sleep up to `duration`, returning early when the run stops.
fn nap(duration: Duration, shared: &Shared) {
    let step = Duration::from_millis(20);
    let deadline = std::time::Instant::now() + duration;
    while !shared.stopped() && std::time::Instant::now() < deadline {
        std::thread::sleep(step.min(deadline.saturating_duration_since(std::time::Instant::now())));
    }
}

/// Restart with `start` until it comes up or the run stops; failures counted.
fn restart(what: &str, counts: &mut FaultCounts, shared: &Shared, mut start: impl FnMut() -> Result<(), String>) {
    while let Err(error) = start() {
        eprintln!("chaos: restarting {what} failed: {error}");
        counts.restart_failures.push(format!("{what}: {error}"));
        if shared.stopped() {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The fault thread: gives the cluster back when the run stops.
pub fn run_faults(mut cluster: Cluster, plan: FaultPlan, shared: &Shared) -> (Cluster, FaultCounts) {
    let mut rng = Rng::new(plan.seed ^ 0xfa17);
    let mut counts = FaultCounts::default();
    while !shared.stopped() {
        let masters_left = plan.master_kills - counts.master_kills;
        let volumes_left = plan.volume_faults - counts.volume_faults();
        if masters_left + volumes_left == 0 {
            shared.faults_done.store(true, Ordering::Relaxed);
            break;
        }
        nap(Duration::from_millis(rng.within(FAULT_GAP_MS)), shared);
        if shared.stopped() {
            break;
        }
        if let Some(status) = cluster.master.exited() {
            counts
                .unexpected_exits
                .push(format!("master exited by itself: {status}"));
            cluster.master.kill();
            restart("master", &mut counts, shared, || cluster.master.start());
        }
        if rng.below(u64::from(masters_left + volumes_left)) < u64::from(masters_left) {
            cluster.master.kill();
            counts.master_kills += 1;
            nap(Duration::from_millis(rng.within(MASTER_DOWN_MS)), shared);
            restart("master", &mut counts, shared, || cluster.master.start());
            continue;
        }
        let number = rng.below(cluster.volumes.len() as u64) as usize;
        let volume = &mut cluster.volumes[number];
        if !volume.running() {
            counts
                .unexpected_exits
                .push(format!("volume {} exited by itself", volume.host()));
        }
        if rng.below(2) == 0 {
            volume.kill();
            counts.volume_kills += 1;
            nap(Duration::from_millis(rng.within(VOLUME_DOWN_MS)), shared);
            let host = volume.host();
            restart(&format!("volume {host}"), &mut counts, shared, || volume.start());
        } else {
            volume.freeze();
            counts.volume_freezes += 1;
            nap(plan.voltimeout * rng.within(FREEZE_TENTHS) as u32 / 10, shared);
            volume.thaw();
        }
    }
    (cluster, counts)
}
