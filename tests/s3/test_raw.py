"""Hand-built HTTP requests: aws-chunked bodies (signed chunks; unsigned with
a trailer), how the main port tells S3 from the native API, the S3-only port,
XML error bodies, `?delete=`, and the native cross-checks."""

import base64
import datetime as dt
import email.utils
import hashlib
import http.client
import re
import urllib.parse
import xml.etree.ElementTree as ET
import zlib

import pytest
import requests

from conftest import (
    bucket_name,
    md5_b64,
    md5_hex,
    payload,
    xml_error,
    xml_find_all,
    xml_text,
)

FAKE_SIG = "0123456789abcdef" * 4


def auth_headers(extra=None):
    """Headers of a SigV4-looking request (signatures are not checked)."""
    stamp = dt.datetime.now(dt.timezone.utc)
    headers = {
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential=k/{stamp:%Y%m%d}/us-east-1/s3/aws4_request, "
            f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={FAKE_SIG}"
        ),
        "x-amz-date": f"{stamp:%Y%m%dT%H%M%SZ}",
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
    }
    headers.update(extra or {})
    return headers


def raw(port, method, path, body=None, headers=None, encode_chunked=False):
    """One request on a fresh connection: (status, headers dict lowercased, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=encode_chunked)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def signed_chunks(data, sizes):
    out = b""
    pos = 0
    for size in sizes:
        chunk = data[pos : pos + size]
        pos += size
        out += f"{len(chunk):x};chunk-signature={FAKE_SIG}\r\n".encode() + chunk + b"\r\n"
    assert pos >= len(data)
    return out + f"0;chunk-signature={FAKE_SIG}\r\n\r\n".encode()


def unsigned_chunks_with_trailer(data, sizes, trailer):
    out = b""
    pos = 0
    for size in sizes:
        chunk = data[pos : pos + size]
        pos += size
        out += f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    return out + b"0\r\n" + trailer + b"\r\n\r\n"


def crc32_b64(data):
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


# ---- aws-chunked -------------------------------------------------------------------


def test_signed_aws_chunked(cluster, s3, bucket):
    data = payload(10000, 30)
    body = signed_chunks(data, [4096, 4096, 1808])
    headers = auth_headers(
        {
            "Content-Encoding": "aws-chunked",
            "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            "x-amz-decoded-content-length": str(len(data)),
            "Content-Length": str(len(body)),
            "Content-Type": "text/x-chunked",
        }
    )
    status, head, answer = raw(cluster.port, "PUT", f"/{bucket}/signed", body, headers)
    assert status == 200, answer
    assert head["etag"] == f'"{md5_hex(data)}"'
    got = s3.get_object(Bucket=bucket, Key="signed")
    assert got["Body"].read() == data
    assert got["ContentLength"] == len(data)
    assert got["ContentType"] == "text/x-chunked"
    # The stored value is the decoded bytes: the native 302 leads to them too.
    native = requests.get(f"{cluster.endpoint}/{bucket}/signed", timeout=30)
    assert native.content == data


def test_signed_aws_chunked_over_http_chunked(cluster, s3, bucket):
    """aws-chunked inside HTTP chunked transfer encoding (no Content-Length), as pyarrow sends."""
    data = payload(9000, 31)
    body = signed_chunks(data, [8192, 808])
    headers = auth_headers(
        {
            "Content-Encoding": "aws-chunked",
            "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            "x-amz-decoded-content-length": str(len(data)),
        }
    )
    # Odd HTTP chunk boundaries that cut through aws-chunked headers.
    pieces = [body[i : i + 777] for i in range(0, len(body), 777)]
    status, head, answer = raw(cluster.port, "PUT", f"/{bucket}/double", iter(pieces), headers, encode_chunked=True)
    assert status == 200, answer
    assert head["etag"] == f'"{md5_hex(data)}"'
    assert s3.get_object(Bucket=bucket, Key="double")["Body"].read() == data


def test_unsigned_trailer_aws_chunked(cluster, s3, bucket):
    data = payload(7000, 32)
    trailer = f"x-amz-checksum-crc32:{crc32_b64(data)}".encode()
    body = unsigned_chunks_with_trailer(data, [5000, 2000], trailer)
    headers = auth_headers(
        {
            "Content-Encoding": "aws-chunked",
            "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            "x-amz-trailer": "x-amz-checksum-crc32",
            "x-amz-decoded-content-length": str(len(data)),
            "Content-Length": str(len(body)),
        }
    )
    status, head, answer = raw(cluster.port, "PUT", f"/{bucket}/trailer", body, headers)
    assert status == 200, answer
    assert head["etag"] == f'"{md5_hex(data)}"'
    got = s3.get_object(Bucket=bucket, Key="trailer")
    assert got["Body"].read() == data
    assert got["ContentLength"] == len(data)


def test_aws_chunked_upload_part(cluster, s3, bucket):
    """An UploadPart with an aws-chunked body stores the decoded part."""
    data = payload(3000, 33)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="chunked-part")["UploadId"]
    body = unsigned_chunks_with_trailer(data, [1000, 2000], f"x-amz-checksum-crc32:{crc32_b64(data)}".encode())
    headers = auth_headers(
        {
            "Content-Encoding": "aws-chunked",
            "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            "x-amz-trailer": "x-amz-checksum-crc32",
            "x-amz-decoded-content-length": str(len(data)),
            "Content-Length": str(len(body)),
        }
    )
    path = f"/{bucket}/chunked-part?partNumber=1&uploadId={upload_id}"
    status, head, answer = raw(cluster.port, "PUT", path, body, headers)
    assert status == 200, answer
    assert head["etag"] == f'"{md5_hex(data)}"'
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="chunked-part",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": head["etag"]}]},
    )
    assert s3.get_object(Bucket=bucket, Key="chunked-part")["Body"].read() == data


def test_raw_bad_digest(cluster, bucket):
    data = b"some bytes"
    headers = auth_headers({"Content-MD5": md5_b64(b"other bytes"), "Content-Length": str(len(data))})
    status, _, answer = raw(cluster.port, "PUT", f"/{bucket}/bd", data, headers)
    assert status == 400
    assert xml_error(answer) == "BadDigest"


def test_header_and_listing_formats(cluster, s3, bucket):
    """Last-Modified as an HTTP date, LastModified in listings as ISO 8601 with
    milliseconds and Z (awscli parses both), XML-escaped keys without encoding-type,
    percent-encoded ones with encoding-type=url."""
    key = "fmt/a&b<c>\"d' e+f"
    s3.put_object(Bucket=bucket, Key=key, Body=b"fmt")
    head = requests.head(f"{cluster.s3_endpoint}/{bucket}/fmt/a%26b%3Cc%3E%22d%27%20e%2Bf", timeout=30)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == "3"
    modified = email.utils.parsedate_to_datetime(head.headers["Last-Modified"])
    assert head.headers["Last-Modified"].endswith(" GMT")
    assert abs((modified - dt.datetime.now(dt.timezone.utc)).total_seconds()) < 120

    plain = requests.get(f"{cluster.s3_endpoint}/{bucket}?list-type=2&prefix=fmt/", timeout=30)
    assert plain.status_code == 200
    root = ET.fromstring(plain.content)
    assert root.tag == "{http://s3.amazonaws.com/doc/2006-03-01/}ListBucketResult"
    assert [e.text for e in xml_find_all(root, "{ns}Contents/{ns}Key")] == [key]
    stamp = xml_text(root, "{ns}Contents/{ns}LastModified")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
    assert xml_text(root, "{ns}Contents/{ns}ETag") == f'"{md5_hex(b"fmt")}"'

    encoded = requests.get(f"{cluster.s3_endpoint}/{bucket}?list-type=2&prefix=fmt/&encoding-type=url", timeout=30)
    root = ET.fromstring(encoded.content)
    assert xml_text(root, "{ns}EncodingType") == "url"
    listed = xml_text(root, "{ns}Contents/{ns}Key")
    assert urllib.parse.unquote(listed) == key
    assert "&" not in listed and "<" not in listed and " " not in listed

    v1 = requests.get(f"{cluster.s3_endpoint}/{bucket}?prefix=fmt/", timeout=30)
    root = ET.fromstring(v1.content)
    assert [e.text for e in xml_find_all(root, "{ns}Contents/{ns}Key")] == [key]


def test_conditional_raw(cluster, s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="cond", Body=b"conditional")["ETag"]
    url = f"{cluster.s3_endpoint}/{bucket}/cond"
    not_modified = requests.get(url, headers={"If-None-Match": etag}, timeout=30)
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["ETag"] == etag
    head = requests.head(url, headers={"If-None-Match": etag}, timeout=30)
    assert head.status_code == 304
    assert requests.get(url, headers={"If-None-Match": "*"}, timeout=30).status_code == 304
    assert requests.get(url, headers={"If-Match": "*"}, timeout=30).content == b"conditional"
    failed = requests.get(url, headers={"If-Match": '"nope"'}, timeout=30)
    assert failed.status_code == 412
    assert xml_error(failed.content) == "PreconditionFailed"


# ---- which port speaks what ------------------------------------------------------


def test_main_port_tells_s3_from_native(cluster, s3, bucket):
    data = payload(1500, 34)
    s3.put_object(Bucket=bucket, Key="which", Body=data)
    url = f"{cluster.endpoint}/{bucket}/which"
    # No S3 sign: the native 302.
    native = requests.get(url, allow_redirects=False, timeout=30)
    assert native.status_code == 302
    assert native.headers["Location"].startswith("http://127.0.0.1:")
    # Any of: Authorization, an x-amz-* header, X-Amz-* query parameters: S3, 200 with the bytes.
    for headers, query in [
        (auth_headers(), ""),
        ({"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}, ""),
        ({}, "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=k%2F20250101%2Fus-east-1%2Fs3%2Faws4_request"),
    ]:
        got = requests.get(url + query, headers=headers, allow_redirects=False, timeout=30)
        assert got.status_code == 200, (headers, query)
        assert got.content == data
        assert got.headers["ETag"] == f'"{md5_hex(data)}"'
        assert got.headers["Content-Length"] == str(len(data))
        assert got.headers["Accept-Ranges"] == "bytes"
        assert "Last-Modified" in got.headers
    # A sub-resource alone makes it S3: a V2 listing.
    listing = requests.get(f"{cluster.endpoint}/{bucket}?list-type=2", timeout=30)
    assert listing.status_code == 200
    root = ET.fromstring(listing.content)
    assert [e.text for e in xml_find_all(root, "{ns}Contents/{ns}Key")] == ["which"]
    assert xml_text(root, "{ns}KeyCount") == "1"


def test_s3_port_is_all_s3(cluster, bucket):
    port = cluster.s3_port
    assert port is not None, "mkv has no --s3-port"
    data = payload(2200, 35)
    # Anonymous PUT and GET, no S3 headers at all.
    put = requests.put(f"{cluster.s3_endpoint}/{bucket}/anon", data=data, timeout=30)
    assert put.status_code == 200
    assert put.headers["ETag"] == f'"{md5_hex(data)}"'
    got = requests.get(f"{cluster.s3_endpoint}/{bucket}/anon", allow_redirects=False, timeout=30)
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["Content-Length"] == str(len(data))
    assert got.headers["Content-Type"] == "binary/octet-stream"
    ranged = requests.get(f"{cluster.s3_endpoint}/{bucket}/anon", headers={"Range": "bytes=100-"}, timeout=30)
    assert ranged.status_code == 206
    assert ranged.content == data[100:]
    assert ranged.headers["Content-Range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
    bad_range = requests.get(f"{cluster.s3_endpoint}/{bucket}/anon", headers={"Range": "bytes=9999-"}, timeout=30)
    assert bad_range.status_code == 416
    assert xml_error(bad_range.content) == "InvalidRange"
    # The same object on the main port, without S3 signs, is the native 302.
    assert requests.get(f"{cluster.endpoint}/{bucket}/anon", allow_redirects=False, timeout=30).status_code == 302
    # ListBuckets and HeadBucket anonymous.
    buckets = requests.get(f"{cluster.s3_endpoint}/", timeout=30)
    assert buckets.status_code == 200
    names = [e.text for e in xml_find_all(ET.fromstring(buckets.content), "{ns}Buckets/{ns}Bucket/{ns}Name")]
    assert bucket in names
    assert requests.head(f"{cluster.s3_endpoint}/{bucket}", timeout=30).status_code == 200
    assert requests.head(f"{cluster.s3_endpoint}/{bucket_name('nope')}", timeout=30).status_code == 404


def test_error_bodies(cluster, bucket):
    base = cluster.s3_endpoint
    absent = bucket_name("nobucket")
    cases = [
        ("GET", f"/{bucket}/absent", 404, "NoSuchKey"),
        ("GET", f"/{absent}/k", 404, "NoSuchBucket"),
        ("GET", f"/{absent}?list-type=2", 404, "NoSuchBucket"),
        ("DELETE", f"/{absent}", 404, "NoSuchBucket"),
        ("GET", f"/{bucket}/x?uploadId=nope", 404, "NoSuchUpload"),
        ("GET", f"/{bucket}?tagging", 501, "NotImplemented"),
        ("PUT", f"/{bucket}?lifecycle", 501, "NotImplemented"),
    ]
    for method, path, status, code in cases:
        answer = requests.request(method, base + path, timeout=30)
        assert answer.status_code == status, (method, path, answer.content[:300])
        assert answer.headers.get("Content-Type", "").startswith("application/xml"), (method, path)
        assert xml_error(answer.content) == code, (method, path)
    # HEAD errors carry no body.
    head = requests.head(f"{base}/{bucket}/absent", timeout=30)
    assert head.status_code == 404
    assert head.content == b""


def test_delete_objects_both_spellings(cluster, s3, bucket):
    keys = [f"d{i}" for i in range(4)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"v")
    for query, batch, quiet in [("?delete=", keys[:2], False), ("?delete", keys[2:], True)]:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            + ("<Quiet>true</Quiet>" if quiet else "")
            + "".join(f"<Object><Key>{k}</Key></Object>" for k in batch)
            + "</Delete>"
        ).encode()
        headers = auth_headers({"Content-MD5": md5_b64(body), "Content-Type": "application/xml"})
        answer = requests.post(f"{cluster.endpoint}/{bucket}{query}", data=body, headers=headers, timeout=30)
        assert answer.status_code == 200, (query, answer.content[:300])
        root = ET.fromstring(answer.content)
        assert root.tag.endswith("DeleteResult"), answer.content[:300]
        deleted = [e.text for e in xml_find_all(root, "{ns}Deleted/{ns}Key")]
        assert deleted == ([] if quiet else batch), query
        assert xml_find_all(root, "{ns}Error") == []
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


# ---- native cross-checks -----------------------------------------------------------


def test_s3_object_through_native_api(cluster, s3, bucket):
    data = payload(3333, 36)
    s3.put_object(Bucket=bucket, Key="cross/s3-written", Body=data)
    native = requests.get(f"{cluster.endpoint}/{bucket}/cross/s3-written", allow_redirects=False, timeout=30)
    assert native.status_code == 302
    followed = requests.get(native.headers["Location"], timeout=30)
    assert followed.status_code == 200
    assert followed.content == data
    # A native DELETE removes the S3 object.
    assert requests.delete(f"{cluster.endpoint}/{bucket}/cross/s3-written", timeout=30).status_code == 204
    assert requests.head(f"{cluster.s3_endpoint}/{bucket}/cross/s3-written", timeout=30).status_code == 404


def test_native_key_in_s3(cluster, s3, bucket):
    data = payload(2718, 37)
    put = requests.put(f"{cluster.endpoint}/{bucket}/native/x", data=data, timeout=30)
    assert put.status_code == 201
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="native/")["Contents"]
    assert [(o["Key"], o["Size"], o["ETag"]) for o in listed] == [("native/x", len(data), f'"{md5_hex(data)}"')]
    got = s3.get_object(Bucket=bucket, Key="native/x")
    assert got["Body"].read() == data
    assert got["ETag"] == f'"{md5_hex(data)}"'
    assert got["ContentLength"] == len(data)
    head = s3.head_object(Bucket=bucket, Key="native/x")
    assert abs((head["LastModified"] - dt.datetime.now(dt.timezone.utc)).total_seconds()) < 120


def test_native_listing_shows_s3_keys(cluster, s3, bucket):
    """The native ?list (JSON) lists S3 objects under their native keys /bucket/key."""
    s3.put_object(Bucket=bucket, Key="nl/a", Body=b"1")
    s3.put_object(Bucket=bucket, Key="nl/b c", Body=b"2")
    listing = requests.get(f"{cluster.endpoint}/{bucket}/nl/?list", timeout=30)
    assert listing.status_code == 200
    assert listing.json()["keys"] == [f"/{bucket}/nl/a", f"/{bucket}/nl/b c"]


def test_s3_overwrites_native_value(cluster, s3, bucket):
    assert requests.put(f"{cluster.endpoint}/{bucket}/ow", data=b"native first", timeout=30).status_code == 201
    s3.put_object(Bucket=bucket, Key="ow", Body=b"then s3")
    assert requests.get(f"{cluster.endpoint}/{bucket}/ow", timeout=30).content == b"then s3"
    assert s3.get_object(Bucket=bucket, Key="ow")["Body"].read() == b"then s3"


def test_native_keys_make_a_bucket(cluster, s3):
    name = bucket_name("implicit")
    put = requests.put(f"{cluster.endpoint}/{name}/only/native", data=b"hello", timeout=30)
    assert put.status_code == 201
    assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    listed = s3.list_objects_v2(Bucket=name, Delimiter="/")
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == ["only/"]
    assert s3.get_object(Bucket=name, Key="only/native")["Body"].read() == b"hello"


def test_native_api_unchanged(cluster):
    """The native API keeps its answers on the main port."""
    key = f"/plain-{bucket_name('n')}"
    assert requests.put(cluster.endpoint + key, data=b"native value", timeout=30).status_code == 201
    assert requests.put(cluster.endpoint + key, data=b"again", timeout=30).status_code == 403
    got = requests.get(cluster.endpoint + key, allow_redirects=False, timeout=30)
    assert got.status_code == 302
    assert requests.get(got.headers["Location"], timeout=30).content == b"native value"
    assert requests.delete(cluster.endpoint + key, timeout=30).status_code == 204
    assert requests.get(cluster.endpoint + key, allow_redirects=False, timeout=30).status_code == 404


@pytest.mark.parametrize("size", [0, 1, 65536 + 3])
def test_sizes_roundtrip_anonymous(cluster, size):
    """Sizes around the edges, anonymous on the S3 port, with a Content-MD5 that matches."""
    name = bucket_name(f"size{size}")
    assert requests.put(f"{cluster.s3_endpoint}/{name}", timeout=30).status_code == 200
    data = payload(size, 38)
    put = requests.put(f"{cluster.s3_endpoint}/{name}/v", data=data, headers={"Content-MD5": md5_b64(data)}, timeout=30)
    assert put.status_code == 200
    assert put.headers["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = requests.get(f"{cluster.s3_endpoint}/{name}/v", timeout=30)
    assert got.content == data
    assert got.headers["Content-Length"] == str(size)
