//! The command line, and the `Plan` checked and resolved from it: what to
//! drive (a master, or volumes directly), how many workers, how big a value,
//! and when to stop (a count of rounds shared by the workers, or a deadline).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

use crate::client::{master_host, VALUE_BYTES_MAX};

/// Most worker threads.
const WORKERS_MAX: usize = 4096;
const MASTER_DEFAULT: &str = "http://127.0.0.1:3000";

#[derive(Parser, Debug)]
#[command(about = "Load client for mkv: PUT, GET (through the 302) and DELETE of fresh keys")]
pub(crate) struct Args {
    /// Master to drive: expects PUT 201, GET 302 then 200 from the volume,
    /// DELETE 204 [default: http://127.0.0.1:3000]
    #[arg(long, value_name = "URL", conflicts_with = "direct")]
    master: Option<String>,
    /// No master: PUT to every one of these nginx volumes, GET from one,
    /// DELETE from all (the floor)
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',')]
    direct: Vec<String>,
    /// With --direct: the master's -subvolumes, so files land where the
    /// master would put them
    #[arg(long, default_value_t = 10, requires = "direct")]
    subvolumes: u32,
    /// Concurrent workers, each with its own keep-alive connections
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// Value size in bytes; suffixes k, m, g are powers of 1024
    #[arg(long, default_value = "1024", value_parser = parse_size)]
    size: u64,
    /// Rounds to run, each one key's PUT, GET and DELETE
    #[arg(long, default_value_t = 10_000, conflicts_with = "seconds")]
    count: u64,
    /// Run for this many seconds instead of a fixed count
    #[arg(long)]
    seconds: Option<f64>,
    /// Print one JSON line instead of the table
    #[arg(long)]
    pub(crate) json: bool,
}

/// What to run, checked and resolved from the command line.
pub(crate) struct Plan {
    pub(crate) target: Target,
    pub(crate) workers: usize,
    pub(crate) value_bytes: usize,
    limit: Limit,
    /// Rounds claimed so far, shared by the workers.
    claimed: AtomicU64,
}

pub(crate) enum Target {
    Master { host: String },
    Direct { volumes: Vec<String>, subvolumes: u32 },
}

enum Limit {
    Rounds(u64),
    Until(Instant),
}

impl Plan {
    pub(crate) fn from_args(args: &Args) -> anyhow::Result<Plan> {
        if args.workers == 0 || args.workers > WORKERS_MAX {
            bail!("--workers must be 1..={WORKERS_MAX}");
        }
        let target = if args.direct.is_empty() {
            let url = args.master.as_deref().unwrap_or(MASTER_DEFAULT);
            Target::Master {
                host: master_host(url).with_context(|| format!("bad --master {url:?}"))?,
            }
        } else {
            if args.direct.iter().any(|volume| volume.is_empty()) {
                bail!("--direct wants host:port,host:port,...");
            }
            if args.subvolumes == 0 {
                bail!("--subvolumes must be at least 1");
            }
            Target::Direct {
                volumes: args.direct.clone(),
                subvolumes: args.subvolumes,
            }
        };
        let limit = match args.seconds {
            Some(seconds) if !(seconds > 0.0 && seconds < 1e9) => bail!("bad --seconds"),
            Some(seconds) => Limit::Until(Instant::now() + Duration::from_secs_f64(seconds)),
            None => Limit::Rounds(args.count),
        };
        Ok(Plan {
            target,
            workers: args.workers,
            value_bytes: usize::try_from(args.size)?,
            limit,
            claimed: AtomicU64::new(0),
        })
    }

    /// Claims the next round; false once the count or the time is used up.
    pub(crate) fn claim(&self) -> bool {
        match self.limit {
            Limit::Rounds(count) => self.claimed.fetch_add(1, Ordering::Relaxed) < count,
            Limit::Until(deadline) => Instant::now() < deadline,
        }
    }
}

/// Parses `--size`: a byte count with an optional k, m or g suffix.
fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower.find(|c: char| !c.is_ascii_digit()).unwrap_or(lower.len());
    let (digits, suffix) = lower.split_at(digits_end);
    let unit: u64 = match suffix {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("bad size {text:?}: use e.g. 1024, 4k, 1m")),
    };
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(unit))
        .ok_or_else(|| format!("bad size {text:?}"))?;
    if bytes == 0 || bytes > VALUE_BYTES_MAX {
        return Err(format!("size must be 1..={VALUE_BYTES_MAX} bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_suffixes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("2g").is_err());
        assert!(parse_size("1x").is_err());
        assert!(parse_size("k").is_err());
    }
}
