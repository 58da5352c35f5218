//! Two masters over one PostgreSQL index (`-db postgres://...`): a value
//! PUT on one is read through the other, a write in flight on one makes the
//! same key's writes on the other answer 409, a DELETE on one is seen by
//! the other within the coherence bound (at once with `--coherence-ms 0`),
//! and with the index unreachable writes answer 503 with Retry-After while
//! cached reads keep answering.
//!
//! PostgreSQL comes from `MKV_TEST_POSTGRES` (`scripts/test` starts a
//! throwaway server); each test makes a database of its own, since advisory
//! locks and notifications are per database.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::{eventually, fetch, free_port, mkv, request, value, wait_for_port, Cluster};

/// A test database's URL, and the server's for administration.
struct Database {
    url: String,
    admin: String,
    name: String,
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// A fresh database for `test`, or None (skipped, said on stderr) without
/// `MKV_TEST_POSTGRES`; `MKV_TEST_REQUIRE_POSTGRES=1` makes that a failure.
fn database(test: &str) -> Option<Database> {
    let Some(admin) = std::env::var("MKV_TEST_POSTGRES").ok().filter(|url| !url.is_empty()) else {
        let required = std::env::var("MKV_TEST_REQUIRE_POSTGRES").is_ok_and(|value| value == "1");
        assert!(
            !required,
            "MKV_TEST_REQUIRE_POSTGRES=1 but MKV_TEST_POSTGRES is not set"
        );
        eprintln!("MKV_TEST_POSTGRES is not set: {test} is skipped");
        return None;
    };
    let name = format!("it_{test}_{}", std::process::id());
    let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .unwrap();
    client.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    Some(Database {
        url: format!("{base}/{name}"),
        admin,
        name,
    })
}

/// A second master over the same index and volumes.
struct Second {
    port: u16,
    child: Child,
}

impl Drop for Second {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Second {
    fn start(cluster: &Cluster) -> Second {
        let port = free_port();
        let log = std::fs::File::create(cluster.dir.path().join("second.log")).unwrap();
        let child = mkv()
            .args(cluster.master_args(port))
            .arg("server")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_for_port(port);
        Second { port, child }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// Two masters over a fresh database, with `extra` flags.
fn two_masters(test: &str, extra: &[&str]) -> Option<(Database, Cluster, Second)> {
    let database = database(test)?;
    let cluster = Cluster::start_over(Some(database.url.clone()), 3, extra);
    let second = Second::start(&cluster);
    Some((database, cluster, second))
}

/// GET through the master at `url`, then from the volume it redirects to.
fn read_through(url: &str) -> Option<Vec<u8>> {
    let reply = request("GET", url, None);
    if reply.status != 302 {
        return None;
    }
    let fetched = fetch(reply.header("location").unwrap());
    (fetched.status == 200).then_some(fetched.body)
}

#[test]
fn a_value_put_on_one_master_is_read_through_the_other() {
    let Some((_database, cluster, second)) = two_masters("readthrough", &[]) else {
        return;
    };
    let body = value(100_000, 1);
    assert_eq!(request("PUT", &cluster.url("/k"), Some(&body)).status, 201);
    assert_eq!(read_through(&second.url("/k")), Some(body.clone()));
    assert_eq!(
        request("PUT", &second.url("/k"), Some(b"other")).status,
        403,
        "a live key written by the other master is live here too"
    );
    assert_eq!(request("GET", &second.url("/missing"), None).status, 404);
}

#[test]
fn a_write_in_flight_on_one_master_makes_the_other_answer_409() {
    let Some((_database, cluster, second)) = two_masters("locks", &[]) else {
        return;
    };
    // A chunked PUT on the first master that has sent only part of its body.
    let mut slow = TcpStream::connect(("127.0.0.1", cluster.port())).unwrap();
    slow.write_all(b"PUT /busy HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .unwrap();
    // It holds the key's lock once its record is in, soft-deleted (and
    // listed as unlinked): only then may the other master try the key, or
    // its own attempt could be what makes the PUT answer 409.
    assert!(
        eventually(Duration::from_secs(10), || {
            request("GET", &cluster.url("/?unlinked"), None).body == br#"{"next":"","keys":["/busy"]}"#
        }),
        "the PUT's record is in"
    );
    assert!(
        eventually(Duration::from_secs(10), || request(
            "DELETE",
            &second.url("/busy"),
            None
        )
        .status
            == 409),
        "DELETE on the other master while the PUT is in flight"
    );
    assert_eq!(request("PUT", &second.url("/busy"), Some(b"x")).status, 409);
    slow.write_all(b"0\r\n\r\n").unwrap();
    let mut answer = [0u8; 12];
    slow.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 201");
    // Released: the other master may write the key now.
    assert_eq!(request("DELETE", &second.url("/busy"), None).status, 204);
    // The first master follows the other's change within its coherence
    // bound (it may answer from its cache for that long).
    assert!(eventually(Duration::from_secs(10), || request(
        "GET",
        &cluster.url("/busy"),
        None
    )
    .status
        == 404));
}

/// The coherence bound of `deleted_elsewhere_*` (milliseconds).
const BOUND_MS: u64 = 500;

#[test]
fn a_delete_on_one_master_is_seen_by_the_other_within_the_bound() {
    let bound = BOUND_MS.to_string();
    let Some((_database, cluster, second)) = two_masters("bound", &["--coherence-ms", &bound]) else {
        return;
    };
    let body = value(10_000, 2);
    for round in 0..5 {
        let key = format!("/gone{round}");
        assert_eq!(request("PUT", &cluster.url(&key), Some(&body)).status, 201);
        // Cached on the second master (read twice: a miss fills the cache).
        assert_eq!(read_through(&second.url(&key)), Some(body.clone()));
        assert_eq!(request("GET", &second.url(&key), None).status, 302);
        assert_eq!(request("DELETE", &cluster.url(&key), None).status, 204);
        let deleted = Instant::now();
        // Within the bound it may still redirect (to bytes that are gone);
        // past it, never.
        std::thread::sleep(Duration::from_millis(BOUND_MS).saturating_sub(deleted.elapsed()));
        assert_eq!(request("GET", &second.url(&key), None).status, 404, "round {round}");
    }
}

/// Issue 21, finding 8: commits that NOTIFY are serialised cluster-wide,
/// and every PUT and DELETE notified twice (its deleted record, then the
/// live one or the removal). A change no read can tell from what it
/// replaces (missing to deleted, deleted to missing) now notifies no one:
/// one notification a PUT and one a DELETE, and the other master still
/// answers each change within the bound.
#[test]
fn a_put_and_a_delete_each_notify_once_and_the_other_master_follows() {
    let bound = BOUND_MS.to_string();
    let Some((database, cluster, second)) = two_masters("notify_once", &["--coherence-ms", &bound]) else {
        return;
    };
    let mut listener = postgres::Client::connect(&database.url, postgres::NoTls).unwrap();
    listener.batch_execute("LISTEN mkv").unwrap();
    let key = "/once";
    let hex: String = key.bytes().map(|byte| format!("{byte:02x}")).collect();
    // Cached as missing on the second master (a miss fills the cache).
    assert_eq!(request("GET", &second.url(key), None).status, 404);
    assert_eq!(request("GET", &second.url(key), None).status, 404);
    assert_eq!(request("PUT", &cluster.url(key), Some(b"value")).status, 201);
    std::thread::sleep(Duration::from_millis(BOUND_MS));
    assert_eq!(request("GET", &second.url(key), None).status, 302);
    assert_eq!(request("GET", &second.url(key), None).status, 302);
    assert_eq!(request("DELETE", &cluster.url(key), None).status, 204);
    std::thread::sleep(Duration::from_millis(BOUND_MS));
    assert_eq!(request("GET", &second.url(key), None).status, 404);
    use postgres::fallible_iterator::FallibleIterator;
    let mut naming_the_key = 0;
    let mut notifications = listener.notifications();
    // Heartbeats keep coming: read what was sent until half a second from now.
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut waiting = notifications.timeout_iter(Duration::from_millis(100));
    while let (true, Ok(Some(notification))) = (Instant::now() < deadline, waiting.next()) {
        let payload = notification.payload();
        let keys = payload.split_once(":k").map_or("", |(_, keys)| keys);
        naming_the_key += keys.split(',').filter(|named| *named == hex).count();
    }
    assert_eq!(naming_the_key, 2, "one notification for the PUT, one for the DELETE");
}

#[test]
fn without_a_cache_a_delete_is_seen_at_once() {
    let Some((_database, cluster, second)) = two_masters("strict", &["--coherence-ms", "0"]) else {
        return;
    };
    for round in 0..5 {
        let key = format!("/strict{round}");
        assert_eq!(request("PUT", &cluster.url(&key), Some(b"value")).status, 201);
        assert_eq!(request("GET", &second.url(&key), None).status, 302);
        assert_eq!(request("GET", &second.url(&key), None).status, 302);
        assert_eq!(request("DELETE", &cluster.url(&key), None).status, 204);
        assert_eq!(request("GET", &second.url(&key), None).status, 404, "round {round}");
    }
}

#[test]
fn with_the_index_unreachable_writes_answer_503_and_cached_reads_go_on() {
    let Some((database, cluster, _second)) = two_masters("down", &["--coherence-ms", "3000"]) else {
        return;
    };
    assert_eq!(request("PUT", &cluster.url("/cached"), Some(b"value")).status, 201);
    assert_eq!(request("GET", &cluster.url("/cached"), None).status, 302);
    let mut admin = postgres::Client::connect(&database.admin, postgres::NoTls).unwrap();
    let set_connections = |admin: &mut postgres::Client, allow: bool| {
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {} WITH ALLOW_CONNECTIONS {allow}",
                database.name
            ))
            .unwrap();
    };
    set_connections(&mut admin, false);
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&database.name],
        )
        .unwrap();
    let refused = request("PUT", &cluster.url("/during"), Some(b"value"));
    assert_eq!(refused.status, 503, "{:?}", String::from_utf8_lossy(&refused.body));
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(request("DELETE", &cluster.url("/cached"), None).status, 503);
    assert_eq!(request("GET", &cluster.url("/cached"), None).status, 302, "a cache hit");
    assert_eq!(request("GET", &cluster.url("/uncached"), None).status, 503);
    set_connections(&mut admin, true);
    assert!(
        eventually(Duration::from_secs(10), || {
            request("PUT", &cluster.url("/after"), Some(b"value")).status == 201
        }),
        "writes succeed again once the index is back"
    );
    assert_eq!(read_through(&cluster.url("/cached")), Some(b"value".to_vec()));
    assert_eq!(
        request("GET", &cluster.url("/during"), None).status,
        404,
        "the refused write left nothing"
    );
}

/// Keys and the values written under them.
type Written = Vec<(String, Vec<u8>)>;

/// A serving master, the admin port and token its maintenance jobs need,
/// and the keys written.
type Serving = (Database, Cluster, Written, crate::online::Admin);

/// One master over a fresh database (2 replicas, an admin port for the
/// maintenance jobs) holding `count` keys `<prefix><i>`, and their values.
fn serving_with_keys(test: &str, prefix: &str, count: u64) -> Option<Serving> {
    let database = database(test)?;
    let admin = crate::online::Admin::new();
    let flags = admin.flags();
    let mut extra = vec!["-replicas", "2"];
    extra.extend(flags.iter().map(String::as_str));
    let cluster = Cluster::start_over(Some(database.url.clone()), 3, &extra);
    let keys: Written = (0..count).map(|i| (format!("{prefix}{i}"), value(2000, i))).collect();
    for (key, body) in &keys {
        assert_eq!(request("PUT", &cluster.url(key), Some(body)).status, 201);
    }
    Some((database, cluster, keys, admin))
}

#[test]
fn maintenance_runs_inside_a_serving_master_and_rebuild_offline() {
    let Some((_database, mut cluster, keys, _admin)) = serving_with_keys("maintenance", "/m/", 20) else {
        return;
    };
    assert_eq!(request("REBALANCE", &cluster.url(&keys[0].0), None).status, 204);
    // With a master serving, verify runs inside it (the index is shared,
    // not to be used offline).
    let verified = cluster.run_command(&[], "verify");
    let stderr = String::from_utf8_lossy(&verified.stderr);
    assert_eq!(verified.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("40 ok, 0 missing"), "{stderr}");
    let rebuild = cluster.run_command(&[], "rebuild");
    assert_ne!(rebuild.status.code(), Some(0), "rebuild refused under a serving master");
    assert!(String::from_utf8_lossy(&rebuild.stderr).contains("locked"));
    // Offline: rebuild regrows the index from the volumes.
    cluster.kill_master();
    let rebuilt = cluster.run_command(&[], "rebuild");
    assert!(rebuilt.status.success(), "{}", String::from_utf8_lossy(&rebuilt.stderr));
    cluster.master = None;
    cluster.start_master();
    for (key, body) in &keys {
        assert_eq!(read_through(&cluster.url(key)).as_ref(), Some(body), "{key}");
    }
}

/// A master with one reactor over a fresh database, `/hit` written and in
/// its cache.
fn one_reactor_with_a_hit(test: &str) -> Option<(Database, Cluster)> {
    let database = database(test)?;
    let cluster = Cluster::start_over(Some(database.url.clone()), 3, &["--threads", "1"]);
    assert_eq!(request("PUT", &cluster.url("/hit"), Some(b"value")).status, 201);
    assert_eq!(request("GET", &cluster.url("/hit"), None).status, 302);
    Some((database, cluster))
}

#[test]
fn a_write_waiting_on_the_index_does_not_stop_its_reactor_answering() {
    let Some((database, cluster)) = one_reactor_with_a_hit("offload") else {
        return;
    };
    // Another session holds the records table against writes (reads go on):
    // the next write's commit waits for it.
    let mut holder = postgres::Client::connect(&database.url, postgres::NoTls).unwrap();
    let mut transaction = holder.transaction().unwrap();
    transaction
        .batch_execute("LOCK TABLE mkv_records IN EXCLUSIVE MODE")
        .unwrap();
    let url = cluster.url("/waiting");
    let writer = std::thread::spawn(move || request("PUT", &url, Some(b"value")).status);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!writer.is_finished(), "the write waits on the index");
    // The master's only reactor still answers, from its cache and from the index.
    let connection_close = b"GET /hit HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let hit = crate::cluster::raw(cluster.port(), connection_close, Duration::from_secs(5));
    assert!(hit.starts_with("HTTP/1.1 302"), "{hit:?}");
    let miss = b"GET /absent HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let missed = crate::cluster::raw(cluster.port(), miss, Duration::from_secs(5));
    assert!(missed.starts_with("HTTP/1.1 404"), "{missed:?}");
    transaction.commit().unwrap();
    assert_eq!(writer.join().unwrap(), 201);
    assert_eq!(read_through(&cluster.url("/waiting")), Some(b"value".to_vec()));
}

#[test]
fn an_online_rebalance_runs_inside_the_serving_master() {
    let Some((_database, mut cluster, keys, _admin)) = serving_with_keys("rebalance", "/r/", 30) else {
        return;
    };
    // A fourth volume: placement now wants some keys elsewhere.
    let dir = cluster.dir.path().join("volume3");
    cluster.volumes.push(crate::cluster::Volume::start(dir, free_port()));
    cluster.kill_master();
    cluster.start_master();
    let unbalanced = |cluster: &Cluster| {
        keys.iter()
            .filter(|(key, _)| request("HEAD", &cluster.url(key), None).header("key-balance") != Some("balanced"))
            .count()
    };
    assert!(unbalanced(&cluster) > 0, "adding a volume moves some keys");
    let rebalanced = cluster.run_command(&["--concurrency", "4"], "rebalance");
    let stderr = String::from_utf8_lossy(&rebalanced.stderr);
    assert_eq!(rebalanced.status.code(), Some(0), "{stderr}");
    assert_eq!(unbalanced(&cluster), 0, "{stderr}");
    for (key, body) in &keys {
        assert_eq!(read_through(&cluster.url(key)).as_ref(), Some(body), "{key}");
    }
}

#[test]
fn a_read_waiting_on_the_index_does_not_stop_its_reactor_answering() {
    let Some((database, cluster)) = one_reactor_with_a_hit("offload_read") else {
        return;
    };
    // Another session holds the records table against reads too: a cache
    // miss waits for it.
    let mut holder = postgres::Client::connect(&database.url, postgres::NoTls).unwrap();
    let mut transaction = holder.transaction().unwrap();
    transaction
        .batch_execute("LOCK TABLE mkv_records IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let url = cluster.url("/uncached");
    let reader = std::thread::spawn(move || request("GET", &url, None).status);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!reader.is_finished(), "the miss waits on the index");
    let connection_close = b"GET /hit HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let hit = crate::cluster::raw(cluster.port(), connection_close, Duration::from_secs(5));
    assert!(
        hit.starts_with("HTTP/1.1 302"),
        "the only reactor answers a hit: {hit:?}"
    );
    transaction.commit().unwrap();
    assert_eq!(reader.join().unwrap(), 404);
}

/// Records `<prefix><i>` for i in 0..count, each key padded to
/// `key_bytes`, written straight into the index (live, one replica): a big
/// listing without a PUT per key.
fn insert_records(database: &Database, prefix: &str, count: u32, key_bytes: i32) {
    let mut client = postgres::Client::connect(&database.url, postgres::NoTls).unwrap();
    client
        .execute(
            "INSERT INTO mkv_records SELECT convert_to(rpad($1 || lpad(i::text, 8, '0'), $3, 'x'), 'UTF8'), \
             convert_to('127.0.0.1:1', 'UTF8') FROM generate_series(1, $2) i",
            &[&prefix, &(count as i32), &key_bytes],
        )
        .unwrap();
}

/// A response's head and body, read until the server closes or is silent
/// for `silence`; and whether it closed.
fn read_response(stream: &mut TcpStream, silence: Duration) -> (String, Vec<u8>, bool) {
    stream.set_read_timeout(Some(silence)).unwrap();
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 1 << 16];
    let closed = loop {
        match stream.read(&mut buffer) {
            Ok(0) => break true,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(_) => break false,
        }
    };
    let split = received
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&received[..split]).into_owned();
    (head, received[split + 4..].to_vec(), closed)
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .expect("a Content-Length")
        .parse()
        .unwrap()
}

#[test]
fn a_listing_is_as_long_as_its_content_length_while_keys_change() {
    let Some(database) = database("listing_exact") else {
        return;
    };
    let cluster = Cluster::start_over(Some(database.url.clone()), 3, &[]);
    insert_records(&database, "/l/", 4000, 40);
    // A writer adds and removes keys of many lengths under the prefix as
    // fast as it can, so the keys change between any two reads.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let url = database.url.clone();
    let writer = std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut round = 0u32;
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            let key = format!("/l/{:08}{}", round % 4000, "y".repeat((round % 50) as usize));
            client
                .execute(
                    "INSERT INTO mkv_records VALUES (convert_to($1, 'UTF8'), convert_to('127.0.0.1:1', 'UTF8')) \
                     ON CONFLICT DO NOTHING",
                    &[&key],
                )
                .unwrap();
            client
                .execute("DELETE FROM mkv_records WHERE key = convert_to($1, 'UTF8')", &[&key])
                .unwrap();
            round += 1;
        }
    });
    for listing in 0..30 {
        let mut stream = TcpStream::connect(("127.0.0.1", cluster.port())).unwrap();
        stream
            .write_all(b"GET /l/?list HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let (head, body, closed) = read_response(&mut stream, Duration::from_secs(10));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(closed, "listing {listing}: the connection closes as asked");
        assert_eq!(body.len(), content_length(&head), "listing {listing}");
        assert!(body.ends_with(b"]}"), "listing {listing}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
}

#[test]
fn a_listing_whose_client_stops_reading_is_cut_off_not_followed_by_an_error() {
    let Some(database) = database("listing_stall") else {
        return;
    };
    let cluster = Cluster::start_over(Some(database.url.clone()), 3, &[]);
    // About 64 MB of keys: more than the kernel's socket buffers hold
    // (32 MiB to receive, 4 MiB to send at most, as Linux ships).
    insert_records(&database, "/s/", 16_000, 4000);
    let mut stream = TcpStream::connect(("127.0.0.1", cluster.port())).unwrap();
    stream.write_all(b"GET /s/?list HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // Past the master's 30 s write timeout without reading a byte (its
    // write blocks a few seconds in, once the buffers are full).
    std::thread::sleep(Duration::from_secs(40));
    let (head, body, closed) = read_response(&mut stream, Duration::from_secs(5));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        body.len() < content_length(&head),
        "the body was cut short: {} of {} bytes",
        body.len(),
        content_length(&head)
    );
    assert!(
        !body.windows(9).any(|window| window == b"HTTP/1.1 "),
        "nothing follows the cut-off body"
    );
    assert!(closed, "a response that cannot be completed closes its connection");
}

/// `synchronous_standby_names` for the whole server: commits of sessions
/// with `synchronous_commit = on` (only the test's own database has it)
/// wait for a standby that never comes while it is set.
fn set_phantom_standby(admin: &mut postgres::Client, on: bool) {
    let names = if on { "'mkv_phantom_standby'" } else { "''" };
    // ALTER SYSTEM may not share a transaction with anything.
    admin
        .batch_execute(&format!("ALTER SYSTEM SET synchronous_standby_names = {names}"))
        .unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
}

/// The phantom standby, set until this is dropped (a failed test too).
struct PhantomStandby(String);

impl PhantomStandby {
    /// Set it, and wait until commits wait for it (the server takes the
    /// setting in a moment after the reload).
    fn set(database: &Database) -> PhantomStandby {
        let mut admin = postgres::Client::connect(&database.admin, postgres::NoTls).unwrap();
        set_phantom_standby(&mut admin, true);
        let phantom = PhantomStandby(database.admin.clone());
        let url = database.url.clone();
        // A probe that waits until the standby is unset again (not joined).
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            // Making a table writes the catalog: its commit waits.
            let _ = client.batch_execute("CREATE TEMP TABLE mkv_probe (x int)");
        });
        assert!(
            eventually(Duration::from_secs(10), || {
                admin
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE query LIKE 'CREATE TEMP TABLE mkv_probe%' AND wait_event = 'SyncRep'",
                        &[],
                    )
                    .unwrap()
                    .get::<_, i64>(0)
                    > 0
            }),
            "commits wait for the phantom standby"
        );
        phantom
    }
}

impl Drop for PhantomStandby {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&self.0, postgres::NoTls) {
            let _ = admin.batch_execute("ALTER SYSTEM SET synchronous_standby_names = ''");
            let _ = admin.batch_execute("SELECT pg_reload_conf()");
        }
    }
}

/// A database whose sessions commit synchronously (so that a phantom
/// standby stalls their commits), and the server's admin session.
fn synchronous_database(test: &str) -> Option<(Database, postgres::Client)> {
    let database = database(test)?;
    let mut admin = postgres::Client::connect(&database.admin, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("ALTER DATABASE {} SET synchronous_commit = on", database.name))
        .unwrap();
    Some((database, admin))
}

/// Which of the test database's sessions wait on the standby to commit
/// a request's write (`mkv_apply...` or `mkv_commit_group`, not a heartbeat or a lease renewal,
/// which wait too).
const STALLED_WRITES: &str = "FROM pg_stat_activity WHERE datname = $1 AND wait_event = 'SyncRep' \
     AND (query LIKE 'SELECT mkv_apply%' OR query LIKE 'SELECT mkv_commit%')";

/// Terminate the test database's sessions whose write's commit waits on
/// the standby, once there is one; how many.
fn terminate_stalled_commits(admin: &mut postgres::Client, database: &Database) -> u64 {
    let mut terminated = 0;
    assert!(
        eventually(Duration::from_secs(10), || {
            terminated = admin
                .query_one(
                    &format!("SELECT count(pg_terminate_backend(pid)) {STALLED_WRITES}"),
                    &[&database.name],
                )
                .unwrap()
                .get::<_, i64>(0) as u64;
            terminated > 0
        }),
        "a commit waits on the standby"
    );
    terminated
}

#[test]
fn a_write_that_committed_but_failed_does_not_leave_its_master_serving_the_old_record() {
    let _serial = PHANTOM_STANDBY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some((database, mut admin)) = synchronous_database("unknown_outcome") else {
        return;
    };
    let cluster = Cluster::start_over(Some(database.url.clone()), 3, &["--coherence-ms", "500"]);
    // A chunked PUT whose record is in (soft-deleted: cached as missing
    // by its master) and whose body is still coming.
    let mut slow = TcpStream::connect(("127.0.0.1", cluster.port())).unwrap();
    slow.write_all(b"PUT /k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            request("GET", &cluster.url("/?unlinked"), None).body == br#"{"next":"","keys":["/k"]}"#
        }),
        "the PUT's record is in"
    );
    assert_eq!(request("GET", &cluster.url("/k"), None).status, 404);
    // The commit that makes it live waits on the standby, and its session
    // is terminated: committed, but the master never hears so.
    let phantom = PhantomStandby::set(&database);
    slow.write_all(b"0\r\n\r\n").unwrap();
    terminate_stalled_commits(&mut admin, &database);
    drop(phantom);
    // The commit landed: the master learns so when it tries again
    // (`write::settle`), though that commit also ended the key's lease,
    // which the try then fails to find (the record says the write is
    // live): 201. It must not serve the record from before the write.
    let (head, _, _) = read_response(&mut slow, Duration::from_secs(30));
    assert!(
        head.starts_with("HTTP/1.1 201"),
        "a write whose commit landed is acknowledged: {head}"
    );
    let record = admin_query_record(&database, "/k");
    assert!(
        !record.starts_with(b"DELETED"),
        "the value went live: {:?}",
        String::from_utf8_lossy(&record)
    );
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        read_through(&cluster.url("/k")),
        Some(b"hello".to_vec()),
        "past the bound the master serves the record the index holds"
    );
}

/// The raw record of `key` in the test database.
fn admin_query_record(database: &Database, key: &str) -> Vec<u8> {
    let mut client = postgres::Client::connect(&database.url, postgres::NoTls).unwrap();
    client
        .query_one(
            "SELECT record FROM mkv_records WHERE key = convert_to($1, 'UTF8')",
            &[&key],
        )
        .unwrap()
        .get(0)
}

#[test]
fn rebuild_is_refused_while_a_master_serves_whatever_sessions_died() {
    let Some(database) = database("role_sessions") else {
        return;
    };
    let cluster = Cluster::start_over(Some(database.url.clone()), 3, &[]);
    assert_eq!(request("PUT", &cluster.url("/kept"), Some(b"value")).status, 201);
    // For 1.5 s, end every session that holds the role lock shared (the
    // master's, as a restart or a failover would), as soon as it has it;
    // meanwhile `rebuild` tries to take the index for itself.
    let url = database.url.clone();
    let storm = std::thread::spawn(move || {
        let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let started = Instant::now();
        let mut ended = 0u64;
        while started.elapsed() < Duration::from_millis(1500) {
            ended += admin
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
                     AND mode = 'ShareLock' AND classid = $1 AND objid = $2 AND objsubid = 1 \
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    &[&0x6d6b_762d_u32, &0x726f_6c65_u32],
                )
                .unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        ended
    });
    let rebuild = cluster.run_command(&[], "rebuild");
    let ended = storm.join().unwrap();
    assert!(ended > 0, "the master's role sessions were ended");
    let stderr = String::from_utf8_lossy(&rebuild.stderr);
    assert_ne!(
        rebuild.status.code(),
        Some(0),
        "rebuild ran beside a serving master: {stderr}"
    );
    assert!(stderr.contains("locked"), "{stderr}");
    assert_eq!(read_through(&cluster.url("/kept")), Some(b"value".to_vec()));
}

/// The test database's sessions, stopped with SIGSTOP (a database that
/// hangs rather than refuses, as a stuck disk or a network that drops
/// packets does) until this is dropped.
struct Frozen(Vec<i32>);

impl Frozen {
    fn freeze(database: &Database) -> Frozen {
        let mut admin = postgres::Client::connect(&database.admin, postgres::NoTls).unwrap();
        let pids: Vec<i32> = admin
            .query("SELECT pid FROM pg_stat_activity WHERE datname = $1", &[&database.name])
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert!(!pids.is_empty(), "the master has sessions");
        let frozen = Frozen(pids);
        frozen.signal("-STOP");
        frozen
    }

    fn signal(&self, signal: &str) {
        let pids: Vec<String> = self.0.iter().map(i32::to_string).collect();
        let status = std::process::Command::new("kill")
            .arg(signal)
            .args(&pids)
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pids:?}");
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.signal("-CONT");
    }
}

#[test]
fn with_the_index_frozen_a_write_answers_503_and_cache_hits_go_on() {
    let Some((database, cluster)) = one_reactor_with_a_hit("frozen") else {
        return;
    };
    // The key lock session exists (the first PUT took a lock on it).
    let frozen = Frozen::freeze(&database);
    let port = cluster.port();
    let writer = std::thread::spawn(move || {
        let put = b"PUT /during HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nvalue";
        crate::cluster::raw(port, put, Duration::from_secs(30))
    });
    std::thread::sleep(Duration::from_millis(300));
    let connection_close = b"GET /hit HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let hit = crate::cluster::raw(port, connection_close, Duration::from_secs(20));
    assert!(
        hit.starts_with("HTTP/1.1 302"),
        "the only reactor answers a hit: {hit:?}"
    );
    let written = writer.join().unwrap();
    assert!(written.starts_with("HTTP/1.1 503"), "{written:?}");
    assert!(written.contains("Retry-After: 1"), "{written:?}");
    drop(frozen);
    assert!(
        eventually(Duration::from_secs(20), || {
            request("PUT", &cluster.url("/after"), Some(b"value")).status == 201
        }),
        "writes succeed again once the index answers"
    );
    assert_eq!(request("GET", &cluster.url("/during"), None).status, 404);
}

#[test]
fn a_write_in_flight_keeps_its_key_when_its_index_sessions_end() {
    let Some((database, cluster, second)) = two_masters("fence_sessions", &[]) else {
        return;
    };
    // A chunked PUT on the first master that has sent only part of its body.
    let mut slow = TcpStream::connect(("127.0.0.1", cluster.port())).unwrap();
    slow.write_all(b"PUT /busy HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            request("GET", &cluster.url("/?unlinked"), None).body == br#"{"next":"","keys":["/busy"]}"#
        }),
        "the PUT's record is in"
    );
    // Every session of the database ends, the lock's included (as in a
    // restart or a failover).
    let mut admin = postgres::Client::connect(&database.admin, postgres::NoTls).unwrap();
    let ended = admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&database.name],
        )
        .unwrap();
    assert!(ended > 0);
    let mut refused = 0;
    for _ in 0..5 {
        let status = request("PUT", &second.url("/busy"), Some(b"other")).status;
        assert_ne!(status, 201, "another master wrote a key whose write is in flight");
        refused += u32::from(status == 409);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(refused > 0, "the other master is refused the key");
    // A read replaces the first master's dead pooled connections.
    assert_eq!(request("GET", &cluster.url("/absent"), None).status, 404);
    slow.write_all(b"5\r\nworld\r\n0\r\n\r\n").unwrap();
    let mut answer = [0u8; 12];
    slow.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 201");
    for master in [cluster.url("/busy"), second.url("/busy")] {
        assert_eq!(read_through(&master), Some(b"helloworld".to_vec()), "{master}");
    }
}

/// The tests that set `synchronous_standby_names` (server-wide) run one
/// at a time.
static PHANTOM_STANDBY: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_commit_waiting_on_the_standby_keeps_its_key_from_other_masters() {
    let _serial = PHANTOM_STANDBY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some((database, mut admin)) = synchronous_database("fence_commit") else {
        return;
    };
    let cluster = Cluster::start_over(Some(database.url.clone()), 3, &[]);
    let second = Second::start(&cluster);
    // A chunked PUT on the first master, its record in, its body coming.
    let mut slow = TcpStream::connect(("127.0.0.1", cluster.port())).unwrap();
    slow.write_all(b"PUT /k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            request("GET", &cluster.url("/?unlinked"), None).body == br#"{"next":"","keys":["/k"]}"#
        }),
        "the PUT's record is in"
    );
    // The commit that makes it live waits on the standby; every other
    // session of the database ends (the first master's lock's included).
    let phantom = PhantomStandby::set(&database);
    slow.write_all(b"0\r\n\r\n").unwrap();
    let waiting = |admin: &mut postgres::Client| {
        admin
            .query_one(&format!("SELECT count(*) {STALLED_WRITES}"), &[&database.name])
            .unwrap()
            .get::<_, i64>(0)
    };
    assert!(
        eventually(Duration::from_secs(10), || waiting(&mut admin) > 0),
        "a commit waits"
    );
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND wait_event IS DISTINCT FROM 'SyncRep'",
            &[&database.name],
        )
        .unwrap();
    let other = request("PUT", &second.url("/k"), Some(b"second"));
    drop(phantom);
    assert_eq!(other.status, 409, "{:?}", String::from_utf8_lossy(&other.body));
    let (head, _, _) = read_response(&mut slow, Duration::from_secs(10));
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    assert_eq!(read_through(&second.url("/k")), Some(b"first".to_vec()));
}

#[test]
fn a_commit_that_never_returns_answers_503_and_leaves_the_key_to_later_writes() {
    let _serial = PHANTOM_STANDBY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some((database, _admin)) = synchronous_database("stuck_commit") else {
        return;
    };
    let cluster = Cluster::start_over(Some(database.url.clone()), 3, &[]);
    let phantom = PhantomStandby::set(&database);
    let stuck = request("PUT", &cluster.url("/k"), Some(b"first"));
    drop(phantom);
    assert_eq!(stuck.status, 503, "{:?}", String::from_utf8_lossy(&stuck.body));
    assert_eq!(stuck.header("retry-after"), Some("1"));
    // Once the database answers again, the key is free (its stuck commit,
    // if it landed, left it soft-deleted).
    assert!(
        eventually(Duration::from_secs(20), || {
            request("PUT", &cluster.url("/k"), Some(b"second")).status == 201
        }),
        "the key is written once the database answers"
    );
    assert_eq!(read_through(&cluster.url("/k")), Some(b"second".to_vec()));
}

/// Found by review: a commit of an S3 overwrite that failed (the
/// database restarting, a session killed) after every replica took the new
/// bytes left the key 404 with the old bytes gone. Then a retry of the
/// commit for 20 s fixed it, which kept the writer waiting past the
/// request's bound (the fault runs: native PUTs answered after 20 s). Now
/// the writer answers within the bound (503 with Retry-After, the statement
/// bound plus a second of retries), and the commit journal finishes the
/// overwrite once the index is back: the new value, never neither.
#[test]
fn an_s3_overwrite_whose_commit_fails_answers_within_the_bound_and_is_finished_later() {
    let Some(database) = database("s3_commit") else {
        return;
    };
    let cluster = Cluster::start_over(Some(database.url.clone()), 3, &["--threads", "1"]);
    let s3 = [("x-amz-content-sha256", "UNSIGNED-PAYLOAD")];
    let url = cluster.url("/bkt/obj");
    let (old, new) = (value(3000, 1), value(3000, 2));
    assert_eq!(crate::cluster::request_full("PUT", &url, &s3, Some(&old)).status, 200);
    let mut holder = postgres::Client::connect(&database.url, postgres::NoTls).unwrap();
    let mut transaction = holder.transaction().unwrap();
    transaction
        .batch_execute("SELECT 1 FROM mkv_meta WHERE key = convert_to('/bkt/obj', 'UTF8') FOR UPDATE")
        .unwrap();
    let writer_url = url.clone();
    let body = new.clone();
    let writer = std::thread::spawn(move || crate::cluster::request_full("PUT", &writer_url, &s3, Some(&body)));
    // The statement bound (5 s) and a second of retries, with margin.
    std::thread::sleep(Duration::from_secs(9));
    let answered = writer.is_finished();
    transaction.rollback().unwrap();
    assert!(
        answered,
        "the overwrite answered while the index still refused its commit"
    );
    let reply = writer.join().unwrap();
    assert_eq!(reply.status, 503);
    assert!(reply.header("Retry-After").is_some(), "{:?}", reply.headers);
    let got = crate::cluster::request_full("GET", &url, &s3, None);
    assert_eq!(got.status, 200, "{}", cluster.master_log());
    assert!(got.body == new, "the new value's bytes");
}

/// Found by review: while one master overwrote an S3 key in a loop, S3
/// GETs and HEADs of it on the other master answered 404 NoSuchKey (one
/// read in ten): a reader that saw one overwrite's deleted record and no
/// journal entry (committed meanwhile) read the record again after the
/// next overwrite's gate. And a CopyObject from the key answered 503 (the
/// copy's length not the recorded one) or 404: the source switched
/// between its record's read and the copy's opening. Every read gets one
/// value, whole, under its own ETag; every copy one value.
#[test]
fn s3_reads_and_copies_on_one_master_during_overwrites_on_the_other_get_a_value() {
    let Some((_database, cluster, second)) = two_masters("s3_overwritten", &["--threads", "1"]) else {
        return;
    };
    let s3 = ("x-amz-content-sha256", "UNSIGNED-PAYLOAD");
    let put = |url: &str, body: &[u8]| crate::cluster::request_full("PUT", url, &[s3], Some(body)).status;
    assert_eq!(put(&cluster.url("/bkt"), b""), 200);
    assert_eq!(put(&cluster.url("/bkt/k"), &value(60_000, 0)), 200);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (url, stop) = (cluster.url("/bkt/k"), stop.clone());
        std::thread::spawn(move || {
            let mut round = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = value(60_000 + (round % 7) * 1000, round as u64);
                let status = crate::cluster::request_full("PUT", &url, &[s3], Some(&body)).status;
                assert_eq!(status, 200, "overwrite {round}");
                round += 1;
            }
        })
    };
    let (mut reads, mut copies) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let got = crate::cluster::request_full("GET", &second.url("/bkt/k"), &[s3], None);
        assert_eq!(got.status, 200, "an S3 GET on the other master during overwrites");
        let etag = got.header("etag").unwrap_or_default().trim_matches('"').to_owned();
        assert_eq!(
            etag,
            crate::cluster::md5_hex(&got.body),
            "the bytes of the value its ETag names"
        );
        let head = crate::cluster::request_full("HEAD", &second.url("/bkt/k"), &[s3], None);
        assert_eq!(head.status, 200, "an S3 HEAD on the other master during overwrites");
        let copied = crate::cluster::request_full(
            "PUT",
            &second.url("/bkt/copy"),
            &[s3, ("x-amz-copy-source", "bkt/k")],
            None,
        );
        assert_eq!(
            copied.status,
            200,
            "a copy from the overwritten key: {}",
            String::from_utf8_lossy(&copied.body)
        );
        let copy = crate::cluster::request_full("GET", &second.url("/bkt/copy"), &[s3], None);
        let etag = copy.header("etag").unwrap_or_default().trim_matches('"').to_owned();
        assert_eq!(
            etag,
            crate::cluster::md5_hex(&copy.body),
            "the copy is one value, whole"
        );
        reads += 1;
        copies += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert!(reads > 0 && copies > 0);
}

/// Found by review: a DELETE whose statement ran past the index's bound
/// answered 500 without Retry-After, though its outcome is unknown (it may
/// still take effect): as every other outage, 503 with Retry-After.
#[test]
fn a_statement_past_the_bound_answers_503_with_retry_after() {
    let Some(database) = database("statement_bound") else {
        return;
    };
    let cluster = Cluster::start_over(Some(database.url.clone()), 3, &["--threads", "1"]);
    assert_eq!(request("PUT", &cluster.url("/nk"), Some(b"value")).status, 201);
    let mut holder = postgres::Client::connect(&database.url, postgres::NoTls).unwrap();
    let mut transaction = holder.transaction().unwrap();
    transaction
        .batch_execute("SELECT 1 FROM mkv_meta WHERE key = convert_to('/nk', 'UTF8') FOR UPDATE")
        .unwrap();
    let deleted = request("DELETE", &cluster.url("/nk"), None);
    transaction.rollback().unwrap();
    assert_eq!(deleted.status, 503);
    assert!(deleted.header("Retry-After").is_some(), "{:?}", deleted.headers);
}

/// An S3 request on the master's port (unsigned: access control is off),
/// its answer read to the end.
fn s3_raw(port: u16, method: &str, target: &str, extra: &str, timeout: Duration) -> String {
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: x\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n{extra}\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    crate::cluster::raw(port, request.as_bytes(), timeout)
}

/// S3 requests that read bucket state (bucket existence, the bucket's CORS
/// rules for a request with an `Origin`, its uploads) or a listing's
/// metadata, in flight while that table's reads wait on another session:
/// the master's only reactor answers a cache hit meanwhile, and each S3
/// request answers 503 with Retry-After once the statement bound passes.
#[test]
fn s3_requests_waiting_on_bucket_state_or_listing_metadata_leave_their_reactor_answering() {
    let Some((database, cluster)) = one_reactor_with_a_hit("s3_state_wait") else {
        return;
    };
    let port = cluster.port();
    let long = Duration::from_secs(30);
    assert!(s3_raw(port, "PUT", "/bkt", "", long).starts_with("HTTP/1.1 200"));
    let object = "PUT /bkt/k HTTP/1.1\r\nHost: x\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n\
                  Content-Length: 5\r\nConnection: close\r\n\r\nvalue";
    assert!(crate::cluster::raw(port, object.as_bytes(), long).starts_with("HTTP/1.1 200"));
    let state_readers: &[(&str, &str, &str)] = &[
        ("HEAD", "/bkt", ""),
        ("GET", "/bkt?list-type=2", ""),
        ("GET", "/bkt?uploads", ""),
        ("GET", "/bkt?location", ""),
        ("GET", "/bkt/k", "Origin: https://example.com\r\n"),
    ];
    // Bucket state first, then the metadata a listing reads per key.
    for (table, requests) in [
        ("mkv_state", state_readers),
        ("mkv_meta", &[("GET", "/bkt?list-type=2", "")][..]),
    ] {
        let mut holder = postgres::Client::connect(&database.url, postgres::NoTls).unwrap();
        let mut transaction = holder.transaction().unwrap();
        transaction
            .batch_execute(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            .unwrap();
        let waiting: Vec<_> = requests
            .iter()
            .map(|&(method, target, extra)| {
                std::thread::spawn(move || s3_raw(port, method, target, extra, Duration::from_secs(30)))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let connection_close = b"GET /hit HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let hit = crate::cluster::raw(port, connection_close, Duration::from_secs(3));
        assert!(
            hit.starts_with("HTTP/1.1 302"),
            "the only reactor answers a hit while S3 requests wait on {table}: {hit:?}"
        );
        assert!(
            waiting.iter().all(|request| !request.is_finished()),
            "the S3 requests still wait on {table}"
        );
        for (request, (method, target, _)) in waiting.into_iter().zip(requests) {
            let answer = request.join().unwrap();
            assert!(
                answer.starts_with("HTTP/1.1 503") && answer.contains("Retry-After: 1"),
                "{method} {target} with {table} held: {answer:?}"
            );
        }
        transaction.rollback().unwrap();
    }
    assert!(s3_raw(port, "HEAD", "/bkt", "", long).starts_with("HTTP/1.1 200"));
    let listed = s3_raw(port, "GET", "/bkt?list-type=2", "", long);
    assert!(
        listed.starts_with("HTTP/1.1 200") && listed.contains("<Key>k</Key>"),
        "{listed:?}"
    );
}

#[test]
fn with_the_index_frozen_an_s3_bucket_check_answers_503_and_cache_hits_go_on() {
    let Some((database, cluster)) = one_reactor_with_a_hit("s3_frozen") else {
        return;
    };
    let port = cluster.port();
    let long = Duration::from_secs(30);
    assert!(s3_raw(port, "PUT", "/bkt", "", long).starts_with("HTTP/1.1 200"));
    // The bucket check's connection is pooled, and frozen with the others.
    assert!(s3_raw(port, "HEAD", "/bkt", "", long).starts_with("HTTP/1.1 200"));
    let frozen = Frozen::freeze(&database);
    let checking = std::thread::spawn(move || s3_raw(port, "HEAD", "/bkt", "", Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(300));
    let connection_close = b"GET /hit HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let hit = crate::cluster::raw(port, connection_close, Duration::from_secs(3));
    assert!(
        hit.starts_with("HTTP/1.1 302"),
        "the only reactor answers a hit while HeadBucket waits: {hit:?}"
    );
    let checked = checking.join().unwrap();
    assert!(
        checked.starts_with("HTTP/1.1 503") && checked.contains("Retry-After: 1"),
        "{checked:?}"
    );
    drop(frozen);
    assert!(
        eventually(Duration::from_secs(20), || s3_raw(port, "HEAD", "/bkt", "", long)
            .starts_with("HTTP/1.1 200")),
        "the bucket answers again once the index does"
    );
}

#[test]
fn writes_committed_together_are_each_acknowledged_and_seen_by_the_other_master() {
    let Some((database, cluster, second)) = two_masters("group_commit", &[]) else {
        return;
    };
    // Another session holds the records against writes for a moment: the
    // first write's commit waits, and the writes behind it gather into
    // groups (one transaction each).
    let mut holder = postgres::Client::connect(&database.url, postgres::NoTls).unwrap();
    let mut transaction = holder.transaction().unwrap();
    transaction
        .batch_execute("LOCK TABLE mkv_records IN EXCLUSIVE MODE")
        .unwrap();
    let writers: Vec<_> = (0..24)
        .map(|number| {
            let url = cluster.url(&format!("/group/{number}"));
            std::thread::spawn(move || request("PUT", &url, Some(&value(1000, number))).status)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    transaction.commit().unwrap();
    for writer in writers {
        assert_eq!(writer.join().unwrap(), 201);
    }
    for number in 0..24 {
        let path = format!("/group/{number}");
        assert_eq!(read_through(&second.url(&path)), Some(value(1000, number)), "{path}");
    }
    // Deletes committed in groups notify the other master, whose cached
    // records go within the coherence bound.
    let deleters: Vec<_> = (0..24)
        .map(|number| {
            let url = cluster.url(&format!("/group/{number}"));
            std::thread::spawn(move || request("DELETE", &url, None).status)
        })
        .collect();
    for deleter in deleters {
        assert_eq!(deleter.join().unwrap(), 204);
    }
    for number in 0..24 {
        let url = second.url(&format!("/group/{number}"));
        assert!(
            eventually(Duration::from_secs(15), || request("GET", &url, None).status == 404),
            "{url}"
        );
    }
}

/// A session on `database` acting as master `tester` (its lease live)
/// that holds, with token 7, the key leases `leases` names: each a lock id
/// and whether the lease is live (else expired a second ago).
fn tester(database: &Database, leases: &[(i64, bool)]) -> postgres::Client {
    let mut client = postgres::Client::connect(&database.url, postgres::NoTls).unwrap();
    client
        .batch_execute("INSERT INTO mkv_masters VALUES ('tester', now() + interval '1 minute')")
        .unwrap();
    for &(id, live) in leases {
        let expires = if live {
            "now() + interval '1 minute'"
        } else {
            "now() - interval '1 second'"
        };
        client
            .execute(
                &format!("INSERT INTO mkv_key_leases VALUES ($1, 'tester', 7, {expires})"),
                &[&id],
            )
            .unwrap();
    }
    client
}

/// The fence of a group commit (`mkv_apply_group`): a member whose key
/// lease is not the writer's any more is skipped whole, the others apply.
#[test]
fn a_group_commit_skips_only_the_member_whose_key_lease_was_lost() {
    let Some(database) = database("group_fence") else {
        return;
    };
    // A master makes the schema.
    let cluster = Cluster::start_over(Some(database.url.clone()), 3, &[]);
    let mut client = tester(&database, &[(1001, true), (1002, false), (1003, true)]);
    let keys: Vec<&[u8]> = vec![b"/fence/held", b"/fence/expired", b"/fence/stolen", b"/fence/held-too"];
    let values: Vec<&[u8]> = vec![b"a", b"b", b"c", b"d"];
    let lost: Vec<i32> = client
        .query_one(
            "SELECT mkv_apply_group($1, $2, $3, $4, $5, $6, $7, $8, $9, 'tester', 6000)",
            &[
                &vec!["state"; 4],
                &keys,
                &values,
                &vec![0i32, 1, 2, 3],
                // Member 2 names lease 1003 with another token (another
                // holding); member 3 holds 1001 too (a second key).
                &vec![1001i64, 1002, 1003, 1001],
                &vec![7i64, 7, 8, 7],
                &vec![0i32, 1, 2, 3],
                &vec!["tester:*"; 4],
                &vec![0i32, 1, 2, 3],
            ],
        )
        .unwrap()
        .get(0);
    assert_eq!(lost, vec![1, 2]);
    let written: Vec<Vec<u8>> = client
        .query("SELECT key FROM mkv_state WHERE key LIKE '/fence/%' ORDER BY key", &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(written, vec![b"/fence/held".to_vec(), b"/fence/held-too".to_vec()]);
    drop(cluster);
}

/// Count calls of PL/pgSQL functions in `database`'s sessions from now on
/// (`function_calls`).
fn track_functions(database: &Database) {
    let mut admin = postgres::Client::connect(&database.admin, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("ALTER DATABASE {} SET track_functions = 'pl'", database.name))
        .unwrap();
}

/// Calls of PL/pgSQL function `name` in `database` that its backends have
/// reported (`track_functions`; backends report when idle, within about a
/// second).
fn function_calls(database: &Database, name: &str) -> i64 {
    let mut client = postgres::Client::connect(&database.url, postgres::NoTls).unwrap();
    client
        .query_opt("SELECT calls FROM pg_stat_user_functions WHERE funcname = $1", &[&name])
        .unwrap()
        .map_or(0, |row| row.get(0))
}

/// A write's last commit ends its key's lease (`mkv_commit_group` removes
/// the row): the guard let go after it costs no unlock round trip, which
/// held the reactor for up to 50 ms per write, and the key is free for
/// another master the moment the write is acknowledged.
#[test]
fn a_write_ends_its_key_lease_in_its_commit_with_no_unlock_after() {
    let Some(database) = database("release_in_commit") else {
        return;
    };
    track_functions(&database);
    let cluster = Cluster::start_over(Some(database.url.clone()), 3, &[]);
    let second = Second::start(&cluster);
    let s3 = [("x-amz-content-sha256", "UNSIGNED-PAYLOAD")];
    for number in 0..5 {
        let path = format!("/released/{number}");
        assert_eq!(
            request("PUT", &cluster.url(&path), Some(&value(1000, number))).status,
            201
        );
        // Free on the other master as soon as the first answered.
        assert_eq!(request("DELETE", &second.url(&path), None).status, 204);
        let object = cluster.url(&format!("/bkt/released-{number}"));
        for version in 0..2 {
            let body = value(1000, 10 * number + version);
            assert_eq!(
                crate::cluster::request_full("PUT", &object, &s3, Some(&body)).status,
                200
            );
        }
    }
    let mut client = postgres::Client::connect(&database.url, postgres::NoTls).unwrap();
    let leases: i64 = client
        .query_one("SELECT count(*) FROM mkv_key_leases", &[])
        .unwrap()
        .get(0);
    assert_eq!(leases, 0, "every write's lease ended with it");
    // 5 PUTs, 5 DELETEs, 10 S3 PUTs took key leases; wait until the
    // backends reported them, then count the unlocks.
    assert!(
        eventually(Duration::from_secs(15), || function_calls(&database, "mkv_lock") >= 20),
        "the lock calls were reported"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        function_calls(&database, "mkv_unlock"),
        0,
        "no write needed an unlock after its commit"
    );
}

/// Key lease rows left expired (a master that died, or lost the database
/// mid-write) are removed by the serving masters, not kept forever.
#[test]
fn expired_key_leases_are_removed() {
    let Some(database) = database("expired_leases") else {
        return;
    };
    let cluster = Cluster::start_over(Some(database.url.clone()), 3, &[]);
    let mut client = postgres::Client::connect(&database.url, postgres::NoTls).unwrap();
    client
        .batch_execute(
            "INSERT INTO mkv_key_leases VALUES (3001, 'gone', 1, now() - interval '1 minute');
             INSERT INTO mkv_key_leases VALUES (3002, 'gone', 1, now() + interval '1 minute');",
        )
        .unwrap();
    let left = |client: &mut postgres::Client| -> Vec<i64> {
        client
            .query("SELECT lock_id FROM mkv_key_leases ORDER BY lock_id", &[])
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(20), || left(&mut client) == vec![3002]),
        "the expired lease is removed, the live one kept: {:?}",
        left(&mut client)
    );
    drop(cluster);
}

/// `mkv_commit_group`'s releases: a member's lease marked for release goes
/// with its commit; a skipped member's stays, as does one not marked.
#[test]
fn a_group_commit_removes_the_leases_of_members_that_release_them_and_apply() {
    let Some(database) = database("group_release") else {
        return;
    };
    let cluster = Cluster::start_over(Some(database.url.clone()), 3, &[]);
    let mut client = tester(&database, &[(2001, true), (2002, false), (2003, true), (2004, true)]);
    let keys: Vec<&[u8]> = vec![b"/release/a", b"/release/b", b"/release/c", b"/release/d"];
    let values: Vec<&[u8]> = vec![b"a", b"b", b"c", b"d"];
    let lost: Vec<i32> = client
        .query_one(
            "SELECT mkv_commit_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'tester', 6000)",
            &[
                &vec!["state"; 4],
                &keys,
                &values,
                &vec![0i32, 1, 2, 3],
                // Member 1's lease expired; member 2 names 2003 with another
                // token; member 3 keeps its lease.
                &vec![2001i64, 2002, 2003, 2004],
                &vec![7i64, 7, 8, 7],
                &vec![0i32, 1, 2, 3],
                &vec![true, true, true, false],
                &vec!["tester:*"; 4],
                &vec![0i32, 1, 2, 3],
            ],
        )
        .unwrap()
        .get(0);
    assert_eq!(lost, vec![1, 2]);
    let leases: Vec<i64> = client
        .query("SELECT lock_id FROM mkv_key_leases ORDER BY lock_id", &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(leases, vec![2002, 2003, 2004]);
    drop(cluster);
}

/// A native PUT of a new key takes its lock, reads its record and journal
/// entry and puts in its `DELETED` record in one call (`mkv_lock_reserve`),
/// then commits once (`mkv_commit_group`, which also ends the lease): two
/// round trips to the index where there were five.
#[test]
fn a_new_keys_put_takes_its_lock_its_record_and_its_reservation_in_one_call() {
    let Some(database) = database("lock_reserve") else {
        return;
    };
    track_functions(&database);
    let cluster = Cluster::start_over(Some(database.url.clone()), 3, &[]);
    for number in 0..5 {
        let path = format!("/reserved/{number}");
        assert_eq!(
            request("PUT", &cluster.url(&path), Some(&value(1000, number))).status,
            201
        );
        assert_eq!(read_through(&cluster.url(&path)), Some(value(1000, number)));
    }
    assert!(
        eventually(Duration::from_secs(15), || function_calls(
            &database,
            "mkv_lock_reserve"
        ) >= 5),
        "the lock calls were reported"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(function_calls(&database, "mkv_lock_reserve"), 5);
    assert_eq!(function_calls(&database, "mkv_commit_group"), 5, "one commit a PUT");
    // A PUT cut short leaves its reserved record soft-deleted, as before;
    // the next PUT of the key finds it and writes over it.
    let mut cut = TcpStream::connect(("127.0.0.1", cluster.port())).unwrap();
    cut.write_all(b"PUT /reserved/cut HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part")
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            request("GET", &cluster.url("/?unlinked"), None).body == br#"{"next":"","keys":["/reserved/cut"]}"#
        }),
        "the cut PUT's record is in"
    );
    drop(cut);
    assert!(eventually(Duration::from_secs(10), || {
        request("PUT", &cluster.url("/reserved/cut"), Some(b"whole")).status == 201
    }));
    assert_eq!(read_through(&cluster.url("/reserved/cut")), Some(b"whole".to_vec()));
}

/// Found by review: a write whose key's lease lapsed while its last bytes
/// waited in the master's socket (the volume, or the network to it,
/// stalled) kept its connection open, so the kernel delivered them when
/// the volume woke: the value landed on it after another master could
/// have taken the key and written it. Now a fenced write watches its
/// lease while its bytes are on their way and resets every upload once
/// the lease can no longer be proven, which drops what the socket had not
/// sent.
#[test]
fn a_write_that_can_no_longer_prove_its_lease_resets_its_uploads_before_their_last_bytes_arrive() {
    let Some(database) = database("lease_reset") else {
        return;
    };
    let cluster = Cluster::start_over(Some(database.url.clone()), 3, &["--threads", "1"]);
    // In place of the third volume, one that takes the connection and reads nothing until
    // told: its receive buffer is small, so the body waits in the master's
    // socket.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let small: libc::c_int = 4096;
    // SAFETY: the listener's descriptor is open; setsockopt reads one int.
    let set = unsafe {
        use std::os::fd::AsRawFd;
        libc::setsockopt(
            stalled.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const small).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0);
    let stalled_port = stalled.local_addr().unwrap().port();
    let (resume, resumed) = std::sync::mpsc::channel::<()>();
    let volume = std::thread::spawn(move || {
        // Health probes (`HEAD /`) are answered; the first PUT is held.
        let mut upload = loop {
            let (mut stream, _) = stalled.accept().unwrap();
            let mut start = [0u8; 4];
            stream.peek(&mut start).unwrap();
            if &start == b"PUT " {
                break stream;
            }
            let _ = stream.read(&mut [0u8; 1024]);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        };
        resumed.recv().unwrap();
        upload.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (mut received, mut buffer) = (0usize, vec![0u8; 65536]);
        while let Ok(read) = upload.read(&mut buffer) {
            if read == 0 {
                break;
            }
            received += read;
        }
        received
    });
    let port = free_port();
    let mut args = cluster.master_args(port);
    let volumes = args.iter().position(|arg| arg == "-volumes").unwrap() + 1;
    let (two, _) = args[volumes].rsplit_once(',').unwrap();
    args[volumes] = format!("{two},127.0.0.1:{stalled_port}");
    let mut master = mkv()
        .args(&args)
        .arg("server")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(cluster.dir.path().join("stalled-master.log")).unwrap())
        .spawn()
        .unwrap();
    wait_for_port(port);
    // One piece: the whole body goes out with the head, into the socket.
    let body = value(1 << 20, 21);
    let url = format!("http://127.0.0.1:{port}/stalled");
    let put = std::thread::spawn(move || request("PUT", &url, Some(&body)).status);
    std::thread::sleep(Duration::from_secs(1));
    // The master's key lease can no longer be renewed.
    let mut holder = postgres::Client::connect(&database.url, postgres::NoTls).unwrap();
    let mut transaction = holder.transaction().unwrap();
    transaction
        .batch_execute("LOCK TABLE mkv_key_leases IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    // Past the point where the lease is no longer proven (3 s left of its
    // 6 s), the volume wakes.
    std::thread::sleep(Duration::from_secs(6));
    resume.send(()).unwrap();
    let received = volume.join().unwrap();
    transaction.rollback().unwrap();
    let status = put.join().unwrap();
    master.kill().unwrap();
    master.wait().unwrap();
    eprintln!(
        "{}",
        std::fs::read_to_string(cluster.dir.path().join("stalled-master.log")).unwrap_or_default()
    );
    assert!(
        received < 1 << 20,
        "the volume received the whole body ({received} bytes) after the writer's lease could no longer be proven"
    );
    assert_ne!(status, 201);
}
