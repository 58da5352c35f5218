//! `thrasher`: the load client minikeyvalue users run against a master.
//!
//! Each of `--workers` threads loops over rounds. A round is one fresh key
//! `/thrash-<pid>-<worker>-<n>` with a random value: PUT it, GET it back
//! (following the master's 302 to the volume) and compare every byte, then
//! DELETE it. `--direct` leaves the master out and does the volume work of a
//! round itself (PUT to every volume, GET from one, DELETE from all, at the
//! paths the master would use, so nginx does the same file and directory
//! work), which is the floor a master can approach. The report gives rounds/s, ops/s (three
//! ops per round) and latency percentiles per op; any I/O error, unexpected
//! status or wrong byte is counted, the first few are shown, and the exit code
//! becomes 1.
//!
//! The HTTP client is a deliberately tiny blocking HTTP/1.1 keep-alive client
//! on `std::net::TcpStream`, one connection per (worker, host:port), so the
//! numbers measure the servers and not a client runtime. Response heads and
//! bodies are read by pure functions over `BufRead`, tested without sockets.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use mkv::placement::{entry_host, entry_prefix, key2path, key2volume};

/// Largest value `--size` accepts, and so the largest body read back: each
/// worker holds two values' worth of memory (the value sent and the body read).
const VALUE_BYTES_MAX: u64 = 1 << 30;
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
/// Most worker threads.
const WORKERS_MAX: usize = 4096;
/// Failures printed in full; the rest are only counted.
const FAILURES_SHOWN_MAX: usize = 10;
/// The latency histogram is exact below `2^HISTOGRAM_LINEAR_BITS` µs and keeps
/// `2^(HISTOGRAM_LINEAR_BITS - 1)` buckets per power of two above (0.2% error).
const HISTOGRAM_LINEAR_BITS: u32 = 10;
const HISTOGRAM_LINEAR_US: u64 = 1 << HISTOGRAM_LINEAR_BITS;
const HISTOGRAM_HALF_US: u64 = HISTOGRAM_LINEAR_US / 2;
/// Latencies above this (71 minutes) land in the last bucket.
const LATENCY_US_MAX: u64 = u32::MAX as u64;
const HISTOGRAM_BUCKETS: usize = histogram_bucket(LATENCY_US_MAX) + 1;
const MASTER_DEFAULT: &str = "http://127.0.0.1:3000";

const _: () = assert!(HEAD_BYTES_MAX <= 1 << 20);
const _: () = assert!(HISTOGRAM_BUCKETS < 16 * 1024);
const _: () = assert!(histogram_floor(histogram_bucket(LATENCY_US_MAX)) <= LATENCY_US_MAX);

#[derive(Parser, Debug)]
#[command(about = "Load client for mkv: PUT, GET (through the 302) and DELETE of fresh keys")]
struct Args {
    /// Master to drive: expects PUT 201, GET 302 then 200 from the volume,
    /// DELETE 204 [default: http://127.0.0.1:3000]
    #[arg(long, value_name = "URL", conflicts_with = "direct")]
    master: Option<String>,
    /// No master: PUT to every one of these nginx volumes, GET from one,
    /// DELETE from all (the floor)
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',')]
    direct: Vec<String>,
    /// With --direct: the master's -subvolumes, so files land where the
    /// master would put them
    #[arg(long, default_value_t = 10, requires = "direct")]
    subvolumes: u32,
    /// Concurrent workers, each with its own keep-alive connections
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// Value size in bytes; suffixes k, m, g are powers of 1024
    #[arg(long, default_value = "1024", value_parser = parse_size)]
    size: u64,
    /// Rounds to run, each one key's PUT, GET and DELETE
    #[arg(long, default_value_t = 10_000, conflicts_with = "seconds")]
    count: u64,
    /// Run for this many seconds instead of a fixed count
    #[arg(long)]
    seconds: Option<f64>,
    /// Print one JSON line instead of the table
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(report) if report.stats.failures == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("thrasher: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<Report> {
    let plan = Plan::from_args(args)?;
    let started = Instant::now();
    let plan_ref = &plan;
    let stats = thread::scope(|scope| {
        let workers: Vec<_> = (0..plan.workers)
            .map(|id| scope.spawn(move || Worker::new(id, plan_ref).run(plan_ref)))
            .collect();
        let mut total = Stats::new();
        for worker in workers {
            total.merge(worker.join().expect("worker panicked"));
        }
        total
    });
    let report = Report {
        plan,
        stats,
        elapsed: started.elapsed(),
    };
    report.print(args.json);
    Ok(report)
}

/// What to run, checked and resolved from the command line.
struct Plan {
    target: Target,
    workers: usize,
    value_bytes: usize,
    limit: Limit,
    /// Rounds claimed so far, shared by the workers.
    claimed: AtomicU64,
}

enum Target {
    Master { host: String },
    Direct { volumes: Vec<String>, subvolumes: u32 },
}

enum Limit {
    Rounds(u64),
    Until(Instant),
}

impl Plan {
    fn from_args(args: &Args) -> anyhow::Result<Plan> {
        if args.workers == 0 || args.workers > WORKERS_MAX {
            bail!("--workers must be 1..={WORKERS_MAX}");
        }
        let target = if args.direct.is_empty() {
            let url = args.master.as_deref().unwrap_or(MASTER_DEFAULT);
            Target::Master {
                host: master_host(url).with_context(|| format!("bad --master {url:?}"))?,
            }
        } else {
            if args.direct.iter().any(|volume| volume.is_empty()) {
                bail!("--direct wants host:port,host:port,...");
            }
            if args.subvolumes == 0 {
                bail!("--subvolumes must be at least 1");
            }
            Target::Direct {
                volumes: args.direct.clone(),
                subvolumes: args.subvolumes,
            }
        };
        let limit = match args.seconds {
            Some(seconds) if !(seconds > 0.0 && seconds < 1e9) => bail!("bad --seconds"),
            Some(seconds) => Limit::Until(Instant::now() + Duration::from_secs_f64(seconds)),
            None => Limit::Rounds(args.count),
        };
        Ok(Plan {
            target,
            workers: args.workers,
            value_bytes: usize::try_from(args.size)?,
            limit,
            claimed: AtomicU64::new(0),
        })
    }

    /// Claims the next round; false once the count or the time is used up.
    fn claim(&self) -> bool {
        match self.limit {
            Limit::Rounds(count) => self.claimed.fetch_add(1, Ordering::Relaxed) < count,
            Limit::Until(deadline) => Instant::now() < deadline,
        }
    }
}

/// Parses `--size`: a byte count with an optional k, m or g suffix.
fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower.find(|c: char| !c.is_ascii_digit()).unwrap_or(lower.len());
    let (digits, suffix) = lower.split_at(digits_end);
    let unit: u64 = match suffix {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("bad size {text:?}: use e.g. 1024, 4k, 1m")),
    };
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(unit))
        .ok_or_else(|| format!("bad size {text:?}"))?;
    if bytes == 0 || bytes > VALUE_BYTES_MAX {
        return Err(format!("size must be 1..={VALUE_BYTES_MAX} bytes"));
    }
    Ok(bytes)
}

/// The host:port of `--master`, given as `http://host:port` or `host:port`.
fn master_host(url: &str) -> anyhow::Result<String> {
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
fn split_location<'a>(location: &'a str, host: &'a str) -> Option<(&'a str, &'a str)> {
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

/// Where the master would store `key` on each of `volumes` (all of them
/// replicas): `(host:port, path)`, best placed first.
fn direct_targets(key: &str, volumes: &[String], subvolumes: u32) -> Vec<(String, String)> {
    let file = key2path(key.as_bytes());
    key2volume(key.as_bytes(), volumes, volumes.len(), subvolumes)
        .iter()
        .map(|entry| (entry_host(entry).to_owned(), format!("{}{file}", entry_prefix(entry))))
        .collect()
}

/// The three ops of a round, also the index of their histograms.
#[derive(Clone, Copy, Debug)]
enum Op {
    Put = 0,
    Get = 1,
    Delete = 2,
}

const OPS: [Op; 3] = [Op::Put, Op::Get, Op::Delete];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Delete => "delete",
        }
    }
}

/// One thing that went wrong in a round; the round stops there.
enum Failure {
    Io {
        op: Op,
        url: String,
        error: io::Error,
    },
    Status {
        op: Op,
        url: String,
        expected: u16,
        got: u16,
    },
    Redirect {
        url: String,
        location: Option<String>,
    },
    Bytes {
        url: String,
        expected_bytes: usize,
        got_bytes: usize,
        first_difference: usize,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Io { op, url, error } => write!(formatter, "{} {url}: {error}", op.name()),
            Failure::Status { op, url, expected, got } => {
                write!(formatter, "{} {url}: status {got}, expected {expected}", op.name())
            }
            Failure::Redirect { url, location } => {
                write!(formatter, "get {url}: 302 with bad Location {location:?}")
            }
            Failure::Bytes {
                url,
                expected_bytes,
                got_bytes,
                first_difference,
            } => write!(
                formatter,
                "get {url}: wrong value: {got_bytes} bytes, expected {expected_bytes}, \
                 first difference at byte {first_difference}"
            ),
        }
    }
}

/// One HTTP request, borrowed from the worker's buffers.
struct Request<'a> {
    op: Op,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    body: &'a [u8],
}

impl<'a> Request<'a> {
    /// A request to a `(host:port, path)` target.
    fn to(op: Op, method: &'a str, (host, path): &'a (String, String), body: &'a [u8]) -> Request<'a> {
        Request {
            op,
            method,
            host,
            path,
            body,
        }
    }

    fn url(&self) -> String {
        format!("http://{}{}", self.host, self.path)
    }

    fn io_failure(&self, error: io::Error) -> Failure {
        Failure::Io {
            op: self.op,
            url: self.url(),
            error,
        }
    }

    fn expect(&self, response: &Response, expected: u16) -> Result<(), Failure> {
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
struct Response {
    status: u16,
    location: Option<String>,
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
struct Pool {
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
    fn request(&mut self, request: &Request, body: &mut Vec<u8>) -> Result<Response, Failure> {
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
    fn fan_out(&mut self, requests: &[Request], expected: u16, body: &mut Vec<u8>) -> Result<(), Failure> {
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

/// xorshift64*: random values without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// One worker thread's state: its connections, buffers and results.
struct Worker {
    id: usize,
    pool: Pool,
    rng: Rng,
    key: String,
    value: Vec<u8>,
    body: Vec<u8>,
    stats: Stats,
}

impl Worker {
    fn new(id: usize, plan: &Plan) -> Worker {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        let seed = nanos ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Worker {
            id,
            pool: Pool::default(),
            rng: Rng(seed | 1),
            key: String::new(),
            value: vec![0; plan.value_bytes],
            body: Vec::with_capacity(plan.value_bytes),
            stats: Stats::new(),
        }
    }

    fn run(mut self, plan: &Plan) -> Stats {
        let pid = std::process::id();
        let mut round = 0u64;
        while plan.claim() {
            self.key = format!("/thrash-{pid}-{}-{round}", self.id);
            self.rng.fill(&mut self.value);
            let result = match &plan.target {
                Target::Master { host } => self.master_round(host),
                Target::Direct { volumes, subvolumes } => self.direct_round(volumes, *subvolumes),
            };
            match result {
                Ok(()) => self.stats.rounds += 1,
                Err(failure) => self.stats.fail(failure),
            }
            round += 1;
        }
        self.stats
    }

    /// PUT to the master, GET through its 302, DELETE.
    fn master_round(&mut self, master: &str) -> Result<(), Failure> {
        let (key, value) = (self.key.as_str(), self.value.as_slice());
        let started = Instant::now();
        let put = Request {
            op: Op::Put,
            method: "PUT",
            host: master,
            path: key,
            body: value,
        };
        put.expect(&self.pool.request(&put, &mut self.body)?, 201)?;
        let got = self.stats.record(Op::Put, started);
        let get = Request {
            op: Op::Get,
            method: "GET",
            body: &[],
            ..put
        };
        let redirect = self.pool.request(&get, &mut self.body)?;
        get.expect(&redirect, 302)?;
        let location = redirect.location.as_deref().unwrap_or_default();
        let Some((host, path)) = split_location(location, master) else {
            return Err(Failure::Redirect {
                url: get.url(),
                location: redirect.location.clone(),
            });
        };
        let read = Request { host, path, ..get };
        read.expect(&self.pool.request(&read, &mut self.body)?, 200)?;
        compare(&read, value, &self.body)?;
        let deleted = self.stats.record(Op::Get, got);
        let delete = Request {
            op: Op::Delete,
            method: "DELETE",
            ..get
        };
        delete.expect(&self.pool.request(&delete, &mut self.body)?, 204)?;
        self.stats.record(Op::Delete, deleted);
        Ok(())
    }

    /// The same volume work without a master: PUT to every volume, GET from
    /// one, DELETE from every volume, at the master's paths.
    fn direct_round(&mut self, volumes: &[String], subvolumes: u32) -> Result<(), Failure> {
        let targets = direct_targets(&self.key, volumes, subvolumes);
        let value = self.value.as_slice();
        let started = Instant::now();
        let puts: Vec<_> = targets
            .iter()
            .map(|target| Request::to(Op::Put, "PUT", target, value))
            .collect();
        self.pool.fan_out(&puts, 201, &mut self.body)?;
        let got = self.stats.record(Op::Put, started);
        let read = Request::to(Op::Get, "GET", &targets[0], &[]);
        read.expect(&self.pool.request(&read, &mut self.body)?, 200)?;
        compare(&read, value, &self.body)?;
        let deleted = self.stats.record(Op::Get, got);
        let deletes: Vec<_> = targets
            .iter()
            .map(|target| Request::to(Op::Delete, "DELETE", target, &[]))
            .collect();
        self.pool.fan_out(&deletes, 204, &mut self.body)?;
        self.stats.record(Op::Delete, deleted);
        Ok(())
    }
}

/// Checks that a value came back byte for byte.
fn compare(read: &Request, expected: &[u8], got: &[u8]) -> Result<(), Failure> {
    if expected == got {
        return Ok(());
    }
    let first_difference = expected
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(got.len()));
    Err(Failure::Bytes {
        url: read.url(),
        expected_bytes: expected.len(),
        got_bytes: got.len(),
        first_difference,
    })
}

/// Log-linear latency histogram in microseconds: fixed memory whatever the
/// length of the run.
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

const fn histogram_bucket(us: u64) -> usize {
    if us < HISTOGRAM_LINEAR_US {
        return us as usize;
    }
    let shift = 64 - us.leading_zeros() - HISTOGRAM_LINEAR_BITS;
    let mantissa = us >> shift;
    (HISTOGRAM_LINEAR_US + (shift as u64 - 1) * HISTOGRAM_HALF_US + mantissa - HISTOGRAM_HALF_US) as usize
}

/// The smallest latency that lands in bucket `index`.
const fn histogram_floor(index: usize) -> u64 {
    let index = index as u64;
    if index < HISTOGRAM_LINEAR_US {
        return index;
    }
    let offset = index - HISTOGRAM_LINEAR_US;
    let shift = offset / HISTOGRAM_HALF_US + 1;
    (offset % HISTOGRAM_HALF_US + HISTOGRAM_HALF_US) << shift
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; HISTOGRAM_BUCKETS],
            total: 0,
            max_us: 0,
        }
    }

    fn add(&mut self, us: u64) {
        let us = us.min(LATENCY_US_MAX);
        self.counts[histogram_bucket(us)] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    fn merge(&mut self, other: &Histogram) {
        for (count, other) in self.counts.iter_mut().zip(&other.counts) {
            *count += other;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// The latency that `quantile` of the samples do not exceed (0 if none).
    fn quantile_us(&self, quantile: f64) -> u64 {
        let rank = ((quantile * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return histogram_floor(index).min(self.max_us);
            }
        }
        0
    }
}

/// Results of one worker, or of all of them merged.
struct Stats {
    latency: [Histogram; 3],
    rounds: u64,
    failures: u64,
    shown: Vec<String>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            latency: [Histogram::new(), Histogram::new(), Histogram::new()],
            rounds: 0,
            failures: 0,
            shown: Vec::new(),
        }
    }

    /// Records the latency of `op` begun at `started`, and returns now so the
    /// next op can start its clock there.
    fn record(&mut self, op: Op, started: Instant) -> Instant {
        let now = Instant::now();
        let us = now.duration_since(started).as_micros();
        self.latency[op as usize].add(u64::try_from(us).unwrap_or(u64::MAX));
        now
    }

    fn fail(&mut self, failure: Failure) {
        self.failures += 1;
        if self.shown.len() < FAILURES_SHOWN_MAX {
            self.shown.push(failure.to_string());
        }
    }

    fn merge(&mut self, other: Stats) {
        for (histogram, other) in self.latency.iter_mut().zip(&other.latency) {
            histogram.merge(other);
        }
        self.rounds += other.rounds;
        self.failures += other.failures;
        let room = FAILURES_SHOWN_MAX - self.shown.len();
        self.shown.extend(other.shown.into_iter().take(room));
    }
}

/// The outcome of a run, printed as a table or one JSON line.
struct Report {
    plan: Plan,
    stats: Stats,
    elapsed: Duration,
}

impl Report {
    fn target(&self) -> (&'static str, String) {
        match &self.plan.target {
            Target::Master { host } => ("master", host.clone()),
            Target::Direct { volumes, .. } => ("direct", volumes.join(",")),
        }
    }

    fn rounds_per_second(&self) -> f64 {
        self.stats.rounds as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn print(&self, json: bool) {
        for failure in &self.stats.shown {
            eprintln!("thrasher: FAILED {failure}");
        }
        if json {
            println!("{}", self.json());
        } else {
            self.print_table();
        }
    }

    fn print_table(&self) {
        let (mode, target) = self.target();
        let stats = &self.stats;
        println!(
            "thrasher: {mode} {target}, {} workers, {}-byte values",
            self.plan.workers, self.plan.value_bytes
        );
        println!(
            "{} write/read/delete in {:.3}s, that's {:.1} rounds/s, {:.1} ops/s",
            stats.rounds,
            self.elapsed.as_secs_f64(),
            self.rounds_per_second(),
            3.0 * self.rounds_per_second()
        );
        println!(
            "{:<8}{:>10}{:>11}{:>11}{:>11}{:>11}",
            "op", "count", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        for op in OPS {
            let histogram = &stats.latency[op as usize];
            let ms = |us: u64| us as f64 / 1000.0;
            println!(
                "{:<8}{:>10}{:>11.3}{:>11.3}{:>11.3}{:>11.3}",
                op.name(),
                histogram.total,
                ms(histogram.quantile_us(0.50)),
                ms(histogram.quantile_us(0.90)),
                ms(histogram.quantile_us(0.99)),
                ms(histogram.max_us)
            );
        }
        println!("failures: {}", stats.failures);
    }

    fn json(&self) -> String {
        let (mode, target) = self.target();
        let stats = &self.stats;
        let mut line = format!(
            "{{\"mode\":\"{mode}\",\"target\":{},\"workers\":{},\"size\":{},\"rounds\":{},\
             \"failures\":{},\"seconds\":{:.6},\"rounds_per_sec\":{:.1},\"ops_per_sec\":{:.1}",
            json_string(&target),
            self.plan.workers,
            self.plan.value_bytes,
            stats.rounds,
            stats.failures,
            self.elapsed.as_secs_f64(),
            self.rounds_per_second(),
            3.0 * self.rounds_per_second()
        );
        for op in OPS {
            let histogram = &stats.latency[op as usize];
            line += &format!(
                ",\"{}\":{{\"count\":{},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"max_us\":{}}}",
                op.name(),
                histogram.total,
                histogram.quantile_us(0.50),
                histogram.quantile_us(0.90),
                histogram.quantile_us(0.99),
                histogram.max_us
            );
        }
        line + "}"
    }
}

fn json_string(text: &str) -> String {
    let mut quoted = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => quoted += "\\\"",
            '\\' => quoted += "\\\\",
            c if c.is_control() => quoted += &format!("\\u{:04x}", c as u32),
            c => quoted.push(c),
        }
    }
    quoted + "\""
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
    fn sizes_accept_suffixes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("2g").is_err());
        assert!(parse_size("1x").is_err());
        assert!(parse_size("k").is_err());
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

    #[test]
    fn histogram_buckets_are_monotonic_and_tight() {
        let mut previous = 0;
        for us in (0..5_000).chain([1 << 20, (1 << 20) + 999, LATENCY_US_MAX]) {
            let index = histogram_bucket(us);
            assert!(index >= previous && index < HISTOGRAM_BUCKETS);
            let floor = histogram_floor(index);
            assert!(floor <= us && us - floor <= us / HISTOGRAM_HALF_US);
            previous = index;
        }
    }

    #[test]
    fn quantiles_come_from_the_samples() {
        let mut histogram = Histogram::new();
        for us in 1..=100 {
            histogram.add(us);
        }
        assert_eq!(histogram.quantile_us(0.5), 50);
        assert_eq!(histogram.quantile_us(0.99), 99);
        assert_eq!(histogram.max_us, 100);
        assert_eq!(Histogram::new().quantile_us(0.5), 0);
    }

    #[test]
    fn direct_targets_are_the_masters_layout() {
        let volumes = vec!["a:1".to_owned(), "b:2".to_owned(), "c:3".to_owned()];
        let targets = direct_targets("/thrash-1-2-3", &volumes, 10);
        let entries = key2volume(b"/thrash-1-2-3", &volumes, 3, 10);
        assert_eq!(targets.len(), 3);
        for ((host, path), entry) in targets.iter().zip(&entries) {
            assert_eq!(format!("{host}{}", &path[..5]), *entry);
            assert_eq!(&path[5..], key2path(b"/thrash-1-2-3"));
        }
        let flat = direct_targets("/thrash-1-2-3", &volumes, 1);
        assert!(flat.iter().all(|(_, path)| *path == key2path(b"/thrash-1-2-3")));
    }
}
