#!/usr/bin/env python3
"""Fault driver for bench/pg-failover (Python 3, standard library only).

Drives writers of every kind and readers through every master, injects a
PostgreSQL fault FAULTS times (FAULT: a node or postmaster kill with a
failover, the masters' lock and lease sessions terminated, a commit stalled
on a synchronous standby, the primary frozen, a restart), and reports per
fault how long writes were unavailable, how every request was answered
meanwhile and how long the slowest answer took; at the end, whether every
acknowledged write reads back with its bytes on every replica, every
acknowledged delete stays deleted, no key had two writers acknowledged and
no key is left locked. See bench/pg-failover for the environment it reads.
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

# A request with no answer after this long counts as hung ("timeout"). Long,
# so that a slow answer is measured (and counted past BOUND_SECONDS) rather
# than cut.
REQUEST_TIMEOUT_SECONDS = 30.0
# Every answer is due within this long of the request's last byte: the
# master's bound on any wait for the index (offload::INDEX_WAIT_MS_MAX, 5 s)
# plus a second for everything else on this loaded box.
BOUND_SECONDS = 6.0
# An S3 write waits for its turn while another write holds its key, up to
# s3::WRITE_TURN_WAIT (30 s), where a native write is refused (409): a key
# whose unlock was lost stays held until its lease runs out.
S3_BOUND_SECONDS = 30.0 + BOUND_SECONDS
# Writes must succeed this long in a row before a fault counts as over.
RECOVERED_SECONDS = 2.0
# The longest a fault may take to clear before the run gives up on it.
FAILOVER_DEADLINE_SECONDS = 120.0
# The longest a node may take to rejoin (3 members, one a sync standby).
REJOIN_DEADLINE_SECONDS = 180.0
# A key lease of a master that lost the database lapses after 6 s
# (KEY_LEASE_MS) plus a 1 s margin; the check for keys left locked waits
# this long after the last fault.
LEASE_EXPIRY_SECONDS = 8.0
# Value sizes: small, the index is what is under test; the slow PUTs are
# large enough to stream for SLOW_PUT_SECONDS in pieces.
VALUE_BYTES = 1024
S3_VALUE_BYTES = 4096
SLOW_PIECES = 8
SLOW_PIECE_BYTES = 32 * 1024
# Parallel readers in the final check.
CHECKERS = 4


def env(name, default):
    return os.environ.get(name, default)


MASTERS = env("MASTER_URLS", "http://127.0.0.1:3000,http://127.0.0.1:3010").split(",")
REST_PORTS = [int(port) for port in env("REST_PORTS", "8008,8009,8010").split(",")]
PG_PORTS = [int(port) for port in env("PG_PORTS", "5441,5442,5443").split(",")]
FAULTS = int(env("FAULTS", env("FAILOVERS", "10")))
FAULT = env("FAULT", env("KILL", "node"))
FAULT_KINDS = ("node", "postgres", "terminate-locks", "stall-commit", "freeze", "restart")
WRITERS = int(env("WRITERS", "2"))
READERS = int(env("READERS", "2"))
SLOW_WRITERS = int(env("SLOW_WRITERS", "1"))
DELETERS = int(env("DELETERS", "1"))
UNLINKERS = int(env("UNLINKERS", "1"))
S3_WRITERS = int(env("S3_WRITERS", "1"))
STEADY_SECONDS = float(env("STEADY_SECONDS", "5"))
FREEZE_SECONDS = float(env("FREEZE_SECONDS", "20"))
STALL_SECONDS = float(env("STALL_SECONDS", "10"))
TERMINATE_SECONDS = float(env("TERMINATE_SECONDS", "3"))
SLOW_PUT_SECONDS = float(env("SLOW_PUT_SECONDS", "2"))
PG_CLUSTER = env("PG_CLUSTER", "scripts/pg-cluster")
DATA = env("DATA", "/tmp/mkv-pg")
RUN = "%x" % random.getrandbits(32)
BUCKET = "pgfo-%s" % RUN
S3_HEADERS = {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}

# The masters' sessions that hold key locks and leases: a lock or unlock
# call, a lease or key-lease renewal, or an advisory (role) lock.
LOCK_SESSIONS = ("application_name = 'mkv' AND pid <> pg_backend_pid() AND ("
                 "query LIKE '%mkv_lock%' OR query LIKE '%mkv_unlock%' "
                 "OR query LIKE '%mkv_masters%' OR query LIKE '%mkv_key_leases%' "
                 "OR pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory'))")
# A standby no node is: commits wait for it as for one that is stopped.
PHANTOM_STANDBY = "mkv_stopped_standby"


def log(message):
    print("%s %s" % (time.strftime("%H:%M:%S"), message), file=sys.stderr, flush=True)


def value_of(identity, size):
    """The bytes of one write, derived from its identity: nothing to keep."""
    seed = hashlib.sha256(identity.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class Client:
    """Keep-alive HTTP connections by host:port, remade after any error."""

    def __init__(self):
        self.connections = {}

    def request(self, method, url, body=None, headers=None):
        """(status, headers dict, body bytes, seconds from the last byte sent
        to the answer); status is a string on failure. A body that is a
        generator is sent chunked and never retried."""
        parts = urllib.parse.urlsplit(url)
        host = parts.netloc
        path = parts.path + ("?" + parts.query if parts.query else "")
        streamed = body is not None and not isinstance(body, (bytes, bytearray))
        sent = [time.time()]
        if streamed:
            body = self.timed(body, sent)
        for attempt in (1, 2):
            connection = self.connections.get(host)
            reused = connection is not None
            if connection is None:
                connection = http.client.HTTPConnection(host, timeout=REQUEST_TIMEOUT_SECONDS)
                self.connections[host] = connection
            try:
                sent[0] = time.time()
                connection.request(method, path, body=body, headers=headers or {}, encode_chunked=streamed)
                if not streamed:
                    sent[0] = time.time()
                response = connection.getresponse()
                data = response.read()
                answered = time.time() - sent[0]
                response_headers = {name.lower(): value for name, value in response.getheaders()}
                if response_headers.get("connection", "").lower() == "close":
                    self.drop(host)
                return response.status, response_headers, data, answered
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as error:
                self.drop(host)
                # A kept-alive connection the server closed while idle: retry
                # once on a fresh one. A second failure is the answer.
                if attempt == 2 or streamed or not reused:
                    return "reset", {}, repr(error).encode(), time.time() - sent[0]
            except TimeoutError:
                self.drop(host)
                return "timeout", {}, b"", time.time() - sent[0]
            except OSError as error:
                self.drop(host)
                status = "refused" if isinstance(error, ConnectionRefusedError) else "oserror"
                return status, {}, repr(error).encode(), time.time() - sent[0]
        return "reset", {}, b"", time.time() - sent[0]

    @staticmethod
    def timed(pieces, sent):
        for piece in pieces:
            yield piece
        sent[0] = time.time()

    def drop(self, host):
        connection = self.connections.pop(host, None)
        if connection is not None:
            connection.close()


ABSENT = ("absent",)


class Tracked:
    """One key and what its acknowledged writes say it must hold.

    A state is ABSENT or ("live", identity) (the bytes value_of(identity,
    size)). `acked` is the state after the last acknowledged write (ABSENT
    before any); `unknown` the states of writes answered neither yes nor no
    (503, no answer) since: the key may hold any of them. A key whose write
    had an unknown outcome gets no further writes but the contender's.
    """

    def __init__(self, kind, key, size):
        self.kind, self.key, self.size = kind, key, size
        self.acked = ABSENT
        self.unknown = []
        self.acks = []  # (master, method, identity) of every acknowledged write
        self.history = []  # (time, master, method, status)

    def allowed(self):
        return [self.acked] + self.unknown


class Ledger:
    """Every request's outcome, and every key written."""

    def __init__(self):
        self.lock = threading.Lock()
        # (start, end, master, kind, status, has_retry_after, answered_seconds)
        self.writes = []
        self.reads = []
        self.acknowledged = []  # (key, end) of the PUT writers' 201s, for the readers
        self.keys = []  # Tracked
        self.failures = []  # (time, what) first lines of unexpected answers

    def track(self, kind, key, size):
        tracked = Tracked(kind, key, size)
        with self.lock:
            self.keys.append(tracked)
        return tracked

    def write(self, tracked, master, method, kind, start, answer, state, expected=(201, 204, 200), refusals=()):
        """Record a write's answer and what it means for its key: `state`
        when acknowledged (a status in `expected`), unchanged when refused (a
        status in `refusals`), possibly `state` otherwise. True when
        acknowledged, False when refused, None when unknown."""
        status, headers, body, answered = answer
        end = time.time()
        with self.lock:
            self.writes.append((start, end, master, kind, status, "retry-after" in headers, answered))
            tracked.history.append((end, master, method, status))
            if status in expected:
                tracked.acks.append((master, method, state[1] if len(state) > 1 else None))
                tracked.acked = state
                tracked.unknown = []
                if tracked.kind == "put":
                    self.acknowledged.append((tracked.key, end))
                outcome = True
            elif status in refusals:
                outcome = False
            else:
                if state not in tracked.unknown:
                    tracked.unknown.append(state)
                outcome = None
        if status not in expected and status not in refusals and status != 503:
            self.note("%s %s via %s: %s %s" % (method, tracked.key, master, status, body[:200]))
        if status == 503 and "retry-after" not in headers:
            self.note("%s %s via %s: 503 without Retry-After" % (method, tracked.key, master))
        return outcome

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


def url(master, key):
    return "%s/%s" % (master, key)


def backoff(outcome):
    # Not a tight loop against a master that refuses: a client backing off.
    if outcome is not True:
        time.sleep(0.05)


def put_writer(number, ledger, stop):
    """Fresh 1 KiB keys one after another, alternating masters."""
    client = Client()
    sequence = 0
    while not stop.is_set():
        master = MASTERS[sequence % len(MASTERS)]
        key = "pgfo-%s-%d-%d" % (RUN, number, sequence)
        sequence += 1
        tracked = ledger.track("put", key, VALUE_BYTES)
        start = time.time()
        answer = client.request("PUT", url(master, key), value_of(key, VALUE_BYTES))
        backoff(ledger.write(tracked, master, "PUT", "put", start, answer, ("live", key), expected=(201,)))


def slow_writer(number, ledger, stop):
    """A PUT whose body streams for SLOW_PUT_SECONDS in pieces through one
    master while a contender PUTs the same key through the other every
    150 ms until the slow one is answered: a fault that takes a lock away
    mid-PUT shows as two acknowledged writers or the wrong bytes."""
    client = Client()
    sequence = 0
    size = SLOW_PIECES * SLOW_PIECE_BYTES
    while not stop.is_set():
        master = MASTERS[sequence % len(MASTERS)]
        other = MASTERS[(sequence + 1) % len(MASTERS)]
        key = "pgfo-%s-slow%d-%d" % (RUN, number, sequence)
        sequence += 1
        tracked = ledger.track("slow", key, size)
        identity = key + "#slow"
        value = value_of(identity, size)
        answered = threading.Event()

        def pieces():
            for index in range(SLOW_PIECES):
                if index:
                    time.sleep(SLOW_PUT_SECONDS / SLOW_PIECES)
                yield value[index * SLOW_PIECE_BYTES:(index + 1) * SLOW_PIECE_BYTES]

        contender = threading.Thread(target=contend, args=(ledger, tracked, other, answered), daemon=True)
        contender.start()
        start = time.time()
        answer = client.request("PUT", url(master, key), pieces())
        answered.set()
        outcome = ledger.write(tracked, master, "PUT", "slow", start, answer, ("live", identity),
                               expected=(201,), refusals=(409, 403))
        contender.join()
        backoff(outcome)


def contend(ledger, tracked, master, answered):
    client = Client()
    identity = tracked.key + "#contender"
    value = value_of(identity, tracked.size)
    answered.wait(0.3)
    while not answered.is_set():
        start = time.time()
        answer = client.request("PUT", url(master, tracked.key), value)
        # 409: the key is held (the slow PUT); 403: it is live already.
        outcome = ledger.write(tracked, master, "PUT", "contend", start, answer, ("live", identity),
                               expected=(201,), refusals=(409, 403))
        if outcome is True or answer[0] == 403:
            return
        answered.wait(0.15)


def delete_writer(number, ledger, stop):
    """PUT a fresh key through one master, DELETE it through the other."""
    client = Client()
    sequence = 0
    while not stop.is_set():
        first, second = MASTERS[sequence % len(MASTERS)], MASTERS[(sequence + 1) % len(MASTERS)]
        key = "pgfo-%s-del%d-%d" % (RUN, number, sequence)
        sequence += 1
        tracked = ledger.track("delete", key, VALUE_BYTES)
        start = time.time()
        answer = client.request("PUT", url(first, key), value_of(key, VALUE_BYTES))
        outcome = ledger.write(tracked, first, "PUT", "put", start, answer, ("live", key), expected=(201,))
        if outcome is True:
            start = time.time()
            answer = client.request("DELETE", url(second, key))
            outcome = ledger.write(tracked, second, "DELETE", "delete", start, answer, ABSENT, expected=(204,))
        backoff(outcome)


def unlink_writer(number, ledger, stop):
    """PUT, UNLINK, RELINK, UNLINK of one key, alternating masters; a step
    with an unknown outcome ends the key."""
    client = Client()
    sequence = 0
    steps = (("UNLINK", "unlink", ABSENT), ("RELINK", "relink", None), ("UNLINK", "unlink", ABSENT))
    while not stop.is_set():
        key = "pgfo-%s-unl%d-%d" % (RUN, number, sequence)
        master = MASTERS[sequence % len(MASTERS)]
        sequence += 1
        tracked = ledger.track("unlink", key, VALUE_BYTES)
        live = ("live", key)
        start = time.time()
        answer = client.request("PUT", url(master, key), value_of(key, VALUE_BYTES))
        outcome = ledger.write(tracked, master, "PUT", "put", start, answer, live, expected=(201,))
        for index, (method, kind, state) in enumerate(steps):
            if outcome is not True or stop.is_set():
                break
            master = MASTERS[(sequence + index + 1) % len(MASTERS)]
            start = time.time()
            answer = client.request(method, url(master, key))
            outcome = ledger.write(tracked, master, method, kind, start, answer, state or live, expected=(204,))
        backoff(outcome)


def s3_writer(number, ledger, stop):
    """S3 PutObject of one key 5 times over (overwrites), alternating
    masters, then DeleteObject; a step with an unknown outcome ends the key."""
    client = Client()
    sequence = 0
    while not stop.is_set():
        key = "%s/obj%d-%d" % (BUCKET, number, sequence)
        sequence += 1
        tracked = ledger.track("s3", key, S3_VALUE_BYTES)
        outcome = True
        for version in range(6):
            if outcome is not True or stop.is_set():
                break
            master = MASTERS[(sequence + version) % len(MASTERS)]
            start = time.time()
            if version < 5:
                identity = "%s#%d" % (key, version)
                answer = client.request("PUT", url(master, key), value_of(identity, S3_VALUE_BYTES), S3_HEADERS)
                outcome = ledger.write(tracked, master, "S3 PUT", "s3-put", start, answer, ("live", identity),
                                       expected=(200,))
            else:
                answer = client.request("DELETE", url(master, key), headers=S3_HEADERS)
                outcome = ledger.write(tracked, master, "S3 DELETE", "s3-delete", start, answer, ABSENT,
                                       expected=(204,))
        backoff(outcome)


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
        status, headers, body, answered = client.request("GET", url(master, key))
        end = time.time()
        ledger.read((start, end, master, status, answered))
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


def cluster_env():
    return dict(os.environ, DATA=DATA)


def cluster_ready():
    return subprocess.run([PG_CLUSTER, "ready"], env=cluster_env()).returncode == 0


def psql(node, sql, database="mkv"):
    """Run SQL on a node as the superuser; its output, or None on failure."""
    port = PG_PORTS[int(node[2:]) - 1]
    result = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", database,
                             "-Atqc", sql], capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        log("psql on %s: %s" % (node, result.stderr.strip()))
        return None
    return result.stdout.strip()


def postgres_pids(node):
    """The postmaster of a node and its children."""
    with open(os.path.join(DATA, node, "data", "postmaster.pid")) as pidfile:
        postmaster = int(pidfile.readline())
    children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
    return [postmaster] + [int(pid) for pid in children]


def wait_until(predicate, deadline_seconds, what):
    deadline = time.time() + deadline_seconds
    while time.time() < deadline:
        if predicate():
            return time.time()
        time.sleep(0.1)
    raise SystemExit("pg-failover: gave up waiting for %s after %d s" % (what, deadline_seconds))


def writes_recovered(ledger, since):
    """True once every PUT of a fresh key that ended in the last
    RECOVERED_SECONDS, after `since`, was a 201, and there were some."""
    now = time.time()
    with ledger.lock:
        recent = [w for w in ledger.writes[-3000:] if w[3] == "put" and w[1] > max(since, now - RECOVERED_SECONDS)]
    return now - since > RECOVERED_SECONDS and recent and all(w[4] == 201 for w in recent)


def inject_kill(node):
    """node, postgres: kill -9 the primary and wait for a new one."""
    if FAULT == "node":
        subprocess.run([PG_CLUSTER, "node-stop", node], env=cluster_env(), check=True)
    else:
        os.kill(postgres_pids(node)[0], 9)
    killed = time.time()
    promoted = wait_until(lambda: primary_node() not in (None, node), FAILOVER_DEADLINE_SECONDS, "a new primary")
    return "kill -9 %s, a new primary promoted after %.1f s" % (FAULT, promoted - killed)


def inject_terminate(node):
    """terminate-locks: for TERMINATE_SECONDS, every 0.2 s, end every
    session of the masters that holds or renews a key lock, a lease or the
    role lock (they are made again at once, and ended again)."""
    ended = 0
    deadline = time.time() + TERMINATE_SECONDS
    while time.time() < deadline:
        output = psql(node, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE " + LOCK_SESSIONS)
        ended += int(output or 0)
        time.sleep(0.2)
    return "%d sessions ended" % ended


def set_phantom(node, on):
    value = "'\"%s\"'" % PHANTOM_STANDBY if on else "DEFAULT"
    # ALTER SYSTEM overrides the synchronous_standby_names Patroni writes
    # to postgresql.conf; RESET hands it back.
    sql = "ALTER SYSTEM SET synchronous_standby_names = %s" % value if on else "ALTER SYSTEM RESET synchronous_standby_names"
    psql(node, sql, "postgres")
    psql(node, "SELECT pg_reload_conf()", "postgres")


def inject_stall(node):
    """stall-commit: synchronous_standby_names names a standby that is not
    there, so every commit waits for it; 1 s in, the masters' other
    sessions (locks, leases) are ended, as in a restart of those alone;
    after STALL_SECONDS the setting is restored and the waiting commits
    complete."""
    set_phantom(node, True)
    try:
        time.sleep(1.0)
        waiting = psql(node, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
        ended = psql(node, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                     "application_name = 'mkv' AND wait_event IS DISTINCT FROM 'SyncRep' AND pid <> pg_backend_pid()")
        time.sleep(max(0.0, STALL_SECONDS - 1.0))
        still = psql(node, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
    finally:
        set_phantom(node, False)
    return "%s commits waiting at 1 s, %s sessions ended, %s waiting at the end" % (waiting, ended, still)


def inject_freeze(node):
    """freeze: SIGSTOP the primary's postmaster and every backend for
    FREEZE_SECONDS, then SIGCONT (Patroni on the node is not stopped: past
    its ttl it loses the leader key and a standby is promoted)."""
    pids = postgres_pids(node)
    for pid in pids:
        os.kill(pid, 19)
    try:
        time.sleep(FREEZE_SECONDS)
    finally:
        for pid in pids:
            try:
                os.kill(pid, 18)
            except ProcessLookupError:
                pass
    return "%d processes frozen" % len(pids)


def inject_restart(node):
    """restart: Patroni restarts the primary's PostgreSQL in place (fast
    shutdown, start; no failover)."""
    result = subprocess.run(["patronictl", "-c", os.path.join(DATA, "pg1", "patroni.yml"), "restart", "mkv", node,
                             "--force"], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit("pg-failover: patronictl restart: %s" % result.stderr)
    wait_until(lambda: primary_node() is not None, FAILOVER_DEADLINE_SECONDS, "the primary back")
    return "restarted"


INJECT = {"node": inject_kill, "postgres": inject_kill, "terminate-locks": inject_terminate,
          "stall-commit": inject_stall, "freeze": inject_freeze, "restart": inject_restart}


def fault(round_number, ledger):
    wait_until(primary_node, FAILOVER_DEADLINE_SECONDS, "a primary")
    old = primary_node()
    started = time.time()
    log("fault %d: %s on %s" % (round_number, FAULT, old))
    what = INJECT[FAULT](old)
    ended = time.time()
    recovered_at = wait_until(lambda: writes_recovered(ledger, ended), FAILOVER_DEADLINE_SECONDS,
                              "writes to succeed again")
    new = primary_node()
    log("fault %d: %s over after %.1f s (%s), writes back %.1f s later, primary %s"
        % (round_number, FAULT, ended - started, what, recovered_at - ended, new))
    if FAULT == "node":
        subprocess.run([PG_CLUSTER, "node-start", old], env=cluster_env(), check=True)
    wait_until(cluster_ready, REJOIN_DEADLINE_SECONDS, "3 members, one a sync standby")
    log("fault %d: cluster ready %.1f s after the fault began" % (round_number, time.time() - started))
    return {"round": round_number, "old": old, "new": new, "started": started, "ended": ended,
            "what": what, "recovered": recovered_at}


def summarize(event, ledger):
    """Figures for one fault from the ledger, over [start - 1 s, recovered]."""
    started, recovered = event["started"], event["recovered"]
    with ledger.lock:
        writes = [w for w in ledger.writes if w[1] >= started - 1.0 and w[0] <= recovered]
        reads = [r for r in ledger.reads if r[1] >= started and r[0] <= recovered]
    # The contender's 409s and 403s are its expected answers, not failures.
    failed = [w for w in writes if w[1] >= started and w[4] not in (200, 201, 204)
              and not (w[3] in ("contend", "slow") and w[4] in (409, 403))]
    puts = [w for w in writes if w[3] == "put"]
    failed_puts = [w for w in puts if w[4] != 201 and w[1] >= started]
    if failed_puts:
        first_failed = min(w[1] for w in failed_puts)
        after = [w[1] for w in puts if w[4] == 201 and w[0] >= first_failed]
        first_ok = min(after) if after else recovered
        unavailable = first_ok - first_failed
    else:
        first_failed, first_ok, unavailable = started, started, 0.0
    ok_ends = sorted([started] + [w[1] for w in puts if w[4] == 201 and w[1] >= started])
    gap = max(b - a for a, b in zip(ok_ends, ok_ends[1:])) if len(ok_ends) > 1 else 0.0
    statuses = {}
    for w in failed:
        name = "%s %s" % (w[3], w[4])
        statuses[name] = statuses.get(name, 0) + 1
    # Slow PUTs whose body was still streaming when the fault began or
    # that began while it lasted.
    streaming = sum(1 for w in writes if w[3] == "slow" and w[0] <= event["ended"]
                    and w[1] - w[6] >= started)
    event.update({"unavailable": unavailable, "gap": gap, "statuses": statuses, "streaming": streaming,
                  "no_retry_after": sum(1 for w in failed if w[4] == 503 and not w[5]),
                  "slowest_write": max([(w[6], w[3]) for w in writes] or [(0.0, "-")]),
                  "slowest_read": max([r[4] for r in reads] or [0.0]),
                  "reads": len(reads), "reads_served": sum(1 for r in reads if r[3] == 302)})
    return event


def observe(client, master, key, size):
    """What a key holds through one master: ABSENT, ("live", bytes) with
    every replica of its record alike and matching its MD5, or ("wrong",
    why) / ("error", why)."""
    for _ in range(5):
        status, headers, body, _ = client.request("GET", url(master, key))
        if status == 503 or isinstance(status, str):
            time.sleep(0.5)
            continue
        break
    if status == 404:
        return ABSENT
    if status != 302:
        return ("error", "GET via %s: %s" % (master, status))
    location = headers.get("location", "")
    md5 = headers.get("content-md5", "")
    # Every replica the record names: the Location's path on each of them.
    # (http://HOST:PORT/SUBVOLUME/PATH; Key-Volumes lists HOST:PORT/SUBVOLUME.)
    suffix = "/" + location.split("/", 4)[4] if location.count("/") >= 4 else ""
    replicas = [location]
    for volume in headers.get("key-volumes", "").split(","):
        if volume:
            replicas.append("http://%s%s" % (volume, suffix))
    first = None
    for replica in dict.fromkeys(replicas):
        status, _, data, _ = client.request("GET", replica)
        if status != 200:
            return ("wrong", "replica %s: %s" % (replica, status))
        if hashlib.md5(data).hexdigest() != md5:
            return ("wrong", "replica %s: %d bytes, md5 %s, record %s" % (replica, len(data), hashlib.md5(data).hexdigest(), md5))
        if first is None:
            first = data
    return ("live", first)


def md5_of(tracked, state):
    return hashlib.md5(value_of(state[1], tracked.size)).hexdigest()


def judge(tracked, observed):
    """None when what a key holds is one its writes allow, else the kind of
    finding and its detail."""
    if observed[0] in ("wrong", "error"):
        return (observed[0], observed[1])
    allowed = tracked.allowed()
    if observed == ABSENT:
        if ABSENT in allowed:
            return None
        if tracked.unknown and tracked.kind == "s3":
            return ("lost after a failed overwrite", "acknowledged %s (md5 %s), then %s"
                    % (tracked.acked[1], md5_of(tracked, tracked.acked), tracked.unknown))
        return ("lost", "acknowledged %s (md5 %s)" % (tracked.acked[1], md5_of(tracked, tracked.acked)))
    data = observed[1]
    for state in allowed:
        if state != ABSENT and data == value_of(state[1], tracked.size):
            return None
    if tracked.acked == ABSENT and tracked.acks:
        return ("resurrected", "deleted after %s, reads %d bytes" % (tracked.acks, len(data)))
    return ("wrong", "%d bytes match none of %s" % (len(data), allowed))


# S3 keys a native GET found absent after a failed overwrite, and that an
# S3 read (which settles an overwrite cut short, waiting out its 30 s
# grace) then found holding an allowed value: native reads answer 404 until
# the settling (ARCHITECTURE.md), S3 readers never do. Counted, not a loss.
SETTLED_LATE = []


def check_key(client, tracked):
    """Every key read through a master (a random one for the PUT writers'
    keys, both for the others, which must agree)."""
    masters = [random.choice(MASTERS)] if tracked.kind == "put" and not tracked.unknown else MASTERS
    verdicts = [judge(tracked, observe(client, master, tracked.key, tracked.size)) for master in masters]
    for verdict in verdicts:
        if verdict and verdict[0] == "lost after a failed overwrite":
            master = random.choice(MASTERS)
            status, _, _, _ = client.request("HEAD", url(master, tracked.key), headers=S3_HEADERS)
            if all(judge(tracked, observe(client, m, tracked.key, tracked.size)) is None for m in MASTERS):
                SETTLED_LATE.append((tracked.key, status))
                continue
            return verdict
        if verdict:
            return verdict
    return None


def locked_check(client, tracked):
    """A native PUT of a fresh value: 201 (the key was free) or 403 (live) is
    right; 409 means the key is still locked past every lease."""
    for _ in range(5):
        status, _, body, _ = client.request("PUT", url(random.choice(MASTERS), tracked.key), b"after")
        if status != 503:
            break
        time.sleep(1.0)
    if status in (201, 403):
        return None
    return ("left locked" if status == 409 else "unwritable", "PUT after the run: %s %s" % (status, body[:100]))


def raw_record(key):
    """The key's record as the primary holds it (DELETED... when soft-deleted)."""
    node = primary_node()
    if node is None:
        return "(no primary)"
    quoted = ("/" + key).replace("'", "''")
    record = psql(node, "SELECT encode(record, 'escape') FROM mkv_records WHERE key = convert_to('%s', 'UTF8')" % quoted)
    return repr(record[:200]) if record else "(none)"


def in_parallel(function, items):
    findings = []
    lock = threading.Lock()

    def work(part):
        client = Client()
        for item in part:
            finding = function(client, item)
            if finding:
                with lock:
                    findings.append((item, finding))

    threads = [threading.Thread(target=work, args=(items[i::CHECKERS],)) for i in range(CHECKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return findings


def status_text(statuses):
    return " ".join("%s:%d" % (status, count) for status, count in sorted(statuses.items(), key=str)) or "-"


def report(events, ledger, findings, locked):
    print()
    print("pg-failover: %d faults, FAULT=%s; over %s: %d PUT writers, %d slow PUT writers (each with a contender), "
          "%d DELETE, %d UNLINK/RELINK, %d S3 writers, %d readers"
          % (len(events), FAULT, " ".join(MASTERS), WRITERS, SLOW_WRITERS, DELETERS, UNLINKERS, S3_WRITERS, READERS))
    print()
    print("| # | primary before, after | fault | fault s | slow PUTs streaming in it | writes unavailable s "
          "| longest no-201 gap s "
          "| writes failed (kind status:count) | 503 without Retry-After | slowest write answer s "
          "| slowest read answer s | reads served (302) of reads |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for e in events:
        print("| %d | %s, %s | %s | %.1f | %d | %.2f | %.2f | %s | %d | %.2f (%s) | %.2f | %d of %d |"
              % (e["round"], e["old"], e["new"], e["what"], e["ended"] - e["started"], e["streaming"],
                 e["unavailable"], e["gap"],
                 status_text(e["statuses"]), e["no_retry_after"], e["slowest_write"][0], e["slowest_write"][1],
                 e["slowest_read"],
                 e["reads_served"], e["reads"]))
    unavailable = sorted(e["unavailable"] for e in events)
    if unavailable:
        print()
        print("write unavailability: median %.2f s, max %.2f s" % (unavailable[len(unavailable) // 2], unavailable[-1]))
    with ledger.lock:
        writes = list(ledger.writes)
        reads = list(ledger.reads)
        keys = list(ledger.keys)
    totals, acked = {}, {}
    for w in writes:
        name = "%s %s" % (w[3], w[4])
        totals[name] = totals.get(name, 0) + 1
        if w[4] in (200, 201, 204):
            acked[w[3]] = acked.get(w[3], 0) + 1
    read_totals = {}
    for r in reads:
        read_totals[r[3]] = read_totals.get(r[3], 0) + 1
    slowest = {}
    for w in writes:
        slowest[w[3]] = max(slowest.get(w[3], 0.0), w[6])
    slow = [w for w in writes if isinstance(w[4], str)
            or w[6] > (S3_BOUND_SECONDS if w[3].startswith("s3") else BOUND_SECONDS)]
    slow += [r for r in reads if r[4] > BOUND_SECONDS or isinstance(r[3], str)]
    kinds = {}
    for item, (kind, _) in findings + locked:
        kinds[kind] = kinds.get(kind, 0) + 1
    double = [t for t in keys if t.kind == "slow" and len(t.acks) > 1]
    print("writes: %d (%s)" % (len(writes), status_text(totals)))
    print("acknowledged: %s; keys written: %d" % (status_text(acked), len(keys)))
    print("reads: %d (%s)" % (len(reads), status_text(read_totals)))
    print("slowest answer (s): %s, read %.2f; answers past %.0f s (S3 writes: %.0f s) or none: %d"
          % (", ".join("%s %.2f" % item for item in sorted(slowest.items())), max([r[4] for r in reads] or [0]),
             BOUND_SECONDS, S3_BOUND_SECONDS, len(slow)))
    print("keys with two writers acknowledged: %d" % len(double))
    print("S3 overwrites cut short that native reads found absent until an S3 read settled them: %d %s"
          % (len(SETTLED_LATE), SETTLED_LATE[:5]))
    print("findings: %s" % (status_text(kinds) if kinds else "none (0 lost, 0 wrong bytes, 0 resurrected, "
                                                              "0 left locked)"))
    for tracked, (kind, detail) in (findings + locked)[:30]:
        print("  %s %s (%s): %s; index record %s; history %s" % (kind.upper(), tracked.key, tracked.kind, detail,
                                                                 raw_record(tracked.key),
                                                 [(time.strftime("%H:%M:%S", time.localtime(t)) + ("%.3f" % (t % 1))[1:],
                                                   m.rsplit(":", 1)[1], method, s) for t, m, method, s in tracked.history]))
    for w in slow[:10]:
        print("  SLOW %s" % (w,))
    if ledger.failures:
        print("unexpected answers (first %d):" % min(len(ledger.failures), 20))
        for moment, what in ledger.failures[:20]:
            print("  %s %s" % (time.strftime("%H:%M:%S", time.localtime(moment)), what))
    return bool(findings or locked or double or slow or ledger.failures)


def main():
    if FAULT not in FAULT_KINDS:
        raise SystemExit("pg-failover: FAULT must be one of %s" % ", ".join(FAULT_KINDS))
    ledger = Ledger()
    client = Client()
    status = client.request("PUT", url(MASTERS[0], BUCKET), b"", S3_HEADERS)[0]
    if status != 200:
        raise SystemExit("pg-failover: CreateBucket %s: %s" % (BUCKET, status))
    stop = threading.Event()
    workers = [(put_writer, WRITERS), (slow_writer, SLOW_WRITERS), (delete_writer, DELETERS),
               (unlink_writer, UNLINKERS), (s3_writer, S3_WRITERS), (reader, READERS)]
    threads = [threading.Thread(target=work, args=(i, ledger, stop), daemon=True)
               for work, count in workers for i in range(count)]
    for thread in threads:
        thread.start()
    events = []
    try:
        for round_number in range(1, FAULTS + 1):
            time.sleep(STEADY_SECONDS)
            events.append(fault(round_number, ledger))
        time.sleep(STEADY_SECONDS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(REQUEST_TIMEOUT_SECONDS + 5)
    events = [summarize(event, ledger) for event in events]
    keys = list(ledger.keys)
    log("checking %d keys" % len(keys))
    findings = in_parallel(check_key, keys)
    last = max([e["ended"] for e in events] or [0.0])
    time.sleep(max(0.0, last + LEASE_EXPIRY_SECONDS - time.time()))
    # A key with a finding keeps what it holds, for the report.
    found = {id(tracked) for tracked, _ in findings}
    suspects = [t for t in keys if (t.kind != "put" or t.unknown) and id(t) not in found]
    log("checking %d keys for locks left" % len(suspects))
    locked = in_parallel(locked_check, suspects)
    bad = report(events, ledger, findings, locked)
    bad = bad or any(e["no_retry_after"] for e in events)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
