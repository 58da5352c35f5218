#!/usr/bin/env python3
"""Failover driver for bench/pg-failover (Python 3, standard library only).

Drives PUTs of fresh keys and GETs through every master, kills -9 the
PostgreSQL primary FAILOVERS times, and reports per failover how long writes
were unavailable, how writes were answered meanwhile, how many reads were
still served, and at the end whether every acknowledged (201) write reads
back with its bytes. See bench/pg-failover for the environment it reads.
"""

import hashlib
import http.client
import os
import random
import subprocess
import sys
import threading
import time
import urllib.parse

# A request that takes longer than this counts as hung ("timeout"): no
# answer at all is worse than a 503, and long enough that a slow but honest
# answer during a failover is not mistaken for one.
REQUEST_TIMEOUT_SECONDS = 15.0
# Writes must succeed this long in a row before a failover counts as over.
RECOVERED_SECONDS = 2.0
# The longest a failover may take before the run gives up on it.
FAILOVER_DEADLINE_SECONDS = 120.0
# The longest a killed node may take to rejoin as a standby.
REJOIN_DEADLINE_SECONDS = 180.0
# Each value's size: small, the index is what is under test.
VALUE_BYTES = 1024
# Parallel readers in the final check of every acknowledged key.
CHECKERS = 4


def env(name, default):
    return os.environ.get(name, default)


MASTERS = env("MASTER_URLS", "http://127.0.0.1:3000,http://127.0.0.1:3010").split(",")
REST_PORTS = [int(port) for port in env("REST_PORTS", "8008,8009,8010").split(",")]
FAILOVERS = int(env("FAILOVERS", "10"))
KILL = env("KILL", "node")
WRITERS = int(env("WRITERS", "2"))
READERS = int(env("READERS", "2"))
STEADY_SECONDS = float(env("STEADY_SECONDS", "5"))
PG_CLUSTER = env("PG_CLUSTER", "scripts/pg-cluster")
DATA = env("DATA", "/tmp/mkv-pg")
RUN = "%x" % random.getrandbits(32)


def log(message):
    print("%s %s" % (time.strftime("%H:%M:%S"), message), file=sys.stderr, flush=True)


def value_of(key):
    """The bytes of a key's value, derived from the key: nothing to keep."""
    seed = hashlib.sha256(key.encode()).digest()
    return (seed * (VALUE_BYTES // len(seed) + 1))[:VALUE_BYTES]


class Client:
    """Keep-alive HTTP connections by host:port, remade after any error."""

    def __init__(self):
        self.connections = {}

    def request(self, method, url, body=None):
        """(status, headers dict, body bytes); status is a string on failure."""
        parts = urllib.parse.urlsplit(url)
        host = parts.netloc
        path = parts.path + ("?" + parts.query if parts.query else "")
        for attempt in (1, 2):
            connection = self.connections.get(host)
            if connection is None:
                connection = http.client.HTTPConnection(host, timeout=REQUEST_TIMEOUT_SECONDS)
                self.connections[host] = connection
            try:
                connection.request(method, path, body=body)
                response = connection.getresponse()
                data = response.read()
                headers = {name.lower(): value for name, value in response.getheaders()}
                if headers.get("connection", "").lower() == "close":
                    self.drop(host)
                return response.status, headers, data
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as error:
                self.drop(host)
                # A kept-alive connection the server closed while idle: retry once
                # on a fresh one. A second failure is the answer.
                if attempt == 2:
                    return "reset", {}, repr(error).encode()
            except TimeoutError:
                self.drop(host)
                return "timeout", {}, b""
            except OSError as error:
                self.drop(host)
                return "refused" if isinstance(error, ConnectionRefusedError) else "oserror", {}, repr(error).encode()
        return "reset", {}, b""

    def drop(self, host):
        connection = self.connections.pop(host, None)
        if connection is not None:
            connection.close()


class Ledger:
    """Every request's outcome, and the keys acknowledged with 201."""

    def __init__(self):
        self.lock = threading.Lock()
        self.writes = []  # (start, end, master, status, has_retry_after)
        self.reads = []  # (start, end, master, status)
        self.acknowledged = []  # (key, end)
        self.failures = []  # (time, what) first lines of unexpected answers

    def write(self, record, key):
        with self.lock:
            self.writes.append(record)
            if record[3] == 201:
                self.acknowledged.append((key, record[1]))

    def read(self, record):
        with self.lock:
            self.reads.append(record)

    def note(self, what):
        with self.lock:
            if len(self.failures) < 200:
                self.failures.append((time.time(), what))

    def keys_before(self, moment):
        with self.lock:
            return [key for key, end in self.acknowledged if end < moment]


def writer(number, ledger, stop):
    client = Client()
    sequence = 0
    while not stop.is_set():
        master = MASTERS[sequence % len(MASTERS)]
        key = "pgfo-%s-%d-%d" % (RUN, number, sequence)
        sequence += 1
        start = time.time()
        status, headers, body = client.request("PUT", "%s/%s" % (master, key), value_of(key))
        end = time.time()
        ledger.write((start, end, master, status, "retry-after" in headers), key)
        if status not in (201, 503):
            ledger.note("PUT %s via %s: %s %s" % (key, master, status, body[:200]))
        if status == 503 and "retry-after" not in headers:
            ledger.note("PUT %s via %s: 503 without Retry-After" % (key, master))
        if status != 201:
            # Not a tight loop against a master that refuses: a client backing off.
            time.sleep(0.05)


def reader(number, ledger, stop):
    client = Client()
    sequence = 0
    while not stop.is_set():
        keys = ledger.keys_before(time.time() - 1.0)
        if not keys:
            time.sleep(0.1)
            continue
        key = random.choice(keys)
        master = MASTERS[(sequence + number) % len(MASTERS)]
        sequence += 1
        start = time.time()
        status, headers, body = client.request("GET", "%s/%s" % (master, key))
        end = time.time()
        ledger.read((start, end, master, status))
        if status not in (302, 503):
            ledger.note("GET %s via %s: %s %s" % (key, master, status, body[:200]))
        time.sleep(0.01)


def rest_get(port, path):
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        connection.close()
        return response.status
    except OSError:
        return None


def primary_node():
    """pgN whose Patroni answers 200 on /primary, or None."""
    for index, port in enumerate(REST_PORTS):
        if rest_get(port, "/primary") == 200:
            return "pg%d" % (index + 1)
    return None


def cluster_ready():
    return subprocess.run([PG_CLUSTER, "ready"], env=dict(os.environ, DATA=DATA)).returncode == 0


def kill_primary(node):
    if KILL == "node":
        subprocess.run([PG_CLUSTER, "node-stop", node], env=dict(os.environ, DATA=DATA), check=True)
        return
    with open(os.path.join(DATA, node, "data", "postmaster.pid")) as pidfile:
        os.kill(int(pidfile.readline()), 9)


def restart_node(node):
    if KILL == "node":
        subprocess.run([PG_CLUSTER, "node-start", node], env=dict(os.environ, DATA=DATA), check=True)
    # KILL=postgres: the node's Patroni lives on and brings PostgreSQL back as a standby.


def wait_until(predicate, deadline_seconds, what):
    deadline = time.time() + deadline_seconds
    while time.time() < deadline:
        if predicate():
            return time.time()
        time.sleep(0.1)
    raise SystemExit("pg-failover: gave up waiting for %s after %d s" % (what, deadline_seconds))


def writes_recovered(ledger, since):
    """True once every write that ended in the last RECOVERED_SECONDS, after
    `since`, was a 201, and there were some."""
    now = time.time()
    with ledger.lock:
        recent = [w for w in ledger.writes[-2000:] if w[1] > max(since, now - RECOVERED_SECONDS)]
    return now - since > RECOVERED_SECONDS and recent and all(w[3] == 201 for w in recent)


def failover(round_number, ledger):
    wait_until(primary_node, FAILOVER_DEADLINE_SECONDS, "a primary")
    old = primary_node()
    killed_at = time.time()
    kill_primary(old)
    log("failover %d: killed %s (%s)" % (round_number, old, KILL))
    wait_until(lambda: primary_node() not in (None, old), FAILOVER_DEADLINE_SECONDS, "a new primary")
    promoted_at = time.time()
    new = primary_node()
    recovered_at = wait_until(lambda: writes_recovered(ledger, killed_at), FAILOVER_DEADLINE_SECONDS,
                              "writes to succeed again")
    log("failover %d: %s promoted after %.1f s" % (round_number, new, promoted_at - killed_at))
    restart_node(old)
    wait_until(cluster_ready, REJOIN_DEADLINE_SECONDS, "%s to rejoin" % old)
    rejoined_at = time.time()
    log("failover %d: %s rejoined after %.1f s" % (round_number, old, rejoined_at - killed_at))
    return {"round": round_number, "old": old, "new": new, "killed": killed_at,
            "promoted": promoted_at - killed_at, "recovered": recovered_at}


def summarize(event, ledger):
    """Figures for one failover from the ledger, over [kill - 1 s, recovered]."""
    killed, recovered = event["killed"], event["recovered"]
    with ledger.lock:
        writes = [w for w in ledger.writes if w[1] >= killed - 1.0 and w[0] <= recovered]
        reads = list(ledger.reads)
    failed = [w for w in writes if w[3] != 201 and w[1] >= killed]
    if failed:
        first_failed = min(w[1] for w in failed)
        after = [w[1] for w in writes if w[3] == 201 and w[0] >= first_failed]
        first_ok = min(after) if after else recovered
        unavailable = first_ok - first_failed
    else:
        first_failed, first_ok, unavailable = killed, killed, 0.0
    # Longest stretch with no write answered 201: counts writes that hang, too.
    ok_ends = sorted([killed] + [w[1] for w in writes if w[3] == 201 and w[1] >= killed])
    gap = max(b - a for a, b in zip(ok_ends, ok_ends[1:])) if len(ok_ends) > 1 else 0.0
    statuses = {}
    for w in failed:
        statuses[w[3]] = statuses.get(w[3], 0) + 1
    switch = [r for r in reads if r[0] >= first_failed and r[1] <= first_ok] if failed else []
    served = sum(1 for r in switch if r[3] == 302)
    # Past the first second of a switch a hit must come from a cache that
    # outlives --coherence-ms, a miss from a standby: neither is expected.
    served_late = sum(1 for r in switch if r[3] == 302 and r[0] >= first_failed + 1.0)
    event.update({"unavailable": unavailable, "gap": gap, "statuses": statuses,
                  "no_retry_after": sum(1 for w in failed if w[3] == 503 and not w[4]),
                  "reads_switch": len(switch), "reads_served": served,
                  "reads_served_late": served_late})
    return event


def check_key(client, key):
    """None when the key reads back right through a master, else what went wrong."""
    master = random.choice(MASTERS)
    for attempt in range(3):
        status, headers, body = client.request("GET", "%s/%s" % (master, key))
        if status == 503 or isinstance(status, str):
            time.sleep(0.5)
            continue
        break
    if status != 302:
        return "GET via %s: %s" % (master, status)
    location = headers.get("location", "")
    status, _, body = client.request("GET", location)
    if status != 200:
        return "volume %s: %s" % (location, status)
    if body != value_of(key):
        return "volume %s: wrong bytes (%d)" % (location, len(body))
    return None


def check_all(keys):
    lost = []
    lock = threading.Lock()

    def work(part):
        client = Client()
        for key in part:
            problem = check_key(client, key)
            if problem:
                with lock:
                    lost.append((key, problem))

    threads = [threading.Thread(target=work, args=(keys[i::CHECKERS],)) for i in range(CHECKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return lost


def status_text(statuses):
    return " ".join("%s:%d" % (status, count) for status, count in sorted(statuses.items(), key=str)) or "-"


def report(events, ledger, lost):
    print()
    print("pg-failover: %d failovers, KILL=%s, %d writers and %d readers over %s"
          % (len(events), KILL, WRITERS, READERS, " ".join(MASTERS)))
    print()
    print("| # | killed | new primary | promoted s | writes unavailable s | longest no-201 gap s "
          "| writes failed (status:count) | 503 without Retry-After | reads during switch | reads served (302) "
          "| of them 1 s or more into the switch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for e in events:
        print("| %d | %s | %s | %.1f | %.2f | %.2f | %s | %d | %d | %d | %d |"
              % (e["round"], e["old"], e["new"], e["promoted"], e["unavailable"], e["gap"],
                 status_text(e["statuses"]), e["no_retry_after"], e["reads_switch"], e["reads_served"], e["reads_served_late"]))
    unavailable = sorted(e["unavailable"] for e in events)
    if unavailable:
        print()
        print("write unavailability: median %.2f s, max %.2f s"
              % (unavailable[len(unavailable) // 2], unavailable[-1]))
    with ledger.lock:
        writes = len(ledger.writes)
        acknowledged = len(ledger.acknowledged)
        reads = len(ledger.reads)
        totals = {}
        for w in ledger.writes:
            totals[w[3]] = totals.get(w[3], 0) + 1
        read_totals = {}
        for r in ledger.reads:
            read_totals[r[3]] = read_totals.get(r[3], 0) + 1
    print("writes: %d (%s); acknowledged 201: %d; lost: %d" % (writes, status_text(totals), acknowledged, len(lost)))
    print("reads: %d (%s)" % (reads, status_text(read_totals)))
    for key, problem in lost[:20]:
        print("  LOST %s: %s" % (key, problem))
    if ledger.failures:
        print("unexpected answers (first %d):" % min(len(ledger.failures), 20))
        for moment, what in ledger.failures[:20]:
            print("  %s %s" % (time.strftime("%H:%M:%S", time.localtime(moment)), what))


def main():
    ledger = Ledger()
    stop = threading.Event()
    threads = [threading.Thread(target=writer, args=(i, ledger, stop), daemon=True) for i in range(WRITERS)]
    threads += [threading.Thread(target=reader, args=(i, ledger, stop), daemon=True) for i in range(READERS)]
    for thread in threads:
        thread.start()
    events = []
    try:
        for round_number in range(1, FAILOVERS + 1):
            time.sleep(STEADY_SECONDS)
            events.append(failover(round_number, ledger))
        time.sleep(STEADY_SECONDS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(REQUEST_TIMEOUT_SECONDS + 1)
    events = [summarize(event, ledger) for event in events]
    keys = [key for key, _ in ledger.acknowledged]
    log("checking %d acknowledged keys" % len(keys))
    lost = check_all(keys)
    report(events, ledger, lost)
    bad = lost or any(e["statuses"].keys() - {503} or e["no_retry_after"] for e in events)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
