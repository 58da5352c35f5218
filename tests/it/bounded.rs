//! Work a request may do is bounded: a listing that skips millions of
//! records neither stalls the other connections of its reactor nor visits
//! more than `LIST_VISITS_MAX` records (it says where to resume instead),
//! and `rebuild` refuses to empty the index while a volume does not answer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mkv::listing::LIST_VISITS_MAX;

use crate::cluster::{fetch, request, Cluster};

/// A cluster whose index also holds `count` live keys `/live/<i>`, written
/// straight into the index (no values on the volumes: listings and GETs
/// do not touch the volumes).
fn seeded_cluster(count: u64) -> Cluster {
    let mut cluster = Cluster::start(3, &[]);
    cluster.kill_master();
    let seeded = cluster.run_command(&["--count", &count.to_string(), "--prefix", "/live/"], "seed");
    assert!(seeded.status.success());
    cluster.start_master();
    cluster
}

/// A GET on a new connection, timed from connect to the end of the answer's
/// head (a 302 has no body).
fn timed_get(port: u16, key: &str) -> Duration {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(stream, "GET {key} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).unwrap();
        assert!(
            read > 0,
            "closed before answering: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buffer[..read]);
    }
    let elapsed = started.elapsed();
    assert!(
        answer.starts_with(b"HTTP/1.1 302"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    elapsed
}

/// Longest a GET may wait while listings run on its reactor: far less than
/// one listing of a million records takes, far more than scheduling noise.
const GET_WAIT_MAX: Duration = Duration::from_millis(200);

#[test]
fn gets_are_answered_while_listings_skip_a_million_records() {
    let cluster = seeded_cluster(1_000_000);
    let port = cluster.port();
    let running = Arc::new(AtomicBool::new(true));
    // Listings on new connections, several at once, so both reactors
    // (`--threads 2`) keep having some to work on.
    let listers: Vec<_> = (0..8)
        .map(|_| {
            let running = running.clone();
            let url = cluster.url("/?unlinked");
            std::thread::spawn(move || {
                let mut durations = Vec::new();
                while running.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let reply = request("GET", &url, None);
                    durations.push(started.elapsed());
                    assert_eq!(reply.status, 200);
                    assert_eq!(reply.body, br#"{"next":"","keys":[]}"#);
                }
                durations
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let waits: Vec<Duration> = (0..40)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(20));
            timed_get(port, &format!("/live/{}", i * 997))
        })
        .collect();
    running.store(false, Ordering::Relaxed);
    let listings: Vec<Duration> = listers.into_iter().flat_map(|lister| lister.join().unwrap()).collect();
    // Scheduling on a busy machine may delay a few; a blocked reactor
    // delays most.
    let slow = waits.iter().filter(|&&wait| wait > GET_WAIT_MAX).count();
    assert!(
        slow <= waits.len() / 10,
        "{slow} of {} GETs waited more than {GET_WAIT_MAX:?}: {waits:?}; listings took {listings:?}",
        waits.len()
    );
}

#[test]
fn listing_stops_after_its_visit_bound_and_resumes_from_next() {
    let cluster = seeded_cluster(LIST_VISITS_MAX + 1000);
    // Soft-deleted keys before and after the seeded ones.
    for key in ["/a-unlinked", "/z-unlinked"] {
        assert_eq!(request("PUT", &cluster.url(key), Some(b"v")).status, 201);
        assert_eq!(request("UNLINK", &cluster.url(key), None).status, 204);
    }
    for query in ["unlinked", "unlinked&limit=10"] {
        let mut pages = Vec::new();
        let mut next = String::new();
        loop {
            let start: String = next.bytes().map(|byte| format!("%{byte:02X}")).collect();
            let reply = request("GET", &cluster.url(&format!("/?{query}&start={start}")), None);
            assert_eq!(reply.status, 200);
            let page: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
            next = page["next"].as_str().unwrap().to_owned();
            pages.push(page["keys"].clone());
            assert!(pages.len() <= 3, "{pages:?}");
            if next.is_empty() {
                break;
            }
            assert!(next.starts_with("/live/"), "{next}");
        }
        assert_eq!(
            pages,
            [serde_json::json!(["/a-unlinked"]), serde_json::json!(["/z-unlinked"])],
            "{query}"
        );
    }
    // Every record wanted: more than a million keys without a limit is still
    // refused, and a page with a limit still ends at the next live key.
    assert_eq!(request("GET", &cluster.url("/?list"), None).status, 413);
    let page = request("GET", &cluster.url("/?list&limit=2"), None);
    assert_eq!(
        String::from_utf8(page.body).unwrap(),
        r#"{"next":"/live/10","keys":["/live/0","/live/1"]}"#
    );
}

#[test]
fn rebuild_refuses_to_start_while_a_volume_is_down() {
    let mut cluster = Cluster::start(3, &[]);
    let keys: Vec<String> = (0..30).map(|i| format!("/kept/{i}")).collect();
    for key in &keys {
        assert_eq!(request("PUT", &cluster.url(key), Some(key.as_bytes())).status, 201);
    }
    cluster.kill_master();
    cluster.volumes[1].stop();
    let output = cluster.run_command(&[], "rebuild");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains(&cluster.volumes[1].host()), "{stderr}");
    assert!(stderr.contains("index is untouched"), "{stderr}");

    // The index still holds every key, with all three volumes.
    cluster.volumes[1].restart();
    cluster.master = None;
    cluster.start_master();
    let listed: serde_json::Value =
        serde_json::from_slice(&request("GET", &cluster.url("/kept/?list"), None).body).unwrap();
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(listed["keys"], serde_json::json!(expected));
    for key in &keys {
        let reply = request("HEAD", &cluster.url(key), None);
        assert_eq!(
            reply.header("key-volumes").map(|volumes| volumes.split(',').count()),
            Some(3),
            "{key}"
        );
        assert_eq!(fetch(&cluster.url(key)).body, key.as_bytes(), "{key}");
    }
}
