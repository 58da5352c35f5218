//! Start-up mistakes are messages and exit codes, not panics; the log says
//! which driver each reactor runs; the warm fill of the record cache at
//! start never makes a read answer other than the index would.

use std::process::Stdio;
use std::time::Duration;

use crate::cluster::{eventually, fetch, free_port, md5_hex, mkv, request, value, Cluster};

fn fails_with(args: &[&str], needle: &str) {
    let output = mkv().args(args).stdin(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{args:?} succeeded");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}

#[test]
fn bad_command_lines_explain_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db").display().to_string();
    fails_with(&["-volumes", "127.0.0.1:1", "server"], "missing -db");
    fails_with(&["-db", &db, "server"], "missing -volumes");
    fails_with(
        &["-db", &db, "-volumes", "127.0.0.1:1,127.0.0.1:2", "server"],
        "needs at least that many volumes",
    );
    fails_with(
        &[
            "-db",
            &db,
            "-volumes",
            "127.0.0.1:1",
            "-replicas",
            "1",
            "-voltimeout",
            "soon",
            "server",
        ],
        "not a duration",
    );
    fails_with(
        &["-db", &db, "-volumes", "127.0.0.1:1", "-replicas", "1", "explode"],
        "invalid value",
    );
}

#[test]
fn locked_index_and_busy_port_are_clear_errors() {
    let cluster = Cluster::start(3, &[]);
    let port = free_port().to_string();
    let db = cluster.db().display().to_string();
    fails_with(
        &["-db", &db, "-volumes", &cluster.volume_list(), "-port", &port, "server"],
        "locked by another process",
    );

    let other = tempfile::tempdir().unwrap();
    let other_db = other.path().join("db").display().to_string();
    let busy = cluster.port().to_string();
    fails_with(
        &[
            "-db",
            &other_db,
            "-volumes",
            &cluster.volume_list(),
            "-port",
            &busy,
            "server",
        ],
        "cannot listen on port",
    );
}

#[test]
fn log_names_each_reactors_driver() {
    let cluster = Cluster::start(3, &[]);
    let log = cluster.master_log();
    // monoio's own probe, which honours MONOIO_FORCE_LEGACY_DRIVER and sees a
    // seccomp that blocks io_uring (Docker's default), as the master does.
    let expected = if monoio::utils::detect_uring() {
        "io_uring"
    } else {
        "epoll"
    };
    if std::env::var("MONOIO_FORCE_LEGACY_DRIVER").is_ok_and(|value| value == "1") {
        assert_eq!(expected, "epoll", "the forced driver is epoll");
    }
    assert_eq!(log.matches(&format!("driver {expected}")).count(), 2, "{log}");
}

/// Keys the warm-fill tests seed straight into the index.
const WARM_SEEDED_KEYS: u64 = 40_000;
/// Keys the warm-fill tests write through the master (values on the volumes).
/// `/warm/real-*` sorts after `/warm/key-*`: the fill reaches them last.
const WARM_REAL_KEYS: u64 = 8;

/// Write `WARM_REAL_KEYS` values, seed `WARM_SEEDED_KEYS` records, restart
/// the master (its warm fill starts), at once delete one written key and
/// write another anew, and check every key while the fill runs and after it.
/// Returns the warm fill's log line.
fn restart_with_warm_fill_and_check_every_key(extra: &[&str]) -> String {
    let mut cluster = Cluster::start(3, extra);
    let real = |i: u64| format!("/warm/real-{i}");
    for i in 0..WARM_REAL_KEYS {
        assert_eq!(
            request("PUT", &cluster.url(&real(i)), Some(&value(1000, i))).status,
            201
        );
    }
    cluster.kill_master();
    let count = WARM_SEEDED_KEYS.to_string();
    let seeded = cluster.run_command(&["--count", &count, "--prefix", "/warm/key-"], "seed");
    assert!(seeded.status.success());
    let fills_before = cluster.master_log().matches("warm fill:").count();
    cluster.start_master();
    let (deleted, overwritten) = (real(3), real(4));
    assert_eq!(request("DELETE", &cluster.url(&deleted), None).status, 204);
    // A PUT of a live key is refused (as the original does): delete first.
    let new_value = value(2000, 99);
    assert_eq!(request("DELETE", &cluster.url(&overwritten), None).status, 204);
    assert_eq!(request("PUT", &cluster.url(&overwritten), Some(&new_value)).status, 201);
    let check_real = |cluster: &Cluster| {
        for i in 0..WARM_REAL_KEYS {
            let reply = fetch(&cluster.url(&real(i)));
            match i {
                3 => assert_eq!(reply.status, 404, "the deleted key came back"),
                4 => assert!(reply.status == 200 && reply.body == new_value, "the overwrite was lost"),
                _ => assert!(reply.status == 200 && reply.body == value(1000, i), "{}", real(i)),
            }
        }
    };
    let check_seeded = |cluster: &Cluster, step: usize| {
        for i in (0..WARM_SEEDED_KEYS).step_by(step) {
            let key = format!("/warm/key-{i}");
            let reply = request("GET", &cluster.url(&key), None);
            assert_eq!(reply.status, 302, "{key}");
            assert_eq!(
                reply.header("content-md5"),
                Some(md5_hex(key.as_bytes()).as_str()),
                "{key}"
            );
        }
    };
    // While the fill runs (on a quiet machine it may already be done).
    check_real(&cluster);
    check_seeded(&cluster, 97);
    let finished = || cluster.master_log().matches("warm fill:").count() > fills_before;
    assert!(
        eventually(Duration::from_secs(60), finished),
        "{}",
        cluster.master_log()
    );
    check_real(&cluster);
    check_seeded(&cluster, 1);
    let log = cluster.master_log();
    let line = log.lines().rev().find(|line| line.starts_with("warm fill:"));
    line.expect("a warm fill line").to_string()
}

#[test]
fn warm_fill_loads_the_index_and_never_serves_a_stale_answer() {
    let line = restart_with_warm_fill_and_check_every_key(&[]);
    assert!(line.ends_with("the index ended"), "{line}");
    // Every live key: the seeded ones and the written ones but the deleted
    // one, less any the reads after the restart cached first.
    let loaded: u64 = line["warm fill: ".len()..].split(' ').next().unwrap().parse().unwrap();
    assert!(
        loaded > WARM_SEEDED_KEYS / 2 && loaded < WARM_SEEDED_KEYS + WARM_REAL_KEYS,
        "{line}"
    );
}

#[test]
fn warm_fill_stops_at_the_cache_budget_and_reads_past_it_still_answer() {
    // 1 MiB over 32 shards: each shard gets its 64 KiB minimum, 2 MiB in
    // all, about 27,000 entries: fewer than the seeded keys.
    let line = restart_with_warm_fill_and_check_every_key(&["--cache-mb", "1"]);
    assert!(line.ends_with("the cache is full"), "{line}");
}
