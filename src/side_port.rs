//! The side ports (`--metrics-port`, `--admin-port`): small blocking
//! HTTP/1.1 listeners, one request per connection, that no idle or slow
//! client can take away from the operator.
//!
//! A connection holds nothing but its socket and the bytes of its head until
//! that head is complete. One thread (`serve_forever`'s caller) polls every
//! connection whose head is still arriving, at most `Limits::waiting_max` of
//! them: one more evicts the oldest (closed without an answer), and a head
//! that has not arrived whole within `HEAD_TIMEOUT` of the connect, however
//! it trickles, is answered 408. Heads are read before new connections are
//! accepted, so a client that sent its head at once (as a scraper or `mkv
//! verify` does) is evicted only by `waiting_max` connections opened within
//! one round of the poll. Only a complete head takes a slot: it is handled
//! on a thread of its own, at most `Limits::handling_max` at once (one more
//! is answered 503). A handler answers a short response and returns, so a
//! slot is held for a write into the socket's buffer, and no longer than
//! `ANSWER_TIMEOUT` in all (`write_all_by`). Every answer closes its
//! connection: no idle keep-alive connection is kept. An answer to HEAD has
//! no body (`answer`), so a client that reads it as HEAD's is never left
//! with a body to take for the next response.
//!
//! Imports nothing of the crate: `metrics` and `admin` stand on it.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A request head must arrive whole within this time of the connect.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole answer must be written within this time.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Headers a side-port request may carry.
const HEADERS_MAX: usize = 32;
/// Connections accepted per round of the poll, so heads that arrived are
/// read between batches of a flood of connects.
const ACCEPTS_PER_ROUND_MAX: usize = 64;
/// Bytes read from a connection per call.
const READ_BYTES: usize = 2048;
/// Pause after an accept failed for a reason other than "none waiting"
/// (out of descriptors): the listener stays readable, and polling it at
/// once again would spin.
const ACCEPT_FAILURE_PAUSE: Duration = Duration::from_millis(10);

/// How much one side port holds at once.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Names the handler threads.
    pub name: &'static str,
    /// Connections whose head is still arriving; one more evicts the oldest.
    pub waiting_max: usize,
    /// Requests handled at once, each on a thread of its own; one more is
    /// answered 503.
    pub handling_max: usize,
    /// The longest request head; a longer one is answered 431.
    pub head_bytes_max: usize,
}

/// One request's head, as the handlers need it.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The request target: the path and its query.
    pub target: String,
    headers: Vec<(String, Vec<u8>)>,
}

impl Request {
    /// Every value of the header `name` (any case), in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    /// Whether the answer must come without its body.
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// A connection whose head is still arriving.
struct Waiting {
    stream: TcpStream,
    head: Vec<u8>,
    deadline: Instant,
}

/// What reading a waiting connection came to.
enum HeadRead {
    /// Its head is not complete yet.
    More,
    Complete(Request),
    /// Answered with this status and closed.
    Refused(&'static str, &'static str),
    /// The client went away or the socket failed.
    Gone,
}

/// Serve `listener` for as long as the master runs: read heads under
/// `limits`, hand each complete one with its connection to `handle` on a
/// thread of its own. Returns only if polling fails.
pub fn serve_forever<H>(listener: TcpListener, limits: Limits, handle: H) -> io::Error
where
    H: Fn(Request, TcpStream) + Send + Sync + 'static,
{
    if let Err(error) = listener.set_nonblocking(true) {
        return error;
    }
    let handle = Arc::new(handle);
    let busy = Arc::new(AtomicUsize::new(0));
    let mut waiting: VecDeque<Waiting> = VecDeque::new();
    let mut polled: Vec<libc::pollfd> = Vec::new();
    loop {
        polled.clear();
        polled.push(readable(&listener));
        polled.extend(waiting.iter().map(|connection| readable(&connection.stream)));
        let next_deadline = waiting.iter().map(|connection| connection.deadline).min();
        let timeout_ms = next_deadline.map_or(-1, |deadline| {
            let left = deadline.saturating_duration_since(Instant::now());
            i32::try_from(left.as_millis() + 1).unwrap_or(i32::MAX)
        });
        // SAFETY: `polled` is a live array of `polled.len()` pollfds.
        let ready = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, timeout_ms) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return error;
        }
        let now = Instant::now();
        let mut kept = VecDeque::with_capacity(waiting.len());
        for (mut connection, polled) in waiting.drain(..).zip(&polled[1..]) {
            let read = match polled.revents {
                0 => HeadRead::More,
                _ => read_head(&mut connection, &limits),
            };
            match read {
                HeadRead::More if connection.deadline <= now => refuse(
                    &mut connection.stream,
                    is_head(&connection.head),
                    "408 Request Timeout",
                    "no complete request head in time",
                ),
                HeadRead::More => kept.push_back(connection),
                HeadRead::Complete(request) => hand_off(request, connection.stream, &limits, &busy, &handle),
                HeadRead::Refused(status, why) => {
                    refuse(&mut connection.stream, is_head(&connection.head), status, why)
                }
                HeadRead::Gone => {}
            }
        }
        waiting = kept;
        if polled[0].revents != 0 {
            accept_some(&listener, &limits, &mut waiting, now);
        }
    }
}

/// A pollfd asking whether `socket` is readable.
fn readable(socket: &impl AsRawFd) -> libc::pollfd {
    libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Accept the connections waiting on `listener` (a batch at most), each
/// with its head's deadline; past `waiting_max` the oldest is evicted.
fn accept_some(listener: &TcpListener, limits: &Limits, waiting: &mut VecDeque<Waiting>, now: Instant) {
    for _ in 0..ACCEPTS_PER_ROUND_MAX {
        match listener.accept() {
            Ok((stream, _)) => {
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                waiting.push_back(Waiting {
                    stream,
                    head: Vec::new(),
                    deadline: now + HEAD_TIMEOUT,
                });
                if waiting.len() > limits.waiting_max {
                    // Closed without an answer: it sent nothing whole.
                    waiting.pop_front();
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) if error.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(_) => {
                std::thread::sleep(ACCEPT_FAILURE_PAUSE);
                return;
            }
        }
    }
}

/// Read what `connection` sent (without blocking) and see whether its head
/// is complete.
fn read_head(connection: &mut Waiting, limits: &Limits) -> HeadRead {
    let mut buffer = [0u8; READ_BYTES];
    loop {
        let room = limits.head_bytes_max - connection.head.len();
        if room == 0 {
            return HeadRead::Refused("431 Request Header Fields Too Large", "the request head is too long");
        }
        let wanted = room.min(READ_BYTES);
        match connection.stream.read(&mut buffer[..wanted]) {
            Ok(0) => return HeadRead::Gone,
            Ok(read) => {
                connection.head.extend_from_slice(&buffer[..read]);
                match parse(&connection.head) {
                    HeadRead::More => {}
                    done => return done,
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return HeadRead::More,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return HeadRead::Gone,
        }
    }
}

/// The request in `head`, if it is complete (pure).
fn parse(head: &[u8]) -> HeadRead {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Partial) => HeadRead::More,
        Ok(httparse::Status::Complete(_)) => match (parsed.method, parsed.path) {
            (Some(method), Some(target)) => HeadRead::Complete(Request {
                method: method.to_owned(),
                target: target.to_owned(),
                headers: parsed
                    .headers
                    .iter()
                    .map(|header| (header.name.to_owned(), header.value.trim_ascii().to_vec()))
                    .collect(),
            }),
            _ => HeadRead::Refused("400 Bad Request", "not an HTTP request"),
        },
        Err(httparse::Error::TooManyHeaders) => {
            HeadRead::Refused("431 Request Header Fields Too Large", "too many request headers")
        }
        Err(_) => HeadRead::Refused("400 Bad Request", "not an HTTP request"),
    }
}

/// Whether the (maybe partial) head is a HEAD request's.
fn is_head(head: &[u8]) -> bool {
    head.starts_with(b"HEAD ")
}

/// Releases a handling slot when its thread is done.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Give `request` a slot and a thread, or answer 503 when none is free.
fn hand_off<H>(request: Request, mut stream: TcpStream, limits: &Limits, busy: &Arc<AtomicUsize>, handle: &Arc<H>)
where
    H: Fn(Request, TcpStream) + Send + Sync + 'static,
{
    if busy.fetch_add(1, Ordering::AcqRel) >= limits.handling_max {
        busy.fetch_sub(1, Ordering::AcqRel);
        let why = "too many requests at once; try again";
        return refuse(&mut stream, request.is_head(), "503 Service Unavailable", why);
    }
    let slot = Slot(busy.clone());
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let handle = handle.clone();
    let spawned = std::thread::Builder::new().name(limits.name.into()).spawn(move || {
        let _slot = slot;
        handle(request, stream);
    });
    if let Err(error) = spawned {
        eprintln!("mkv: cannot serve a {} request: {error}", limits.name);
    }
}

/// Answer from the polling thread: one write that does not block (a short
/// answer fits the socket's buffer; a client that filled it gets less).
fn refuse(stream: &mut TcpStream, head_only: bool, status: &str, message: &str) {
    let response = response(
        head_only,
        status,
        "",
        "text/plain; charset=utf-8",
        format!("{message}\n").as_bytes(),
    );
    let _ = stream.write(&response);
}

/// A whole response that closes its connection: `status` (`404 Not
/// Found`), `headers` (lines ending in CRLF), the body of `content_type`;
/// for HEAD (`head_only`) the body's length without the body (pure).
pub fn response(head_only: bool, status: &str, headers: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut response = head.into_bytes();
    if !head_only {
        response.extend_from_slice(body);
    }
    response
}

/// Write `response` (`response`) to `stream` within `ANSWER_TIMEOUT` in all.
pub fn answer(stream: &mut TcpStream, response: &[u8]) -> io::Result<()> {
    write_all_by(stream, response, Instant::now() + ANSWER_TIMEOUT)
}

/// Write all of `bytes` by `deadline`, however slowly the client reads:
/// each write waits at most for what is left of the time.
pub fn write_all_by(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_complete_only_at_its_blank_line() {
        assert!(matches!(parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), HeadRead::More));
        let HeadRead::Complete(request) = parse(b"GET /metrics HTTP/1.1\r\nA: 1\r\na:  2 \r\n\r\nbody") else {
            panic!("complete")
        };
        assert_eq!((request.method.as_str(), request.target.as_str()), ("GET", "/metrics"));
        assert_eq!(request.header_values("A").collect::<Vec<_>>(), [b"1", b"2"]);
        assert!(matches!(
            parse(b"\x16\x03\x01 TLS\r\n\r\n"),
            HeadRead::Refused("400 Bad Request", _)
        ));
        let many: String = (0..=HEADERS_MAX).map(|i| format!("h{i}: x\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(parse(head.as_bytes()), HeadRead::Refused(status, _) if status.starts_with("431")));
    }

    #[test]
    fn an_answer_to_head_has_no_body_but_its_length() {
        let full = response(false, "200 OK", "", "text/plain", b"page");
        let head_only = response(true, "200 OK", "", "text/plain", b"page");
        assert!(full.ends_with(b"\r\n\r\npage"));
        assert!(head_only.ends_with(b"Content-Length: 4\r\nConnection: close\r\n\r\n"));
        assert_eq!(full.len(), head_only.len() + 4);
    }

    #[test]
    fn idle_connections_past_the_limit_evict_the_oldest_and_take_no_slot() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let limits = Limits {
            name: "mkv-side-port-test",
            waiting_max: 4,
            handling_max: 1,
            head_bytes_max: 1024,
        };
        std::thread::spawn(move || {
            serve_forever(listener, limits, |request, mut stream| {
                let body = request.target.as_bytes();
                let _ = answer(
                    &mut stream,
                    &response(request.is_head(), "200 OK", "", "text/plain", body),
                );
            })
        });
        let idle: Vec<TcpStream> = (0..10)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        stream.write_all(b"GET /answered HTTP/1.1\r\n\r\n").unwrap();
        let mut text = String::new();
        stream
            .read_to_string(&mut text)
            .expect("answered before the head timeout");
        assert!(
            text.starts_with("HTTP/1.1 200") && text.ends_with("/answered"),
            "{text}"
        );
        // Eleven connections came for four places: the seven oldest were
        // closed for room, the newest still wait.
        let closed = idle
            .iter()
            .filter(|stream| {
                let mut stream: &TcpStream = stream;
                stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                matches!(stream.read(&mut [0u8; 16]), Ok(0))
            })
            .count();
        assert_eq!(closed, 7);
    }
}
