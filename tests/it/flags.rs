//! Every duration and count flag is checked against a named range before
//! anything starts: a value out of range is a message and exit 2, never a
//! master that busy-loops (`--health-interval 0s` spun a core) or a run
//! that misbehaves.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::cluster::mkv;

#[test]
fn durations_and_counts_out_of_range_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index").display().to_string();
    let refused: &[(&[&str], &str)] = &[
        (&["--health-interval", "0s"], "--health-interval"),
        (&["--health-interval", "2h"], "--health-interval"),
        (&["-voltimeout", "0s"], "-voltimeout"),
        (&["-voltimeout", "1h"], "-voltimeout"),
        (&["--body-timeout", "1ms"], "--body-timeout"),
        (&["--shutdown-timeout", "1000h"], "--shutdown-timeout"),
        (&["--coherence-ms", "3600000"], "--coherence-ms"),
        (&["--cache-mb", "99999999"], "--cache-mb"),
        (&["--block-cache-mb", "99999999"], "--block-cache-mb"),
        (&["--body-rate-min", "99999999999999"], "--body-rate-min"),
        (&["--orphan-grace", "100000h"], "--orphan-grace"),
        (&["--s3-upload-expiry", "100000h"], "--s3-upload-expiry"),
        (&["--s3-upload-expiry", "1ms"], "--s3-upload-expiry"),
        (&["--concurrency", "0"], "--concurrency"),
        (&["--threads", "0"], "--threads"),
    ];
    for (flags, named) in refused {
        let mut child = mkv()
            .args(["-db", &db, "-volumes", "127.0.0.1:9", "-replicas", "1"])
            .args(*flags)
            .arg("server")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A value that is taken starts a master, which never exits by itself.
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{flags:?} was taken: the master started");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(
            stderr.contains(named) && stderr.contains("must be"),
            "{flags:?}: {stderr}"
        );
    }
    assert!(!dir.path().join("index").exists(), "nothing was opened");
}
