"""Races suspected from the code (issue 19, finding 9), each tried many
times from two clients at once: whatever interleaving happens, every answer
is one a serial order could give, and what is stored agrees with its ETag."""

import hashlib
import threading

import pytest
from botocore.exceptions import ClientError

from conftest import boto3_client, error_code, payload

ROUNDS = 12


def both(first, second):
    """Run two callables at once; their results (or exceptions)."""
    results = [None, None]
    barrier = threading.Barrier(2)

    def run(index, call):
        barrier.wait()
        try:
            results[index] = call()
        except Exception as error:  # noqa: BLE001 - the caller inspects it
            results[index] = error

    threads = [threading.Thread(target=run, args=(index, call)) for index, call in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def stored_agrees(s3, bucket, key):
    got = s3.get_object(Bucket=bucket, Key=key)
    body = got["Body"].read()
    etag = got["ETag"].strip('"')
    if "-" not in etag:
        assert hashlib.md5(body).hexdigest() == etag
    assert len(body) == got["ContentLength"]
    return body, got


@pytest.fixture(scope="module")
def other(cluster):
    """A second client with its own connections."""
    return boto3_client(cluster.endpoint)


def test_copy_onto_itself_racing_a_put(s3, other, bucket):
    for round_ in range(ROUNDS):
        old, new = payload(1000, round_), payload(2000, round_ + 100)
        s3.put_object(Bucket=bucket, Key="self", Body=old, Metadata={"v": "old"})
        copied, put = both(
            lambda: s3.copy_object(
                Bucket=bucket,
                Key="self",
                CopySource={"Bucket": bucket, "Key": "self"},
                MetadataDirective="REPLACE",
                Metadata={"v": "copied"},
            ),
            lambda: other.put_object(Bucket=bucket, Key="self", Body=new, Metadata={"v": "new"}),
        )
        assert not isinstance(put, Exception), put
        body, got = stored_agrees(s3, bucket, "self")
        # The copy ran before the PUT (new bytes, new metadata) or after it
        # (new bytes, copied metadata): never old bytes under new metadata.
        assert body == new
        assert got["Metadata"]["v"] in ("new", "copied")
        if isinstance(copied, Exception):
            assert error_code(copied)[0] in (409, 503), copied


def test_complete_racing_upload_part_of_the_same_part(s3, other, bucket):
    part_size = 5 * 1024 * 1024
    for round_ in range(4):
        upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
        first = payload(part_size, round_)
        etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=first)["ETag"]
        last = payload(100, round_ + 50)
        etag2 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=2, Body=last)["ETag"]
        replacement = payload(part_size, round_ + 200)
        done, replaced = both(
            lambda: s3.complete_multipart_upload(
                Bucket=bucket,
                Key="mp",
                UploadId=upload,
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}, {"PartNumber": 2, "ETag": etag2}]},
            ),
            lambda: other.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=replacement),
        )
        if isinstance(done, Exception):
            # The part was replaced first: the listed ETag names no part.
            assert error_code(done) == (400, "InvalidPart"), done
            assert not isinstance(replaced, Exception)
            s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload)
            continue
        # Completed first: the value is the listed parts, the replacement
        # found no upload.
        body, _ = stored_agrees(s3, bucket, "mp")
        assert body == first + last
        if isinstance(replaced, Exception):
            assert error_code(replaced)[1] == "NoSuchUpload", replaced


def test_complete_racing_abort(s3, other, bucket):
    for round_ in range(ROUNDS):
        upload = s3.create_multipart_upload(Bucket=bucket, Key="ab")["UploadId"]
        data = payload(1000, round_)
        etag = s3.upload_part(Bucket=bucket, Key="ab", UploadId=upload, PartNumber=1, Body=data)["ETag"]
        done, aborted = both(
            lambda: s3.complete_multipart_upload(
                Bucket=bucket, Key="ab", UploadId=upload, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}
            ),
            lambda: other.abort_multipart_upload(Bucket=bucket, Key="ab", UploadId=upload),
        )
        if isinstance(done, Exception):
            assert error_code(done)[1] == "NoSuchUpload", done
            with pytest.raises(ClientError):
                s3.head_object(Bucket=bucket, Key="ab")
        else:
            assert stored_agrees(s3, bucket, "ab")[0] == data
        assert not (isinstance(done, Exception) and isinstance(aborted, Exception))
        uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        assert upload not in [listed["UploadId"] for listed in uploads]
        s3.delete_object(Bucket=bucket, Key="ab")


def test_two_completes_of_one_upload_both_succeed(s3, other, bucket):
    for round_ in range(ROUNDS):
        upload = s3.create_multipart_upload(Bucket=bucket, Key="twice")["UploadId"]
        data = payload(1000, round_)
        etag = s3.upload_part(Bucket=bucket, Key="twice", UploadId=upload, PartNumber=1, Body=data)["ETag"]
        parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
        results = both(
            lambda: s3.complete_multipart_upload(Bucket=bucket, Key="twice", UploadId=upload, MultipartUpload=parts),
            lambda: other.complete_multipart_upload(
                Bucket=bucket, Key="twice", UploadId=upload, MultipartUpload=parts
            ),
        )
        for result in results:
            assert not isinstance(result, Exception), result
        assert results[0]["ETag"] == results[1]["ETag"]
        assert stored_agrees(s3, bucket, "twice")[0] == data


def test_if_match_reads_during_same_size_overwrites_get_the_etags_bytes(s3, other, bucket):
    values = [payload(300_000, seed) for seed in range(2)]
    etags = ['"' + hashlib.md5(value).hexdigest() + '"' for value in values]
    s3.put_object(Bucket=bucket, Key="same", Body=values[0])
    stop = threading.Event()

    def overwrite():
        turn = 1
        while not stop.is_set():
            other.put_object(Bucket=bucket, Key="same", Body=values[turn])
            turn ^= 1

    writer = threading.Thread(target=overwrite)
    writer.start()
    try:
        served = 0
        for attempt in range(60):
            wanted = attempt % 2
            try:
                got = s3.get_object(Bucket=bucket, Key="same", IfMatch=etags[wanted])
            except ClientError as error:
                assert error_code(error)[0] in (412, 503), error
                continue
            assert got["Body"].read() == values[wanted]
            assert got["ETag"] == etags[wanted]
            served += 1
    finally:
        stop.set()
        writer.join()
    assert served > 0
