//! Start-up mistakes are messages and exit codes, not panics; the log says
//! which driver each reactor runs.

use std::process::Stdio;

use crate::cluster::{free_port, mkv, Cluster};

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
