"""A real cluster for the S3 client tests: nginx volumes started by the repo's
`volume` script and the real `mkv` binary on free loopback ports, one cluster
per test module, torn down at the module's end.

The binary is `$MKV_BIN`, else `<repo>/target/release/mkv` (scripts/test
builds it). Clients get any credentials ("k"/"s", us-east-1).
"""

import base64
import ctypes
import hashlib
import itertools
import os
import random
import re
import signal
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MKV_BIN = Path(os.environ.get("MKV_BIN", REPO / "target" / "release" / "mkv"))
START_TIMEOUT = 20.0
# Below the kernel's ephemeral range, so no outgoing connection holds a port a
# server is about to (re)bind; the same range as tests/it/cluster.rs.
TEST_PORTS = (20000, 32000)
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
KEY, SECRET, REGION = "k", "s", "us-east-1"

# Clients must only ever talk to the local cluster, with the test credentials,
# and never wait on an EC2 metadata address or a user's ~/.aws.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
)
for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "HTTP_PROXY", "http_proxy"):
    os.environ.pop(name, None)

_used_ports = set()
DRIVERS = set()  # the drivers masters said they run on


def pytest_terminal_summary(terminalreporter):
    if DRIVERS:
        terminalreporter.write_line(f"mkv driver(s): {', '.join(sorted(DRIVERS))}")


def free_port():
    while True:
        port = random.randrange(*TEST_PORTS)
        if port in _used_ports:
            continue
        try:
            for host in ("127.0.0.1", "0.0.0.0"):
                with socket.socket() as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        _used_ports.add(port)
        return port


def wait_for_port(port, timeout=START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port}")
            time.sleep(0.02)


def terminate(proc, sig=signal.SIGTERM, timeout=5.0):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent(sig):
    """preexec_fn: the child gets `sig` when pytest dies, however it dies."""

    def set_pdeathsig():
        _libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return set_pdeathsig


# A SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so fixtures stop the servers.
def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _sigterm)


def _supports_s3_port():
    try:
        out = subprocess.run([MKV_BIN, "--help"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return False
    return "--s3-port" in out


class Cluster:
    """Three nginx volumes and a master (-replicas 2) with an S3-only port."""

    def __init__(self, root: Path, volumes=3):
        if not MKV_BIN.exists():
            raise RuntimeError(f"{MKV_BIN} missing: build it (cargo build --release --bin mkv) or set MKV_BIN")
        self.root = root
        self.volume_procs = []
        self.volume_ports = []
        self.master = None
        self.port = free_port()
        self.s3_port = free_port() if _supports_s3_port() else None
        self.log = root / "master.log"
        try:
            for i in range(volumes):
                port = free_port()
                data = root / f"volume{i}"
                data.mkdir(parents=True)
                env = dict(os.environ, PORT=str(port), BIND="127.0.0.1")
                proc = subprocess.Popen(
                    [REPO / "volume", data],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent(signal.SIGTERM),
                )
                self.volume_procs.append(proc)
                self.volume_ports.append(port)
            for port in self.volume_ports:
                wait_for_port(port)
            self.start_master()
        except BaseException:
            self.close()
            raise

    def master_args(self):
        args = [
            MKV_BIN,
            "-db",
            self.root / "index",
            "-volumes",
            ",".join(f"127.0.0.1:{port}" for port in self.volume_ports),
            "-port",
            str(self.port),
            "--threads",
            "2",
            "--health-interval",
            "100ms",
            "-replicas",
            "2",
        ]
        if self.s3_port is not None:
            args += ["--s3-port", str(self.s3_port)]
        return [str(arg) for arg in args] + ["server"]

    def _started_lines(self):
        try:
            return self.log.read_text(errors="replace").count("mkv listening on")
        except FileNotFoundError:
            return 0

    def start_master(self):
        before = self._started_lines()
        with open(self.log, "ab") as log:
            self.master = subprocess.Popen(
                self.master_args(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent(signal.SIGKILL),
            )
        deadline = time.monotonic() + START_TIMEOUT
        # The master says it serves once every reactor listens.
        while self._started_lines() == before:
            if self.master.poll() is not None:
                raise RuntimeError(f"mkv exited {self.master.returncode}:\n{self.master_log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mkv did not say it listens:\n{self.master_log()[-3000:]}")
            time.sleep(0.02)
        wait_for_port(self.port)
        if self.s3_port is not None:
            wait_for_port(self.s3_port)
        # Each reactor logs "reactor N: driver io_uring|epoll".
        drivers = set(re.findall(r"driver (\w+)", self.master_log()))
        DRIVERS.update(drivers)
        if os.environ.get("MONOIO_FORCE_LEGACY_DRIVER") == "1":
            assert drivers == {"epoll"}, f"MONOIO_FORCE_LEGACY_DRIVER=1 but the master says {drivers}"

    def stop_master(self, sig=signal.SIGKILL):
        terminate(self.master, sig)
        self.master = None

    def restart_master(self, sig=signal.SIGKILL):
        """Stop the master (SIGKILL by default: no shutdown of any kind) and
        start it again with the same flags, index and ports."""
        self.stop_master(sig)
        self.start_master()

    def master_log(self):
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self):
        terminate(self.master, signal.SIGKILL)
        for proc in self.volume_procs:
            terminate(proc)

    @property
    def endpoint(self):
        """The master's main port: S3 when a request carries S3 signs."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def s3_endpoint(self):
        """The port where every request is S3 (anonymous clients)."""
        assert self.s3_port is not None, "this mkv has no --s3-port flag"
        return f"http://127.0.0.1:{self.s3_port}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.close()


@pytest.fixture(autouse=True)
def _master_log_on_failure(request):
    """Print the end of the master's log under a failing test."""
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed and "cluster" in request.fixturenames:
        c = request.getfixturevalue("cluster")
        print("---- master log (tail) ----\n" + c.master_log()[-2000:])


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def boto3_client(endpoint, **config):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        region_name=REGION,
        config=Config(
            s3={"addressing_style": "path"},
            # One try: a failure shows the server's first answer, fast.
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            **config,
        ),
    )


@pytest.fixture(scope="module")
def s3(cluster):
    return boto3_client(cluster.endpoint)


_bucket_counter = itertools.count()


def bucket_name(hint="b"):
    hint = re.sub(r"[^a-z0-9-]", "-", hint.lower()).strip("-")[:40] or "b"
    return f"{hint}-{os.getpid() % 10000}-{next(_bucket_counter)}"


@pytest.fixture
def bucket(s3, request):
    """A fresh, created bucket named after the test."""
    name = bucket_name(request.node.name.removeprefix("test_"))
    s3.create_bucket(Bucket=name)
    return name


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def multipart_etag(parts) -> str:
    """S3's ETag of a completed multipart upload of `parts` (bytes each)."""
    digests = b"".join(hashlib.md5(part).digest() for part in parts)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(parts)}"'


def payload(size: int, seed: int = 0) -> bytes:
    """`size` reproducible, not-repeating-too-soon bytes."""
    rng = random.Random(seed)
    return rng.randbytes(size)


def error_code(exc) -> tuple:
    """(HTTP status, S3 error code) of a botocore ClientError."""
    return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"].get("Code")


def xml_error(body: bytes) -> str:
    """The <Code> of an S3 XML error body."""
    root = ET.fromstring(body)
    assert root.tag in ("Error", S3_NS + "Error"), body[:300]
    return root.findtext("Code")


def xml_find_all(root, path):
    """findall that works with or without the S3 namespace."""
    found = root.findall(path.replace("{ns}", S3_NS))
    return found or root.findall(path.replace("{ns}", ""))


def xml_text(root, path):
    value = root.findtext(path.replace("{ns}", S3_NS))
    return value if value is not None else root.findtext(path.replace("{ns}", ""))
