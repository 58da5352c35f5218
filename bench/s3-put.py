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
before/after on the same machine and minute). $VOLUME_ROOT (default: the
system's temporary directory) is where the volumes keep their files
(/dev/shm takes this VM's disk out of the rows).

Two kinds of row. The boto3 row is the whole client call: boto3 reads
the file and computes its crc32 and (plain HTTP: the payload is signed)
its SHA-256 before it sends a byte, on the same cores; the row also gives
the part after the request was signed (botocore's before-send event to
the answer). The curl rows send the same bytes with the same client as
the native row, so that they differ from it only in what the master does:
boto3's own request replayed (its headers as captured in the boto3 row:
x-amz-content-sha256 the body's hash, x-amz-checksum-crc32), an
aws-chunked body with a crc64nvme trailer (the framing built into a file
before the timing), and a real x-amz-content-sha256 alone.

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
    volumes = Path(tempfile.mkdtemp(prefix="mkv-s3-put-volumes-", dir=os.environ.get("VOLUME_ROOT")))
    procs = []
    try:
        ports = [16101, 16102, 16103]
        for port in ports:
            env = dict(os.environ, PORT=str(port), BIND="127.0.0.1")
            procs.append(subprocess.Popen([str(REPO / "volume"), str(volumes / f"v{port}")], env=env,
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

        def curl_put(url, file, headers=()):
            command = ["curl", "-sS", "-o", "/dev/null", "-f", "-T", str(file)]
            for header in headers:
                command += ["-H", header]
            subprocess.run(command + [url], check=True)

        def native(round_):
            curl_put(f"{endpoint}/native{round_}", path)

        captured = {}

        def before_send(request, **_):
            captured["headers"] = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()}
            captured["sent"] = time.monotonic()

        s3.meta.events.register("before-send.s3.PutObject", before_send)
        after_signing = []

        def boto_default(round_):
            with open(path, "rb") as body:
                s3.put_object(Bucket="bench", Key=f"crc32-{round_}", Body=body)
            after_signing.append(time.monotonic() - captured["sent"])

        def boto_replayed(round_):
            skip = {"content-length", "expect", "user-agent", "host", "transfer-encoding"}
            headers = [f"{k}: {v}" for k, v in captured["headers"].items() if k.lower() not in skip]
            assert any(k.lower() == "x-amz-checksum-crc32" for k in captured["headers"]), captured["headers"]
            curl_put(f"{endpoint}/bench/replayed-{round_}", path, headers)

        def sha256_payload(round_):
            curl_put(f"{endpoint}/bench/sha-{round_}", path, [f"x-amz-content-sha256: {sha}"])

        import base64

        encoded = root / "big.aws-chunked"
        trailer = f"x-amz-checksum-crc64nvme:{base64.b64encode(crc64).decode()}\r\n\r\n".encode()
        with open(encoded, "wb") as out:
            for at in range(0, len(data), 64 * 1024):
                chunk = data[at:at + 64 * 1024]
                out.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            out.write(b"0\r\n" + trailer)

        def aws_chunked_crc64(round_):
            curl_put(f"{endpoint}/bench/crc64-{round_}", encoded, [
                "x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER", "Content-Encoding: aws-chunked",
                "x-amz-trailer: x-amz-checksum-crc64nvme", f"x-amz-decoded-content-length: {len(data)}"])

        rows = {"native PUT (curl -T)": native, "S3 PUT, boto3 default (crc32 header), whole call": boto_default,
                "S3 PUT, boto3's request replayed by curl -T": boto_replayed,
                "S3 PUT, aws-chunked + crc64nvme trailer (curl -T)": aws_chunked_crc64,
                "S3 PUT, x-amz-content-sha256 a real hash (curl -T)": sha256_payload}
        # What each row wrote, deleted after it is timed: 3 GiB a row and
        # round would fill the disk otherwise.
        written = dict(zip(rows, ["/native{}", "/bench/crc32-{}", "/bench/replayed-{}", "/bench/crc64-{}",
                                  "/bench/sha-{}"]))

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
            if rows[name] is boto_default:
                median = sorted(after_signing)[rounds // 2]
                runs = " ".join(f"{t:.3f}" for t in after_signing)
                print(f"| of which after signing (before-send to answer) | {median:.3f} | {runs} "
                      f"| {median / native_median:.2f} | |")
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(volumes, ignore_errors=True)


if __name__ == "__main__":
    main()
