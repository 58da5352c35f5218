//! Volume health: who the volumes are and whether they are up.
//!
//! `Volumes` holds the configured servers (`-volumes`) and one health flag
//! each, kept fresh by a background thread that probes every server on an
//! interval, so redirects never wait on a volume.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::http::parse_decimal;
use crate::volume::resolve;

/// Health probes started at once by the health thread.
const PROBES_IN_FLIGHT_MAX: usize = 64;

/// The configured volume servers and their health.
pub struct Volumes {
    hosts: Vec<String>,
    healthy: Box<[AtomicBool]>,
    /// How long each volume's last probe took, in microseconds (metrics).
    probe_micros: Box<[AtomicU64]>,
}

impl Volumes {
    /// Volumes named `host:port`, all assumed healthy until probed.
    pub fn new(hosts: &[String]) -> Volumes {
        Volumes {
            hosts: hosts.to_vec(),
            healthy: hosts.iter().map(|_| AtomicBool::new(true)).collect(),
            probe_micros: hosts.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The configured hosts, in `-volumes` order.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The position of `host` in `-volumes`.
    pub fn id_of(&self, host: &str) -> Option<u16> {
        self.hosts.iter().position(|known| known == host).map(|id| id as u16)
    }

    /// Whether the last probe of volume `id` succeeded.
    pub fn is_healthy(&self, id: u16) -> bool {
        self.healthy[usize::from(id)].load(Ordering::Relaxed)
    }

    /// How long the last probe of volume `id` took.
    pub fn probe_time(&self, id: u16) -> Duration {
        Duration::from_micros(self.probe_micros[usize::from(id)].load(Ordering::Relaxed))
    }

    /// Probe every volume once, in parallel; logs changes. Returns how many are up.
    pub fn probe_all(&self, timeout: Duration) -> usize {
        let mut up = 0;
        for (batch_start, batch) in self.hosts.chunks(PROBES_IN_FLIGHT_MAX).enumerate() {
            let results: Vec<(bool, Duration)> = std::thread::scope(|scope| {
                let probes: Vec<_> = batch
                    .iter()
                    .map(|host| scope.spawn(move || timed_probe(host, timeout)))
                    .collect();
                probes
                    .into_iter()
                    .map(|probe| probe.join().unwrap_or_default())
                    .collect()
            });
            for (offset, (healthy, took)) in results.into_iter().enumerate() {
                let id = batch_start * PROBES_IN_FLIGHT_MAX + offset;
                let took_micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                self.probe_micros[id].store(took_micros, Ordering::Relaxed);
                let was = self.healthy[id].swap(healthy, Ordering::Relaxed);
                if was != healthy {
                    eprintln!("volume {} is {}", self.hosts[id], if healthy { "up" } else { "DOWN" });
                }
                up += usize::from(healthy);
            }
        }
        up
    }

    /// Probe all volumes every `interval`, forever, on the calling thread
    /// (the server's health thread).
    pub fn check_forever(&self, interval: Duration, timeout: Duration) {
        loop {
            std::thread::sleep(interval);
            self.probe_all(timeout);
        }
    }
}

/// A probe and how long it took.
fn timed_probe(host: &str, timeout: Duration) -> (bool, Duration) {
    let started = Instant::now();
    (probe(host, timeout), started.elapsed())
}

/// One blocking health probe: any HTTP answer below 500 to `HEAD /` is up.
fn probe(host: &str, timeout: Duration) -> bool {
    let attempt = || -> io::Result<bool> {
        let address = resolve(host)?
            .into_iter()
            .next()
            .ok_or_else(|| io::Error::other("no address"))?;
        let mut stream = TcpStream::connect_timeout(&address, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        // One write, one packet: `write!` on a socket would send each piece.
        stream.write_all(format!("HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())?;
        let mut head = [0u8; 32];
        let read = stream.read(&mut head)?;
        let status = head.get(9..12).filter(|_| read >= 12 && head.starts_with(b"HTTP/1."));
        Ok(status.and_then(parse_decimal).is_some_and(|status| status < 500))
    };
    attempt().unwrap_or(false)
}
