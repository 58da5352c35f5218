//! What a run measured and how it is reported. A `Histogram` holds one op's
//! latencies log-linearly in fixed memory; `Stats` are one worker's results
//! (histograms per op, rounds, failures and the first few shown), merged
//! across workers; a `Report` prints them as a table or one JSON line.

use std::time::{Duration, Instant};

use crate::args::{Plan, Target};
use crate::op::{Failure, Op, OPS};

/// Failures printed in full; the rest are only counted.
const FAILURES_SHOWN_MAX: usize = 10;
/// The latency histogram is exact below `2^HISTOGRAM_LINEAR_BITS` µs and keeps
/// `2^(HISTOGRAM_LINEAR_BITS - 1)` buckets per power of two above (0.2% error).
const HISTOGRAM_LINEAR_BITS: u32 = 10;
const HISTOGRAM_LINEAR_US: u64 = 1 << HISTOGRAM_LINEAR_BITS;
const HISTOGRAM_HALF_US: u64 = HISTOGRAM_LINEAR_US / 2;
/// Latencies above this (71 minutes) land in the last bucket.
const LATENCY_US_MAX: u64 = u32::MAX as u64;
const HISTOGRAM_BUCKETS: usize = histogram_bucket(LATENCY_US_MAX) + 1;

const _: () = assert!(HISTOGRAM_BUCKETS < 16 * 1024);
const _: () = assert!(histogram_floor(histogram_bucket(LATENCY_US_MAX)) <= LATENCY_US_MAX);

/// Log-linear latency histogram in microseconds: fixed memory whatever the
/// length of the run.
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

const fn histogram_bucket(us: u64) -> usize {
    if us < HISTOGRAM_LINEAR_US {
        return us as usize;
    }
    let shift = 64 - us.leading_zeros() - HISTOGRAM_LINEAR_BITS;
    let mantissa = us >> shift;
    (HISTOGRAM_LINEAR_US + (shift as u64 - 1) * HISTOGRAM_HALF_US + mantissa - HISTOGRAM_HALF_US) as usize
}

/// The smallest latency that lands in bucket `index`.
const fn histogram_floor(index: usize) -> u64 {
    let index = index as u64;
    if index < HISTOGRAM_LINEAR_US {
        return index;
    }
    let offset = index - HISTOGRAM_LINEAR_US;
    let shift = offset / HISTOGRAM_HALF_US + 1;
    (offset % HISTOGRAM_HALF_US + HISTOGRAM_HALF_US) << shift
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; HISTOGRAM_BUCKETS],
            total: 0,
            max_us: 0,
        }
    }

    fn add(&mut self, us: u64) {
        let us = us.min(LATENCY_US_MAX);
        self.counts[histogram_bucket(us)] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    fn merge(&mut self, other: &Histogram) {
        for (count, other) in self.counts.iter_mut().zip(&other.counts) {
            *count += other;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// The latency that `quantile` of the samples do not exceed (0 if none).
    fn quantile_us(&self, quantile: f64) -> u64 {
        let rank = ((quantile * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return histogram_floor(index).min(self.max_us);
            }
        }
        0
    }
}

/// Results of one worker, or of all of them merged.
pub(crate) struct Stats {
    latency: [Histogram; 3],
    pub(crate) rounds: u64,
    pub(crate) failures: u64,
    shown: Vec<String>,
}

impl Stats {
    pub(crate) fn new() -> Stats {
        Stats {
            latency: [Histogram::new(), Histogram::new(), Histogram::new()],
            rounds: 0,
            failures: 0,
            shown: Vec::new(),
        }
    }

    /// Records the latency of `op` begun at `started`, and returns now so the
    /// next op can start its clock there.
    pub(crate) fn record(&mut self, op: Op, started: Instant) -> Instant {
        let now = Instant::now();
        let us = now.duration_since(started).as_micros();
        self.latency[op as usize].add(u64::try_from(us).unwrap_or(u64::MAX));
        now
    }

    pub(crate) fn fail(&mut self, failure: Failure) {
        self.failures += 1;
        if self.shown.len() < FAILURES_SHOWN_MAX {
            self.shown.push(failure.to_string());
        }
    }

    pub(crate) fn merge(&mut self, other: Stats) {
        for (histogram, other) in self.latency.iter_mut().zip(&other.latency) {
            histogram.merge(other);
        }
        self.rounds += other.rounds;
        self.failures += other.failures;
        let room = FAILURES_SHOWN_MAX - self.shown.len();
        self.shown.extend(other.shown.into_iter().take(room));
    }
}

/// The outcome of a run, printed as a table or one JSON line.
pub(crate) struct Report {
    pub(crate) plan: Plan,
    pub(crate) stats: Stats,
    pub(crate) elapsed: Duration,
}

impl Report {
    fn target(&self) -> (&'static str, String) {
        match &self.plan.target {
            Target::Master { host } => ("master", host.clone()),
            Target::Direct { volumes, .. } => ("direct", volumes.join(",")),
        }
    }

    fn rounds_per_second(&self) -> f64 {
        self.stats.rounds as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub(crate) fn print(&self, json: bool) {
        for failure in &self.stats.shown {
            eprintln!("thrasher: FAILED {failure}");
        }
        if json {
            println!("{}", self.json());
        } else {
            self.print_table();
        }
    }

    fn print_table(&self) {
        let (mode, target) = self.target();
        let stats = &self.stats;
        println!(
            "thrasher: {mode} {target}, {} workers, {}-byte values",
            self.plan.workers, self.plan.value_bytes
        );
        println!(
            "{} write/read/delete in {:.3}s, that's {:.1} rounds/s, {:.1} ops/s",
            stats.rounds,
            self.elapsed.as_secs_f64(),
            self.rounds_per_second(),
            3.0 * self.rounds_per_second()
        );
        println!(
            "{:<8}{:>10}{:>11}{:>11}{:>11}{:>11}",
            "op", "count", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        for op in OPS {
            let histogram = &stats.latency[op as usize];
            let ms = |us: u64| us as f64 / 1000.0;
            println!(
                "{:<8}{:>10}{:>11.3}{:>11.3}{:>11.3}{:>11.3}",
                op.name(),
                histogram.total,
                ms(histogram.quantile_us(0.50)),
                ms(histogram.quantile_us(0.90)),
                ms(histogram.quantile_us(0.99)),
                ms(histogram.max_us)
            );
        }
        println!("failures: {}", stats.failures);
    }

    fn json(&self) -> String {
        let (mode, target) = self.target();
        let stats = &self.stats;
        let mut line = format!(
            "{{\"mode\":\"{mode}\",\"target\":{},\"workers\":{},\"size\":{},\"rounds\":{},\
             \"failures\":{},\"seconds\":{:.6},\"rounds_per_sec\":{:.1},\"ops_per_sec\":{:.1}",
            json_string(&target),
            self.plan.workers,
            self.plan.value_bytes,
            stats.rounds,
            stats.failures,
            self.elapsed.as_secs_f64(),
            self.rounds_per_second(),
            3.0 * self.rounds_per_second()
        );
        for op in OPS {
            let histogram = &stats.latency[op as usize];
            line += &format!(
                ",\"{}\":{{\"count\":{},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"max_us\":{}}}",
                op.name(),
                histogram.total,
                histogram.quantile_us(0.50),
                histogram.quantile_us(0.90),
                histogram.quantile_us(0.99),
                histogram.max_us
            );
        }
        line + "}"
    }
}

fn json_string(text: &str) -> String {
    let mut quoted = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => quoted += "\\\"",
            '\\' => quoted += "\\\\",
            c if c.is_control() => quoted += &format!("\\u{:04x}", c as u32),
            c => quoted.push(c),
        }
    }
    quoted + "\""
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_monotonic_and_tight() {
        let mut previous = 0;
        for us in (0..5_000).chain([1 << 20, (1 << 20) + 999, LATENCY_US_MAX]) {
            let index = histogram_bucket(us);
            assert!(index >= previous && index < HISTOGRAM_BUCKETS);
            let floor = histogram_floor(index);
            assert!(floor <= us && us - floor <= us / HISTOGRAM_HALF_US);
            previous = index;
        }
    }

    #[test]
    fn quantiles_come_from_the_samples() {
        let mut histogram = Histogram::new();
        for us in 1..=100 {
            histogram.add(us);
        }
        assert_eq!(histogram.quantile_us(0.5), 50);
        assert_eq!(histogram.quantile_us(0.99), 99);
        assert_eq!(histogram.max_us, 100);
        assert_eq!(Histogram::new().quantile_us(0.5), 0);
    }
}
