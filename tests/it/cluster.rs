//! A real cluster for tests: nginx volumes started by the repo's `volume`
//! script and the real `mkv` binary, on free loopback ports, torn down on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Ports tests use: below the kernel's ephemeral range (32768 and up by
/// default), so an outgoing connection cannot take a port a server is about
/// to (re)bind.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Tests run in parallel threads: walk the range from a per-process start.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = TEST_PORTS.end - TEST_PORTS.start;
    let offset = (std::process::id() as u16).wrapping_mul(7919) % span;
    loop {
        let step = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = TEST_PORTS.start + (offset + step) % span;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn terminate(child: &mut Child) {
    // SIGTERM lets nginx stop its workers; SIGKILL would orphan them.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.wait();
}

/// One nginx volume server.
pub struct Volume {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Volume {
    pub fn start(dir: PathBuf, port: u16) -> Volume {
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new(repo_root().join("volume"))
            .arg(&dir)
            .env("PORT", port.to_string())
            .env("BIND", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ./volume (is nginx installed?)");
        wait_for_port(port);
        Volume {
            port,
            dir,
            child: Some(child),
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        *self = Volume::start(self.dir.clone(), self.port);
    }

    /// Send `signal` to the volume's nginx and its workers: SIGSTOP for a
    /// volume that hangs (and SIGCONT), SIGKILL for one that dies.
    pub fn signal(&self, signal: i32) {
        let Some(child) = &self.child else { return };
        let pid = child.id();
        let mut pids: Vec<u32> = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect();
        pids.push(pid);
        for pid in pids {
            unsafe { libc::kill(pid as i32, signal) };
        }
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The master under test.
pub struct Master {
    pub port: u16,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Drop for Master {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Volumes plus a master.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub volumes: Vec<Volume>,
    pub master: Option<Master>,
    pub extra: Vec<String>,
    /// The index when not the RocksDB directory `db()`: a PostgreSQL URL.
    pub db_url: Option<String>,
}

pub fn mkv() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mkv"))
}

impl Cluster {
    /// `count` volumes and a master with default flags plus `extra`.
    pub fn start(count: usize, extra: &[&str]) -> Cluster {
        Cluster::start_over(None, count, extra)
    }

    /// `start`, over the index `db_url` names (a PostgreSQL URL) if given.
    pub fn start_over(db_url: Option<String>, count: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let volumes = (0..count)
            .map(|i| Volume::start(dir.path().join(format!("volume{i}")), free_port()))
            .collect();
        let mut cluster = Cluster {
            dir,
            volumes,
            master: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            db_url,
        };
        cluster.start_master();
        cluster
    }

    /// `mkv -db <the index> -volumes <the volumes> <the master's flags>
    /// <args> <command>`, run to its end.
    pub fn run_command(&self, args: &[&str], command: &str) -> std::process::Output {
        let db = self.db_url.clone().unwrap_or_else(|| self.db().display().to_string());
        mkv()
            .args(["-db", &db, "-volumes", &self.volume_list()])
            .args(&self.extra)
            .args(args)
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn volume_list(&self) -> String {
        self.volumes.iter().map(Volume::host).collect::<Vec<_>>().join(",")
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("index")
    }

    /// The master's command line (without the subcommand).
    pub fn master_args(&self, port: u16) -> Vec<String> {
        let mut args = vec![
            "-db".to_string(),
            self.db_url.clone().unwrap_or_else(|| self.db().display().to_string()),
            "-volumes".to_string(),
            self.volume_list(),
            "-port".to_string(),
            port.to_string(),
            "--health-interval".to_string(),
            "100ms".to_string(),
        ];
        // Two reactors unless the test says how many.
        if !self.extra.iter().any(|flag| flag == "--threads") {
            args.extend(["--threads".to_string(), "2".to_string()]);
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    pub fn start_master(&mut self) {
        let port = self.master.as_ref().map_or_else(free_port, |master| master.port);
        self.master = None;
        let log = self.dir.path().join("master.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let started_before = started_lines(&log);
        let child = mkv()
            .args(self.master_args(port))
            .arg("server")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        wait_for_port(port);
        // The port answers once one reactor listens; the master says it
        // serves once every reactor does (and has logged its driver).
        let deadline = Instant::now() + START_TIMEOUT;
        while started_lines(&log) == started_before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.master = Some(Master {
            port,
            child: Some(child),
            log,
        });
    }

    /// SIGKILL the master (no shutdown of any kind).
    pub fn kill_master(&mut self) {
        if let Some(master) = self.master.as_mut() {
            if let Some(mut child) = master.child.take() {
                child.kill().unwrap();
                child.wait().unwrap();
            }
        }
    }

    /// The master's process: for signals and its exit status.
    pub fn master_process(&mut self) -> &mut Child {
        let master = self.master.as_mut().expect("master running");
        master.child.as_mut().expect("master not killed")
    }

    pub fn port(&self) -> u16 {
        self.master.as_ref().expect("master running").port
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port())
    }

    pub fn master_log(&self) -> String {
        std::fs::read_to_string(&self.master.as_ref().unwrap().log).unwrap_or_default()
    }

    /// Files under a volume's data root (excluding nginx's own state).
    pub fn files_on(&self, volume: usize) -> Vec<PathBuf> {
        let mut files = Vec::new();
        walk(&self.volumes[volume].dir, &mut files);
        files.retain(|path| !path.components().any(|part| part.as_os_str() == ".nginx"));
        files
    }
}

/// How many times the master log says a master started serving.
fn started_lines(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("mkv listening on")
        .count()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// A response as the tests look at it.
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

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_secs(60))
        .build()
}

fn reply(result: Result<ureq::Response, ureq::Error>) -> Reply {
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("request failed: {error}"),
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .map(|name| {
            let value = response.header(&name).unwrap_or("").to_string();
            (name, value)
        })
        .collect();
    let mut body = Vec::new();
    response.into_reader().read_to_end(&mut body).unwrap();
    Reply { status, headers, body }
}

/// A request with a real HTTP client (redirects not followed).
pub fn request(method: &str, url: &str, body: Option<&[u8]>) -> Reply {
    let request = agent().request(method, url);
    reply(match body {
        Some(body) => request.send_bytes(body),
        None => request.call(),
    })
}

pub fn request_with(method: &str, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = agent().request(method, url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    reply(request.call())
}

/// A request with headers and an optional body.
pub fn request_full(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Reply {
    let mut request = agent().request(method, url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    reply(match body {
        Some(body) => request.send_bytes(body),
        None => request.call(),
    })
}

/// PUT with a chunked body (ureq streams a reader without a length).
pub fn put_chunked(url: &str, body: &[u8]) -> Reply {
    reply(agent().put(url).send(std::io::Cursor::new(body.to_vec())))
}

/// GET following the redirect: the value's bytes from the volume.
pub fn fetch(url: &str) -> Reply {
    let redirect = request("GET", url, None);
    if redirect.status != 302 {
        return redirect;
    }
    request("GET", redirect.header("location").unwrap(), None)
}

/// Send raw bytes and read until the server closes or `timeout` passes.
pub fn raw(port: u16, bytes: &[u8], timeout: Duration) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buffer = [0u8; 65536];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => out.extend_from_slice(&buffer[..read]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Deterministic pseudo-random bytes.
pub fn value(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

pub fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Poll `check` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}
