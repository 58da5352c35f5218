"""GetObject/HeadObject by partNumber, request ids, and what a client really
sent: bodies without a length, `Expect` values other than 100-continue, a
body longer than its Content-Length with a Content-MD5, pyarrow's
anonymous 0-byte directory markers on the main port."""

import base64
import hashlib
import re
import socket
import time
from urllib.parse import unquote

import pytest
from botocore.exceptions import ClientError

from conftest import REGION, error_code, payload, xml_error

MIB = 1024 * 1024


def send(port, request: bytes, timeout=10.0) -> bytes:
    """Write `request` on a fresh connection and read until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(request)
        received = b""
        while True:
            try:
                data = conn.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            received += data
    return received


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def header_of(response: bytes, name: str):
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    found = re.search(rf"^{re.escape(name)}: *(.*?)\r?$", head, re.IGNORECASE | re.MULTILINE)
    return found.group(1) if found else None


def body_of(response: bytes) -> bytes:
    return response.split(b"\r\n\r\n", 1)[1]


def exists(s3, bucket, key):
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as error:
        assert error_code(error)[0] == 404
        return False


def test_get_and_head_by_part_number(cluster, s3, bucket):
    sizes = [5 * MIB, 5 * MIB, 1000]
    data = [payload(size, seed) for seed, size in enumerate(sizes)]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    parts = []
    for number, part in enumerate(data, 1):
        etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=number, Body=part)["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": parts})
    first = 0
    for number, part in enumerate(data, 1):
        got = s3.get_object(Bucket=bucket, Key="mp", PartNumber=number)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["Body"].read() == part
        assert got["PartsCount"] == 3
        assert got["ETag"] == done["ETag"]
        assert got["ContentRange"] == f"bytes {first}-{first + len(part) - 1}/{sum(sizes)}"
        headed = s3.head_object(Bucket=bucket, Key="mp", PartNumber=number)
        assert (headed["ContentLength"], headed["PartsCount"]) == (len(part), 3)
        first += len(part)

    for number, expected in ((4, (416, "InvalidPartNumber")), (0, (400, "InvalidArgument"))):
        with pytest.raises(ClientError) as raised:
            s3.get_object(Bucket=bucket, Key="mp", PartNumber=number)
        assert error_code(raised.value) == expected
    with pytest.raises(ClientError) as raised:
        s3.get_object(Bucket=bucket, Key="mp", PartNumber=1, Range="bytes=0-1")
    assert error_code(raised.value) == (400, "InvalidRequest")
    for number in ("+1", "1.0", "", "-1"):
        response = send(
            cluster.s3_port,
            f"GET /{bucket}/mp?partNumber={number} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
        )
        assert status_of(response) == 400, number

    # A copy is one part; new metadata on the same bytes keeps the parts.
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "mp"})
    copied = s3.get_object(Bucket=bucket, Key="copy", PartNumber=1)
    assert copied["ContentLength"] == sum(sizes) and "PartsCount" not in copied
    s3.copy_object(
        Bucket=bucket,
        Key="mp",
        CopySource={"Bucket": bucket, "Key": "mp"},
        MetadataDirective="REPLACE",
        Metadata={"colour": "blue"},
    )
    again = s3.get_object(Bucket=bucket, Key="mp", PartNumber=3)
    assert (again["Body"].read(), again["PartsCount"], again["Metadata"]) == (data[2], 3, {"colour": "blue"})
    # The part sizes are mkv's own: never user metadata.
    assert s3.head_object(Bucket=bucket, Key="mp")["Metadata"] == {"colour": "blue"}


def test_a_single_part_value_is_part_one(s3, bucket):
    s3.put_object(Bucket=bucket, Key="single", Body=b"body")
    got = s3.get_object(Bucket=bucket, Key="single", PartNumber=1)
    assert got["Body"].read() == b"body" and "PartsCount" not in got
    with pytest.raises(ClientError) as raised:
        s3.head_object(Bucket=bucket, Key="single", PartNumber=2)
    assert error_code(raised.value)[0] == 416


def test_user_metadata_cannot_pose_as_mkvs_own_entries(cluster, s3, bucket):
    for name in ("!x-amz-checksum-crc32", "!parts"):
        with pytest.raises(ClientError) as raised:
            s3.put_object(Bucket=bucket, Key="forged", Body=b"x", Metadata={name: "AAAAAA=="})
        assert error_code(raised.value) == (400, "InvalidArgument")
        assert not exists(s3, bucket, "forged")


def test_request_ids_are_unique_and_name_the_error(cluster, bucket):
    ids = set()
    for _ in range(3):
        response = send(
            cluster.s3_port,
            f"GET /{bucket}/missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
        )
        assert status_of(response) == 404
        request_id = header_of(response, "x-amz-request-id")
        assert re.fullmatch(r"[0-9A-F]{16}", request_id), request_id
        assert xml_error(body_of(response)) == "NoSuchKey"
        assert f"<RequestId>{request_id}</RequestId>".encode() in body_of(response)
        ids.add(request_id)
    ok = send(cluster.s3_port, f"HEAD /{bucket} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    ids.add(header_of(ok, "x-amz-request-id"))
    assert len(ids) == 4 and None not in ids


def test_a_put_without_a_length_is_411_and_stores_nothing(cluster, s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="nolength")["UploadId"]
    for path in (f"/{bucket}/nolength", f"/{bucket}/nolength?partNumber=1&uploadId={upload}"):
        response = send(
            cluster.s3_port,
            f"PUT {path} HTTP/1.1\r\nHost: x\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
        assert (status_of(response), xml_error(body_of(response))) == (411, "MissingContentLength")
    assert not exists(s3, bucket, "nolength")
    assert "Parts" not in s3.list_parts(Bucket=bucket, Key="nolength", UploadId=upload)
    # An empty value says so.
    response = send(
        cluster.s3_port,
        f"PUT /{bucket}/empty HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode(),
    )
    assert status_of(response) == 200
    assert s3.head_object(Bucket=bucket, Key="empty")["ContentLength"] == 0


def test_s3_ignores_expect_values_other_than_100_continue(cluster, s3, bucket):
    s3.put_object(Bucket=bucket, Key="e", Body=b"x")
    for expect in ("200", ""):
        for port in (cluster.s3_port, cluster.port):
            response = send(
                port,
                f"GET /{bucket}/e HTTP/1.1\r\nHost: x\r\nExpect: {expect}\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n"
                "Connection: close\r\n\r\n".encode(),
            )
            assert status_of(response) == 200, (expect, port)
            assert body_of(response) == b"x"
    # The native API answers as Go's net/http does.
    response = send(cluster.port, b"GET /e HTTP/1.1\r\nHost: x\r\nExpect: 200\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 417


def test_a_body_cut_by_its_content_length_is_a_bad_digest(cluster, s3, bucket):
    def put(key, md5_of, sent):
        md5 = base64.b64encode(hashlib.md5(md5_of).digest()).decode()
        return send(
            cluster.s3_port,
            f"PUT /{bucket}/{key} HTTP/1.1\r\nHost: x\r\nContent-MD5: {md5}\r\nContent-Length: 2\r\n"
            "Connection: close\r\n\r\n".encode() + sent,
        )

    # What a client whose Content-Length is one short sends: the md5 of
    # all it meant to send, which the two bytes read do not match.
    response = put("cut", b"bar", b"bar")
    assert (status_of(response), xml_error(body_of(response))) == (400, "BadDigest")
    # The two bytes match their md5, and what follows is no request.
    response = put("longer", b"ba", b"bar")
    assert status_of(response) == 400 and xml_error(body_of(response)) != "BadDigest"
    for key in ("cut", "longer"):
        assert not exists(s3, bucket, key)
    # Two bytes, then the next request: stored.
    response = put("exact", b"ba", b"ba")
    assert status_of(response) == 200
    assert s3.get_object(Bucket=bucket, Key="exact")["Body"].read() == b"ba"


def test_pyarrow_makes_directories_on_the_main_port(cluster, s3, bucket):
    """pyarrow's anonymous 0-byte `dir/` marker PUT carries no x-amz-*
    header, only the AWS SDK's amz-sdk-* ones: it is S3, not a native
    PUT of an empty body (411)."""
    from pyarrow import fs

    arrow = fs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{cluster.port}",
        scheme="http",
        anonymous=True,
        region=REGION,
        connect_timeout=5,
        request_timeout=30,
    )
    arrow.create_dir(f"{bucket}/d")
    assert arrow.get_file_info(f"{bucket}/d").type == fs.FileType.Directory
    assert s3.head_object(Bucket=bucket, Key="d/")["ContentLength"] == 0
    with arrow.open_output_stream(f"{bucket}/d/f") as out:
        out.write(b"inside")
    arrow.delete_dir_contents(f"{bucket}/d")
    assert not exists(s3, bucket, "d/f")
    arrow.delete_dir(f"{bucket}/d")
    assert not exists(s3, bucket, "d/")


def test_uploads_of_keys_xml_cannot_carry_list_url_encoded(s3, bucket):
    key = "odd\rkey"
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    listed = s3.list_multipart_uploads(Bucket=bucket, EncodingType="url")
    # botocore decodes only object listings: this one is decoded here.
    assert listed["EncodingType"] == "url"
    assert [(unquote(u["Key"]), u["UploadId"]) for u in listed["Uploads"]] == [(key, upload)]
    s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)


def test_an_empty_last_part_is_empty(s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="empty-last")["UploadId"]
    first = payload(5 * MIB, 7)
    parts = []
    for number, body in ((1, first), (2, b"")):
        etag = s3.upload_part(Bucket=bucket, Key="empty-last", UploadId=upload, PartNumber=number, Body=body)["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    s3.complete_multipart_upload(Bucket=bucket, Key="empty-last", UploadId=upload, MultipartUpload={"Parts": parts})
    got = s3.get_object(Bucket=bucket, Key="empty-last", PartNumber=2)
    assert (got["ContentLength"], got["Body"].read(), got["PartsCount"]) == (0, b"", 2)
    assert s3.head_object(Bucket=bucket, Key="empty-last", PartNumber=2)["ContentLength"] == 0
    assert len(s3.get_object(Bucket=bucket, Key="empty-last", PartNumber=1)["Body"].read()) == 5 * MIB


def test_a_refused_write_makes_no_bucket(cluster, s3):
    requests_made = [
        b"PUT /no-length-bucket/x HTTP/1.1\r\nHost: x\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n"
        b"Connection: close\r\n\r\n",
        b"PUT /bad-digest-bucket/x HTTP/1.1\r\nHost: x\r\nContent-MD5: AAAAAAAAAAAAAAAAAAAAAA==\r\n"
        b"Content-Length: 3\r\nConnection: close\r\n\r\nabc",
    ]
    for request in requests_made:
        assert status_of(send(cluster.s3_port, request)) in (400, 411)
    for name in ("no-length-bucket", "bad-digest-bucket"):
        with pytest.raises(ClientError) as raised:
            s3.head_bucket(Bucket=name)
        assert error_code(raised.value)[0] == 404


def test_a_write_that_outlives_a_delete_bucket_records_it_again(cluster, s3):
    s3.create_bucket(Bucket="outlived")
    with socket.create_connection(("127.0.0.1", cluster.s3_port), timeout=10) as conn:
        conn.sendall(b"PUT /outlived/obj HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\n12345")
        time.sleep(0.3)
        s3.delete_bucket(Bucket="outlived")
        conn.sendall(b"67890")
        answer = conn.recv(65536)
    assert status_of(answer) == 200
    assert "outlived" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.get_object(Bucket="outlived", Key="obj")["Body"].read() == b"1234567890"


def test_an_xml_body_is_checked_against_its_checksum_header(cluster, s3, bucket):
    s3.put_object(Bucket=bucket, Key="keep", Body=b"x")
    body = b"<Delete><Object><Key>keep</Key></Object></Delete>"
    response = send(
        cluster.s3_port,
        f"POST /{bucket}?delete HTTP/1.1\r\nHost: x\r\nx-amz-checksum-crc32: AAAAAA==\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body,
    )
    assert (status_of(response), xml_error(body_of(response))) == (400, "BadDigest")
    assert exists(s3, bucket, "keep")


def test_delete_objects_refuses_conditions_it_does_not_check(s3, bucket):
    s3.put_object(Bucket=bucket, Key="cond", Body=b"x")
    answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "cond", "ETag": '"nomatch"'}]})
    assert [(e["Key"], e["Code"]) for e in answer.get("Errors", [])] == [("cond", "NotImplemented")]
    assert exists(s3, bucket, "cond")


def test_delete_bucket_takes_its_open_uploads_with_it(s3):
    s3.create_bucket(Bucket="with-uploads")
    upload = s3.create_multipart_upload(Bucket="with-uploads", Key="k")["UploadId"]
    s3.upload_part(Bucket="with-uploads", Key="k", UploadId=upload, PartNumber=1, Body=b"part")
    s3.delete_bucket(Bucket="with-uploads")
    with pytest.raises(ClientError) as raised:
        s3.head_bucket(Bucket="with-uploads")
    assert error_code(raised.value)[0] == 404


def test_user_metadata_that_is_not_utf8_is_refused_not_altered(cluster, s3, bucket):
    response = send(
        cluster.s3_port,
        f"PUT /{bucket}/latin HTTP/1.1\r\nHost: x\r\nx-amz-meta-meta1: Hello World".encode()
        + b"\xe9\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
    )
    assert status_of(response) == 400
    assert not exists(s3, bucket, "latin")
