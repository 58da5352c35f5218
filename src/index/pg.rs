//! The PostgreSQL engine of the index: many masters over one index that
//! PostgreSQL keeps, replicates (hot standbys) and fails over (Patroni).
//!
//! Tables, made on first open: `mkv_records (key bytea, record bytea)` with
//! the original master's record bytes, `mkv_meta (key, meta)` and
//! `mkv_state (key, value)`, each keyed by its primary key. `bytea` compares
//! byte by byte, so scans run in RocksDB's key order.
//!
//! The client is the `postgres` crate: `tokio-postgres` driven by a small
//! current-thread tokio runtime inside each connection. The index interface
//! is synchronous (RocksDB's is, and scans hand each row to a visitor), so a
//! call blocks its caller for one round trip; connections come from a pool
//! that grows to the number of concurrent callers (about one per reactor).
//!
//! What many masters need beyond storage:
//! - Key locks: `try_lock_key` takes a session advisory lock, keyed by 64
//!   bits of the key's md5, on one lock session per master. A master that
//!   dies drops its session and so its locks. A write that goes live
//!   checks, in its own transaction, that its lock is still held by the
//!   session that took it, so a lock lost to a failover is never written
//!   through.
//! - Change notifications: every transaction that changes records notifies
//!   channel `mkv` with the changed keys; `listen` hands them to the
//!   master's cache, with heartbeats that bound how stale the cache can be
//!   (`coherence`).
//! - Roles: a serving master holds a shared advisory lock, an offline
//!   command (rebuild, seed, rebalance, verify) the exclusive one, so an
//!   offline command never runs under serving masters (it is sent to a
//!   running master instead, as with RocksDB's directory lock).
//!
//! Errors that mean the database cannot be reached (connection lost, a
//! standby that refuses writes after a failover, shutdown) are
//! `IndexError::Unavailable`: the caller answers 503, and the next call
//! connects again, to whichever host is the primary then.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use postgres::config::TargetSessionAttrs;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, NoTls, Statement};

use super::{decode_meta, key_after, prefix_end, Change, IndexError, IndexOptions, Role};
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
/// Between attempts at the role lock.
const ROLE_RETRY_DELAY: Duration = Duration::from_millis(50);
/// Advisory lock that serialises making the tables (`"mkv-tabl"`).
const SCHEMA_LOCK: i64 = 0x6d6b_762d_7461_626c;

/// How long a heartbeat may take to come back before the listening
/// session is taken for dead and made again.
const BEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// The tables, made by one opener at a time (after `SCHEMA_LOCK`).
const TABLES: &str = "
    CREATE TABLE IF NOT EXISTS mkv_records (key bytea PRIMARY KEY, record bytea NOT NULL);
    CREATE TABLE IF NOT EXISTS mkv_meta (key bytea PRIMARY KEY, meta bytea NOT NULL);
    CREATE TABLE IF NOT EXISTS mkv_state (key bytea PRIMARY KEY, value bytea NOT NULL);
    CREATE OR REPLACE FUNCTION mkv_apply(
        ops text[], keys bytea[], vals bytea[],
        lock_pids int[], lock_classes oid[], lock_objects oid[], payloads text[]
    ) RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
        i int;
        payload text;
    BEGIN
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
        FOR i IN 1 .. coalesce(array_length(lock_pids, 1), 0) LOOP
            IF NOT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                    AND pid = lock_pids[i] AND classid = lock_classes[i]
                    AND objid = lock_objects[i] AND objsubid = 1) THEN
                RAISE EXCEPTION 'mkv: a key lock was lost' USING ERRCODE = 'MKVLK';
            END IF;
        END LOOP;
        FOREACH payload IN ARRAY payloads LOOP
            PERFORM pg_notify('mkv', payload);
        END LOOP;
    END $$;
";
/// The SQL state `mkv_apply` raises when a key's lock is gone.
const LOCK_LOST_STATE: &str = "MKVLK";

/// A pooled connection and its prepared statements.
struct Connection {
    client: Client,
    statements: Statements,
}

struct Statements {
    get: Statement,
    meta: Statement,
    state: Statement,
    apply: Statement,
    notify: Statement,
    scan_records: Statement,
    scan_state: Statement,
}

impl Statements {
    fn prepare(client: &mut Client) -> Result<Statements, postgres::Error> {
        let scan = |table: &str, column: &str| {
            format!(
                "SELECT key, {column} FROM {table} WHERE key >= $1 AND ($2::bytea IS NULL OR key < $2) \
                 ORDER BY key LIMIT $3"
            )
        };
        Ok(Statements {
            get: client.prepare("SELECT record FROM mkv_records WHERE key = $1")?,
            meta: client.prepare("SELECT meta FROM mkv_meta WHERE key = $1")?,
            state: client.prepare("SELECT value FROM mkv_state WHERE key = $1")?,
            apply: client.prepare("SELECT mkv_apply($1, $2, $3, $4, $5, $6, $7)")?,
            notify: client.prepare("SELECT pg_notify($1, $2)")?,
            scan_records: client.prepare(&scan("mkv_records", "record"))?,
            scan_state: client.prepare(&scan("mkv_state", "value"))?,
        })
    }
}

/// The session that holds this master's key locks.
#[derive(Default)]
struct LockSession {
    client: Option<Client>,
    /// The session's backend pid (what `pg_locks` names it by).
    pid: i32,
    /// Keys locked, each with the pid of the session that took its lock:
    /// after a reconnection the old locks are gone, and a commit must see so.
    held: HashMap<Vec<u8>, i32>,
}

/// Why a transaction did not commit.
enum Failure {
    Database(postgres::Error),
    /// A key's lock is no longer held by the session that took it.
    LockLost,
}

impl From<postgres::Error> for Failure {
    fn from(error: postgres::Error) -> Self {
        Failure::Database(error)
    }
}

/// Changes ready for `Postgres::apply_batch`: `mkv_apply`'s arguments.
pub struct Batch {
    operations: Vec<&'static str>,
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
    pids: Vec<i32>,
    classes: Vec<u32>,
    objects: Vec<u32>,
    payloads: Vec<String>,
}

/// A key and its value, as a scan reads them.
type Row = (Vec<u8>, Vec<u8>);

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
}

/// The index in PostgreSQL.
pub struct Postgres {
    config: Config,
    /// The URL without its password, for messages.
    name: String,
    idle: Mutex<Vec<Connection>>,
    /// No connection attempt before this instant (`RECONNECT_PAUSE`).
    pause_until: Mutex<Option<Instant>>,
    locks: Mutex<LockSession>,
    /// This process's tag on its notifications, so it skips its own.
    origin: String,
    /// The session holding the role lock, for the process's life.
    _role: Mutex<Client>,
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
        let mut role = config.connect(NoTls).map_err(open_error)?;
        // One simple query is one transaction: the lock is held to its end.
        let schema = format!("SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {TABLES}");
        role.batch_execute(&schema).map_err(open_error)?;
        let take = match options.role {
            Role::Serve => "SELECT pg_try_advisory_lock_shared($1)",
            Role::Offline => "SELECT pg_try_advisory_lock($1)",
        };
        // A master just stopped may hold it a moment longer: PostgreSQL
        // notices its closed sessions within milliseconds.
        let deadline = Instant::now() + ROLE_WAIT;
        while !role
            .query_one(take, &[&ROLE_LOCK])
            .map_err(open_error)?
            .get::<_, bool>(0)
        {
            if Instant::now() >= deadline {
                return Err(IndexError::Locked(PathBuf::from(&name)));
            }
            std::thread::sleep(ROLE_RETRY_DELAY);
        }
        Ok(Postgres {
            config,
            name,
            idle: Mutex::new(Vec::new()),
            pause_until: Mutex::new(None),
            locks: Mutex::new(LockSession::default()),
            origin: origin(),
            _role: Mutex::new(role),
        })
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
        let pooled = lock(&self.idle).pop();
        let mut connection = match pooled {
            Some(connection) => connection,
            None => {
                let mut client = self.connect()?;
                let statements = Statements::prepare(&mut client).map_err(|error| self.error(&error))?;
                Connection { client, statements }
            }
        };
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
            Failure::LockLost => {
                IndexError::Unavailable("the key's lock was lost with the index connection that held it".into())
            }
        })
    }

    fn error(&self, error: &postgres::Error) -> IndexError {
        if unreachable(error) {
            IndexError::Unavailable(format!("{}: {}", self.name, describe(error)))
        } else {
            IndexError::Io(describe(error))
        }
    }

    /// The record of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, IndexError> {
        let row = self.read(|client, statements| Ok(client.query_opt(&statements.get, &[&key])?))?;
        row.map(|row| {
            Record::decode(row.get::<_, &[u8]>(0)).map_err(|error| IndexError::Corrupt {
                key: key.to_vec(),
                error,
            })
        })
        .transpose()
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
        let locked: Vec<(i32, i64)> = {
            let session = lock(&self.locks);
            changed
                .iter()
                .filter_map(|key| session.held.get(*key).map(|&pid| (pid, lock_id(key))))
                .collect()
        };
        let mut batch = Batch {
            operations: Vec::with_capacity(changes.len()),
            keys: Vec::with_capacity(changes.len()),
            values: Vec::with_capacity(changes.len()),
            pids: locked.iter().map(|&(pid, _)| pid).collect(),
            classes: Vec::with_capacity(locked.len()),
            objects: Vec::with_capacity(locked.len()),
            payloads: notifications(&self.origin, &changed),
        };
        (batch.classes, batch.objects) = locked.iter().map(|&(_, id)| lock_halves(id)).unzip();
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

    /// Apply a prepared batch: one statement, one round trip (a single
    /// function call is its own transaction, all of it or none).
    pub fn apply_batch(&self, batch: Batch) -> Result<(), IndexError> {
        self.with_connection(|client, statements| {
            let parameters: [&(dyn postgres::types::ToSql + Sync); 7] = [
                &batch.operations,
                &batch.keys,
                &batch.values,
                &batch.pids,
                &batch.classes,
                &batch.objects,
                &batch.payloads,
            ];
            match client.execute(&statements.apply, &parameters) {
                Ok(_) => Ok(()),
                Err(error) if error.code().is_some_and(|state| state.code() == LOCK_LOST_STATE) => {
                    Err(Failure::LockLost)
                }
                Err(error) => Err(Failure::Database(error)),
            }
        })
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
            let statement = if records {
                &statements.scan_records
            } else {
                &statements.scan_state
            };
            Ok(client.query(statement, &[&from, &end, &limit])?)
        })?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
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

    /// Take `key`'s lock across masters; `Ok(false)` when another master
    /// holds it. The caller holds the key's lock within this process, so
    /// no two of this master's writers ask for the same key.
    pub fn try_lock_key(&self, key: &[u8]) -> Result<bool, IndexError> {
        let mut session = lock(&self.locks);
        match self.try_lock_in(&mut session, key) {
            // The session was dead (the database restarted or failed over):
            // its locks are gone with it, so a new session may take this one.
            Err(IndexError::Unavailable(_)) => self.try_lock_in(&mut session, key),
            result => result,
        }
    }

    fn try_lock_in(&self, session: &mut LockSession, key: &[u8]) -> Result<bool, IndexError> {
        if session.client.as_ref().is_none_or(Client::is_closed) {
            let mut client = self.connect()?;
            let pid: i32 = client
                .query_one("SELECT pg_backend_pid()", &[])
                .map_err(|error| self.error(&error))?
                .get(0);
            session.client = Some(client);
            session.pid = pid;
        }
        let id = lock_id(key);
        let client = session.client.as_mut().expect("connected above");
        match client.query_one("SELECT pg_try_advisory_lock($1)", &[&id]) {
            Ok(row) => {
                let granted: bool = row.get(0);
                if granted {
                    let pid = session.pid;
                    session.held.insert(key.to_vec(), pid);
                }
                Ok(granted)
            }
            Err(error) => {
                session.client = None;
                Err(self.error(&error))
            }
        }
    }

    /// Release `key`'s lock. If the session that took it is gone, so is
    /// the lock.
    pub fn unlock_key(&self, key: &[u8]) {
        let mut session = lock(&self.locks);
        let Some(pid) = session.held.remove(key) else { return };
        if pid != session.pid {
            return;
        }
        let id = lock_id(key);
        let Some(client) = session.client.as_mut() else { return };
        if let Err(error) = client.query_one("SELECT pg_advisory_unlock($1)", &[&id]) {
            // The session is unusable; its end releases its locks. Lost with
            // the database (a failover) that is expected: no message.
            if !unreachable(&error) {
                eprintln!("cannot release a key lock in {}: {}", self.name, describe(&error));
            }
            session.client = None;
        }
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
                }
            }
        }
        unreachable!("the beat sequence is unbounded")
    }
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

/// How `pg_locks` shows a bigint advisory lock: high and low 32 bits.
fn lock_halves(id: i64) -> (u32, u32) {
    ((id as u64 >> 32) as u32, id as u32)
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

    #[test]
    fn lock_halves_match_pg_locks() {
        // pg_advisory_lock(bigint) shows classid = high, objid = low half.
        assert_eq!(lock_halves(0x0000_0001_0000_0002), (1, 2));
        assert_eq!(lock_halves(-1), (u32::MAX, u32::MAX));
    }
}
