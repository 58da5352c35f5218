//! A deliberately tiny blocking HTTP/1.1 keep-alive client on
//! `std::net::TcpStream`, so the numbers measure the servers and not a client
//! runtime. A `Request` is borrowed from a worker's buffers; a `Response` is
//! what the rounds need of an answer, its body going to a caller's buffer.
//! Heads and bodies are read by pure functions over `BufRead` (`read_head`,
//! `read_body`), tested without sockets. A `Connection` is one keep-alive
//! connection to a host:port, and a `Pool` one worker's connections, one per
//! host:port, with one retry when a reused connection went stale.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::bail;

use crate::op::{Failure, Op};

/// Largest value `--size` accepts, and so the largest body read back: each
/// worker holds two values' worth of memory (the value sent and the body read).
pub(crate) const VALUE_BYTES_MAX: u64 = 1 << 30;
/// Largest response head (status line and headers) accepted.
const HEAD_BYTES_MAX: usize = 64 * 1024;
/// Most response headers parsed; mkv and nginx send about ten.
const HEADERS_COUNT_MAX: usize = 32;
/// Largest chunk-size line of a chunked body, extensions included.
const CHUNK_LINE_BYTES_MAX: usize = 1024;
/// Read buffer of one connection.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Bodies up to this size are copied behind the request head so that a small
/// request leaves in one write, as a real client's would.
const COALESCE_BYTES_MAX: usize = 64 * 1024;
/// A server that does not accept, read or answer within this time is an error.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

const _: () = assert!(HEAD_BYTES_MAX <= 1 << 20);

/// One HTTP request, borrowed from the worker's buffers.
pub(crate) struct Request<'a> {
    pub(crate) op: Op,
    pub(crate) method: &'a str,
    pub(crate) host: &'a str,
    pub(crate) path: &'a str,
    pub(crate) body: &'a [u8],
}

impl<'a> Request<'a> {
    /// A request to a `(host:port, path)` target.
    pub(crate) fn to(op: Op, method: &'a str, (host, path): &'a (String, String), body: &'a [u8]) -> Request<'a> {
        Request {
            op,
            method,
            host,
            path,
            body,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}{}", self.host, self.path)
    }

    fn io_failure(&self, error: io::Error) -> Failure {
        Failure::Io {
            op: self.op,
            url: self.url(),
            error,
        }
    }

    pub(crate) fn expect(&self, response: &Response, expected: u16) -> Result<(), Failure> {
        if response.status == expected {
            return Ok(());
        }
        Err(Failure::Status {
            op: self.op,
            url: self.url(),
            expected,
            got: response.status,
        })
    }
}

/// What the rounds need of a response; the body goes to a caller's buffer.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) location: Option<String>,
    /// The server will close the connection after this response.
    close: bool,
}

/// How the body of a response is delimited.
#[derive(Debug, PartialEq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A response head, parsed.
#[derive(Debug)]
struct Head {
    response: Response,
    framing: Framing,
}

/// Reads one response head (status line to the empty line) into `buffer` and
/// parses it. A connection closed before the first byte is `UnexpectedEof`,
/// which tells the caller a reused keep-alive connection went stale.
fn read_head(reader: &mut impl BufRead, buffer: &mut Vec<u8>) -> io::Result<Head> {
    buffer.clear();
    while !(buffer.ends_with(b"\n\r\n") || buffer.ends_with(b"\n\n")) {
        let room = (HEAD_BYTES_MAX - buffer.len()) as u64;
        if reader.take(room).read_until(b'\n', buffer)? == 0 {
            return Err(if buffer.is_empty() {
                io::Error::new(io::ErrorKind::UnexpectedEof, "closed before answering")
            } else {
                invalid("response head cut short or over HEAD_BYTES_MAX")
            });
        }
    }
    parse_head(buffer)
}

fn parse_head(bytes: &[u8]) -> io::Result<Head> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(invalid("response head incomplete")),
        Err(error) => return Err(invalid(&format!("bad response head: {error}"))),
    }
    let status = parsed.code.unwrap_or_default();
    let mut response = Response {
        status,
        location: None,
        close: parsed.version == Some(0),
    };
    let mut length = None;
    let mut chunked = false;
    for header in parsed.headers.iter() {
        let value = std::str::from_utf8(header.value).map_err(|_| invalid("non-UTF-8 header"))?;
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let parsed = value.trim().parse::<u64>();
            length = Some(parsed.map_err(|_| invalid("bad Content-Length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            response.close |= value.to_ascii_lowercase().contains("close");
        } else if name.eq_ignore_ascii_case("location") {
            response.location = Some(value.to_string());
        }
    }
    let framing = match (status, chunked, length) {
        (100..=199 | 204 | 304, _, _) => Framing::Empty,
        (_, true, _) => Framing::Chunked,
        (_, false, Some(length)) => Framing::Length(length),
        (_, false, None) => Framing::UntilClose,
    };
    if framing == Framing::UntilClose {
        response.close = true;
    }
    Ok(Head { response, framing })
}

/// Reads a body framed as `framing`, appending it to `body`.
fn read_body(reader: &mut impl BufRead, framing: &Framing, body: &mut Vec<u8>) -> io::Result<()> {
    match framing {
        Framing::Empty => Ok(()),
        Framing::Length(length) => read_sized(reader, *length, body),
        Framing::Chunked => read_chunked(reader, body),
        Framing::UntilClose => {
            let room = VALUE_BYTES_MAX + 1 - body.len() as u64;
            reader.take(room).read_to_end(body)?;
            if body.len() as u64 > VALUE_BYTES_MAX {
                return Err(invalid("body over VALUE_BYTES_MAX"));
            }
            Ok(())
        }
    }
}

fn read_sized(reader: &mut impl BufRead, length: u64, body: &mut Vec<u8>) -> io::Result<()> {
    if body.len() as u64 + length > VALUE_BYTES_MAX {
        return Err(invalid("body over VALUE_BYTES_MAX"));
    }
    let read = reader.take(length).read_to_end(body)?;
    if (read as u64) < length {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed in the middle of the body",
        ));
    }
    Ok(())
}

fn read_chunked(reader: &mut impl BufRead, body: &mut Vec<u8>) -> io::Result<()> {
    let mut line = Vec::new();
    loop {
        read_line(reader, &mut line)?;
        let size_text = line.split(|byte| *byte == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|text| u64::from_str_radix(text.trim(), 16).ok())
            .ok_or_else(|| invalid("bad chunk size"))?;
        if size == 0 {
            break;
        }
        read_sized(reader, size, body)?;
        read_line(reader, &mut line)?;
        if !line.trim_ascii().is_empty() {
            return Err(invalid("chunk not followed by CRLF"));
        }
    }
    // Trailer fields, up to the empty line.
    loop {
        read_line(reader, &mut line)?;
        if line.trim_ascii().is_empty() {
            return Ok(());
        }
    }
}

/// Reads one line, at most `CHUNK_LINE_BYTES_MAX` bytes, into `line`.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<()> {
    line.clear();
    reader.take(CHUNK_LINE_BYTES_MAX as u64).read_until(b'\n', line)?;
    if !line.ends_with(b"\n") {
        return Err(invalid("chunk line cut short or over CHUNK_LINE_BYTES_MAX"));
    }
    Ok(())
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

/// Writes a request head (and a small body) into `buffer`.
fn encode_request(request: &Request, buffer: &mut Vec<u8>) {
    buffer.clear();
    let Request { method, host, path, .. } = request;
    // Writing into a Vec cannot fail.
    let _ = write!(buffer, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    if !request.body.is_empty() || *method == "PUT" {
        let _ = write!(buffer, "Content-Length: {}\r\n", request.body.len());
    }
    buffer.extend_from_slice(b"\r\n");
    if request.body.len() <= COALESCE_BYTES_MAX {
        buffer.extend_from_slice(request.body);
    }
}

/// A keep-alive connection to one host:port.
struct Connection {
    host: String,
    reader: BufReader<TcpStream>,
    /// Request head on the way out, response head on the way in.
    buffer: Vec<u8>,
    answered: u64,
}

impl Connection {
    fn open(host: &str) -> io::Result<Connection> {
        let mut last_error = invalid("host:port resolves to no address");
        for address in host.to_socket_addrs()? {
            match TcpStream::connect_timeout(&address, IO_TIMEOUT) {
                Ok(stream) => return Connection::wrap(host, stream),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    fn wrap(host: &str, stream: TcpStream) -> io::Result<Connection> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Connection {
            host: host.to_string(),
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, stream),
            buffer: Vec::with_capacity(COALESCE_BYTES_MAX + 1024),
            answered: 0,
        })
    }

    fn send(&mut self, request: &Request) -> io::Result<()> {
        encode_request(request, &mut self.buffer);
        let stream = self.reader.get_mut();
        stream.write_all(&self.buffer)?;
        if request.body.len() > COALESCE_BYTES_MAX {
            stream.write_all(request.body)?;
        }
        Ok(())
    }

    /// Reads the answer to the oldest request sent, skipping 1xx answers.
    fn receive(&mut self, body: &mut Vec<u8>) -> io::Result<Response> {
        body.clear();
        loop {
            let head = read_head(&mut self.reader, &mut self.buffer)?;
            read_body(&mut self.reader, &head.framing, body)?;
            if !(100..200).contains(&head.response.status) {
                self.answered += 1;
                return Ok(head.response);
            }
        }
    }
}

/// One worker's keep-alive connections, one per host:port.
#[derive(Default)]
pub(crate) struct Pool {
    connections: Vec<Connection>,
}

impl Pool {
    fn get(&mut self, host: &str) -> io::Result<&mut Connection> {
        let found = self.connections.iter().position(|c| c.host == host);
        let index = match found {
            Some(index) => index,
            None => {
                self.connections.push(Connection::open(host)?);
                self.connections.len() - 1
            }
        };
        Ok(&mut self.connections[index])
    }

    fn forget(&mut self, host: &str) {
        self.connections.retain(|connection| connection.host != host);
    }

    /// Sends one request and reads its answer. A reused connection that the
    /// server closed while idle gets one retry on a fresh connection.
    pub(crate) fn request(&mut self, request: &Request, body: &mut Vec<u8>) -> Result<Response, Failure> {
        let mut retried = false;
        loop {
            let connection = self.get(request.host).map_err(|e| request.io_failure(e))?;
            let reused = connection.answered > 0;
            let result = connection.send(request).and_then(|()| connection.receive(body));
            match result {
                Ok(response) => {
                    if response.close {
                        self.forget(request.host);
                    }
                    return Ok(response);
                }
                Err(error) => {
                    self.forget(request.host);
                    if retried || !reused || !is_stale(&error) {
                        return Err(request.io_failure(error));
                    }
                    retried = true;
                }
            }
        }
    }

    /// Sends the same request to every host before reading any answer, so the
    /// volumes work in parallel as they do behind a master.
    pub(crate) fn fan_out(&mut self, requests: &[Request], expected: u16, body: &mut Vec<u8>) -> Result<(), Failure> {
        let result = self.fan_out_once(requests, expected, body);
        if result.is_err() {
            // Answers may still be pending on the others: start them afresh.
            for request in requests {
                self.forget(request.host);
            }
        }
        result
    }

    fn fan_out_once(&mut self, requests: &[Request], expected: u16, body: &mut Vec<u8>) -> Result<(), Failure> {
        for request in requests {
            let connection = self.get(request.host).map_err(|e| request.io_failure(e))?;
            connection.send(request).map_err(|e| request.io_failure(e))?;
        }
        for request in requests {
            let connection = self.get(request.host).map_err(|e| request.io_failure(e))?;
            let response = connection.receive(body).map_err(|e| request.io_failure(e))?;
            request.expect(&response, expected)?;
            if response.close {
                self.forget(request.host);
            }
        }
        Ok(())
    }
}

/// Whether an error is what a keep-alive connection closed by the server
/// while idle looks like.
fn is_stale(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

/// The host:port of `--master`, given as `http://host:port` or `host:port`.
pub(crate) fn master_host(url: &str) -> anyhow::Result<String> {
    if url.contains("://") && !url.starts_with("http://") {
        bail!("only http:// is supported");
    }
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        bail!("no host:port");
    }
    Ok(host.to_string())
}

/// Splits a redirect target into host:port and path. A relative `Location`
/// stays on the host that sent it.
pub(crate) fn split_location<'a>(location: &'a str, host: &'a str) -> Option<(&'a str, &'a str)> {
    if location.starts_with('/') {
        return Some((host, location));
    }
    let rest = location.strip_prefix("http://")?;
    let slash = rest.find('/').unwrap_or(rest.len());
    let (host, path) = rest.split_at(slash);
    if host.is_empty() {
        return None;
    }
    Some((host, if path.is_empty() { "/" } else { path }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_response(bytes: &[u8]) -> io::Result<(Response, Vec<u8>)> {
        let mut reader = bytes;
        let mut buffer = Vec::new();
        let head = read_head(&mut reader, &mut buffer)?;
        let mut body = Vec::new();
        read_body(&mut reader, &head.framing, &mut body)?;
        Ok((head.response, body))
    }

    #[test]
    fn redirect_targets_split_into_host_and_path() {
        let location = "http://127.0.0.1:3001/sv05/ab/cd/L2E=";
        let split = split_location(location, "m:3000");
        assert_eq!(split, Some(("127.0.0.1:3001", "/sv05/ab/cd/L2E=")));
        assert_eq!(split_location("/x", "m:3000"), Some(("m:3000", "/x")));
        assert_eq!(split_location("http://h:1", "m"), Some(("h:1", "/")));
        assert_eq!(split_location("https://h/x", "m"), None);
        assert_eq!(master_host("http://127.0.0.1:3000/").unwrap(), "127.0.0.1:3000");
        assert_eq!(master_host("localhost:3000").unwrap(), "localhost:3000");
    }

    #[test]
    fn content_length_bodies_are_read_exactly() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1";
        let (response, body) = read_response(bytes).unwrap();
        assert_eq!((response.status, response.close), (200, false));
        assert_eq!(body, b"hello");
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                      3;ext=1\r\nhel\r\n2\r\nlo\r\n0\r\nTrailer: x\r\n\r\n";
        let (_, body) = read_response(bytes).unwrap();
        assert_eq!(body, b"hello");
    }

    #[test]
    fn redirects_keep_their_location() {
        let bytes = b"HTTP/1.1 302 Found\r\nLocation: http://v:1/a\r\nContent-Length: 0\r\n\r\n";
        let (response, body) = read_response(bytes).unwrap();
        assert_eq!(response.status, 302);
        assert_eq!(response.location.as_deref(), Some("http://v:1/a"));
        assert!(body.is_empty());
    }

    #[test]
    fn unframed_bodies_run_until_close() {
        let bytes = b"HTTP/1.0 200 OK\r\n\r\nall of it";
        let (response, body) = read_response(bytes).unwrap();
        assert!(response.close);
        assert_eq!(body, b"all of it");
    }

    #[test]
    fn truncated_responses_are_errors() {
        let short_body = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello";
        assert!(read_response(short_body).is_err());
        let stale = read_response(b"").unwrap_err();
        assert_eq!(stale.kind(), io::ErrorKind::UnexpectedEof);
        let short_head = read_response(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap_err();
        assert_eq!(short_head.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn requests_carry_length_and_small_bodies() {
        let mut buffer = Vec::new();
        let put = Request {
            op: Op::Put,
            method: "PUT",
            host: "h:1",
            path: "/k",
            body: b"abc",
        };
        encode_request(&put, &mut buffer);
        assert_eq!(buffer, b"PUT /k HTTP/1.1\r\nHost: h:1\r\nContent-Length: 3\r\n\r\nabc");
        let get = Request {
            method: "GET",
            body: &[],
            ..put
        };
        encode_request(&get, &mut buffer);
        assert_eq!(buffer, b"GET /k HTTP/1.1\r\nHost: h:1\r\n\r\n");
    }
}
