//! The PostgreSQL engine of the index: many masters over one index that
//! PostgreSQL keeps, replicates (hot standbys) and fails over (Patroni).
//!
//! Tables, made on first open: `mkv_records (key bytea, record bytea)` with
//! the original master's record bytes, `mkv_meta (key, meta)` and
//! `mkv_state (key, value)`, each keyed by its primary key; `mkv_masters`
//! and `mkv_key_leases`, the leases below. `bytea` compares byte by byte,
//! so scans run in RocksDB's key order.
//!
//! The client is the `postgres` crate: `tokio-postgres` driven by a small
//! current-thread tokio runtime inside each connection. The index interface
//! is synchronous (RocksDB's is, and scans hand each row to a visitor), so a
//! call blocks its caller for one round trip; connections come from a pool
//! that grows to the number of concurrent callers (about one per reactor).
//!
//! What many masters need beyond storage:
//! - Key locks: `try_lock_key` takes a lease on the key, a row of
//!   `mkv_key_leases` with an expiry that the master's lease thread renews
//!   while the key is held. A write that goes live checks, in its own
//!   transaction, that the lease is still this holding's and keeps the
//!   row locked to the end of the commit; `Index::still_held` tells a
//!   writer whether it may send the next piece. A lease, unlike a session
//!   lock, survives a restart, a failover or a terminated session, and no
//!   other master can take the key before it expired (ARCHITECTURE.md,
//!   "Key locks: leases that fence").
//! - Change notifications: every transaction that changes records notifies
//!   channel `mkv` with the changed keys; `listen` hands them to the
//!   master's cache, with heartbeats that bound how stale the cache can be
//!   (`coherence`).
//! - Roles: a serving master holds a shared advisory lock and a lease
//!   (`Lease`, a row of `mkv_masters`) it renews from a session holding
//!   that lock; an offline command (rebuild, seed, rebalance, verify)
//!   takes the lock exclusively and goes ahead only with no lease live, so
//!   it never runs under serving masters, whichever sessions died (it is
//!   sent to a running master instead, as with RocksDB's directory lock).
//! - Listings read a snapshot of their own (`Snapshot`).
//!
//! Errors that mean the database cannot be reached (connection lost, a
//! standby that refuses writes after a failover, shutdown) are
//! `IndexError::Unavailable`: the caller answers 503, and the next call
//! connects again, to whichever host is the primary then.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use postgres::config::TargetSessionAttrs;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, NoTls, Statement};

use super::{decode_meta, decode_record, key_after, prefix_end, Change, IndexError, IndexOptions, Role};
use crate::meta::Meta;
use crate::record::{Record, RecordError};

/// The notification channel of record changes.
const CHANNEL: &str = "mkv";
/// Rows per query of a scan: large enough to amortise the round trip,
/// small enough that a scan holds little memory.
const SCAN_BATCH_ROWS: usize = 1000;
/// Idle connections kept in the pool; more are closed when returned.
const POOL_IDLE_MAX: usize = 64;
/// How long a connection attempt may take (unless the URL says): a host
/// that is down must not stall a reactor for long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long unacknowledged data may sit on a connection before the kernel
/// drops it (unless the URL says): a primary that vanished from the network
/// is noticed within this.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(5);
/// The server-side bound on one statement of a serving master.
const STATEMENT_MS_MAX: u64 = crate::offload::INDEX_WAIT_MS_MAX;
/// After a failed connection attempt, calls fail at once for this long
/// instead of each trying again (a failover takes seconds).
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// The most bytes PostgreSQL takes in one notification's payload.
const NOTIFY_PAYLOAD_MAX: usize = 7999;
/// Advisory lock held shared by serving masters and exclusively by an
/// offline command (`"mkv-role"` in ASCII).
const ROLE_LOCK: i64 = 0x6d6b_762d_726f_6c65;
/// How long opening waits for the role lock before reporting it held.
const ROLE_WAIT: Duration = Duration::from_secs(2);
/// A serving master's lease on the index (`Lease`): how long it holds
/// after a renewal is sent.
const LEASE_MS: u64 = 3_000;
/// How often a serving master renews its lease: a few times a lease, so
/// that a restart or a lost session does not let it lapse.
const LEASE_RENEW_MS: u64 = 500;
/// What an offline command adds to a lease's expiry before taking it as
/// lapsed: the most the masters' clocks may run slow against the
/// database's over one lease, and a statement's time in flight.
const LEASE_MARGIN_MS: u64 = 1_000;
/// How long an offline command waits for the masters' leases to lapse (a
/// master just killed leaves its lease behind) before reporting the index
/// held.
const OFFLINE_WAIT: Duration = Duration::from_millis(LEASE_MS + LEASE_MARGIN_MS + 1_000);

/// A key lock's lease (`HeldKey`): how long it holds after its latest
/// renewal was sent, and so how long a key stays locked after its master
/// died or lost the database (plus `LEASE_MARGIN_MS`).
pub const KEY_LEASE_MS: u64 = 6_000;
/// A writer stops sending a key's bytes once less than this is left of
/// its lease (`Store::still_held`): renewals failed for
/// `KEY_LEASE_MS - KEY_LEASE_LEFT_MIN_MS`. What is left, plus the margin,
/// is the time a piece already sent has to arrive before another master
/// may take the key: above the volume I/O timeout.
pub const KEY_LEASE_LEFT_MIN_MS: u64 = 3_000;

const _: () = assert!(LEASE_RENEW_MS * 3 <= LEASE_MS);
const _: () = assert!(LEASE_RENEW_MS * 3 <= KEY_LEASE_LEFT_MIN_MS);
const _: () = assert!(KEY_LEASE_LEFT_MIN_MS < KEY_LEASE_MS);
/// The start of an offline command's lease row's name in `mkv_masters`
/// (a master's is hex).
const OFFLINE_PREFIX: &str = "offline:";
/// The end of an offline command's fence row's name (`Lease::fence_row`).
const FENCE_SUFFIX: &str = ":fence";
/// Between attempts at the role lock.
const ROLE_RETRY_DELAY: Duration = Duration::from_millis(50);
/// Advisory lock that serialises making the tables (`"mkv-tabl"`).
const SCHEMA_LOCK: i64 = 0x6d6b_762d_7461_626c;

/// Listings' snapshots one master holds open at once: each holds a
/// connection, and PostgreSQL's connections (100 by default) are shared by
/// every master.
const SNAPSHOTS_MAX: usize = 16;
/// How long a listing may read its snapshot: a transaction open that long
/// keeps old row versions from vacuum. 1,000,000 keys take a few seconds
/// per pass; a client that reads slower has its listing cut off.
const SNAPSHOT_MS_MAX: u64 = 120_000;
/// How long a snapshot's transaction may sit idle before PostgreSQL ends
/// it (a master that vanished mid-listing): above the 30 s a listing may
/// wait on its client between two batches.
const SNAPSHOT_IDLE_MS_MAX: u64 = 60_000;

/// How long a heartbeat may take to come back before the listening
/// session is taken for dead and made again.
const BEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// The tables, made by one opener at a time (after `SCHEMA_LOCK`).
const TABLES: &str = "
    CREATE TABLE IF NOT EXISTS mkv_records (key bytea PRIMARY KEY, record bytea NOT NULL);
    CREATE TABLE IF NOT EXISTS mkv_meta (key bytea PRIMARY KEY, meta bytea NOT NULL);
    CREATE TABLE IF NOT EXISTS mkv_state (key bytea PRIMARY KEY, value bytea NOT NULL);
    CREATE TABLE IF NOT EXISTS mkv_masters (origin text PRIMARY KEY, expires timestamptz NOT NULL);
    CREATE TABLE IF NOT EXISTS mkv_key_leases (
        lock_id bigint PRIMARY KEY, master text NOT NULL, token bigint NOT NULL,
        expires timestamptz NOT NULL);
    CREATE OR REPLACE FUNCTION mkv_lock(
        lock bigint, holder text, lease_token bigint, lease_ms int, margin_ms int
    ) RETURNS boolean LANGUAGE plpgsql AS $$
    BEGIN
        -- A lease row locked by a commit in flight (one waiting on a
        -- standby) is held: do not queue behind it.
        PERFORM set_config('lock_timeout', '100ms', true);
        INSERT INTO mkv_key_leases AS held
            VALUES (lock, holder, lease_token, now() + lease_ms * interval '1 millisecond')
            ON CONFLICT (lock_id) DO UPDATE
                SET master = EXCLUDED.master, token = EXCLUDED.token, expires = EXCLUDED.expires
                WHERE held.master = EXCLUDED.master
                    OR held.expires < now() - margin_ms * interval '1 millisecond';
        IF FOUND THEN
            RETURN true;
        END IF;
        -- A refusal changed nothing: it need not wait for a standby.
        PERFORM set_config('synchronous_commit', 'local', true);
        RETURN false;
    EXCEPTION WHEN lock_not_available THEN
        PERFORM set_config('synchronous_commit', 'local', true);
        RETURN false;
    END $$;
    -- mkv_lock, then, if granted, in the same transaction (so under the
    -- lease: everything committed before it was taken is seen): the key's
    -- record and the state entry at entry_key, and, when the key has
    -- neither, the record `reserve` put in (a new key's write takes its
    -- `DELETED` record with its lock: one round trip and one commit).
    CREATE OR REPLACE FUNCTION mkv_lock_reserve(
        lock bigint, holder text, lease_token bigint, lease_ms int, margin_ms int,
        record_key bytea, entry_key bytea, reserve bytea
    ) RETURNS TABLE (granted boolean, found_record bytea, found_entry bytea, reserved boolean)
    LANGUAGE plpgsql AS $$
    DECLARE
        waits text := current_setting('lock_timeout');
    BEGIN
        granted := mkv_lock(lock, holder, lease_token, lease_ms, margin_ms);
        -- mkv_lock's short lock wait is for the lease row alone: reading
        -- and reserving wait as any statement does (statement_timeout).
        PERFORM set_config('lock_timeout', waits, true);
        reserved := false;
        IF granted THEN
            SELECT held.record INTO found_record FROM mkv_records AS held WHERE held.key = record_key;
            SELECT pending.value INTO found_entry FROM mkv_state AS pending WHERE pending.key = entry_key;
            IF found_record IS NULL AND found_entry IS NULL AND reserve IS NOT NULL THEN
                INSERT INTO mkv_records VALUES (record_key, reserve) ON CONFLICT (key) DO NOTHING;
                reserved := FOUND;
                IF NOT reserved THEN
                    SELECT held.record INTO found_record FROM mkv_records AS held WHERE held.key = record_key;
                END IF;
            END IF;
        END IF;
        RETURN NEXT;
    END $$;
    CREATE OR REPLACE FUNCTION mkv_unlock(lock bigint, holder text, lease_token bigint)
    RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        -- Lost in a crash, an unlock only leaves the key to its lease's end.
        PERFORM set_config('synchronous_commit', 'off', true);
        DELETE FROM mkv_key_leases WHERE lock_id = lock AND master = holder AND token = lease_token;
    END $$;
    -- One write in one transaction: what masters before group commit
    -- (`mkv_commit_group`) call, kept while such masters may share the index
    -- (a rolling upgrade).
    CREATE OR REPLACE FUNCTION mkv_apply_fenced(
        ops text[], keys bytea[], vals bytea[], lock_ids bigint[], lock_tokens bigint[],
        payloads text[], holder text, lease_ms int
    ) RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
        i int;
        payload text;
    BEGIN
        IF holder IS NOT NULL AND NOT EXISTS (SELECT 1 FROM mkv_masters
                WHERE origin = holder AND expires > now()) THEN
            RAISE EXCEPTION 'mkv: this master''s lease on the index lapsed' USING ERRCODE = 'MKVLS';
        END IF;
        -- Each key's lease is checked and kept locked to the end of this
        -- commit (a wait for a standby included): no other master can
        -- take the key before this write is over.
        FOR i IN 1 .. coalesce(array_length(lock_ids, 1), 0) LOOP
            UPDATE mkv_key_leases
                SET expires = greatest(expires, now() + lease_ms * interval '1 millisecond')
                WHERE lock_id = lock_ids[i] AND master = holder AND token = lock_tokens[i]
                    AND expires > now();
            IF NOT FOUND THEN
                RAISE EXCEPTION 'mkv: a key lock was lost' USING ERRCODE = 'MKVLK';
            END IF;
        END LOOP;
        FOR i IN 1 .. coalesce(array_length(ops, 1), 0) LOOP
            CASE ops[i]
            WHEN 'record' THEN
                INSERT INTO mkv_records VALUES (keys[i], vals[i])
                    ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record;
            WHEN 'meta' THEN
                INSERT INTO mkv_meta VALUES (keys[i], vals[i])
                    ON CONFLICT (key) DO UPDATE SET meta = EXCLUDED.meta;
            WHEN 'remove' THEN
                DELETE FROM mkv_records WHERE key = keys[i];
                DELETE FROM mkv_meta WHERE key = keys[i];
            WHEN 'state' THEN
                INSERT INTO mkv_state VALUES (keys[i], vals[i])
                    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
            WHEN 'unstate' THEN
                DELETE FROM mkv_state WHERE key = keys[i];
            END CASE;
        END LOOP;
        FOREACH payload IN ARRAY payloads LOOP
            PERFORM pg_notify('mkv', payload);
        END LOOP;
    END $$;
    -- mkv_apply_fenced for a group of writes (members numbered from 0):
    -- one transaction, one commit, one notification queue lock for all.
    -- Each member's key leases are checked as mkv_apply_fenced checks
    -- them; a member one of whose leases fails is skipped whole (none of
    -- its changes, none of its notifications) and the others apply. A
    -- lease marked in lock_releases is removed by the commit (the write it
    -- fences ends with it: no unlock round trip after). Returns the
    -- members skipped.
    CREATE OR REPLACE FUNCTION mkv_commit_group(
        ops text[], keys bytea[], vals bytea[], op_members int[],
        lock_ids bigint[], lock_tokens bigint[], lock_members int[], lock_releases boolean[],
        payloads text[], payload_members int[], holder text, lease_ms int
    ) RETURNS int[] LANGUAGE plpgsql AS $$
    DECLARE
        i int;
        lost int[] := '{}';
    BEGIN
        IF holder IS NOT NULL AND NOT EXISTS (SELECT 1 FROM mkv_masters
                WHERE origin = holder AND expires > now()) THEN
            RAISE EXCEPTION 'mkv: this master''s lease on the index lapsed' USING ERRCODE = 'MKVLS';
        END IF;
        FOR i IN 1 .. coalesce(array_length(lock_ids, 1), 0) LOOP
            CONTINUE WHEN lock_members[i] = ANY (lost);
            IF lock_releases[i] THEN
                -- Removed below: locked and checked here, not pushed on.
                PERFORM 1 FROM mkv_key_leases
                    WHERE lock_id = lock_ids[i] AND master = holder AND token = lock_tokens[i]
                        AND expires > now()
                    FOR UPDATE;
            ELSE
                UPDATE mkv_key_leases
                    SET expires = greatest(expires, now() + lease_ms * interval '1 millisecond')
                    WHERE lock_id = lock_ids[i] AND master = holder AND token = lock_tokens[i]
                        AND expires > now();
            END IF;
            IF NOT FOUND THEN
                lost := lost || lock_members[i];
            END IF;
        END LOOP;
        FOR i IN 1 .. coalesce(array_length(ops, 1), 0) LOOP
            CONTINUE WHEN op_members[i] = ANY (lost);
            CASE ops[i]
            WHEN 'record' THEN
                INSERT INTO mkv_records VALUES (keys[i], vals[i])
                    ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record;
            WHEN 'meta' THEN
                INSERT INTO mkv_meta VALUES (keys[i], vals[i])
                    ON CONFLICT (key) DO UPDATE SET meta = EXCLUDED.meta;
            WHEN 'remove' THEN
                DELETE FROM mkv_records WHERE key = keys[i];
                DELETE FROM mkv_meta WHERE key = keys[i];
            WHEN 'state' THEN
                INSERT INTO mkv_state VALUES (keys[i], vals[i])
                    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
            WHEN 'unstate' THEN
                DELETE FROM mkv_state WHERE key = keys[i];
            END CASE;
        END LOOP;
        -- The row stays locked by this transaction to its end: another
        -- master's mkv_lock of the key refuses until the commit is over.
        FOR i IN 1 .. coalesce(array_length(lock_ids, 1), 0) LOOP
            CONTINUE WHEN NOT lock_releases[i] OR lock_members[i] = ANY (lost);
            DELETE FROM mkv_key_leases
                WHERE lock_id = lock_ids[i] AND master = holder AND token = lock_tokens[i];
        END LOOP;
        FOR i IN 1 .. coalesce(array_length(payloads, 1), 0) LOOP
            CONTINUE WHEN payload_members[i] = ANY (lost);
            PERFORM pg_notify('mkv', payloads[i]);
        END LOOP;
        RETURN lost;
    END $$;
    -- What masters before mkv_commit_group call (a rolling upgrade): the
    -- same, releasing no lease.
    CREATE OR REPLACE FUNCTION mkv_apply_group(
        ops text[], keys bytea[], vals bytea[], op_members int[],
        lock_ids bigint[], lock_tokens bigint[], lock_members int[],
        payloads text[], payload_members int[], holder text, lease_ms int
    ) RETURNS int[] LANGUAGE plpgsql AS $$
    BEGIN
        RETURN mkv_commit_group(ops, keys, vals, op_members, lock_ids, lock_tokens, lock_members,
            array_fill(false, ARRAY[coalesce(array_length(lock_ids, 1), 0)]),
            payloads, payload_members, holder, lease_ms);
    END $$;
";
/// The SQL state `mkv_commit_group` raises when the writer's lease lapsed.
const LEASE_LAPSED_STATE: &str = "MKVLS";

/// What `Postgres::try_lock_key_reading` read with a key's lock: its
/// record and a state entry as of the taking, and whether the reserve
/// record was put in.
#[derive(Debug)]
pub struct KeyRead {
    pub record: Option<Record>,
    pub entry: Option<Vec<u8>>,
    pub reserved: bool,
}

/// A pooled connection and its prepared statements.
struct Connection {
    client: Client,
    statements: Statements,
}

struct Statements {
    get: Statement,
    meta: Statement,
    state: Statement,
    get_with_state: Statement,
    commit_group: Statement,
    lock: Statement,
    lock_reserve: Statement,
    unlock: Statement,
    notify: Statement,
    scan_records: Statement,
    scan_records_open: Statement,
    scan_state: Statement,
    scan_state_open: Statement,
}

impl Statements {
    fn prepare(client: &mut Client) -> Result<Statements, postgres::Error> {
        let scan = scan_sql;
        Ok(Statements {
            get: client.prepare("SELECT record FROM mkv_records WHERE key = $1")?,
            meta: client.prepare("SELECT meta FROM mkv_meta WHERE key = $1")?,
            state: client.prepare("SELECT value FROM mkv_state WHERE key = $1")?,
            get_with_state: client.prepare(
                "SELECT (SELECT record FROM mkv_records WHERE key = $1), (SELECT value FROM mkv_state WHERE key = $2)",
            )?,
            commit_group: client
                .prepare("SELECT mkv_commit_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)")?,
            lock: client.prepare("SELECT mkv_lock($1, $2, $3, $4, $5)")?,
            lock_reserve: client.prepare("SELECT * FROM mkv_lock_reserve($1, $2, $3, $4, $5, $6, $7, $8)")?,
            unlock: client.prepare("SELECT mkv_unlock($1, $2, $3)")?,
            notify: client.prepare("SELECT pg_notify($1, $2)")?,
            scan_records: client.prepare(&scan("mkv_records", "record", true))?,
            scan_records_open: client.prepare(&scan("mkv_records", "record", false))?,
            scan_state: client.prepare(&scan("mkv_state", "value", true))?,
            scan_state_open: client.prepare(&scan("mkv_state", "value", false))?,
        })
    }
}

/// A listing's snapshot of the records (`Postgres::snapshot`).
pub struct Snapshot {
    /// None once a statement failed: the transaction cannot go on.
    connection: Option<Connection>,
    opened: Instant,
    _permit: SnapshotPermit,
}

/// One of the `SNAPSHOTS_MAX` snapshots a master may hold open.
struct SnapshotPermit(Arc<AtomicUsize>);

impl Drop for SnapshotPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        // A snapshot not ended (its listing was cancelled: the client went
        // away) still holds its transaction open. Closing the connection
        // waits on the network, which a reactor must not: a pool thread
        // closes it.
        if let Some(connection) = self.connection.take() {
            crate::offload::detach(move || drop(connection));
        }
    }
}

/// Why a transaction did not commit.
enum Failure {
    Database(postgres::Error),
    /// This master's lease lapsed (`Lease`).
    LeaseLapsed,
}

impl From<postgres::Error> for Failure {
    fn from(error: postgres::Error) -> Self {
        Failure::Database(error)
    }
}

/// Changes ready for `Postgres::apply_batch`: one member of `mkv_commit_group`'s arrays.
pub struct Batch {
    operations: Vec<&'static str>,
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
    lock_ids: Vec<i64>,
    lock_tokens: Vec<i64>,
    /// The commit removes the leases it checks (`releasing`).
    release: bool,
    payloads: Vec<String>,
}

impl Batch {
    /// The same changes, notifying no one (`WriteAs::announce`).
    pub fn unannounced(mut self) -> Batch {
        self.payloads.clear();
        self
    }

    /// The same changes, whose commit also ends this master's hold on the
    /// keys it writes (their leases are removed in the committing
    /// transaction): the last index write of a write, so that no unlock
    /// round trip follows it (`Index::unlock_key` then has nothing to do).
    pub fn releasing(mut self) -> Batch {
        self.release = true;
        self
    }
}

/// A batch waiting for its group's commit (`Postgres::apply_batch`).
struct Member {
    id: u64,
    /// Not sent past this instant.
    deadline: Instant,
    batch: Batch,
}

/// The writes of one process that commit together (`Postgres::apply_batch`).
#[derive(Default)]
struct Group {
    /// Batches not yet sent, in the order they came.
    waiting: Vec<Member>,
    /// A thread is committing a group now.
    committing: bool,
    next_id: u64,
    /// Results not yet taken by their threads, by member id.
    done: HashMap<u64, Result<(), IndexError>>,
}

/// The committing thread's turn, and its members' ids: over when finished,
/// or when dropped (a panic: each member then fails), so that the next
/// group can go and no thread waits for a result that will not come.
struct Leading<'a> {
    postgres: &'a Postgres,
    ids: Vec<u64>,
    finished: bool,
}

impl<'a> Leading<'a> {
    /// Hand the group's `results` to their threads and end the turn, in
    /// one hold of the lock (a thread woken finds its result there).
    fn finish(mut self, results: Vec<(u64, Result<(), IndexError>)>) -> std::sync::MutexGuard<'a, Group> {
        let mut group = lock(&self.postgres.group);
        group.done.extend(results);
        group.committing = false;
        self.postgres.group_ready.notify_all();
        self.finished = true;
        group
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut group = lock(&self.postgres.group);
        for id in &self.ids {
            group
                .done
                .insert(*id, Err(IndexError::Io("a group commit panicked".into())));
        }
        group.committing = false;
        self.postgres.group_ready.notify_all();
    }
}

/// A group's batches as `mkv_commit_group`'s arrays: each row tagged with
/// its member's number.
#[derive(Default)]
struct GroupArrays<'a> {
    operations: Vec<&'static str>,
    keys: Vec<&'a [u8]>,
    values: Vec<&'a [u8]>,
    operation_members: Vec<i32>,
    lock_ids: Vec<i64>,
    lock_tokens: Vec<i64>,
    lock_members: Vec<i32>,
    lock_releases: Vec<bool>,
    payloads: Vec<&'a str>,
    payload_members: Vec<i32>,
}

impl<'a> GroupArrays<'a> {
    fn push(&mut self, number: i32, batch: &'a Batch) {
        self.operations.extend_from_slice(&batch.operations);
        self.keys.extend(batch.keys.iter().map(Vec::as_slice));
        self.values.extend(batch.values.iter().map(Vec::as_slice));
        self.operation_members.extend(batch.operations.iter().map(|_| number));
        self.lock_ids.extend_from_slice(&batch.lock_ids);
        self.lock_tokens.extend_from_slice(&batch.lock_tokens);
        self.lock_members.extend(batch.lock_ids.iter().map(|_| number));
        self.lock_releases.extend(batch.lock_ids.iter().map(|_| batch.release));
        self.payloads.extend(batch.payloads.iter().map(String::as_str));
        self.payload_members.extend(batch.payloads.iter().map(|_| number));
    }
}

fn lock_lost() -> IndexError {
    IndexError::Unavailable("the key's lock was lost with the index connection that held it".into())
}

/// Names one holding of a key's lock (`Postgres::try_lock_key`).
pub type LockToken = i64;

/// A key and its value, as a scan reads them.
pub type Row = (Vec<u8>, Vec<u8>);

/// What `listen` reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Another master changed this key's record.
    Changed(Vec<u8>),
    /// Anything may have changed (notifications were missed, or a bulk
    /// change): forget every cached record.
    Everything,
    /// Every change committed before this instant has been reported.
    Confirmed(Instant),
    /// This master changed this key's record (reported only after
    /// `follow_own_changes`).
    ChangedHere(Vec<u8>),
}

/// The index in PostgreSQL.
pub struct Postgres {
    config: Config,
    /// The URL without its password, for messages.
    name: String,
    idle: Mutex<Vec<Connection>>,
    /// Writes waiting to commit together (`apply_batch`).
    group: Mutex<Group>,
    /// A group's commit is over.
    group_ready: Condvar,
    /// No connection attempt before this instant (`RECONNECT_PAUSE`).
    pause_until: Mutex<Option<Instant>>,
    /// Listings' snapshots open now.
    snapshots: Arc<AtomicUsize>,
    /// Report this master's own changes too (`follow_own_changes`).
    follow_own: AtomicBool,
    /// This process's tag on its notifications (so it skips its own) and
    /// its lease.
    origin: String,
    /// A serving master's lease on the index: no index call once it lapsed.
    lease: Option<Arc<Lease>>,
    /// An offline command's lease on the index (`Lease::take_offline`):
    /// its writes check it as a master's check its lease.
    offline: Option<Arc<Lease>>,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(lease) = self.fence() {
            lease.end();
        }
    }
}

impl Postgres {
    /// Connect to the database `url`, make the tables if missing and take
    /// the role lock `options.role` asks for.
    pub fn open(url: &str, options: &IndexOptions) -> Result<Postgres, IndexError> {
        let name = redact(url);
        let open_error = |error: postgres::Error| IndexError::Open(PathBuf::from(&name), error.to_string());
        let mut config = Config::from_str(url).map_err(open_error)?;
        // A master always needs the primary: with several hosts listed,
        // the one that takes writes.
        config.target_session_attrs(TargetSessionAttrs::ReadWrite);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        config.application_name("mkv");
        if options.role == Role::Serve {
            // A statement that runs past this is cancelled by the server,
            // freeing the pool thread that waits on it about when the
            // reactor stopped waiting (`offload::INDEX_WAIT_MS_MAX`). Not
            // for offline commands, whose bulk statements (rebuild's
            // clearing) may run longer. A commit's wait for a synchronous
            // standby is not a statement's time: only the wait bound
            // covers it.
            let timeout = format!("-c statement_timeout={STATEMENT_MS_MAX}");
            let options = match config.get_options() {
                Some(given) => format!("{given} {timeout}"),
                None => timeout,
            };
            config.options(&options);
        }
        let mut role = config.connect(NoTls).map_err(open_error)?;
        // One simple query is one transaction: the lock is held to its end.
        let schema = format!("SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {TABLES}");
        role.batch_execute(&schema).map_err(open_error)?;
        let origin = origin();
        let (lease, offline) = match options.role {
            Role::Serve => {
                let lease = Lease::take(&config, &origin, role).map_err(|error| match error {
                    LeaseError::Held => IndexError::Locked(PathBuf::from(&name)),
                    LeaseError::Database(error) => open_error(error),
                })?;
                (Some(Arc::new(lease)), None)
            }
            Role::Offline => {
                let lease = Lease::take_offline(&config, &origin, role).map_err(|error| match error {
                    LeaseError::Held => IndexError::Locked(PathBuf::from(&name)),
                    LeaseError::Database(error) => open_error(error),
                })?;
                (None, Some(Arc::new(lease)))
            }
        };
        if let Some(lease) = lease.as_ref().or(offline.as_ref()) {
            let kept = lease.clone();
            std::thread::Builder::new()
                .name("mkv-lease".into())
                .spawn(move || kept.keep())
                .map_err(|error| IndexError::Open(PathBuf::from(&name), error.to_string()))?;
        }
        Ok(Postgres {
            config,
            name,
            idle: Mutex::new(Vec::new()),
            group: Mutex::new(Group::default()),
            group_ready: Condvar::new(),
            pause_until: Mutex::new(None),
            snapshots: Arc::new(AtomicUsize::new(0)),
            follow_own: AtomicBool::new(false),
            origin,
            lease,
            offline,
        })
    }

    /// The lease this process's writes are fenced by: a serving master's,
    /// or an offline command's.
    fn fence(&self) -> Option<&Arc<Lease>> {
        self.lease.as_ref().or(self.offline.as_ref())
    }

    fn connect(&self) -> Result<Client, IndexError> {
        let mut pause = lock(&self.pause_until);
        if pause.is_some_and(|until| Instant::now() < until) {
            return Err(IndexError::Unavailable(format!("{} is not answering", self.name)));
        }
        match self.config.connect(NoTls) {
            Ok(client) => {
                *pause = None;
                Ok(client)
            }
            Err(error) => {
                *pause = Some(Instant::now() + RECONNECT_PAUSE);
                Err(IndexError::Unavailable(format!("{}: {error}", self.name)))
            }
        }
    }

    /// Run the read `work` on a pooled connection; if that connection
    /// turns out dead (the database restarted or failed over since it was
    /// pooled), once more on a new one: a read can be repeated.
    fn read<T>(&self, mut work: impl FnMut(&mut Client, &Statements) -> Result<T, Failure>) -> Result<T, IndexError> {
        match self.with_connection(&mut work) {
            Err(IndexError::Unavailable(_)) => self.with_connection(work),
            result => result,
        }
    }

    /// Run `work` on a pooled connection (made if none is idle). A
    /// connection that failed is dropped, not pooled; one that lost the
    /// database drops the idle ones too, which lost it as well.
    fn with_connection<T>(
        &self,
        work: impl FnOnce(&mut Client, &Statements) -> Result<T, Failure>,
    ) -> Result<T, IndexError> {
        let mut connection = self.take_connection()?;
        let result = work(&mut connection.client, &connection.statements);
        let broken = match &result {
            Err(Failure::Database(error)) => unreachable(error) || connection.client.is_closed(),
            _ => connection.client.is_closed(),
        };
        let mut idle = lock(&self.idle);
        if broken {
            idle.clear();
        } else if idle.len() < POOL_IDLE_MAX {
            idle.push(connection);
        }
        drop(idle);
        result.map_err(|failure| match failure {
            Failure::Database(error) => self.error(&error),
            Failure::LeaseLapsed => self.lapsed(),
        })
    }

    fn error(&self, error: &postgres::Error) -> IndexError {
        // A statement cancelled by `statement_timeout` (57014) may or may not
        // have taken effect: the index did not answer in time, which the
        // client is told as the other outages are (503, Retry-After).
        let timed_out = error.code().is_some_and(|state| state.code() == "57014");
        if unreachable(error) || timed_out {
            IndexError::Unavailable(format!("{}: {}", self.name, describe(error)))
        } else {
            IndexError::Io(describe(error))
        }
    }

    /// The record of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, IndexError> {
        let row = self.read(|client, statements| Ok(client.query_opt(&statements.get, &[&key])?))?;
        decode_record(key, row.as_ref().map(|row| row.get::<_, &[u8]>(0)))
    }

    /// The record of `key` and the S3 state entry at `state_key`, in one
    /// round trip.
    pub fn get_with_state(
        &self,
        key: &[u8],
        state_key: &[u8],
    ) -> Result<(Option<Record>, Option<Vec<u8>>), IndexError> {
        let row =
            self.read(|client, statements| Ok(client.query_one(&statements.get_with_state, &[&key, &state_key])?))?;
        let record = decode_record(key, row.get::<_, Option<&[u8]>>(0))?;
        Ok((record, row.get::<_, Option<Vec<u8>>>(1)))
    }

    /// The metadata of `key`, if any was recorded.
    pub fn meta(&self, key: &[u8]) -> Result<Option<Meta>, IndexError> {
        let row = self.read(|client, statements| Ok(client.query_opt(&statements.meta, &[&key])?))?;
        decode_meta(key, row.as_ref().map(|row| row.get::<_, &[u8]>(0)))
    }

    /// The S3 state entry at `key`.
    pub fn state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, IndexError> {
        let row = self.read(|client, statements| Ok(client.query_opt(&statements.state, &[&key])?))?;
        Ok(row.map(|row| row.get::<_, Vec<u8>>(0)))
    }

    /// Apply `changes` in one transaction, notifying the changed keys and
    /// checking that every locked key's lock is still held.
    pub fn apply(&self, changes: &[Change<'_>]) -> Result<(), IndexError> {
        self.apply_batch(self.prepare(changes))
    }

    /// `changes` as `apply_batch` sends them: owned, so the call can run on
    /// another thread (`offload`), with the locks to check as of now.
    pub fn prepare(&self, changes: &[Change<'_>]) -> Batch {
        let mut changed: Vec<&[u8]> = Vec::new();
        for change in changes {
            if let Change::Record(key, _) | Change::Remove(key) = *change {
                changed.push(key);
            }
        }
        let locked: Vec<(i64, i64)> = match &self.lease {
            Some(lease) => {
                let keys = lock(&lease.keys);
                changed
                    .iter()
                    .filter_map(|key| keys.get(*key).map(|held| (held.id, held.token)))
                    .collect()
            }
            None => Vec::new(),
        };
        let mut batch = Batch {
            operations: Vec::with_capacity(changes.len()),
            keys: Vec::with_capacity(changes.len()),
            values: Vec::with_capacity(changes.len()),
            lock_ids: locked.iter().map(|&(id, _)| id).collect(),
            lock_tokens: locked.iter().map(|&(_, token)| token).collect(),
            release: false,
            payloads: notifications(&self.origin, &changed),
        };
        for change in changes {
            let (operation, key, value) = match *change {
                Change::Record(key, record) => ("record", key, record.encode()),
                Change::Meta(key, meta) => ("meta", key, meta.encode()),
                Change::Remove(key) => ("remove", key, Vec::new()),
                Change::StatePut(key, value) => ("state", key, value.to_vec()),
                Change::StateDelete(key) => ("unstate", key, Vec::new()),
            };
            batch.operations.push(operation);
            batch.keys.push(key.to_vec());
            batch.values.push(value);
        }
        batch
    }

    /// Apply a prepared batch, all of it or none, committed with the
    /// batches other threads of this process apply meanwhile (group
    /// commit): the thread that finds no commit in flight commits every
    /// batch waiting, in one statement and one transaction with one
    /// notification queue lock, while later batches wait for the next
    /// group. PostgreSQL serialises the commits that notify across the
    /// whole cluster (it holds a lock on the notification queue from
    /// before its commit record until the commit is over, a standby's
    /// acknowledgement included), so commits that each notify cap every
    /// master's writes at one commit at a time; a group pays that once.
    /// Each batch's key leases are checked apart (`mkv_commit_group`): one
    /// whose lock was lost fails alone, as it would by itself.
    pub fn apply_batch(&self, batch: Batch) -> Result<(), IndexError> {
        let released: Vec<LockToken> = match batch.release {
            true => batch.lock_tokens.clone(),
            false => Vec::new(),
        };
        let result = self.commit_in_group(batch);
        if let (Ok(()), Some(lease), false) = (&result, &self.lease, released.is_empty()) {
            // The rows are gone: not renewed, not checked, not unlocked.
            let mut keys = lock(&lease.keys);
            let mut gone = lock(&lease.released);
            keys.retain(|_, held| {
                let ended = released.contains(&held.token);
                if ended {
                    gone.insert(held.token);
                }
                !ended
            });
        }
        result
    }

    /// `apply_batch`'s group commit.
    fn commit_in_group(&self, batch: Batch) -> Result<(), IndexError> {
        let mut group = lock(&self.group);
        let id = group.next_id;
        group.next_id += 1;
        group.waiting.push(Member {
            id,
            // The waiter (`offload`) stopped waiting by then: past it the
            // batch is not sent, as an offloaded call not started is not.
            deadline: Instant::now() + Duration::from_millis(crate::offload::INDEX_WAIT_MS_MAX),
            batch,
        });
        loop {
            if let Some(result) = group.done.remove(&id) {
                return result;
            }
            if group.committing {
                group = self
                    .group_ready
                    .wait(group)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            group.committing = true;
            let members = std::mem::take(&mut group.waiting);
            drop(group);
            let leading = Leading {
                postgres: self,
                ids: members.iter().map(|member| member.id).collect(),
                finished: false,
            };
            let results = self.commit_group(members);
            group = leading.finish(results);
        }
    }

    /// Commit `members` in one transaction (`mkv_commit_group`): each one's
    /// result, by id.
    fn commit_group(&self, members: Vec<Member>) -> Vec<(u64, Result<(), IndexError>)> {
        let now = Instant::now();
        let (members, late): (Vec<Member>, Vec<Member>) = members.into_iter().partition(|member| member.deadline > now);
        let mut results: Vec<(u64, Result<(), IndexError>)> = late
            .iter()
            .map(|member| (member.id, Err(super::not_answered())))
            .collect();
        if members.is_empty() {
            return results;
        }
        let mut arrays = GroupArrays::default();
        for (number, member) in members.iter().enumerate() {
            arrays.push(number as i32, &member.batch);
        }
        let lost = self.with_connection(|client, statements| {
            let holder = self.fence().map(|lease| lease.origin.as_str());
            let lease_ms = KEY_LEASE_MS as i32;
            let parameters: [&(dyn postgres::types::ToSql + Sync); 12] = [
                &arrays.operations,
                &arrays.keys,
                &arrays.values,
                &arrays.operation_members,
                &arrays.lock_ids,
                &arrays.lock_tokens,
                &arrays.lock_members,
                &arrays.lock_releases,
                &arrays.payloads,
                &arrays.payload_members,
                &holder,
                &lease_ms,
            ];
            // An offline command's writes hold its fence row to their
            // commit (`fence_in`), as its bulk writes do.
            let committed = match self.fence().is_some_and(|lease| lease.is_offline()) {
                false => client.query_one(&statements.commit_group, &parameters),
                true => {
                    let mut transaction = client.transaction()?;
                    self.fence_in(&mut transaction)?;
                    let row = transaction.query_one(&statements.commit_group, &parameters);
                    row.and_then(|row| transaction.commit().map(|()| row))
                }
            };
            match committed {
                Ok(row) => Ok(row.get::<_, Vec<i32>>(0)),
                Err(error) if error.code().is_some_and(|state| state.code() == LEASE_LAPSED_STATE) => {
                    Err(Failure::LeaseLapsed)
                }
                Err(error) => Err(Failure::Database(error)),
            }
        });
        for (number, member) in members.iter().enumerate() {
            let result = match &lost {
                Ok(lost) if lost.contains(&(number as i32)) => Err(lock_lost()),
                Ok(_) => Ok(()),
                // Each member is told what the group was.
                Err(IndexError::Unavailable(message)) => Err(IndexError::Unavailable(message.clone())),
                Err(error) => Err(IndexError::Io(error.to_string())),
            };
            results.push((member.id, result));
        }
        results
    }

    /// Store many records in one transaction (seed, bulk loads); a key
    /// given twice keeps its last record.
    pub fn put_batch<'a>(&self, records: impl IntoIterator<Item = (&'a [u8], &'a Record)>) -> Result<(), IndexError> {
        let mut latest: HashMap<&[u8], Vec<u8>> = HashMap::new();
        for (key, record) in records {
            latest.insert(key, record.encode());
        }
        let (keys, values): (Vec<&[u8]>, Vec<Vec<u8>>) = latest.into_iter().unzip();
        let everything = format!("{}:*", self.origin);
        self.with_connection(|client, statements| {
            let mut transaction = client.transaction()?;
            self.fence_in(&mut transaction)?;
            transaction.execute(
                "INSERT INTO mkv_records (key, record) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record",
                &[&keys, &values],
            )?;
            transaction.execute(&statements.notify, &[&CHANNEL, &everything])?;
            transaction.commit()?;
            Ok(())
        })
    }

    /// Check in `transaction` that this process's lease is live (an
    /// offline command's: holding its fence row shared to the commit, so a
    /// master's renewal that would find the lease lapsed waits for the
    /// commit): a write of an offline command whose lease lapsed (its
    /// sessions died, and a master may have started since) fails rather
    /// than commits, as `mkv_commit_group` does.
    fn fence_in(&self, transaction: &mut postgres::Transaction<'_>) -> Result<(), Failure> {
        let Some(lease) = self.fence() else { return Ok(()) };
        if let Some(fence_row) = &lease.fence_row {
            transaction.execute("SELECT 1 FROM mkv_masters WHERE origin = $1 FOR SHARE", &[fence_row])?;
        }
        let held = transaction.query_opt(
            "SELECT 1 FROM mkv_masters WHERE origin = $1 AND expires > now()",
            &[&lease.origin],
        )?;
        match held {
            Some(_) => Ok(()),
            None => Err(Failure::LeaseLapsed),
        }
    }

    /// Refresh the planner's statistics after a bulk load.
    pub fn analyze(&self) {
        if let Err(error) = self.with_connection(|client, _| Ok(client.batch_execute("ANALYZE mkv_records")?)) {
            eprintln!("cannot analyze the index: {error}");
        }
    }

    /// Remove every record and its metadata. Returns how many records.
    pub fn clear(&self) -> Result<u64, IndexError> {
        let everything = format!("{}:*", self.origin);
        self.with_connection(|client, statements| {
            let mut transaction = client.transaction()?;
            self.fence_in(&mut transaction)?;
            transaction.execute("DELETE FROM mkv_meta", &[])?;
            let removed = transaction.execute("DELETE FROM mkv_records", &[])?;
            transaction.execute(&statements.notify, &[&CHANNEL, &everything])?;
            transaction.commit()?;
            Ok(removed)
        })
    }

    /// One batch of a scan of `table`'s statement: rows from `from` on,
    /// below `end`.
    fn scan_batch(
        &self,
        records: bool,
        from: &[u8],
        end: Option<&[u8]>,
        rows_max: usize,
    ) -> Result<Vec<Row>, IndexError> {
        let limit = rows_max as i64;
        let rows = self.read(|client, statements| {
            let (bounded, open) = if records {
                (&statements.scan_records, &statements.scan_records_open)
            } else {
                (&statements.scan_state, &statements.scan_state_open)
            };
            Ok(match end {
                Some(end) => client.query(bounded, &[&from, &end, &limit])?,
                None => client.query(open, &[&from, &limit])?,
            })
        })?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// A snapshot for a listing: a connection of its own (pooled or new) in
    /// a REPEATABLE READ, READ ONLY transaction, so that every batch of
    /// every pass reads the records as of one instant. At most
    /// `SNAPSHOTS_MAX` are open at once (each holds a connection, and
    /// PostgreSQL's connections are shared by every master); more are
    /// refused as unavailable (503), before the listing has answered.
    pub fn snapshot(&self) -> Result<Snapshot, IndexError> {
        let open = self.snapshots.fetch_add(1, Ordering::AcqRel);
        let permit = SnapshotPermit(self.snapshots.clone());
        if open >= SNAPSHOTS_MAX {
            return Err(IndexError::Unavailable(format!(
                "more than {SNAPSHOTS_MAX} listings at once on this master"
            )));
        }
        let mut connection = self.take_connection()?;
        let begin = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             SET LOCAL idle_in_transaction_session_timeout = {SNAPSHOT_IDLE_MS_MAX}"
        );
        if let Err(error) = connection.client.batch_execute(&begin) {
            return Err(self.error(&error));
        }
        Ok(Snapshot {
            connection: Some(connection),
            opened: Instant::now(),
            _permit: permit,
        })
    }

    /// Up to `rows_max` records of `snapshot` from `from` on, below `end`
    /// (None: no end), in key order. Fails once the snapshot is older than
    /// `SNAPSHOT_MS_MAX`: a long transaction keeps old row versions from
    /// being vacuumed for every master.
    pub fn snapshot_scan(
        &self,
        snapshot: &mut Snapshot,
        from: &[u8],
        end: Option<&[u8]>,
        rows_max: usize,
    ) -> Result<Vec<Row>, IndexError> {
        if snapshot.opened.elapsed() > Duration::from_millis(SNAPSHOT_MS_MAX) {
            return Err(IndexError::Unavailable(format!(
                "a listing's snapshot is older than {SNAPSHOT_MS_MAX} ms"
            )));
        }
        let Some(connection) = snapshot.connection.as_mut() else {
            return Err(IndexError::Unavailable("a listing's snapshot was lost".into()));
        };
        let limit = rows_max as i64;
        let statements = &connection.statements;
        let read = match end {
            Some(end) => connection
                .client
                .query(&statements.scan_records, &[&from, &end, &limit]),
            None => connection.client.query(&statements.scan_records_open, &[&from, &limit]),
        };
        match read {
            Ok(rows) => Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect()),
            Err(error) => {
                // The transaction is aborted (or the session gone): the
                // snapshot cannot be read again.
                snapshot.connection = None;
                Err(self.error(&error))
            }
        }
    }

    /// End `snapshot`'s transaction and pool its connection.
    pub fn end_snapshot(&self, mut snapshot: Snapshot) {
        let Some(mut connection) = snapshot.connection.take() else {
            return;
        };
        if connection.client.batch_execute("ROLLBACK").is_ok() && !connection.client.is_closed() {
            let mut idle = lock(&self.idle);
            if idle.len() < POOL_IDLE_MAX {
                idle.push(connection);
            }
        }
    }

    /// Fails once this process's lease lapsed (a serving master's or an
    /// offline command's).
    fn check_lease(&self) -> Result<(), IndexError> {
        match self.fence() {
            Some(lease) if !lease.valid() => Err(self.lapsed()),
            _ => Ok(()),
        }
    }

    fn lapsed(&self) -> IndexError {
        IndexError::Unavailable(format!(
            "this master's lease on {} lapsed (renewals failed, or an offline command holds the index)",
            self.name
        ))
    }

    /// A pooled connection, or a new one with its statements prepared.
    fn take_connection(&self) -> Result<Connection, IndexError> {
        self.check_lease()?;
        if let Some(connection) = lock(&self.idle).pop() {
            return Ok(connection);
        }
        let mut client = self.connect()?;
        let statements = Statements::prepare(&mut client).map_err(|error| self.error(&error))?;
        Ok(Connection { client, statements })
    }

    /// `View::scan_bounded`, batch by batch.
    pub fn scan_bounded(
        &self,
        prefix: &[u8],
        start: &[u8],
        visits_max: usize,
        mut visit: impl FnMut(&[u8], Result<Record, RecordError>) -> bool,
    ) -> Result<Option<Vec<u8>>, IndexError> {
        let end = prefix_end(prefix);
        let mut from = if start > prefix { start } else { prefix }.to_vec();
        let mut visits = 0usize;
        loop {
            // One row past the visits left, to tell where the scan resumes.
            let rows_max = SCAN_BATCH_ROWS.min(visits_max.saturating_sub(visits).saturating_add(1));
            let rows = self.scan_batch(true, &from, end.as_deref(), rows_max)?;
            for (key, value) in &rows {
                if visits == visits_max || !visit(key, Record::decode(value)) {
                    return Ok(Some(key.clone()));
                }
                visits += 1;
            }
            match rows.last() {
                Some((last, _)) if rows.len() == rows_max => from = key_after(last),
                _ => return Ok(None),
            }
        }
    }

    /// `Index::scan_state`, batch by batch.
    pub fn scan_state(
        &self,
        prefix: &[u8],
        start: &[u8],
        visits_max: usize,
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), IndexError> {
        let end = prefix_end(prefix);
        let mut from = if start > prefix { start } else { prefix }.to_vec();
        let mut visits = 0usize;
        while visits < visits_max {
            let rows_max = SCAN_BATCH_ROWS.min(visits_max - visits);
            let rows = self.scan_batch(false, &from, end.as_deref(), rows_max)?;
            for (key, value) in &rows {
                if !visit(key, value) {
                    return Ok(());
                }
                visits += 1;
            }
            match rows.last() {
                Some((last, _)) if rows.len() == rows_max => from = key_after(last),
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    /// Take `key`'s lock across masters: its lease (`HeldKey`). `None`
    /// when another master holds it; the token names this holding (for
    /// `unlock_key`). The caller holds the key's lock within this process,
    /// so no two of this master's writers ask for the same key. An offline
    /// command holds the whole index: always granted.
    pub fn try_lock_key(&self, key: &[u8]) -> Result<Option<LockToken>, IndexError> {
        if self.lease.is_none() {
            return Ok(Some(0));
        }
        let locked = self.lock_key_with(key, |statements| &statements.lock, &[])?;
        Ok(locked.map(|(token, _)| token))
    }

    /// `try_lock_key`, and in the same round trip and transaction (under
    /// the lease) `key`'s record and the state entry at `entry_key`; when
    /// the key has neither, `reserve` is put in as its record
    /// (`mkv_lock_reserve`).
    pub fn try_lock_key_reading(
        &self,
        key: &[u8],
        entry_key: &[u8],
        reserve: Option<&Record>,
    ) -> super::LockGrant<Option<KeyRead>> {
        if self.lease.is_none() {
            // An offline command holds the whole index: it reads as usual.
            return Ok(Some((0, None)));
        }
        let reserve = reserve.map(Record::encode);
        let locked = self.lock_key_with(
            key,
            |statements| &statements.lock_reserve,
            &[&key, &entry_key, &reserve],
        )?;
        let Some((token, row)) = locked else {
            return Ok(None);
        };
        match decode_record(key, row.get::<_, Option<&[u8]>>(1)) {
            Ok(record) => Ok(Some((
                token,
                Some(KeyRead {
                    record,
                    entry: row.get(2),
                    reserved: row.get(3),
                }),
            ))),
            Err(error) => {
                self.unlock_key(key, token);
                Err(error)
            }
        }
    }

    /// Take `key`'s lease with the lock statement `statement` picks (its
    /// parameters: the lease's five, then `more`; its first column: whether
    /// it was granted), and hold it here when granted; the statement's row
    /// with the token.
    fn lock_key_with(
        &self,
        key: &[u8],
        statement: impl Fn(&Statements) -> &Statement,
        more: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Option<(LockToken, postgres::Row)>, IndexError> {
        let Some(lease) = &self.lease else {
            unreachable!("callers answer for an offline command")
        };
        let id = lock_id(key);
        let token = lease.next_token.fetch_add(1, Ordering::Relaxed);
        let sent = lease.start.elapsed();
        let lease_ms = KEY_LEASE_MS as i32;
        let margin_ms = LEASE_MARGIN_MS as i32;
        let mut parameters: Vec<&(dyn postgres::types::ToSql + Sync)> =
            vec![&id, &lease.origin, &token, &lease_ms, &margin_ms];
        parameters.extend_from_slice(more);
        // Tried once more on a new session if the first was dead: the same
        // token takes over a lease the first attempt may have written.
        let row = self.read(|client, statements| Ok(client.query_one(statement(statements), &parameters)?))?;
        if !row.get::<_, bool>(0) {
            return Ok(None);
        }
        let until_micros = (sent + Duration::from_millis(KEY_LEASE_MS)).as_micros() as u64;
        lock(&lease.keys).insert(
            key.to_vec(),
            HeldKey {
                id,
                token,
                until_micros,
            },
        );
        Ok(Some((token, row)))
    }

    /// Stop holding `key` under `token` here: no renewal, no check in a
    /// commit. Takes no round trip (a reactor calls it); `unlock_key`
    /// then removes the lease in the database.
    pub fn release_key(&self, key: &[u8], token: LockToken) {
        if let Some(lease) = &self.lease {
            let mut keys = lock(&lease.keys);
            if keys.get(key).is_some_and(|held| held.token == token) {
                keys.remove(key);
            }
        }
    }

    /// Whether the holding `token` ended in a commit that removed its
    /// lease (`WriteAs::release`): then nothing is left to unlock. Forgets
    /// the holding either way.
    pub fn released(&self, token: LockToken) -> bool {
        self.lease
            .as_ref()
            .is_some_and(|lease| lock(&lease.released).remove(&token))
    }

    /// Remove the lease `try_lock_key` granted as `token`. If it fails, the
    /// lease ends on its own within `KEY_LEASE_MS` (it is not renewed).
    pub fn unlock_key(&self, key: &[u8], token: LockToken) {
        self.release_key(key, token);
        if self.released(token) {
            return;
        }
        let Some(lease) = &self.lease else { return };
        let id = lock_id(key);
        let unlocked = self.with_connection(|client, statements| {
            client.execute(&statements.unlock, &[&id, &lease.origin, &token])?;
            Ok(())
        });
        if let Err(error) = unlocked {
            if !matches!(error, IndexError::Unavailable(_)) {
                eprintln!("cannot release a key lock in {}: {error}", self.name);
            }
        }
    }

    /// How long this master's hold on `key` lasts from now, by its own
    /// clock (`None`: not held, or the master's lease lapsed). An offline
    /// command holds every key.
    pub fn key_lease_left(&self, key: &[u8]) -> Option<Duration> {
        let Some(lease) = &self.lease else {
            return Some(Duration::MAX);
        };
        if !lease.valid() {
            return None;
        }
        let until = lock(&lease.keys).get(key)?.until_micros;
        let now = lease.start.elapsed().as_micros() as u64;
        until.checked_sub(now).map(Duration::from_micros)
    }

    /// From now on, `listen` reports this master's own changes too
    /// (`Event::ChangedHere`): a write whose outcome this master does not
    /// know (the connection was lost while it committed) may become visible
    /// at any later moment, and only its notification says when.
    pub fn follow_own_changes(&self) {
        self.follow_own.store(true, Ordering::Release);
    }

    /// Report other masters' changes to `on` until the process ends,
    /// reconnecting after failures; `Confirmed` about every `beat`.
    ///
    /// A heartbeat is a notification this session sends itself: it arrives
    /// after every notification of a transaction that committed before it
    /// was sent (PostgreSQL delivers them in commit order), so when it is
    /// back, everything committed before it was sent has been reported.
    pub fn listen(&self, beat: Duration, mut on: impl FnMut(Event)) -> ! {
        let mut logged_down = false;
        loop {
            match self.listen_once(beat, &mut on, &mut logged_down) {
                Ok(never) => match never {},
                Err(error) => {
                    if !logged_down {
                        eprintln!("index notifications stopped: {error}; reconnecting");
                        logged_down = true;
                    }
                    std::thread::sleep(RECONNECT_PAUSE);
                }
            }
        }
    }

    fn listen_once(
        &self,
        beat: Duration,
        on: &mut impl FnMut(Event),
        logged_down: &mut bool,
    ) -> Result<std::convert::Infallible, String> {
        let text = |error: postgres::Error| describe(&error);
        let mut client = self.config.connect(NoTls).map_err(text)?;
        client.batch_execute(&format!("LISTEN {CHANNEL}")).map_err(text)?;
        client
            .query_one("SELECT pg_advisory_lock_shared($1)", &[&ROLE_LOCK])
            .map_err(text)?;
        if *logged_down {
            eprintln!("index notifications resumed");
            *logged_down = false;
        }
        // Whatever happened while no session listened was missed.
        on(Event::Everything);
        let notify = client.prepare("SELECT pg_notify($1, $2)").map_err(text)?;
        let own = format!("{}:", self.origin);
        for sequence in 0u64.. {
            let sent = Instant::now();
            let tag = format!("{own}b{sequence}");
            client.query_one(&notify, &[&CHANNEL, &tag]).map_err(text)?;
            let mut confirmed = false;
            loop {
                let now = Instant::now();
                let wait = if confirmed {
                    (sent + beat).saturating_duration_since(now)
                } else if now >= sent + BEAT_TIMEOUT {
                    return Err(format!("a heartbeat took over {BEAT_TIMEOUT:?}"));
                } else {
                    sent + BEAT_TIMEOUT - now
                };
                if wait.is_zero() {
                    break;
                }
                let next = client.notifications().timeout_iter(wait).next().map_err(text)?;
                let Some(notification) = next else { continue };
                let payload = notification.payload();
                if payload == tag {
                    confirmed = true;
                    on(Event::Confirmed(sent));
                } else if !payload.starts_with(&own) {
                    parse_payload(payload, on);
                } else if self.follow_own.load(Ordering::Acquire) {
                    // This master's own change, which its cache already
                    // holds unless the write's outcome was unknown to it.
                    parse_payload(payload, &mut |event| {
                        if let Event::Changed(key) = event {
                            on(Event::ChangedHere(key));
                        }
                    });
                }
            }
        }
        unreachable!("the beat sequence is unbounded")
    }
}

/// Why a role could not be taken.
enum LeaseError {
    /// Another process holds the role lock in the other mode, or (offline)
    /// a master's lease is live.
    Held,
    Database(postgres::Error),
}

impl From<postgres::Error> for LeaseError {
    fn from(error: postgres::Error) -> Self {
        LeaseError::Database(error)
    }
}

/// A serving master's lease on the index: a row of `mkv_masters` whose
/// `expires` (the database's clock) it renews every `LEASE_RENEW_MS`,
/// always from a session that holds the role lock shared; and its own
/// deadline, `LEASE_MS` after the renewal was sent (its own clock), past
/// which it makes no index call. A session lost (a restart, a terminated
/// backend, a failover) is made again and the role lock taken again; while
/// an offline command holds the lock exclusively, no renewal can succeed
/// and the lease lapses. An offline command goes ahead only holding the
/// lock exclusively with no lease live (`take_offline`), so no master uses
/// the index under it, whichever sessions died.
struct Lease {
    config: Config,
    /// Its row's name: the master's origin, or `offline:` and the
    /// command's.
    origin: String,
    /// An offline command's second row (`fence_in`), never live itself:
    /// its writes hold it shared to their commit, and a master's renewal
    /// takes it exclusively before it looks at the lease row, so it waits
    /// for such a write and sees the row as that write left it. Only an
    /// offline command's lease has one (`is_offline`): renewed only while
    /// live, never taken again.
    fence_row: Option<String>,
    /// The session holding the role lock shared; None once it failed.
    session: Mutex<Option<Client>>,
    start: Instant,
    /// Microseconds after `start` until which the lease holds (0: lapsed).
    until_micros: AtomicU64,
    /// The index was dropped: stop renewing.
    ended: AtomicBool,
    /// The keys this master holds (`HeldKey`), renewed with the lease.
    keys: Mutex<HashMap<Vec<u8>, HeldKey>>,
    /// The next key lease's token.
    next_token: AtomicI64,
    /// Holdings whose lease a commit removed (`WriteAs::release`), until
    /// their guard lets go (`Postgres::released`).
    released: Mutex<HashSet<LockToken>>,
    /// Renewals so far (expired rows are removed every
    /// `EXPIRED_SWEEP_EVERY`th).
    renewals: AtomicU64,
}

/// Renewals between two removals of expired key leases (about 10 s).
const EXPIRED_SWEEP_EVERY: u64 = 20;

/// A key this master holds: its lease's row and deadline.
struct HeldKey {
    id: i64,
    token: LockToken,
    /// Microseconds after the lease's `start` until which it holds, by
    /// this master's clock: `KEY_LEASE_MS` after its latest renewal was
    /// sent, so it ends before the row's expiry.
    until_micros: u64,
}

impl Lease {
    /// Take the role lock shared on `session` and the first lease.
    fn take(config: &Config, origin: &str, mut session: Client) -> Result<Lease, LeaseError> {
        // A master just stopped may hold it a moment longer: PostgreSQL
        // notices its closed sessions within milliseconds.
        let deadline = Instant::now() + ROLE_WAIT;
        while !session
            .query_one("SELECT pg_try_advisory_lock_shared($1)", &[&ROLE_LOCK])?
            .get::<_, bool>(0)
        {
            if Instant::now() >= deadline {
                return Err(LeaseError::Held);
            }
            std::thread::sleep(ROLE_RETRY_DELAY);
        }
        let lease = Lease::new(
            config,
            origin.to_string(),
            None,
            session,
            Instant::now(),
            Duration::ZERO,
        );
        // An offline command just ended (or killed) leaves its lease to
        // lapse: wait for it as an offline command waits for masters'.
        let deadline = Instant::now() + OFFLINE_WAIT;
        loop {
            match lease.renew() {
                Ok(()) => return Ok(lease),
                Err(RenewError::Held) if Instant::now() < deadline => std::thread::sleep(ROLE_RETRY_DELAY),
                Err(RenewError::Held) => return Err(LeaseError::Held),
                Err(RenewError::Database(error)) => return Err(LeaseError::Database(error)),
            }
        }
    }

    /// A lease named `origin` (with `fence_row` for an offline command's),
    /// renewed on `session`, holding until `until` after `start`.
    fn new(
        config: &Config,
        origin: String,
        fence_row: Option<String>,
        session: Client,
        start: Instant,
        until: Duration,
    ) -> Lease {
        Lease {
            config: config.clone(),
            origin,
            fence_row,
            session: Mutex::new(Some(session)),
            start,
            until_micros: AtomicU64::new(until.as_micros() as u64),
            ended: AtomicBool::new(false),
            keys: Mutex::new(HashMap::new()),
            next_token: AtomicI64::new(1),
            released: Mutex::new(HashSet::new()),
            renewals: AtomicU64::new(0),
        }
    }

    /// Whether this is an offline command's lease.
    fn is_offline(&self) -> bool {
        self.fence_row.is_some()
    }

    /// Whether the lease holds now.
    fn valid(&self) -> bool {
        (self.start.elapsed().as_micros() as u64) < self.until_micros.load(Ordering::Acquire)
    }

    /// Renew every `LEASE_RENEW_MS` until the index is dropped; say when
    /// renewals start and stop failing.
    fn keep(&self) {
        let mut failing = false;
        while !self.ended.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(LEASE_RENEW_MS));
            match self.renew() {
                Ok(()) if failing => {
                    eprintln!("this master's lease on the index is renewed again");
                    failing = false;
                }
                Ok(()) => {}
                Err(_) if self.is_offline() && self.ended.load(Ordering::Acquire) => {}
                Err(error) if !failing => {
                    let why = match error {
                        RenewError::Held => "an offline command holds the index".to_string(),
                        RenewError::Database(error) => describe(&error),
                    };
                    eprintln!(
                        "cannot renew this process's lease on the index ({why}); \
                         index calls fail once it lapses"
                    );
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }

    /// One renewal: (re)connect and take the role lock if the session was
    /// lost, then push the row's expiry. The local deadline counts from
    /// before the statement was sent, so it ends no later than the row's.
    fn renew(&self) -> Result<(), RenewError> {
        if self.is_offline() {
            return self.renew_offline();
        }
        let mut session = lock(&self.session);
        if session.as_ref().is_none_or(Client::is_closed) {
            *session = None;
            let mut client = self.config.connect(NoTls)?;
            let held: bool = client
                .query_one("SELECT pg_try_advisory_lock_shared($1)", &[&ROLE_LOCK])?
                .get(0);
            if !held {
                return Err(RenewError::Held);
            }
            *session = Some(client);
        }
        let client = session.as_mut().expect("connected above");
        let sent = self.start.elapsed();
        // Not while an offline command's lease is live: its session (and
        // so its exclusive role lock) may have died while it runs on. A
        // bulk write of it in flight holds its row (`fence_in`): this
        // waits for that commit, then sees the row as it is.
        let renewed = Self::renew_beside_offline(client, &self.origin);
        match renewed {
            Ok(0) => return Err(RenewError::Held),
            Ok(_) => {}
            Err(error) => {
                *session = None;
                return Err(RenewError::Database(error));
            }
        }
        let until = sent + Duration::from_millis(LEASE_MS);
        self.until_micros.fetch_max(until.as_micros() as u64, Ordering::AcqRel);
        if let Err(error) = self.renew_keys(client) {
            *session = None;
            return Err(RenewError::Database(error));
        }
        if self.renewals.fetch_add(1, Ordering::Relaxed) % EXPIRED_SWEEP_EVERY == 0 {
            Self::remove_expired_keys(client);
        }
        Ok(())
    }

    /// A master's row pushed on, unless an offline command's lease is live:
    /// the offline commands' fence rows first (waiting for their bulk
    /// writes in flight), then, in a statement of its own (a snapshot taken
    /// after that wait), the insert. How many rows it wrote: 0 when refused.
    fn renew_beside_offline(client: &mut Client, origin: &str) -> Result<u64, postgres::Error> {
        let mut transaction = client.transaction()?;
        transaction.execute(
            &format!("SELECT 1 FROM mkv_masters WHERE origin LIKE '{OFFLINE_PREFIX}%{FENCE_SUFFIX}' FOR UPDATE"),
            &[],
        )?;
        let renewed = transaction.execute(
            &format!(
                "INSERT INTO mkv_masters SELECT $1, now() + interval '{LEASE_MS} milliseconds' \
                     WHERE NOT EXISTS (SELECT 1 FROM mkv_masters WHERE origin LIKE '{OFFLINE_PREFIX}%' \
                         AND expires > now() - interval '{LEASE_MARGIN_MS} milliseconds') \
                 ON CONFLICT (origin) DO UPDATE SET expires = EXCLUDED.expires"
            ),
            &[&origin],
        )?;
        transaction.commit()?;
        Ok(renewed)
    }

    /// An offline command's renewal: its row pushed on while it is live,
    /// from any session (the one holding the role lock may be gone; the
    /// row keeps masters out meanwhile). A row that lapsed is not taken
    /// again: a master may have started since, so the command's writes
    /// fail from then on.
    fn renew_offline(&self) -> Result<(), RenewError> {
        let mut session = lock(&self.session);
        if session.as_ref().is_none_or(Client::is_closed) {
            *session = None;
            *session = Some(self.config.connect(NoTls)?);
        }
        let client = session.as_mut().expect("connected above");
        let sent = self.start.elapsed();
        let renewed = client.execute(
            &format!(
                "UPDATE mkv_masters SET expires = now() + interval '{LEASE_MS} milliseconds' \
                 WHERE origin = $1 AND expires > now()"
            ),
            &[&self.origin],
        );
        match renewed {
            Ok(0) => {
                self.ended.store(true, Ordering::Release);
                self.until_micros.store(0, Ordering::Release);
                eprintln!("this offline command's lease on the index lapsed: it cannot write any more");
                Err(RenewError::Held)
            }
            Ok(_) => {
                let until = sent + Duration::from_millis(LEASE_MS);
                self.until_micros.fetch_max(until.as_micros() as u64, Ordering::AcqRel);
                Ok(())
            }
            Err(error) => {
                *session = None;
                Err(RenewError::Database(error))
            }
        }
    }

    /// Take the role lock exclusively on `session` for an offline command,
    /// once no lease is live (a master whose sessions died may still serve
    /// until its lease lapses, and cannot renew it while the lock is held
    /// here), and the command's own lease, a row of `mkv_masters` named
    /// `offline:` and `origin` that masters' renewals refuse to start
    /// beside while it is live, whatever became of this session. Waits up
    /// to `OFFLINE_WAIT` (a master killed leaves its lease to lapse).
    fn take_offline(config: &Config, origin: &str, mut session: Client) -> Result<Lease, LeaseError> {
        let deadline = Instant::now() + OFFLINE_WAIT;
        let live = format!(
            "SELECT count(*) FROM mkv_masters WHERE expires > now() - interval '{LEASE_MARGIN_MS} milliseconds'"
        );
        let name = format!("{OFFLINE_PREFIX}{origin}");
        let fence_row = format!("{name}{FENCE_SUFFIX}");
        let start = Instant::now();
        loop {
            let locked: bool = session
                .query_one("SELECT pg_try_advisory_lock($1)", &[&ROLE_LOCK])?
                .get(0);
            if locked {
                let serving: i64 = session.query_one(&live, &[])?.get(0);
                if serving == 0 {
                    let sent = start.elapsed();
                    // Every row left is lapsed (masters and commands gone):
                    // cleared, so that killed commands' rows do not pile up.
                    session.batch_execute(&format!(
                        "DELETE FROM mkv_masters WHERE expires < now() - interval '{LEASE_MARGIN_MS} milliseconds'"
                    ))?;
                    session.execute(
                        &format!(
                            "INSERT INTO mkv_masters VALUES ($1, now() + interval '{LEASE_MS} milliseconds'), \
                                 ($2, '-infinity') \
                             ON CONFLICT (origin) DO UPDATE SET expires = EXCLUDED.expires"
                        ),
                        &[&name, &fence_row],
                    )?;
                    let until = sent + Duration::from_millis(LEASE_MS);
                    return Ok(Lease::new(config, name, Some(fence_row), session, start, until));
                }
                // Let the serving masters renew; they serve.
                session.query_one("SELECT pg_advisory_unlock($1)", &[&ROLE_LOCK])?;
            }
            if Instant::now() >= deadline {
                return Err(LeaseError::Held);
            }
            std::thread::sleep(ROLE_RETRY_DELAY);
        }
    }

    /// Remove key lease rows expired by more than the margin, whoever's:
    /// such a row is taken over by the next `mkv_lock` of its key and fails
    /// every commit's check as an absent one does, so removing it changes
    /// nothing but the table's size (a master that died or lost the
    /// database left them). Rows a commit in flight holds are skipped.
    fn remove_expired_keys(client: &mut Client) {
        let removed = client.execute(
            &format!(
                "DELETE FROM mkv_key_leases WHERE expires < now() - interval '{LEASE_MARGIN_MS} milliseconds' \
                 AND lock_id IN (SELECT lock_id FROM mkv_key_leases \
                     WHERE expires < now() - interval '{LEASE_MARGIN_MS} milliseconds' FOR UPDATE SKIP LOCKED)"
            ),
            &[],
        );
        if let Err(error) = removed {
            eprintln!("cannot remove expired key leases: {}", describe(&error));
        }
    }

    /// Push the expiry of every key lease this master holds, except those
    /// a commit in flight has locked (that commit extends them itself);
    /// move each renewed one's deadline.
    fn renew_keys(&self, client: &mut Client) -> Result<(), postgres::Error> {
        let (ids, tokens): (Vec<i64>, Vec<i64>) = lock(&self.keys).values().map(|held| (held.id, held.token)).unzip();
        if ids.is_empty() {
            return Ok(());
        }
        let sent = self.start.elapsed();
        let rows = client.query(
            &format!(
                "UPDATE mkv_key_leases AS lease SET expires = now() + interval '{KEY_LEASE_MS} milliseconds' \
                 FROM (SELECT lock_id FROM mkv_key_leases WHERE master = $3 AND lock_id = ANY($1) \
                       AND token = ANY($2) AND expires > now() FOR UPDATE SKIP LOCKED) AS held \
                 WHERE lease.lock_id = held.lock_id RETURNING lease.lock_id, lease.token"
            ),
            &[&ids, &tokens, &self.origin],
        )?;
        let renewed: std::collections::HashSet<(i64, i64)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
        let until = (sent + Duration::from_millis(KEY_LEASE_MS)).as_micros() as u64;
        for held in lock(&self.keys).values_mut() {
            if renewed.contains(&(held.id, held.token)) {
                held.until_micros = held.until_micros.max(until);
            }
        }
        Ok(())
    }

    /// Stop renewing and give the lease up (an offline command need not
    /// wait for it to lapse).
    fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.until_micros.store(0, Ordering::Release);
        let mut session = lock(&self.session);
        // An offline command's row keeps masters out until it lapses: gone
        // now, from a new session if the one it had died.
        if self.is_offline() && session.as_ref().is_none_or(Client::is_closed) {
            *session = self.config.connect(NoTls).ok();
        }
        if let Some(client) = session.as_mut() {
            let fence_row = self.fence_row.as_deref().unwrap_or_default();
            let _ = client.execute(
                "DELETE FROM mkv_masters WHERE origin = $1 OR origin = $2",
                &[&self.origin, &fence_row],
            );
        }
        // The session's end releases the role lock (the renewing thread,
        // which shares this lease, may sleep a while yet).
        *session = None;
    }
}

/// Why a renewal failed.
enum RenewError {
    /// An offline command holds the role lock.
    Held,
    Database(postgres::Error),
}

impl From<postgres::Error> for RenewError {
    fn from(error: postgres::Error) -> Self {
        RenewError::Database(error)
    }
}

/// A scan of `table` from `$1` on, below `$2` if `bounded`, at most the
/// last parameter's rows. Two statements per table, with and without an
/// end, rather than one with `($2 IS NULL OR key < $2)`: under a generic
/// plan (which PostgreSQL may pick for a statement after five executions)
/// that condition is a filter, not an index bound, and a scan of a prefix
/// with fewer keys than the limit walks the index to the table's end.
pub(super) fn scan_sql(table: &str, column: &str, bounded: bool) -> String {
    let (end, limit) = if bounded { ("AND key < $2 ", "$3") } else { ("", "$2") };
    format!("SELECT key, {column} FROM {table} WHERE key >= $1 {end}ORDER BY key LIMIT {limit}")
}

/// Report the changes one notification names.
fn parse_payload(payload: &str, on: &mut impl FnMut(Event)) {
    let Some((_origin, body)) = payload.split_once(':') else {
        return;
    };
    if body == "*" {
        on(Event::Everything);
    } else if let Some(keys) = body.strip_prefix('k') {
        for key in keys.split(',') {
            match decode_hex(key) {
                Some(key) => on(Event::Changed(key)),
                None => on(Event::Everything),
            }
        }
    }
}

/// The payloads notifying that `keys` changed: `origin:k<hex>,<hex>...`,
/// each within PostgreSQL's limit; a key too long for any names everything.
fn notifications(origin: &str, keys: &[&[u8]]) -> Vec<String> {
    let mut payloads: Vec<String> = Vec::new();
    let mut current = String::new();
    for key in keys {
        let hex = encode_hex(key);
        if origin.len() + 2 + hex.len() > NOTIFY_PAYLOAD_MAX {
            return vec![format!("{origin}:*")];
        }
        if !current.is_empty() && current.len() + 1 + hex.len() > NOTIFY_PAYLOAD_MAX {
            payloads.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            current = format!("{origin}:k{hex}");
        } else {
            current.push(',');
            current.push_str(&hex);
        }
    }
    if !current.is_empty() {
        payloads.push(current);
    }
    payloads
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

/// `error` with the server's message when there is one (the crate's own
/// text for a server error is just "db error").
fn describe(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// Whether `error` means the database is unreachable (rather than that a
/// statement failed): connection loss, no SQL state at all, a standby that
/// refuses writes, a shutdown, too many connections.
fn unreachable(error: &postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        None => true,
        Some(state) => {
            let code = state.code();
            code.starts_with("08") || code.starts_with("57P") || code.starts_with("53") || code == "25006"
        }
    }
}

/// The advisory lock id of `key`: 64 bits of its md5.
fn lock_id(key: &[u8]) -> i64 {
    let digest = Md5::digest(key);
    i64::from_be_bytes(digest[..8].try_into().expect("md5 has 16 bytes"))
}

/// A tag unique to this process among the masters.
fn origin() -> String {
    let seed = format!(
        "{}-{:?}-{:?}",
        std::process::id(),
        std::time::SystemTime::now(),
        std::thread::current().id()
    );
    encode_hex(&Md5::digest(seed.as_bytes())[..8])
}

/// `url` with any password replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user, hosts)) => match user.split_once(':') {
            Some((name, _password)) => format!("{scheme}://{name}:***@{hosts}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|_| {
        eprintln!("mkv: an index lock was poisoned by a panic; aborting");
        std::process::abort()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_round_trip_and_split_at_the_payload_limit() {
        let keys: Vec<Vec<u8>> = (0..600).map(|i| format!("/key/{i:05}").into_bytes()).collect();
        let borrowed: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let payloads = notifications("abc", &borrowed);
        assert!(payloads.len() > 1, "600 keys need more than one payload");
        let mut seen = Vec::new();
        for payload in &payloads {
            assert!(payload.len() <= NOTIFY_PAYLOAD_MAX);
            parse_payload(payload, &mut |event| seen.push(event));
        }
        let expected: Vec<Event> = keys.into_iter().map(Event::Changed).collect();
        assert_eq!(seen, expected);
        let long = vec![b'x'; NOTIFY_PAYLOAD_MAX];
        assert_eq!(notifications("abc", &[&long]), ["abc:*"]);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://mkv:secret@h1:5432,h2:5433/mkv?x=1"),
            "postgres://mkv:***@h1:5432,h2:5433/mkv?x=1"
        );
        assert_eq!(redact("postgres://h1/mkv"), "postgres://h1/mkv");
    }
}
