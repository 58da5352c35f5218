//! When a master may serve a record from its cache.
//!
//! With RocksDB one master owns the index, and every change goes through
//! its cache: cached records are always current. With PostgreSQL other
//! masters change records too; their changes reach this master as
//! notifications (`index::pg`), and a heartbeat confirms, about every
//! `beat`, that every change committed before it was sent has been applied
//! to the cache. A cached record is served only while the latest
//! confirmation is at most `bound` old: a GET answered later than `bound`
//! after another master committed a change of its key never gets the
//! record from before the change. Past the bound (the listener is cut off:
//! a failover), reads go to the index itself; a bound of zero never serves
//! from the cache.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the freshness is re-checked against the clock (`tick`): the
/// bound holds to within this.
pub const TICK: Duration = Duration::from_millis(5);

/// Whether cached records may be served.
pub struct Coherence {
    /// None: always (one master owns the index).
    bound: Option<Duration>,
    start: Instant,
    /// Microseconds after `start` at which the latest confirmed heartbeat
    /// was sent, plus one (0: never confirmed).
    confirmed_micros: AtomicU64,
    fresh: AtomicBool,
}

impl Coherence {
    /// Cached records are always current: this master makes every change.
    pub fn owned() -> Coherence {
        Coherence {
            bound: None,
            start: Instant::now(),
            confirmed_micros: AtomicU64::new(0),
            fresh: AtomicBool::new(true),
        }
    }

    /// Cached records may be served while the latest confirmation is at most
    /// `bound` old; not before the first.
    pub fn bounded(bound: Duration) -> Coherence {
        Coherence {
            bound: Some(bound),
            start: Instant::now(),
            confirmed_micros: AtomicU64::new(0),
            fresh: AtomicBool::new(false),
        }
    }

    /// How often the index should send heartbeats for `bound`: a few per
    /// bound, so one late beat does not close the cache.
    pub fn beat(&self) -> Duration {
        let bound = self.bound.unwrap_or(Duration::from_secs(1));
        (bound / 4).clamp(Duration::from_millis(5), Duration::from_millis(100))
    }

    /// Whether a cached record may be served now (one atomic load: the GET
    /// hit path).
    #[inline]
    pub fn fresh(&self) -> bool {
        self.fresh.load(Ordering::Acquire)
    }

    /// Every change committed before `sent` is in the cache.
    pub fn confirm(&self, sent: Instant) {
        let micros = sent.saturating_duration_since(self.start).as_micros() as u64 + 1;
        self.confirmed_micros.fetch_max(micros, Ordering::AcqRel);
        self.tick();
    }

    /// Re-check freshness against the clock (every `TICK`).
    pub fn tick(&self) {
        let Some(bound) = self.bound else { return };
        let confirmed = self.confirmed_micros.load(Ordering::Acquire);
        let fresh = confirmed > 0 && {
            let age = self
                .start
                .elapsed()
                .saturating_sub(Duration::from_micros(confirmed - 1));
            // The bound holds to within a tick: close a tick early.
            age + TICK <= bound
        };
        self.fresh.store(fresh, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_is_closed_until_confirmed_and_after_the_bound() {
        let coherence = Coherence::bounded(Duration::from_millis(200));
        assert!(!coherence.fresh(), "nothing confirmed yet");
        coherence.confirm(Instant::now());
        assert!(coherence.fresh());
        // A confirmation older than the bound closes it.
        let coherence = Coherence::bounded(Duration::from_millis(200));
        std::thread::sleep(Duration::from_millis(250));
        coherence.confirm(coherence.start + Duration::from_millis(1));
        assert!(!coherence.fresh());
    }

    #[test]
    fn zero_bound_never_serves_from_the_cache() {
        let coherence = Coherence::bounded(Duration::ZERO);
        coherence.confirm(Instant::now());
        assert!(!coherence.fresh());
        assert!(Coherence::owned().fresh());
    }
}
