"""CORS per bucket: PutBucketCors/GetBucketCors/DeleteBucketCors through
boto3, preflights and actual requests as a browser sends them (requests,
on the S3 port: a browser's requests carry nothing else of S3)."""

import pytest
import requests
from botocore.exceptions import ClientError

from conftest import error_code

RULES = {
    "CORSRules": [
        {"AllowedMethods": ["GET", "HEAD"], "AllowedOrigins": ["*suffix"], "ExposeHeaders": ["ETag"]},
        {"AllowedMethods": ["GET"], "AllowedOrigins": ["start*end"]},
        {
            "AllowedMethods": ["PUT"],
            "AllowedOrigins": ["https://app.example"],
            "AllowedHeaders": ["x-amz-*", "content-type"],
            "MaxAgeSeconds": 600,
        },
    ]
}


def allowed(response):
    return (
        response.headers.get("access-control-allow-origin"),
        response.headers.get("access-control-allow-methods"),
    )


def test_cors_configuration_round_trips_and_goes(s3, bucket):
    with pytest.raises(ClientError) as raised:
        s3.get_bucket_cors(Bucket=bucket)
    assert error_code(raised.value) == (404, "NoSuchCORSConfiguration")
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    rules = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert [rule["AllowedOrigins"] for rule in rules] == [["*suffix"], ["start*end"], ["https://app.example"]]
    assert rules[2]["MaxAgeSeconds"] == 600 and rules[2]["AllowedHeaders"] == ["x-amz-*", "content-type"]
    s3.delete_bucket_cors(Bucket=bucket)
    with pytest.raises(ClientError) as raised:
        s3.get_bucket_cors(Bucket=bucket)
    assert error_code(raised.value)[0] == 404


@pytest.mark.parametrize(
    "rule",
    [
        {"AllowedMethods": ["PATCH"], "AllowedOrigins": ["*"]},
        {"AllowedMethods": ["GET"], "AllowedOrigins": ["*a*"]},
    ],
)
def test_bad_rules_are_refused_and_change_nothing(s3, bucket, rule):
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    with pytest.raises(ClientError) as raised:
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [rule]})
    assert error_code(raised.value)[0] == 400
    assert len(s3.get_bucket_cors(Bucket=bucket)["CORSRules"]) == 3


def test_preflights_and_actual_requests_follow_the_rules(cluster, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    url = f"{cluster.s3_endpoint}/{bucket}/k"

    def preflight(origin, method, headers=None):
        sent = {"Origin": origin, "Access-Control-Request-Method": method}
        if headers:
            sent["Access-Control-Request-Headers"] = headers
        return requests.options(url, headers=sent, timeout=10)

    assert allowed(preflight("foo.suffix", "GET")) == ("foo.suffix", "GET, HEAD")
    assert allowed(preflight("start12end", "GET")) == ("start12end", "GET")
    for origin, method in (("0start12end", "GET"), ("foo.suffix.get", "GET"), ("foo.suffix", "DELETE")):
        response = preflight(origin, method)
        assert response.status_code == 403 and allowed(response) == (None, None)
    put = preflight("https://app.example", "PUT", "X-Amz-Date, content-type")
    assert put.status_code == 200
    assert put.headers["access-control-allow-headers"] == "X-Amz-Date, content-type"
    assert put.headers["access-control-max-age"] == "600"
    assert preflight("https://app.example", "PUT", "authorization").status_code == 403
    # A preflight needs its Origin and method.
    assert requests.options(url, timeout=10).status_code == 400
    assert requests.options(url, headers={"Origin": "foo.suffix"}, timeout=10).status_code == 400

    got = requests.get(url, headers={"Origin": "foo.suffix"}, timeout=10)
    assert (got.status_code, got.content) == (200, b"x")
    assert allowed(got) == ("foo.suffix", "GET, HEAD")
    assert got.headers["access-control-expose-headers"] == "ETag"
    missing = requests.get(url + "-missing", headers={"Origin": "foo.suffix"}, timeout=10)
    assert missing.status_code == 404 and allowed(missing) == ("foo.suffix", "GET, HEAD")
    assert allowed(requests.get(url, headers={"Origin": "foo.bar"}, timeout=10)) == (None, None)
    assert allowed(requests.get(url, timeout=10)) == (None, None)


def test_without_rules_every_preflight_is_refused(cluster, bucket):
    response = requests.options(
        f"{cluster.s3_endpoint}/{bucket}/k",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
        timeout=10,
    )
    assert response.status_code == 403
    # The native API has no CORS: a preflight on the main port is S3's.
    response = requests.options(
        f"{cluster.endpoint}/{bucket}/k",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
        timeout=10,
    )
    assert response.status_code == 403


def test_a_configuration_past_64_kib_is_refused(s3, bucket):
    rules = [{"AllowedMethods": ["GET"], "AllowedOrigins": [f"https://{'o' * 700}{i}.example"]} for i in range(99)]
    with pytest.raises(ClientError) as raised:
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": rules})
    assert error_code(raised.value)[0] == 400
