//! Nothing lost: keys never share a file, a failed PUT leaves an unlinked
//! value as it was and no orphan behind, HTTP/1.0 keep-alive is confirmed,
//! and deletes, unlinks and unhashed or synced writes survive `kill -9`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::cluster::{eventually, fetch, md5_hex, request, value, Cluster};

/// PUT `body` with a `Content-Length` of `declared` on a raw socket, then
/// close it: a body cut short.
fn put_cut_short(port: u16, path: &str, declared: usize, body: &[u8]) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!("PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = stream.read_to_end(&mut answer);
}

/// `kill -9` the master and start it again on a new port (the old one may
/// be held by a closing connection).
fn restart_master(cluster: &mut Cluster) {
    cluster.kill_master();
    cluster.master = None;
    cluster.start_master();
}

/// Let a volume finish anything still in flight before the files are counted.
fn settle() {
    std::thread::sleep(Duration::from_millis(500));
}

#[test]
fn keys_whose_file_names_would_merge_are_refused() {
    let cluster = Cluster::start(3, &["-subvolumes", "1"]);
    // "a?x45336" is base64 "YT94NDUzMzY="; the second key's is
    // "YT////94NDUzMzY=", which nginx and the filesystem merge to "YT/94...".
    let victim = cluster.url("/a%3Fx45336");
    assert_eq!(request("PUT", &victim, Some(b"victim")).status, 201);
    let evil = cluster.url("/a%3F%FF%FF%FFx45336");
    let refused = request("PUT", &evil, Some(b"evil"));
    assert_eq!(refused.status, 400);
    assert!(String::from_utf8_lossy(&refused.body).contains("'/'"), "{refused:?}");
    assert_eq!(request("GET", &evil, None).status, 404);
    assert_eq!(request("DELETE", &evil, None).status, 404);
    let read = fetch(&victim);
    assert_eq!(read.body, b"victim");
    // A trailing "/" ("/a?" is "L2E/": a directory name) and a run in
    // another spot ("/\xff\xff\xffab" is "L////2Fi"), chunked too.
    // Keys from a path start with "/", so a leading "/" cannot occur here.
    for path in ["/a%3F", "/%FF%FF%FFab"] {
        assert_eq!(request("PUT", &cluster.url(path), Some(b"x")).status, 400, "{path}");
        assert_eq!(
            crate::cluster::put_chunked(&cluster.url(path), b"x").status,
            400,
            "{path}"
        );
        assert_eq!(request("GET", &cluster.url(path), None).status, 404, "{path}");
    }
    // The victim's name holds one "/" ("L2E/eDQ1MzM2"): a directory of its
    // own, written and read as usual, and the only key listed.
    let listed = request("GET", &cluster.url("/?list"), None);
    assert_eq!(listed.body, b"{\"next\":\"\",\"keys\":[\"/a?x45336\"]}");
    assert_eq!(
        cluster.files_on(0).len() + cluster.files_on(1).len() + cluster.files_on(2).len(),
        3
    );
}

#[test]
fn failed_put_over_an_unlinked_key_keeps_it_relinkable() {
    let cluster = Cluster::start(3, &["-replicas", "3"]);
    let small = value(1000, 1);
    let large = value(3 * 1024 * 1024 + 17, 2);
    for (name, original) in [("small", &small), ("large", &large)] {
        let path = format!("/unlinked-{name}");
        let url = cluster.url(&path);
        assert_eq!(request("PUT", &url, Some(original)).status, 201);
        let md5 = request("GET", &url, None).header("content-md5").unwrap().to_string();
        assert_eq!(md5, md5_hex(original));
        assert_eq!(request("UNLINK", &url, None).status, 204);
        // Cut short inside the first piece, and after two pieces went out.
        put_cut_short(cluster.port(), &path, 5000, &value(100, 3));
        put_cut_short(cluster.port(), &path, 4 << 20, &value(2 << 20, 4));
        // A malformed chunked body and an empty one fail too.
        let text = crate::cluster::raw(
            cluster.port(),
            format!("PUT {path} HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\nzz\r\n")
                .as_bytes(),
            Duration::from_secs(5),
        );
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert_eq!(crate::cluster::put_chunked(&url, b"").status, 411);
        assert_eq!(request("GET", &url, None).status, 404, "still unlinked");
        assert_eq!(request("RELINK", &url, None).status, 204, "{name}");
        assert_eq!(fetch(&url).body, *original, "{name}");
        assert_eq!(request("GET", &url, None).header("content-md5"), Some(md5.as_str()));
    }
}

/// A PUT over an unlinked key that some replicas took before another
/// failed: the old value survives on the replicas the new bytes never
/// reached, and the key stays relinkable to it from them.
#[test]
fn failed_put_that_reached_some_replicas_keeps_the_unlinked_value_on_the_others() {
    let mut cluster = Cluster::start(3, &["-replicas", "3"]);
    let original = value(1000, 6);
    let url = cluster.url("/partly");
    assert_eq!(request("PUT", &url, Some(&original)).status, 201);
    assert_eq!(request("UNLINK", &url, None).status, 204);
    // One replica is down: the other two take the new value whole (one
    // piece), then the PUT fails. A fresh master holds no pooled connection
    // to the stopped volume, so its upload is refused outright (not taken);
    // over a pooled connection the volume closed, the upload's fate would
    // be unknown and the old record could not be trusted to survive there.
    cluster.volumes[2].stop();
    cluster.kill_master();
    cluster.master = None;
    cluster.start_master();
    let url = cluster.url("/partly");
    assert_eq!(request("PUT", &url, Some(&value(2000, 7))).status, 500);
    cluster.volumes[2].restart();
    assert_eq!(request("GET", &url, None).status, 404, "still unlinked");
    assert!(
        crate::cluster::eventually(Duration::from_secs(10), || request("RELINK", &url, None).status == 204),
        "relinkable from the replica that kept the old value: {}",
        cluster.master_log()
    );
    assert!(
        crate::cluster::eventually(Duration::from_secs(10), || fetch(&url).body == original),
        "the old value"
    );
}

#[test]
fn failed_put_leaves_no_file_on_any_volume() {
    let mut cluster = Cluster::start(3, &["-replicas", "3"]);
    cluster.volumes[2].stop();
    // Whole values in one piece: the two live volumes get complete bodies
    // while the third refuses the connection.
    let body = value(1024 * 1024, 5);
    for i in 0..20 {
        let reply = request("PUT", &cluster.url(&format!("/orphan/{i}")), Some(&body));
        assert_eq!(reply.status, 500, "{reply:?}");
    }
    settle();
    for volume in 0..2 {
        assert_eq!(
            cluster.files_on(volume),
            Vec::<std::path::PathBuf>::new(),
            "volume {volume}"
        );
    }
    // The records stay unlinked until the third volume is back to confirm
    // the cleanup; then a DELETE finishes each.
    cluster.volumes[2].restart();
    for i in 0..20 {
        assert_eq!(
            request("DELETE", &cluster.url(&format!("/orphan/{i}")), None).status,
            204
        );
    }
}

#[test]
fn http10_keep_alive_answers_say_so() {
    let cluster = Cluster::start(3, &[]);
    assert_eq!(request("PUT", &cluster.url("/ten"), Some(b"v")).status, 201);
    let mut stream = TcpStream::connect(("127.0.0.1", cluster.port())).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for (request_line, status) in [
        ("GET /ten HTTP/1.0", "302"),
        ("HEAD /missing HTTP/1.0", "404"),
        ("DELETE /ten?bad HTTP/1.0", "403"),
        ("GET /?list HTTP/1.0", "200"),
    ] {
        let text = format!("{request_line}\r\nConnection: keep-alive\r\n\r\n");
        stream.write_all(text.as_bytes()).unwrap();
        let mut buffer = [0u8; 4096];
        let read = stream.read(&mut buffer).expect("an answer before any EOF");
        let answer = String::from_utf8_lossy(&buffer[..read]);
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{answer}");
        assert!(answer.contains("\r\nConnection: keep-alive\r\n"), "{answer}");
    }
    // Without the header an HTTP/1.0 connection closes after its answer.
    stream.write_all(b"GET /ten HTTP/1.0\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(String::from_utf8_lossy(&rest).contains("Connection: close"));
}

#[test]
fn deletes_and_unlinks_survive_kill_9() {
    let mut cluster = Cluster::start(3, &[]);
    let deleted = cluster.url("/gone");
    let unlinked = cluster.url("/hidden");
    assert_eq!(request("PUT", &deleted, Some(b"gone")).status, 201);
    assert_eq!(request("PUT", &unlinked, Some(b"hidden")).status, 201);
    assert_eq!(request("DELETE", &deleted, None).status, 204);
    assert_eq!(request("UNLINK", &unlinked, None).status, 204);
    restart_master(&mut cluster);
    let (deleted, unlinked) = (cluster.url("/gone"), cluster.url("/hidden"));
    assert_eq!(request("GET", &deleted, None).status, 404);
    assert_eq!(request("GET", &unlinked, None).status, 404);
    assert_eq!(request("RELINK", &deleted, None).status, 404);
    assert_eq!(request("RELINK", &unlinked, None).status, 204);
    assert_eq!(fetch(&unlinked).body, b"hidden");
    let files: usize = (0..3).map(|volume| cluster.files_on(volume).len()).sum();
    assert_eq!(files, 3, "only /hidden's three copies are left");
}

#[test]
fn unhashed_and_synced_writes_survive_kill_9() {
    for flags in [&["-md5sum=false"][..], &["--sync"][..]] {
        let mut cluster = Cluster::start(3, flags);
        let url = cluster.url("/durable");
        let body = value(300_000, 6);
        assert_eq!(request("PUT", &url, Some(&body)).status, 201);
        let before = fetch(&url);
        assert_eq!(before.body, body);
        restart_master(&mut cluster);
        let redirect = request("GET", &cluster.url("/durable"), None);
        assert_eq!(redirect.status, 302, "{flags:?}");
        let hashed = redirect.header("content-md5").map(str::to_owned);
        if flags[0] == "-md5sum=false" {
            assert_eq!(hashed, None);
        } else {
            assert_eq!(hashed, Some(md5_hex(&body)));
        }
        assert_eq!(fetch(&cluster.url("/durable")).body, body, "{flags:?}");
    }
}

#[test]
fn concurrent_writes_of_the_same_keys_stay_consistent() {
    let cluster = Cluster::start(3, &[]);
    let base = cluster.url("");
    let keys = 4;
    std::thread::scope(|scope| {
        for worker in 0..8u64 {
            let base = &base;
            scope.spawn(move || {
                for round in 0..40u64 {
                    let key = format!("{base}/contended/{}", (worker + round) % keys);
                    let body = format!("{worker}:{round}:").repeat(50);
                    let put = request("PUT", &key, Some(body.as_bytes())).status;
                    assert!([201, 403, 409].contains(&put), "PUT {put}");
                    let get = request("GET", &key, None).status;
                    assert!([302, 404].contains(&get), "GET {get}");
                    if round % 3 == 0 {
                        let delete = request("DELETE", &key, None).status;
                        assert!([204, 404, 409].contains(&delete), "DELETE {delete}");
                    }
                }
            });
        }
    });
    for key in 0..keys {
        let url = cluster.url(&format!("/contended/{key}"));
        let redirect = request("GET", &url, None);
        if redirect.status == 404 {
            continue;
        }
        assert_eq!(redirect.status, 302);
        let body = fetch(&url).body;
        let text = String::from_utf8(body.clone()).unwrap();
        let unit = &text[..text.find(':').unwrap() + 1 + text[text.find(':').unwrap() + 1..].find(':').unwrap() + 1];
        assert_eq!(text, unit.repeat(50), "one whole value, not a mix");
        assert_eq!(redirect.header("content-md5"), Some(md5_hex(&body).as_str()));
    }
    // Every file on a volume belongs to a live key.
    settle();
    assert!(eventually(Duration::from_secs(5), || {
        let live = (0..keys)
            .filter(|key| request("GET", &cluster.url(&format!("/contended/{key}")), None).status == 302)
            .count();
        (0..3).map(|volume| cluster.files_on(volume).len()).sum::<usize>() == live * 3
    }));
}

#[test]
fn relink_refuses_copies_that_disagree() {
    // What a failed PUT over an unlinked key leaves when its cleanup cannot
    // reach a volume: one replica with the new bytes, the others with the
    // old. RELINK must not make that live, with or without a recorded md5.
    for flags in [&[][..], &["-md5sum=false"][..]] {
        let cluster = Cluster::start(3, flags);
        let url = cluster.url("/mixed");
        assert_eq!(request("PUT", &url, Some(b"old value")).status, 201);
        assert_eq!(request("UNLINK", &url, None).status, 204);
        let copy = cluster.files_on(0).pop().expect("a copy on volume 0");
        std::fs::write(&copy, b"the new value").unwrap();
        assert_eq!(request("RELINK", &url, None).status, 404, "{flags:?}");
        // Put back, the copies agree again and RELINK works.
        std::fs::write(&copy, b"old value").unwrap();
        assert_eq!(request("RELINK", &url, None).status, 204, "{flags:?}");
        assert_eq!(fetch(&url).body, b"old value");
    }
}
