//! The master stays up and keeps its promises under conditions a production
//! master meets: verbose logging of pipelined requests, a low file-descriptor
//! limit, refused uploads too large to drain, and a command line that names a
//! volume twice.
//!
//! Two parts of the panic policy (ARCHITECTURE.md, "Panics") have no test
//! here, because no black-box input reaches them once the `-v` log is fixed:
//! no known request makes a handler panic (so containment is not triggered
//! from outside), and no request can end a reactor thread (so the watchdog
//! that makes that fatal is covered by unit tests in `server.rs`).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::{free_port, mkv, request, value, wait_for_port, Cluster};

/// How long a test waits for an answer the master should give at once; a
/// master that lost a reactor or its fds never answers.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// New connections opened after a risky request: with two reactors and
/// `SO_REUSEPORT` spreading connections by their ports, each reactor gets
/// some of them except with probability 2^-31.
const CONNECTIONS_AFTER: usize = 32;

/// Read from `stream` until the server closes it or `ANSWER_TIMEOUT` passes.
fn read_until_closed(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
    let mut text = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => text.extend_from_slice(&buffer[..read]),
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

fn status_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|line| line.starts_with("HTTP/1.1 ")).collect()
}

/// Every one of `CONNECTIONS_AFTER` new connections gets its 302 for `path`.
fn every_reactor_answers(port: u16, path: &str) {
    for attempt in 0..CONNECTIONS_AFTER {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let get = format!("GET {path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n");
        stream.write_all(get.as_bytes()).unwrap();
        let text = read_until_closed(&mut stream);
        assert!(
            text.starts_with("HTTP/1.1 302"),
            "connection {attempt} after the pipelined PUT: {text:?}"
        );
    }
}

#[test]
fn verbose_master_answers_a_chunked_put_pipelined_behind_a_get() {
    let cluster = Cluster::start(3, &["-v"]);
    assert_eq!(
        request("PUT", &cluster.url("/pipelined/present"), Some(b"here")).status,
        201
    );
    // A PUT of a new key reads its body through the connection's buffer; a
    // PUT of a live key is refused and its body drained through it. Either
    // way the buffer is compacted under the pipelined request's head, which
    // starts past a long first request.
    let padding = "p".repeat(2000);
    for (key, expected) in [("/pipelined/new", "201"), ("/pipelined/present", "403")] {
        let mut stream = TcpStream::connect(("127.0.0.1", cluster.port())).unwrap();
        let heads = format!(
            "GET /pipelined/present HTTP/1.1\r\nHost: m\r\nX-Padding: {padding}\r\n\r\n\
             PUT {key} HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        stream.write_all(heads.as_bytes()).unwrap();
        // The body arrives in a later read than the heads, and the next
        // request later still.
        std::thread::sleep(Duration::from_millis(200));
        stream.write_all(b"5\r\nhello\r\n0\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        stream
            .write_all(b"GET /pipelined/present HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
            .unwrap();
        let text = read_until_closed(&mut stream);
        let statuses = status_lines(&text);
        assert_eq!(statuses.len(), 3, "PUT {key}: {text:?}");
        assert!(statuses[0].starts_with("HTTP/1.1 302"), "{text}");
        assert!(statuses[1].starts_with(&format!("HTTP/1.1 {expected}")), "{text}");
        assert!(statuses[2].starts_with("HTTP/1.1 302"), "{text}");
    }
    every_reactor_answers(cluster.port(), "/pipelined/present");
    let log = cluster.master_log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("/pipelined/new 201"),
        "the log names the PUT's own path: {log}"
    );
    assert!(log.contains("/pipelined/present 403"), "{log}");
}

/// A master started by hand with a file-descriptor limit; killed on drop.
struct LimitedMaster {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl LimitedMaster {
    /// Replace `cluster`'s master with one whose RLIMIT_NOFILE is `soft`/`hard`.
    fn start(cluster: &mut Cluster, soft: u64, hard: u64) -> LimitedMaster {
        cluster.master = None;
        let port = free_port();
        let log = cluster.dir.path().join(format!("limited-master-{soft}-{hard}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut command = mkv();
        command
            .args(cluster.master_args(port))
            .arg("server")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        // SAFETY: setrlimit is async-signal-safe; the closure allocates nothing.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        wait_for_port(port);
        LimitedMaster { child, port, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LimitedMaster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request that must be answered within `ANSWER_TIMEOUT`.
fn answered(method: &str, url: &str, body: Option<&[u8]>) -> u16 {
    let agent = ureq::AgentBuilder::new().redirects(0).timeout(ANSWER_TIMEOUT).build();
    let request = agent.request(method, url);
    let result = match body {
        Some(body) => request.send_bytes(body),
        None => request.call(),
    };
    match result {
        Ok(response) => response.status(),
        Err(ureq::Error::Status(status, _)) => status,
        Err(error) => panic!("{method} {url}: {error}"),
    }
}

/// Open `count` keep-alive connections that each sent one GET and then idle.
fn idle_connections(port: u16, count: usize) -> Vec<TcpStream> {
    let streams: Vec<TcpStream> = (0..count)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream.write_all(b"GET /idle HTTP/1.1\r\nHost: m\r\n\r\n").unwrap();
            stream
        })
        .collect();
    // Let the master accept them (or fail to) before the real requests.
    std::thread::sleep(Duration::from_millis(500));
    streams
}

/// More idle client connections than the master's soft limit, then writes
/// and reads that must still be served. Returns the master's log.
fn serves_writes_beside_idle_connections(soft: u64, hard: u64) -> String {
    let mut cluster = Cluster::start(3, &[]);
    let master = LimitedMaster::start(&mut cluster, soft, hard);
    let _idle = idle_connections(master.port, soft as usize + 150);
    for i in 0..8 {
        let url = master.url(&format!("/fd-limit/{i}"));
        assert_eq!(answered("PUT", &url, Some(&value(1000, i))), 201, "{}", master.log());
        assert_eq!(answered("GET", &url, None), 302, "{}", master.log());
    }
    let log = master.log();
    assert!(!log.contains("panicked"), "{log}");
    log
}

#[test]
fn soft_fd_limit_is_raised_to_the_hard_limit() {
    let log = serves_writes_beside_idle_connections(256, 4096);
    assert!(log.contains("fd limit 4096 (raised from 256)"), "{log}");
}

#[test]
fn client_connections_leave_fds_for_volumes_when_the_limit_is_low() {
    let log = serves_writes_beside_idle_connections(256, 256);
    assert!(log.contains("fd limit 256"), "{log}");
}

/// Bytes of a refused upload: well over what the master drains on a live
/// connection (`DRAIN_BYTES_MAX`, 16 MiB).
const LARGE_BODY_BYTES: usize = 40 << 20;
/// Refused uploads per case: a reset is a race, so try it more than once.
const REFUSED_ROUNDS: usize = 4;

/// The status a client that writes the whole body before reading gets.
fn refused_status(url: &str, body: &[u8], chunked: bool) -> u16 {
    let agent = ureq::AgentBuilder::new().timeout(ANSWER_TIMEOUT * 4).build();
    let result = if chunked {
        agent.put(url).send(io::Cursor::new(body))
    } else {
        agent.put(url).send_bytes(body)
    };
    match result {
        Ok(response) => response.status(),
        Err(ureq::Error::Status(status, _)) => status,
        Err(error) => panic!("PUT {url}: the client saw {error} instead of an answer"),
    }
}

#[test]
fn refused_large_put_gets_its_answer_not_a_reset() {
    let cluster = Cluster::start(3, &[]);
    let url = cluster.url("/large/present");
    assert_eq!(request("PUT", &url, Some(b"here")).status, 201);
    let body = vec![b'x'; LARGE_BODY_BYTES];
    for round in 0..REFUSED_ROUNDS {
        assert_eq!(refused_status(&url, &body, false), 403, "round {round}");
        assert_eq!(refused_status(&url, &body, true), 403, "round {round}, chunked");
    }

    // 409: another PUT holds the key's lock while it waits for its body.
    let locked = "/large/locked";
    let mut holder = TcpStream::connect(("127.0.0.1", cluster.port())).unwrap();
    holder
        .write_all(format!("PUT {locked} HTTP/1.1\r\nHost: m\r\nContent-Length: 100\r\n\r\nstart").as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for round in 0..REFUSED_ROUNDS {
        assert_eq!(refused_status(&cluster.url(locked), &body, false), 409, "round {round}");
    }
    drop(holder);
    let log = cluster.master_log();
    assert!(!log.contains("panicked"), "{log}");
}

/// Run `command` and return its exit code and stderr; fail if it is still
/// running after `ANSWER_TIMEOUT` (a server that started).
fn exit_of(command: &mut Command) -> (Option<i32>, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} started instead of refusing its command line");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (child.wait().unwrap().code(), stderr)
}

#[test]
fn a_volume_listed_twice_is_refused_at_start() {
    let cluster = Cluster::start(3, &[]);
    let [first, second] = [cluster.volumes[0].host(), cluster.volumes[1].host()];
    let first_port = cluster.volumes[0].port;
    for list in [
        format!("{first},{first},{second}"),
        // Host names are case-insensitive; a port may be written with zeros.
        format!("localhost:{first_port},{second},LOCALHOST:{first_port}"),
        format!("127.0.0.1:0{first_port},{first},{second}"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db").display().to_string();
        let port = free_port().to_string();
        let (code, stderr) = exit_of(mkv().args([
            "-db",
            &db,
            "-volumes",
            &list,
            "-replicas",
            "2",
            "-port",
            &port,
            "server",
        ]));
        assert_eq!(code, Some(2), "-volumes {list}: {stderr}");
        assert!(stderr.contains("more than once"), "-volumes {list}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
