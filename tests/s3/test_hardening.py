"""boto3 against what S3 hardening changed: refusals instead of silence,
UploadPartCopy (boto3's managed copy over its multipart threshold),
response-* overrides of presigned downloads, ranges past 64 bits, 416's
Content-Range, concurrent writers of one key, -protect."""

import concurrent.futures

import pytest
import requests
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from conftest import error_code, md5_hex, payload

MIB = 1024 * 1024


def test_managed_copy_over_the_multipart_threshold_uses_upload_part_copy(s3, bucket):
    data = payload(12 * MIB + 123, 1)
    s3.put_object(Bucket=bucket, Key="src", Body=data)
    config = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    s3.copy({"Bucket": bucket, "Key": "src"}, bucket, "dst", Config=config)
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["Body"].read() == data
    assert got["ETag"].endswith('-3"'), got["ETag"]


def test_upload_part_copy_ranges(s3, bucket):
    data = payload(6 * MIB, 2)
    s3.put_object(Bucket=bucket, Key="src", Body=data)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="joined")["UploadId"]
    first = s3.upload_part_copy(
        Bucket=bucket, Key="joined", UploadId=upload, PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange=f"bytes=0-{5 * MIB - 1}",
    )
    assert first["CopyPartResult"]["ETag"] == f'"{md5_hex(data[:5 * MIB])}"'
    s3.upload_part_copy(
        Bucket=bucket, Key="joined", UploadId=upload, PartNumber=2,
        CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange="bytes=10-19",
    )
    with pytest.raises(ClientError) as refused:
        s3.upload_part_copy(
            Bucket=bucket, Key="joined", UploadId=upload, PartNumber=3,
            CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange=f"bytes=0-{6 * MIB}",
        )
    assert error_code(refused.value) == (416, "InvalidRange")
    parts = s3.list_parts(Bucket=bucket, Key="joined", UploadId=upload)["Parts"]
    s3.complete_multipart_upload(
        Bucket=bucket, Key="joined", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]},
    )
    assert s3.get_object(Bucket=bucket, Key="joined")["Body"].read() == data[:5 * MIB] + data[10:20]


def test_presigned_download_overrides_response_headers(s3, bucket):
    s3.put_object(Bucket=bucket, Key="report", Body=b"data", ContentType="text/plain")
    url = s3.generate_presigned_url(
        "get_object",
        Params={
            "Bucket": bucket,
            "Key": "report",
            "ResponseContentType": "application/pdf",
            "ResponseContentDisposition": 'attachment; filename="r.pdf"',
            "ResponseCacheControl": "no-cache",
        },
    )
    got = requests.get(url, timeout=10)
    assert got.status_code == 200 and got.content == b"data"
    assert got.headers["Content-Type"] == "application/pdf"
    assert got.headers["Content-Disposition"] == 'attachment; filename="r.pdf"'
    assert got.headers["Cache-Control"] == "no-cache"


def test_ranges_past_64_bits_and_unsatisfiable_ranges(s3, bucket, cluster):
    s3.put_object(Bucket=bucket, Key="r", Body=b"0123456789")
    got = s3.get_object(Bucket=bucket, Key="r", Range="bytes=0-99999999999999999999")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["ContentRange"] == "bytes 0-9/10"
    url = f"{cluster.endpoint}/{bucket}/r"
    refused = requests.get(url, headers={"Range": "bytes=20-30", "x-amz-content-sha256": "UNSIGNED-PAYLOAD"}, timeout=10)
    assert refused.status_code == 416
    assert refused.headers["Content-Range"] == "bytes */10"


def test_unsupported_features_are_refused(s3, bucket):
    for extra in (
        {"ServerSideEncryption": "AES256"},
        {"Tagging": "a=b"},
        {"ACL": "public-read"},
        {"StorageClass": "GLACIER"},
    ):
        with pytest.raises(ClientError) as refused:
            s3.put_object(Bucket=bucket, Key="x", Body=b"secret", **extra)
        assert error_code(refused.value)[0] == 501, extra
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="x")
    s3.put_object(Bucket=bucket, Key="v", Body=b"current")
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=bucket, Key="v", VersionId="3HL4kqtJlcpXroDTDmJ-rmSpXd3dIbrHY")
    assert error_code(refused.value)[0] == 400
    assert s3.get_object(Bucket=bucket, Key="v")["Body"].read() == b"current"
    for call in (s3.get_public_access_block, s3.get_bucket_ownership_controls, s3.get_bucket_policy_status):
        with pytest.raises(ClientError) as refused:
            call(Bucket=bucket)
        assert error_code(refused.value)[0] == 501, call


def test_concurrent_writers_of_one_key_all_succeed(s3, bucket):
    bodies = [payload(2 * MIB, seed) for seed in range(6)]

    def put(body):
        return s3.put_object(Bucket=bucket, Key="contended", Body=body)["ETag"]

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        etags = list(pool.map(put, bodies))
    assert sorted(etags) == sorted(f'"{md5_hex(body)}"' for body in bodies)
    final = s3.get_object(Bucket=bucket, Key="contended")
    data = final["Body"].read()
    assert data in bodies
    assert final["ETag"] == f'"{md5_hex(data)}"'


def test_multipart_checksums_are_checked_and_composed(s3, bucket):
    import base64
    import zlib

    parts = [payload(5 * MIB, 7), payload(1000, 8)]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm="CRC32")["UploadId"]
    listed = []
    for number, data in enumerate(parts, 1):
        answer = s3.upload_part(
            Bucket=bucket, Key="mp", UploadId=upload, PartNumber=number, Body=data, ChecksumAlgorithm="CRC32"
        )
        expected = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
        assert answer["ChecksumCRC32"] == expected
        listed.append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumCRC32": expected})
    wrong = [dict(listed[0], ChecksumCRC32="AAAAAA=="), listed[1]]
    with pytest.raises(ClientError) as refused:
        s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": wrong})
    assert error_code(refused.value) == (400, "InvalidPart")
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": listed})
    raw = b"".join(zlib.crc32(data).to_bytes(4, "big") for data in parts)
    composite = base64.b64encode(zlib.crc32(raw).to_bytes(4, "big")).decode() + "-2"
    assert done["ChecksumCRC32"] == composite
    head = s3.head_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == composite
