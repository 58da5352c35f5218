//! The native API, row by row of SPEC.md.

use crate::cluster::{fetch, md5_hex, put_chunked, request, request_with, value, Cluster};

#[test]
fn put_get_head_delete_round_trip() {
    let cluster = Cluster::start(3, &[]);
    let body = value(100_000, 1);
    assert_eq!(request("PUT", &cluster.url("/wehave"), Some(&body)).status, 201);

    for method in ["GET", "HEAD"] {
        let reply = request(method, &cluster.url("/wehave"), None);
        assert_eq!(reply.status, 302, "{method}");
        assert_eq!(reply.header("content-length"), Some("0"));
        assert_eq!(reply.header("content-md5"), Some(md5_hex(&body).as_str()));
        assert_eq!(reply.header("key-balance"), Some("balanced"));
        let volumes = reply.header("key-volumes").unwrap();
        assert_eq!(volumes.split(',').count(), 3);
        let location = reply.header("location").unwrap();
        assert!(location.starts_with("http://127.0.0.1:"), "{location}");
        assert!(location.ends_with("/L3dlaGF2ZQ=="), "{location}");
        assert!(volumes
            .split(',')
            .any(|volume| location.starts_with(&format!("http://{volume}/"))));
    }
    assert_eq!(fetch(&cluster.url("/wehave")).body, body);

    assert_eq!(
        request("PUT", &cluster.url("/wehave"), Some(b"again")).status,
        403,
        "no overwrite"
    );
    assert_eq!(request("DELETE", &cluster.url("/wehave"), None).status, 204);
    let gone = request("GET", &cluster.url("/wehave"), None);
    assert_eq!((gone.status, gone.header("content-length")), (404, Some("0")));
    assert_eq!(request("DELETE", &cluster.url("/wehave"), None).status, 404);
    for volume in 0..3 {
        assert!(
            cluster.files_on(volume).is_empty(),
            "volume {volume} still has {:?}",
            cluster.files_on(volume)
        );
    }
    assert_eq!(
        request("PUT", &cluster.url("/wehave"), Some(b"new")).status,
        201,
        "a deleted key can be written again"
    );
}

#[test]
fn value_lands_at_the_placement_path_on_every_replica() {
    let cluster = Cluster::start(3, &[]);
    assert_eq!(request("PUT", &cluster.url("/hello"), Some(b"world")).status, 201);
    let reply = request("GET", &cluster.url("/hello"), None);
    let volumes: Vec<&str> = reply.header("key-volumes").unwrap().split(',').collect();
    for entry in volumes {
        let (host, subvolume) = entry.split_once('/').unwrap();
        let volume = cluster.volumes.iter().find(|volume| volume.host() == host).unwrap();
        // key2path: two md5 hex pairs, then base64("/hello") = L2hlbGxv.
        let md5 = md5_hex(b"/hello");
        let path = volume
            .dir
            .join(subvolume)
            .join(&md5[0..2])
            .join(&md5[2..4])
            .join("L2hlbGxv");
        assert_eq!(std::fs::read(&path).unwrap_or_default(), b"world", "{}", path.display());
    }
}

#[test]
fn empty_body_is_411_and_conflicting_writes_get_409() {
    let cluster = Cluster::start(3, &[]);
    assert_eq!(request("PUT", &cluster.url("/empty"), Some(b"")).status, 411);
    assert_eq!(put_chunked(&cluster.url("/empty-chunked"), b"").status, 411);
    assert_eq!(request("GET", &cluster.url("/empty"), None).status, 404);
    assert_eq!(request("GET", &cluster.url("/empty-chunked"), None).status, 404);

    let url = cluster.url("/contended");
    let body = value(4 << 20, 7);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..16)
            .map(|_| scope.spawn(|| request("PUT", &url, Some(&body)).status))
            .collect();
        writers.into_iter().map(|writer| writer.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|&&status| status == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|status| [201, 403, 409].contains(status)),
        "{statuses:?}"
    );
    assert!(statuses.contains(&409), "{statuses:?}");
    assert_eq!(fetch(&url).body, body);
}

#[test]
fn chunked_put_and_large_value_with_md5() {
    let cluster = Cluster::start(3, &[]);
    let small = value(300_000, 2);
    assert_eq!(put_chunked(&cluster.url("/chunked"), &small).status, 201);
    assert_eq!(fetch(&cluster.url("/chunked")).body, small);

    let big = value(64 << 20, 3);
    assert_eq!(request("PUT", &cluster.url("/big"), Some(&big)).status, 201);
    let redirect = request("GET", &cluster.url("/big"), None);
    assert_eq!(redirect.header("content-md5"), Some(md5_hex(&big).as_str()));
    let fetched = fetch(&cluster.url("/big"));
    assert_eq!(md5_hex(&fetched.body), md5_hex(&big));

    let location = redirect.header("location").unwrap();
    let range = request_with("GET", location, &[("Range", "bytes=1000-1999")]);
    assert_eq!(range.status, 206);
    assert_eq!(range.body, &big[1000..2000]);
}

#[test]
fn keys_are_the_decoded_path() {
    let cluster = Cluster::start(3, &[]);
    let keys = [
        "/with%20space",
        "/unicode-%E2%82%AC",
        "/plus+sign",
        "/slash%2Finside",
        "/a/b/c",
    ];
    for (i, key) in keys.iter().enumerate() {
        let body = format!("value {i}");
        assert_eq!(
            request("PUT", &cluster.url(key), Some(body.as_bytes())).status,
            201,
            "{key}"
        );
        assert_eq!(fetch(&cluster.url(key)).body, body.as_bytes(), "{key}");
    }
    // %2F decodes to /, so both spellings name one key.
    assert_eq!(request("PUT", &cluster.url("/slash/inside"), Some(b"x")).status, 403);
    let listed = request("GET", &cluster.url("/?list"), None);
    let text = String::from_utf8(listed.body).unwrap();
    for key in [
        "\"/with space\"",
        "\"/unicode-€\"",
        "\"/plus+sign\"",
        "\"/slash/inside\"",
        "\"/a/b/c\"",
    ] {
        assert!(text.contains(key), "{key} in {text}");
    }
    // A key that is not UTF-8 lists as U+FFFD, as Go's encoding/json writes it.
    assert_eq!(request("PUT", &cluster.url("/bytes-%FF"), Some(b"x")).status, 201);
    let listed = String::from_utf8(request("GET", &cluster.url("/bytes-?list"), None).body).unwrap();
    assert_eq!(listed, "{\"next\":\"\",\"keys\":[\"/bytes-\u{FFFD}\"]}");
    let long = format!("/{}", "k".repeat(189));
    assert_eq!(request("PUT", &cluster.url(&long), Some(b"x")).status, 414);
    let longest = format!("/{}", "k".repeat(188));
    assert_eq!(request("PUT", &cluster.url(&longest), Some(b"x")).status, 201);
}

#[test]
fn unlink_relink_and_protect() {
    let cluster = Cluster::start(3, &["-protect"]);
    assert_eq!(request("PUT", &cluster.url("/guarded"), Some(b"data")).status, 201);
    assert_eq!(
        request("DELETE", &cluster.url("/guarded"), None).status,
        403,
        "-protect needs UNLINK first"
    );
    assert_eq!(
        request("RELINK", &cluster.url("/guarded"), None).status,
        404,
        "live keys cannot be relinked"
    );
    assert_eq!(request("UNLINK", &cluster.url("/guarded"), None).status, 204);
    assert_eq!(request("UNLINK", &cluster.url("/guarded"), None).status, 404);
    assert_eq!(request("GET", &cluster.url("/guarded"), None).status, 404);
    assert_eq!(request("PUT", &cluster.url("/guarded2"), Some(b"x")).status, 201);

    let unlinked = String::from_utf8(request("GET", &cluster.url("/?unlinked"), None).body).unwrap();
    assert_eq!(unlinked, r#"{"next":"","keys":["/guarded"]}"#);
    let live = String::from_utf8(request("GET", &cluster.url("/?list"), None).body).unwrap();
    assert_eq!(live, r#"{"next":"","keys":["/guarded2"]}"#);

    assert_eq!(request("RELINK", &cluster.url("/guarded"), None).status, 204);
    assert_eq!(fetch(&cluster.url("/guarded")).body, b"data");
    assert_eq!(request("UNLINK", &cluster.url("/guarded"), None).status, 204);
    assert_eq!(request("DELETE", &cluster.url("/guarded"), None).status, 204);
    assert_eq!(request("DELETE", &cluster.url("/guarded"), None).status, 404);
    assert_eq!(request("RELINK", &cluster.url("/guarded"), None).status, 404);
    assert_eq!(request("UNLINK", &cluster.url("/never"), None).status, 404);
}

#[test]
fn fallback_redirects_unknown_keys() {
    let cluster = Cluster::start(3, &["-fallback", "127.0.0.1:9"]);
    let reply = request("GET", &cluster.url("/elsewhere%20x"), None);
    assert_eq!(reply.status, 302);
    assert_eq!(reply.header("location"), Some("http://127.0.0.1:9/elsewhere%20x"));
}

#[test]
fn listing_pages_with_start_limit_next() {
    let cluster = Cluster::start(3, &[]);
    for key in ["/l/a", "/l/b", "/l/c", "/l/d", "/m/a"] {
        assert_eq!(request("PUT", &cluster.url(key), Some(b"v")).status, 201);
    }
    let page = |query: &str| {
        let reply = request("GET", &cluster.url(&format!("/l/?{query}")), None);
        (reply.status, String::from_utf8(reply.body).unwrap())
    };
    assert_eq!(
        page("list"),
        (200, r#"{"next":"","keys":["/l/a","/l/b","/l/c","/l/d"]}"#.into())
    );
    assert_eq!(
        page("list&limit=2"),
        (200, r#"{"next":"/l/c","keys":["/l/a","/l/b"]}"#.into())
    );
    assert_eq!(
        page("list&limit=2&start=/l/c"),
        (200, r#"{"next":"","keys":["/l/c","/l/d"]}"#.into())
    );
    assert_eq!(
        page("list&start=%2Fl%2Fd"),
        (200, r#"{"next":"","keys":["/l/d"]}"#.into())
    );
    assert_eq!(page("list&limit=x").0, 400);
    assert_eq!(page("list&limit=-1").0, 400);
    assert_eq!(page("unlinked"), (200, r#"{"next":"","keys":[]}"#.into()));
    assert_eq!(page("bogus").0, 403);
    assert_eq!(request("GET", &cluster.url("/l/a?x=1"), None).status, 403);
    let reply = request("GET", &cluster.url("/?list"), None);
    assert_eq!(reply.header("content-type"), Some("application/json"));
}

#[test]
fn listing_more_than_a_million_keys_needs_a_limit() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.kill_master();
    let seeded = crate::cluster::mkv()
        .args([
            "-db",
            &cluster.db().display().to_string(),
            "-volumes",
            &cluster.volume_list(),
        ])
        .args(["--count", "1000001", "--prefix", "/many/", "seed"])
        .status()
        .unwrap();
    assert!(seeded.success());
    cluster.start_master();
    assert_eq!(request("GET", &cluster.url("/many/?list"), None).status, 413);
    let page = request("GET", &cluster.url("/many/?list&limit=3"), None);
    assert_eq!(
        String::from_utf8(page.body).unwrap(),
        r#"{"next":"/many/100","keys":["/many/0","/many/1","/many/10"]}"#
    );
}

/// Split `bytes` into responses, given which answer HEAD requests (no body
/// whatever their `Content-Length`): the statuses, and bytes left over.
fn responses(mut bytes: &[u8], heads: &[bool]) -> (Vec<u16>, usize) {
    let mut statuses = Vec::new();
    for &head in heads {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head_bytes)) = response.parse(bytes) else {
            break;
        };
        let length = response
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case("content-length"))
            .map_or(0, |header| {
                std::str::from_utf8(header.value).unwrap().parse::<usize>().unwrap()
            });
        statuses.push(response.code.unwrap());
        let body = if head { 0 } else { length };
        bytes = &bytes[(head_bytes + body).min(bytes.len())..];
    }
    (statuses, bytes.len())
}

#[test]
fn failed_head_requests_get_no_body_on_a_kept_connection() {
    let mut cluster = Cluster::start(1, &["-replicas", "1", "-subvolumes", "1"]);
    assert_eq!(request("PUT", &cluster.url("/down/k"), Some(b"v")).status, 201);
    cluster.volumes[0].stop();
    let down = crate::cluster::eventually(std::time::Duration::from_secs(10), || {
        request("GET", &cluster.url("/down/k"), None).status == 503
    });
    assert!(down, "the volume is seen down");
    let long_key = format!("/{}", "k".repeat(300));
    let pipelined = [
        ("HEAD", "/k?bogus".to_string(), 403),
        ("HEAD", "/%zz".to_string(), 400),
        ("HEAD", long_key, 414),
        ("HEAD", "/down/k".to_string(), 503),
        ("HEAD", "/?list&limit=x".to_string(), 400),
        ("HEAD", "/missing".to_string(), 404),
        ("GET", "/k?bogus".to_string(), 403),
    ];
    let mut bytes = String::new();
    for (i, (method, path, _)) in pipelined.iter().enumerate() {
        let close = if i + 1 == pipelined.len() {
            "Connection: close\r\n"
        } else {
            ""
        };
        bytes += &format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{close}\r\n");
    }
    let answer = crate::cluster::raw(cluster.port(), bytes.as_bytes(), std::time::Duration::from_secs(10));
    let heads: Vec<bool> = pipelined.iter().map(|(method, _, _)| *method == "HEAD").collect();
    let (statuses, left) = responses(answer.as_bytes(), &heads);
    let expected: Vec<u16> = pipelined.iter().map(|(_, _, status)| *status).collect();
    assert_eq!(statuses, expected, "{answer}");
    assert_eq!(left, 0, "{answer}");
}
