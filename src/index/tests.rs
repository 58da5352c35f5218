//! The index seam's behaviour, the same tests against both engines.
//!
//! PostgreSQL comes from `MKV_TEST_POSTGRES` (a URL; `scripts/test` starts a
//! throwaway server and sets it, with `MKV_TEST_REQUIRE_POSTGRES=1` so that
//! a missing server fails the run instead of skipping). Each test works in
//! a schema of its own.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use super::*;

fn options(role: Role) -> IndexOptions {
    IndexOptions {
        block_cache_bytes: 1 << 20,
        sync: false,
        role,
    }
}

/// The PostgreSQL URL of the tests, if any.
fn postgres_url() -> Option<String> {
    match std::env::var("MKV_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let required = std::env::var("MKV_TEST_REQUIRE_POSTGRES").is_ok_and(|value| value == "1");
            assert!(
                !required,
                "MKV_TEST_REQUIRE_POSTGRES=1 but MKV_TEST_POSTGRES is not set"
            );
            eprintln!("MKV_TEST_POSTGRES is not set: the PostgreSQL half of this test is skipped");
            None
        }
    }
}

/// `url` working in a fresh schema `name` (dropped first if left over).
fn schema_url(url: &str, name: &str) -> String {
    let schema = format!("t_{name}_{}", std::process::id());
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-csearch_path%3D{schema}")
}

/// A fresh database `mkv_<name>_<pid>` on the server of `url`, and a
/// session to administer it.
fn own_database(url: &str, name: &str) -> (postgres::Client, String) {
    let database = format!("mkv_{name}_{}", std::process::id());
    let mut admin = postgres::Client::connect(url, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {database}")).unwrap();
    (admin, database)
}

/// `url` with its database replaced by `database`.
fn database_url(url: &str, database: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{database}")
}

/// One index of each engine, named, for `name`'s test.
fn engines(name: &str) -> Vec<(&'static str, Index, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let rocks = Index::open(dir.path(), &options(Role::Serve)).unwrap();
    let mut engines = vec![("rocksdb", rocks, Some(dir))];
    if let Some(url) = postgres_url() {
        let url = schema_url(&url, name);
        let index = Index::open(Path::new(&url), &options(Role::Serve)).unwrap();
        engines.push(("postgres", index, None));
    }
    engines
}

fn live(volume: &str) -> Record {
    Record::new(vec![volume.to_owned()], false, None)
}

fn keys_of(view: &View<'_>, prefix: &[u8], start: &[u8]) -> Vec<Vec<u8>> {
    let mut seen = Vec::new();
    view.scan(prefix, start, |key, _| {
        seen.push(key.to_vec());
        true
    })
    .unwrap();
    seen
}

#[test]
fn records_and_metadata_change_together() {
    for (engine, index, _dir) in engines("atomic") {
        let record = Record::new(vec!["v1".into()], false, Some(*b"5d41402abc4b2a76b9719d911017c592"));
        let meta = Meta {
            size: 5,
            mtime_ms: 7,
            ..Meta::default()
        };
        index
            .apply(&[
                Change::Record(b"/k", &record),
                Change::Meta(b"/k", &meta),
                Change::StatePut(b"u/1", b"upload"),
            ])
            .unwrap();
        assert_eq!(index.get(b"/k").unwrap(), Some(record.clone()), "{engine}");
        assert_eq!(index.meta(b"/k").unwrap(), Some(meta.clone()), "{engine}");
        assert_eq!(
            index.state(b"u/1").unwrap().as_deref(),
            Some(&b"upload"[..]),
            "{engine}"
        );
        // A batch with an invalid record changes nothing.
        let invalid = Record::new(vec![String::new()], false, None);
        assert!(index
            .apply(&[Change::StateDelete(b"u/1"), Change::Record(b"/k", &invalid)])
            .is_err());
        assert!(
            index.state(b"u/1").unwrap().is_some(),
            "{engine}: nothing of a refused batch"
        );
        index
            .apply(&[Change::Remove(b"/k"), Change::StateDelete(b"u/1")])
            .unwrap();
        assert_eq!(index.get(b"/k").unwrap(), None, "{engine}");
        assert_eq!(
            index.meta(b"/k").unwrap(),
            None,
            "{engine}: metadata goes with its record"
        );
        assert_eq!(index.state(b"u/1").unwrap(), None, "{engine}");
        assert_eq!(index.get(b"/never").unwrap(), None, "{engine}");
    }
}

#[test]
fn scans_run_in_byte_order_within_prefix_and_start() {
    for (engine, index, _dir) in engines("scan") {
        let keys: [&[u8]; 8] = [
            b"/a/1",
            b"/a/2",
            b"/a/3",
            b"/a/\xff",
            b"/a\x00",
            b"/b/1",
            b"\x00",
            b"\xff\xff",
        ];
        for key in keys {
            index.put(key, &live("v")).unwrap();
        }
        let view = index.view();
        assert_eq!(
            keys_of(&view, b"/a/", b"/a/2"),
            [&b"/a/2"[..], b"/a/3", b"/a/\xff"],
            "{engine}"
        );
        let all = keys_of(&view, b"", b"");
        let mut sorted: Vec<Vec<u8>> = keys.iter().map(|key| key.to_vec()).collect();
        sorted.sort();
        assert_eq!(all, sorted, "{engine}: byte order");
        // Bounded: where the scan resumes.
        let mut visited = 0;
        let next = view
            .scan_bounded(b"/a/", b"", 2, |_, _| {
                visited += 1;
                true
            })
            .unwrap();
        assert_eq!((visited, next.as_deref()), (2, Some(&b"/a/3"[..])), "{engine}");
        let declined = view
            .scan_bounded(b"", b"", usize::MAX, |key, _| key < &b"/b"[..])
            .unwrap();
        assert_eq!(declined.as_deref(), Some(&b"/b/1"[..]), "{engine}: the declined key");
        let end = view.scan_bounded(b"/b/", b"", 5, |_, _| true).unwrap();
        assert_eq!(end, None, "{engine}: nothing left");
        assert_eq!(
            keys_of(&view, b"\xff", b""),
            [b"\xff\xff".to_vec()],
            "{engine}: an all-0xff prefix"
        );
    }
}

#[test]
fn scans_cross_batch_boundaries() {
    for (engine, index, _dir) in engines("batches") {
        let count = 2 * BATCH_RECORDS_MAX / 10 + 3;
        let keys: Vec<Vec<u8>> = (0..count).map(|i| format!("/k/{i:06}").into_bytes()).collect();
        let record = live("v");
        index
            .put_batch(keys.iter().map(|key| (key.as_slice(), &record)))
            .unwrap();
        let view = index.view();
        assert_eq!(keys_of(&view, b"/k/", b""), keys, "{engine}");
        let next = view.scan_bounded(b"/k/", b"", 1500, |_, _| true).unwrap();
        assert_eq!(next, Some(keys[1500].clone()), "{engine}");
        let mut states = Vec::new();
        for i in 0..1203 {
            index
                .apply(&[Change::StatePut(format!("p/{i:05}").as_bytes(), b"x")])
                .unwrap();
        }
        index
            .scan_state(b"p/", b"p/00100", 1100, |key, _| {
                states.push(key.to_vec());
                true
            })
            .unwrap();
        assert_eq!(states.len(), 1100, "{engine}");
        assert_eq!(states[0], b"p/00100", "{engine}");
        assert_eq!(states[1099], b"p/01199", "{engine}");
    }
}

#[test]
fn clear_removes_every_record_and_new_ones_stay() {
    for (engine, index, _dir) in engines("clear") {
        assert_eq!(index.clear().unwrap(), 0, "{engine}: an empty index");
        // More than a write batch, and keys at both ends of the byte order.
        let count = 3 * BATCH_RECORDS_MAX + 7;
        let mut keys: Vec<Vec<u8>> = (0..count).map(|i| format!("/k/{i}").into_bytes()).collect();
        keys.extend([
            b"".to_vec(),
            b"\x00".to_vec(),
            b"\xff".to_vec(),
            b"\xff\xff\xff".to_vec(),
        ]);
        let record = live("v");
        for chunk in keys.chunks(BATCH_RECORDS_MAX) {
            index
                .put_batch(chunk.iter().map(|key| (key.as_slice(), &record)))
                .unwrap();
        }
        index.apply(&[Change::Meta(b"/k/1", &Meta::default())]).unwrap();
        assert_eq!(index.clear().unwrap(), keys.len() as u64, "{engine}");
        for key in [&keys[0], &keys[count], &keys[count + 3]] {
            assert_eq!(index.get(key).unwrap(), None, "{engine} {key:?}");
        }
        assert_eq!(index.meta(b"/k/1").unwrap(), None, "{engine}: metadata cleared too");
        assert!(keys_of(&index.view(), b"", b"").is_empty(), "{engine}");
        assert_eq!(index.clear().unwrap(), 0, "{engine}: cleared twice");
        // Records written after a clear are kept.
        index.put(b"/k/1", &record).unwrap();
        index.put(b"\xff\xff\xff\xff", &record).unwrap();
        assert_eq!(index.get(b"/k/1").unwrap(), Some(record.clone()), "{engine}");
        assert_eq!(index.clear().unwrap(), 2, "{engine}");
    }
}

#[test]
fn prefix_end_skips_max_bytes() {
    assert_eq!(prefix_end(b"/a"), Some(b"/b".to_vec()));
    assert_eq!(prefix_end(b"/a\xff"), Some(b"/b".to_vec()));
    assert_eq!(prefix_end(b"\xff"), None);
}

/// Two masters (two opens of one database) over PostgreSQL.
fn two_masters(name: &str) -> Option<(Index, Index)> {
    let url = schema_url(&postgres_url()?, name);
    let open = || Index::open(Path::new(&url), &options(Role::Serve)).unwrap();
    Some((open(), open()))
}

#[test]
fn key_locks_hold_across_masters_and_outlive_their_sessions() {
    let Some(url) = postgres_url() else { return };
    // Sessions are ended database-wide: a database of this test's own.
    let (mut admin, database) = own_database(&url, "locks");
    let url = database_url(&url, &database);
    let open = || Index::open(Path::new(&url), &options(Role::Serve)).unwrap();
    let (a, b) = (open(), open());
    let (a_locks, b_locks) = (a.postgres().unwrap(), b.postgres().unwrap());
    let token = a_locks.try_lock_key(b"/k").unwrap().expect("a free key");
    assert_eq!(b_locks.try_lock_key(b"/k").unwrap(), None, "held by the other master");
    assert!(
        b_locks.try_lock_key(b"/other").unwrap().is_some(),
        "other keys are free"
    );
    a_locks.unlock_key(b"/k", token);
    let token = b_locks.try_lock_key(b"/k").unwrap().expect("released");
    // A lock is a lease, not a session's: ending every session (a restart,
    // a failover) leaves it held, and its holder's write goes through.
    let ended = admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&database],
        )
        .unwrap();
    assert!(ended >= 2, "both masters' sessions ended: {ended}");
    assert_eq!(a_locks.try_lock_key(b"/k").unwrap(), None, "still held");
    // A read replaces the dead pooled connection (a write is not retried).
    assert_eq!(b.get(b"/k").unwrap(), None);
    assert!(b.put(b"/k", &live("v")).is_ok(), "the holder writes");
    // A lease that ran out (its master could not renew it) is never
    // written through, and the key is free for another master.
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let expired = client
        .execute("UPDATE mkv_key_leases SET expires = now() - interval '1 hour'", &[])
        .unwrap();
    assert!(expired >= 1, "{expired}");
    let written = b.put(b"/k", &live("w"));
    assert!(
        matches!(written, Err(IndexError::Unavailable(_))),
        "a write under a lost lock: {written:?}"
    );
    assert_eq!(b.get(b"/k").unwrap(), Some(live("v")), "nothing was written");
    assert!(
        a_locks.try_lock_key(b"/k").unwrap().is_some(),
        "the other master takes it"
    );
    b_locks.release_key(b"/k", token);
    assert!(b.put(b"/unlocked", &live("v")).is_ok(), "keys not locked are written");
    drop((a, b, client));
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .unwrap();
}

#[test]
fn changes_reach_the_other_masters_listener_before_its_next_confirmation() {
    let Some((a, b)) = two_masters("listen") else { return };
    let (sender, events) = mpsc::channel();
    std::thread::spawn(move || {
        b.postgres().unwrap().listen(Duration::from_millis(20), |event| {
            let _ = sender.send(event);
        })
    });
    let next = || events.recv_timeout(Duration::from_secs(10)).expect("an event");
    assert_eq!(next(), Event::Everything, "a new listener forgets everything first");
    assert!(matches!(next(), Event::Confirmed(_)));
    a.put(b"/changed", &live("v")).unwrap();
    a.delete(b"/gone").unwrap();
    let committed = std::time::Instant::now();
    let mut changed = Vec::new();
    loop {
        match next() {
            Event::Changed(key) => changed.push(key),
            Event::Confirmed(sent) if sent > committed => break,
            _ => {}
        }
    }
    assert_eq!(changed, [b"/changed".to_vec(), b"/gone".to_vec()]);
}

#[test]
fn an_offline_command_is_refused_while_a_master_serves() {
    let Some(url) = postgres_url() else { return };
    // Roles are database-wide: a database of this test's own.
    let (_admin, database) = own_database(&url, "roles");
    let url = database_url(&url, &database);
    let serving = Index::open(Path::new(&url), &options(Role::Serve)).unwrap();
    let offline = Index::open(Path::new(&url), &options(Role::Offline));
    assert!(matches!(offline, Err(IndexError::Locked(_))), "{:?}", offline.err());
    drop(serving);
    let offline = Index::open(Path::new(&url), &options(Role::Offline)).unwrap();
    let serving = Index::open(Path::new(&url), &options(Role::Serve));
    assert!(matches!(serving, Err(IndexError::Locked(_))), "{:?}", serving.err());
    drop(offline);
}

/// Found by review: an offline command held the index by its session's
/// role lock alone, and wrote on other sessions; once that session died
/// (terminated, or ended by `idle_session_timeout`), a master started and
/// served beside a rebuild that ran on and exited 0.
#[test]
fn an_offline_command_whose_sessions_died_keeps_masters_out_while_its_lease_lives() {
    let Some(url) = postgres_url() else { return };
    let (mut admin, database) = own_database(&url, "offline_fence");
    let url = database_url(&url, &database);
    let offline = Index::open(Path::new(&url), &options(Role::Offline)).unwrap();
    let value = live("v");
    offline.put_batch([(&b"/a"[..], &value)]).unwrap();
    let ended = admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&database],
        )
        .unwrap();
    assert!(ended >= 1, "the command's sessions ended: {ended}");
    let serving = Index::open(Path::new(&url), &options(Role::Serve));
    assert!(
        matches!(serving, Err(IndexError::Locked(_))),
        "a master starts beside the command: {:?}",
        serving.err()
    );
    // The command goes on writing, on new sessions (the first write finds
    // its pooled session dead), and keeps its lease past the lease's length.
    let _ = offline.put_batch([(&b"/b"[..], &value)]);
    offline.put_batch([(&b"/b"[..], &value)]).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    offline.put_batch([(&b"/c"[..], &value)]).unwrap();
    let serving = Index::open(Path::new(&url), &options(Role::Serve));
    assert!(
        matches!(serving, Err(IndexError::Locked(_))),
        "a master starts beside the command: {:?}",
        serving.err()
    );
    // Its lease gone (as when its renewals failed past it): its writes
    // fail, and then a master may start.
    let mut session = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    session
        .execute(
            "DELETE FROM mkv_masters WHERE origin LIKE 'offline:%' AND origin NOT LIKE '%:fence'",
            &[],
        )
        .unwrap();
    assert!(offline.put_batch([(&b"/d"[..], &value)]).is_err());
    assert!(offline.clear().is_err());
    let serving = Index::open(Path::new(&url), &options(Role::Serve)).unwrap();
    assert_eq!(serving.get(b"/c").unwrap(), Some(value));
    assert_eq!(serving.get(b"/d").unwrap(), None);
    drop((serving, offline));
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .unwrap();
}

/// Found by the next review: a master that found an offline command's
/// lease live (one just killed leaves it to lapse) gave up at once, where
/// an offline command waits for masters' leases.
#[test]
fn a_master_waits_for_a_lapsing_offline_lease_rather_than_give_up() {
    let Some(url) = postgres_url() else { return };
    let (mut admin, database) = own_database(&url, "offline_wait");
    let url = database_url(&url, &database);
    drop(Index::open(Path::new(&url), &options(Role::Serve)).unwrap());
    let mut session = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    session
        .batch_execute(
            "INSERT INTO mkv_masters VALUES ('offline:killed', now() + interval '1 second'), \
             ('offline:killed:fence', '-infinity')",
        )
        .unwrap();
    let began = std::time::Instant::now();
    let serving = Index::open(Path::new(&url), &options(Role::Serve));
    assert!(serving.is_ok(), "{:?}", serving.err());
    assert!(
        began.elapsed() >= Duration::from_secs(1),
        "it waited for the lease to lapse"
    );
    drop(serving);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .unwrap();
}

#[test]
fn after_the_database_drops_its_sessions_reads_and_locks_reconnect_at_once() {
    let Some(url) = postgres_url() else { return };
    // Sessions are ended database-wide: a database of this test's own.
    let (mut admin, database) = own_database(&url, "restart");
    let index = Index::open(Path::new(&database_url(&url, &database)), &options(Role::Serve)).unwrap();
    index.put(b"/k", &live("v")).unwrap();
    assert!(index.postgres().unwrap().try_lock_key(b"/locked").unwrap().is_some());
    // Pool several connections: concurrent readers.
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| index.get(b"/k").unwrap());
        }
    });
    let ended = admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&database],
        )
        .unwrap();
    assert!(ended >= 3, "pooled, lock and role sessions ended: {ended}");
    // Every pooled connection is dead; the first read still answers.
    assert_eq!(index.get(b"/k").unwrap(), Some(live("v")));
    assert_eq!(index.get(b"/k").unwrap(), Some(live("v")));
    assert!(
        index.postgres().unwrap().try_lock_key(b"/other").unwrap().is_some(),
        "locks are taken on a new session"
    );
    // The lock taken before is a lease, not the session's: still held.
    assert!(index.put(b"/locked", &live("v")).is_ok());
    drop(index);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .unwrap();
}

#[test]
fn a_bounded_scan_stops_at_its_end_under_a_generic_plan() {
    let Some(url) = postgres_url() else { return };
    let url = schema_url(&url, "generic");
    let index = Index::open(Path::new(&url), &options(Role::Serve)).unwrap();
    let records: Vec<(Vec<u8>, Record)> = (0..3000)
        .map(|i| (format!("/z/{i:05}").into_bytes(), live("v")))
        .collect();
    index
        .put_batch(records.iter().map(|(key, record)| (key.as_slice(), record)))
        .unwrap();
    index.put(b"/a/1", &live("v")).unwrap();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .batch_execute(&format!(
            "SET plan_cache_mode = force_generic_plan; ANALYZE mkv_records; \
             PREPARE scan(bytea, bytea, bigint) AS {}",
            super::pg::scan_sql("mkv_records", "record", true)
        ))
        .unwrap();
    let plan: Vec<String> = client
        .query(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) \
             EXECUTE scan('\\x2f612f'::bytea, '\\x2f622f'::bytea, 1000)",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("rows=1 loops=1"), "the prefix's one row: {plan}");
    assert!(
        !plan.contains("Rows Removed by Filter"),
        "the scan reads past its end: {plan}"
    );
}
