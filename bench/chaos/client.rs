//! A small blocking HTTP/1.1 client on `std::net`, just enough for the chaos
//! harness: one request at a time, keep-alive connections kept per host,
//! Content-Length bodies both ways, no redirects followed, no retries.
//!
//! No retries on purpose: the harness must know exactly what each request
//! was told. A request that fails in any way (refused, reset, timed out, a
//! malformed answer) comes back as an `Err`, and the ledger treats it as
//! uncertain. Before reusing a pooled connection the client peeks at it, so
//! a connection the server closed while idle (a master that was killed) is
//! replaced instead of failing the next request.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Longest response head accepted; the master's and nginx's are far shorter.
const HEAD_BYTES_MAX: usize = 16 * 1024;

/// Largest response body accepted: values are at most a few MiB, listings
/// are paged by the harness.
const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A response as the harness looks at it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Keep-alive connections by `host:port`, owned by one thread.
pub struct Client {
    timeout: Duration,
    connections: HashMap<String, BufReader<TcpStream>>,
}

impl Client {
    /// `timeout` bounds connecting and every read and write.
    pub fn new(timeout: Duration) -> Client {
        Client {
            timeout,
            connections: HashMap::new(),
        }
    }

    /// One request to `host` (`127.0.0.1:port`), `path` with its query.
    pub fn request(&mut self, method: &str, host: &str, path: &str, body: Option<&[u8]>) -> io::Result<Reply> {
        let mut connection = match self.connections.remove(host) {
            Some(connection) if still_open(connection.get_ref()) => connection,
            _ => self.connect(host)?,
        };
        let reply = exchange(&mut connection, method, host, path, body)?;
        let close = reply
            .header("connection")
            .is_some_and(|value| value.eq_ignore_ascii_case("close"));
        if !close {
            self.connections.insert(host.to_string(), connection);
        }
        Ok(reply)
    }

    /// GET an absolute `http://host/path` URL (a 302's `Location`).
    pub fn get_url(&mut self, url: &str) -> io::Result<Reply> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("not an http URL: {url}")))?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        self.request("GET", host, if path.is_empty() { "/" } else { path }, None)
    }

    fn connect(&self, host: &str) -> io::Result<BufReader<TcpStream>> {
        let address = host
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("bad address {host}")))?;
        let stream = TcpStream::connect_timeout(&address, self.timeout)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        stream.set_nodelay(true)?;
        Ok(BufReader::new(stream))
    }
}

/// Whether an idle pooled connection can take another request: nothing to
/// read yet (a close or stray bytes mean it cannot).
fn still_open(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    let idle = matches!(stream.peek(&mut byte), Err(error) if error.kind() == io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).is_ok() && idle
}

fn exchange(
    connection: &mut BufReader<TcpStream>,
    method: &str,
    host: &str,
    path: &str,
    body: Option<&[u8]>,
) -> io::Result<Reply> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let stream = connection.get_mut();
    stream.write_all(head.as_bytes())?;
    if let Some(body) = body {
        stream.write_all(body)?;
    }
    let (status, headers) = read_head(connection)?;
    let length = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.trim().parse::<usize>())
        .transpose()
        .map_err(|_| invalid("bad Content-Length"))?;
    let chunked = headers
        .iter()
        .any(|(name, value)| name.eq_ignore_ascii_case("transfer-encoding") && !value.eq_ignore_ascii_case("identity"));
    let bodiless = method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
    let body = match (bodiless, length, chunked) {
        (true, _, _) => Vec::new(),
        (false, _, true) => return Err(invalid("chunked responses are not supported")),
        (false, Some(length), false) if length <= BODY_BYTES_MAX => {
            let mut body = vec![0u8; length];
            connection.read_exact(&mut body)?;
            body
        }
        (false, Some(_), false) => return Err(invalid("response body over BODY_BYTES_MAX")),
        (false, None, false) => return Err(invalid("response without Content-Length")),
    };
    Ok(Reply { status, headers, body })
}

fn read_head(connection: &mut BufReader<TcpStream>) -> io::Result<(u16, Vec<(String, String)>)> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        connection.read_until(b'\n', &mut head)?;
        if head.len() == before {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the answer",
            ));
        }
        if head.len() > HEAD_BYTES_MAX {
            return Err(invalid("response head over HEAD_BYTES_MAX"));
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            break;
        }
    }
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut slots);
    match response.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(invalid("malformed response head")),
    }
    let status = response.code.ok_or_else(|| invalid("no status code"))?;
    let headers = response
        .headers
        .iter()
        .map(|header| {
            (
                header.name.to_string(),
                String::from_utf8_lossy(header.value).into_owned(),
            )
        })
        .collect();
    Ok((status, headers))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}
