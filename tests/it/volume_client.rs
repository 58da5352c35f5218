//! The master's side of the wire to the volumes: pooled connections that a
//! volume closed never fail a request, and `--verify-get` redirects only to
//! a replica it checked.

use std::path::Path;
use std::time::Duration;

use crate::cluster::{eventually, fetch, put_chunked, request, value, Cluster, Volume};

/// Client threads that fill the master's pools (each PUT holds a connection
/// to every replica while it runs, so concurrent PUTs leave several pooled
/// connections per volume on both reactors).
const FILL_THREADS: usize = 6;
/// PUTs per filling thread.
const FILL_PUTS_PER_THREAD: usize = 8;
/// Client threads writing after the volumes closed their connections.
const AFTER_THREADS: usize = 4;
/// PUTs per thread after the volumes closed their connections.
const AFTER_PUTS_PER_THREAD: usize = 12;
/// How long nginx may take to reload or come back.
const VOLUME_SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

/// PUT `count` keys from each of `threads` threads at once, small values:
/// every reactor ends up with idle connections to every volume.
fn fill_pools(cluster: &Cluster, round: &str) {
    std::thread::scope(|scope| {
        for thread in 0..FILL_THREADS {
            scope.spawn(move || {
                for i in 0..FILL_PUTS_PER_THREAD {
                    let key = format!("/fill-{round}-{thread}-{i}");
                    assert_eq!(request("PUT", &cluster.url(&key), Some(b"fill")).status, 201, "{key}");
                }
            });
        }
    });
}

/// The value the `i`th PUT after the fault writes, in the shapes the
/// client handles differently: small (sent with the head), one piece too
/// large to ride with the head, several pieces, and chunked.
fn after_value(thread: usize, i: usize) -> (Vec<u8>, bool) {
    let seed = (thread * 1000 + i) as u64;
    match i % 4 {
        0 => (value(100, seed), false),
        1 => (value(200_000, seed), false),
        2 => (value(2_500_000, seed), false),
        _ => (value(3_000, seed), true),
    }
}

/// Many PUTs of every shape at once: all must answer 201 and read back.
fn every_put_succeeds(cluster: &Cluster, round: &str) {
    std::thread::scope(|scope| {
        for thread in 0..AFTER_THREADS {
            scope.spawn(move || {
                for i in 0..AFTER_PUTS_PER_THREAD {
                    let key = format!("/after-{round}-{thread}-{i}");
                    let (body, chunked) = after_value(thread, i);
                    let reply = if chunked {
                        put_chunked(&cluster.url(&key), &body)
                    } else {
                        request("PUT", &cluster.url(&key), Some(&body))
                    };
                    assert_eq!(reply.status, 201, "{key}: {}", String::from_utf8_lossy(&reply.body));
                    assert!(fetch(&cluster.url(&key)).body == body, "{key} reads back");
                }
            });
        }
    });
    // Deletes after the fault reach every replica too.
    for i in 0..FILL_PUTS_PER_THREAD {
        let key = format!("/fill-{round}-0-{i}");
        assert_eq!(request("DELETE", &cluster.url(&key), None).status, 204, "{key}");
    }
}

/// The worker processes of the nginx whose master's pid is in `dir`.
fn nginx_workers(dir: &Path) -> Vec<u32> {
    let pid = std::fs::read_to_string(dir.join(".nginx/nginx.pid")).expect("nginx.pid");
    let pid = pid.trim();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .map(|child| child.parse().expect("a pid"))
        .collect()
}

/// `nginx -s reload`: new workers start, the old ones close their idle
/// keep-alive connections and exit. Returns once every old worker is gone.
fn reload(volume: &Volume) {
    let old = nginx_workers(&volume.dir);
    assert!(!old.is_empty(), "nginx has workers");
    let pid = std::fs::read_to_string(volume.dir.join(".nginx/nginx.pid")).unwrap();
    let pid: i32 = pid.trim().parse().unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0, "SIGHUP nginx");
    let replaced = eventually(VOLUME_SETTLE_TIMEOUT, || {
        let now = nginx_workers(&volume.dir);
        !now.is_empty() && old.iter().all(|worker| !now.contains(worker))
    });
    assert!(replaced, "nginx on {} replaced its workers", volume.host());
}

fn volumes_answer(cluster: &Cluster) {
    for volume in &cluster.volumes {
        let answers = eventually(VOLUME_SETTLE_TIMEOUT, || {
            let url = format!("http://{}/", volume.host());
            std::panic::catch_unwind(|| request("HEAD", &url, None).status).is_ok_and(|status| status < 500)
        });
        assert!(answers, "volume {} answers", volume.host());
    }
}

#[test]
fn puts_after_volumes_reload_never_fail_on_closed_pooled_connections() {
    let cluster = Cluster::start(3, &[]);
    for round in 0..2 {
        fill_pools(&cluster, &format!("r{round}"));
        for volume in &cluster.volumes {
            reload(volume);
        }
        volumes_answer(&cluster);
        every_put_succeeds(&cluster, &format!("r{round}"));
    }
}

#[test]
fn puts_after_volumes_restart_never_fail_on_closed_pooled_connections() {
    let mut cluster = Cluster::start(3, &[]);
    for round in 0..2 {
        fill_pools(&cluster, &format!("r{round}"));
        for volume in &mut cluster.volumes {
            volume.restart();
        }
        volumes_answer(&cluster);
        every_put_succeeds(&cluster, &format!("r{round}"));
    }
}

#[test]
fn verify_get_redirects_to_the_replica_that_has_the_file() {
    let cluster = Cluster::start(3, &["-replicas", "3", "--verify-get"]);
    let body = value(5_000, 7);
    assert_eq!(request("PUT", &cluster.url("/verified"), Some(&body)).status, 201);
    // Remove the file from two of the three replicas behind the master's back.
    for volume in 0..2 {
        let files = cluster.files_on(volume);
        assert_eq!(files.len(), 1, "volume {volume} holds the value");
        std::fs::remove_file(&files[0]).unwrap();
    }
    let survivor = cluster.volumes[2].host();
    for _ in 0..30 {
        let reply = request("GET", &cluster.url("/verified"), None);
        assert_eq!(reply.status, 302);
        let location = reply.header("location").unwrap().to_string();
        assert!(location.starts_with(&format!("http://{survivor}/")), "{location}");
        assert!(
            request("GET", &location, None).body == body,
            "{location} serves the value"
        );
    }
    assert!(fetch(&cluster.url("/verified")).body == body);
}
