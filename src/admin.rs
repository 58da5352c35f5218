//! Maintenance while serving: a running master does `rebalance` and
//! `verify` for an operator whose command found the index locked.
//!
//! The job is asked for on the metrics port (`metrics::serve_forever` hands
//! the connection over): `POST /admin/rebalance` or `POST /admin/verify`,
//! the command's options in the query (`concurrency`, `dry-run`; `md5`,
//! `repair`, `orphan-grace`, `purge-unlinked`), parsed as the flags are.
//! One job at a time: a second request while one runs answers 409. The job
//! runs on its own thread with its own I/O runtime, over the master's
//! shared `App`, so its per-key work takes the same key locks and writes
//! through the same store (cache included) as requests do. The answer is a
//! 200 whose body is the command's lines as the job goes (what the offline
//! command prints: items reported, periodic status, the summary; a dry
//! run's plan lines are the ones that do not start with `<job>: `), then
//! `exit N`, the code the offline command would exit with. The client end
//! is `request_job`, which `mkv rebalance` and `mkv verify` use.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::config::{parse_duration, Config, CONCURRENCY_MAX};
use crate::index::IndexError;
use crate::progress::Sink;
use crate::rebalance;
use crate::verify::{self, Settings};

/// Path prefix of the jobs on the metrics port.
pub const ADMIN_PREFIX: &str = "/admin/";
/// How long a job's line may wait on an operator who stopped reading before
/// the answer is given up (the job goes on).
const LINE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a job is running: one at a time, so two walks never meet.
static JOB_RUNNING: AtomicBool = AtomicBool::new(false);

/// A job with its options.
#[derive(Debug)]
enum Job {
    Rebalance(rebalance::Options),
    Verify(Settings),
}

impl Job {
    /// The job `path` (`/admin/<name>?<query>`) asks for, over the master's
    /// own flags for the options the query leaves out.
    fn parse(path: &str, config: &Config) -> Result<Job, String> {
        let rest = path.strip_prefix(ADMIN_PREFIX).ok_or("not an admin path")?;
        let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut rebalance = rebalance::Options {
            concurrency: config.concurrency,
            dry_run: false,
        };
        let mut settings = Settings {
            md5: false,
            repair: false,
            purge_unlinked: None,
            ..Settings::from_config(config)
        };
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (option, value) = pair.split_once('=').unwrap_or((pair, "true"));
            match (name, option) {
                (_, "concurrency") => {
                    let concurrency = value
                        .parse()
                        .ok()
                        .filter(|concurrency| (1..=CONCURRENCY_MAX).contains(concurrency))
                        .ok_or(format!("concurrency must be 1..={CONCURRENCY_MAX}, got {value:?}"))?;
                    rebalance.concurrency = concurrency;
                    settings.concurrency = concurrency;
                }
                ("rebalance", "dry-run") => rebalance.dry_run = parse_bool(option, value)?,
                ("verify", "md5") => settings.md5 = parse_bool(option, value)?,
                ("verify", "repair") => settings.repair = parse_bool(option, value)?,
                ("verify", "orphan-grace") => settings.orphan_grace = parse_duration(value)?,
                ("verify", "purge-unlinked") => settings.purge_unlinked = Some(parse_duration(value)?),
                _ => return Err(format!("{name} takes no option {option:?}")),
            }
        }
        match name {
            "rebalance" => Ok(Job::Rebalance(rebalance)),
            "verify" => Ok(Job::Verify(settings)),
            _ => Err(format!("no job {name:?}: rebalance and verify run here")),
        }
    }

    /// Run the job on this thread, sending its lines to `sink`; the exit code.
    fn run(&self, app: &App, sink: Sink) -> u8 {
        let mut runtime = match runtime() {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = sink.send(format!("mkv: {error}"));
                return 1;
            }
        };
        let failures = match self {
            Job::Rebalance(options) => runtime
                .block_on(rebalance::run_online(app, options, Some(sink.clone())))
                .map(|summary| summary.failures()),
            Job::Verify(settings) => runtime
                .block_on(verify::run(app, settings, Some(sink.clone())))
                .map(|summary| summary.failures()),
        };
        exit_code(failures, &sink)
    }
}

/// 0 when every item went through, 1 when some failed or the index did.
fn exit_code(failures: Result<u64, IndexError>, sink: &Sink) -> u8 {
    match failures {
        Ok(0) => 0,
        Ok(_) => 1,
        Err(error) => {
            let _ = sink.send(format!("mkv: {error}"));
            1
        }
    }
}

/// `true`, `false`, `1`, `0`, or the bare option (true), as the flags take them.
fn parse_bool(option: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{option} is true or false, got {value:?}")),
    }
}

/// One monoio runtime on the calling thread for a maintenance job: its work
/// is waiting on volumes, and `--concurrency` requests in flight on one
/// thread keep them busy.
pub fn runtime() -> std::io::Result<crate::server::Runtime> {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
}

/// Clears `JOB_RUNNING` when the job's thread is done with it.
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        JOB_RUNNING.store(false, Ordering::Release);
    }
}

/// Answer `POST <path>` on `stream` (the metrics thread calls this and
/// returns at once): 400 for a bad request, 409 while another job runs,
/// else a 200 streamed from the job's own thread.
pub fn start(app: &Arc<App>, path: &str, mut stream: TcpStream) {
    let job = match Job::parse(path, &app.config) {
        Ok(job) => job,
        Err(error) => return answer(&mut stream, "400 Bad Request", &error),
    };
    if JOB_RUNNING
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return answer(&mut stream, "409 Conflict", "another maintenance job is running");
    }
    let running = Running;
    let app = app.clone();
    let spawned = std::thread::Builder::new()
        .name("mkv-admin".into())
        .spawn(move || stream_job(&app, &job, stream, running));
    if let Err(error) = spawned {
        eprintln!("mkv: cannot start a maintenance job: {error}");
    }
}

/// A complete short answer.
fn answer(stream: &mut TcpStream, status: &str, message: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{message}\n",
        message.len() + 1
    );
    let _ = stream.write_all(response.as_bytes());
}

/// Run `job` on a thread of its own and copy its lines to `stream` as they
/// come, then `exit N`. An operator who went away ends the copying, not the
/// job, which still holds `running` until it is done.
fn stream_job(app: &Arc<App>, job: &Job, mut stream: TcpStream, running: Running) {
    eprintln!("mkv: maintenance job started: {job:?}");
    let _ = stream.set_write_timeout(Some(LINE_WRITE_TIMEOUT));
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n";
    let mut connected = stream.write_all(head.as_bytes()).is_ok();
    let (sink, lines) = mpsc::channel::<String>();
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| job.run(app, sink));
        for line in lines {
            connected = connected && stream.write_all(format!("{line}\n").as_bytes()).is_ok();
        }
        let code = worker.join().unwrap_or(1);
        drop(running);
        eprintln!("mkv: maintenance job ended, exit {code}");
        let _ = stream.write_all(format!("exit {code}\n").as_bytes());
    });
}

/// `mkv rebalance` or `mkv verify` (`job`) with the index locked: ask the
/// master on `--metrics-bind`:`--metrics-port` to run it with `config`'s
/// options, copy its lines to stderr (plan lines to stdout) and return the
/// exit code it ends with.
pub fn request_job(config: &Config, job: &str, port: u16) -> anyhow::Result<u8> {
    use anyhow::{bail, Context};
    let host = match config.metrics_bind {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let address = SocketAddr::new(host, port);
    let mut stream =
        TcpStream::connect(address).with_context(|| format!("cannot reach the master's admin port {address}"))?;
    let request = format!(
        "POST {ADMIN_PREFIX}{job}?{} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        query(config, job)
    );
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 && line.trim_end() != "" {
        line.clear();
    }
    if !status.starts_with("HTTP/1.1 200") {
        let mut body = String::new();
        let _ = std::io::Read::read_to_string(&mut reader, &mut body);
        bail!(
            "the master at {address} refused the {job}: {} {}",
            status.trim_end(),
            body.trim_end()
        );
    }
    eprintln!("mkv: the index is locked; the master at {address} runs the {job}");
    let prefix = format!("{job}: ");
    for line in reader.lines() {
        let line = line.context("the connection to the master broke")?;
        if let Some(code) = line.strip_prefix("exit ") {
            return code
                .parse()
                .with_context(|| format!("the master's last line is {line:?}"));
        }
        if line.starts_with(&prefix) || line.starts_with("mkv: ") {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    bail!("the master ended the {job} without an exit code")
}

/// The query that gives a job `config`'s options.
fn query(config: &Config, job: &str) -> String {
    let mut query = format!("concurrency={}", config.concurrency);
    if job == "rebalance" {
        query += &format!("&dry-run={}", config.dry_run);
    } else {
        query += &format!(
            "&md5={}&repair={}&orphan-grace={}ns",
            config.md5,
            config.repair,
            config.orphan_grace.as_nanos()
        );
        if let Some(older_than) = config.purge_unlinked {
            query += &format!("&purge-unlinked={}ns", older_than.as_nanos());
        }
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(line: &str) -> Config {
        let args = format!("mkv -db /tmp/x -volumes a:1,b:2,c:3 {line}");
        crate::config::parse(args.split_whitespace().map(str::to_owned)).unwrap()
    }

    #[test]
    fn the_query_gives_the_job_the_commands_options() {
        let verify = config("--concurrency 7 --md5 --repair --orphan-grace 90s --purge-unlinked 1h verify");
        let Job::Verify(settings) =
            Job::parse(&format!("/admin/verify?{}", query(&verify, "verify")), &verify).unwrap()
        else {
            panic!("not verify")
        };
        assert_eq!(settings.concurrency, 7);
        assert!(settings.md5 && settings.repair);
        assert_eq!(settings.orphan_grace, Duration::from_secs(90));
        assert_eq!(settings.purge_unlinked, Some(Duration::from_secs(3600)));
        let rebalance = config("--dry-run rebalance");
        let Job::Rebalance(options) = Job::parse(
            &format!("/admin/rebalance?{}", query(&rebalance, "rebalance")),
            &rebalance,
        )
        .unwrap() else {
            panic!("not rebalance")
        };
        assert!(options.dry_run);
    }

    #[test]
    fn unknown_jobs_and_options_are_refused() {
        let server = config("server");
        assert!(Job::parse("/admin/rebuild", &server).is_err());
        assert!(Job::parse("/admin/rebalance?md5=true", &server).is_err());
        assert!(Job::parse("/admin/verify?concurrency=0", &server).is_err());
        assert!(Job::parse("/admin/verify?orphan-grace=soon", &server).is_err());
        assert!(matches!(Job::parse("/admin/verify", &server), Ok(Job::Verify(_))));
    }
}
