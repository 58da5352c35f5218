"""Multipart uploads through boto3: several parts with a master restart
between two of them, list parts and uploads, abort, and the errors of
CompleteMultipartUpload. Parts are the 5 MiB minimum; the last one is small."""

import hashlib

import pytest
import requests
from botocore.exceptions import ClientError

from conftest import error_code, md5_b64, md5_hex, multipart_etag, payload

MIB = 1024 * 1024
PART = 5 * MIB


def upload_parts(s3, bucket, key, upload_id, parts, first=1):
    etags = []
    for number, data in enumerate(parts, start=first):
        answer = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data)
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert answer["ETag"] == f'"{md5_hex(data)}"', f"part {number}"
        etags.append(answer["ETag"])
    return etags


def test_multipart_across_restart(cluster, s3, bucket):
    key = "big/value.bin"
    parts = [payload(PART, 11), payload(PART, 12), payload(3000, 13)]
    created = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="application/x-test")
    upload_id = created["UploadId"]
    assert created["Bucket"] == bucket and created["Key"] == key and upload_id

    etags = upload_parts(s3, bucket, key, upload_id, parts[:1])
    uploads = s3.list_multipart_uploads(Bucket=bucket)
    assert [(u["Key"], u["UploadId"]) for u in uploads.get("Uploads", [])] == [(key, upload_id)]

    # The upload and its first part survive a SIGKILL of the master.
    cluster.restart_master()

    etags += upload_parts(s3, bucket, key, upload_id, parts[1:], first=2)
    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed["Parts"]] == [
        (i + 1, etags[i], len(parts[i])) for i in range(3)
    ]
    assert listed["UploadId"] == upload_id
    # A key being uploaded is not an object yet.
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket=bucket, Key=key)
    assert error_code(info.value)[0] == 404

    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": etags[i]} for i in range(3)]},
    )
    assert done["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert done["ETag"] == multipart_etag(parts)
    assert done["Key"] == key and done["Bucket"] == bucket

    whole = b"".join(parts)
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == len(whole)
    assert head["ETag"] == multipart_etag(parts)
    assert head["ContentType"] == "application/x-test"
    got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.md5(got).hexdigest() == md5_hex(whole)
    ranged = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={PART - 10}-{PART + 9}")["Body"].read()
    assert ranged == whole[PART - 10 : PART + 10]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with pytest.raises(ClientError) as info:
        s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
    assert error_code(info.value) == (404, "NoSuchUpload")

    # The native API sees one value: a 302 to a volume that holds all of it.
    native = requests.get(f"{cluster.endpoint}/{bucket}/{key}", allow_redirects=False, timeout=30)
    assert native.status_code == 302
    followed = requests.get(native.headers["Location"], timeout=30)
    assert hashlib.md5(followed.content).hexdigest() == md5_hex(whole)

    # And it is still all there after another restart, metadata included.
    cluster.restart_master()
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ETag"] == multipart_etag(parts)
    assert head["ContentType"] == "application/x-test"
    assert head["ContentLength"] == len(whole)
    got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.md5(got).hexdigest() == md5_hex(whole)


def test_abort_and_list_uploads(s3, bucket):
    first = s3.create_multipart_upload(Bucket=bucket, Key="m/one")["UploadId"]
    second = s3.create_multipart_upload(Bucket=bucket, Key="m/two")["UploadId"]
    assert first != second
    upload_parts(s3, bucket, "m/one", first, [payload(1000, 14)])
    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert sorted((u["Key"], u["UploadId"]) for u in uploads) == [("m/one", first), ("m/two", second)]
    prefixed = s3.list_multipart_uploads(Bucket=bucket, Prefix="m/t").get("Uploads", [])
    assert [u["Key"] for u in prefixed] == ["m/two"]

    aborted = s3.abort_multipart_upload(Bucket=bucket, Key="m/one", UploadId=first)
    assert aborted["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [second]
    with pytest.raises(ClientError) as info:
        s3.list_parts(Bucket=bucket, Key="m/one", UploadId=first)
    assert error_code(info.value) == (404, "NoSuchUpload")
    with pytest.raises(ClientError) as info:
        s3.upload_part(Bucket=bucket, Key="m/one", UploadId=first, PartNumber=2, Body=b"late")
    assert error_code(info.value) == (404, "NoSuchUpload")
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket=bucket, Key="m/one")
    assert error_code(info.value)[0] == 404
    s3.abort_multipart_upload(Bucket=bucket, Key="m/two", UploadId=second)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_no_such_upload(s3, bucket):
    bogus = "this-upload-id-does-not-exist"
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="x",
            UploadId=bogus,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": f'"{md5_hex(b"x")}"'}]},
        )
    assert error_code(info.value) == (404, "NoSuchUpload")
    with pytest.raises(ClientError) as info:
        s3.upload_part(Bucket=bucket, Key="x", UploadId=bogus, PartNumber=1, Body=b"x")
    assert error_code(info.value) == (404, "NoSuchUpload")
    with pytest.raises(ClientError) as info:
        s3.abort_multipart_upload(Bucket=bucket, Key="x", UploadId=bogus)
    assert error_code(info.value) == (404, "NoSuchUpload")


def test_invalid_part(s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="ip")["UploadId"]
    etags = upload_parts(s3, bucket, "ip", upload_id, [payload(1000, 15)])
    for parts in (
        [{"PartNumber": 1, "ETag": f'"{md5_hex(b"not the part")}"'}],  # wrong ETag
        [{"PartNumber": 2, "ETag": etags[0]}],  # never uploaded
    ):
        with pytest.raises(ClientError) as info:
            s3.complete_multipart_upload(Bucket=bucket, Key="ip", UploadId=upload_id, MultipartUpload={"Parts": parts})
        assert error_code(info.value) == (400, "InvalidPart"), parts
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket=bucket, Key="ip")
    assert error_code(info.value)[0] == 404
    # A failed Complete leaves the upload usable.
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="ip", UploadId=upload_id, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etags[0]}]}
    )
    assert done["ETag"] == multipart_etag([payload(1000, 15)])
    assert s3.get_object(Bucket=bucket, Key="ip")["Body"].read() == payload(1000, 15)


def test_invalid_part_order_and_too_small(s3, bucket):
    # Order: two full-size parts listed backwards (neither is too small either way).
    parts = [payload(PART, 16), payload(PART, 17)]
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="order")["UploadId"]
    etags = upload_parts(s3, bucket, "order", upload_id, parts)
    backwards = [{"PartNumber": 2, "ETag": etags[1]}, {"PartNumber": 1, "ETag": etags[0]}]
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(Bucket=bucket, Key="order", UploadId=upload_id, MultipartUpload={"Parts": backwards})
    assert error_code(info.value) == (400, "InvalidPartOrder")
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="order", UploadId=upload_id, MultipartUpload={"Parts": backwards[::-1]}
    )
    assert done["ETag"] == multipart_etag(parts)
    assert s3.get_object(Bucket=bucket, Key="order")["Body"].read() == b"".join(parts)

    # Size: a non-last part under 5 MiB.
    small = [payload(PART - 1, 18), payload(10, 19)]
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="small")["UploadId"]
    etags = upload_parts(s3, bucket, "small", upload_id, small)
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="small",
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": etags[i]} for i in range(2)]},
        )
    assert error_code(info.value) == (400, "EntityTooSmall")
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket=bucket, Key="small")
    assert error_code(info.value)[0] == 404
    s3.abort_multipart_upload(Bucket=bucket, Key="small", UploadId=upload_id)


def test_upload_part_bad_digest(s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="bd")["UploadId"]
    with pytest.raises(ClientError) as info:
        s3.upload_part(
            Bucket=bucket, Key="bd", UploadId=upload_id, PartNumber=1, Body=b"part bytes", ContentMD5=md5_b64(b"other")
        )
    assert error_code(info.value) == (400, "BadDigest")
    assert s3.list_parts(Bucket=bucket, Key="bd", UploadId=upload_id).get("Parts", []) == []
    s3.abort_multipart_upload(Bucket=bucket, Key="bd", UploadId=upload_id)


def test_part_overwrite_and_subset(s3, bucket):
    """Re-uploading a part number replaces it; Complete may leave parts out."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="sub")["UploadId"]
    upload_parts(s3, bucket, "sub", upload_id, [payload(100, 20), payload(200, 21), payload(300, 22)])
    replaced = payload(150, 23)
    etag1 = upload_parts(s3, bucket, "sub", upload_id, [replaced])[0]
    listed = s3.list_parts(Bucket=bucket, Key="sub", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(1, 150), (2, 200), (3, 300)]
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="sub", UploadId=upload_id, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag1}]}
    )
    assert done["ETag"] == multipart_etag([replaced])
    assert s3.get_object(Bucket=bucket, Key="sub")["Body"].read() == replaced


def test_transfer_manager_concurrent(s3, bucket, tmp_path):
    """boto3's transfer manager: three 5 MiB-ish parts uploaded by concurrent threads,
    then a ranged, concurrent download (with If-Match, as boto3 sends above 8 MB)."""
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=3)
    data = payload(2 * PART + 4096, 24)
    src = tmp_path / "up"
    src.write_bytes(data)
    s3.upload_file(str(src), bucket, "tm/big", Config=config)
    head = s3.head_object(Bucket=bucket, Key="tm/big")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == multipart_etag([data[:PART], data[PART : 2 * PART], data[2 * PART :]])
    dst = tmp_path / "down"
    s3.download_file(bucket, "tm/big", str(dst), Config=config)
    assert hashlib.md5(dst.read_bytes()).hexdigest() == md5_hex(data)
