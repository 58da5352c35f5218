"""S3 access control (`--s3-auth`): the clients people use, each signing
with a configured key, and refused with a wrong secret, an unknown key and
a key not granted the bucket; presigned URLs; streaming signatures with a
tampered chunk; clock skew; public-read buckets; ListBuckets per key;
reloading the file on SIGHUP. A cluster of its own, access control on."""

import datetime as dt
import hashlib
import hmac
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError

from conftest import REGION, Cluster, error_code, payload

VENV_BIN = Path(sys.executable).parent

ADMIN = ("ADMINKEY", "admin-secret-0123456789")
USER = ("USERKEY1", "user-secret-abcdefghij")
READER = ("READERKEY", "reader-secret-0000")
CREDENTIALS = f"""
[[key]]
access_key = "{ADMIN[0]}"
secret_key = "{ADMIN[1]}"
buckets = {{ "*" = ["read", "write", "list", "delete"] }}

[[key]]
access_key = "{USER[0]}"
secret_key = "{USER[1]}"
buckets = {{ "mine" = ["read", "write", "list", "delete"] }}

[[key]]
access_key = "{READER[0]}"
secret_key = "{READER[1]}"
buckets = {{ "mine" = ["read", "list"] }}

[bucket.public]
public_read = true
"""
WRONG = (USER[0], "not-the-secret")
UNKNOWN = ("NOSUCHKEY", USER[1])


class AuthCluster(Cluster):
    def __init__(self, root, credentials):
        self.credentials = credentials
        super().__init__(root)

    def master_args(self):
        args = super().master_args()
        return args[:-1] + ["--s3-auth", str(self.credentials), args[-1]]

    def reload(self):
        self.master.send_signal(signal.SIGHUP)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth")
    credentials = root / "credentials.toml"
    credentials.write_text(CREDENTIALS)
    c = AuthCluster(root, credentials)
    admin = client(c, ADMIN)
    for name in ("mine", "theirs", "public"):
        admin.create_bucket(Bucket=name)
    admin.put_object(Bucket="theirs", Key="secret", Body=b"not yours")
    admin.put_object(Bucket="public", Key="open", Body=b"anyone may read")
    yield c
    c.close()


def client(cluster, credentials, **config):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=cluster.endpoint,
        aws_access_key_id=credentials[0],
        aws_secret_access_key=credentials[1],
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config),
    )


def refused(call, codes=("AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId")):
    with pytest.raises(ClientError) as raised:
        call()
    status, code = error_code(raised.value)
    assert status == 403 and code in codes, (status, code)
    return code


def stored(cluster, bucket, key):
    admin = client(cluster, ADMIN)
    try:
        return admin.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        assert error_code(error)[0] == 404
        return None


def run(cmd, env, check=True, timeout=60):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}: {proc.stdout[-1500:]} {proc.stderr[-1500:]}")
    return proc


# ---- boto3 ---------------------------------------------------------------------------------------


def test_boto3_with_the_right_key_and_refused_otherwise(cluster):
    user = client(cluster, USER)
    user.put_object(Bucket="mine", Key="b3", Body=b"boto3 value")
    assert user.get_object(Bucket="mine", Key="b3")["Body"].read() == b"boto3 value"
    assert [o["Key"] for o in user.list_objects_v2(Bucket="mine")["Contents"]] == ["b3"]
    # A multipart upload, every step signed.
    big = payload(5 * 1024 * 1024 + 10, 3)
    upload = user.create_multipart_upload(Bucket="mine", Key="mp")["UploadId"]
    parts = []
    for number, part in enumerate((big[: 5 * 1024 * 1024], big[5 * 1024 * 1024 :]), 1):
        etag = user.upload_part(Bucket="mine", Key="mp", UploadId=upload, PartNumber=number, Body=part)["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    user.complete_multipart_upload(Bucket="mine", Key="mp", UploadId=upload, MultipartUpload={"Parts": parts})
    assert stored(cluster, "mine", "mp") == big

    assert refused(lambda: client(cluster, WRONG).put_object(Bucket="mine", Key="w", Body=b"x")) == "SignatureDoesNotMatch"
    assert refused(lambda: client(cluster, UNKNOWN).put_object(Bucket="mine", Key="u", Body=b"x")) == "InvalidAccessKeyId"
    assert refused(lambda: user.put_object(Bucket="theirs", Key="n", Body=b"x")) == "AccessDenied"
    assert refused(lambda: user.get_object(Bucket="theirs", Key="secret")) == "AccessDenied"
    assert refused(lambda: user.delete_objects(Bucket="theirs", Delete={"Objects": [{"Key": "secret"}]}))
    assert refused(lambda: user.delete_bucket(Bucket="theirs"))
    # A copy needs read on its source's bucket.
    assert refused(lambda: user.copy_object(Bucket="mine", Key="c", CopySource={"Bucket": "theirs", "Key": "secret"}))
    for key in ("w", "u", "c"):
        assert stored(cluster, "mine", key) is None
    assert stored(cluster, "theirs", "secret") == b"not yours"
    assert stored(cluster, "theirs", "n") is None


def test_permissions_are_per_operation(cluster):
    client(cluster, USER).put_object(Bucket="mine", Key="r", Body=b"readable")
    reader = client(cluster, READER)
    assert reader.get_object(Bucket="mine", Key="r")["Body"].read() == b"readable"
    assert "Contents" in reader.list_objects_v2(Bucket="mine")
    assert refused(lambda: reader.put_object(Bucket="mine", Key="r", Body=b"over")) == "AccessDenied"
    assert refused(lambda: reader.delete_object(Bucket="mine", Key="r")) == "AccessDenied"
    assert stored(cluster, "mine", "r") == b"readable"


def test_list_buckets_shows_each_key_its_buckets(cluster):
    names = lambda credentials: sorted(b["Name"] for b in client(cluster, credentials).list_buckets()["Buckets"])
    assert names(USER) == ["mine"]
    assert names(READER) == ["mine"]
    assert {"mine", "theirs", "public"} <= set(names(ADMIN))


def test_anonymous_requests_read_public_buckets_only(cluster):
    s3 = cluster.s3_endpoint
    assert requests.get(f"{s3}/public/open", timeout=10).content == b"anyone may read"
    assert requests.head(f"{s3}/public/open", timeout=10).status_code == 200
    assert requests.get(f"{s3}/public", timeout=10).status_code == 403  # no listing
    assert requests.put(f"{s3}/public/open", data=b"mine now", timeout=10).status_code == 403
    assert requests.delete(f"{s3}/public/open", timeout=10).status_code == 403
    assert requests.get(f"{s3}/theirs/secret", timeout=10).status_code == 403
    assert requests.get(f"{s3}/", timeout=10).status_code == 403
    assert requests.post(f"{s3}/theirs?delete", data=b"<Delete/>", timeout=10).status_code == 403
    assert stored(cluster, "public", "open") == b"anyone may read"


def test_presigned_urls(cluster):
    # boto3 presigns with SigV2 unless told otherwise; mkv refuses SigV2.
    v2 = client(cluster, USER).generate_presigned_url("get_object", Params={"Bucket": "mine", "Key": "pre"})
    answer = requests.get(v2, timeout=10)
    assert answer.status_code == 400 and b"AWS4-HMAC-SHA256" in answer.content
    user = client(cluster, USER, signature_version="s3v4")
    put_url = user.generate_presigned_url("put_object", Params={"Bucket": "mine", "Key": "pre"}, ExpiresIn=600)
    assert requests.put(put_url, data=b"presigned put", timeout=10).status_code == 200
    get_url = user.generate_presigned_url("get_object", Params={"Bucket": "mine", "Key": "pre"}, ExpiresIn=600)
    assert requests.get(get_url, timeout=10).content == b"presigned put"
    head_url = user.generate_presigned_url("head_object", Params={"Bucket": "mine", "Key": "pre"}, ExpiresIn=600)
    assert requests.head(head_url, timeout=10).status_code == 200
    # curl, as a user handed the link would.
    curl = subprocess.run(["curl", "-sf", get_url], capture_output=True, timeout=30)
    assert curl.returncode == 0 and curl.stdout == b"presigned put"
    # Tampered: another key, another method, another signature.
    other_key = get_url.replace("/mine/pre?", "/mine/other?")
    assert requests.get(other_key, timeout=10).status_code == 403
    assert requests.delete(get_url, timeout=10).status_code == 403
    tampered = get_url[:-1] + ("0" if get_url[-1] != "0" else "1")
    assert requests.get(tampered, timeout=10).status_code == 403
    # A PUT link does not allow another body's key, nor a copy added to it.
    assert requests.put(put_url, data=b"x", headers={"x-amz-copy-source": "theirs/secret"}, timeout=10).status_code == 403
    # Expired, and too long-lived.
    expired = user.generate_presigned_url("get_object", Params={"Bucket": "mine", "Key": "pre"}, ExpiresIn=1)
    time.sleep(2)
    answer = requests.get(expired, timeout=10)
    assert answer.status_code == 403 and b"Request has expired" in answer.content
    week_and_a_day = get_url.replace("X-Amz-Expires=600", "X-Amz-Expires=691200")
    assert requests.get(week_and_a_day, timeout=10).status_code in (400, 403)
    # A wrong secret or an unknown key signs links that do not work.
    for credentials in (WRONG, UNKNOWN):
        url = client(cluster, credentials, signature_version="s3v4").generate_presigned_url(
            "get_object", Params={"Bucket": "mine", "Key": "pre"}, ExpiresIn=600
        )
        assert requests.get(url, timeout=10).status_code == 403
    assert stored(cluster, "mine", "pre") == b"presigned put"


def test_a_skewed_clock_is_refused(cluster):
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="GET", url=f"{cluster.endpoint}/mine/pre")
    with pytest.MonkeyPatch.context() as patch:
        skewed = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=20)
        import botocore.auth

        class Skewed(dt.datetime):
            @classmethod
            def utcnow(cls):
                return skewed.replace(tzinfo=None)

            @classmethod
            def now(cls, tz=None):
                return skewed if tz else skewed.replace(tzinfo=None)

        patch.setattr(botocore.auth.datetime, "datetime", Skewed)
        S3SigV4Auth(Credentials(*USER), "s3", REGION).add_auth(request)
    answer = requests.get(request.url, headers=dict(request.headers), timeout=10)
    assert answer.status_code == 403 and b"RequestTimeTooSkewed" in answer.content


# ---- streaming signatures ------------------------------------------------------------------------


def signing_key(secret, day):
    key = ("AWS4" + secret).encode()
    for part in (day, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def streaming_put(cluster, key, chunks, credentials=USER, tamper=None):
    """A PUT signed STREAMING-AWS4-HMAC-SHA256-PAYLOAD, as aws-sdk-cpp and
    the Java SDK send it, signed here by hand (botocore signs no streams):
    each chunk signed in a chain from the seed signature. `tamper` (a chunk
    index) sends that chunk's bytes changed."""
    data = b"".join(chunks)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    scope = f"{day}/{REGION}/s3/aws4_request"
    encoded_length = sum(len(f"{len(c):x};chunk-signature={'0' * 64}\r\n") + len(c) + 2 for c in chunks)
    encoded_length += len(f"0;chunk-signature={'0' * 64}\r\n\r\n")
    headers = {
        "content-encoding": "aws-chunked",
        "content-length": str(encoded_length),
        "host": f"127.0.0.1:{cluster.port}",
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "x-amz-date": stamp,
        "x-amz-decoded-content-length": str(len(data)),
    }
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        ["PUT", f"/mine/{key}", ""]
        + [f"{name}:{headers[name]}" for name in sorted(headers)]
        + ["", signed, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"]
    )
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    secret_key = signing_key(credentials[1], day)
    seed = hmac.new(secret_key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials[0]}/{scope}, SignedHeaders={signed}, Signature={seed}"
    )
    previous = seed
    body = b""
    empty = hashlib.sha256(b"").hexdigest()
    for index, chunk in enumerate(list(chunks) + [b""]):
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256-PAYLOAD", stamp, scope, previous, empty, hashlib.sha256(chunk).hexdigest()]
        )
        signature = hmac.new(secret_key, to_sign.encode(), hashlib.sha256).hexdigest()
        sent = chunk
        if tamper == index and chunk:
            sent = bytes([chunk[0] ^ 1]) + chunk[1:]
        body += f"{len(chunk):x};chunk-signature={signature}\r\n".encode() + sent + b"\r\n"
        previous = signature
    assert len(body) == encoded_length
    head = f"PUT /mine/{key} HTTP/1.1\r\nConnection: close\r\n"
    for name, value in headers.items():
        head += f"{name}: {value}\r\n"
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=30) as conn:
        conn.sendall(head.encode() + b"\r\n" + body)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


def test_streaming_signed_uploads_check_every_chunk(cluster):
    chunks = [payload(65536, 1), payload(65536, 2), payload(1000, 3)]
    status, answer = streaming_put(cluster, "streamed", chunks)
    assert status == 200, answer
    assert stored(cluster, "mine", "streamed") == b"".join(chunks)
    for index in range(3):
        status, answer = streaming_put(cluster, f"tampered{index}", chunks, tamper=index)
        assert status == 403 and b"SignatureDoesNotMatch" in answer, answer
        assert stored(cluster, "mine", f"tampered{index}") is None
    # An overwrite with a tampered chunk leaves the old value.
    status, _ = streaming_put(cluster, "streamed", [payload(65536, 9)], tamper=0)
    assert status == 403
    assert stored(cluster, "mine", "streamed") == b"".join(chunks)


def test_a_signed_payload_hash_must_match_the_body(cluster):
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = b"the body that was signed"
    request = AWSRequest(method="PUT", url=f"{cluster.endpoint}/mine/hashed", data=body)
    request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    S3SigV4Auth(Credentials(*USER), "s3", REGION).add_auth(request)
    headers = dict(request.headers)
    swapped = requests.put(request.url, data=b"another body, same len!!", headers=headers, timeout=10)
    assert swapped.status_code == 400 and b"XAmzContentSHA256Mismatch" in swapped.content
    assert stored(cluster, "mine", "hashed") is None
    assert requests.put(request.url, data=body, headers=headers, timeout=10).status_code == 200
    assert stored(cluster, "mine", "hashed") == body


def test_a_presigned_url_may_sign_the_body_hash(cluster):
    """A presigned PUT whose query signs `X-Amz-Content-Sha256`: only that
    body may be stored through it."""
    body = b"the one body this link may store"
    digest = hashlib.sha256(body).hexdigest()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    scope = f"{stamp[:8]}/{REGION}/s3/aws4_request"
    host = f"127.0.0.1:{cluster.port}"
    query = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Content-Sha256": digest,
        "X-Amz-Credential": f"{USER[0]}/{scope}",
        "X-Amz-Date": stamp,
        "X-Amz-Expires": "600",
        "X-Amz-SignedHeaders": "host",
    }
    encoded = "&".join(
        f"{urllib.parse.quote(name, safe='-_.~')}={urllib.parse.quote(value, safe='-_.~')}"
        for name, value in sorted(query.items())
    )
    canonical = "\n".join(["PUT", "/mine/hashed-link", encoded, f"host:{host}", "", "host", digest])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    signature = hmac.new(signing_key(USER[1], stamp[:8]), to_sign.encode(), hashlib.sha256).hexdigest()
    url = f"{cluster.endpoint}/mine/hashed-link?{encoded}&X-Amz-Signature={signature}"
    other = requests.put(url, data=b"another body of the same size!!!", timeout=10)
    assert other.status_code == 400 and b"XAmzContentSHA256Mismatch" in other.content, other.content
    assert stored(cluster, "mine", "hashed-link") is None
    assert requests.put(url, data=body, timeout=10).status_code == 200
    assert stored(cluster, "mine", "hashed-link") == body


# ---- the other clients ---------------------------------------------------------------------------


def test_awscli(cluster, tmp_path):
    aws_bin = VENV_BIN / "aws"

    def aws(credentials, *args, check=True):
        env = dict(
            os.environ,
            AWS_ACCESS_KEY_ID=credentials[0],
            AWS_SECRET_ACCESS_KEY=credentials[1],
            AWS_CONFIG_FILE=str(tmp_path / "none"),
            AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        )
        return run([sys.executable, aws_bin, "--endpoint-url", cluster.endpoint, *args], env, check=check)

    src = tmp_path / "cli.bin"
    src.write_bytes(payload(9000, 5))
    aws(USER, "s3", "cp", src, "s3://mine/cli.bin")
    assert stored(cluster, "mine", "cli.bin") == src.read_bytes()
    for credentials, bucket in ((WRONG, "mine"), (UNKNOWN, "mine"), (USER, "theirs")):
        failed = aws(credentials, "s3", "cp", src, f"s3://{bucket}/cli-no.bin", check=False)
        assert failed.returncode != 0
        assert stored(cluster, bucket, "cli-no.bin") is None


def test_s3fs(cluster):
    import s3fs

    def fs(credentials):
        return s3fs.S3FileSystem(
            key=credentials[0],
            secret=credentials[1],
            skip_instance_cache=True,
            client_kwargs={"endpoint_url": cluster.endpoint, "region_name": REGION},
            config_kwargs={"retries": {"max_attempts": 1}},
        )

    fs(USER).pipe("mine/fs.txt", b"s3fs value")
    assert fs(USER).cat("mine/fs.txt") == b"s3fs value"
    for credentials, bucket in ((WRONG, "mine"), (UNKNOWN, "mine"), (USER, "theirs")):
        with pytest.raises((PermissionError, OSError)):
            fs(credentials).pipe(f"{bucket}/fs-no.txt", b"x")
        assert stored(cluster, bucket, "fs-no.txt") is None


def test_pyarrow(cluster):
    from pyarrow import fs as pafs

    def fs(credentials):
        return pafs.S3FileSystem(
            endpoint_override=f"127.0.0.1:{cluster.port}",
            scheme="http",
            access_key=credentials[0],
            secret_key=credentials[1],
            region=REGION,
            request_timeout=30,
        )

    data = payload(300_000, 6)
    with fs(USER).open_output_stream("mine/arrow.bin") as out:
        out.write(data)
    assert stored(cluster, "mine", "arrow.bin") == data
    with fs(USER).open_input_stream("mine/arrow.bin") as inp:
        assert inp.read() == data
    for credentials, bucket in ((WRONG, "mine"), (UNKNOWN, "mine"), (USER, "theirs")):
        with pytest.raises(OSError):
            with fs(credentials).open_output_stream(f"{bucket}/arrow-no.bin") as out:
                out.write(b"x")
        assert stored(cluster, bucket, "arrow-no.bin") is None


def test_minio(cluster):
    import urllib3
    from minio import Minio
    from minio.error import S3Error as MinioError

    def mc(credentials):
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=30), retries=False)
        return Minio(f"127.0.0.1:{cluster.port}", *credentials, secure=False, region=REGION, http_client=http)

    data = payload(12_000, 7)
    mc(USER).put_object("mine", "mc.bin", io.BytesIO(data), len(data))
    assert stored(cluster, "mine", "mc.bin") == data
    for credentials, bucket in ((WRONG, "mine"), (UNKNOWN, "mine"), (USER, "theirs")):
        with pytest.raises(MinioError) as raised:
            mc(credentials).put_object(bucket, "mc-no.bin", io.BytesIO(b"x"), 1)
        assert raised.value.code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied")
        assert stored(cluster, bucket, "mc-no.bin") is None


def test_duckdb(cluster, tmp_path_factory):
    import glob

    import duckdb
    import duckdb_extension_httpfs

    extension = glob.glob(
        os.path.join(os.path.dirname(duckdb_extension_httpfs.__file__), "extensions", "*", "httpfs.duckdb_extension")
    )[0]

    def duck(credentials):
        con = duckdb.connect(
            config={
                "extension_directory": str(tmp_path_factory.mktemp("duck")),
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
            }
        )
        con.execute(f"INSTALL '{extension}'")
        con.execute("LOAD httpfs")
        con.execute(
            f"CREATE SECRET s (TYPE s3, KEY_ID '{credentials[0]}', SECRET '{credentials[1]}', REGION '{REGION}', "
            f"ENDPOINT '127.0.0.1:{cluster.port}', URL_STYLE 'path', USE_SSL false)"
        )
        return con

    con = duck(USER)
    con.execute("COPY (SELECT range AS n FROM range(100)) TO 's3://mine/duck.parquet' (FORMAT parquet)")
    assert con.execute("SELECT sum(n) FROM 's3://mine/duck.parquet'").fetchall() == [(4950,)]
    for credentials, bucket in ((WRONG, "mine"), (UNKNOWN, "mine"), (USER, "theirs")):
        with pytest.raises(duckdb.Error):
            duck(credentials).execute(f"COPY (SELECT 1 AS n) TO 's3://{bucket}/duck-no.parquet' (FORMAT parquet)")
        assert stored(cluster, bucket, "duck-no.parquet") is None


def test_rclone(cluster, tmp_path):
    if shutil.which("rclone") is None:
        pytest.fail("rclone is not installed (scripts/s3-venv installs it)")

    def rclone(credentials, *args, check=True):
        conf = tmp_path / f"rclone-{credentials[0]}-{credentials[1][:4]}.conf"
        conf.write_text(
            "[mkv]\ntype = s3\nprovider = Other\n"
            f"endpoint = {cluster.endpoint}\naccess_key_id = {credentials[0]}\nsecret_access_key = {credentials[1]}\n"
            f"region = {REGION}\nforce_path_style = true\nno_check_bucket = true\nlist_version = 1\n"
        )
        env = {name: value for name, value in os.environ.items() if name != "AWS_CA_BUNDLE"}
        env.update(RCLONE_CONFIG=str(conf), HOME=str(tmp_path))
        return run(["rclone", "--retries", "1", "--low-level-retries", "1", *args], env, check=check)

    src = tmp_path / "rc.txt"
    src.write_bytes(b"rclone value")
    rclone(USER, "copyto", src, "mkv:mine/rc.txt")
    assert stored(cluster, "mine", "rc.txt") == b"rclone value"
    assert rclone(USER, "lsf", "mkv:mine").stdout.split().count("rc.txt") == 1
    for credentials, bucket in ((WRONG, "mine"), (UNKNOWN, "mine"), (USER, "theirs")):
        assert rclone(credentials, "copyto", src, f"mkv:{bucket}/rc-no.txt", check=False).returncode != 0
        assert stored(cluster, bucket, "rc-no.txt") is None


def test_s3cmd(cluster, tmp_path):
    if shutil.which("s3cmd") is None:
        pytest.fail("s3cmd is not installed (scripts/s3-venv installs it)")

    def s3cmd(credentials, *args, check=True):
        conf = tmp_path / "s3cfg"
        host = f"127.0.0.1:{cluster.port}"
        conf.write_text(
            "[default]\n"
            f"access_key = {credentials[0]}\nsecret_key = {credentials[1]}\nhost_base = {host}\nhost_bucket = {host}\n"
            f"bucket_location = {REGION}\nuse_https = False\nsignature_v2 = False\n"
            "check_ssl_certificate = False\nguess_mime_type = False\n"
        )
        env = dict(os.environ, HOME=str(tmp_path))
        return run([shutil.which("s3cmd"), "-c", conf, "--no-progress", *args], env, check=check)

    src = tmp_path / "s3cmd.bin"
    src.write_bytes(payload(15_000, 8))
    s3cmd(USER, "put", src, "s3://mine/s3cmd.bin")
    assert stored(cluster, "mine", "s3cmd.bin") == src.read_bytes()
    for credentials, bucket in ((WRONG, "mine"), (UNKNOWN, "mine"), (USER, "theirs")):
        assert s3cmd(credentials, "put", src, f"s3://{bucket}/s3cmd-no.bin", check=False).returncode != 0
        assert stored(cluster, bucket, "s3cmd-no.bin") is None


# ---- browsers ------------------------------------------------------------------------------------


def test_post_object_needs_a_signed_policy(cluster):
    user = client(cluster, USER)
    post = user.generate_presigned_post(
        "mine",
        "form/${filename}",
        Conditions=[["starts-with", "$key", "form/"], ["content-length-range", 1, 1000]],
        ExpiresIn=600,
    )
    url = f"{cluster.s3_endpoint}/mine"
    answer = requests.post(url, data=post["fields"], files={"file": ("a.txt", b"form upload")}, timeout=10)
    assert answer.status_code == 204, answer.content
    assert stored(cluster, "mine", "form/a.txt") == b"form upload"
    # Too large for the policy: refused, nothing stored.
    answer = requests.post(url, data=post["fields"], files={"file": ("big.txt", b"x" * 2000)}, timeout=10)
    assert answer.status_code == 400 and b"EntityTooLarge" in answer.content
    assert stored(cluster, "mine", "form/big.txt") is None
    # A field the policy does not name.
    fields = dict(post["fields"], **{"x-amz-meta-extra": "1"})
    assert requests.post(url, data=fields, files={"file": ("b.txt", b"x")}, timeout=10).status_code == 403
    # The policy's signature from another secret, or none at all.
    wrong = client(cluster, WRONG).generate_presigned_post("mine", "form/${filename}", ExpiresIn=600)
    assert requests.post(url, data=wrong["fields"], files={"file": ("c.txt", b"x")}, timeout=10).status_code == 403
    answer = requests.post(url, data={"key": "form/d.txt"}, files={"file": ("d.txt", b"x")}, timeout=10)
    assert answer.status_code == 403
    # A key may not post into a bucket it was not granted.
    theirs = user.generate_presigned_post("theirs", "form/${filename}", ExpiresIn=600)
    answer = requests.post(
        f"{cluster.s3_endpoint}/theirs", data=theirs["fields"], files={"file": ("e.txt", b"x")}, timeout=10
    )
    assert answer.status_code == 403
    for key in ("form/b.txt", "form/c.txt", "form/d.txt"):
        assert stored(cluster, "mine", key) is None
    assert stored(cluster, "theirs", "form/e.txt") is None


# ---- the credentials file ------------------------------------------------------------------------


def test_sighup_reloads_and_a_bad_file_keeps_the_old_rules(cluster):
    new_key = ("NEWKEY", "new-secret-xyz")
    newcomer = client(cluster, new_key)
    assert refused(lambda: newcomer.list_objects_v2(Bucket="mine")) == "InvalidAccessKeyId"
    cluster.credentials.write_text(
        CREDENTIALS + f'\n[[key]]\naccess_key = "{new_key[0]}"\nsecret_key = "{new_key[1]}"\n'
        'buckets = { "mine" = ["list"] }\n'
    )
    cluster.reload()
    deadline = time.monotonic() + 10
    while True:
        try:
            newcomer.list_objects_v2(Bucket="mine")
            break
        except ClientError:
            assert time.monotonic() < deadline, "the reload did not take"
            time.sleep(0.1)
    cluster.credentials.write_text("[[key]]\naccess_key = \n")
    cluster.reload()
    time.sleep(0.5)
    assert "not reloaded" in cluster.master_log()
    newcomer.list_objects_v2(Bucket="mine")
    assert new_key[1] not in cluster.master_log() and USER[1] not in cluster.master_log()
    cluster.credentials.write_text(CREDENTIALS)
    cluster.reload()


def test_a_file_that_does_not_parse_stops_the_master(tmp_path):
    from conftest import MKV_BIN

    bad = tmp_path / "bad.toml"
    bad.write_text('[[key]]\naccess_key = "A"\nsecret_key = "s"\nbuckets = { "b" = ["fly"] }\n')
    proc = subprocess.run(
        [str(MKV_BIN), "-db", str(tmp_path / "db"), "-volumes", "127.0.0.1:1", "-replicas", "1"]
        + ["--s3-auth", str(bad), "server"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "fly" in proc.stderr and "--s3-auth" in proc.stderr


# ---- found by review -----------------------------------------------------------------------------


def curl_raw(method, url, data=None):
    """curl with the URL exactly as given (requests would re-encode it)."""
    cmd = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, "--path-as-is", url]
    if data is not None:
        cmd += ["--data-binary", data, "-H", "Content-Type:"]
    out = subprocess.run(cmd, capture_output=True, timeout=30).stdout
    body, _, status = out.rpartition(b"\n")
    return int(status), body


def test_a_percent_encoded_parameter_name_is_the_parameter_it_encodes(cluster):
    user = client(cluster, USER, signature_version="s3v4")
    user.put_object(Bucket="mine", Key="report", Body=b"GENUINE REPORT")
    upload = user.create_multipart_upload(Bucket="mine", Key="report")["UploadId"]
    part_url = user.generate_presigned_url(
        "upload_part", Params={"Bucket": "mine", "Key": "report", "UploadId": upload, "PartNumber": 1}
    )
    # The link for one part, its parameter name re-encoded: still that part,
    # never a PutObject of the key.
    status, _ = curl_raw("PUT", part_url.replace("uploadId=", "upload%49d="), b"ATTACKER CONTENT")
    assert status in (200, 403)
    assert stored(cluster, "mine", "report") == b"GENUINE REPORT"
    list_url = user.generate_presigned_url(
        "list_parts", Params={"Bucket": "mine", "Key": "report", "UploadId": upload}
    )
    status, body = curl_raw("GET", list_url.replace("uploadId=", "uploadI%64="))
    assert b"GENUINE REPORT" not in body
    user.abort_multipart_upload(Bucket="mine", Key="report", UploadId=upload)


def test_nothing_a_client_stores_can_end_a_header_line(cluster):
    user = client(cluster, USER)
    post = user.generate_presigned_post(
        "mine", "crlf/${filename}", Conditions=[["starts-with", "$Content-Type", "image/"],
                                               ["starts-with", "$x-amz-meta-note", ""]], ExpiresIn=600
    )
    url = f"{cluster.s3_endpoint}/mine"
    for field, value in (("Content-Type", "image/png\r\nSet-Cookie: injected=1"),
                         ("x-amz-meta-note", "a\r\nSet-Cookie: injected=2")):
        fields = dict(post["fields"], **{"Content-Type": "image/png", "x-amz-meta-note": "ok"})
        fields[field] = value
        answer = requests.post(url, data=fields, files={"file": ("a.png", b"x")}, timeout=10)
        assert answer.status_code == 400 and "set-cookie" not in answer.headers, (field, answer.headers)
        assert stored(cluster, "mine", "crlf/a.png") is None
    # A key may hold CR and LF; the answer's Location encodes them.
    fields = dict(post["fields"], **{"Content-Type": "image/png", "x-amz-meta-note": "ok"})
    answer = requests.post(url, data=fields, files={"file": ("b\r\nSet-Cookie: c=1", b"x")}, timeout=10)
    assert "set-cookie" not in answer.headers
    with pytest.raises(ClientError) as raised:
        user.put_bucket_cors(
            Bucket="mine",
            CORSConfiguration={"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"],
                                              "ExposeHeaders": ["ETag\r\nSet-Cookie: cors=1"]}]},
        )
    assert error_code(raised.value)[0] == 400


def test_a_refused_write_makes_no_bucket(cluster):
    admin = client(cluster, ADMIN)
    with pytest.raises(ClientError):
        admin.put_object(Bucket="never-made", Key="x", Body=b"abc", ContentMD5="AAAAAAAAAAAAAAAAAAAAAA==")
    with pytest.raises(ClientError) as raised:
        admin.head_bucket(Bucket="never-made")
    assert error_code(raised.value)[0] == 404


def test_public_objects_are_readable_by_any_key_but_not_restyled_anonymously(cluster):
    user = client(cluster, USER)
    assert user.get_object(Bucket="public", Key="open")["Body"].read() == b"anyone may read"
    restyled = requests.get(
        f"{cluster.s3_endpoint}/public/open?response-content-type=text/html", timeout=10
    )
    assert restyled.status_code == 400
    assert requests.get(f"{cluster.s3_endpoint}/public/open", timeout=10).headers["content-type"] != "text/html"
