//! S3 bodies of many pieces whose digests (the payload's SHA-256 in
//! `x-amz-content-sha256`, `x-amz-checksum-sha256` and `-sha1` as headers
//! or aws-chunked trailers) are checked before the last piece reaches a
//! volume, so a wrong one leaves the key's old value in place and a right
//! one is stored, with many such PUTs at once.

use base64::Engine as _;
use sha2::Digest as _;

use crate::cluster::{request_full, value, Cluster};

const UNSIGNED: (&str, &str) = ("x-amz-content-sha256", "UNSIGNED-PAYLOAD");
/// Bytes of the values: over three 1 MiB pieces, and not a whole number of
/// them.
const VALUE_BYTES: usize = 3 * 1024 * 1024 + 12_345;

fn base64(raw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

fn hex(raw: &[u8]) -> String {
    raw.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    sha2::Sha256::digest(bytes).to_vec()
}

fn sha1(bytes: &[u8]) -> Vec<u8> {
    sha1::Sha1::digest(bytes).to_vec()
}

/// `raw` with its last bit flipped.
fn flipped(raw: &[u8]) -> Vec<u8> {
    let mut raw = raw.to_vec();
    *raw.last_mut().expect("not empty") ^= 1;
    raw
}

/// (status, S3 error code) of a PUT of `body` to `path`.
fn put(cluster: &Cluster, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let reply = request_full("PUT", &cluster.url(path), headers, Some(body));
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    let code = text
        .split("<Code>")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or("")
        .to_owned();
    (reply.status, code)
}

fn get(cluster: &Cluster, path: &str) -> (u16, Vec<u8>) {
    let reply = request_full("GET", &cluster.url(path), &[UNSIGNED], None);
    (reply.status, reply.body)
}

/// An unsigned aws-chunked body of `data` in 64 KiB chunks, with the
/// trailer `name: value`.
fn aws_chunked(data: &[u8], name: &str, value: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for chunk in data.chunks(64 * 1024) {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("0\r\n{name}:{value}\r\n\r\n").as_bytes());
    body
}

/// (what is wrong, the PUT's headers, its body, the S3 error code).
type Refusal<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a [u8], &'a str);

#[test]
fn digests_of_long_bodies_are_checked_before_anything_is_stored() {
    let cluster = Cluster::start(3, &[]);
    assert_eq!(put(&cluster, "/bkt", &[UNSIGNED], b"").0, 200);
    assert_eq!(put(&cluster, "/bkt/k", &[UNSIGNED], b"old").0, 200);
    let data = value(VALUE_BYTES, 41);
    let payload = hex(&sha256(&data));
    let wrong_payload = hex(&flipped(&sha256(&data)));
    let checksum_sha256 = base64(&sha256(&data));
    let wrong_sha256 = base64(&flipped(&sha256(&data)));
    let checksum_sha1 = base64(&sha1(&data));
    let wrong_sha1 = base64(&flipped(&sha1(&data)));
    // The body with its last byte changed: only the last piece differs.
    let last_byte_changed = flipped(&data);
    let refusals: [Refusal; 6] = [
        (
            "a wrong payload hash",
            vec![("x-amz-content-sha256", &wrong_payload)],
            &data,
            "XAmzContentSHA256Mismatch",
        ),
        (
            "a body whose last byte is not the hashed one",
            vec![("x-amz-content-sha256", &payload)],
            &last_byte_changed,
            "XAmzContentSHA256Mismatch",
        ),
        (
            "a right payload hash and a wrong x-amz-checksum-sha256",
            vec![
                ("x-amz-content-sha256", &payload),
                ("x-amz-checksum-sha256", &wrong_sha256),
            ],
            &data,
            "BadDigest",
        ),
        (
            "a wrong x-amz-checksum-sha256",
            vec![UNSIGNED, ("x-amz-checksum-sha256", &wrong_sha256)],
            &data,
            "BadDigest",
        ),
        (
            "a wrong x-amz-checksum-sha1",
            vec![UNSIGNED, ("x-amz-checksum-sha1", &wrong_sha1)],
            &data,
            "BadDigest",
        ),
        (
            "a right x-amz-checksum-sha1 of other bytes",
            vec![UNSIGNED, ("x-amz-checksum-sha1", &checksum_sha1)],
            &last_byte_changed,
            "BadDigest",
        ),
    ];
    for (what, headers, body, code) in refusals {
        assert_eq!(
            put(&cluster, "/bkt/k", &headers, body),
            (400, code.to_owned()),
            "{what}"
        );
        assert_eq!(get(&cluster, "/bkt/k"), (200, b"old".to_vec()), "{what}");
        assert_eq!(get(&cluster, "/bkt/new").0, 404, "{what}");
        assert_eq!(put(&cluster, "/bkt/new", &headers, body).0, 400, "{what}");
        assert_eq!(get(&cluster, "/bkt/new").0, 404, "{what}: nothing stored");
    }
    // An aws-chunked body with a wrong sha256 trailer.
    let declared = data.len().to_string();
    let chunked = |trailer: &str| -> Vec<(&str, String)> {
        vec![
            ("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER".to_owned()),
            ("Content-Encoding", "aws-chunked".to_owned()),
            ("x-amz-trailer", trailer.to_owned()),
            ("x-amz-decoded-content-length", declared.clone()),
        ]
    };
    let headers = chunked("x-amz-checksum-sha256");
    let headers: Vec<(&str, &str)> = headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let body = aws_chunked(&data, "x-amz-checksum-sha256", &wrong_sha256);
    assert_eq!(put(&cluster, "/bkt/k", &headers, &body), (400, "BadDigest".to_owned()));
    assert_eq!(get(&cluster, "/bkt/k"), (200, b"old".to_vec()));
    // Right ones are stored, and the checksum kept.
    let body = aws_chunked(&data, "x-amz-checksum-sha256", &checksum_sha256);
    assert_eq!(put(&cluster, "/bkt/k", &headers, &body).0, 200);
    assert!(get(&cluster, "/bkt/k") == (200, data.clone()), "the trailer's value");
    let stored = |path: &str, header: &str| {
        let reply = request_full(
            "HEAD",
            &cluster.url(path),
            &[UNSIGNED, ("x-amz-checksum-mode", "ENABLED")],
            None,
        );
        reply.header(header).map(str::to_owned)
    };
    assert_eq!(stored("/bkt/k", "x-amz-checksum-sha256"), Some(checksum_sha256.clone()));
    let both = [
        ("x-amz-content-sha256", payload.as_str()),
        ("x-amz-checksum-sha256", checksum_sha256.as_str()),
    ];
    assert_eq!(put(&cluster, "/bkt/both", &both, &last_byte_changed).0, 400);
    assert_eq!(put(&cluster, "/bkt/both", &both, &data).0, 200);
    assert!(
        get(&cluster, "/bkt/both") == (200, data.clone()),
        "payload and checksum"
    );
    assert_eq!(stored("/bkt/both", "x-amz-checksum-sha256"), Some(checksum_sha256));
    let with_sha1 = [UNSIGNED, ("x-amz-checksum-sha1", checksum_sha1.as_str())];
    assert_eq!(put(&cluster, "/bkt/sha1", &with_sha1, &data).0, 200);
    assert!(get(&cluster, "/bkt/sha1") == (200, data.clone()), "sha1");
    assert_eq!(stored("/bkt/sha1", "x-amz-checksum-sha1"), Some(checksum_sha1));
    // Only the algorithm named: computed and kept.
    let computed = [
        ("x-amz-content-sha256", payload.as_str()),
        ("x-amz-sdk-checksum-algorithm", "SHA256"),
    ];
    assert_eq!(put(&cluster, "/bkt/computed", &computed, &data).0, 200);
    assert_eq!(
        stored("/bkt/computed", "x-amz-checksum-sha256"),
        Some(base64(&sha256(&data)))
    );
}

#[test]
fn an_upload_part_with_a_wrong_payload_hash_is_not_kept() {
    let cluster = Cluster::start(3, &[]);
    assert_eq!(put(&cluster, "/bkt", &[UNSIGNED], b"").0, 200);
    let reply = request_full("POST", &cluster.url("/bkt/mp?uploads"), &[UNSIGNED], None);
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    let upload = text
        .split("<UploadId>")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("an upload id")
        .to_owned();
    let data = value(VALUE_BYTES, 42);
    let payload = hex(&sha256(&data));
    let part = |number: u32| format!("/bkt/mp?uploadId={upload}&partNumber={number}");
    let wrong = hex(&flipped(&sha256(&data)));
    assert_eq!(
        put(&cluster, &part(1), &[("x-amz-content-sha256", &wrong)], &data),
        (400, "XAmzContentSHA256Mismatch".to_owned())
    );
    assert_eq!(
        put(&cluster, &part(2), &[("x-amz-content-sha256", &payload)], &data).0,
        200
    );
    let parts = request_full(
        "GET",
        &cluster.url(&format!("/bkt/mp?uploadId={upload}")),
        &[UNSIGNED],
        None,
    );
    let parts = String::from_utf8_lossy(&parts.body).into_owned();
    assert!(
        parts.contains("<PartNumber>2</PartNumber>") && !parts.contains("<PartNumber>1</PartNumber>"),
        "{parts}"
    );
}

/// More PUTs at once than there are md5 hashing threads (8), right and
/// wrong digests mixed: each is checked on its own.
#[test]
fn concurrent_long_puts_are_each_checked() {
    let cluster = Cluster::start(3, &[]);
    assert_eq!(put(&cluster, "/bkt", &[UNSIGNED], b"").0, 200);
    let results: Vec<(u64, (u16, String))> = std::thread::scope(|scope| {
        let cluster = &cluster;
        let puts: Vec<_> = (0..12u64)
            .map(|seed| {
                scope.spawn(move || {
                    let data = value(VALUE_BYTES, 100 + seed);
                    let hash = sha256(&data);
                    // Every third PUT sends a hash that is not its body's.
                    let sent = if seed % 3 == 0 { flipped(&hash) } else { hash };
                    let header = [("x-amz-content-sha256", hex(&sent))];
                    let headers: Vec<(&str, &str)> =
                        header.iter().map(|(name, value)| (*name, value.as_str())).collect();
                    (seed, put(cluster, &format!("/bkt/k{seed}"), &headers, &data))
                })
            })
            .collect();
        puts.into_iter().map(|put| put.join().expect("a PUT thread")).collect()
    });
    for (seed, answer) in results {
        let stored = get(&cluster, &format!("/bkt/k{seed}"));
        if seed % 3 == 0 {
            assert_eq!(answer, (400, "XAmzContentSHA256Mismatch".to_owned()), "k{seed}");
            assert_eq!(stored.0, 404, "k{seed}: nothing stored");
        } else {
            assert_eq!(answer.0, 200, "k{seed}");
            assert!(stored == (200, value(VALUE_BYTES, 100 + seed)), "k{seed}: its bytes");
        }
    }
}
