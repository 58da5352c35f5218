"""boto3 against the master's main port: objects, buckets, listing, copy,
multi-delete, conditional and ranged reads, errors, presigned URLs."""

import datetime as dt
import hashlib

import pytest
import requests
from botocore.exceptions import ClientError

from conftest import boto3_client, bucket_name, error_code, md5_b64, md5_hex, payload


def now():
    return dt.datetime.now(dt.timezone.utc)


# ---- objects -------------------------------------------------------------------


def test_put_get_head_delete(s3, bucket):
    data = payload(3000, 1)
    put = s3.put_object(Bucket=bucket, Key="dir/obj", Body=data)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert put["ETag"] == f'"{md5_hex(data)}"'

    got = s3.get_object(Bucket=bucket, Key="dir/obj")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert got["Body"].read() == data
    assert got["ContentLength"] == len(data)
    assert got["ETag"] == f'"{md5_hex(data)}"'
    assert got["ContentType"] == "binary/octet-stream"

    head = s3.head_object(Bucket=bucket, Key="dir/obj")
    assert head["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == f'"{md5_hex(data)}"'
    assert head["AcceptRanges"] == "bytes"
    assert abs((head["LastModified"] - now()).total_seconds()) < 120

    delete = s3.delete_object(Bucket=bucket, Key="dir/obj")
    assert delete["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="dir/obj")
    assert error_code(info.value) == (404, "NoSuchKey")
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket=bucket, Key="dir/obj")
    assert error_code(info.value)[0] == 404


def test_delete_absent_is_204(s3, bucket):
    delete = s3.delete_object(Bucket=bucket, Key="never-was")
    assert delete["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_zero_bytes(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert put["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    got = s3.get_object(Bucket=bucket, Key="empty")
    assert got["ContentLength"] == 0
    assert got["Body"].read() == b""
    head = s3.head_object(Bucket=bucket, Key="empty")
    assert head["ContentLength"] == 0
    assert head["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("empty", 0)]


def test_overwrite(s3, bucket):
    first, second = payload(2000, 2), payload(1234, 3)
    s3.put_object(Bucket=bucket, Key="k", Body=first)
    put = s3.put_object(Bucket=bucket, Key="k", Body=second)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert put["ETag"] == f'"{md5_hex(second)}"'
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == second
    assert got["ETag"] == f'"{md5_hex(second)}"'
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"], o["ETag"]) for o in listed] == [("k", 1234, f'"{md5_hex(second)}"')]


def test_content_type_and_odd_keys(s3, bucket):
    keys = ["a b/c+d", "ünï/cödé", "x&y<z>'\"", "deep/er/and/deeper/file.txt", "q?x=1#frag"]
    for i, key in enumerate(keys):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode(), ContentType=f"text/x-test{i}")
    for i, key in enumerate(keys):
        got = s3.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == key.encode(), key
        assert got["ContentType"] == f"text/x-test{i}", key
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(keys, key=lambda k: k.encode())


def test_range(s3, bucket):
    data = payload(1000, 4)
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    for header, expected, content_range in [
        ("bytes=10-19", data[10:20], "bytes 10-19/1000"),
        ("bytes=990-", data[990:], "bytes 990-999/1000"),
        ("bytes=-5", data[-5:], "bytes 995-999/1000"),
        ("bytes=995-5000", data[995:], "bytes 995-999/1000"),
        ("bytes=0-0", data[:1], "bytes 0-0/1000"),
    ]:
        got = s3.get_object(Bucket=bucket, Key="r", Range=header)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206, header
        assert got["ContentRange"] == content_range, header
        assert got["ContentLength"] == len(expected), header
        assert got["Body"].read() == expected, header
        assert got["ETag"] == f'"{md5_hex(data)}"'
    for header in ("bytes=1000-", "bytes=5000-6000"):
        with pytest.raises(ClientError) as info:
            s3.get_object(Bucket=bucket, Key="r", Range=header)
        assert error_code(info.value) == (416, "InvalidRange"), header


def test_conditional_get(s3, bucket):
    data = payload(500, 5)
    etag = s3.put_object(Bucket=bucket, Key="c", Body=data)["ETag"]
    got = s3.get_object(Bucket=bucket, Key="c", IfMatch=etag)
    assert got["Body"].read() == data
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert error_code(info.value) == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert error_code(info.value)[0] == 304
    got = s3.get_object(Bucket=bucket, Key="c", IfNoneMatch='"0123456789abcdef0123456789abcdef"')
    assert got["Body"].read() == data
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=now() + dt.timedelta(hours=1))
    assert error_code(info.value)[0] == 304
    got = s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=now() - dt.timedelta(days=1))
    assert got["Body"].read() == data
    # HEAD honours them too.
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket=bucket, Key="c", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert error_code(info.value)[0] == 412
    # Range plus a matching If-Match, as s3fs sends.
    got = s3.get_object(Bucket=bucket, Key="c", IfMatch=etag, Range="bytes=100-199")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["Body"].read() == data[100:200]


def test_copy_object(s3, bucket):
    other = bucket_name("copy-target")
    s3.create_bucket(Bucket=other)
    data = payload(4000, 6)
    etag = s3.put_object(Bucket=bucket, Key="src dir/a+b", Body=data, ContentType="text/x-src")["ETag"]
    copied = s3.copy_object(Bucket=other, Key="dst/c", CopySource={"Bucket": bucket, "Key": "src dir/a+b"})
    assert copied["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert copied["CopyObjectResult"]["ETag"] == etag
    got = s3.get_object(Bucket=other, Key="dst/c")
    assert got["Body"].read() == data
    assert got["ETag"] == etag
    assert got["ContentType"] == "text/x-src"
    # The source is untouched; a copy within one bucket works too.
    assert s3.get_object(Bucket=bucket, Key="src dir/a+b")["Body"].read() == data
    s3.copy_object(Bucket=bucket, Key="same-bucket", CopySource=f"{bucket}/src dir/a+b")
    assert s3.get_object(Bucket=bucket, Key="same-bucket")["Body"].read() == data
    # Copying over an existing key replaces it.
    s3.put_object(Bucket=bucket, Key="over", Body=b"old")
    s3.copy_object(Bucket=bucket, Key="over", CopySource={"Bucket": bucket, "Key": "src dir/a+b"})
    assert s3.get_object(Bucket=bucket, Key="over")["Body"].read() == data
    with pytest.raises(ClientError) as info:
        s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "absent"})
    assert error_code(info.value) == (404, "NoSuchKey")


def test_delete_objects(s3, bucket):
    keys = [f"md/{i}" for i in range(5)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    loud = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[:3]] + [{"Key": "md/absent"}]}
    )
    assert loud["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert sorted(d["Key"] for d in loud["Deleted"]) == sorted(keys[:3] + ["md/absent"])
    assert loud.get("Errors", []) == []
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert listed == keys[3:]
    quiet = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[3:]], "Quiet": True})
    assert quiet["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert quiet.get("Deleted", []) == []
    assert quiet.get("Errors", []) == []
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_bad_digest(s3, bucket):
    data = payload(700, 7)
    s3.put_object(Bucket=bucket, Key="kept", Body=b"original")
    for key in ("new", "kept"):
        with pytest.raises(ClientError) as info:
            s3.put_object(Bucket=bucket, Key=key, Body=data, ContentMD5=md5_b64(b"something else"))
        assert error_code(info.value) == (400, "BadDigest"), key
    # Nothing was written: no new key, the old value stays.
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket=bucket, Key="new")
    assert error_code(info.value)[0] == 404
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"original"
    # The right Content-MD5 is accepted.
    put = s3.put_object(Bucket=bucket, Key="good", Body=data, ContentMD5=md5_b64(data))
    assert put["ETag"] == f'"{md5_hex(data)}"'
    assert s3.get_object(Bucket=bucket, Key="good")["Body"].read() == data


def test_bad_digest_large_body_then_reuse(s3, bucket):
    """A 2 MiB body refused for its Content-MD5 (boto3 sends Expect: 100-continue),
    then more requests on the same pooled connections."""
    data = payload(2 * 1024 * 1024, 60)
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=bucket, Key="big-bad", Body=data, ContentMD5=md5_b64(b"x"))
    assert error_code(info.value) == (400, "BadDigest")
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"after{i}", Body=data[: 1000 * (i + 1)])
        assert s3.get_object(Bucket=bucket, Key=f"after{i}")["Body"].read() == data[: 1000 * (i + 1)]


def test_range_of_empty_object(s3, bucket):
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="empty", Range="bytes=0-")
    assert error_code(info.value) == (416, "InvalidRange")


def test_errors_no_such(s3, bucket):
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="absent")
    assert error_code(info.value) == (404, "NoSuchKey")
    absent = bucket_name("absent-bucket")
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=absent, Key="k")
    assert error_code(info.value) == (404, "NoSuchBucket")
    # (A write makes the bucket: test_implicit_buckets.py.)
    with pytest.raises(ClientError) as info:
        s3.list_objects_v2(Bucket=absent)
    assert error_code(info.value) == (404, "NoSuchBucket")


def test_not_implemented(s3, bucket):
    s3.put_object(Bucket=bucket, Key="t", Body=b"x")
    with pytest.raises(ClientError) as info:
        s3.get_object_tagging(Bucket=bucket, Key="t")
    assert error_code(info.value) == (501, "NotImplemented")
    with pytest.raises(ClientError) as info:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert error_code(info.value) == (501, "NotImplemented")
    # And nothing happened to the object.
    assert s3.get_object(Bucket=bucket, Key="t")["Body"].read() == b"x"


# ---- buckets ---------------------------------------------------------------------


def test_buckets(s3):
    name = bucket_name("lifecycle")
    with pytest.raises(ClientError) as info:
        s3.head_bucket(Bucket=name)
    assert error_code(info.value)[0] == 404
    assert s3.create_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.list_objects_v2(Bucket=name)["KeyCount"] == 0
    location = s3.get_bucket_location(Bucket=name)
    assert location.get("LocationConstraint") in (None, "", "us-east-1")
    assert s3.get_bucket_versioning(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200

    s3.put_object(Bucket=name, Key="x", Body=b"1")
    with pytest.raises(ClientError) as info:
        s3.delete_bucket(Bucket=name)
    assert error_code(info.value) == (409, "BucketNotEmpty")
    assert s3.get_object(Bucket=name, Key="x")["Body"].read() == b"1"
    s3.delete_object(Bucket=name, Key="x")
    assert s3.delete_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as info:
        s3.head_bucket(Bucket=name)
    assert error_code(info.value)[0] == 404
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


# ---- listing ---------------------------------------------------------------------

TREE = ["a/1", "a/2", "a/b/3", "a/b/4", "b/5", "c", "d/e/f/6"]


@pytest.fixture
def tree(s3, bucket):
    for key in TREE:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode() * 3)
    return bucket


def test_list_v2_prefix_delimiter(s3, tree):
    everything = s3.list_objects_v2(Bucket=tree)
    assert [o["Key"] for o in everything["Contents"]] == TREE
    assert everything["KeyCount"] == len(TREE)
    assert everything["IsTruncated"] is False
    first = everything["Contents"][0]
    assert first["Size"] == 9
    assert first["ETag"] == f'"{md5_hex(b"a/1" * 3)}"'
    assert first["StorageClass"] == "STANDARD"
    assert abs((first["LastModified"] - now()).total_seconds()) < 120

    prefixed = s3.list_objects_v2(Bucket=tree, Prefix="a/")
    assert [o["Key"] for o in prefixed["Contents"]] == ["a/1", "a/2", "a/b/3", "a/b/4"]
    assert prefixed["Prefix"] == "a/"

    top = s3.list_objects_v2(Bucket=tree, Delimiter="/")
    assert [o["Key"] for o in top["Contents"]] == ["c"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/", "b/", "d/"]
    assert top["KeyCount"] == 4

    inner = s3.list_objects_v2(Bucket=tree, Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in inner["Contents"]] == ["a/1", "a/2"]
    assert [p["Prefix"] for p in inner["CommonPrefixes"]] == ["a/b/"]

    none = s3.list_objects_v2(Bucket=tree, Prefix="zzz")
    assert none["KeyCount"] == 0
    assert "Contents" not in none


def test_list_v2_pagination(s3, tree):
    keys, token, pages = [], None, 0
    while True:
        args = {"Bucket": tree, "MaxKeys": 2}
        if token:
            args["ContinuationToken"] = token
        page = s3.list_objects_v2(**args)
        pages += 1
        assert page["MaxKeys"] == 2
        assert page["KeyCount"] == len(page.get("Contents", []))
        assert page["KeyCount"] <= 2
        keys += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            assert "NextContinuationToken" not in page
            break
        token = page["NextContinuationToken"]
        assert pages < 10
    assert keys == TREE
    assert pages == 4

    after = s3.list_objects_v2(Bucket=tree, StartAfter="a/b/3")
    assert [o["Key"] for o in after["Contents"]] == ["a/b/4", "b/5", "c", "d/e/f/6"]
    assert after["StartAfter"] == "a/b/3"

    # Pages with a delimiter: a common prefix counts as one entry.
    entries, token = [], None
    while True:
        args = {"Bucket": tree, "MaxKeys": 1, "Delimiter": "/"}
        if token:
            args["ContinuationToken"] = token
        page = s3.list_objects_v2(**args)
        entries += [o["Key"] for o in page.get("Contents", [])]
        entries += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        assert page["KeyCount"] == 1
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
        assert len(entries) < 10
    assert entries == ["a/", "b/", "c", "d/"]

    # boto3's paginator (what most code uses) agrees.
    paginated = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=tree, PaginationConfig={"PageSize": 3})
        for o in page.get("Contents", [])
    ]
    assert paginated == TREE


def test_list_v1(s3, tree):
    everything = s3.list_objects(Bucket=tree)
    assert [o["Key"] for o in everything["Contents"]] == TREE
    assert everything["IsTruncated"] is False
    assert everything["Contents"][2]["Size"] == 15

    inner = s3.list_objects(Bucket=tree, Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in inner["Contents"]] == ["a/1", "a/2"]
    assert [p["Prefix"] for p in inner["CommonPrefixes"]] == ["a/b/"]

    marker_page = s3.list_objects(Bucket=tree, Marker="b/5")
    assert [o["Key"] for o in marker_page["Contents"]] == ["c", "d/e/f/6"]
    assert marker_page["Marker"] == "b/5"

    # Pages of 2 without a delimiter: the next marker is the last key.
    keys, marker = [], ""
    for _ in range(10):
        page = s3.list_objects(Bucket=tree, MaxKeys=2, Marker=marker)
        got = [o["Key"] for o in page.get("Contents", [])]
        assert len(got) <= 2
        keys += got
        if not page["IsTruncated"]:
            break
        marker = page.get("NextMarker", got[-1])
    assert keys == TREE

    # With a delimiter a truncated page must say NextMarker.
    entries, marker = [], ""
    for _ in range(10):
        page = s3.list_objects(Bucket=tree, MaxKeys=1, Delimiter="/", Marker=marker)
        entries += [o["Key"] for o in page.get("Contents", [])] + [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        if not page["IsTruncated"]:
            break
        marker = page["NextMarker"]
    assert entries == ["a/", "b/", "c", "d/"]


def test_list_other_delimiter(s3, bucket):
    for key in ["x-1", "x-2-a", "x-2-b", "y", "z-"]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"1")
    top = s3.list_objects_v2(Bucket=bucket, Delimiter="-")
    assert [o["Key"] for o in top["Contents"]] == ["y"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["x-", "z-"]
    inner = s3.list_objects_v2(Bucket=bucket, Prefix="x-", Delimiter="-")
    assert [o["Key"] for o in inner.get("Contents", [])] == ["x-1"]
    assert [p["Prefix"] for p in inner["CommonPrefixes"]] == ["x-2-"]
    exact = s3.list_objects_v2(Bucket=bucket, Prefix="z-", Delimiter="-")
    assert [o["Key"] for o in exact["Contents"]] == ["z-"]
    assert "CommonPrefixes" not in exact


def test_list_encoding_type_url(s3, bucket):
    keys = ["sp ace/x", "plus+/y", "amp&lt/<z>", "ünï"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"1")
    # boto3 asks for encoding-type=url and decodes only when the answer says so.
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(keys, key=lambda k: k.encode())
    listed_v1 = [o["Key"] for o in s3.list_objects(Bucket=bucket)["Contents"]]
    assert listed_v1 == sorted(keys, key=lambda k: k.encode())
    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["amp&lt/", "plus+/", "sp ace/"]


def test_list_object_versions_stub(s3, tree):
    """ListObjectVersions (probed by some clients): the current objects, as "null" versions."""
    versions = s3.list_object_versions(Bucket=tree, Prefix="a/")
    assert [(v["Key"], v["IsLatest"]) for v in versions["Versions"]] == [
        ("a/1", True),
        ("a/2", True),
        ("a/b/3", True),
        ("a/b/4", True),
    ]
    assert versions["Versions"][0]["Size"] == 9


def test_delete_objects_thousand(s3, bucket):
    """One DeleteObjects of 1000 keys (the S3 maximum), most of them absent."""
    present = [f"k{i:04d}" for i in range(0, 1000, 100)]
    for key in present:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"k{i:04d}"} for i in range(1000)]})
    assert len(answer["Deleted"]) == 1000
    assert answer.get("Errors", []) == []
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


# ---- presigned URLs --------------------------------------------------------------


def test_presigned_get_and_put(cluster, s3, bucket):
    """SigV4 presigned URLs (X-Amz-* query parameters): S3 answers on the main port."""
    signer = boto3_client(cluster.endpoint, signature_version="s3v4")
    data = payload(2500, 8)
    s3.put_object(Bucket=bucket, Key="pre/signed", Body=data)
    url = signer.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre/signed"}, ExpiresIn=600)
    assert "X-Amz-Signature=" in url
    got = requests.get(url, allow_redirects=False, timeout=30)
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["ETag"] == f'"{md5_hex(data)}"'

    new = payload(1800, 9)
    put_url = signer.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "pre/put"}, ExpiresIn=600)
    put = requests.put(put_url, data=new, timeout=30)
    assert put.status_code == 200
    assert put.headers["ETag"] == f'"{md5_hex(new)}"'
    assert s3.get_object(Bucket=bucket, Key="pre/put")["Body"].read() == new


def test_presigned_default_signature(s3, bucket):
    """boto3's default presigned URL here is SigV2 (AWSAccessKeyId, Signature, Expires):
    whatever answers it (S3, or the native API with its 302), a client that follows
    redirects gets the bytes, and a presigned PUT stores them."""
    data = payload(2100, 50)
    s3.put_object(Bucket=bucket, Key="pre/v2", Body=data)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre/v2"}, ExpiresIn=600)
    got = requests.get(url, timeout=30)
    assert got.status_code == 200
    assert got.content == data
    new = payload(900, 51)
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "pre/v2put"}, ExpiresIn=600)
    put = requests.put(put_url, data=new, timeout=30)
    assert put.status_code in (200, 201)
    assert s3.get_object(Bucket=bucket, Key="pre/v2put")["Body"].read() == new


def test_transfer_manager_download(s3, bucket, tmp_path):
    """boto3's managed download (HEAD, then GETs) of a value written with upload_file."""
    data = payload(70_000, 10)
    src = tmp_path / "up"
    src.write_bytes(data)
    s3.upload_file(str(src), bucket, "tm/file")
    dst = tmp_path / "down"
    s3.download_file(bucket, "tm/file", str(dst))
    assert hashlib.md5(dst.read_bytes()).hexdigest() == md5_hex(data)
