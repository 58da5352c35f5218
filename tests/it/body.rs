//! Request bodies on the wire: chunked framing that two parsers could read
//! two ways is refused, a body that trickles in cannot hold its key, and a
//! body longer than its `Content-Length` fails its PUT however its bytes are
//! split into reads.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::cluster::{eventually, fetch, raw, request, Cluster};

/// How long a raw exchange waits for the master's answer.
const ANSWER_WAIT: Duration = Duration::from_millis(1500);
/// Pause between the bytes of a trickled body.
const TRICKLE_PAUSE: Duration = Duration::from_millis(300);
/// Bytes a trickling client sends at most before the test gives up on the
/// master answering: 60 pauses are 18 s, far past the 1 s limits it runs with.
const TRICKLE_BYTES_MAX: usize = 60;

fn first_status(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

fn assert_nothing_stored(cluster: &Cluster, keys: &[String]) {
    for key in keys {
        assert_eq!(request("GET", &cluster.url(key), None).status, 404, "{key}");
    }
    assert!(
        eventually(Duration::from_secs(3), || (0..cluster.volumes.len())
            .all(|volume| cluster.files_on(volume).is_empty())),
        "a refused body left files on the volumes"
    );
}

#[test]
fn chunked_framing_with_bare_lf_or_control_bytes_is_refused() {
    let cluster = Cluster::start(3, &[]);
    // Each body is one that a parser ending lines at a bare LF, or skipping
    // control bytes, could read differently from us.
    let bodies: [&[u8]; 19] = [
        // The report: a proxy ending lines at LF reads "abc", we stored "xyz".
        b"3;\nabc\r\nxyz\r\n0\r\n\r\n",
        b"3;ext\nabc\r\nxyz\r\n0\r\n\r\n",
        b"3\nabc\r\n0\r\n\r\n",
        b"3;a\rb\r\nabc\r\n0\r\n\r\n",
        b"3;a\0b\r\nabc\r\n0\r\n\r\n",
        b"3;a\x7fb\r\nabc\r\n0\r\n\r\n",
        b"3;a\x1bb\r\nabc\r\n0\r\n\r\n",
        b" 3\r\nabc\r\n0\r\n\r\n",
        b"3 x\r\nabc\r\n0\r\n\r\n",
        b"3 4\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabc\n0\r\n\r\n",
        b"3\r\nabc\r\n0\n\r\n",
        b"3\r\nabc\r\n0\r\n\n",
        b"3\r\nabc\r\n0\r\nX: a\nY: b\r\n\r\n",
        b"3\r\nabc\r\n0\r\nX: a\rb\r\n\r\n",
        b"3\r\nabc\r\n0\r\nX: a\0b\r\n\r\n",
        b"3\r\nabc\r\n0\r\nno colon\r\n\r\n",
        b"3\r\nabc\r\n0\r\nX: a\r\n folded\r\n\r\n",
        b"3\r\nabc\r\n0\r\n\r\r\n",
    ];
    let mut keys = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let key = format!("/chunked-{i}");
        let mut bytes =
            format!("PUT {key} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
                .into_bytes();
        bytes.extend_from_slice(body);
        let text = raw(cluster.port(), &bytes, ANSWER_WAIT);
        assert!(
            first_status(&text).starts_with("HTTP/1.1 400 "),
            "{:?} -> {text}",
            String::from_utf8_lossy(body)
        );
        keys.push(key);
    }
    assert_nothing_stored(&cluster, &keys);
    // Well-formed extensions (with whitespace before `;`) and trailers still work.
    let good = b"PUT /good HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
        3 ;name=\"v\"\r\nabc\r\n2\t;a;b=c\r\nde\r\n0\r\nX-Trailer: \tvalue\r\n\r\n";
    let text = raw(cluster.port(), good, ANSWER_WAIT);
    assert!(first_status(&text).starts_with("HTTP/1.1 201 "), "{text}");
    assert_eq!(fetch(&cluster.url("/good")).body, b"abcde");
}

/// Send `head`, then the body one byte per `TRICKLE_PAUSE` (taken from
/// `body`, repeated), until the master answers or closes. Returns what it said.
fn trickle(port: u16, head: &[u8], body: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(head).unwrap();
    stream.set_read_timeout(Some(TRICKLE_PAUSE)).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    for &byte in body.iter().cycle().take(TRICKLE_BYTES_MAX) {
        if stream.write_all(&[byte]).is_err() {
            break;
        }
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => {
                answer.extend_from_slice(&buffer[..read]);
                break;
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    stream.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
    while let Ok(read) = stream.read(&mut buffer) {
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..read]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn trickled_body_times_out_and_releases_its_key() {
    // Default minimum rate (64 KiB/s); a byte per 300 ms never trips the
    // per-read timeout of 1 s, only the average rate can stop it.
    let cluster = Cluster::start(3, &["--body-timeout", "1s"]);
    let cases: [(&str, &[u8], &[u8]); 2] = [
        ("/trickle-length", b"Content-Length: 1000", b"x"),
        ("/trickle-chunked", b"Transfer-Encoding: chunked", b"1\r\nx\r\n"),
    ];
    for (key, framing, body) in cases {
        let mut head = format!("PUT {key} HTTP/1.1\r\nHost: x\r\n").into_bytes();
        head.extend_from_slice(framing);
        head.extend_from_slice(b"\r\n\r\n");
        let text = trickle(cluster.port(), &head, body);
        assert!(first_status(&text).starts_with("HTTP/1.1 408 "), "{key}: {text}");
        // The key's lock went with the failed PUT: not 409.
        assert_eq!(request("PUT", &cluster.url(key), Some(b"on time")).status, 201, "{key}");
        assert_eq!(fetch(&cluster.url(key)).body, b"on time");
    }
}

/// Send `head`, wait until the master has surely read it on its own, then
/// send `rest` in one write; returns the master's answer.
fn head_then_rest(port: u16, head: &[u8], rest: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(head).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    stream.write_all(rest).unwrap();
    stream.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn body_longer_than_its_length_is_refused_when_the_excess_comes_with_the_body() {
    let cluster = Cluster::start(3, &[]);
    let port = cluster.port();
    let mut keys = Vec::new();
    for (i, excess) in [&b"def"[..], b"\0", b"\r\nxyz", b"def GET / HTTP/1.1\r\n\r\n"]
        .iter()
        .enumerate()
    {
        let key = format!("/longer-{i}");
        let head = format!("PUT {key} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n");
        let text = head_then_rest(port, head.as_bytes(), &[&b"abc"[..], excess].concat());
        assert!(
            first_status(&text).starts_with("HTTP/1.1 400 "),
            "{:?}: {text}",
            String::from_utf8_lossy(excess)
        );
        keys.push(key);
    }
    // A body split over many reads, its excess in the last one.
    let long_head = b"PUT /longer-split HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n";
    let text = head_then_rest(port, long_head, &vec![b'v'; 200_001]);
    assert!(first_status(&text).starts_with("HTTP/1.1 400 "), "{text}");
    keys.push("/longer-split".into());
    assert_nothing_stored(&cluster, &keys);

    // What follows a body may be the next request, or an empty line before it.
    let pipelined = head_then_rest(
        port,
        b"PUT /exact HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n",
        b"abc\r\nGET /exact HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let statuses: Vec<&str> = pipelined.lines().filter(|line| line.starts_with("HTTP/1.1 ")).collect();
    assert_eq!(statuses, ["HTTP/1.1 201 Created", "HTTP/1.1 302 Found"], "{pipelined}");
    assert_eq!(fetch(&cluster.url("/exact")).body, b"abc");
}
