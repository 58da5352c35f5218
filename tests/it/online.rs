//! Maintenance while serving: with the index held by a running master,
//! `mkv rebalance` and `mkv verify` given the master's `--admin-port` and
//! `--admin-token-file` have the master run the job (`POST /admin/<job>`)
//! and stream its lines back. A rebalance beside writes and reads moves
//! every key where placement wants it, and every GET during it redirects to
//! a copy that exists; verify repairs a deleted replica; a second job while
//! one runs is refused with 409; without the flags the locked index names
//! them. The admin port runs jobs only for the token's holder, never for a
//! web page, and the metrics port runs none. Idle clients take no slot of
//! either port, HEAD gets no body there, and the admin port takes no option
//! the flags refuse.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mkv::placement::{entry_host, entry_prefix, key2path};

use crate::cluster::{fetch, free_port, request, value, Cluster};

/// The run's stderr, after checking its exit code.
fn expect(output: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// A master's admin port and token file (in a directory of the test's).
pub struct Admin {
    pub port: u16,
    pub token_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Admin {
    pub fn new() -> Admin {
        let dir = tempfile::tempdir().unwrap();
        Admin {
            port: free_port(),
            token_file: dir.path().join("admin-token"),
            _dir: dir,
        }
    }

    /// The flags the master and the commands take.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--admin-port".to_string(),
            self.port.to_string(),
            "--admin-token-file".to_string(),
            self.token_file.display().to_string(),
        ]
    }

    /// The token the master made.
    pub fn token(&self) -> String {
        std::fs::read_to_string(&self.token_file).unwrap().trim().to_owned()
    }
}

/// `Cluster::start` with the admin flags after `extra`.
fn start_with_admin(volumes: usize, extra: &[&str], admin: &Admin) -> Cluster {
    let flags = admin.flags();
    let all: Vec<&str> = extra.iter().copied().chain(flags.iter().map(String::as_str)).collect();
    Cluster::start(volumes, &all)
}

/// PUT `count` keys named `prefix-i` of mixed sizes (one larger than a copy piece).
fn write_keys(cluster: &Cluster, prefix: &str, count: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let size = if i == 0 { 1_300_000 } else { 1 + i * 53 % 4000 };
            let key = format!("{prefix}-{i}");
            let body = value(size, i as u64 + prefix.len() as u64 * 1000);
            assert_eq!(request("PUT", &cluster.url(&key), Some(&body)).status, 201, "{key}");
            (key, body)
        })
        .collect()
}

/// Traffic beside a job: PUT new keys and GET old ones (following each
/// redirect) until told to stop. Returns the keys written and the failures.
fn traffic(
    url: impl Fn(&str) -> String,
    old: &[(String, Vec<u8>)],
    stop: &AtomicBool,
) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    let mut written = Vec::new();
    let mut failures = Vec::new();
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) || round == 0 {
        let key = format!("/during/key-{round}");
        let body = value(100 + round % 2000, 7_000 + round as u64);
        match request("PUT", &url(&key), Some(&body)).status {
            201 => written.push((key, body)),
            status => failures.push(format!("PUT {key}: {status}")),
        }
        for (key, body) in old.iter().skip(round % 7).step_by(7).take(4) {
            let redirect = request("GET", &url(key), None);
            if redirect.status != 302 {
                failures.push(format!("GET {key}: {}", redirect.status));
                continue;
            }
            let location = redirect.header("location").unwrap();
            let copy = request("GET", location, None);
            if copy.status != 200 || copy.body != *body {
                failures.push(format!("GET {key} -> {location}: {}", copy.status));
            }
        }
        round += 1;
    }
    (written, failures)
}

#[test]
fn online_rebalance_beside_writes_and_reads_moves_every_key_and_loses_no_read() {
    let mut cluster = Cluster::start(3, &["-replicas", "2"]);
    let old = write_keys(&cluster, "/old/key", 200);
    let admin = Admin::new();
    cluster.extra.extend(admin.flags());
    cluster.kill_master();
    cluster.master = None;
    for i in 3..5 {
        let dir = cluster.dir.path().join(format!("volume{i}"));
        cluster.volumes.push(crate::cluster::Volume::start(dir, free_port()));
    }
    cluster.start_master();
    let unbalanced = old
        .iter()
        .filter(|(key, _)| request("HEAD", &cluster.url(key), None).header("key-balance") == Some("unbalanced"))
        .count();
    assert!(unbalanced > 50, "5 volumes move most of 3's keys: {unbalanced}");
    let plan = cluster.run_command(&["--dry-run"], "rebalance");
    let stderr = expect(&plan, 0);
    assert!(stderr.contains(&format!(" {unbalanced} would move")), "{stderr}");
    let plan = String::from_utf8(plan.stdout).unwrap();
    assert_eq!(
        plan.lines().count(),
        unbalanced,
        "one plan line per key on stdout: {plan}"
    );
    assert!(plan
        .lines()
        .all(|line| line.starts_with("/old/key-") && line.contains(" -> ")));

    // The last key the walk moves: its old copies must outlive its new record.
    let watched = old
        .iter()
        .map(|(key, _)| key)
        .filter(|key| request("HEAD", &cluster.url(key), None).header("key-balance") == Some("unbalanced"))
        .max()
        .unwrap()
        .clone();
    let stop = Arc::new(AtomicBool::new(false));
    let port = cluster.port();
    let url = |key: &str| format!("http://127.0.0.1:{port}{key}");
    let (written, failures, output, stale_found) = std::thread::scope(|scope| {
        let during = scope.spawn(|| traffic(url, &old, &stop));
        let watch = scope.spawn(|| old_copies_after_the_move(&url(&watched), &watched, &stop));
        let output = cluster.run_command(&["--concurrency", "8"], "rebalance");
        stop.store(true, Ordering::Relaxed);
        let (written, failures) = during.join().unwrap();
        (written, failures, output, watch.join().unwrap())
    });
    assert!(
        stale_found.iter().all(|status| *status == 200),
        "{watched}'s old copies, read just after its record changed: {stale_found:?}"
    );
    assert!(!stale_found.is_empty(), "{watched} moved off some volume");
    let stderr = expect(&output, 0);
    assert!(stderr.contains("the master at"), "{stderr}");
    assert!(stderr.contains(&format!(" {unbalanced} moved, 0 failed")), "{stderr}");
    assert!(failures.is_empty(), "{} failed: {failures:?}", failures.len());
    assert!(!written.is_empty());

    for (key, body) in old.iter().chain(&written) {
        let head = request("HEAD", &cluster.url(key), None);
        assert_eq!(head.header("key-balance"), Some("balanced"), "{key}");
        let fetched = fetch(&cluster.url(key));
        assert_eq!(fetched.status, 200, "{key}");
        assert!(fetched.body == *body, "{key}: the value changed");
    }
    // The old copies went after their grace: two files per key.
    let files: usize = (0..cluster.volumes.len())
        .map(|volume| cluster.files_on(volume).len())
        .sum();
    assert_eq!(files, 2 * (old.len() + written.len()));
}

/// How long after a key's record changed a slow reader of an old redirect
/// comes to the old copy: well inside the master's 2 s grace, so only a
/// grace that is not kept fails the check, however loaded the machine.
const SLOW_READER_DELAY: Duration = Duration::from_millis(200);

/// Poll `key`'s record until its volumes change, then, as a slow reader of
/// a redirect given just before would, GET each copy the new record no
/// longer names: the statuses (200: still there).
fn old_copies_after_the_move(url: &str, key: &str, stop: &AtomicBool) -> Vec<u16> {
    let volumes = |reply: &crate::cluster::Reply| reply.header("key-volumes").unwrap_or_default().to_owned();
    let before = volumes(&request("HEAD", url, None));
    let mut after = before.clone();
    while after == before && !stop.load(Ordering::Relaxed) {
        after = volumes(&request("HEAD", url, None));
    }
    std::thread::sleep(SLOW_READER_DELAY);
    before
        .split(',')
        .filter(|entry| !after.split(',').any(|kept| kept == *entry))
        .map(|entry| {
            let copy = format!(
                "http://{}{}{}",
                entry_host(entry),
                entry_prefix(entry),
                key2path(key.as_bytes())
            );
            request("GET", &copy, None).status
        })
        .collect()
}

/// Where volume entry `entry` keeps the file of `key`.
fn file_at(cluster: &Cluster, entry: &str, key: &str) -> std::path::PathBuf {
    let volume = cluster
        .volumes
        .iter()
        .find(|volume| volume.host() == entry_host(entry))
        .expect("a volume of the cluster");
    let relative = format!("{}{}", entry_prefix(entry), key2path(key.as_bytes()));
    volume.dir.join(&relative[1..])
}

#[test]
fn online_verify_finds_a_deleted_replica_and_repair_restores_it_while_serving() {
    let admin = Admin::new();
    let cluster = start_with_admin(3, &["-replicas", "2"], &admin);
    let keys = write_keys(&cluster, "/v/key", 10);
    let (key, body) = &keys[0];
    let entries = request("HEAD", &cluster.url(key), None)
        .header("key-volumes")
        .unwrap()
        .to_owned();
    let lost = file_at(&cluster, entries.split(',').nth(1).unwrap(), key);
    std::fs::remove_file(&lost).unwrap();

    let found = expect(&cluster.run_command(&[], "verify"), 1);
    assert!(
        found.contains(&format!("verify: {key:?} on ")) && found.contains("missing"),
        "{found}"
    );
    assert!(found.contains("19 ok, 1 missing"), "{found}");
    assert!(!lost.exists(), "verify without --repair changes nothing");
    let repaired = expect(&cluster.run_command(&["--repair"], "verify"), 0);
    assert!(repaired.contains("1 repaired"), "{repaired}");
    assert!(std::fs::read(&lost).unwrap() == *body, "restored byte-exact");
    let clean = expect(&cluster.run_command(&[], "verify"), 0);
    assert!(clean.contains("20 ok, 0 missing"), "{clean}");
    assert_eq!(fetch(&cluster.url(key)).body, *body);
}

/// POST a job with the token on the admin port; the connection, its head read.
fn post_job(admin: &Admin, path: &str) -> (String, BufReader<TcpStream>) {
    let authorization = format!("Authorization: Bearer {}\r\n", admin.token());
    post(admin.port, path, &authorization)
}

/// POST `path` with `headers` (each line ending in CRLF) on `port`; the
/// connection, its head read.
fn post(port: u16, path: &str, headers: &str) -> (String, BufReader<TcpStream>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "POST {path} HTTP/1.1\r\n{headers}Content-Length: 0\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 2 {
        line.clear();
    }
    (status, reader)
}

#[test]
fn a_second_job_while_one_runs_is_refused_with_409() {
    let admin = Admin::new();
    let mut cluster = start_with_admin(2, &["-replicas", "1", "-voltimeout", "60s"], &admin);
    write_keys(&cluster, "/busy/key", 4);
    // A volume that takes connections and never answers: the job's HEAD of
    // it waits until the test lets go, so the job is running throughout.
    let held_port = cluster.volumes[1].port;
    cluster.volumes[1].stop();
    let listener = TcpListener::bind(("127.0.0.1", held_port)).unwrap();

    let (first, mut first_body) = post_job(&admin, "/admin/verify?concurrency=1");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let (second, _) = post_job(&admin, "/admin/rebalance");
    assert!(second.starts_with("HTTP/1.1 409"), "{second}");
    let (bad, _) = post_job(&admin, "/admin/verify?repair=maybe");
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");

    drop(listener);
    cluster.volumes[1].restart();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut first_body, &mut rest).unwrap();
    assert!(
        rest.trim_end().ends_with("exit 1") || rest.trim_end().ends_with("exit 0"),
        "{rest}"
    );
    // Once the first job ended, a job runs again (and passes once the
    // restarted volume answers the master's probes).
    let mut rest = String::new();
    for _ in 0..10 {
        let (third, mut third_body) = post_job(&admin, "/admin/verify");
        assert!(third.starts_with("HTTP/1.1 200"), "{third}");
        rest.clear();
        std::io::Read::read_to_string(&mut third_body, &mut rest).unwrap();
        if rest.trim_end().ends_with("exit 0") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(rest.trim_end().ends_with("exit 0"), "{rest}");
}

#[test]
fn without_admin_port_a_locked_index_names_the_flag() {
    let cluster = Cluster::start(2, &["-replicas", "1"]);
    for command in ["rebalance", "verify"] {
        let stderr = expect(&cluster.run_command(&[], command), 1);
        assert!(stderr.contains("locked") && stderr.contains("--admin-port"), "{stderr}");
    }
    let stderr = expect(&cluster.run_command(&[], "rebuild"), 1);
    assert!(stderr.contains("only with the master stopped"), "{stderr}");
}

#[test]
fn jobs_run_only_for_the_token_holder_never_for_a_web_page_or_a_scraper() {
    use std::os::unix::fs::PermissionsExt;
    let admin = Admin::new();
    let metrics_port = free_port();
    let metrics = metrics_port.to_string();
    let cluster = start_with_admin(3, &["-replicas", "2", "--metrics-port", &metrics], &admin);
    let mode = std::fs::metadata(&admin.token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the master made its token file private");
    assert_eq!(admin.token().len(), 64);
    assert_eq!(request("PUT", &cluster.url("/a/unlinked"), Some(b"kept")).status, 201);
    let files = replica_files(&cluster, "/a/unlinked");
    assert_eq!(request("UNLINK", &cluster.url("/a/unlinked"), None).status, 204);

    // What a web page can send: a "simple" cross-origin POST.
    let purge = "/admin/verify?purge-unlinked=0s&repair=true&orphan-grace=0s";
    let simple = "Content-Type: text/plain\r\nOrigin: http://evil.example\r\n";
    let (scraped, _) = post(metrics_port, purge, simple);
    assert!(
        scraped.starts_with("HTTP/1.1 404"),
        "the metrics port runs no job: {scraped}"
    );
    let (anonymous, _) = post(admin.port, purge, simple);
    assert!(anonymous.starts_with("HTTP/1.1 403"), "{anonymous}");
    let (tokenless, _) = post(admin.port, purge, "");
    assert!(tokenless.starts_with("HTTP/1.1 401"), "{tokenless}");
    let wrong = format!("Authorization: Bearer {}\r\n", "0".repeat(64));
    let (wrong, _) = post(admin.port, purge, &wrong);
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    // The token in a web page's request (it cannot read the file, but even
    // so): refused for its Origin.
    let with_origin = format!("Authorization: Bearer {}\r\n{simple}", admin.token());
    let (with_origin, _) = post(admin.port, purge, &with_origin);
    assert!(with_origin.starts_with("HTTP/1.1 403"), "{with_origin}");
    // The token holder, without the confirmation a zero grace needs.
    let (unconfirmed, mut body) = post_job(&admin, purge);
    assert!(unconfirmed.starts_with("HTTP/1.1 400"), "{unconfirmed}");
    let mut why = String::new();
    std::io::Read::read_to_string(&mut body, &mut why).unwrap();
    assert!(why.contains("confirm-short-grace"), "{why}");
    assert!(
        files.iter().all(|file| file.exists()),
        "nothing refused changed anything"
    );
    assert_eq!(
        request("GET", &format!("http://127.0.0.1:{metrics_port}/metrics"), None).status,
        200
    );

    let (confirmed, mut body) = post_job(&admin, &format!("{purge}&confirm-short-grace=true"));
    assert!(confirmed.starts_with("HTTP/1.1 200"), "{confirmed}");
    let mut lines = String::new();
    std::io::Read::read_to_string(&mut body, &mut lines).unwrap();
    assert!(lines.trim_end().ends_with("exit 0"), "{lines}");
    assert!(lines.contains("1 unlinked keys purged"), "{lines}");
    assert!(files.iter().all(|file| !file.exists()));
}

/// The files of `key`'s replicas, from the master's `Key-Volumes`.
fn replica_files(cluster: &Cluster, key: &str) -> Vec<PathBuf> {
    let reply = request("HEAD", &cluster.url(key), None);
    let entries = reply.header("key-volumes").expect("a live key").to_owned();
    entries.split(',').map(|entry| file_at(cluster, entry, key)).collect()
}

#[test]
fn a_job_from_a_command_placing_keys_otherwise_is_refused() {
    let admin = Admin::new();
    let cluster = start_with_admin(3, &["-replicas", "2"], &admin);
    write_keys(&cluster, "/placed/key", 3);
    let db = cluster.db().display().to_string();
    for command in ["rebalance", "verify"] {
        let output = crate::cluster::mkv()
            .args(["-db", &db, "-volumes", &cluster.volume_list(), "-replicas", "3"])
            .args(admin.flags())
            .arg(command)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = expect(&output, 1);
        assert!(
            stderr.contains("400") && stderr.contains("-replicas 2, -subvolumes 10 here"),
            "{stderr}"
        );
    }
    // The master's own flags go through.
    expect(&cluster.run_command(&[], "verify"), 0);
}

#[test]
fn a_shutdown_during_an_online_rebalance_ends_the_job_with_an_exit_code_and_no_stale_copy() {
    let admin = Admin::new();
    let mut cluster = start_with_admin(3, &["-replicas", "2", "-subvolumes", "1"], &admin);
    write_keys(&cluster, "/a/key", 60);
    cluster.kill_master();
    // Records without files after the real keys: the walk is still failing
    // them one by one when the master is told to stop.
    // Enough that an idle machine is still walking them a second in.
    let seeded = cluster.run_command(&["--count", "60000", "--prefix", "/z/seeded-"], "seed");
    assert!(seeded.status.success(), "{}", String::from_utf8_lossy(&seeded.stderr));
    for i in 3..5 {
        let dir = cluster.dir.path().join(format!("volume{i}"));
        cluster.volumes.push(crate::cluster::Volume::start(dir, free_port()));
    }
    cluster.master = None;
    cluster.start_master();
    let db = cluster.db().display().to_string();
    let job = crate::cluster::mkv()
        .args(["-db", &db, "-volumes", &cluster.volume_list()])
        .args(&cluster.extra)
        .args(["--concurrency", "1", "rebalance"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let master = cluster.master_process();
    unsafe { libc::kill(master.id() as i32, libc::SIGTERM) };
    let output = job.wait_with_output().unwrap();
    let stderr = expect(&output, 1);
    assert!(!stderr.contains("without an exit code"), "{stderr}");
    assert!(stderr.contains("stopped: the master is shutting down"), "{stderr}");
    assert_eq!(cluster.master_process().wait().unwrap().code(), Some(0));

    // Every old copy of a moved key was deleted before the master exited.
    cluster.master = None;
    cluster.start_master();
    let found = expect(&cluster.run_command(&["--orphan-grace", "0s"], "verify"), 1);
    assert!(found.contains("orphans: 0 found"), "{found}");
    assert!(
        found.contains("0 copies on volumes their records do not name"),
        "{found}"
    );
}

/// Connections to `port` that connect and send nothing.
fn idle_connections(port: u16, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect()
}

#[test]
fn idle_clients_take_no_slot_of_the_admin_or_the_metrics_port() {
    let admin = Admin::new();
    let metrics_port = free_port();
    let metrics = metrics_port.to_string();
    let cluster = start_with_admin(2, &["-replicas", "1", "--metrics-port", &metrics], &admin);
    write_keys(&cluster, "/idle/key", 3);
    // More silent clients than either port has slots (8 and 64), and one
    // that sends a head a byte at a time: none of them needs a token.
    let _silent_admin = idle_connections(admin.port, 40);
    let _silent_metrics = idle_connections(metrics_port, 200);
    let mut trickling = TcpStream::connect(("127.0.0.1", admin.port)).unwrap();
    trickling.write_all(b"P").unwrap();
    // Both ports answer within the 5 s a head may take to arrive, while
    // every one of those is still connected.
    let started = std::time::Instant::now();
    let scrape = request("GET", &format!("http://127.0.0.1:{metrics_port}/metrics"), None);
    assert_eq!(scrape.status, 200, "{}", String::from_utf8_lossy(&scrape.body));
    let verified = expect(&cluster.run_command(&[], "verify"), 0);
    assert!(verified.contains("the master at"), "{verified}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered only after {:?}",
        started.elapsed()
    );
}

/// Send `bytes` to `port` and read the whole answer (the server closes).
fn exchange(port: u16, bytes: &str) -> String {
    crate::cluster::raw(port, bytes.as_bytes(), Duration::from_secs(10))
}

/// The status line of `answer`, after checking that nothing follows its
/// head: an answer to HEAD has no body.
fn bodiless(answer: &str) -> &str {
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole head");
    assert_eq!(body, "", "a body after the head of an answer to HEAD: {answer}");
    assert!(head.contains("Connection: close"), "{head}");
    head.lines().next().unwrap()
}

#[test]
fn head_on_the_admin_and_metrics_ports_gets_no_body() {
    let admin = Admin::new();
    let metrics_port = free_port();
    let metrics = metrics_port.to_string();
    let _cluster = start_with_admin(2, &["-replicas", "1", "--metrics-port", &metrics], &admin);
    let page = exchange(metrics_port, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(bodiless(&page), "HTTP/1.1 200 OK");
    let length: usize = page
        .lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(length > 1000, "the page's length, without the page: {page}");
    let missing = exchange(metrics_port, "HEAD /admin/verify HTTP/1.1\r\n\r\n");
    assert_eq!(bodiless(&missing), "HTTP/1.1 404 Not Found");
    let tokenless = exchange(admin.port, "HEAD /admin/verify HTTP/1.1\r\n\r\n");
    assert_eq!(bodiless(&tokenless), "HTTP/1.1 401 Unauthorized");
    let authorized = format!(
        "HEAD /admin/verify HTTP/1.1\r\nAuthorization: Bearer {}\r\n\r\n",
        admin.token()
    );
    let not_post = exchange(admin.port, &authorized);
    assert_eq!(bodiless(&not_post), "HTTP/1.1 405 Method Not Allowed");
    assert!(not_post.contains("Allow: POST"), "{not_post}");
    let from_page = exchange(
        admin.port,
        "HEAD /admin/verify HTTP/1.1\r\nOrigin: http://evil.example\r\n\r\n",
    );
    assert_eq!(bodiless(&from_page), "HTTP/1.1 403 Forbidden");
}

#[test]
fn the_admin_port_refuses_options_the_flags_refuse_and_two_authorizations() {
    let admin = Admin::new();
    let cluster = start_with_admin(2, &["-replicas", "1"], &admin);
    let files = {
        write_keys(&cluster, "/opts/key", 2);
        replica_files(&cluster, "/opts/key-1")
    };
    let token = format!("Authorization: Bearer {}\r\n", admin.token());
    for path in [
        "/admin/verify?orphan-grace=100000h",
        "/admin/verify?purge-unlinked=1000000h",
        "/admin/verify?concurrency=5000",
        "/admin/verify?repair=false&repair=true",
    ] {
        let (status, mut body) = post(admin.port, path, &token);
        let mut why = String::new();
        std::io::Read::read_to_string(&mut body, &mut why).unwrap();
        assert!(status.starts_with("HTTP/1.1 400"), "{path}: {status} {why}");
    }
    // The token twice (or beside another): which one counts is nobody's guess.
    let twice = format!("{token}{token}");
    let (status, _) = post(admin.port, "/admin/verify", &twice);
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    let beside = format!("{token}Authorization: Bearer {}\r\n", "0".repeat(64));
    let (status, _) = post(admin.port, "/admin/verify", &beside);
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    assert!(files.iter().all(|file| file.exists()));
    let (status, mut body) = post(admin.port, "/admin/verify", &token);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut lines = String::new();
    std::io::Read::read_to_string(&mut body, &mut lines).unwrap();
    assert!(lines.trim_end().ends_with("exit 0"), "{lines}");
}
