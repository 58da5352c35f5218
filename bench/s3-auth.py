#!/usr/bin/env python3
"""The S3 access-control rows of PERF.md: what checking signatures costs.

1. Small objects (1 KiB), many connections: wrk replays SigV4-signed S3
   GETs of 2,000 stored keys, then signed PUTs of 2,000 distinct keys
   (x-amz-content-sha256 the body's real hash), against the master with
   `--s3-auth` and without it (the same bytes: signatures then unchecked).
   A signed request stays valid for 15 minutes, so a fixed set of them can
   be replayed: each is one HMAC chain check (the signing key is cached)
   and, for a PUT, one SHA-256 of its body.
2. One 1 GiB PUT with access control on: x-amz-content-sha256 a real hash
   (signed payload: the master hashes the body) against UNSIGNED-PAYLOAD.

A cluster of its own: 3 nginx volumes (./volume) and the release binary,
one reactor pinned to CPU 1, wrk and the volumes on CPU 0.

    .venv-s3/bin/python bench/s3-auth.py [SECONDS] [CONNECTIONS] [SIZE_MB] [ROUNDS]

Not a test: never run in CI.
"""

import datetime as dt
import hashlib
import hmac
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
ACCESS, SECRET, REGION = "BENCHKEY", "bench-secret-0123456789", "us-east-1"
PORT = 16200
VOLUMES = [16201, 16202, 16203]
KEYS = 2000
VALUE = 1024


def wait_port(port):
    import socket

    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing on {port}")


def signed(method, path, payload_hash, extra=None):
    """The header lines of a SigV4-signed request (header auth)."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    scope = f"{stamp[:8]}/{REGION}/s3/aws4_request"
    headers = {"host": f"127.0.0.1:{PORT}", "x-amz-content-sha256": payload_hash, "x-amz-date": stamp}
    headers.update(extra or {})
    names = sorted(headers)
    canonical = "\n".join(
        [method, path, ""] + [f"{name}:{headers[name]}" for name in names] + ["", ";".join(names), payload_hash]
    )
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + SECRET).encode()
    for part in (stamp[:8], REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={ACCESS}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return headers


def raw_request(method, path, body=b""):
    payload_hash = hashlib.sha256(body).hexdigest()
    headers = signed(method, path, payload_hash, {"content-length": str(len(body))} if method == "PUT" else None)
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return head + "\r\n" + body.decode()


def lua_script(requests, path):
    lines = ["local requests = {"]
    for request in requests:
        assert "]==]" not in request
        lines.append(f"[==[{request}]==],")
    lines += [
        "}",
        "local counter = 0",
        "request = function()",
        "  counter = counter + 1",
        "  return requests[(counter % #requests) + 1]",
        "end",
        "local errors = 0",
        "response = function(status, headers, body)",
        "  if status >= 300 then errors = errors + 1 end",
        "end",
        "done = function(summary, latency, requests)",
        "  io.write(string.format('non-2xx %d\\n', summary.errors.status))",
        "end",
    ]
    path.write_text("\n".join(lines))


def wrk(script, seconds, connections):
    out = subprocess.run(
        ["taskset", "-c", "0", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script),
         f"http://127.0.0.1:{PORT}/"],
        capture_output=True, text=True, check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"non-2xx (\d+)", out)
    return rate, int(bad.group(1)) if bad else 0, out


def start(root, auth):
    args = ["taskset", "-c", "1", str(REPO / "target/release/mkv"), "-db", str(root / "index"), "-volumes",
            ",".join(f"127.0.0.1:{p}" for p in VOLUMES), "-port", str(PORT), "--threads", "1"]
    if auth:
        credentials = root / "credentials.toml"
        credentials.write_text(
            f'[[key]]\naccess_key = "{ACCESS}"\nsecret_key = "{SECRET}"\n'
            'buckets = { "*" = ["read", "write", "list", "delete"] }\n'
        )
        args += ["--s3-auth", str(credentials)]
    master = subprocess.Popen(args + ["server"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(PORT)
    return master


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def put_big(path, size, payload_hash):
    headers = signed("PUT", path, payload_hash, {"content-length": str(size)})
    conn = http.client.HTTPConnection("127.0.0.1", PORT)
    conn.putrequest("PUT", path, skip_host=True, skip_accept_encoding=True)
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.endheaders()
    return conn


def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    connections = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    size_mb = int(sys.argv[3]) if len(sys.argv) > 3 else 1024
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    root = Path(tempfile.mkdtemp(prefix="mkv-s3-auth-"))
    volumes = []
    try:
        for port in VOLUMES:
            env = dict(os.environ, PORT=str(port), BIND="127.0.0.1")
            volumes.append(subprocess.Popen(["taskset", "-c", "0", str(REPO / "volume"), str(root / f"v{port}")],
                                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in VOLUMES:
            wait_port(port)
        body = lambda i: (f"{i:08d}" + "v" * VALUE)[:VALUE].encode()
        # Fill the keys GETs read, with access control off.
        master = start(root, auth=False)
        for i in range(KEYS):
            conn = http.client.HTTPConnection("127.0.0.1", PORT)
            conn.request("PUT", f"/bench/g{i}", body=body(i), headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
            assert conn.getresponse().status == 200
        stop(master)
        gets = [raw_request("GET", f"/bench/g{i}") for i in range(KEYS)]
        puts = [raw_request("PUT", f"/bench/p{i}", body(i)) for i in range(KEYS)]
        get_script, put_script = root / "get.lua", root / "put.lua"
        lua_script(gets, get_script)
        lua_script(puts, put_script)
        print(f"| S3, {VALUE} B objects, {connections} connections, {seconds} s | auth off req/s | auth on req/s | on/off |")
        print("|---|---|---|---|")
        for name, script in (("GET (signed, streamed by the master)", get_script),
                             ("PUT (signed payload hash)", put_script)):
            rates = {}
            for auth in (False, True):
                master = start(root, auth)
                rate, bad, _ = wrk(script, seconds, connections)
                stop(master)
                assert bad == 0, f"{bad} non-2xx answers ({name}, auth {auth})"
                rates[auth] = rate
            print(f"| {name} | {rates[False]:.0f} | {rates[True]:.0f} | {rates[True] / rates[False]:.3f} |")

        size = size_mb * MIB
        data_path = root / "big"
        with open(data_path, "wb") as out:
            for _ in range(size_mb):
                out.write(os.urandom(MIB))
        digest = hashlib.sha256()
        with open(data_path, "rb") as data:
            while piece := data.read(8 * MIB):
                digest.update(piece)
        sha = digest.hexdigest()
        master = start(root, auth=True)
        times = {"signed payload (x-amz-content-sha256 a real hash)": [], "UNSIGNED-PAYLOAD": []}
        for round_ in range(rounds):
            for name, payload_hash in (("signed payload (x-amz-content-sha256 a real hash)", sha),
                                       ("UNSIGNED-PAYLOAD", "UNSIGNED-PAYLOAD")):
                subprocess.run(["sync"])
                began = time.monotonic()
                conn = put_big(f"/bench/big{round_}", size, payload_hash)
                with open(data_path, "rb") as data:
                    while piece := data.read(MIB):
                        conn.send(piece)
                answer = conn.getresponse()
                answer.read()
                assert answer.status == 200, answer.status
                times[name].append(time.monotonic() - began)
        stop(master)
        unsigned = sorted(times["UNSIGNED-PAYLOAD"])[rounds // 2]
        print()
        print(f"| S3 PUT of {size_mb} MiB, access control on | median s | runs | vs UNSIGNED-PAYLOAD |")
        print("|---|---|---|---|")
        for name, runs in times.items():
            median = sorted(runs)[rounds // 2]
            print(f"| {name} | {median:.3f} | {' '.join(f'{t:.3f}' for t in runs)} | {median / unsigned:.2f} |")
    finally:
        for proc in volumes:
            stop(proc)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
