//! S3 listings over records S3 did not write: keys a master without
//! metadata wrote (the original) list with what HeadObject reports, and
//! marker-paged listings (V1, versions) cross a run of soft-deleted
//! records longer than one page's visit budget.

use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use mkv::placement::{entry_host, entry_prefix, key2path};
use mkv::s3::list::{LIST_PROBES_MAX, LIST_VISITS_MAX};

use crate::cluster::{raw, request, request_full, value, Cluster};

/// Any `x-amz-*` header makes a request on the master's port an S3 one.
const S3: (&str, &str) = ("x-amz-content-sha256", "UNSIGNED-PAYLOAD");

fn s3_get(cluster: &Cluster, path: &str) -> String {
    let reply = request_full("GET", &cluster.url(path), &[S3], None);
    let body = String::from_utf8_lossy(&reply.body).into_owned();
    assert_eq!(reply.status, 200, "{path}: {body}");
    body
}

/// The files holding `key`'s replicas, from the master's `Key-Volumes`.
fn replica_files(cluster: &Cluster, key: &str) -> Vec<PathBuf> {
    let reply = request("HEAD", &cluster.url(key), None);
    let entries = reply.header("key-volumes").expect("a live key").to_owned();
    entries
        .split(',')
        .map(|entry| {
            let volume = cluster
                .volumes
                .iter()
                .find(|volume| volume.host() == entry_host(entry))
                .expect("a volume of the cluster");
            let relative = format!("{}{}", entry_prefix(entry), key2path(key.as_bytes()));
            volume.dir.join(&relative[1..])
        })
        .collect()
}

/// The text of every `<name>` element of `document`, in order.
fn elements(document: &str, name: &str) -> Vec<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    document
        .split(&open)
        .skip(1)
        .map(|rest| rest.split(&close).next().unwrap().to_owned())
        .collect()
}

/// Records with no metadata, as the original master leaves them (`seed`
/// writes such records), their values planted where the records say.
#[test]
fn keys_without_metadata_list_as_head_reports_them() {
    let mut cluster = Cluster::start(3, &["-replicas", "2"]);
    cluster.kill_master();
    let seeded = cluster.run_command(&["--count", "3", "--prefix", "/old/k-"], "seed");
    assert!(seeded.status.success(), "{}", String::from_utf8_lossy(&seeded.stderr));
    cluster.start_master();
    let bodies: Vec<Vec<u8>> = (0..3).map(|i| value(1000 + i * 7, i as u64)).collect();
    let mut planted = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        for file in replica_files(&cluster, &format!("/old/k-{i}")) {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, body).unwrap();
            planted.push(file);
        }
    }
    let heads: Vec<(String, String)> = (0..3)
        .map(|i| {
            let head = request_full("HEAD", &cluster.url(&format!("/old/k-{i}")), &[S3], None);
            assert_eq!(head.status, 200);
            let length = head.header("content-length").unwrap().to_owned();
            (length, head.header("last-modified").unwrap().to_owned())
        })
        .collect();
    for (i, body) in bodies.iter().enumerate() {
        assert_eq!(heads[i].0, body.len().to_string());
    }
    for path in ["/old?list-type=2", "/old", "/old?versions"] {
        let listing = s3_get(&cluster, path);
        let sizes = elements(&listing, "Size");
        let expected: Vec<String> = bodies.iter().map(|body| body.len().to_string()).collect();
        assert_eq!(sizes, expected, "{path}: {listing}");
        for modified in elements(&listing, "LastModified") {
            assert!(!modified.starts_with("1970"), "{path}: {listing}");
        }
    }
    // The probed sizes were kept: with the values gone from the volumes
    // (no replica can be asked any more), the listing still says them.
    for file in &planted {
        std::fs::remove_file(file).unwrap();
    }
    let listing = s3_get(&cluster, "/old?list-type=2");
    let expected: Vec<String> = bodies.iter().map(|body| body.len().to_string()).collect();
    assert_eq!(elements(&listing, "Size"), expected, "{listing}");
}

/// Keys without metadata whose replicas cannot say their size (no value on
/// any volume): a page asks at most `LIST_PROBES_MAX` of them, then ends
/// truncated; the next page goes on from there.
#[test]
fn a_page_probes_a_bounded_number_of_keys() {
    let mut cluster = Cluster::start(3, &["-replicas", "2"]);
    let count = LIST_PROBES_MAX + 10;
    cluster.kill_master();
    let seeded = cluster.run_command(&["--count", &count.to_string(), "--prefix", "/lost/k-"], "seed");
    assert!(seeded.status.success(), "{}", String::from_utf8_lossy(&seeded.stderr));
    cluster.start_master();
    let first = s3_get(&cluster, "/lost?list-type=2");
    assert_eq!(elements(&first, "Key").len(), LIST_PROBES_MAX, "{first}");
    assert_eq!(elements(&first, "IsTruncated"), ["true"]);
    let token = elements(&first, "NextContinuationToken").pop().unwrap();
    let rest = s3_get(&cluster, &format!("/lost?list-type=2&continuation-token={token}"));
    assert_eq!(elements(&rest, "Key").len(), 10, "{rest}");
    assert_eq!(elements(&rest, "IsTruncated"), ["false"]);
    // Listed as the index knows them, and asked again next time.
    assert!(elements(&rest, "Size").iter().all(|size| size == "0"), "{rest}");
}

/// UNLINK every key in `keys`, pipelined over a few connections.
fn unlink_all(cluster: &Cluster, keys: Vec<String>) {
    const PER_CONNECTION: usize = 1000;
    let port = cluster.port();
    let batches: Vec<Vec<String>> = keys.chunks(PER_CONNECTION).map(<[String]>::to_vec).collect();
    let workers: Vec<_> = batches
        .chunks(batches.len().div_ceil(4))
        .map(<[Vec<String>]>::to_vec)
        .map(|batches| {
            thread::spawn(move || {
                for batch in batches {
                    let mut bytes = Vec::new();
                    for (i, key) in batch.iter().enumerate() {
                        let close = if i + 1 == batch.len() {
                            "Connection: close\r\n"
                        } else {
                            ""
                        };
                        bytes.extend_from_slice(format!("UNLINK {key} HTTP/1.1\r\nHost: t\r\n{close}\r\n").as_bytes());
                    }
                    let answers = raw(port, &bytes, Duration::from_secs(60));
                    assert_eq!(
                        answers.matches("HTTP/1.1 204").count(),
                        batch.len(),
                        "{}",
                        &answers[..300]
                    );
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
}

/// Follow marker pages of `path` (a V1 or versions listing), as clients
/// do: NextMarker (NextKeyMarker), else the last key. The keys listed.
fn marker_pages(cluster: &Cluster, path: &str, marker_name: &str, next_name: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut marker = String::new();
    for _ in 0..10 {
        let encoded: String = marker.bytes().map(|byte| format!("%{byte:02X}")).collect();
        let page = s3_get(cluster, &format!("{path}&{marker_name}={encoded}"));
        let listed = elements(&page, "Key");
        keys.extend(listed.iter().cloned());
        if elements(&page, "IsTruncated") != ["true"] {
            return keys;
        }
        let next = elements(&page, next_name).pop().or_else(|| listed.last().cloned());
        let next = next.unwrap_or_else(|| panic!("a truncated page says where to go on: {page}"));
        assert!(next > marker, "the marker moves on: {next:?} after {marker:?}");
        marker = next;
    }
    panic!("more than ten pages: {keys:?}");
}

#[test]
fn marker_pages_cross_more_soft_deleted_records_than_a_page_visits() {
    let mut cluster = Cluster::start(3, &[]);
    let count = LIST_VISITS_MAX as u64 + 1000;
    cluster.kill_master();
    let seeded = cluster.run_command(&["--count", &count.to_string(), "--prefix", "/run/m-"], "seed");
    assert!(seeded.status.success(), "{}", String::from_utf8_lossy(&seeded.stderr));
    cluster.start_master();
    unlink_all(&cluster, (0..count).map(|i| format!("/run/m-{i}")).collect());
    for key in ["/run/a", "/run/z"] {
        let put = request_full("PUT", &cluster.url(key), &[S3], Some(b"v"));
        assert_eq!(put.status, 200);
    }
    for max_keys in [1, 1000] {
        let v1 = marker_pages(&cluster, &format!("/run?max-keys={max_keys}"), "marker", "NextMarker");
        assert_eq!(v1, ["a", "z"], "V1, max-keys={max_keys}");
        let versions = marker_pages(
            &cluster,
            &format!("/run?versions&max-keys={max_keys}"),
            "key-marker",
            "NextKeyMarker",
        );
        assert_eq!(versions, ["a", "z"], "versions, max-keys={max_keys}");
    }
    // With a delimiter the soft-deleted run inside a common prefix is
    // crossed too, and the prefix reported once, for the live key after it.
    let put = request_full("PUT", &cluster.url("/run/m-~"), &[S3], Some(b"v"));
    assert_eq!(put.status, 200);
    let mut entries = Vec::new();
    let mut marker = String::new();
    for _ in 0..10 {
        let encoded: String = marker.bytes().map(|byte| format!("%{byte:02X}")).collect();
        let page = s3_get(&cluster, &format!("/run?delimiter=-&marker={encoded}"));
        entries.extend(elements(&page, "Key"));
        entries.extend(
            elements(&page, "Prefix")
                .into_iter()
                .filter(|prefix| !prefix.is_empty()),
        );
        if elements(&page, "IsTruncated") != ["true"] {
            break;
        }
        marker = elements(&page, "NextMarker")
            .pop()
            .expect("NextMarker with a delimiter");
    }
    entries.sort();
    assert_eq!(entries, ["a", "m-", "z"]);
}
