//! HTTP on the wire: keep-alive, pipelining, HTTP/1.0, 100-continue, and bad
//! input answered with a 4xx that changes nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::cluster::{fetch, raw, request, Cluster};

const SHORT: Duration = Duration::from_millis(1500);

fn status_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|line| line.starts_with("HTTP/1.1 ")).collect()
}

#[test]
fn keep_alive_and_pipelined_gets_on_one_socket() {
    let cluster = Cluster::start(3, &[]);
    assert_eq!(request("PUT", &cluster.url("/p"), Some(b"v")).status, 201);
    let mut stream = TcpStream::connect(("127.0.0.1", cluster.port())).unwrap();
    stream.set_read_timeout(Some(SHORT)).unwrap();
    // Sequential requests on one connection.
    for _ in 0..3 {
        stream.write_all(b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buffer = [0u8; 4096];
        let read = stream.read(&mut buffer).unwrap();
        assert!(buffer[..read].starts_with(b"HTTP/1.1 302 Found\r\n"));
    }
    // Sixteen pipelined requests in one write, a miss among them.
    let mut batch = String::new();
    for i in 0..16 {
        batch.push_str(if i == 7 {
            "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
        } else {
            "HEAD /p HTTP/1.1\r\nHost: x\r\n\r\n"
        });
    }
    batch.push_str("GET /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let text = raw(cluster.port(), batch.as_bytes(), SHORT);
    let statuses = status_lines(&text);
    assert_eq!(statuses.len(), 17, "{text}");
    assert_eq!(statuses[7], "HTTP/1.1 404 Not Found");
    assert_eq!(statuses.iter().filter(|line| line.contains("302")).count(), 16);
}

#[test]
fn http10_and_expect_continue() {
    let cluster = Cluster::start(3, &[]);
    assert_eq!(request("PUT", &cluster.url("/old"), Some(b"v")).status, 201);
    let text = raw(cluster.port(), b"GET /old HTTP/1.0\r\n\r\n", SHORT);
    assert!(text.starts_with("HTTP/1.1 302 Found\r\n"), "{text}");
    assert!(text.contains("Connection: close"), "HTTP/1.0 closes by default: {text}");

    let mut stream = TcpStream::connect(("127.0.0.1", cluster.port())).unwrap();
    stream.set_read_timeout(Some(SHORT)).unwrap();
    stream
        .write_all(b"PUT /continued HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let mut buffer = [0u8; 1024];
    let read = stream.read(&mut buffer).unwrap();
    assert_eq!(&buffer[..read], b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").unwrap();
    let read = stream.read(&mut buffer).unwrap();
    assert!(
        buffer[..read].starts_with(b"HTTP/1.1 201 Created"),
        "{}",
        String::from_utf8_lossy(&buffer[..read])
    );
    assert_eq!(fetch(&cluster.url("/continued")).body, b"hello");

    // A live key is refused before the client sends its body.
    stream
        .write_all(b"PUT /continued HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let read = stream.read(&mut buffer).unwrap();
    assert!(
        buffer[..read].starts_with(b"HTTP/1.1 403"),
        "{}",
        String::from_utf8_lossy(&buffer[..read])
    );
}

#[test]
fn bad_requests_get_4xx_and_change_nothing() {
    let cluster = Cluster::start(3, &[]);
    let port = cluster.port();
    let cases: [(&[u8], &str); 8] = [
        (b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n", "400"),
        (b"GARBAGE\r\n\r\n", "400"),
        (
            b"PUT /smuggle HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            "400",
        ),
        (b"PUT /pct%zz HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", "400"),
        (b"BREW /coffee HTTP/1.1\r\n\r\n", "405"),
        (b"PUT /te HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", "501"),
        (b"PUT /nolength HTTP/1.1\r\nHost: x\r\n\r\n", "411"),
        (
            b"PUT /badchunk HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            "400",
        ),
    ];
    for (bytes, status) in cases {
        let text = raw(port, bytes, SHORT);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{:?} -> {text}",
            String::from_utf8_lossy(bytes)
        );
    }
    let huge = format!("GET /x HTTP/1.1\r\nX-Big: {}\r\n\r\n", "y".repeat(20_000));
    assert!(raw(port, huge.as_bytes(), SHORT).starts_with("HTTP/1.1 431 "));
    let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
    assert!(raw(port, format!("GET /x HTTP/1.1\r\n{many}\r\n").as_bytes(), SHORT).starts_with("HTTP/1.1 431 "));

    // A body longer than its Content-Length fails the PUT.
    let longer = raw(port, b"PUT /longer HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcdef", SHORT);
    assert!(longer.starts_with("HTTP/1.1 400 "), "{longer}");
    // A body cut short (client closes) fails the PUT.
    {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .write_all(b"PUT /short HTTP/1.1\r\nContent-Length: 100000\r\n\r\nonly a little")
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    for key in [
        "/smuggle",
        "/pct%zz",
        "/te",
        "/nolength",
        "/badchunk",
        "/longer",
        "/short",
    ] {
        assert_eq!(
            request("GET", &cluster.url(key), None).status,
            if key == "/pct%zz" { 400 } else { 404 },
            "{key}"
        );
    }
    let listed = String::from_utf8(request("GET", &cluster.url("/?list"), None).body).unwrap();
    assert_eq!(listed, r#"{"next":"","keys":[]}"#);
    assert!(crate::cluster::eventually(Duration::from_secs(3), || (0..3)
        .all(|volume| cluster.files_on(volume).is_empty())));
    // The master is still serving.
    assert_eq!(request("PUT", &cluster.url("/after"), Some(b"ok")).status, 201);
}

#[test]
fn slow_client_cannot_hold_a_head_open() {
    let cluster = Cluster::start(3, &[]);
    let mut stream = TcpStream::connect(("127.0.0.1", cluster.port())).unwrap();
    stream.write_all(b"GET /slow HTTP/1.1\r\n").unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
}
