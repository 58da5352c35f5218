#!/usr/bin/env python3
"""The S3 PUT rows of PERF.md: a 1 GiB S3 PUT with boto3's default checksum
(crc32, a header), an aws-chunked PUT with a crc64nvme trailer, and an S3
PUT with a real x-amz-content-sha256, each against the native PUT of the
same bytes (curl -T), on a cluster of its own: 3 nginx volumes (./volume)
and the release binary, one reactor. Prints one row per benchmark with the
master's peak RSS (VmHWM) of the run.

    .venv-s3/bin/pip install awscrt   # crc64nvme for the trailer
    .venv-s3/bin/python bench/s3-put.py [SIZE_MB] [ROUNDS]

The master is target/release/mkv, or $MKV_BIN (another build of it, for a
before/after on the same machine and minute).

Not a test: never run in CI.
"""

import hashlib
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from awscrt import checksums
from botocore.config import Config

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
PIECE = MIB


def wait_port(port):
    import socket

    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing on {port}")


def vm_hwm(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) // 1024
    return 0


def reset_hwm(pid):
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def timed(run):
    began = time.monotonic()
    run()
    return time.monotonic() - began


def main():
    size_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    root = Path(tempfile.mkdtemp(prefix="mkv-s3-put-"))
    procs = []
    try:
        ports = [16101, 16102, 16103]
        for port in ports:
            env = dict(os.environ, PORT=str(port), BIND="127.0.0.1")
            procs.append(subprocess.Popen([str(REPO / "volume"), str(root / f"v{port}")], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in ports:
            wait_port(port)
        master = subprocess.Popen(
            [os.environ.get("MKV_BIN", str(REPO / "target/release/mkv")), "-db", str(root / "index"), "-volumes",
             ",".join(f"127.0.0.1:{p}" for p in ports), "-port", "16100", "--threads", "1", "server"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(master)
        wait_port(16100)
        endpoint = "http://127.0.0.1:16100"
        data = os.urandom(size_mb * MIB)
        path = root / "big"
        path.write_bytes(data)
        crc64 = checksums.crc64nvme(data).to_bytes(8, "big")
        sha = hashlib.sha256(data).hexdigest()
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key="s",
                          region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
        s3.create_bucket(Bucket="bench")

        def native(round_):
            subprocess.run(["curl", "-sS", "-o", "/dev/null", "-f", "-T", str(path),
                            f"{endpoint}/native{round_}"], check=True)

        def boto_default(round_):
            with open(path, "rb") as body:
                s3.put_object(Bucket="bench", Key=f"crc32-{round_}", Body=body)

        def sha256_payload(round_):
            with open(path, "rb") as body:
                conn = http.client.HTTPConnection("127.0.0.1", 16100)
                conn.putrequest("PUT", f"/bench/sha-{round_}")
                conn.putheader("x-amz-content-sha256", sha)
                conn.putheader("Content-Length", str(len(data)))
                conn.endheaders()
                while piece := body.read(PIECE):
                    conn.send(piece)
                answer = conn.getresponse()
                answer.read()
                assert answer.status == 200, answer.status

        def aws_chunked_crc64(round_):
            import base64

            trailer = f"x-amz-checksum-crc64nvme:{base64.b64encode(crc64).decode()}\r\n\r\n".encode()
            pieces = []
            for at in range(0, len(data), 64 * 1024):
                chunk = data[at:at + 64 * 1024]
                pieces.append(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            encoded_length = sum(len(p) for p in pieces) + len(b"0\r\n") + len(trailer)
            conn = http.client.HTTPConnection("127.0.0.1", 16100)
            conn.putrequest("PUT", f"/bench/crc64-{round_}")
            conn.putheader("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
            conn.putheader("Content-Encoding", "aws-chunked")
            conn.putheader("x-amz-trailer", "x-amz-checksum-crc64nvme")
            conn.putheader("x-amz-decoded-content-length", str(len(data)))
            conn.putheader("Content-Length", str(encoded_length))
            conn.endheaders()
            batch = []
            for piece in pieces:
                batch.append(piece)
                if len(batch) == 16:
                    conn.send(b"".join(batch))
                    batch = []
            conn.send(b"".join(batch) + b"0\r\n" + trailer)
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 200, answer.status

        rows = {"native PUT (curl -T)": native, "S3 PUT, boto3 default (crc32 header)": boto_default,
                "S3 PUT, aws-chunked + crc64nvme trailer": aws_chunked_crc64,
                "S3 PUT, x-amz-content-sha256 a real hash": sha256_payload}
        # What each row wrote, deleted after it is timed: 3 GiB a row and
        # round would fill the disk otherwise.
        written = {"native PUT (curl -T)": "/native{}", "S3 PUT, boto3 default (crc32 header)": "/bench/crc32-{}",
                   "S3 PUT, aws-chunked + crc64nvme trailer": "/bench/crc64-{}",
                   "S3 PUT, x-amz-content-sha256 a real hash": "/bench/sha-{}"}

        def remove(path):
            conn = http.client.HTTPConnection("127.0.0.1", 16100)
            headers = {} if path.startswith("/native") else {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}
            conn.request("DELETE", path, headers=headers)
            conn.getresponse().read()
        times = {name: [] for name in rows}
        peaks = {name: 0 for name in rows}
        for round_ in range(rounds):
            for name, run in rows.items():
                subprocess.run(["sync"])
                reset_hwm(master.pid)
                times[name].append(timed(lambda: run(round_)))
                peaks[name] = max(peaks[name], vm_hwm(master.pid))
                remove(written[name].format(round_))
        native_median = sorted(times["native PUT (curl -T)"])[rounds // 2]
        print(f"| benchmark ({size_mb} MiB, 3 replicas) | median s | runs | vs native | peak RSS MiB |")
        print("|---|---|---|---|---|")
        for name in rows:
            median = sorted(times[name])[rounds // 2]
            runs = " ".join(f"{t:.3f}" for t in times[name])
            print(f"| {name} | {median:.3f} | {runs} | {median / native_median:.2f} | {peaks[name]} |")
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
