//! Volume failures: reads move to live replicas, writes fail cleanly.

use std::time::Duration;

use crate::cluster::{eventually, fetch, request, Cluster};

#[test]
fn stopped_volume_reads_go_elsewhere_and_writes_fail_cleanly() {
    let mut cluster = Cluster::start(3, &["-replicas", "2", "-voltimeout", "300ms"]);
    for i in 0..20 {
        assert_eq!(
            request("PUT", &cluster.url(&format!("/k{i}")), Some(format!("v{i}").as_bytes())).status,
            201
        );
    }
    let down = cluster.volumes[0].host();
    cluster.volumes[0].stop();
    // Once health notices, no redirect points at the stopped volume.
    let avoided = eventually(Duration::from_secs(5), || {
        (0..20).all(|i| {
            let reply = request("GET", &cluster.url(&format!("/k{i}")), None);
            reply.status == 302 && !reply.header("location").unwrap().contains(&down)
        })
    });
    assert!(avoided, "redirects still point at {down}");
    for i in 0..20 {
        assert_eq!(fetch(&cluster.url(&format!("/k{i}"))).body, format!("v{i}").as_bytes());
    }
    // A PUT placed on the stopped volume answers 500 and the key is not live.
    let mut failed = 0;
    for i in 0..20 {
        let key = format!("/new{i}");
        let status = request("PUT", &cluster.url(&key), Some(b"x")).status;
        assert!(status == 201 || status == 500, "{status}");
        if status == 500 {
            failed += 1;
            assert_eq!(request("GET", &cluster.url(&key), None).status, 404, "{key}");
        } else {
            assert_eq!(fetch(&cluster.url(&key)).body, b"x");
        }
    }
    assert!(failed > 0, "some keys must be placed on the stopped volume");
    let listed = String::from_utf8(request("GET", &cluster.url("/new?list"), None).body).unwrap();
    assert_eq!(listed.matches("/new").count(), 20 - failed, "{listed}");

    cluster.volumes[0].restart();
    assert!(eventually(Duration::from_secs(5), || request(
        "PUT",
        &cluster.url("/back"),
        Some(b"b")
    )
    .status
        == 201
        || {
            request("DELETE", &cluster.url("/back"), None);
            false
        }));
}

#[test]
fn no_healthy_replica_is_503_with_retry_after() {
    let mut cluster = Cluster::start(3, &["-replicas", "1", "-subvolumes", "1"]);
    assert_eq!(request("PUT", &cluster.url("/lonely"), Some(b"v")).status, 201);
    let reply = request("GET", &cluster.url("/lonely"), None);
    let holder = reply.header("key-volumes").unwrap().to_string();
    let index = cluster
        .volumes
        .iter()
        .position(|volume| volume.host() == holder)
        .unwrap();
    cluster.volumes[index].stop();
    assert!(eventually(Duration::from_secs(5), || request(
        "GET",
        &cluster.url("/lonely"),
        None
    )
    .status
        == 503));
    assert_eq!(
        request("GET", &cluster.url("/lonely"), None).header("retry-after"),
        Some("1")
    );
    cluster.volumes[index].restart();
    assert!(eventually(Duration::from_secs(5), || request(
        "GET",
        &cluster.url("/lonely"),
        None
    )
    .status
        == 302));
}

#[test]
fn verify_get_checks_the_volume_first() {
    let cluster = Cluster::start(3, &["--verify-get", "-replicas", "1"]);
    assert_eq!(request("PUT", &cluster.url("/checked"), Some(b"v")).status, 201);
    assert_eq!(request("GET", &cluster.url("/checked"), None).status, 302);
    // Remove the file behind the master's back: the check notices.
    for volume in 0..3 {
        for file in cluster.files_on(volume) {
            std::fs::remove_file(file).unwrap();
        }
    }
    assert_eq!(request("GET", &cluster.url("/checked"), None).status, 404);
}
