//! The volume client: a small HTTP/1.1 client to talk to nginx volumes.
//!
//! Built on `httparse` over monoio streams: one pool of keep-alive
//! connections per reactor thread and volume, bodies streamed in bounded
//! pieces in both directions (see ARCHITECTURE.md for why not
//! `monoio-http`). Who the volumes are and whether they are up is `health`.
//!
//! A volume may close an idle keep-alive connection at any time (nginx does
//! on reload, restart and after its keep-alive timeout). No request fails
//! for that: a request that finds its pooled connection closed before any
//! answer is sent again on a new connection whenever it can be replayed (no
//! body, or a body still held whole), and an upload that could not be
//! replayed sends no body on a pooled connection before the volume confirmed
//! it with `100 Continue`. (Peeking at every pooled connection before reuse
//! was measured: 8 us more master CPU per thrasher round, ~8%, for nothing
//! the replay does not already cover.)

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::Bytes;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::connection;
use crate::http::{parse_decimal, ChunkedDecoder, HEADER_BYTES_MAX};

/// Idle keep-alive connections kept per volume and reactor.
const POOL_CONNECTIONS_MAX: usize = 64;
/// A pooled connection idle longer than this is closed rather than reused:
/// nginx drops idle keep-alive connections after 65-75 s.
const POOL_IDLE_MAX: Duration = Duration::from_secs(30);
/// Bytes a volume's response head may take.
const RESPONSE_HEAD_BYTES_MAX: usize = HEADER_BYTES_MAX;
/// Most headers in a volume's response.
const RESPONSE_HEADER_COUNT_MAX: usize = 64;
/// Read buffer of a volume connection.
const CONNECTION_BUFFER_BYTES: usize = 64 * 1024;
/// Error bodies up to this size are read and dropped to keep the connection.
const DISCARD_BODY_BYTES_MAX: u64 = 64 * 1024;
/// A first body piece up to this size is sent in one write with the head.
const INLINE_BODY_BYTES_MAX: usize = 64 * 1024;

/// What went wrong talking to a volume.
#[derive(Debug)]
pub enum VolumeError {
    /// No connection could be made.
    Connect(String, io::Error),
    /// No answer within the timeout.
    Timeout(String),
    /// The connection failed mid-request.
    Io(String, io::Error),
    /// The volume's answer is not HTTP we understand.
    Protocol(String, &'static str),
    /// An unexpected status.
    Status(String, u16),
}

impl fmt::Display for VolumeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VolumeError::Connect(host, error) => write!(formatter, "volume {host}: cannot connect: {error}"),
            VolumeError::Timeout(host) => write!(formatter, "volume {host}: timed out"),
            VolumeError::Io(host, error) => write!(formatter, "volume {host}: {error}"),
            VolumeError::Protocol(host, what) => write!(formatter, "volume {host}: bad response: {what}"),
            VolumeError::Status(host, status) => write!(formatter, "volume {host}: answered {status}"),
        }
    }
}

impl std::error::Error for VolumeError {}

/// Resolve `host:port`, IPv4 first (volumes usually listen on 0.0.0.0 only).
pub fn resolve(host: &str) -> io::Result<Vec<SocketAddr>> {
    let mut addresses: Vec<SocketAddr> = host.to_socket_addrs()?.collect();
    addresses.sort_by_key(|address| !address.is_ipv4());
    Ok(addresses)
}

struct Pooled {
    stream: TcpStream,
    buffer: Vec<u8>,
    idle_since: Instant,
}

thread_local! {
    /// Per-reactor keep-alive connections by host.
    static POOL: RefCell<HashMap<String, Vec<Pooled>>> = RefCell::new(HashMap::new());
    /// Per-reactor DNS answers by host (resolved once, blocking).
    static ADDRESSES: RefCell<HashMap<String, Vec<SocketAddr>>> = RefCell::new(HashMap::new());
}

/// An open HTTP/1.1 connection to one volume.
pub struct Connection {
    host: String,
    stream: TcpStream,
    /// Bytes read from the volume and not consumed yet: `buffer[start..]`.
    buffer: Vec<u8>,
    start: usize,
    /// Taken from the pool (may have been closed by the server meanwhile).
    reused: bool,
    /// Bytes have arrived since the connection was opened or taken from
    /// the pool: the volume began an answer, so a request is not replayed.
    answered: bool,
    /// The server may take another request on it.
    reusable: bool,
    /// Closing it resets it (`resetting`) until it is released.
    resets: bool,
}

/// A response's status and framing.
#[derive(Clone, Copy, Debug)]
pub struct ResponseHead {
    pub status: u16,
    framing: Framing,
    /// `Content-Length` as sent (a HEAD's too).
    pub length: Option<u64>,
    /// `Last-Modified`, in milliseconds since the Unix epoch.
    pub last_modified_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

async fn with_timeout<T>(
    host: &str,
    timeout: Duration,
    future: impl std::future::Future<Output = io::Result<T>>,
) -> Result<T, VolumeError> {
    match monoio::time::timeout(timeout, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(VolumeError::Io(host.to_owned(), error)),
        Err(_) => Err(VolumeError::Timeout(host.to_owned())),
    }
}

impl Connection {
    /// A pooled connection to `host` that is still open, or a new one.
    pub async fn open(host: &str, timeout: Duration) -> Result<Connection, VolumeError> {
        if let Some(pooled) = take_pooled(host) {
            return Ok(Connection {
                host: host.to_owned(),
                stream: pooled.stream,
                buffer: pooled.buffer,
                start: 0,
                reused: true,
                answered: false,
                reusable: true,
                resets: false,
            });
        }
        Connection::open_new(host, timeout).await
    }

    /// Always a new connection.
    pub async fn open_new(host: &str, timeout: Duration) -> Result<Connection, VolumeError> {
        let addresses = cached_addresses(host).map_err(|error| VolumeError::Connect(host.to_owned(), error))?;
        let mut last_error = io::Error::other("no address");
        for address in addresses {
            match monoio::time::timeout(timeout, TcpStream::connect_addr(address)).await {
                Ok(Ok(stream)) => {
                    // Best effort: small request heads should not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    return Ok(Connection {
                        host: host.to_owned(),
                        stream,
                        buffer: Vec::with_capacity(CONNECTION_BUFFER_BYTES),
                        start: 0,
                        reused: false,
                        answered: false,
                        reusable: true,
                        resets: false,
                    });
                }
                Ok(Err(error)) => last_error = error,
                Err(_) => return Err(VolumeError::Timeout(host.to_owned())),
            }
        }
        Err(VolumeError::Connect(host.to_owned(), last_error))
    }

    /// The volume this connection talks to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Write all of `bytes`.
    pub async fn write<B: monoio::buf::IoBuf>(&mut self, bytes: B, timeout: Duration) -> Result<B, VolumeError> {
        let stream = &mut self.stream;
        let result = with_timeout(&self.host, timeout, async move {
            let (result, bytes) = stream.write_all(bytes).await;
            result.map(|_| bytes)
        })
        .await;
        if result.is_err() {
            self.reusable = false;
        }
        result
    }

    /// Read more bytes into the buffer; false at end of stream.
    async fn fill(&mut self, timeout: Duration) -> Result<bool, VolumeError> {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        if self.buffer.len() == self.buffer.capacity() {
            self.buffer.reserve(CONNECTION_BUFFER_BYTES);
        }
        let buffer = std::mem::take(&mut self.buffer);
        let stream = &mut self.stream;
        let length = buffer.len();
        let outcome = monoio::time::timeout(timeout, async move {
            let (result, slice) = stream.read(buffer.slice_mut(length..)).await;
            (result, slice.into_inner())
        })
        .await;
        match outcome {
            Ok((Ok(read), buffer)) => {
                self.buffer = buffer;
                if read == 0 {
                    self.reusable = false;
                }
                self.answered |= read > 0;
                Ok(read > 0)
            }
            Ok((Err(error), buffer)) => {
                self.buffer = buffer;
                self.reusable = false;
                Err(VolumeError::Io(self.host.clone(), error))
            }
            Err(_) => {
                // The read was cancelled with its buffer; this connection is done.
                self.reusable = false;
                self.buffer = Vec::with_capacity(CONNECTION_BUFFER_BYTES);
                Err(VolumeError::Timeout(self.host.clone()))
            }
        }
    }

    /// Read and parse a response head.
    pub async fn read_head(&mut self, timeout: Duration, request_was_head: bool) -> Result<ResponseHead, VolumeError> {
        loop {
            if let Some(head) = self.parse_head(request_was_head)? {
                return Ok(head);
            }
            if self.buffer.len() - self.start >= RESPONSE_HEAD_BYTES_MAX {
                return Err(VolumeError::Protocol(self.host.clone(), "response head too large"));
            }
            if !self.fill(timeout).await? {
                return Err(VolumeError::Io(
                    self.host.clone(),
                    io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a response"),
                ));
            }
        }
    }

    fn parse_head(&mut self, request_was_head: bool) -> Result<Option<ResponseHead>, VolumeError> {
        let protocol = |what| VolumeError::Protocol(self.host.clone(), what);
        let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADER_COUNT_MAX];
        let mut response = httparse::Response::new(&mut headers);
        let head_bytes = match response.parse(&self.buffer[self.start..]) {
            Ok(httparse::Status::Complete(bytes)) => bytes,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(protocol("malformed response head")),
        };
        let status = response.code.ok_or_else(|| protocol("no status"))?;
        let mut framing = Framing::UntilClose;
        let mut close = response.version == Some(0);
        let mut length = None;
        let mut last_modified_ms = None;
        for header in response.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                let value = parse_decimal(header.value).ok_or_else(|| protocol("bad Content-Length"))?;
                length = Some(value);
                framing = Framing::Length(value);
            } else if header.name.eq_ignore_ascii_case("last-modified") {
                last_modified_ms = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|text| httpdate::parse_http_date(text).ok())
                    .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|elapsed| elapsed.as_millis() as u64);
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                framing = Framing::Chunked;
            } else if header.name.eq_ignore_ascii_case("connection") {
                close = header.value.eq_ignore_ascii_case(b"close");
            }
        }
        if request_was_head || status == 204 || status == 304 || (100..200).contains(&status) {
            framing = Framing::Length(0);
        }
        if close || framing == Framing::UntilClose {
            self.reusable = false;
        }
        self.start += head_bytes;
        Ok(Some(ResponseHead {
            status,
            framing,
            length,
            last_modified_ms,
        }))
    }

    /// Read up to `out_max` body bytes into `out`; false once the body ended.
    pub async fn read_body(
        &mut self,
        body: &mut BodyState,
        out: &mut Vec<u8>,
        out_max: usize,
        timeout: Duration,
    ) -> Result<bool, VolumeError> {
        loop {
            if body.done {
                return Ok(false);
            }
            let available = &self.buffer[self.start..];
            let before = out.len();
            match &mut body.kind {
                BodyKind::Length(remaining) => {
                    let take = available
                        .len()
                        .min(out_max - out.len())
                        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    out.extend_from_slice(&available[..take]);
                    self.start += take;
                    *remaining -= take as u64;
                    body.done = *remaining == 0;
                }
                BodyKind::Chunked(decoder) => {
                    let decoded = decoder
                        .decode(available, out, out_max)
                        .map_err(|_| VolumeError::Protocol(self.host.clone(), "bad chunked body"))?;
                    self.start += decoded.consumed;
                    body.done = decoded.done;
                }
                BodyKind::UntilClose => {
                    let take = available.len().min(out_max - out.len());
                    out.extend_from_slice(&available[..take]);
                    self.start += take;
                }
            }
            if out.len() > before || body.done {
                return Ok(!body.done || out.len() > before);
            }
            if out.len() >= out_max {
                return Ok(true);
            }
            if !self.fill(timeout).await? {
                if matches!(body.kind, BodyKind::UntilClose) {
                    body.done = true;
                    return Ok(false);
                }
                return Err(VolumeError::Io(
                    self.host.clone(),
                    io::Error::new(io::ErrorKind::UnexpectedEof, "body cut short"),
                ));
            }
        }
    }

    /// Read a whole (small) body, up to `bytes_max`.
    pub async fn read_body_to_end(
        &mut self,
        head: ResponseHead,
        bytes_max: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, VolumeError> {
        let mut body = BodyState::new(head);
        let mut out = Vec::new();
        while self.read_body(&mut body, &mut out, bytes_max, timeout).await? {
            if out.len() >= bytes_max && !body.done {
                self.reusable = false;
                return Err(VolumeError::Protocol(self.host.clone(), "response body too large"));
            }
        }
        Ok(out)
    }

    /// Skip the body of a response so the connection can be reused.
    async fn discard_body(&mut self, head: ResponseHead, timeout: Duration) -> Result<(), VolumeError> {
        match head.framing {
            Framing::Length(0) => Ok(()),
            Framing::Length(length) if length <= DISCARD_BODY_BYTES_MAX => self
                .read_body_to_end(head, DISCARD_BODY_BYTES_MAX as usize, timeout)
                .await
                .map(drop),
            Framing::Chunked => self
                .read_body_to_end(head, DISCARD_BODY_BYTES_MAX as usize, timeout)
                .await
                .map(drop),
            _ => {
                self.reusable = false;
                Ok(())
            }
        }
    }

    /// This connection, made to reset rather than close gracefully when it
    /// is dropped before it is released (an upload's or a DELETE's, until
    /// the volume's answer is read).
    fn resetting(mut self) -> Connection {
        reset_on_close(&self.stream, true);
        self.resets = true;
        self
    }

    /// Give the connection back to this reactor's pool if it can be reused.
    pub fn release(self) {
        if !self.reusable || self.start != self.buffer.len() {
            return;
        }
        if self.resets {
            reset_on_close(&self.stream, false);
        }
        let mut buffer = self.buffer;
        buffer.clear();
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            let idle = pool.entry(self.host).or_default();
            if idle.len() < POOL_CONNECTIONS_MAX {
                idle.push(Pooled {
                    stream: self.stream,
                    buffer,
                    idle_since: Instant::now(),
                });
            }
        });
    }
}

/// Make closing `stream` send a reset and drop what it has not sent yet
/// (`SO_LINGER` 0), or close gracefully again. An upload dropped before
/// its verdict (a failure, or a write that stopped because its key's lease
/// can no longer be proven) must not have the kernel go on delivering its
/// queued bytes after the master let go, as a graceful close would: those
/// may be the body's last bytes, whose arrival makes nginx store the file,
/// after another master took the key. Bytes the volume's kernel already
/// acknowledged are beyond recall (ARCHITECTURE.md, "Key locks: leases
/// that fence").
fn reset_on_close(stream: &TcpStream, on: bool) {
    let linger = libc::linger {
        l_onoff: i32::from(on),
        l_linger: 0,
    };
    // SAFETY: the descriptor stays open while `stream` is borrowed, and
    // setsockopt reads exactly `size_of::<linger>()` bytes from `linger`.
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if result != 0 {
        eprintln!(
            "cannot set SO_LINGER on a volume connection: {}",
            io::Error::last_os_error()
        );
    }
}

/// Where a response body stands.
pub struct BodyState {
    kind: BodyKind,
    done: bool,
}

enum BodyKind {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

impl BodyState {
    /// The body that `head` announces.
    pub fn new(head: ResponseHead) -> BodyState {
        match head.framing {
            Framing::Length(length) => BodyState {
                kind: BodyKind::Length(length),
                done: length == 0,
            },
            Framing::Chunked => BodyState {
                kind: BodyKind::Chunked(ChunkedDecoder::default()),
                done: false,
            },
            Framing::UntilClose => BodyState {
                kind: BodyKind::UntilClose,
                done: false,
            },
        }
    }

    /// The announced length, if any.
    pub fn length(&self) -> Option<u64> {
        match self.kind {
            BodyKind::Length(length) => Some(length),
            _ => None,
        }
    }
}

/// Whether the volume has closed `stream` (end of stream or reset), seen
/// without reading from it or waiting.
fn closed_by_peer(stream: &TcpStream) -> bool {
    match connection::peek(stream, &mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() != io::ErrorKind::WouldBlock,
    }
}

/// The newest pooled connection to `host` that is fresh enough; the others
/// are closed on the way.
fn take_pooled(host: &str) -> Option<Pooled> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let idle = pool.get_mut(host)?;
        while let Some(pooled) = idle.pop() {
            if pooled.idle_since.elapsed() < POOL_IDLE_MAX {
                return Some(pooled);
            }
        }
        None
    })
}

fn cached_addresses(host: &str) -> io::Result<Vec<SocketAddr>> {
    if let Some(addresses) = ADDRESSES.with(|cache| cache.borrow().get(host).cloned()) {
        return Ok(addresses);
    }
    let addresses = resolve(host)?;
    ADDRESSES.with(|cache| cache.borrow_mut().insert(host.to_owned(), addresses.clone()));
    Ok(addresses)
}

/// Append a request head with no body.
fn request_head(method: &str, host: &str, path: &str, extra: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n").into_bytes()
}

/// A request without a body (HEAD, DELETE, GET of a small listing). Retries
/// once on a new connection when a pooled one turns out to be closed.
pub async fn simple_request(
    method: &str,
    host: &str,
    path: &str,
    timeout: Duration,
    body_bytes_max: usize,
) -> Result<(u16, Vec<u8>), VolumeError> {
    simple_request_as(method, host, path, timeout, body_bytes_max, false).await
}

/// `simple_request`, on connections that reset if dropped before the
/// answer is read (`resetting`), when `resetting`: a request that changes
/// a volume must not reach it after its sender gave up on it.
async fn simple_request_as(
    method: &str,
    host: &str,
    path: &str,
    timeout: Duration,
    body_bytes_max: usize,
    resetting: bool,
) -> Result<(u16, Vec<u8>), VolumeError> {
    let open = |connection: Connection| match resetting {
        true => connection.resetting(),
        false => connection,
    };
    let mut connection = open(Connection::open(host, timeout).await?);
    match simple_request_on(&mut connection, method, path, timeout, body_bytes_max).await {
        Err(VolumeError::Io(..)) if connection.reused => {
            let mut connection = open(Connection::open_new(host, timeout).await?);
            let result = simple_request_on(&mut connection, method, path, timeout, body_bytes_max).await;
            connection.release();
            result
        }
        result => {
            connection.release();
            result
        }
    }
}

async fn simple_request_on(
    connection: &mut Connection,
    method: &str,
    path: &str,
    timeout: Duration,
    body_bytes_max: usize,
) -> Result<(u16, Vec<u8>), VolumeError> {
    let head = request_head(method, &connection.host.clone(), path, "");
    connection.write(head, timeout).await?;
    let head = connection.read_head(timeout, method == "HEAD").await?;
    let body = if (200..300).contains(&head.status) && body_bytes_max > 0 {
        connection.read_body_to_end(head, body_bytes_max, timeout).await?
    } else {
        connection.discard_body(head, timeout).await?;
        Vec::new()
    };
    Ok((head.status, body))
}

/// HEAD a file on a volume: Ok(true) if it is there, Ok(false) on 404.
pub async fn exists(host: &str, path: &str, timeout: Duration) -> Result<bool, VolumeError> {
    match simple_request("HEAD", host, path, timeout, 0).await?.0 {
        200 => Ok(true),
        404 => Ok(false),
        status => Err(VolumeError::Status(host.to_owned(), status)),
    }
}

/// What a HEAD tells of a file.
pub struct FileInfo {
    pub length: u64,
    pub last_modified_ms: Option<u64>,
}

/// HEAD a file on a volume: its length and mtime, Ok(None) on 404.
pub async fn head(host: &str, path: &str, timeout: Duration) -> Result<Option<FileInfo>, VolumeError> {
    let mut connection = Connection::open(host, timeout).await?;
    let request = request_head("HEAD", host, path, "");
    let answer = async {
        connection.write(request.clone(), timeout).await?;
        connection.read_head(timeout, true).await
    };
    let head = match answer.await {
        Ok(head) => head,
        Err(VolumeError::Io(..)) if connection.reused => {
            connection = Connection::open_new(host, timeout).await?;
            connection.write(request, timeout).await?;
            connection.read_head(timeout, true).await?
        }
        Err(error) => return Err(error),
    };
    connection.release();
    match (head.status, head.length) {
        (200, Some(length)) => Ok(Some(FileInfo {
            length,
            last_modified_ms: head.last_modified_ms,
        })),
        (404, _) => Ok(None),
        (200, None) => Err(VolumeError::Protocol(host.to_owned(), "HEAD without Content-Length")),
        (status, _) => Err(VolumeError::Status(host.to_owned(), status)),
    }
}

/// DELETE a file on a volume; a file already gone counts as deleted. A
/// DELETE dropped before its answer (its writer's key lease lapsed:
/// `replication::unless_lease_lost`) resets its connection.
pub async fn delete(host: &str, path: &str, timeout: Duration) -> Result<(), VolumeError> {
    match simple_request_as("DELETE", host, path, timeout, 0, true).await?.0 {
        200 | 204 | 404 => Ok(()),
        status => Err(VolumeError::Status(host.to_owned(), status)),
    }
}

/// The line that opens a chunk of `bytes` bytes in a chunked body.
fn chunk_size_line(bytes: usize) -> Vec<u8> {
    format!("{bytes:x}\r\n").into_bytes()
}

/// Append `piece` to `out`, framed as a chunk when `chunked`.
fn append_piece(out: &mut Vec<u8>, piece: &[u8], chunked: bool) {
    if chunked {
        out.extend_from_slice(&chunk_size_line(piece.len()));
    }
    out.extend_from_slice(piece);
    if chunked {
        out.extend_from_slice(b"\r\n");
    }
}

/// An upload in progress: a PUT whose body is being streamed to one volume.
pub struct Upload {
    connection: Connection,
    chunked: bool,
    timeout: Duration,
    /// Timeout for opening a new connection (a replay needs one).
    connect_timeout: Duration,
    /// Everything sent so far, while the upload runs on a pooled connection
    /// that has not answered yet and that is all its body: then the request
    /// can go again on a new connection if the volume had closed the
    /// pooled one. Shared with the caller's piece, not copied.
    replay: Option<PutRequest>,
    /// The declared `Content-Length`, if the body is not chunked.
    length: Option<u64>,
    /// Body bytes written on the current connection.
    sent: u64,
    /// The last chunk of a chunked body was written.
    ended: bool,
}

/// What an upload left on its volume, once settled: the answer read, or the
/// connection closed before the body completed (nginx then discards it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// The volume answered 201/204: it holds the new value.
    Taken,
    /// The volume does not hold the new value and never will: the body
    /// never completed, or the volume refused it.
    NotTaken,
    /// The whole body went out but no verdict came (timeout, reset): the
    /// volume may hold the new value, now or later.
    Unknown,
}

/// The start of a PUT: its head and the first piece of its body.
#[derive(Clone)]
struct PutRequest {
    /// The head, with the first piece when it is small enough to ride along.
    head: Bytes,
    /// The first piece when it is too large to ride with the head, or empty.
    first: Bytes,
    /// Body bytes inside `head`.
    body_in_head: usize,
}

impl PutRequest {
    fn new(host: &str, path: &str, length: Option<u64>, first: Bytes) -> PutRequest {
        let mut head = put_head(host, path, length, false);
        // A small first piece (most values, and all of a small one) rides in
        // the same write and packet as the head.
        if first.len() > INLINE_BODY_BYTES_MAX {
            return PutRequest {
                head: Bytes::from(head),
                first,
                body_in_head: 0,
            };
        }
        // An empty chunk would end a chunked body: send nothing for it.
        if !first.is_empty() {
            append_piece(&mut head, &first, length.is_none());
        }
        PutRequest {
            head: Bytes::from(head),
            body_in_head: first.len(),
            first: Bytes::new(),
        }
    }
}

/// The head of `PUT path`, asking for `100 Continue` when `expect_continue`.
fn put_head(host: &str, path: &str, length: Option<u64>, expect_continue: bool) -> Vec<u8> {
    let mut extra = match length {
        Some(length) => format!("Content-Length: {length}\r\n"),
        None => "Transfer-Encoding: chunked\r\n".to_owned(),
    };
    if expect_continue {
        extra.push_str("Expect: 100-continue\r\n");
    }
    request_head("PUT", host, path, &extra)
}

impl Upload {
    /// Send the head of `PUT path`; `length` None streams the body chunked.
    pub async fn begin(
        host: &str,
        path: &str,
        length: Option<u64>,
        timeout: Duration,
        io_timeout: Duration,
    ) -> Result<Upload, VolumeError> {
        Upload::begin_with(host, path, length, Bytes::new(), timeout, io_timeout).await
    }

    /// Send the head of `PUT path` and the body's `first` piece (may be
    /// empty); `length` None streams the body chunked.
    ///
    /// A pooled connection may have been closed by the volume an instant
    /// ago, which shows only when the answer is read. An upload whose body
    /// is its first piece (a chunked one of one small piece counts) keeps
    /// that piece and goes again on a new connection then. One whose body
    /// goes on cannot be sent again: on a pooled connection it first asks
    /// the volume to confirm with `100 Continue`, and sends no body before.
    pub async fn begin_with(
        host: &str,
        path: &str,
        length: Option<u64>,
        first: Bytes,
        timeout: Duration,
        io_timeout: Duration,
    ) -> Result<Upload, VolumeError> {
        let whole = match length {
            Some(length) => length <= first.len() as u64,
            None => first.len() <= INLINE_BODY_BYTES_MAX,
        };
        let mut upload = Upload {
            connection: Connection::open(host, timeout).await?.resetting(),
            chunked: length.is_none(),
            timeout: io_timeout,
            connect_timeout: timeout,
            replay: None,
            length,
            sent: 0,
            ended: false,
        };
        if upload.connection.reused && !whole {
            if upload.confirm(put_head(host, path, length, true)).await? {
                upload.write_piece(first).await?;
                return Ok(upload);
            }
            upload.connection = Connection::open_new(host, timeout).await?.resetting();
        }
        let request = PutRequest::new(host, path, length, first);
        if upload.connection.reused {
            upload.replay = Some(request.clone());
        }
        match upload.send_request(request).await {
            Err(VolumeError::Io(..)) if upload.may_replay() => upload.replay().await?,
            result => result?,
        }
        Ok(upload)
    }

    /// Send `head` (which asks for `100 Continue`) and read the answer:
    /// true on 100, false when the connection turns out closed before any
    /// answer; another status is the volume's verdict.
    async fn confirm(&mut self, head: Vec<u8>) -> Result<bool, VolumeError> {
        let (connection, timeout) = (&mut self.connection, self.timeout);
        let answer = async {
            connection.write(head, timeout).await?;
            connection.read_head(timeout, false).await
        };
        match answer.await {
            Ok(head) if head.status == 100 => Ok(true),
            Ok(head) => Err(VolumeError::Status(self.connection.host.clone(), head.status)),
            Err(VolumeError::Io(..)) if !self.connection.answered => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Whether the request can still go again on a new connection: it is
    /// held whole and the volume has not begun to answer it.
    fn may_replay(&self) -> bool {
        self.replay.is_some() && !self.connection.answered
    }

    /// Send the held request again on a new connection (the pooled one it
    /// went out on was closed by the volume before answering).
    async fn replay(&mut self) -> Result<(), VolumeError> {
        let request = self.replay.take().expect("a held request to replay");
        self.connection = Connection::open_new(&self.connection.host, self.connect_timeout)
            .await?
            .resetting();
        self.sent = 0;
        self.ended = false;
        self.send_request(request).await
    }

    async fn send_request(&mut self, request: PutRequest) -> Result<(), VolumeError> {
        self.connection.write(request.head, self.timeout).await?;
        self.count_sent(request.body_in_head);
        self.write_piece(request.first).await
    }

    /// Send one piece of the body.
    pub async fn send(&mut self, piece: Bytes) -> Result<(), VolumeError> {
        if piece.is_empty() {
            return Ok(());
        }
        if self.replay.is_some() {
            // A chunked body longer than its small first piece: from here on
            // it cannot be sent again. If the volume closed the pooled
            // connection meanwhile, this is the last moment to start over.
            if closed_by_peer(&self.connection.stream) {
                self.replay().await?;
            }
            self.replay = None;
        }
        self.write_piece(piece).await
    }

    async fn write_piece(&mut self, piece: Bytes) -> Result<(), VolumeError> {
        if piece.is_empty() {
            return Ok(());
        }
        let piece_bytes = piece.len();
        if self.chunked {
            self.connection
                .write(chunk_size_line(piece.len()), self.timeout)
                .await?;
            self.connection.write(piece, self.timeout).await?;
            self.connection.write(&b"\r\n"[..], self.timeout).await?;
        } else {
            self.connection.write(piece, self.timeout).await?;
        }
        self.count_sent(piece_bytes);
        Ok(())
    }

    /// Note `bytes` more body bytes written.
    fn count_sent(&mut self, bytes: usize) {
        self.sent += bytes as u64;
    }

    /// The whole body is on the wire: the volume will store it whatever
    /// happens to this connection now.
    fn complete(&self) -> bool {
        self.ended || self.length == Some(self.sent)
    }

    /// End the body and wait for the volume's verdict: Ok on 201/204.
    pub async fn finish(self) -> Result<(), VolumeError> {
        self.finish_settled().await.1
    }

    /// `finish`, also saying what the volume holds now when it failed.
    pub async fn finish_settled(mut self) -> (Settled, Result<(), VolumeError>) {
        let head = match self.end().await {
            Err(VolumeError::Io(..)) if self.may_replay() => match self.replay().await {
                Ok(()) => self.end().await,
                Err(error) => Err(error),
            },
            result => result,
        };
        self.conclude(head).await
    }

    /// Settle an upload abandoned mid-PUT (another replica or the client
    /// failed) before anything is cleaned up: a body that is all on the wire
    /// will be stored by the volume, so wait for its verdict; otherwise close
    /// the connection, which makes the volume discard the partial body. A
    /// cleanup DELETE sent before this could reach the volume before the
    /// PUT completes and leave an orphan file behind.
    pub async fn settle(mut self) -> Settled {
        if !self.complete() {
            drop(self.connection);
            return Settled::NotTaken;
        }
        let head = self.connection.read_head(self.timeout, false).await;
        self.conclude(head).await.0
    }

    /// End the body and read the answer's head.
    async fn end(&mut self) -> Result<ResponseHead, VolumeError> {
        if self.chunked {
            self.connection.write(&b"0\r\n\r\n"[..], self.timeout).await?;
            self.ended = true;
        }
        self.connection.read_head(self.timeout, false).await
    }

    /// What the volume's answer (or its absence) means for the value.
    async fn conclude(mut self, head: Result<ResponseHead, VolumeError>) -> (Settled, Result<(), VolumeError>) {
        let head = match head {
            Ok(head) => head,
            // A complete body may still be stored; an incomplete one never.
            Err(error) if self.complete() => return (Settled::Unknown, Err(error)),
            Err(error) => return (Settled::NotTaken, Err(error)),
        };
        let discarded = self.connection.discard_body(head, self.timeout).await;
        let host = self.connection.host.clone();
        if discarded.is_ok() {
            self.connection.release();
        }
        match head.status {
            201 | 204 => (Settled::Taken, Ok(())),
            status => (Settled::NotTaken, Err(VolumeError::Status(host, status))),
        }
    }
}

/// A GET whose body is read piece by piece (rebalance copies values with it).
pub struct Download {
    connection: Connection,
    body: BodyState,
    timeout: Duration,
    /// Body bytes handed out so far.
    delivered: u64,
}

impl Download {
    /// GET `path`; Ok(None) on 404.
    pub async fn begin(
        host: &str,
        path: &str,
        timeout: Duration,
        io_timeout: Duration,
    ) -> Result<Option<Download>, VolumeError> {
        Download::begin_range(host, path, None, timeout, io_timeout).await
    }

    /// GET bytes `first..=last` of `path` (all of it for None); Ok(None) on 404.
    pub async fn begin_range(
        host: &str,
        path: &str,
        range: Option<(u64, u64)>,
        timeout: Duration,
        io_timeout: Duration,
    ) -> Result<Option<Download>, VolumeError> {
        let extra = range.map_or_else(String::new, |(first, last)| format!("Range: bytes={first}-{last}\r\n"));
        let mut connection = Connection::open(host, timeout).await?;
        let response = async {
            connection
                .write(request_head("GET", host, path, &extra), io_timeout)
                .await?;
            connection.read_head(io_timeout, false).await
        };
        let head = match response.await {
            Ok(head) => head,
            Err(VolumeError::Io(..)) if connection.reused => {
                connection = Connection::open_new(host, timeout).await?;
                connection
                    .write(request_head("GET", host, path, &extra), io_timeout)
                    .await?;
                connection.read_head(io_timeout, false).await?
            }
            Err(error) => return Err(error),
        };
        match head.status {
            200 if range.is_none() => Ok(Some(Download {
                connection,
                body: BodyState::new(head),
                timeout: io_timeout,
                delivered: 0,
            })),
            206 if range.is_some() => Ok(Some(Download {
                connection,
                body: BodyState::new(head),
                timeout: io_timeout,
                delivered: 0,
            })),
            404 => {
                connection.discard_body(head, io_timeout).await?;
                connection.release();
                Ok(None)
            }
            status => Err(VolumeError::Status(host.to_owned(), status)),
        }
    }

    /// The value's length, when the volume announced it.
    pub fn length(&self) -> Option<u64> {
        self.body.length()
    }

    /// The next piece of at most `bytes_max`, or None at the end.
    pub async fn next(&mut self, bytes_max: usize) -> Result<Option<Bytes>, VolumeError> {
        let mut piece = Vec::with_capacity(bytes_max);
        while piece.len() < bytes_max {
            if !self
                .connection
                .read_body(&mut self.body, &mut piece, bytes_max, self.timeout)
                .await?
            {
                break;
            }
        }
        self.delivered += piece.len() as u64;
        Ok((!piece.is_empty()).then(|| Bytes::from(piece)))
    }

    /// Body bytes handed out so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Return the connection to the pool (after the whole body was read).
    pub fn finish(self) {
        self.connection.release();
    }
}
