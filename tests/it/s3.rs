//! S3 through the boundary where it meets the native invariants: what a
//! failed or refused S3 write leaves, reads that fail over between
//! replicas, and multipart parts beside the keys for rebuild. The client
//! libraries themselves are driven by the Python suite (tests/s3/).

use std::time::Duration;

use crate::cluster::{eventually, fetch, md5_hex, request, request_full, value, Cluster};

/// Any `x-amz-*` header makes a request on the master's port an S3 one.
const S3: (&str, &str) = ("x-amz-content-sha256", "UNSIGNED-PAYLOAD");

fn put(cluster: &Cluster, path: &str, body: &[u8]) -> u16 {
    request_full("PUT", &cluster.url(path), &[S3], Some(body)).status
}

fn get(cluster: &Cluster, path: &str) -> (u16, Vec<u8>) {
    let reply = request_full("GET", &cluster.url(path), &[S3], None);
    (reply.status, reply.body)
}

/// The volume (by index) a key's native 302 names first.
fn volumes_of(cluster: &Cluster, native_key: &str) -> Vec<usize> {
    let reply = request("HEAD", &cluster.url(native_key), None);
    let listed = reply.header("key-volumes").unwrap_or_default().to_owned();
    cluster
        .volumes
        .iter()
        .enumerate()
        .filter(|(_, volume)| listed.split(',').any(|entry| entry.starts_with(&volume.host())))
        .map(|(index, _)| index)
        .collect()
}

#[test]
fn a_refused_or_failed_overwrite_keeps_the_prior_value() {
    let mut cluster = Cluster::start(3, &["-replicas", "2"]);
    assert_eq!(put(&cluster, "/bkt", b""), 200, "CreateBucket");
    let prior = value(200_000, 1);
    assert_eq!(put(&cluster, "/bkt/k", &prior), 200);

    // A Content-MD5 that does not match: 400 BadDigest, and no replica took
    // the new bytes.
    let wrong = request_full(
        "PUT",
        &cluster.url("/bkt/k"),
        &[S3, ("Content-MD5", "AAAAAAAAAAAAAAAAAAAAAA==")],
        Some(&value(300_000, 2)),
    );
    assert_eq!(wrong.status, 400);
    assert!(String::from_utf8_lossy(&wrong.body).contains("BadDigest"));
    assert!(
        get(&cluster, "/bkt/k") == (200, prior.clone()),
        "the prior value, byte for byte"
    );
    assert!(fetch(&cluster.url("/bkt/k")).body == prior, "the native read agrees");

    // A volume of the key stops: the overwrite fails, and the value stays
    // where the new bytes did not go.
    let holders = volumes_of(&cluster, "/bkt/k");
    assert_eq!(holders.len(), 2);
    // A fresh master holds no pooled connection to the stopped volume, so
    // its upload is refused outright (not taken): its copy is known to hold
    // the prior value. (Over a pooled connection the volume closed, the
    // upload's fate is unknown and that copy is not trusted.)
    cluster.volumes[holders[0]].stop();
    cluster.kill_master();
    cluster.master = None;
    cluster.start_master();
    let failed = put(&cluster, "/bkt/k", &value(300_000, 3));
    assert!(failed >= 500, "{failed}");
    cluster.volumes[holders[0]].restart();
    assert!(
        eventually(Duration::from_secs(10), || get(&cluster, "/bkt/k").0 == 200),
        "the prior value is readable again once its volume is back"
    );
    assert!(
        get(&cluster, "/bkt/k") == (200, prior.clone()),
        "the prior value, byte for byte"
    );
    // The native read redirects once the health probe sees the volume again.
    assert!(eventually(Duration::from_secs(10), || fetch(&cluster.url("/bkt/k"))
        .body
        == prior));
}

#[test]
fn a_read_goes_to_another_replica_when_one_lost_its_copy() {
    let cluster = Cluster::start(3, &["-replicas", "2"]);
    assert_eq!(put(&cluster, "/bkt", b""), 200);
    let body = value(3_000_000, 4);
    assert_eq!(put(&cluster, "/bkt/big", &body), 200);
    let holders = volumes_of(&cluster, "/bkt/big");
    // Remove the file behind the master's back on one replica.
    let removed: Vec<_> = cluster
        .files_on(holders[0])
        .into_iter()
        .filter(|path| !path.to_string_lossy().contains("mkv-parts"))
        .collect();
    assert_eq!(removed.len(), 1);
    std::fs::remove_file(&removed[0]).unwrap();
    for _ in 0..8 {
        let (status, got) = get(&cluster, "/bkt/big");
        assert_eq!(status, 200);
        assert_eq!(md5_hex(&got), md5_hex(&body));
    }
    let range = request_full(
        "GET",
        &cluster.url("/bkt/big"),
        &[S3, ("Range", "bytes=1000000-1000009")],
        None,
    );
    assert_eq!(range.status, 206);
    assert!(range.body == body[1_000_000..1_000_010]);
}

/// A multipart upload's parts live on the volumes outside the key layout:
/// rebuild neither takes them for keys nor loses the completed value, and
/// it restores the value's size for S3 listings.
#[test]
fn rebuild_skips_parts_and_restores_sizes() {
    let mut cluster = Cluster::start(2, &["-replicas", "2"]);
    assert_eq!(put(&cluster, "/bkt", b""), 200);
    let id = create_upload(&cluster, "/bkt/whole");
    let first = value(5 * 1024 * 1024, 5);
    let part = |number: u32, body: &[u8]| {
        let url = cluster.url(&format!("/bkt/whole?partNumber={number}&uploadId={id}"));
        let reply = request_full("PUT", &url, &[S3], Some(body));
        assert_eq!(reply.status, 200);
        reply.header("etag").unwrap().to_owned()
    };
    let etag1 = part(1, &first);
    let etag2 = part(2, b"tail");
    // A second upload, left open: its part must not become a key either.
    let open_id = create_upload(&cluster, "/bkt/open");
    let open_url = cluster.url(&format!("/bkt/open?partNumber=1&uploadId={open_id}"));
    assert_eq!(request_full("PUT", &open_url, &[S3], Some(b"pending")).status, 200);
    let complete = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag1}</ETag></Part>\
         <Part><PartNumber>2</PartNumber><ETag>{etag2}</ETag></Part></CompleteMultipartUpload>"
    );
    let done = request_full(
        "POST",
        &cluster.url(&format!("/bkt/whole?uploadId={id}")),
        &[S3],
        Some(complete.as_bytes()),
    );
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    let mut whole = first.clone();
    whole.extend_from_slice(b"tail");

    cluster.kill_master();
    let output = cluster.run_command(&[], "rebuild");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    cluster.master = None;
    cluster.start_master();
    let listing = request_full("GET", &cluster.url("/bkt?list-type=2"), &[S3], None);
    let listing = String::from_utf8_lossy(&listing.body).into_owned();
    assert_eq!(listing.matches("<Key>").count(), 1, "{listing}");
    assert!(listing.contains("<Key>whole</Key>"), "{listing}");
    assert!(listing.contains(&format!("<Size>{}</Size>", whole.len())), "{listing}");
    assert!(
        get(&cluster, "/bkt/whole") == (200, whole.clone()),
        "the completed value"
    );
    assert!(
        fetch(&cluster.url("/bkt/whole")).body == whole,
        "one value in the original layout"
    );
}

/// An overwrite after placement moved (a volume was added) writes where
/// placement says now and removes the old copy, which no record names
/// any more.
#[test]
fn an_overwrite_after_placement_moved_leaves_no_old_copy() {
    let mut cluster = Cluster::start(3, &["-replicas", "1"]);
    let all = cluster.volume_list();
    let two: Vec<String> = all.split(',').take(2).map(str::to_owned).collect();
    // Start over on two of the three volumes.
    cluster.kill_master();
    cluster.master = None;
    let third = cluster.volumes.pop().unwrap();
    cluster.start_master();
    assert_eq!(cluster.volume_list(), two.join(","));
    assert_eq!(put(&cluster, "/bkt", b""), 200);
    let keys: Vec<String> = (0..30).map(|i| format!("/bkt/moved-{i}")).collect();
    for key in &keys {
        assert_eq!(put(&cluster, key, b"old"), 200);
    }
    cluster.kill_master();
    cluster.master = None;
    cluster.volumes.push(third);
    cluster.start_master();
    for key in &keys {
        assert_eq!(put(&cluster, key, b"new"), 200);
    }
    let files: usize = (0..3).map(|volume| cluster.files_on(volume).len()).sum();
    assert_eq!(files, keys.len(), "one copy per key, the old ones removed");
    for key in &keys {
        assert_eq!(get(&cluster, key), (200, b"new".to_vec()), "{key}");
    }
}

/// CreateMultipartUpload of `path` (`/bucket/key`): the upload id.
fn create_upload(cluster: &Cluster, path: &str) -> String {
    let created = request_full("POST", &cluster.url(&format!("{path}?uploads")), &[S3], None);
    assert_eq!(created.status, 200);
    let text = String::from_utf8_lossy(&created.body).into_owned();
    let id = text.split("<UploadId>").nth(1).unwrap().split('<').next().unwrap();
    id.to_owned()
}
