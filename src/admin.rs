//! Maintenance while serving: a running master does `rebalance` and
//! `verify` for an operator whose command found the index locked.
//!
//! The jobs have a listener of their own (`--admin-port`, loopback unless
//! `--admin-bind`), apart from the metrics port: what may be scraped is
//! read-only, what changes data answers only to the operator. The access
//! rule: a request must be `POST /admin/rebalance` or `POST /admin/verify`
//! carrying `Authorization: Bearer <token>`, the token in
//! `--admin-token-file` (made by the master at start when the file does not
//! exist, mode 0600, and refused when others may read it), and no `Origin`
//! header. A browser sends `Origin` with every cross-origin POST and cannot
//! read the token file or set `Authorization` without a preflight nobody
//! answers, so no web page (nor a DNS-rebound name) can drive a job;
//! missing or wrong tokens get 401, an `Origin` 403, two `Authorization`
//! headers 400, another method than POST 405 (HEAD's answers have no
//! body). A verify that deletes
//! on a short grace (`orphan-grace` with `repair`, or `purge-unlinked`,
//! under `config::SHORT_GRACE_MAX`) also needs `confirm-short-grace=true`.
//!
//! The command's options are in the query (`concurrency`, `dry-run`;
//! `md5`, `repair`, `orphan-grace`, `purge-unlinked`,
//! `confirm-short-grace`, `confirm-empty-index`), parsed and range-checked
//! as the flags are (`config::in_range`, the flags' ranges), each at most
//! once, with `placement`, a
//! fingerprint of the command's `-volumes`, `-replicas` and `-subvolumes`:
//! a master that places keys otherwise refuses the job (400) rather than
//! run it with its own. One job at a time: a
//! second request while one runs answers 409. The job runs on its own
//! thread with its own I/O runtime, over the master's shared `App`, so its
//! per-key work takes the same key locks and writes through the same store
//! (cache included) as requests do. The answer is a 200 whose body is the
//! command's lines as the job goes (what the offline command prints: items
//! reported, periodic status, the summary; a dry run's plan lines are the
//! ones that do not start with `<job>: `), then `exit N`, the code the
//! offline command would exit with. Connections are read by `side_port`:
//! a head must arrive whole within its deadline, and only a complete head
//! takes one of the `ADMIN_CONNECTIONS_MAX` slots, so idle or slow clients
//! hold up nobody. The client end is `request_job`, which `mkv rebalance`
//! and `mkv verify` use.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::{App, Runtime};
use crate::config::{in_range, parse_duration, short_grace_refusal, Config, CONCURRENCY_RANGE, GRACE_RANGE};
use crate::index::IndexError;
use crate::progress::Sink;
use crate::rebalance;
use crate::side_port;
use crate::verify::{self, Settings};

/// Path prefix of the jobs on the admin port.
pub const ADMIN_PREFIX: &str = "/admin/";
/// Longest request head read on the admin port: a request line with a
/// job's options and a few headers.
const ADMIN_HEAD_BYTES_MAX: usize = 8 * 1024;
/// Requests answered at once, each on a thread of its own; one more is
/// answered 503. A slot is taken only by a complete head and held until
/// its short answer is written or its job started (a running job's stream
/// does not count), so an operator's request finds one free.
const ADMIN_CONNECTIONS_MAX: usize = 8;
/// Connections whose head is still arriving (`side_port`): they hold no
/// slot, and one more closes the oldest of them.
const ADMIN_WAITING_MAX: usize = 256;
/// The content type of every short answer.
const TEXT: &str = "text/plain; charset=utf-8";
/// Random bytes in a token the master makes (64 hex digits).
const TOKEN_RANDOM_BYTES: usize = 32;
/// Shortest token taken from a file an operator wrote.
const TOKEN_CHARS_MIN: usize = 32;
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
            confirm_empty_index: false,
            ..Settings::from_config(config)
        };
        let mut confirmed = false;
        let mut seen: Vec<&str> = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (option, value) = pair.split_once('=').unwrap_or((pair, "true"));
            // Which of two values counts would be up to whoever reads them.
            if seen.contains(&option) {
                return Err(format!("{option} is given more than once"));
            }
            seen.push(option);
            match (name, option) {
                (_, "concurrency") => {
                    let concurrency = value
                        .parse()
                        .map_err(|_| format!("concurrency is a number, got {value:?}"))?;
                    let concurrency = in_range(option, concurrency, &CONCURRENCY_RANGE)?;
                    rebalance.concurrency = concurrency;
                    settings.concurrency = concurrency;
                }
                ("rebalance", "dry-run") => rebalance.dry_run = parse_bool(option, value)?,
                ("verify", "md5") => settings.md5 = parse_bool(option, value)?,
                ("verify", "repair") => settings.repair = parse_bool(option, value)?,
                ("verify", "orphan-grace") => settings.orphan_grace = parse_grace(option, value)?,
                ("verify", "purge-unlinked") => settings.purge_unlinked = Some(parse_grace(option, value)?),
                ("verify", "confirm-short-grace") => confirmed = parse_bool(option, value)?,
                ("verify", "confirm-empty-index") => settings.confirm_empty_index = parse_bool(option, value)?,
                (_, "placement") if value != placement_fingerprint(config) => {
                    return Err(format!(
                        "this master places keys over other -volumes, -replicas or -subvolumes than the command \
                         ({} volumes, -replicas {}, -subvolumes {} here): run it with the master's",
                        config.volumes.len(),
                        config.replicas,
                        config.subvolumes
                    ))
                }
                (_, "placement") => {}
                _ => return Err(format!("{name} takes no option {option:?}")),
            }
        }
        match name {
            "rebalance" => Ok(Job::Rebalance(rebalance)),
            "verify" => {
                let refusal = short_grace_refusal(
                    settings.repair,
                    settings.orphan_grace,
                    settings.purge_unlinked,
                    confirmed,
                );
                match refusal {
                    Some(refusal) => Err(format!("{refusal}; add confirm-short-grace=true if that is meant")),
                    None => Ok(Job::Verify(settings)),
                }
            }
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

/// A grace (`orphan-grace`, `purge-unlinked`): a Go duration in the flags'
/// range.
fn parse_grace(option: &str, value: &str) -> Result<Duration, String> {
    in_range(option, parse_duration(value)?, &GRACE_RANGE)
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
pub fn runtime() -> std::io::Result<Runtime> {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
}

/// Wait until no job runs (one stops taking items once the master shuts
/// down: `app::shutting_down`) or `deadline` passes; whether none runs.
pub fn wait_for_job(deadline: Instant) -> bool {
    while JOB_RUNNING.load(Ordering::Acquire) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Clears `JOB_RUNNING` when the job's thread is done with it.
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        JOB_RUNNING.store(false, Ordering::Release);
    }
}

/// The admin port's token, from `--admin-token-file`.
pub struct Token(String);

impl Token {
    /// The master's token: read from `path`, or made (random, mode 0600)
    /// when the file does not exist. A file others may read is refused.
    pub fn load_or_create(path: &Path) -> Result<Token, String> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let shown = path.display();
        match std::fs::metadata(path) {
            Ok(metadata) if metadata.permissions().mode() & 0o077 != 0 => {
                return Err(format!(
                    "the admin token file {shown} may be read by others (mode {:o}): chmod 600 it",
                    metadata.permissions().mode() & 0o777
                ))
            }
            Ok(_) => return Token::read(path),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(format!("cannot read the admin token file {shown}: {error}")),
        }
        let mut random = [0u8; TOKEN_RANDOM_BYTES];
        openssl::rand::rand_bytes(&mut random).map_err(|error| format!("cannot make an admin token: {error}"))?;
        let token: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|error| format!("cannot create the admin token file {shown}: {error}"))?;
        file.write_all(format!("{token}\n").as_bytes())
            .map_err(|error| format!("cannot write the admin token file {shown}: {error}"))?;
        Ok(Token(token))
    }

    /// The token in `path` (surrounding whitespace dropped).
    pub fn read(path: &Path) -> Result<Token, String> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read the admin token file {shown}: {error}"))?;
        let token = text.trim();
        if token.len() < TOKEN_CHARS_MIN || !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(format!(
                "the admin token file {shown} must hold one token of at least {TOKEN_CHARS_MIN} visible characters"
            ));
        }
        Ok(Token(token.to_owned()))
    }

    /// Whether `presented` is the token, compared in constant time.
    fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        let differ = expected
            .iter()
            .zip(presented)
            .fold(0u8, |differ, (left, right)| differ | (left ^ right));
        presented.len() == expected.len() && differ == 0
    }
}

/// The admin thread: accept on `listener` for as long as the master runs;
/// `side_port` reads the heads (idle or slow clients hold no slot) and
/// hands each complete one to `serve_request` on a thread of its own.
pub fn serve_forever(listener: TcpListener, app: Arc<App>, token: Token) {
    let limits = side_port::Limits {
        name: "mkv-admin-connection",
        waiting_max: ADMIN_WAITING_MAX,
        handling_max: ADMIN_CONNECTIONS_MAX,
        head_bytes_max: ADMIN_HEAD_BYTES_MAX,
    };
    let error = side_port::serve_forever(listener, limits, move |request, stream| {
        serve_request(&app, &token, &request, stream)
    });
    eprintln!("mkv: the admin port stopped: {error}");
}

/// The `Authorization: Bearer` token of `request`: None without one; an
/// error when it carries more than one `Authorization` (which one counts
/// would be up to whoever reads it).
fn bearer(request: &side_port::Request) -> Result<Option<&[u8]>, &'static str> {
    let mut values = request.header_values("authorization");
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err("the request carries more than one Authorization header");
    }
    let token = value
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|_| value[7..].trim_ascii());
    Ok(token)
}

/// Apply the access rule to one request and start its job.
fn serve_request(app: &Arc<App>, token: &Token, request: &side_port::Request, mut stream: TcpStream) {
    let head_only = request.is_head();
    let mut refuse = |status: &str, headers: &str, message: &str| {
        let body = format!("{message}\n");
        let response = side_port::response(head_only, status, headers, TEXT, body.as_bytes());
        let _ = side_port::answer(&mut stream, &response);
    };
    if request.header_values("origin").next().is_some() {
        return refuse(
            "403 Forbidden",
            "",
            "maintenance jobs are not run for web pages (the request has an Origin header)",
        );
    }
    let presented = match bearer(request) {
        Ok(presented) => presented,
        Err(why) => return refuse("400 Bad Request", "", why),
    };
    if !presented.is_some_and(|presented| token.matches(presented)) {
        return refuse(
            "401 Unauthorized",
            "WWW-Authenticate: Bearer\r\n",
            "a maintenance job needs Authorization: Bearer <the token in --admin-token-file>",
        );
    }
    if !request.target.starts_with(ADMIN_PREFIX) {
        return refuse(
            "404 Not Found",
            "",
            "only POST /admin/rebalance and POST /admin/verify are served here",
        );
    }
    if request.method != "POST" {
        return refuse(
            "405 Method Not Allowed",
            "Allow: POST\r\n",
            "a maintenance job is a POST",
        );
    }
    start(app, &request.target, stream);
}

/// Start the job `path` asks for on `stream`: 400 for a bad request, 409
/// while another job runs, else a 200 streamed from the job's own thread.
fn start(app: &Arc<App>, path: &str, mut stream: TcpStream) {
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
        .name("mkv-admin-job".into())
        .spawn(move || stream_job(&app, &job, stream, running));
    if let Err(error) = spawned {
        eprintln!("mkv: cannot start a maintenance job: {error}");
    }
}

/// A complete short answer to a POST.
fn answer(stream: &mut TcpStream, status: &str, message: &str) {
    let body = format!("{message}\n");
    let _ = side_port::answer(stream, &side_port::response(false, status, "", TEXT, body.as_bytes()));
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
        eprintln!("mkv: maintenance job ended, exit {code}");
        let _ = stream.write_all(format!("exit {code}\n").as_bytes());
        // Only now: a master shutting down waits for this (`wait_for_job`)
        // and must not exit before the operator has the exit code.
        drop(running);
    });
}

/// `mkv rebalance` or `mkv verify` (`job`) with the index locked: ask the
/// master on `--admin-bind`:`--admin-port` (`port`) to run it with
/// `config`'s options and the token of `--admin-token-file`, copy its
/// lines to stderr (plan lines to stdout) and return the exit code it ends
/// with.
pub fn request_job(config: &Config, job: &str, port: u16) -> anyhow::Result<u8> {
    use anyhow::{bail, Context};
    let token_file = config
        .admin_token_file
        .as_deref()
        .context("the admin port needs --admin-token-file")?;
    let token = Token::read(token_file).map_err(anyhow::Error::msg)?;
    let host = match config.admin_bind {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let address = SocketAddr::new(host, port);
    let mut stream =
        TcpStream::connect(address).with_context(|| format!("cannot reach the master's admin port {address}"))?;
    let request = format!(
        "POST {ADMIN_PREFIX}{job}?{} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
        query(config, job),
        token.0
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

/// What `config` places keys by (`-volumes`, `-replicas`, `-subvolumes`),
/// as 32 hex digits: a command sends it so that a master placing keys
/// otherwise refuses the job instead of running it with its own.
fn placement_fingerprint(config: &Config) -> String {
    use md5::{Digest, Md5};
    let placement = format!("{}|{}|{}", config.volumes.join(","), config.replicas, config.subvolumes);
    Md5::digest(placement.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The query that gives a job `config`'s options.
fn query(config: &Config, job: &str) -> String {
    let mut query = format!(
        "concurrency={}&placement={}",
        config.concurrency,
        placement_fingerprint(config)
    );
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
        if config.confirm_short_grace {
            query += "&confirm-short-grace=true";
        }
        if config.confirm_empty_index {
            query += "&confirm-empty-index=true";
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
        let verify = config(
            "--concurrency 7 --md5 --repair --orphan-grace 90s --purge-unlinked 1h --confirm-empty-index verify",
        );
        let Job::Verify(settings) =
            Job::parse(&format!("/admin/verify?{}", query(&verify, "verify")), &verify).unwrap()
        else {
            panic!("not verify")
        };
        assert_eq!(settings.concurrency, 7);
        assert!(settings.md5 && settings.repair);
        assert_eq!(settings.orphan_grace, Duration::from_secs(90));
        assert_eq!(settings.purge_unlinked, Some(Duration::from_secs(3600)));
        assert!(settings.confirm_empty_index);
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

    #[test]
    fn options_are_range_checked_as_the_flags_and_given_once() {
        let server = config("server");
        for (path, why) in [
            ("/admin/verify?orphan-grace=100000h", "orphan-grace must be"),
            ("/admin/verify?purge-unlinked=87600h1s", "purge-unlinked must be"),
            ("/admin/verify?concurrency=1025", "concurrency must be"),
            ("/admin/rebalance?concurrency=many", "concurrency is a number"),
            (
                "/admin/verify?repair=true&repair=false",
                "repair is given more than once",
            ),
            ("/admin/verify?orphan-grace=2h&orphan-grace=1h", "given more than once"),
            (
                "/admin/rebalance?dry-run&dry-run=false",
                "dry-run is given more than once",
            ),
        ] {
            let refused = Job::parse(path, &server).unwrap_err();
            assert!(refused.contains(why), "{path}: {refused}");
        }
        // The flags' own ends are taken.
        assert!(Job::parse("/admin/verify?orphan-grace=87600h&concurrency=1024", &server).is_ok());
    }

    #[test]
    fn a_command_placing_keys_otherwise_is_refused() {
        let master = config("-replicas 2 server");
        let command = config("-replicas 3 rebalance");
        let refused = Job::parse(&format!("/admin/rebalance?{}", query(&command, "rebalance")), &master);
        assert!(refused.unwrap_err().contains("-replicas 2, -subvolumes 10 here"));
        let same = config("-replicas 2 rebalance");
        assert!(Job::parse(&format!("/admin/rebalance?{}", query(&same, "rebalance")), &master).is_ok());
    }

    #[test]
    fn deleting_on_a_short_grace_needs_a_confirmation() {
        let server = config("server");
        let refused = [
            "/admin/verify?repair=true&orphan-grace=0s",
            "/admin/verify?purge-unlinked=0s",
        ];
        for path in refused {
            assert!(Job::parse(path, &server).is_err(), "{path}");
            let confirmed = format!("{path}&confirm-short-grace=true");
            assert!(matches!(Job::parse(&confirmed, &server), Ok(Job::Verify(_))), "{path}");
        }
        // Looking without repairing deletes nothing.
        assert!(Job::parse("/admin/verify?orphan-grace=0s", &server).is_ok());
    }

    #[test]
    fn tokens_compare_whole() {
        let token = Token("0123456789abcdef0123456789abcdef".to_owned());
        assert!(token.matches(b"0123456789abcdef0123456789abcdef"));
        assert!(!token.matches(b"0123456789abcdef0123456789abcde"));
        assert!(!token.matches(b"0123456789abcdef0123456789abcdef0"));
        assert!(!token.matches(b""));
    }
}
