"""The clients people use, each through what it does: pyarrow (aws-chunked
multipart writes), s3fs, minio-py, DuckDB httpfs, awscli, rclone, s3cmd."""

import glob
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from botocore.exceptions import ClientError

from conftest import KEY, REGION, SECRET, bucket_name, error_code, md5_hex, multipart_etag, payload

VENV_BIN = Path(sys.executable).parent


def run(cmd, env=None, check=True, timeout=60, binary=False):
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=not binary, env=env or os.environ.copy(), timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{[str(c) for c in cmd]} exited {proc.returncode}\nstdout: {proc.stdout[-2000:]!r}\nstderr: {proc.stderr[-2000:]!r}"
        )
    return proc


# ---- pyarrow -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def arrow_fs(cluster):
    from pyarrow import fs

    return fs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{cluster.s3_port}",
        scheme="http",
        anonymous=True,
        region=REGION,
        connect_timeout=5,
        request_timeout=30,
    )


def test_pyarrow_stream_roundtrip(s3, bucket, arrow_fs):
    """pyarrow's default writer: multipart, aws-chunked parts with a crc64nvme trailer."""
    from pyarrow import fs

    data = payload(300_000, 40)
    with arrow_fs.open_output_stream(f"{bucket}/arrow/stream.bin") as out:
        for i in range(0, len(data), 70_000):
            out.write(data[i : i + 70_000])
    # What was stored is exactly what was written (boto3 on the main port).
    got = s3.get_object(Bucket=bucket, Key="arrow/stream.bin")
    assert got["ContentLength"] == len(data)
    assert hashlib.md5(got["Body"].read()).hexdigest() == md5_hex(data)
    # pyarrow's own view: size, listing and bytes.
    info = arrow_fs.get_file_info(f"{bucket}/arrow/stream.bin")
    assert info.type == fs.FileType.File
    assert info.size == len(data)
    with arrow_fs.open_input_file(f"{bucket}/arrow/stream.bin") as src:
        assert src.size() == len(data)
        assert src.read_at(100, 5000) == data[5000:5100]
        assert src.read() == data
    listed = arrow_fs.get_file_info(fs.FileSelector(f"{bucket}/arrow"))
    assert [(i.path, i.size) for i in listed] == [(f"{bucket}/arrow/stream.bin", len(data))]
    # A zero-byte write.
    with arrow_fs.open_output_stream(f"{bucket}/arrow/empty") as out:
        pass
    assert arrow_fs.get_file_info(f"{bucket}/arrow/empty").size == 0
    assert s3.get_object(Bucket=bucket, Key="arrow/empty")["Body"].read() == b""


def test_pyarrow_two_parts(s3, bucket, arrow_fs):
    """11 MiB through pyarrow: two aws-chunked parts of its 10 MB part size (many 64 KiB chunks each)."""
    data = payload(11 * 1024 * 1024, 53)
    with arrow_fs.open_output_stream(f"{bucket}/arrow/big.bin") as out:
        out.write(data)
    head = s3.head_object(Bucket=bucket, Key="arrow/big.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].endswith('-2"'), head["ETag"]
    assert hashlib.md5(s3.get_object(Bucket=bucket, Key="arrow/big.bin")["Body"].read()).hexdigest() == md5_hex(data)
    with arrow_fs.open_input_file(f"{bucket}/arrow/big.bin") as src:
        assert src.read_at(1000, 10 * 1024 * 1024 - 500) == data[10 * 1024 * 1024 - 500 : 10 * 1024 * 1024 + 500]


def test_pyarrow_parquet(s3, bucket, arrow_fs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"n": list(range(2000)), "s": [f"row {i}" for i in range(2000)]})
    pq.write_table(table, f"{bucket}/pq/table.parquet", filesystem=arrow_fs)
    back = pq.read_table(f"{bucket}/pq/table.parquet", filesystem=arrow_fs)
    assert back.equals(table)
    # The bytes boto3 reads are a valid parquet file with the same rows.
    raw = s3.get_object(Bucket=bucket, Key="pq/table.parquet")["Body"].read()
    assert raw[:4] == b"PAR1" and raw[-4:] == b"PAR1"
    assert pq.read_table(io.BytesIO(raw)).equals(table)
    # A dataset read lists the bucket.
    assert pq.read_table(f"{bucket}/pq", filesystem=arrow_fs).num_rows == 2000


def test_pyarrow_signed_main_port(cluster, s3, bucket):
    """pyarrow with credentials on the main port (SigV4 + aws-chunked)."""
    from pyarrow import fs

    signed = fs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{cluster.port}",
        scheme="http",
        access_key=KEY,
        secret_key=SECRET,
        region=REGION,
        connect_timeout=5,
        request_timeout=30,
    )
    data = payload(40_000, 41)
    with signed.open_output_stream(f"{bucket}/signed.bin") as out:
        out.write(data)
    assert s3.get_object(Bucket=bucket, Key="signed.bin")["Body"].read() == data
    with signed.open_input_stream(f"{bucket}/signed.bin") as src:
        assert src.read() == data
    signed.delete_file(f"{bucket}/signed.bin")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


# ---- s3fs --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3fs_fs(cluster):
    import s3fs

    return s3fs.S3FileSystem(
        key=KEY,
        secret=SECRET,
        skip_instance_cache=True,
        client_kwargs={"endpoint_url": cluster.endpoint, "region_name": REGION},
        config_kwargs={"connect_timeout": 5, "read_timeout": 30, "retries": {"max_attempts": 1}},
    )


def test_s3fs(s3, bucket, s3fs_fs):
    fs = s3fs_fs
    data = payload(50_000, 42)
    with fs.open(f"{bucket}/fs/a.bin", "wb") as f:
        f.write(data[:20_000])
        f.write(data[20_000:])
    fs.pipe(f"{bucket}/fs/sub/b.txt", b"bee")
    assert fs.cat(f"{bucket}/fs/a.bin") == data
    assert sorted(fs.ls(f"{bucket}/fs", refresh=True)) == [f"{bucket}/fs/a.bin", f"{bucket}/fs/sub"]
    assert fs.info(f"{bucket}/fs/a.bin")["size"] == len(data)
    assert fs.info(f"{bucket}/fs/a.bin")["ETag"] == f'"{md5_hex(data)}"'
    assert sorted(fs.find(f"{bucket}/fs")) == [f"{bucket}/fs/a.bin", f"{bucket}/fs/sub/b.txt"]
    # Ranged reads (s3fs sends If-Match with the ETag it saw).
    with fs.open(f"{bucket}/fs/a.bin", "rb", block_size=5000, cache_type="none") as f:
        f.seek(12_345)
        assert f.read(1000) == data[12_345:13_345]
        assert f.read(10) == data[13_345:13_355]
    assert fs.cat_file(f"{bucket}/fs/a.bin", start=49_990, end=50_000) == data[49_990:]
    # The object changes under an open file: the If-Match read must fail, not mix values.
    with fs.open(f"{bucket}/fs/a.bin", "rb", block_size=5000, cache_type="none") as f:
        assert f.read(100) == data[:100]
        s3.put_object(Bucket=bucket, Key="fs/a.bin", Body=payload(50_000, 43))
        from s3fs.utils import FileExpired

        with pytest.raises(FileExpired):  # s3fs's answer to 412 PreconditionFailed
            f.read(100)
    fs.rm(f"{bucket}/fs", recursive=True)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


# ---- minio-py ----------------------------------------------------------------------


def test_minio(cluster, s3, bucket):
    from minio import Minio
    from minio.deleteobjects import DeleteObject

    import urllib3

    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=30), retries=False)
    client = Minio(f"127.0.0.1:{cluster.port}", KEY, SECRET, secure=False, region=REGION, http_client=http)
    assert client.bucket_exists(bucket)
    data = payload(12_000, 44)
    result = client.put_object(bucket, "mc/one", io.BytesIO(data), len(data), content_type="text/x-minio")
    assert result.etag == md5_hex(data)
    for i in range(3):
        client.put_object(bucket, f"mc/dir/{i}", io.BytesIO(b"%d" % i), 1)
    stat = client.stat_object(bucket, "mc/one")
    assert stat.size == len(data)
    assert stat.etag == md5_hex(data)
    assert stat.content_type == "text/x-minio"
    response = client.get_object(bucket, "mc/one")
    try:
        assert response.read() == data
    finally:
        response.close()
        response.release_conn()
    assert [o.object_name for o in client.list_objects(bucket, prefix="mc/", recursive=True)] == [
        "mc/dir/0",
        "mc/dir/1",
        "mc/dir/2",
        "mc/one",
    ]
    top = sorted((o.object_name, o.is_dir) for o in client.list_objects(bucket, prefix="mc/"))
    assert top == [("mc/dir/", True), ("mc/one", False)]
    # A multipart upload (minio-py writes ?uploads=): 5 MiB parts, 5 MiB + 100 bytes.
    big = payload(5 * 1024 * 1024 + 100, 52)
    result = client.put_object(bucket, "mc/big", io.BytesIO(big), len(big), part_size=5 * 1024 * 1024)
    assert result.etag == multipart_etag([big[: 5 * 1024 * 1024], big[5 * 1024 * 1024 :]]).strip('"')
    assert hashlib.md5(s3.get_object(Bucket=bucket, Key="mc/big")["Body"].read()).hexdigest() == md5_hex(big)
    client.remove_object(bucket, "mc/big")
    errors = list(client.remove_objects(bucket, [DeleteObject(f"mc/dir/{i}") for i in range(3)] + [DeleteObject("mc/one")]))
    assert errors == []
    assert list(client.list_objects(bucket, recursive=True)) == []
    assert not client.bucket_exists(bucket + "-absent")


# ---- DuckDB ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def duck(cluster, tmp_path_factory):
    import duckdb

    try:
        import duckdb_extension_httpfs
    except ImportError:
        pytest.fail("duckdb-extension-httpfs is not installed (tests/s3/requirements.txt)")
    files = glob.glob(
        os.path.join(os.path.dirname(duckdb_extension_httpfs.__file__), "extensions", "*", "httpfs.duckdb_extension")
    )
    assert files, "no httpfs.duckdb_extension in duckdb-extension-httpfs"
    con = duckdb.connect(
        config={
            "extension_directory": str(tmp_path_factory.mktemp("duckdb-ext")),
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
    )
    con.execute(f"INSTALL '{files[0]}'")
    con.execute("LOAD httpfs")
    con.execute(
        f"CREATE SECRET mkv (TYPE s3, KEY_ID '{KEY}', SECRET '{SECRET}', REGION '{REGION}', "
        f"ENDPOINT '127.0.0.1:{cluster.port}', URL_STYLE 'path', USE_SSL false)"
    )
    yield con
    con.close()


def test_duckdb_httpfs(s3, bucket, duck):
    duck.execute(
        f"COPY (SELECT range AS n, 'row ' || range AS s FROM range(5000)) TO 's3://{bucket}/duck/x.parquet' (FORMAT parquet)"
    )
    duck.execute(f"COPY (SELECT 7 AS n, 'seven' AS s) TO 's3://{bucket}/duck/y.parquet' (FORMAT parquet)")
    head = s3.head_object(Bucket=bucket, Key="duck/x.parquet")
    assert head["ContentLength"] > 1000
    raw = s3.get_object(Bucket=bucket, Key="duck/x.parquet")["Body"].read()
    assert raw[:4] == b"PAR1" and len(raw) == head["ContentLength"]
    assert duck.execute(f"SELECT count(*), sum(n), max(s) FROM 's3://{bucket}/duck/x.parquet'").fetchall() == [
        (5000, sum(range(5000)), "row 999")
    ]
    # A glob lists the bucket (ListObjectsV2).
    assert duck.execute(f"SELECT count(*), sum(n) FROM 's3://{bucket}/duck/*.parquet'").fetchall() == [
        (5001, sum(range(5000)) + 7)
    ]
    # A CSV through the same path, read back.
    duck.execute(f"COPY (SELECT 1 AS a, 'x,y' AS b) TO 's3://{bucket}/duck/z.csv' (HEADER)")
    assert s3.get_object(Bucket=bucket, Key="duck/z.csv")["Body"].read() == b'a,b\n1,"x,y"\n'
    assert duck.execute(f"SELECT * FROM 's3://{bucket}/duck/z.csv'").fetchall() == [(1, "x,y")]


# ---- awscli ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aws(cluster, tmp_path_factory):
    home = tmp_path_factory.mktemp("aws")
    config = home / "config"
    config.write_text(
        f"[default]\nregion = {REGION}\ns3 =\n  multipart_threshold = 5MB\n  multipart_chunksize = 5MB\n"
    )
    env = dict(
        os.environ,
        AWS_CONFIG_FILE=str(config),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "credentials"),
        AWS_ACCESS_KEY_ID=KEY,
        AWS_SECRET_ACCESS_KEY=SECRET,
    )
    aws_bin = VENV_BIN / "aws"
    assert aws_bin.exists(), f"{aws_bin} missing (awscli in tests/s3/requirements.txt)"

    def call(*args, check=True):
        return run([sys.executable, aws_bin, "--endpoint-url", cluster.endpoint, *args], env=env, check=check)

    return call


def test_awscli(s3, bucket, aws, tmp_path):
    data = payload(9000, 45)
    up = tmp_path / "up.bin"
    up.write_bytes(data)
    aws("s3", "cp", up, f"s3://{bucket}/cli/up.bin")
    assert s3.get_object(Bucket=bucket, Key="cli/up.bin")["Body"].read() == data

    down = tmp_path / "down.bin"
    aws("s3", "cp", f"s3://{bucket}/cli/up.bin", down)
    assert down.read_bytes() == data

    head = json.loads(aws("s3api", "head-object", "--bucket", bucket, "--key", "cli/up.bin").stdout)
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == f'"{md5_hex(data)}"'
    assert "LastModified" in head

    listing = aws("s3", "ls", f"s3://{bucket}/cli/").stdout.splitlines()
    assert len(listing) == 1 and listing[0].split()[2:] == [str(len(data)), "up.bin"], listing
    assert any(line.split()[-1] == bucket for line in aws("s3", "ls").stdout.splitlines())

    # A multipart upload (threshold 5 MB): 5 MiB + 1 KiB in two parts.
    big = payload(5 * 1024 * 1024 + 1024, 46)
    big_file = tmp_path / "big.bin"
    big_file.write_bytes(big)
    aws("s3", "cp", big_file, f"s3://{bucket}/cli/big.bin")
    head = s3.head_object(Bucket=bucket, Key="cli/big.bin")
    assert head["ETag"] == multipart_etag([big[: 5 * 1024 * 1024], big[5 * 1024 * 1024 :]])
    assert head["ContentLength"] == len(big)

    # mv is CopyObject + DeleteObject.
    aws("s3", "mv", f"s3://{bucket}/cli/up.bin", f"s3://{bucket}/cli/moved.bin")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["cli/big.bin", "cli/moved.bin"]
    assert s3.get_object(Bucket=bucket, Key="cli/moved.bin")["Body"].read() == data

    aws("s3", "rm", "--recursive", f"s3://{bucket}/cli/")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


# ---- rclone ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rclone(cluster, tmp_path_factory):
    if shutil.which("rclone") is None:
        pytest.fail("rclone is not installed (scripts/s3-venv installs it)")
    home = tmp_path_factory.mktemp("rclone")
    conf = home / "rclone.conf"
    conf.write_text(
        "[mkv]\ntype = s3\nprovider = Other\n"
        f"endpoint = {cluster.endpoint}\naccess_key_id = {KEY}\nsecret_access_key = {SECRET}\n"
        f"region = {REGION}\nforce_path_style = true\nno_check_bucket = true\nlist_version = 1\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update(RCLONE_CONFIG=str(conf), HOME=str(home))

    def call(*args, binary=False):
        return run(["rclone", "--retries", "1", "--low-level-retries", "1", *args], env=env, binary=binary)

    return call


def test_rclone(s3, bucket, rclone, tmp_path):
    data = payload(20_000, 47)
    src = tmp_path / "src"
    src.mkdir()
    (src / "one.bin").write_bytes(data)
    (src / "two.txt").write_bytes(b"second file")
    rclone("copy", src, f"mkv:{bucket}/rc")
    assert s3.get_object(Bucket=bucket, Key="rc/one.bin")["Body"].read() == data
    assert s3.get_object(Bucket=bucket, Key="rc/two.txt")["Body"].read() == b"second file"

    assert rclone("lsf", f"mkv:{bucket}/rc").stdout.split() == ["one.bin", "two.txt"]
    sizes = [line.split() for line in rclone("ls", f"mkv:{bucket}").stdout.splitlines()]
    assert sizes == [[str(len(data)), "rc/one.bin"], ["11", "rc/two.txt"]]
    assert rclone("lsf", f"mkv:{bucket}").stdout.split() == ["rc/"]
    assert rclone("cat", f"mkv:{bucket}/rc/one.bin", binary=True).stdout == data
    assert rclone("md5sum", f"mkv:{bucket}/rc/one.bin").stdout.split() == [md5_hex(data), "one.bin"]

    # Server-side copy and move (CopyObject, then DeleteObject for the move).
    rclone("copyto", f"mkv:{bucket}/rc/one.bin", f"mkv:{bucket}/rc/copy.bin")
    rclone("moveto", f"mkv:{bucket}/rc/two.txt", f"mkv:{bucket}/moved/two.txt")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["moved/two.txt", "rc/copy.bin", "rc/one.bin"]
    assert s3.get_object(Bucket=bucket, Key="rc/copy.bin")["Body"].read() == data
    assert s3.get_object(Bucket=bucket, Key="moved/two.txt")["Body"].read() == b"second file"

    rclone("delete", f"mkv:{bucket}")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_rclone_buckets(s3, rclone, tmp_path):
    """rclone mkdir (CreateBucket), and uploads with its default bucket check (PUT /bucket first)."""
    name = bucket_name("rclone-made")
    rclone("--s3-no-check-bucket=false", "mkdir", f"mkv:{name}")  # with no_check_bucket mkdir does nothing
    assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    src = tmp_path / "f.txt"
    src.write_bytes(b"checked bucket")
    rclone("--s3-no-check-bucket=false", "copyto", src, f"mkv:{name}/f.txt")
    assert s3.get_object(Bucket=name, Key="f.txt")["Body"].read() == b"checked bucket"
    assert name in rclone("lsf", "mkv:").stdout.split("/\n")
    rclone("purge", f"mkv:{name}")
    with pytest.raises(ClientError) as info:
        s3.head_bucket(Bucket=name)
    assert error_code(info.value)[0] == 404


# ---- s3cmd -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3cmd(cluster, tmp_path_factory):
    if shutil.which("s3cmd") is None:
        pytest.fail("s3cmd is not installed (scripts/s3-venv installs it)")
    home = tmp_path_factory.mktemp("s3cmd")
    conf = home / "s3cfg"
    host = f"127.0.0.1:{cluster.port}"
    conf.write_text(
        "[default]\n"
        f"access_key = {KEY}\nsecret_key = {SECRET}\nhost_base = {host}\nhost_bucket = {host}\n"
        f"bucket_location = {REGION}\nuse_https = False\nsignature_v2 = False\n"
        "check_ssl_certificate = False\nguess_mime_type = False\n"
    )
    env = dict(os.environ, HOME=str(home))

    def call(*args, check=True):
        # Debian's s3cmd runs on Debian's python3, not the venv's.
        return run([shutil.which("s3cmd"), "-c", conf, "--no-progress", *args], env=env, check=check)

    return call


def test_s3cmd(s3, bucket, s3cmd, tmp_path):
    data = payload(15_000, 49)
    src = tmp_path / "file.bin"
    src.write_bytes(data)
    s3cmd("put", src, f"s3://{bucket}/s3cmd/file.bin")
    assert s3.get_object(Bucket=bucket, Key="s3cmd/file.bin")["Body"].read() == data

    lines = s3cmd("ls", f"s3://{bucket}/s3cmd/").stdout.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].split()[-2:] == [str(len(data)), f"s3://{bucket}/s3cmd/file.bin"]
    assert any(line.split()[-1] == f"s3://{bucket}" for line in s3cmd("ls").stdout.splitlines())
    top = s3cmd("ls", f"s3://{bucket}/").stdout.splitlines()
    assert [line.split()[-2:] for line in top] == [["DIR", f"s3://{bucket}/s3cmd/"]]

    dst = tmp_path / "got.bin"
    got = s3cmd("get", f"s3://{bucket}/s3cmd/file.bin", dst)
    assert "MD5 signatures do not match" not in got.stdout + got.stderr
    assert dst.read_bytes() == data
    info = s3cmd("info", f"s3://{bucket}/s3cmd/file.bin").stdout
    assert f"MD5 sum:   {md5_hex(data)}" in info, info

    s3cmd("del", f"s3://{bucket}/s3cmd/file.bin")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_s3cmd_buckets(s3, s3cmd):
    name = bucket_name("s3cmd-made")
    s3cmd("mb", f"s3://{name}")
    assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    s3.put_object(Bucket=name, Key="x", Body=b"1")
    refused = s3cmd("rb", f"s3://{name}", check=False)
    assert refused.returncode != 0
    assert "BucketNotEmpty" in refused.stderr + refused.stdout
    s3cmd("del", f"s3://{name}/x")
    s3cmd("rb", f"s3://{name}")
    with pytest.raises(ClientError) as info:
        s3.head_bucket(Bucket=name)
    assert error_code(info.value)[0] == 404
