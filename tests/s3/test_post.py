"""POST Object (browser form uploads) with access control off: the form as
browsers send it (requests' multipart encoder, raw bodies for what a
browser would not send), on the S3 port."""

import base64
import datetime as dt
import json

import pytest
import requests
from botocore.exceptions import ClientError

from conftest import error_code


def form_url(cluster, bucket):
    return f"{cluster.s3_endpoint}/{bucket}"


def missing(s3, bucket, key):
    with pytest.raises(ClientError) as raised:
        s3.head_object(Bucket=bucket, Key=key)
    return error_code(raised.value)[0] == 404


def test_a_form_upload_stores_its_file_with_the_fields_s3_keeps(cluster, s3, bucket):
    fields = {
        "key": "up/${filename}",
        "Content-Type": "text/plain",
        "Cache-Control": "max-age=60",
        "Content-Disposition": "attachment",
        "x-amz-meta-origin": "form",
        "success_action_status": "201",
    }
    answer = requests.post(form_url(cluster, bucket), data=fields, files={"file": ("a.txt", b"form body")}, timeout=10)
    assert answer.status_code == 201 and b"<Key>up/a.txt</Key>" in answer.content
    got = s3.get_object(Bucket=bucket, Key="up/a.txt")
    assert got["Body"].read() == b"form body"
    assert (got["ContentType"], got["CacheControl"], got["ContentDisposition"]) == (
        "text/plain",
        "max-age=60",
        "attachment",
    )
    assert got["Metadata"] == {"origin": "form"}


def test_the_file_parts_own_content_type_is_not_the_values(cluster, s3, bucket):
    answer = requests.post(
        form_url(cluster, bucket),
        data={"key": "typed"},
        files={"file": ("t.html", b"<b>x</b>", "text/html")},
        timeout=10,
    )
    assert answer.status_code == 204
    assert s3.head_object(Bucket=bucket, Key="typed")["ContentType"] != "text/html"


@pytest.mark.parametrize(
    "field,value",
    [
        ("Content-Type", "text/plain\r\nSet-Cookie: a=1"),
        ("x-amz-meta-note", "v\r\nSet-Cookie: a=2"),
        ("x-amz-meta-a b", "v"),
        ("x-amz-meta-", "v"),
        ("success_action_redirect", "http://x/\r\nSet-Cookie: a=3"),
        ("Cache-Control", "no-cache\nSet-Cookie: a=4"),
    ],
)
def test_fields_that_could_end_a_header_line_are_refused(cluster, s3, bucket, field, value):
    answer = requests.post(
        form_url(cluster, bucket), data={"key": "crlf", field: value}, files={"file": ("f", b"x")}, timeout=10
    )
    assert answer.status_code == 400, answer.content
    assert "set-cookie" not in answer.headers
    assert missing(s3, bucket, "crlf")


@pytest.mark.parametrize(
    "field,value",
    [
        ("tagging", "<Tagging><TagSet><Tag><Key>a</Key><Value>b</Value></Tag></TagSet></Tagging>"),
        ("Content-MD5", "AAAAAAAAAAAAAAAAAAAAAA=="),
        ("x-amz-checksum-crc32", "AAAAAA=="),
        ("x-amz-server-side-encryption", "AES256"),
        ("acl", "public-read"),
    ],
)
def test_fields_asking_for_what_mkv_does_not_do_are_refused(cluster, s3, bucket, field, value):
    answer = requests.post(
        form_url(cluster, bucket), data={"key": "asked", field: value}, files={"file": ("f", b"x")}, timeout=10
    )
    assert answer.status_code == 501, answer.content
    assert missing(s3, bucket, "asked")


def test_a_key_with_cr_and_lf_is_encoded_in_the_location(cluster, s3, bucket):
    answer = requests.post(
        form_url(cluster, bucket),
        data={"key": "line\r\nSet-Cookie: k=1", "success_action_status": "201"},
        files={"file": ("f", b"x")},
        timeout=10,
    )
    assert answer.status_code == 201
    assert "set-cookie" not in answer.headers
    assert answer.headers["location"].endswith("/line%0D%0ASet-Cookie%3A%20k%3D1")


def test_quoting_decides_which_part_is_the_file(cluster, s3, bucket):
    body = (
        b"--B\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nquoted\r\n"
        b"--B\r\nContent-Disposition: form-data; name=\"notfile\"; filename=\"a; name=file\"\r\n\r\nSNEAKY\r\n"
        b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\nREAL\r\n--B--\r\n"
    )
    answer = requests.post(
        form_url(cluster, bucket),
        data=body,
        headers={"Content-Type": "multipart/form-data; boundary=B"},
        timeout=10,
    )
    assert answer.status_code == 204, answer.content
    assert s3.get_object(Bucket=bucket, Key="quoted")["Body"].read() == b"REAL"


def test_a_policy_is_checked_even_unsigned(cluster, s3, bucket):
    expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    policy = {"expiration": expires, "conditions": [{"bucket": bucket}, ["starts-with", "$key", "ok/"],
                                                    ["content-length-range", 1, 10]]}
    encoded = base64.b64encode(json.dumps(policy).encode()).decode()
    url = form_url(cluster, bucket)
    good = requests.post(url, data={"key": "ok/a", "policy": encoded}, files={"file": ("f", b"fits")}, timeout=10)
    assert good.status_code == 204
    for key, body in (("no/a", b"fits"), ("ok/big", b"x" * 11)):
        answer = requests.post(url, data={"key": key, "policy": encoded}, files={"file": ("f", body)}, timeout=10)
        assert answer.status_code in (400, 403)
        assert missing(s3, bucket, key)


def test_a_redirect_is_a_303_to_the_named_page(cluster, s3, bucket):
    answer = requests.post(
        form_url(cluster, bucket),
        data={"key": "redirected", "success_action_redirect": "http://example.invalid/done"},
        files={"file": ("f", b"x")},
        timeout=10,
        allow_redirects=False,
    )
    assert answer.status_code == 303 and answer.reason == "See Other"
    assert answer.headers["location"].startswith("http://example.invalid/done?bucket=")


def test_a_part_head_past_its_bound_is_refused_however_it_arrives(cluster, s3, bucket):
    long_name = "n" * 5000
    body = (
        b"--B\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nlonghead\r\n"
        b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + long_name.encode() + b"\"\r\n\r\n"
        b"x\r\n--B--\r\n"
    )
    answer = requests.post(
        form_url(cluster, bucket), data=body, headers={"Content-Type": "multipart/form-data; boundary=B"}, timeout=10
    )
    assert answer.status_code == 400
    assert missing(s3, bucket, "longhead")
