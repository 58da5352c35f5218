//! One client connection: its socket, its reused input and output buffers,
//! and reading request bodies in bounded pieces.
//!
//! Requests are parsed in place from `input`; responses are appended to
//! `output` and written together, so pipelined requests already in the buffer
//! are answered with one write.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::Bytes;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::config::BodyLimits;
use crate::http::{could_start_request, BodyFraming, ChunkedDecoder, KeepAlive, RequestHead, HEADER_BYTES_MAX};

/// Input buffer of a connection; holds at least one full request head.
pub const INPUT_BUFFER_BYTES: usize = 32 * 1024;
/// Output is written once this much is queued, even mid-pipeline.
pub const OUTPUT_FLUSH_BYTES: usize = 64 * 1024;
/// A response write that makes no progress for this long ends the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// A refused request's body up to this size is read and dropped so the client
/// gets its answer on a live connection; a larger one closes the connection.
pub const DRAIN_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Bytes of a drained body read (and dropped) at a time.
const DRAIN_PIECE_BYTES: usize = 64 * 1024;
/// Bytes already received after a `Content-Length` body that are looked at
/// to tell the next request from excess body: enough for the longest method
/// name and its space.
const NEXT_REQUEST_PEEK_BYTES: usize = 64;

const _: () = assert!(HEADER_BYTES_MAX < INPUT_BUFFER_BYTES);

/// How reading a request body failed; every case fails the request.
#[derive(Debug)]
pub enum BodyError {
    /// The client closed the connection before the body ended.
    CutShort,
    /// Bad chunked framing.
    Malformed(&'static str),
    /// The body went on past its declared `Content-Length`.
    TooLong,
    /// No progress within the per-read timeout, or the body came slower
    /// than its minimum rate (`BodyLimits`).
    Timeout,
    /// The socket failed.
    Io(io::Error),
    /// `100 Continue` could not be sent: the client went away.
    ContinueFailed,
    /// The body is not what the client said it is (a checksum or hash
    /// that does not match, a chunk signature that fails): the status and
    /// error code for the client, and why.
    Rejected {
        status: u16,
        code: &'static str,
        message: String,
    },
}

/// A client connection.
pub struct Connection {
    stream: TcpStream,
    /// Received bytes; `input[start..]` is not consumed yet.
    pub input: Vec<u8>,
    pub start: usize,
    /// Responses not yet written.
    pub output: Vec<u8>,
    /// Scratch space for a percent-decoded key.
    pub scratch: Vec<u8>,
    /// Some of the current request's body has been read.
    pub body_touched: bool,
    /// The current request's body has been read to its end (or it has
    /// none): what follows in the input is the next request.
    pub body_done: bool,
    /// Times `read_more` moved the unconsumed input to the front: offsets
    /// into `input` taken before a move are stale.
    pub moves: u64,
    /// Accepted on the S3 port: every request is an S3 one.
    pub s3_only: bool,
    /// The current S3 request's id (`x-amz-request-id`).
    pub request_id: u64,
    /// Header lines every answer to the current S3 request carries
    /// (CORS), each ending in CRLF.
    pub s3_headers: String,
}

impl Connection {
    pub fn new(stream: TcpStream) -> Connection {
        Connection {
            stream,
            input: Vec::with_capacity(INPUT_BUFFER_BYTES),
            start: 0,
            output: Vec::with_capacity(OUTPUT_FLUSH_BYTES),
            scratch: Vec::with_capacity(256),
            body_touched: false,
            body_done: true,
            request_id: 0,
            s3_headers: String::new(),
            moves: 0,
            s3_only: false,
        }
    }

    /// Bytes received and not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.input[self.start..]
    }

    /// Write all queued output.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let output = std::mem::take(&mut self.output);
        let stream = &mut self.stream;
        match monoio::time::timeout(WRITE_TIMEOUT, stream.write_all(output)).await {
            Ok((result, mut output)) => {
                crate::metrics::count_bytes_out(output.len());
                output.clear();
                self.output = output;
                result.map(drop)
            }
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client did not read its responses",
            )),
        }
    }

    /// Write queued output, then `piece` (a streamed response body).
    pub async fn write_piece(&mut self, piece: Bytes) -> io::Result<()> {
        self.flush().await?;
        let stream = &mut self.stream;
        match monoio::time::timeout(WRITE_TIMEOUT, stream.write_all(piece)).await {
            Ok((result, piece)) => {
                crate::metrics::count_bytes_out(piece.len());
                result.map(drop)
            }
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client did not read its response",
            )),
        }
    }

    /// Read more input, waiting at most `timeout`. Returns bytes read (0 at end).
    pub async fn read_more(&mut self, timeout: Duration) -> io::Result<usize> {
        if self.start > 0 {
            self.input.copy_within(self.start.., 0);
            self.input.truncate(self.input.len() - self.start);
            self.start = 0;
            self.moves += 1;
        }
        if self.input.len() == self.input.capacity() {
            return Err(io::Error::other("input buffer full"));
        }
        let input = std::mem::take(&mut self.input);
        let length = input.len();
        let stream = &mut self.stream;
        match monoio::time::timeout(timeout, stream.read(input.slice_mut(length..))).await {
            Ok((result, input)) => {
                self.input = input.into_inner();
                crate::metrics::count_bytes_in(*result.as_ref().unwrap_or(&0));
                result
            }
            // The cancelled read keeps the buffer; the caller closes the connection.
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "client idle")),
        }
    }

    /// Close the write side: the client reads the end of the responses.
    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        use monoio::io::AsyncWriteRent;
        self.stream.shutdown().await
    }

    /// A new request begins: nothing of its body has been read yet.
    pub fn begin_request(&mut self, head: &RequestHead) {
        self.body_touched = false;
        self.body_done = !head.has_body();
    }

    /// Send `100 Continue` now (the client waits for it before the body).
    pub async fn send_continue(&mut self) -> io::Result<()> {
        self.output.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        self.flush().await
    }
}

/// Read and drop the body of a refused request. Returns whether the
/// connection can serve another request (the whole body was drained).
pub async fn drain_body(connection: &mut Connection, framing: BodyFraming, limits: BodyLimits) -> bool {
    if matches!(framing, BodyFraming::Length(length) if length > DRAIN_BYTES_MAX) {
        return false;
    }
    let mut body = BodyReader::new(framing, limits);
    loop {
        match body.next(connection, DRAIN_PIECE_BYTES).await {
            Ok(Some(_)) if body.received <= DRAIN_BYTES_MAX => {}
            Ok(None) => return true,
            Ok(Some(_)) | Err(_) => return false,
        }
    }
}

/// After a request was answered (`keep_alive` is what the answer allows):
/// whether the connection may serve another. A body the handler left
/// unread, wholly or in part, is still on the wire, where it would be
/// parsed as the next request (request smuggling): a small one that was not
/// touched is read and dropped, anything else closes the connection. So no
/// request leaves body bytes on a connection that is kept.
pub async fn settle_body(
    connection: &mut Connection,
    head: &RequestHead,
    keep_alive: KeepAlive,
    limits: BodyLimits,
) -> KeepAlive {
    if !keep_alive.is_open() || connection.body_done {
        return keep_alive;
    }
    // A client waiting for `100 Continue` may or may not send its body
    // after its own timeout: the connection cannot tell, so it closes.
    let drained = !head.expect_continue && !connection.body_touched && drain_body(connection, head.body, limits).await;
    keep_alive.unless(!drained)
}

/// Reads one request body from a connection, piece by piece.
pub struct BodyReader {
    framing: Framing,
    pace: Pace,
    /// Body bytes delivered so far.
    pub received: u64,
    /// Bytes after a length-framed body that cannot start a request are
    /// noted in `excess` instead of failing the last piece: the caller
    /// checks the body's digest first (a body cut by its `Content-Length`
    /// is foremost a body that does not match its Content-MD5).
    defer_excess: bool,
    pub excess: bool,
}

/// The time a body has spent waiting on its client, against its allowance.
struct Pace {
    limits: BodyLimits,
    /// Time spent in reads of this body. Only waiting on the client counts:
    /// time the PUT spends writing to slow volumes is not the client's fault.
    waited: Duration,
}

impl Pace {
    /// How long the next read may wait, with `received` body bytes in so
    /// far: the per-read timeout, or less when the body's allowance of
    /// `read_timeout + received / rate_min` runs out sooner. None once it has.
    fn read_timeout(&self, received: u64) -> Option<Duration> {
        let BodyLimits {
            read_timeout,
            rate_min_bytes_per_second: rate,
        } = self.limits;
        if rate == 0 {
            return Some(read_timeout);
        }
        let earned_nanos = u128::from(received) * 1_000_000_000 / u128::from(rate);
        let earned = Duration::from_nanos(u64::try_from(earned_nanos).unwrap_or(u64::MAX));
        let left = read_timeout.saturating_add(earned).checked_sub(self.waited)?;
        (!left.is_zero()).then(|| left.min(read_timeout))
    }

    /// Run one read of the body, with `received` body bytes in so far:
    /// `read` is given how long it may wait, and the time it took counts
    /// against the body's allowance.
    async fn read<F: std::future::Future>(
        &mut self,
        received: u64,
        read: impl FnOnce(Duration) -> F,
    ) -> Result<F::Output, BodyError> {
        let timeout = self.read_timeout(received).ok_or(BodyError::Timeout)?;
        let began = Instant::now();
        let output = read(timeout).await;
        self.waited += began.elapsed();
        Ok(output)
    }
}

enum Framing {
    Length { remaining: u64 },
    Chunked { decoder: ChunkedDecoder, done: bool },
}

impl BodyReader {
    /// A reader for a body framed as `framing` (which must not be `None`),
    /// arriving within `limits`.
    pub fn new(framing: BodyFraming, limits: BodyLimits) -> BodyReader {
        let framing = match framing {
            BodyFraming::Length(length) => Framing::Length { remaining: length },
            BodyFraming::Chunked => Framing::Chunked {
                decoder: ChunkedDecoder::default(),
                done: false,
            },
            BodyFraming::None => Framing::Length { remaining: 0 },
        };
        BodyReader {
            framing,
            pace: Pace {
                limits,
                waited: Duration::ZERO,
            },
            received: 0,
            defer_excess: false,
            excess: false,
        }
    }

    /// Report excess after the body through `excess`, not as an error.
    pub fn deferring_excess(mut self) -> BodyReader {
        self.defer_excess = true;
        self
    }

    /// The next piece of at most `bytes_max` body bytes; None once the body ended.
    pub async fn next(&mut self, connection: &mut Connection, bytes_max: usize) -> Result<Option<Bytes>, BodyError> {
        connection.body_touched = true;
        let (pace, received) = (&mut self.pace, self.received);
        let piece = match &mut self.framing {
            Framing::Length { remaining } => {
                let piece = read_length(connection, pace, received, remaining, bytes_max).await?;
                if *remaining == 0 {
                    if let Err(error) = reject_trailing_garbage(connection) {
                        if !self.defer_excess {
                            return Err(error);
                        }
                        self.excess = true;
                    }
                }
                piece
            }
            Framing::Chunked { decoder, done } => {
                read_chunked(connection, pace, received, decoder, done, bytes_max).await?
            }
        };
        self.received += piece.len() as u64;
        if self.is_done() {
            connection.body_done = true;
        }
        if piece.is_empty() {
            return Ok(None);
        }
        Ok(Some(Bytes::from(piece)))
    }

    /// Whether the body has been read to its end.
    pub fn is_done(&self) -> bool {
        match &self.framing {
            Framing::Length { remaining } => *remaining == 0,
            Framing::Chunked { done, .. } => *done,
        }
    }
}

fn read_error(result: io::Result<usize>) -> Result<(), BodyError> {
    match result {
        Ok(0) => Err(BodyError::CutShort),
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::TimedOut => Err(BodyError::Timeout),
        Err(error) => Err(BodyError::Io(error)),
    }
}

async fn read_length(
    connection: &mut Connection,
    pace: &mut Pace,
    received: u64,
    remaining: &mut u64,
    bytes_max: usize,
) -> Result<Vec<u8>, BodyError> {
    let want = usize::try_from(*remaining).unwrap_or(usize::MAX).min(bytes_max);
    let mut piece = Vec::with_capacity(want);
    let buffered = connection.buffered();
    let take = buffered.len().min(want);
    piece.extend_from_slice(&buffered[..take]);
    connection.start += take;
    while piece.len() < want {
        // Read straight into the piece: the body is not copied through `input`.
        let length = piece.len();
        let stream = &mut connection.stream;
        let read = |timeout| monoio::time::timeout(timeout, stream.read(piece.slice_mut(length..want)));
        let (result, slice) = pace
            .read(received + length as u64, read)
            .await?
            .map_err(|_| BodyError::Timeout)?;
        piece = slice.into_inner();
        crate::metrics::count_bytes_in(*result.as_ref().unwrap_or(&0));
        read_error(result)?;
    }
    *remaining -= piece.len() as u64;
    Ok(piece)
}

/// Bytes already received right after a complete body must start another
/// request; anything else means the body was longer than its
/// `Content-Length` said. The body was read up to its length and no
/// further, so what follows may still be in the socket rather than in
/// `input`: look there too, without taking it. (Excess that arrives later is
/// indistinguishable from a bad next request, which is answered 400 on its
/// own.)
fn reject_trailing_garbage(connection: &Connection) -> Result<(), BodyError> {
    let mut peeked = [0u8; NEXT_REQUEST_PEEK_BYTES];
    let next = match connection.buffered() {
        [] => {
            let peeked_bytes = peek(&connection.stream, &mut peeked).unwrap_or(0);
            &peeked[..peeked_bytes]
        }
        buffered => buffered,
    };
    // Empty lines before a request line are ignored (RFC 9112 section 2.2;
    // `parse_request` skips them too), so a CRLF after a body is no excess.
    let start = next
        .iter()
        .position(|&byte| byte != b'\r' && byte != b'\n')
        .unwrap_or(next.len());
    if !could_start_request(&next[start..]) {
        return Err(BodyError::TooLong);
    }
    Ok(())
}

/// Copy into `buffer` bytes that have arrived on `stream` and not been read
/// yet, leaving them there, without waiting: Ok(0) at the end of the
/// stream, `WouldBlock` when nothing has arrived. Only while no read is in
/// flight on the stream (the runtime's view of it stays as it was). The
/// volume client uses it too, to see whether a pooled connection is open.
pub fn peek(stream: &TcpStream, buffer: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the descriptor stays open while `stream` is borrowed, and recv
    // writes at most `buffer.len()` bytes into `buffer`. MSG_DONTWAIT makes
    // it return at once on a blocking socket too (the io_uring driver's).
    let peeked = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(peeked).map_err(|_| io::Error::last_os_error())
}

async fn read_chunked(
    connection: &mut Connection,
    pace: &mut Pace,
    received: u64,
    decoder: &mut ChunkedDecoder,
    done: &mut bool,
    bytes_max: usize,
) -> Result<Vec<u8>, BodyError> {
    let mut piece = Vec::with_capacity(bytes_max);
    while !*done && piece.len() < bytes_max {
        if !connection.buffered().is_empty() {
            let decoded =
                decoder
                    .decode(connection.buffered(), &mut piece, bytes_max)
                    .map_err(|error| match error {
                        crate::http::HttpError::BadRequest(what) => BodyError::Malformed(what),
                        _ => BodyError::Malformed("bad chunked body"),
                    })?;
            connection.start += decoded.consumed;
            *done = decoded.done;
            if *done || piece.len() == bytes_max {
                break;
            }
        }
        let read = pace
            .read(received + piece.len() as u64, |timeout| connection.read_more(timeout))
            .await?;
        read_error(read)?;
    }
    Ok(piece)
}
