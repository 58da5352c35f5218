//! S3 overwrites cut short in their commit: the master killed after the
//! new value's last bytes went out, a volume that dies once the others
//! stored the new value. Nginx stores a PUT whole or not at all, so every
//! copy holds the old value or the new one; the key must come back with
//! one of them (with that value's ETag), never answer 404.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::cluster::{eventually, fetch, free_port, md5_hex, request_full, value, Cluster, Reply, Volume};

const S3: (&str, &str) = ("x-amz-content-sha256", "UNSIGNED-PAYLOAD");

fn s3_put(url: &str, body: &[u8]) -> Reply {
    request_full("PUT", url, &[S3], Some(body))
}

/// An S3 PUT whose master may die under it: the answer's status line, if
/// any came.
fn s3_put_raw(port: u16, path: &str, body: &[u8]) -> String {
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut answer = Vec::new();
    if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body));
        let _ = stream.read_to_end(&mut answer);
    }
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Status, bytes and ETag of an S3 GET.
fn s3_get(url: &str) -> (u16, Vec<u8>, String) {
    let reply = request_full("GET", url, &[S3], None);
    let etag = reply.header("etag").unwrap_or_default().trim_matches('"').to_owned();
    (reply.status, reply.body, etag)
}

/// Every S3 read (each from a random replica) and the native redirect
/// give `expected`, under its own ETag.
fn reads_agree(cluster: &Cluster, path: &str, expected: &[u8]) {
    let url = cluster.url(path);
    for _ in 0..12 {
        let (status, body, etag) = s3_get(&url);
        assert_eq!(status, 200, "{path}");
        assert!(body == expected, "{path}: the bytes of the value");
        assert_eq!(etag, md5_hex(expected), "{path}: that value's ETag");
    }
    assert!(fetch(&url).body == expected, "{path}: the native read agrees");
}

/// The master is killed while one volume holds up the last bytes of an
/// overwrite (the other two stored the new value): once it starts again,
/// the key is readable, with the new value on every copy its record names.
/// Two keys: old and new of one size (only the bytes tell them apart) and
/// of different sizes.
#[test]
fn an_overwrite_cut_short_in_its_commit_is_finished_when_the_master_starts_again() {
    let mut cluster = Cluster::start(3, &[]);
    assert_eq!(s3_put(&cluster.url("/bkt"), b"").status, 200);
    let cases = [
        ("/bkt/same", value(200_000, 1), value(200_000, 2)),
        ("/bkt/other", value(150_000, 3), value(250_000, 4)),
    ];
    for (path, old, _) in &cases {
        assert_eq!(s3_put(&cluster.url(path), old).status, 200);
    }
    cluster.volumes[0].signal(libc::SIGSTOP);
    let writers: Vec<_> = cases
        .iter()
        .map(|(path, _, new)| {
            let (port, path, new) = (cluster.port(), path.to_string(), new.clone());
            std::thread::spawn(move || s3_put_raw(port, &path, &new))
        })
        .collect();
    // Both overwrites are in their commit: one piece each, sent to every
    // volume, stored by two, held up by the stopped one.
    std::thread::sleep(Duration::from_millis(1500));
    cluster.kill_master();
    for writer in writers {
        writer.join().unwrap();
    }
    cluster.volumes[0].signal(libc::SIGCONT);
    cluster.master = None;
    cluster.start_master();
    for (path, _, new) in &cases {
        let url = cluster.url(path);
        // Settled once bytes the dead master sent can no longer land
        // (30 s after its gate): a read waits for it.
        assert!(
            eventually(Duration::from_secs(60), || s3_get(&url).0 == 200),
            "{path} answers again: {}",
            cluster.master_log()
        );
        reads_agree(&cluster, path, new);
    }
}

/// A volume dies once the other two stored an overwrite's new value (its
/// own upload's outcome unknown): the old value is gone from the two, so
/// the write is finished on them rather than undone into nothing. The PUT
/// still answers an error (its value is on fewer replicas than asked).
#[test]
fn an_overwrite_whose_volume_dies_in_the_commit_keeps_the_new_value() {
    let mut cluster = Cluster::start(3, &[]);
    assert_eq!(s3_put(&cluster.url("/bkt"), b"").status, 200);
    let (old, new) = (value(200_000, 5), value(200_000, 6));
    assert_eq!(s3_put(&cluster.url("/bkt/k"), &old).status, 200);
    cluster.volumes[2].signal(libc::SIGSTOP);
    let writer = {
        let (url, new) = (cluster.url("/bkt/k"), new.clone());
        std::thread::spawn(move || s3_put(&url, &new).status)
    };
    std::thread::sleep(Duration::from_millis(1500));
    cluster.volumes[2].signal(libc::SIGKILL);
    let status = writer.join().unwrap();
    assert!(status >= 500, "the overwrite did not reach every replica: {status}");
    reads_agree(&cluster, "/bkt/k", &new);
    // The dead volume comes back: nothing changes for readers.
    cluster.volumes[2].restart();
    reads_agree(&cluster, "/bkt/k", &new);
}

/// Found by review: an overwrite of a value written before placement
/// moved (the old copies on other volumes than the new bytes go to) kept
/// neither the old md5 nor the old copies in its journal, and an offline
/// `mkv rebalance` moved the gate record, so that the entry no longer
/// matched: the keys answered 404 or 503 for good. Here every volume is
/// frozen during the overwrites, the master killed, the volumes killed (so
/// no new byte lands anywhere), a rebalance run, and the master started:
/// every key serves its old value under its old ETag.
#[test]
fn an_overwrite_cut_short_after_placement_moved_keeps_the_old_value_through_a_rebalance() {
    let mut cluster = Cluster::start(1, &["-replicas", "1"]);
    assert_eq!(s3_put(&cluster.url("/bkt"), b"").status, 200);
    let old = value(120_000, 7);
    let keys: Vec<String> = (0..8).map(|n| format!("/bkt/m{n}")).collect();
    for key in &keys {
        assert_eq!(s3_put(&cluster.url(key), &old).status, 200);
    }
    // Placement moves: most keys belong on the new volumes now.
    for i in 1..4 {
        let dir = cluster.dir.path().join(format!("volume{i}"));
        cluster.volumes.push(Volume::start(dir, free_port()));
    }
    cluster.kill_master();
    cluster.master = None;
    cluster.start_master();
    for volume in &cluster.volumes {
        volume.signal(libc::SIGSTOP);
    }
    let new = value(180_000, 8);
    let writers: Vec<_> = keys
        .iter()
        .map(|key| {
            let (port, key, new) = (cluster.port(), key.clone(), new.clone());
            std::thread::spawn(move || s3_put_raw(port, &key, &new))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    cluster.kill_master();
    for writer in writers {
        writer.join().unwrap();
    }
    for volume in &mut cluster.volumes {
        volume.signal(libc::SIGKILL);
        volume.restart();
    }
    let rebalanced = cluster.run_command(&[], "rebalance");
    assert!(
        rebalanced.status.success(),
        "{}",
        String::from_utf8_lossy(&rebalanced.stderr)
    );
    cluster.master = None;
    cluster.start_master();
    for key in &keys {
        let url = cluster.url(key);
        assert!(
            eventually(Duration::from_secs(60), || s3_get(&url).0 == 200),
            "{key} answers again: {}",
            cluster.master_log()
        );
        reads_agree(&cluster, key, &old);
    }
}

/// A native GET of a key while an S3 overwrite of it is in its commit on
/// the same master (its record `DELETED` for that moment: one volume holds
/// up the new value's last bytes) waits for the commit and redirects to a
/// value, rather than answer 404 for a key that has one.
#[test]
fn a_native_read_during_an_overwrites_commit_waits_for_it_rather_than_answer_404() {
    native_read_during_an_overwrites_commit(&[]);
}

/// The same with `--verify-get` (a GET that HEADs a replica before it
/// redirects: its own read of the record).
#[test]
fn a_verified_native_read_during_an_overwrites_commit_waits_for_it_too() {
    native_read_during_an_overwrites_commit(&["--verify-get"]);
}

fn native_read_during_an_overwrites_commit(flags: &[&str]) {
    let cluster = Cluster::start(3, flags);
    assert_eq!(s3_put(&cluster.url("/bkt"), b"").status, 200);
    let (old, new) = (value(200_000, 7), value(200_000, 8));
    assert_eq!(s3_put(&cluster.url("/bkt/k"), &old).status, 200);
    cluster.volumes[1].signal(libc::SIGSTOP);
    let writer = {
        let (url, new) = (cluster.url("/bkt/k"), new.clone());
        std::thread::spawn(move || s3_put(&url, &new).status)
    };
    // In its commit: the last piece sent, held up by the stopped volume.
    std::thread::sleep(Duration::from_millis(1500));
    let reader = {
        let url = cluster.url("/bkt/k");
        std::thread::spawn(move || crate::cluster::request("GET", &url, None))
    };
    std::thread::sleep(Duration::from_millis(500));
    cluster.volumes[1].signal(libc::SIGCONT);
    let read = reader.join().unwrap();
    assert_eq!(read.status, 302, "the native read waited for the commit");
    let fetched = fetch(read.header("location").unwrap());
    assert!(fetched.body == new || fetched.body == old, "a whole value");
    assert_eq!(writer.join().unwrap(), 200);
    reads_agree(&cluster, "/bkt/k", &new);
}
