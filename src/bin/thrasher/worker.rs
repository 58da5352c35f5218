//! A worker is one thread looping over rounds until the plan says stop. A
//! round is one fresh key with a random value: against a master, PUT it, GET
//! it back through the 302 and compare every byte, then DELETE it; with
//! `--direct`, the same volume work without a master, at the paths the master
//! would use (`direct_targets`). Each worker owns its connections, buffers
//! and `Stats`, so workers share nothing but the plan's round counter.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mkv::placement::{entry_host, entry_prefix, key2path, key2volume};

use crate::args::{Plan, Target};
use crate::client::{split_location, Pool, Request};
use crate::op::{Failure, Op};
use crate::stats::Stats;

/// xorshift64*: random values without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// One worker thread's state: its connections, buffers and results.
pub(crate) struct Worker {
    id: usize,
    pool: Pool,
    rng: Rng,
    key: String,
    value: Vec<u8>,
    body: Vec<u8>,
    stats: Stats,
}

impl Worker {
    pub(crate) fn new(id: usize, plan: &Plan) -> Worker {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        let seed = nanos ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Worker {
            id,
            pool: Pool::default(),
            rng: Rng(seed | 1),
            key: String::new(),
            value: vec![0; plan.value_bytes],
            body: Vec::with_capacity(plan.value_bytes),
            stats: Stats::new(),
        }
    }

    pub(crate) fn run(mut self, plan: &Plan) -> Stats {
        let pid = std::process::id();
        let mut round = 0u64;
        while plan.claim() {
            self.key = format!("/thrash-{pid}-{}-{round}", self.id);
            self.rng.fill(&mut self.value);
            let result = match &plan.target {
                Target::Master { host } => self.master_round(host),
                Target::Direct { volumes, subvolumes } => self.direct_round(volumes, *subvolumes),
            };
            match result {
                Ok(()) => self.stats.rounds += 1,
                Err(failure) => self.stats.fail(failure),
            }
            round += 1;
        }
        self.stats
    }

    /// PUT to the master, GET through its 302, DELETE.
    fn master_round(&mut self, master: &str) -> Result<(), Failure> {
        let (key, value) = (self.key.as_str(), self.value.as_slice());
        let started = Instant::now();
        let put = Request {
            op: Op::Put,
            method: "PUT",
            host: master,
            path: key,
            body: value,
        };
        put.expect(&self.pool.request(&put, &mut self.body)?, 201)?;
        let got = self.stats.record(Op::Put, started);
        let get = Request {
            op: Op::Get,
            method: "GET",
            body: &[],
            ..put
        };
        let redirect = self.pool.request(&get, &mut self.body)?;
        get.expect(&redirect, 302)?;
        let location = redirect.location.as_deref().unwrap_or_default();
        let Some((host, path)) = split_location(location, master) else {
            return Err(Failure::Redirect {
                url: get.url(),
                location: redirect.location.clone(),
            });
        };
        let read = Request { host, path, ..get };
        read.expect(&self.pool.request(&read, &mut self.body)?, 200)?;
        compare(&read, value, &self.body)?;
        let deleted = self.stats.record(Op::Get, got);
        let delete = Request {
            op: Op::Delete,
            method: "DELETE",
            ..get
        };
        delete.expect(&self.pool.request(&delete, &mut self.body)?, 204)?;
        self.stats.record(Op::Delete, deleted);
        Ok(())
    }

    /// The same volume work without a master: PUT to every volume, GET from
    /// one, DELETE from every volume, at the master's paths.
    fn direct_round(&mut self, volumes: &[String], subvolumes: u32) -> Result<(), Failure> {
        let targets = direct_targets(&self.key, volumes, subvolumes);
        let value = self.value.as_slice();
        let started = Instant::now();
        let puts: Vec<_> = targets
            .iter()
            .map(|target| Request::to(Op::Put, "PUT", target, value))
            .collect();
        self.pool.fan_out(&puts, 201, &mut self.body)?;
        let got = self.stats.record(Op::Put, started);
        let read = Request::to(Op::Get, "GET", &targets[0], &[]);
        read.expect(&self.pool.request(&read, &mut self.body)?, 200)?;
        compare(&read, value, &self.body)?;
        let deleted = self.stats.record(Op::Get, got);
        let deletes: Vec<_> = targets
            .iter()
            .map(|target| Request::to(Op::Delete, "DELETE", target, &[]))
            .collect();
        self.pool.fan_out(&deletes, 204, &mut self.body)?;
        self.stats.record(Op::Delete, deleted);
        Ok(())
    }
}

/// Checks that a value came back byte for byte.
fn compare(read: &Request, expected: &[u8], got: &[u8]) -> Result<(), Failure> {
    if expected == got {
        return Ok(());
    }
    let first_difference = expected
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(got.len()));
    Err(Failure::Bytes {
        url: read.url(),
        expected_bytes: expected.len(),
        got_bytes: got.len(),
        first_difference,
    })
}

/// Where the master would store `key` on each of `volumes` (all of them
/// replicas): `(host:port, path)`, best placed first.
fn direct_targets(key: &str, volumes: &[String], subvolumes: u32) -> Vec<(String, String)> {
    let file = key2path(key.as_bytes());
    key2volume(key.as_bytes(), volumes, volumes.len(), subvolumes)
        .iter()
        .map(|entry| (entry_host(entry).to_owned(), format!("{}{file}", entry_prefix(entry))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_targets_are_the_masters_layout() {
        let volumes = vec!["a:1".to_owned(), "b:2".to_owned(), "c:3".to_owned()];
        let targets = direct_targets("/thrash-1-2-3", &volumes, 10);
        let entries = key2volume(b"/thrash-1-2-3", &volumes, 3, 10);
        assert_eq!(targets.len(), 3);
        for ((host, path), entry) in targets.iter().zip(&entries) {
            assert_eq!(format!("{host}{}", &path[..5]), *entry);
            assert_eq!(&path[5..], key2path(b"/thrash-1-2-3"));
        }
        let flat = direct_targets("/thrash-1-2-3", &volumes, 1);
        assert!(flat.iter().all(|(_, path)| *path == key2path(b"/thrash-1-2-3")));
    }
}
