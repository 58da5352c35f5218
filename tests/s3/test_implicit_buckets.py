"""Buckets as the original master has them: a write into a bucket nobody
created makes it exist, and HeadBucket, ListBuckets and DeleteBucket agree
about it afterwards. Bucket names S3 refuses are refused."""

import pytest
import requests
from botocore.exceptions import ClientError

from conftest import bucket_name, error_code, xml_error


def test_a_put_into_a_bucket_nobody_created_makes_it(s3):
    name = bucket_name("implicit-put")
    s3.put_object(Bucket=name, Key="k", Body=b"hello1")
    assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=name)["Contents"]] == ["k"]
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"hello1"
    # It is a bucket like a created one: not empty while it holds the key.
    with pytest.raises(ClientError) as info:
        s3.delete_bucket(Bucket=name)
    assert error_code(info.value) == (409, "BucketNotEmpty")
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    with pytest.raises(ClientError) as info:
        s3.head_bucket(Bucket=name)
    assert error_code(info.value)[0] == 404
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_anonymous_multipart_and_copy_writes_make_their_buckets(cluster, s3):
    # An unsigned PUT on the S3 port, as pyarrow's anonymous client sends it.
    anonymous = bucket_name("implicit-anon")
    put = requests.put(f"{cluster.s3_endpoint}/{anonymous}/swag-1", data=b"hello1", timeout=30)
    assert put.status_code == 200, put.content
    assert requests.head(f"{cluster.s3_endpoint}/{anonymous}", timeout=30).status_code == 200

    multipart = bucket_name("implicit-mpu")
    upload = s3.create_multipart_upload(Bucket=multipart, Key="big")["UploadId"]
    etag = s3.upload_part(Bucket=multipart, Key="big", UploadId=upload, PartNumber=1, Body=b"part")["ETag"]
    s3.complete_multipart_upload(
        Bucket=multipart,
        Key="big",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )
    assert s3.get_object(Bucket=multipart, Key="big")["Body"].read() == b"part"

    copied = bucket_name("implicit-copy")
    s3.copy_object(Bucket=copied, Key="c", CopySource={"Bucket": multipart, "Key": "big"})
    assert s3.get_object(Bucket=copied, Key="c")["Body"].read() == b"part"
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    for name in (anonymous, multipart, copied):
        assert name in names


def test_reads_do_not_make_buckets(s3):
    name = bucket_name("implicit-read")
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=name, Key="k")
    assert error_code(info.value) == (404, "NoSuchBucket")
    with pytest.raises(ClientError) as info:
        s3.list_objects_v2(Bucket=name)
    assert error_code(info.value) == (404, "NoSuchBucket")
    with pytest.raises(ClientError) as info:
        s3.head_bucket(Bucket=name)
    assert error_code(info.value)[0] == 404
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_a_bucket_of_only_unlinked_keys_is_empty_and_gone_once_deleted(cluster, s3, bucket):
    # Native keys in the bucket, soft-deleted (UNLINK) by the native API.
    for key in ("a", "b"):
        assert requests.put(f"{cluster.endpoint}/{bucket}/{key}", data=b"v", timeout=30).status_code == 201
        assert requests.request("UNLINK", f"{cluster.endpoint}/{bucket}/{key}", timeout=30).status_code == 204
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert s3.delete_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as info:
        s3.head_bucket(Bucket=bucket)
    assert error_code(info.value)[0] == 404
    with pytest.raises(ClientError) as info:
        s3.list_objects_v2(Bucket=bucket)
    assert error_code(info.value) == (404, "NoSuchBucket")
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with pytest.raises(ClientError) as info:
        s3.delete_bucket(Bucket=bucket)
    assert error_code(info.value) == (404, "NoSuchBucket")


def test_a_bucket_of_live_native_keys_exists_and_is_not_empty(cluster, s3):
    name = bucket_name("native-only")
    assert requests.put(f"{cluster.endpoint}/{name}/n", data=b"native", timeout=30).status_code == 201
    assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(ClientError) as info:
        s3.delete_bucket(Bucket=name)
    assert error_code(info.value) == (409, "BucketNotEmpty")
    assert s3.get_object(Bucket=name, Key="n")["Body"].read() == b"native"
    # Its first S3 write records it.
    s3.put_object(Bucket=name, Key="s", Body=b"s3")
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]


@pytest.mark.parametrize("name", ["ab.-cd", "ab-.cd", "192.168.5.4", "Upper-case", "a..b"])
def test_bucket_names_s3_refuses_are_refused(cluster, s3, name):
    answer = requests.put(f"{cluster.s3_endpoint}/{name}", timeout=30)
    assert (answer.status_code, xml_error(answer.content)) == (400, "InvalidBucketName")
    # Nor does a write make one.
    answer = requests.put(f"{cluster.s3_endpoint}/{name}/k", data=b"x", timeout=30)
    assert (answer.status_code, xml_error(answer.content)) == (400, "InvalidBucketName")
    assert requests.head(f"{cluster.s3_endpoint}/{name}", timeout=30).status_code == 404
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_list_buckets_pages(cluster, s3):
    prefix = bucket_name("pages")
    names = sorted(f"{prefix}-{i}" for i in range(5))
    for name in names:
        s3.create_bucket(Bucket=name)
    seen, token, pages = [], None, 0
    while True:
        args = {"MaxBuckets": 2, "Prefix": prefix}
        if token:
            args["ContinuationToken"] = token
        page = s3.list_buckets(**args)
        pages += 1
        assert len(page["Buckets"]) <= 2
        seen += [b["Name"] for b in page["Buckets"]]
        token = page.get("ContinuationToken")
        if not token:
            break
        assert pages < 10
    assert seen == names
    assert pages == 3
    # boto3's paginator agrees; without max-buckets every bucket comes at once.
    paginated = [
        b["Name"]
        for page in s3.get_paginator("list_buckets").paginate(Prefix=prefix, PaginationConfig={"PageSize": 3})
        for b in page["Buckets"]
    ]
    assert paginated == names
    whole = s3.list_buckets(Prefix=prefix)
    assert [b["Name"] for b in whole["Buckets"]] == names
    assert "ContinuationToken" not in whole
    for query in ("max-buckets=0", "max-buckets=10001", "max-buckets=x", "continuation-token=%21%21"):
        answer = requests.get(f"{cluster.s3_endpoint}/?{query}", timeout=30)
        assert (answer.status_code, xml_error(answer.content)) == (400, "InvalidArgument"), query
