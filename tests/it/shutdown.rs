//! Shutdown: SIGTERM or SIGINT stops accepting, lets requests in flight
//! finish within `--shutdown-timeout`, closes idle connections and exits 0;
//! a PUT cut by the limit fails cleanly (never a live key without bytes).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::cluster::{fetch, request, value, Cluster};

/// Longer than any shutdown here takes when it does not wait for the limit.
const EXIT_WAIT: Duration = Duration::from_secs(20);

fn terminate(cluster: &mut Cluster) {
    let pid = cluster.master_process().id() as i32;
    // SAFETY: kill takes no pointers.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

/// The master's exit status, if it exits within `timeout`.
fn exit_within(cluster: &mut Cluster, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = cluster.master_process().try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A keep-alive connection that sent one GET and read its answer.
fn idle_connection(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(EXIT_WAIT)).unwrap();
    stream.write_all(b"GET /absent HTTP/1.1\r\nHost: mkv\r\n\r\n").unwrap();
    let mut answer = [0u8; 512];
    let read = stream.read(&mut answer).unwrap();
    assert!(answer[..read].starts_with(b"HTTP/1.1 404"));
    stream
}

/// A PUT of `size` bytes whose head and first `sent` bytes are on the wire.
fn start_put(port: u16, key: &str, body: &[u8], sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(EXIT_WAIT)).unwrap();
    let head = format!(
        "PUT {key} HTTP/1.1\r\nHost: mkv\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..sent]).unwrap();
    stream
}

fn read_status(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn sigterm_closes_idle_keep_alive_connections_and_exits_0_without_waiting_for_the_limit() {
    let mut cluster = Cluster::start(3, &["--shutdown-timeout", "60s"]);
    let port = cluster.port();
    let mut idle: Vec<TcpStream> = (0..4).map(|_| idle_connection(port)).collect();
    terminate(&mut cluster);
    let status = exit_within(&mut cluster, EXIT_WAIT).expect("the master exits before its 60 s limit");
    assert_eq!(status.code(), Some(0), "{}", cluster.master_log());
    for stream in &mut idle {
        let mut rest = Vec::new();
        assert_eq!(
            stream.read_to_end(&mut rest).unwrap(),
            0,
            "an idle connection is closed, not answered"
        );
    }
}

#[test]
fn sigterm_during_a_slow_put_lets_it_finish_then_exits_0_and_the_value_survives() {
    let mut cluster = Cluster::start(3, &["--shutdown-timeout", "30s"]);
    let port = cluster.port();
    let body = value(8 << 20, 11);
    let mut put = start_put(port, "/shutdown/slow", &body, 1 << 20);
    std::thread::sleep(Duration::from_millis(200));
    terminate(&mut cluster);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        cluster.master_process().try_wait().unwrap().is_none(),
        "the master waits for the PUT"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the master accepts no new connection once told to stop"
    );
    for piece in body[1 << 20..].chunks(1 << 20) {
        put.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(read_status(&mut put), "HTTP/1.1 201 Created");
    let status = exit_within(&mut cluster, EXIT_WAIT).expect("the master exits once the PUT is done");
    assert_eq!(status.code(), Some(0), "{}", cluster.master_log());
    cluster.start_master();
    assert_eq!(fetch(&cluster.url("/shutdown/slow")).body, body);
}

#[test]
fn a_put_cut_by_the_shutdown_limit_fails_cleanly_and_leaves_no_live_key_or_stray_copy() {
    let mut cluster = Cluster::start(3, &["--shutdown-timeout", "1s"]);
    let port = cluster.port();
    let body = value(8 << 20, 12);
    let mut put = start_put(port, "/shutdown/cut", &body, 1 << 20);
    std::thread::sleep(Duration::from_millis(200));
    terminate(&mut cluster);
    // The client sends nothing more: the limit cuts the PUT.
    let status = exit_within(&mut cluster, EXIT_WAIT).expect("the master exits after its limit");
    assert_eq!(status.code(), Some(0), "{}", cluster.master_log());
    assert!(
        cluster.master_log().contains("every request finished"),
        "the cut PUT went through its failure path before the exit: {}",
        cluster.master_log()
    );
    let answer = read_status(&mut put);
    assert!(!answer.contains("201"), "a cut PUT is not acknowledged: {answer}");
    cluster.start_master();
    assert_eq!(request("GET", &cluster.url("/shutdown/cut"), None).status, 404);
    for volume in 0..cluster.volumes.len() {
        assert_eq!(
            cluster.files_on(volume),
            Vec::<std::path::PathBuf>::new(),
            "volume {volume}"
        );
    }
}

#[test]
fn a_connection_accepted_before_sigterm_gets_its_first_request_answered() {
    let mut cluster = Cluster::start(3, &[]);
    let port = cluster.port();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(EXIT_WAIT)).unwrap();
    // Accepted by now, but silent: not an idle keep-alive connection yet.
    std::thread::sleep(Duration::from_millis(300));
    terminate(&mut cluster);
    std::thread::sleep(Duration::from_millis(200));
    stream.write_all(b"GET /absent HTTP/1.1\r\nHost: mkv\r\n\r\n").unwrap();
    assert_eq!(read_status(&mut stream), "HTTP/1.1 404 Not Found");
    let status = exit_within(&mut cluster, EXIT_WAIT).expect("the master exits");
    assert_eq!(status.code(), Some(0), "{}", cluster.master_log());
}

#[test]
fn a_silent_connection_does_not_hold_the_shutdown_to_its_limit() {
    let mut cluster = Cluster::start(3, &["--shutdown-timeout", "60s"]);
    let port = cluster.port();
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    terminate(&mut cluster);
    let status = exit_within(&mut cluster, EXIT_WAIT).expect("the master exits before its 60 s limit");
    assert_eq!(status.code(), Some(0), "{}", cluster.master_log());
    let mut rest = Vec::new();
    silent.set_read_timeout(Some(EXIT_WAIT)).unwrap();
    assert_eq!(silent.read_to_end(&mut rest).unwrap(), 0);
}
