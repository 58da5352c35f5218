//! The HTTP/1.x codec, sans IO: request heads in, response bytes out.
//!
//! `parse_request` reads one request head from the front of a buffer with
//! `httparse` and returns offsets into that buffer rather than borrowed
//! strings, so the connection can keep the bytes where they are (no copy,
//! no allocation) while a handler runs. `ChunkedDecoder` undoes
//! `Transfer-Encoding: chunked` incrementally, and the `write_*` functions
//! append responses to a connection's reused output buffer.

use std::cell::Cell;
use std::ops::Range;

/// Most bytes a request head (request line + headers) may take.
pub const HEADER_BYTES_MAX: usize = 16 * 1024;
/// Most header lines in one request.
pub const HEADER_COUNT_MAX: usize = 64;
/// Longest chunk-size line (hex digits plus extensions) we accept.
const CHUNK_LINE_BYTES_MAX: usize = 1024;

/// The request methods the master knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Put,
    Delete,
    Post,
    Unlink,
    Relink,
    Rebalance,
    /// S3 only: a CORS preflight.
    Options,
}

/// Every method name the master knows, as sent on the wire.
const METHOD_NAMES: [&[u8]; 9] = [
    b"GET",
    b"HEAD",
    b"PUT",
    b"DELETE",
    b"POST",
    b"UNLINK",
    b"RELINK",
    b"REBALANCE",
    b"OPTIONS",
];

/// Whether `bytes` can be the beginning of a request to this server: its
/// first token is (a prefix of) a method the master knows. Used to tell a
/// pipelined request from the excess of a body longer than its
/// `Content-Length`.
pub fn could_start_request(bytes: &[u8]) -> bool {
    match bytes.iter().position(|&byte| byte == b' ') {
        Some(space) => METHOD_NAMES.contains(&&bytes[..space]),
        None => METHOD_NAMES.iter().any(|name| name.starts_with(bytes)),
    }
}

impl Method {
    fn from_bytes(bytes: &[u8]) -> Option<Method> {
        Some(match bytes {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"POST" => Method::Post,
            b"UNLINK" => Method::Unlink,
            b"RELINK" => Method::Relink,
            b"REBALANCE" => Method::Rebalance,
            b"OPTIONS" => Method::Options,
            _ => return None,
        })
    }
}

/// How the request body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (no `Content-Length`, no `Transfer-Encoding`).
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// One parsed request head. Ranges index the buffer given to `parse_request`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// The path, still percent-encoded, without the query.
    pub path: Range<usize>,
    /// The query after `?`, if any.
    pub query: Option<Range<usize>>,
    pub body: BodyFraming,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// An `Expect` with any other value was sent: the native API answers
    /// 417 (as Go's net/http), S3 ignores it (as AWS does).
    pub expect_other: bool,
    /// Whether the connection stays open after this request, and how the
    /// response says so.
    pub keep_alive: KeepAlive,
    /// HTTP/1.0 (no chunked responses).
    pub http10: bool,
    /// Bytes the head took, including the blank line.
    pub head_bytes: usize,
    /// A header only S3 clients send: an AWS `Authorization` or any
    /// `x-amz-*` (the request goes to the S3 API).
    pub s3: bool,
}

impl RequestHead {
    /// Whether a body follows the head.
    pub fn has_body(&self) -> bool {
        !matches!(self.body, BodyFraming::None | BodyFraming::Length(0))
    }
}

/// Whether a connection stays open after a response, and what the response
/// must say for the client to know. HTTP/1.1 stays open unless told
/// otherwise; HTTP/1.0 closes unless both sides say `Connection:
/// keep-alive`, so an HTTP/1.0 client that asked for it waits for EOF unless
/// the answer confirms it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepAlive {
    /// The connection ends after this response: `Connection: close`.
    Close,
    /// HTTP/1.1 persistence, the default: no header needed.
    Open,
    /// HTTP/1.0 persistence the client asked for: `Connection: keep-alive`.
    Open10,
}

impl KeepAlive {
    /// Whether the connection stays open.
    pub fn is_open(self) -> bool {
        self != KeepAlive::Close
    }

    /// `self`, or `Close` when `close` holds.
    pub fn unless(self, close: bool) -> KeepAlive {
        if close {
            KeepAlive::Close
        } else {
            self
        }
    }

    /// The header line that tells the client, if one is needed.
    pub fn header(self) -> &'static [u8] {
        match self {
            KeepAlive::Close => b"Connection: close\r\n",
            KeepAlive::Open => b"",
            KeepAlive::Open10 => b"Connection: keep-alive\r\n",
        }
    }
}

/// Why a request head was refused; each maps to one status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// Malformed request line, header or framing: 400.
    BadRequest(&'static str),
    /// Head larger than `HEADER_BYTES_MAX` or more than `HEADER_COUNT_MAX` headers: 431.
    HeadersTooLarge,
    /// A method the master does not serve: 405.
    MethodNotAllowed,
    /// `Transfer-Encoding` other than chunked: 501.
    NotImplemented,
    /// `Expect` other than 100-continue: 417.
    ExpectationFailed,
}

impl HttpError {
    /// The status code this error answers with.
    pub fn status(self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::HeadersTooLarge => 431,
            HttpError::MethodNotAllowed => 405,
            HttpError::NotImplemented => 501,
            HttpError::ExpectationFailed => 417,
        }
    }
}

/// Parse the request head at the front of `buffer`.
///
/// `Ok(None)` means the head is not complete yet; read more.
pub fn parse_request(buffer: &[u8]) -> Result<Option<RequestHead>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADER_COUNT_MAX];
    let mut request = httparse::Request::new(&mut headers);
    let head_bytes = match request.parse(buffer) {
        Ok(httparse::Status::Complete(head_bytes)) => head_bytes,
        Ok(httparse::Status::Partial) if buffer.len() >= HEADER_BYTES_MAX => return Err(HttpError::HeadersTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadersTooLarge),
        Err(_) => return Err(HttpError::BadRequest("malformed request head")),
    };
    if head_bytes > HEADER_BYTES_MAX {
        return Err(HttpError::HeadersTooLarge);
    }
    let method = Method::from_bytes(request.method.expect("complete").as_bytes()).ok_or(HttpError::MethodNotAllowed)?;
    let target = request.path.expect("complete");
    if !target.starts_with('/') {
        return Err(HttpError::BadRequest("request target must be an absolute path"));
    }
    let target_start = target.as_ptr() as usize - buffer.as_ptr() as usize;
    let (path, query) = match target.find('?') {
        Some(mark) => (
            target_start..target_start + mark,
            Some(target_start + mark + 1..target_start + target.len()),
        ),
        None => (target_start..target_start + target.len(), None),
    };
    let http10 = request.version == Some(0);
    let mut head = RequestHead {
        method,
        path,
        query,
        body: BodyFraming::None,
        expect_continue: false,
        expect_other: false,
        keep_alive: if http10 { KeepAlive::Close } else { KeepAlive::Open },
        http10,
        head_bytes,
        s3: false,
    };
    read_headers(request.headers, &mut head)?;
    Ok(Some(head))
}

fn read_headers(headers: &[httparse::Header<'_>], head: &mut RequestHead) -> Result<(), HttpError> {
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    // `close` anywhere wins over `keep-alive` anywhere (RFC 9112 9.3).
    let mut close = false;
    for header in headers {
        let name = header.name.as_bytes();
        let value = trim(header.value);
        if name.eq_ignore_ascii_case(b"content-length") {
            let length = parse_decimal(value).ok_or(HttpError::BadRequest("invalid Content-Length"))?;
            if content_length.is_some_and(|previous| previous != length) {
                return Err(HttpError::BadRequest("conflicting Content-Length headers"));
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if !value.eq_ignore_ascii_case(b"chunked") || chunked {
                return Err(HttpError::NotImplemented);
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&byte| byte == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && head.http10 {
                    head.keep_alive = KeepAlive::Open10;
                }
            }
        } else if is_s3_header(name, value) {
            head.s3 = true;
        } else if name.eq_ignore_ascii_case(b"expect") {
            if value.eq_ignore_ascii_case(b"100-continue") {
                head.expect_continue = !head.http10;
            } else {
                head.expect_other = true;
            }
        }
    }
    head.keep_alive = head.keep_alive.unless(close);
    head.body = match (content_length, chunked) {
        // Both framings at once is how requests are smuggled past proxies.
        (Some(_), true) => return Err(HttpError::BadRequest("Content-Length with Transfer-Encoding")),
        (Some(length), false) => BodyFraming::Length(length),
        (None, true) if head.http10 => return Err(HttpError::BadRequest("chunked body in HTTP/1.0")),
        (None, true) => BodyFraming::Chunked,
        (None, false) => BodyFraming::None,
    };
    Ok(())
}

/// Whether a header is one only S3 clients send: `x-amz-*`, or an
/// `Authorization` of an AWS signature (V4 or V2).
fn is_s3_header(name: &[u8], value: &[u8]) -> bool {
    let has_prefix = |prefix: &[u8]| name.len() > prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix);
    // `amz-sdk-invocation-id` and `amz-sdk-request` come with every request
    // of the AWS SDKs, anonymous ones too (pyarrow's 0-byte directory
    // markers carry nothing else of S3).
    has_prefix(b"x-amz-")
        || has_prefix(b"amz-sdk-")
        // A browser's CORS preflight: the native API has no CORS.
        || name.eq_ignore_ascii_case(b"access-control-request-method")
        || (name.eq_ignore_ascii_case(b"authorization") && (value.starts_with(b"AWS4-") || value.starts_with(b"AWS ")))
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|byte| !byte.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|byte| !byte.is_ascii_whitespace())
        .map_or(start, |end| end + 1);
    &bytes[start..end]
}

/// A non-empty run of ASCII digits that fits a u64.
pub fn parse_decimal(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 19 {
        return None;
    }
    bytes.iter().try_fold(0u64, |total, &byte| {
        byte.is_ascii_digit().then(|| total * 10 + u64::from(byte - b'0'))
    })
}

/// Percent-decode `raw` into `out` (cleared first). `+` stays `+`: this is a
/// path, not a form. Returns false on a malformed escape.
pub fn percent_decode_into(raw: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let mut i = 0;
    while i < raw.len() {
        let byte = raw[i];
        if byte != b'%' {
            out.push(byte);
            i += 1;
            continue;
        }
        let (Some(high), Some(low)) = (raw.get(i + 1).and_then(hex_value), raw.get(i + 2).and_then(hex_value)) else {
            return false;
        };
        out.push(high << 4 | low);
        i += 3;
    }
    true
}

fn hex_value(byte: &u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Iterate `name[=value]` pairs of a raw query string (values still encoded).
pub fn query_pairs(query: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    query
        .split(|&byte| byte == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.iter().position(|&byte| byte == b'=') {
            Some(equals) => (&pair[..equals], &pair[equals + 1..]),
            None => (pair, &pair[pair.len()..]),
        })
}

/// The value of the first query parameter called `name`, if present.
pub fn query_value<'a>(query: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    query_pairs(query).find(|(key, _)| *key == name).map(|(_, value)| value)
}

/// Incremental decoder for `Transfer-Encoding: chunked` bodies.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// Bytes left in the current chunk's data.
    remaining: u64,
    /// Bytes of the current size or trailer line seen so far.
    line_bytes: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// Whitespace after the size, before `;` or the line's end.
    SizeSpace,
    SizeExtension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
}

/// Progress of one `ChunkedDecoder::decode` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes used.
    pub consumed: usize,
    /// The terminating zero chunk and trailers have been read.
    pub done: bool,
}

/// A control byte other than HTAB. Lines of a chunked body end only at CRLF:
/// a bare LF (or CR, NUL, ...) in a size line or a trailer is refused, never
/// skipped, because a proxy in front of us may end the line there and so read
/// a different body from the same bytes (request smuggling).
fn is_control(byte: u8) -> bool {
    (byte < 0x20 && byte != b'\t') || byte == 0x7f
}

/// A byte of an RFC 9110 token (a header field name).
fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Whether `text` may be a header's value in a response: no byte of it
/// could end the header line (CR, LF) or is another control.
pub fn is_header_value(text: &str) -> bool {
    !text.bytes().any(is_control)
}

/// Whether `text` may be a header's name: a non-empty token.
pub fn is_header_name(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(is_token)
}

impl ChunkedDecoder {
    /// A byte after a chunk's size digits: the line's end, an extension, or
    /// whitespace before either.
    fn after_size(&mut self, byte: u8) -> Result<(), HttpError> {
        self.line_bytes += 1;
        self.state = match byte {
            b'\r' => ChunkState::SizeLf,
            b';' => ChunkState::SizeExtension,
            b' ' | b'\t' => ChunkState::SizeSpace,
            _ => return Err(HttpError::BadRequest("invalid chunk size")),
        };
        Ok(())
    }

    /// Decode from `input`, appending body bytes to `out` until `out` holds
    /// `out_max` bytes, the input runs out, or the body ends.
    ///
    /// The framing is read strictly (RFC 9112 section 7.1): a size line is
    /// hex digits, optional whitespace, optional `;` extensions without
    /// control bytes, and CRLF; a trailer line is a field name, `:`, and a
    /// value without control bytes but HTAB, and CRLF.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>, out_max: usize) -> Result<Decoded, HttpError> {
        let bad = |what| Err(HttpError::BadRequest(what));
        let mut i = 0;
        while i < input.len() && self.state != ChunkState::Done {
            let byte = input[i];
            match self.state {
                ChunkState::Data => {
                    let room = out_max.saturating_sub(out.len());
                    if room == 0 {
                        break;
                    }
                    let take = (input.len() - i)
                        .min(room)
                        .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::Size | ChunkState::SizeSpace | ChunkState::SizeExtension
                    if self.line_bytes >= CHUNK_LINE_BYTES_MAX =>
                {
                    return bad("chunk size line too long");
                }
                ChunkState::Size => match hex_value(&byte) {
                    Some(digit) => {
                        if self.remaining >> 60 != 0 {
                            return bad("chunk size too large");
                        }
                        self.remaining = self.remaining << 4 | u64::from(digit);
                        self.line_bytes += 1;
                    }
                    None if self.line_bytes == 0 => return bad("missing chunk size"),
                    None => self.after_size(byte)?,
                },
                ChunkState::SizeSpace => self.after_size(byte)?,
                ChunkState::SizeExtension => {
                    self.line_bytes += 1;
                    if byte == b'\r' {
                        self.state = ChunkState::SizeLf;
                    } else if is_control(byte) {
                        return bad("control byte in chunk extension");
                    }
                }
                ChunkState::SizeLf => {
                    if byte != b'\n' {
                        return bad("chunk size line not ended by CRLF");
                    }
                    self.line_bytes = 0;
                    self.state = if self.remaining == 0 {
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::Data
                    };
                }
                ChunkState::DataCr => {
                    if byte != b'\r' {
                        return bad("chunk data not followed by CRLF");
                    }
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if byte != b'\n' {
                        return bad("chunk data not followed by CRLF");
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::TrailerName | ChunkState::TrailerValue if self.line_bytes >= CHUNK_LINE_BYTES_MAX => {
                    return bad("chunk trailer too long");
                }
                ChunkState::TrailerStart => {
                    // A line starting with whitespace would continue the
                    // previous one (obsolete line folding): refused too.
                    self.state = match byte {
                        b'\r' => ChunkState::FinalLf,
                        _ if is_token(byte) => ChunkState::TrailerName,
                        _ => return bad("malformed chunk trailer"),
                    };
                    self.line_bytes = 1;
                }
                ChunkState::TrailerName => {
                    self.line_bytes += 1;
                    match byte {
                        b':' => self.state = ChunkState::TrailerValue,
                        _ if is_token(byte) => {}
                        _ => return bad("malformed chunk trailer"),
                    }
                }
                ChunkState::TrailerValue => {
                    self.line_bytes += 1;
                    if byte == b'\r' {
                        self.state = ChunkState::TrailerLf;
                    } else if is_control(byte) {
                        return bad("control byte in chunk trailer");
                    }
                }
                ChunkState::TrailerLf => {
                    if byte != b'\n' {
                        return bad("trailer not ended by CRLF");
                    }
                    self.state = ChunkState::TrailerStart;
                }
                ChunkState::FinalLf => {
                    if byte != b'\n' {
                        return bad("chunked body not ended by CRLF");
                    }
                    self.state = ChunkState::Done;
                }
                ChunkState::Done => unreachable!("loop condition"),
            }
            i += 1;
        }
        Ok(Decoded {
            consumed: i,
            done: self.state == ChunkState::Done,
        })
    }
}

/// The reason phrase for the status codes the master sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        412 => "Precondition Failed",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

thread_local! {
    /// The status of the last status line written on this thread: what
    /// `metrics` counts a request with (the one place statuses are written,
    /// so no handler carries metrics code).
    static LAST_STATUS: Cell<u16> = const { Cell::new(0) };
}

/// The status of the last status line written on this thread.
pub fn last_status() -> u16 {
    LAST_STATUS.with(Cell::get)
}

/// Set what `last_status` answers (the metrics of a request that awaits
/// keep their own, `metrics::counted`).
pub fn set_last_status(status: u16) {
    LAST_STATUS.with(|cell| cell.set(status));
}

/// Append a status line.
pub fn write_status_line(out: &mut Vec<u8>, status: u16) {
    set_last_status(status);
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut digits = itoa_buffer();
    out.extend_from_slice(format_u64(u64::from(status), &mut digits));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Append the `Connection` header `keep_alive` needs (none for HTTP/1.1
/// keep-alive, the common case).
pub fn write_connection(out: &mut Vec<u8>, keep_alive: KeepAlive) {
    out.extend_from_slice(keep_alive.header());
}

/// Append a complete response with an empty body.
///
/// A 204 carries no `Content-Length`: RFC 9110 forbids it there.
pub fn write_empty(out: &mut Vec<u8>, status: u16, keep_alive: KeepAlive) {
    write_status_line(out, status);
    if status != 204 {
        out.extend_from_slice(b"Content-Length: 0\r\n");
    }
    write_connection(out, keep_alive);
    out.extend_from_slice(b"\r\n");
}

/// Append a complete response with a short text body (error explanations).
pub fn write_text(out: &mut Vec<u8>, status: u16, keep_alive: KeepAlive, extra_headers: &[u8], text: &str) {
    write_text_head(out, status, keep_alive, extra_headers, text);
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
}

/// Append the head `write_text` writes, without the body: the answer to a
/// HEAD request, whose response never has one (a client reads the next
/// response right after the blank line, so a body would be taken for it).
pub fn write_text_head(out: &mut Vec<u8>, status: u16, keep_alive: KeepAlive, extra_headers: &[u8], text: &str) {
    write_status_line(out, status);
    out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: ");
    let mut digits = itoa_buffer();
    out.extend_from_slice(format_u64(text.len() as u64 + 1, &mut digits));
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(extra_headers);
    write_connection(out, keep_alive);
    out.extend_from_slice(b"\r\n");
}

/// A stack buffer for `format_u64`.
pub fn itoa_buffer() -> [u8; 20] {
    [0u8; 20]
}

/// Format `value` in decimal into `buffer`, returning the digits.
pub fn format_u64(mut value: u64, buffer: &mut [u8; 20]) -> &[u8] {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    &buffer[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<RequestHead>, HttpError> {
        parse_request(text.as_bytes())
    }

    #[test]
    fn get_head_is_offsets() {
        let text = "GET /a%20b?list&limit=2 HTTP/1.1\r\nHost: x\r\n\r\nGET /next";
        let head = parse(text).unwrap().unwrap();
        assert_eq!(head.method, Method::Get);
        assert_eq!(&text[head.path.clone()], "/a%20b");
        assert_eq!(&text[head.query.clone().unwrap()], "list&limit=2");
        assert_eq!(head.head_bytes, text.find("GET /next").unwrap());
        assert!(head.keep_alive == KeepAlive::Open && !head.http10);
        assert_eq!(head.body, BodyFraming::None);
    }

    #[test]
    fn partial_head_asks_for_more() {
        assert_eq!(parse("GET /a HTTP/1.1\r\nHost"), Ok(None));
    }

    #[test]
    fn framing_and_connection() {
        let put = parse("PUT /k HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(put.body, BodyFraming::Length(5));
        assert!(put.expect_continue);
        let chunked = parse("PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(chunked.body, BodyFraming::Chunked);
        assert_eq!(chunked.keep_alive, KeepAlive::Close);
        let old = parse("GET /k HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(old.http10 && old.keep_alive == KeepAlive::Close);
        let old_kept = parse("GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(old_kept.keep_alive, KeepAlive::Open10);
        let old_closed = parse("GET /k HTTP/1.0\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(old_closed.keep_alive, KeepAlive::Close);
    }

    #[test]
    fn bad_heads_map_to_statuses() {
        let smuggle = "PUT /k HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse(smuggle).unwrap_err().status(), 400);
        assert_eq!(
            parse("PUT /k HTTP/1.1\r\nContent-Length: 5x\r\n\r\n")
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            parse("PUT /k HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(parse("BREW /k HTTP/1.1\r\n\r\n").unwrap_err().status(), 405);
        assert_eq!(parse("GET k HTTP/1.1\r\n\r\n").unwrap_err().status(), 400);
        assert_eq!(
            parse("GET /k HTTP/1.1\r\nBad Header\r\n\r\n").unwrap_err().status(),
            400
        );
        assert_eq!(
            parse("PUT /k HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n")
                .unwrap_err()
                .status(),
            501
        );
        let many: String = (0..HEADER_COUNT_MAX + 1).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            parse(&format!("GET /k HTTP/1.1\r\n{many}\r\n")).unwrap_err().status(),
            431
        );
        let huge = format!("GET /k HTTP/1.1\r\nX: {}", "y".repeat(HEADER_BYTES_MAX));
        assert_eq!(parse(&huge).unwrap_err().status(), 431);
    }

    #[test]
    fn request_starts() {
        assert!(could_start_request(b""));
        assert!(could_start_request(b"GE"));
        assert!(could_start_request(b"GET /x"));
        assert!(could_start_request(b"REBALANCE"));
        assert!(!could_start_request(b"def"));
        assert!(!could_start_request(b"GETX /"));
    }

    #[test]
    fn percent_decoding() {
        let mut out = Vec::new();
        assert!(percent_decode_into(b"/a%20b+c%2Fd%e2%82%ac", &mut out));
        assert_eq!(out, "/a b+c/d€".as_bytes());
        assert!(!percent_decode_into(b"/a%2", &mut out));
        assert!(!percent_decode_into(b"/a%zz", &mut out));
    }

    #[test]
    fn query_values() {
        assert_eq!(query_value(b"list&start=%2Fa&limit=10", b"limit"), Some(&b"10"[..]));
        assert_eq!(query_value(b"list&limit=10", b"list"), Some(&b""[..]));
        assert_eq!(query_value(b"list", b"start"), None);
    }

    #[test]
    fn chunked_decoding_across_splits() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for split in 0..body.len() {
            let mut decoder = ChunkedDecoder::default();
            let mut out = Vec::new();
            let end = body.len() - 4;
            let first = decoder.decode(&body[..split], &mut out, usize::MAX).unwrap();
            assert_eq!(first.consumed, split.min(end));
            if split >= end {
                assert!(first.done);
                continue;
            }
            let second = decoder.decode(&body[split..], &mut out, usize::MAX).unwrap();
            assert!(second.done, "split {split}");
            assert_eq!(split + second.consumed, end);
            assert_eq!(out, b"hello world");
        }
    }

    #[test]
    fn chunked_decoding_respects_out_max() {
        let mut decoder = ChunkedDecoder::default();
        let mut out = Vec::new();
        let step = decoder.decode(b"a\r\n0123456789\r\n0\r\n\r\n", &mut out, 4).unwrap();
        assert_eq!((out.as_slice(), step.done), (&b"0123"[..], false));
        out.clear();
        let rest = decoder
            .decode(&b"a\r\n0123456789\r\n0\r\n\r\n"[step.consumed..], &mut out, 100)
            .unwrap();
        assert!(rest.done);
        assert_eq!(out, b"456789");
    }

    #[test]
    fn chunked_decoding_rejects_garbage() {
        let mut out = Vec::new();
        assert!(ChunkedDecoder::default().decode(b"zz\r\n", &mut out, 10).is_err());
        assert!(ChunkedDecoder::default().decode(b"1\r\nab", &mut out, 10).is_err());
        assert!(ChunkedDecoder::default()
            .decode(b"fffffffffffffffff\r\n", &mut out, 10)
            .is_err());
    }

    #[test]
    fn chunked_framing_lines_end_only_at_crlf() {
        let refused: [&[u8]; 16] = [
            b"3;\nabc\r\nxyz\r\n0\r\n\r\n",
            b"3\nabc\r\n0\r\n\r\n",
            b"3;a\rb\r\nabc\r\n0\r\n\r\n",
            b"3;a\0b\r\nabc\r\n0\r\n\r\n",
            b"3;a\x7fb\r\nabc\r\n0\r\n\r\n",
            b" 3\r\nabc\r\n0\r\n\r\n",
            b"3 x\r\nabc\r\n0\r\n\r\n",
            b"3 4\r\nabc\r\n0\r\n\r\n",
            b"3\r\nabc\r\n0\r\nX: a\nY: b\r\n\r\n",
            b"3\r\nabc\r\n0\r\nX: a\rb\r\n\r\n",
            b"3\r\nabc\r\n0\r\nX: a\0b\r\n\r\n",
            b"3\r\nabc\r\n0\r\nno colon\r\n\r\n",
            b"3\r\nabc\r\n0\r\n: empty name\r\n\r\n",
            b"3\r\nabc\r\n0\r\nX: a\r\n folded\r\n\r\n",
            b"3\r\nabc\r\n0\r\n\n",
            b"3\r\nabc\r\n0\r\n\r\r\n",
        ];
        for body in refused {
            let mut out = Vec::new();
            let result = ChunkedDecoder::default().decode(body, &mut out, usize::MAX);
            assert!(result.is_err(), "{:?} -> {result:?}", String::from_utf8_lossy(body));
        }
        let long_line = format!("{}3\r\nabc\r\n0\r\n\r\n", "0".repeat(CHUNK_LINE_BYTES_MAX));
        assert!(ChunkedDecoder::default()
            .decode(long_line.as_bytes(), &mut Vec::new(), usize::MAX)
            .is_err());
        let accepted = b"3 ;a=\"b;\tc\"\r\nabc\r\n2\t;x\r\nde\r\n0\r\nX-T:\tv \x80\r\n\r\n";
        let mut out = Vec::new();
        let decoded = ChunkedDecoder::default()
            .decode(accepted, &mut out, usize::MAX)
            .unwrap();
        assert!(decoded.done && decoded.consumed == accepted.len());
        assert_eq!(out, b"abcde");
    }

    #[test]
    fn responses() {
        let mut out = Vec::new();
        write_empty(&mut out, 404, KeepAlive::Open);
        assert_eq!(out, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        out.clear();
        write_empty(&mut out, 204, KeepAlive::Close);
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        out.clear();
        write_empty(&mut out, 204, KeepAlive::Open10);
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n");
    }

    /// Property tests of the codec over generated input (see RELIABILITY.md,
    /// "Fuzzing the codec"). Each property runs proptest's default 256 cases,
    /// a few seconds in all; `PROPTEST_CASES=n` runs n instead.
    mod properties {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::super::*;

        /// Most bytes of an arbitrary input.
        const INPUT_BYTES_MAX: usize = 600;

        fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
            vec(any::<u8>(), 0..max)
        }

        /// A request head built from plausible and hostile pieces, so that
        /// cases get past the request line into the header logic.
        fn request_heads() -> impl Strategy<Value = Vec<u8>> {
            let method = prop::sample::select(vec![&b"GET"[..], b"PUT", b"HEAD", b"DELETE", b"UNLINK", b"BREW", b""]);
            let target = vec(
                prop::sample::select(vec![
                    &b"/"[..],
                    b"a",
                    b"%2F",
                    b"%zz",
                    b"?",
                    b"&",
                    b"=",
                    b"list",
                    b" ",
                    b"\xff",
                ]),
                0..8,
            );
            let version = prop::sample::select(vec![&b"HTTP/1.1"[..], b"HTTP/1.0", b"HTTP/2", b""]);
            let name = prop::sample::select(vec![
                &b"Content-Length"[..],
                b"Transfer-Encoding",
                b"Connection",
                b"Expect",
                b"Host",
                b"X",
                b"",
            ]);
            let value = prop::sample::select(vec![
                &b"5"[..],
                b"0",
                b"18446744073709551616",
                b" 7 ",
                b"chunked",
                b"gzip",
                b"close",
                b"keep-alive, close",
                b"100-continue",
                b"\t",
                b"\x01",
            ]);
            let line_end = prop::sample::select(vec![&b"\r\n"[..], b"\n", b"\r"]);
            let header =
                (name, value, line_end.clone()).prop_map(|(name, value, end)| [name, b": ", value, end].concat());
            (method, target, version, vec(header, 0..6), line_end, bytes(32)).prop_map(
                |(method, target, version, headers, end, tail)| {
                    [
                        method,
                        b" ",
                        &target.concat(),
                        b" ",
                        version,
                        end,
                        &headers.concat(),
                        end,
                        &tail,
                    ]
                    .concat()
                },
            )
        }

        /// Check what `parse_request` says about `buffer`: no panic, and a
        /// parsed head's offsets lie inside its head.
        fn check_head(buffer: &[u8]) -> Result<(), TestCaseError> {
            let Ok(Some(head)) = parse_request(buffer) else {
                return Ok(());
            };
            prop_assert!(head.head_bytes <= buffer.len() && head.head_bytes <= HEADER_BYTES_MAX);
            prop_assert!(head.path.start < head.path.end && head.path.end <= head.head_bytes);
            prop_assert_eq!(buffer[head.path.start], b'/');
            prop_assert!(!buffer[head.path.clone()].contains(&b'?'));
            if let Some(query) = &head.query {
                prop_assert_eq!(query.start, head.path.end + 1);
                prop_assert!(query.start <= query.end && query.end <= head.head_bytes);
            }
            prop_assert!(!(head.http10 && head.body == BodyFraming::Chunked));
            Ok(())
        }

        /// One chunked body as a sender could frame it.
        #[derive(Clone, Debug)]
        struct Framed {
            chunks: Vec<Vec<u8>>,
            /// Per chunk: size digits in upper case, leading zeros, extension.
            styles: Vec<(bool, usize, Vec<u8>)>,
            trailers: Vec<(Vec<u8>, Vec<u8>)>,
        }

        fn framed() -> impl Strategy<Value = Framed> {
            let extension = prop::sample::select(vec![
                &b""[..],
                b";a",
                b";a=b",
                b" ;a=\"b;c\"",
                b"\t;x;y=z",
                b";n=\x80\xff",
            ])
            .prop_map(<[u8]>::to_vec);
            let style = (any::<bool>(), 0usize..3, extension);
            let token = vec(prop::sample::select(b"abcXYZ019-_!#~".to_vec()), 1..8);
            let field_value = vec(prop::sample::select(b"abc \t:;\"\x80\xff".to_vec()), 0..12);
            (
                vec((vec(any::<u8>(), 1..300), style), 0..6),
                vec((token, field_value), 0..3),
            )
                .prop_map(|(chunks, trailers)| {
                    let (chunks, styles) = chunks.into_iter().unzip();
                    Framed {
                        chunks,
                        styles,
                        trailers,
                    }
                })
        }

        /// The encoder: `framed` in `Transfer-Encoding: chunked`.
        fn encode(framed: &Framed) -> Vec<u8> {
            let mut out = Vec::new();
            for (chunk, (upper, zeros, extension)) in framed.chunks.iter().zip(&framed.styles) {
                let size = if *upper {
                    format!("{:X}", chunk.len())
                } else {
                    format!("{:x}", chunk.len())
                };
                out.extend_from_slice("0".repeat(*zeros).as_bytes());
                out.extend_from_slice(size.as_bytes());
                out.extend_from_slice(extension);
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n");
            for (name, value) in &framed.trailers {
                out.extend_from_slice(&[&name[..], b":", value, b"\r\n"].concat());
            }
            out.extend_from_slice(b"\r\n");
            out
        }

        /// What decoding a whole input says: the body, the bytes the framing
        /// took, whether it ended; or the first error.
        type Outcome = Result<(Vec<u8>, usize, bool), HttpError>;

        /// Decode `input` fed in the pieces that `cuts` (offsets, any order)
        /// make, with at most `out_max` body bytes per call, as the
        /// connection does: a full output piece is taken away and decoding
        /// goes on where it stopped.
        fn decode_split(input: &[u8], cuts: &[usize], out_max: usize) -> Outcome {
            let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (input.len() + 1)).collect();
            cuts.push(input.len());
            cuts.sort_unstable();
            let mut decoder = ChunkedDecoder::default();
            let (mut body, mut piece, mut at) = (Vec::new(), Vec::new(), 0);
            for end in cuts {
                while at < end {
                    let decoded = decoder.decode(&input[at..end], &mut piece, out_max)?;
                    assert!(decoded.consumed <= end - at && piece.len() <= out_max);
                    at += decoded.consumed;
                    if decoded.done {
                        body.append(&mut piece);
                        return Ok((body, at, true));
                    }
                    if piece.len() == out_max {
                        body.append(&mut piece);
                    } else {
                        // Not full and not done: all of this input was used.
                        assert_eq!(at, end);
                    }
                }
            }
            body.append(&mut piece);
            Ok((body, at, false))
        }

        fn decode_whole(input: &[u8]) -> Outcome {
            let mut body = Vec::new();
            let decoded = ChunkedDecoder::default().decode(input, &mut body, usize::MAX)?;
            Ok((body, decoded.consumed, decoded.done))
        }

        /// Any byte but those in `separators` (mapped to `x`: a filter would
        /// count rejections, which long runs exhaust).
        fn query_byte(separators: &'static [u8]) -> impl Strategy<Value = u8> {
            any::<u8>().prop_map(move |byte| if separators.contains(&byte) { b'x' } else { byte })
        }

        /// Percent-encode `raw`: each byte escaped or not as `escape` says
        /// (`%` always), in upper or lower case hex.
        fn percent_encode(raw: &[u8], escape: &[(bool, bool)]) -> Vec<u8> {
            let mut out = Vec::new();
            for (i, &byte) in raw.iter().enumerate() {
                let (escaped, upper) = escape.get(i).copied().unwrap_or((true, false));
                if escaped || byte == b'%' {
                    let hex = if upper {
                        format!("%{byte:02X}")
                    } else {
                        format!("%{byte:02x}")
                    };
                    out.extend_from_slice(hex.as_bytes());
                } else {
                    out.push(byte);
                }
            }
            out
        }

        proptest! {
            #[test]
            fn parse_request_takes_any_bytes(buffer in bytes(INPUT_BYTES_MAX)) {
                check_head(&buffer)?;
            }

            #[test]
            fn parse_request_takes_any_head(buffer in request_heads()) {
                check_head(&buffer)?;
            }

            #[test]
            fn chunked_decoding_of_any_bytes_agrees_across_splits(
                input in bytes(INPUT_BYTES_MAX),
                cuts in vec(any::<usize>(), 0..6),
                out_max in 1usize..64,
            ) {
                prop_assert_eq!(decode_split(&input, &cuts, out_max), decode_whole(&input));
            }

            #[test]
            fn chunked_decoding_of_mangled_bodies_agrees_across_splits(
                framed in framed(),
                edits in vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4),
                cuts in vec(any::<usize>(), 0..6),
                out_max in 1usize..600,
            ) {
                let mut input = encode(&framed);
                for (at, byte, how) in edits {
                    let at = at % (input.len() + 1);
                    match how {
                        0 => input.insert(at, byte),
                        1 if at < input.len() => input[at] = byte,
                        _ if at < input.len() => drop(input.remove(at)),
                        _ => {}
                    }
                }
                prop_assert_eq!(decode_split(&input, &cuts, out_max), decode_whole(&input));
            }

            #[test]
            fn chunked_encoding_roundtrips_in_any_split(
                framed in framed(),
                next in bytes(16),
                cuts in vec(any::<usize>(), 0..6),
                out_max in 1usize..600,
            ) {
                let encoded = encode(&framed);
                let input = [&encoded[..], &next].concat();
                let expected = Ok((framed.chunks.concat(), encoded.len(), true));
                prop_assert_eq!(&decode_whole(&input), &expected);
                prop_assert_eq!(&decode_split(&input, &cuts, out_max), &expected);
            }

            #[test]
            fn percent_decoding_takes_any_bytes(raw in bytes(INPUT_BYTES_MAX)) {
                let mut out = Vec::new();
                if percent_decode_into(&raw, &mut out) {
                    prop_assert!(out.len() <= raw.len());
                    if !raw.contains(&b'%') {
                        prop_assert_eq!(&out, &raw);
                    }
                }
            }

            #[test]
            fn percent_encoding_roundtrips(
                raw in bytes(INPUT_BYTES_MAX),
                escape in vec((any::<bool>(), any::<bool>()), 0..INPUT_BYTES_MAX),
            ) {
                let mut out = vec![b'x'];
                prop_assert!(percent_decode_into(&percent_encode(&raw, &escape), &mut out));
                prop_assert_eq!(out, raw);
            }

            #[test]
            fn query_parsing_takes_any_bytes(query in bytes(INPUT_BYTES_MAX), name in bytes(8)) {
                for (key, value) in query_pairs(&query) {
                    prop_assert!(!key.contains(&b'&') && !key.contains(&b'=') && !value.contains(&b'&'));
                }
                if let Some(value) = query_value(&query, &name) {
                    prop_assert!(query_pairs(&query).any(|(key, found)| key == &name[..] && found == value));
                }
            }

            #[test]
            fn query_parsing_roundtrips(
                pairs in vec((vec(query_byte(b"&="), 1..8), vec(query_byte(b"&"), 0..8)), 0..8),
            ) {
                let query: Vec<u8> = pairs
                    .iter()
                    .map(|(key, value)| [&key[..], b"=", value].concat())
                    .collect::<Vec<_>>()
                    .join(&b'&');
                let parsed: Vec<(Vec<u8>, Vec<u8>)> = query_pairs(&query).map(|(key, value)| (key.to_vec(), value.to_vec())).collect();
                prop_assert_eq!(&parsed, &pairs);
                for (key, _) in &pairs {
                    let first = pairs.iter().find(|(name, _)| name == key).map(|(_, value)| &value[..]);
                    prop_assert_eq!(query_value(&query, key), first);
                }
            }
        }
    }
}
