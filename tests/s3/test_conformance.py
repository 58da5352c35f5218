"""Behaviours found by running a public S3 conformance suite against mkv
(boto3 on the main port): user metadata, empty and paginated version
listings, a retried CompleteMultipartUpload, copy-source conditions."""

import pytest
from botocore.exceptions import ClientError

from conftest import error_code, payload


def test_user_metadata_round_trips_through_put_copy_and_multipart(s3, bucket):
    s3.put_object(Bucket=bucket, Key="meta", Body=b"x", Metadata={"colour": "blue", "Size": "9"})
    head = s3.head_object(Bucket=bucket, Key="meta")
    assert head["Metadata"] == {"colour": "blue", "size": "9"}
    assert s3.get_object(Bucket=bucket, Key="meta")["Metadata"] == {"colour": "blue", "size": "9"}

    # COPY keeps the source's metadata, REPLACE takes the request's.
    s3.copy_object(Bucket=bucket, Key="kept", CopySource={"Bucket": bucket, "Key": "meta"})
    assert s3.head_object(Bucket=bucket, Key="kept")["Metadata"] == {"colour": "blue", "size": "9"}
    s3.copy_object(
        Bucket=bucket,
        Key="replaced",
        CopySource={"Bucket": bucket, "Key": "meta"},
        Metadata={"shape": "round"},
        MetadataDirective="REPLACE",
    )
    assert s3.head_object(Bucket=bucket, Key="replaced")["Metadata"] == {"shape": "round"}

    upload = s3.create_multipart_upload(Bucket=bucket, Key="parts", Metadata={"origin": "multipart"})
    part = s3.upload_part(Bucket=bucket, Key="parts", UploadId=upload["UploadId"], PartNumber=1, Body=b"only")
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="parts",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert s3.head_object(Bucket=bucket, Key="parts")["Metadata"] == {"origin": "multipart"}

    with pytest.raises(ClientError) as raised:
        s3.put_object(Bucket=bucket, Key="toolarge", Body=b"x", Metadata={"big": "v" * 3000})
    assert error_code(raised.value) == (400, "MetadataTooLarge")


def test_max_keys_zero_is_an_empty_page_not_a_truncated_one(s3, bucket):
    s3.put_object(Bucket=bucket, Key="a", Body=b"1")
    for listed in (s3.list_objects(Bucket=bucket, MaxKeys=0), s3.list_objects_v2(Bucket=bucket, MaxKeys=0)):
        assert listed["IsTruncated"] is False
        assert "Contents" not in listed


def test_version_listings_page_with_key_markers(s3, bucket):
    keys = [f"v{i:02d}" for i in range(7)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    seen = []
    kwargs = {"Bucket": bucket, "MaxKeys": 3}
    while True:
        listing = s3.list_object_versions(**kwargs)
        seen += [version["Key"] for version in listing.get("Versions", [])]
        if not listing["IsTruncated"]:
            break
        kwargs["KeyMarker"] = listing["NextKeyMarker"]
        kwargs["VersionIdMarker"] = listing["NextVersionIdMarker"]
    assert seen == keys


def test_a_retried_complete_gets_the_same_answer(s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="retried")
    first = payload(5 * 1024 * 1024, 3)
    etags = []
    for number, body in ((1, first), (2, b"tail")):
        part = s3.upload_part(Bucket=bucket, Key="retried", UploadId=upload["UploadId"], PartNumber=number, Body=body)
        etags.append({"PartNumber": number, "ETag": part["ETag"]})
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="retried", UploadId=upload["UploadId"], MultipartUpload={"Parts": etags}
    )
    again = s3.complete_multipart_upload(
        Bucket=bucket, Key="retried", UploadId=upload["UploadId"], MultipartUpload={"Parts": etags}
    )
    assert again["ETag"] == done["ETag"]
    assert s3.get_object(Bucket=bucket, Key="retried")["Body"].read() == first + b"tail"
    # Other parts than those the value was made of: the upload is gone.
    with pytest.raises(ClientError) as raised:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="retried", UploadId=upload["UploadId"], MultipartUpload={"Parts": etags[:1]}
        )
    assert error_code(raised.value) == (404, "NoSuchUpload")


def test_copy_source_conditions(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="source", Body=b"abc")
    source = {"Bucket": bucket, "Key": "source"}
    s3.copy_object(Bucket=bucket, Key="copied", CopySource=source, CopySourceIfMatch=put["ETag"])
    assert s3.get_object(Bucket=bucket, Key="copied")["Body"].read() == b"abc"
    for condition in ({"CopySourceIfMatch": '"0000"'}, {"CopySourceIfNoneMatch": put["ETag"]}):
        with pytest.raises(ClientError) as raised:
            s3.copy_object(Bucket=bucket, Key="refused", CopySource=source, **condition)
        assert error_code(raised.value) == (412, "PreconditionFailed")
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="refused")


def test_standard_headers_are_kept_with_the_value(s3, bucket):
    s3.put_object(
        Bucket=bucket,
        Key="styled",
        Body=b"x",
        CacheControl="max-age=60",
        ContentDisposition='attachment; filename="a.txt"',
        ContentLanguage="en",
        ContentEncoding="identity",
        Expires="Wed, 21 Oct 2037 07:28:00 GMT",
    )
    head = s3.head_object(Bucket=bucket, Key="styled")
    assert head["CacheControl"] == "max-age=60"
    assert head["ContentDisposition"] == 'attachment; filename="a.txt"'
    assert head["ContentLanguage"] == "en"
    assert head["ContentEncoding"] == "identity"
    assert head["ResponseMetadata"]["HTTPHeaders"]["expires"] == "Wed, 21 Oct 2037 07:28:00 GMT"
    assert head["Metadata"] == {}


def test_conditional_puts(s3, bucket):
    first = s3.put_object(Bucket=bucket, Key="cond", Body=b"one", IfNoneMatch="*")
    with pytest.raises(ClientError) as raised:
        s3.put_object(Bucket=bucket, Key="cond", Body=b"two", IfNoneMatch="*")
    assert error_code(raised.value) == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as raised:
        s3.put_object(Bucket=bucket, Key="cond", Body=b"two", IfMatch='"00000000000000000000000000000000"')
    assert error_code(raised.value) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=bucket, Key="cond")["Body"].read() == b"one"
    s3.put_object(Bucket=bucket, Key="cond", Body=b"three", IfMatch=first["ETag"])
    assert s3.get_object(Bucket=bucket, Key="cond")["Body"].read() == b"three"
    with pytest.raises(ClientError) as raised:
        s3.put_object(Bucket=bucket, Key="absent", Body=b"x", IfMatch=first["ETag"])
    assert error_code(raised.value) == (404, "NoSuchKey")


def test_conditional_complete_multipart_upload(s3, bucket):
    def upload(**condition):
        created = s3.create_multipart_upload(Bucket=bucket, Key="condmp")
        part = s3.upload_part(Bucket=bucket, Key="condmp", UploadId=created["UploadId"], PartNumber=1, Body=b"p")
        parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
        return s3.complete_multipart_upload(
            Bucket=bucket, Key="condmp", UploadId=created["UploadId"], MultipartUpload=parts, **condition
        )

    done = upload(IfNoneMatch="*")
    with pytest.raises(ClientError) as raised:
        upload(IfNoneMatch="*")
    assert error_code(raised.value) == (412, "PreconditionFailed")
    upload(IfMatch=done["ETag"])
    s3.delete_object(Bucket=bucket, Key="condmp")
    with pytest.raises(ClientError) as raised:
        upload(IfMatch=done["ETag"])
    assert error_code(raised.value) == (404, "NoSuchKey")
