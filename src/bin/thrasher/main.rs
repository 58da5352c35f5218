//! `thrasher`: the load client minikeyvalue users run against a master.
//!
//! Each of `--workers` threads loops over rounds. A round is one fresh key
//! `/thrash-<pid>-<worker>-<n>` with a random value: PUT it, GET it back
//! (following the master's 302 to the volume) and compare every byte, then
//! DELETE it. `--direct` leaves the master out and does the volume work of a
//! round itself (PUT to every volume, GET from one, DELETE from all, at the
//! paths the master would use, so nginx does the same file and directory
//! work), which is the floor a master can approach. The report gives rounds/s, ops/s (three
//! ops per round) and latency percentiles per op; any I/O error, unexpected
//! status or wrong byte is counted, the first few are shown, and the exit code
//! becomes 1.
//!
//! The HTTP client is a deliberately tiny blocking HTTP/1.1 keep-alive client
//! on `std::net::TcpStream`, one connection per (worker, host:port), so the
//! numbers measure the servers and not a client runtime. Response heads and
//! bodies are read by pure functions over `BufRead`, tested without sockets.
//!
//! One file per concern, each importing only those listed before it: `op`
//! (the three ops of a round and the `Failure` that stops one), `client` (the
//! HTTP/1.1 client), `args` (the command line and the `Plan` made of it),
//! `stats` (latency histograms, merged results, the report) and `worker` (the
//! rounds, against a master or direct to the volumes).

mod args;
mod client;
mod op;
mod stats;
mod worker;

use std::process::ExitCode;
use std::thread;
use std::time::Instant;

use clap::Parser;

use crate::args::{Args, Plan};
use crate::stats::{Report, Stats};
use crate::worker::Worker;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(report) if report.stats.failures == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("thrasher: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<Report> {
    let plan = Plan::from_args(args)?;
    let started = Instant::now();
    let plan_ref = &plan;
    let stats = thread::scope(|scope| {
        let workers: Vec<_> = (0..plan.workers)
            .map(|id| scope.spawn(move || Worker::new(id, plan_ref).run(plan_ref)))
            .collect();
        let mut total = Stats::new();
        for worker in workers {
            total.merge(worker.join().expect("worker panicked"));
        }
        total
    });
    let report = Report {
        plan,
        stats,
        elapsed: started.elapsed(),
    };
    report.print(args.json);
    Ok(report)
}
