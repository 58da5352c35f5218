//! The maintenance commands against real volumes: `rebuild` regrows the
//! same records from the volumes, `rebalance` moves values when volumes
//! come and go (and converges when interrupted), `REBALANCE /key` moves one
//! key, and failures are reported, counted and show in the exit code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::{fetch, mkv, request, value, Cluster};

/// Keys of mixed sizes: a few larger than a 1 MiB copy piece, some larger
/// than the 64 KiB first write, most small; one whose base64 name holds `/`
/// (a nested directory). A key whose base64 holds `//` can no longer be
/// written (its file would be another key's: `safety.rs`); rebuild's
/// putting back of merged slashes in names an older master wrote is covered
/// by `rebuild::tests::merged_slashes_are_put_back`.
fn write_keys(cluster: &Cluster, count: usize) -> Vec<(String, Vec<u8>)> {
    let mut keys: Vec<(String, usize)> = (0..count)
        .map(|i| {
            let size = match i % 40 {
                0 => 1_200_000 + i,
                1..=4 => 70_000 + i,
                _ => 1 + i * 37 % 3000,
            };
            (format!("/m/key-{i}"), size)
        })
        .collect();
    keys.push(("/s/kz%FC".into(), 10));
    keys.into_iter()
        .enumerate()
        .map(|(seed, (key, size))| {
            let body = value(size, seed as u64);
            assert_eq!(request("PUT", &cluster.url(&key), Some(&body)).status, 201, "{key}");
            (key, body)
        })
        .collect()
}

/// What the master says about the keys: the listing of all live keys, and
/// each key's volumes and md5.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    listing: Vec<u8>,
    records: BTreeMap<String, (Option<String>, Option<String>)>,
}

fn snapshot(cluster: &Cluster, keys: &[(String, Vec<u8>)]) -> Snapshot {
    let listing = request("GET", &cluster.url("/?list"), None);
    assert_eq!(listing.status, 200);
    let records = keys
        .iter()
        .map(|(key, _)| {
            let reply = request("HEAD", &cluster.url(key), None);
            assert_eq!(reply.status, 302, "{key}");
            let header = |name| reply.header(name).map(str::to_owned);
            (key.clone(), (header("key-volumes"), header("content-md5")))
        })
        .collect();
    Snapshot {
        listing: listing.body,
        records,
    }
}

/// Every key reads back byte-exact through the master, and is balanced.
fn assert_readable_and_balanced(cluster: &Cluster, keys: &[(String, Vec<u8>)]) {
    for (key, body) in keys {
        let reply = request("HEAD", &cluster.url(key), None);
        assert_eq!(reply.header("key-balance"), Some("balanced"), "{key}");
        let fetched = fetch(&cluster.url(key));
        assert_eq!(fetched.status, 200, "{key}");
        assert!(fetched.body == *body, "{key}: the value changed");
    }
}

/// `mkv -db <the cluster's index> -volumes <volumes> <the cluster's flags> <args> <command>`.
fn maintenance(cluster: &Cluster, volumes: &str, args: &[&str], command: &str) -> Output {
    mkv()
        .args(["-db", &cluster.db().display().to_string(), "-volumes", volumes])
        .args(&cluster.extra)
        .args(args)
        .arg(command)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn assert_succeeds(output: &Output) {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// Stop the master and start it again (on a new port: the old one may be
/// held by a closing connection) over `volumes`, by changing
/// `cluster.volumes` for the restart.
fn restart_master(cluster: &mut Cluster) {
    cluster.kill_master();
    cluster.master = None;
    cluster.start_master();
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name() != ".nginx")
        .map(|entry| {
            if entry.path().is_dir() {
                count_files(&entry.path())
            } else {
                1
            }
        })
        .sum()
}

/// The first directory in `dir` (nginx's own state aside).
fn first_subdirectory(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .find(|entry| entry.file_name() != ".nginx" && entry.path().is_dir())
        .unwrap_or_else(|| panic!("no directory in {}", dir.display()))
        .path()
}

fn files_on_all(cluster: &Cluster) -> usize {
    cluster.volumes.iter().map(|volume| count_files(&volume.dir)).sum()
}

#[test]
fn rebuild_and_rebalance_keep_every_record_and_value() {
    let mut cluster = Cluster::start(5, &[]);
    let keys = write_keys(&cluster, 200);
    let original = snapshot(&cluster, &keys);
    let all_five = cluster.volume_list();

    // Rebuild into a fresh index: the same keys, volume lists and md5s.
    cluster.kill_master();
    std::fs::rename(cluster.db(), cluster.dir.path().join("written-index")).unwrap();
    assert_succeeds(&maintenance(&cluster, &all_five, &["--md5"], "rebuild"));
    restart_master(&mut cluster);
    assert_eq!(snapshot(&cluster, &keys), original);

    // A dry run prints the plan and moves nothing.
    let three: Vec<String> = cluster.volumes[..3].iter().map(|volume| volume.host()).collect();
    let three = three.join(",");
    cluster.kill_master();
    let files = files_on_all(&cluster);
    let plan = maintenance(&cluster, &three, &["--dry-run"], "rebalance");
    assert_succeeds(&plan);
    let planned = String::from_utf8(plan.stdout).unwrap();
    assert!(planned.lines().count() > keys.len() / 2, "{planned}");
    assert!(
        planned.lines().all(|line| line.contains('\t') && line.contains(" -> ")),
        "{planned}"
    );
    assert_eq!(files_on_all(&cluster), files);

    // Rebalance to three volumes, killed as soon as the first copy lands,
    // then run again: it converges.
    let mut run = mkv()
        .args(["-db", &cluster.db().display().to_string(), "-volumes", &three])
        .args(["--concurrency", "1", "rebalance"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while files_on_all(&cluster) == files && Instant::now() < deadline {
        assert!(
            run.try_wait().unwrap().is_none(),
            "rebalance ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        run.try_wait().unwrap().is_none(),
        "rebalance ended before it was killed"
    );
    run.kill().unwrap();
    run.wait().unwrap();
    let rerun = maintenance(&cluster, &three, &[], "rebalance");
    assert_succeeds(&rerun);
    let spare = cluster.volumes.split_off(3);
    restart_master(&mut cluster);
    assert_readable_and_balanced(&cluster, &keys);

    // Back to five volumes: the original records, every value, no copy too many.
    cluster.kill_master();
    cluster.volumes.extend(spare);
    assert_succeeds(&maintenance(&cluster, &all_five, &[], "rebalance"));
    restart_master(&mut cluster);
    assert_eq!(snapshot(&cluster, &keys), original);
    assert_readable_and_balanced(&cluster, &keys);
    assert_eq!(files_on_all(&cluster), keys.len() * 3);
}

#[test]
fn rebuild_reports_stray_files_and_down_volumes() {
    let mut cluster = Cluster::start(3, &["-replicas", "2"]);
    let keys = write_keys(&cluster, 20);

    // The running master holds the index: a clear error, and no harm done.
    for command in ["rebuild", "rebalance"] {
        let output = maintenance(&cluster, &cluster.volume_list(), &[], command);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command}");
        assert!(stderr.contains("locked by another process"), "{command}: {stderr}");
        assert!(!stderr.contains("panicked"), "{command}: {stderr}");
    }
    assert_eq!(request("GET", &cluster.url(&keys[0].0), None).status, 302);

    // A stray file at the top and one in a shard directory; a volume down.
    cluster.kill_master();
    let root = &cluster.volumes[0].dir;
    std::fs::write(root.join("notes.txt"), b"stray").unwrap();
    let second = first_subdirectory(&first_subdirectory(&first_subdirectory(root)));
    std::fs::write(second.join("not-a-key"), b"stray").unwrap();
    let down = cluster.volumes[2].host();
    cluster.volumes[2].stop();

    let output = maintenance(&cluster, &cluster.volume_list(), &["--allow-down-volumes"], "rebuild");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("notes.txt") && stderr.contains("not-a-key"), "{stderr}");
    assert!(stderr.contains(&down), "{stderr}");
    assert!(
        stderr.contains("2 stray files or names, 1 unreadable directories"),
        "{stderr}"
    );

    // What the other volumes hold is indexed: with two replicas on three
    // volumes, every key has a copy on one of them.
    restart_master(&mut cluster);
    for (key, body) in &keys {
        let reply = request("HEAD", &cluster.url(key), None);
        assert!(!reply.header("key-volumes").unwrap().contains(&down), "{key}");
        assert!(fetch(&cluster.url(key)).body == *body, "{key}");
    }
}

#[test]
fn rebalance_request_moves_one_key() {
    let mut cluster = Cluster::start(3, &["-replicas", "1", "-subvolumes", "1"]);
    let keys: Vec<String> = (0..40).map(|i| format!("/one/{i}")).collect();
    for key in &keys {
        assert_eq!(request("PUT", &cluster.url(key), Some(key.as_bytes())).status, 201);
    }
    // The master now runs without the third volume, which still serves:
    // the keys on it are unbalanced.
    let spare = cluster.volumes.pop().unwrap();
    restart_master(&mut cluster);
    let unbalanced: Vec<&String> = keys
        .iter()
        .filter(|key| request("HEAD", &cluster.url(key), None).header("key-balance") == Some("unbalanced"))
        .collect();
    assert!(unbalanced.len() >= 3, "{unbalanced:?}");
    let files = count_files(&spare.dir);

    let moved = unbalanced[0];
    // A reader redirected just before the move is on its way to the old copy.
    let before = request("GET", &cluster.url(moved), None);
    let old_location = before.header("location").unwrap().to_owned();
    assert_eq!(request("REBALANCE", &cluster.url(moved), None).status, 204);
    let late_reader = request("GET", &old_location, None);
    assert_eq!(late_reader.status, 200, "the old copy outlives the rewrite");
    assert_eq!(late_reader.body, moved.as_bytes());
    let reply = request("HEAD", &cluster.url(moved), None);
    assert_eq!(reply.header("key-balance"), Some("balanced"));
    assert_ne!(reply.header("key-volumes"), Some(spare.host().as_str()));
    assert_eq!(fetch(&cluster.url(moved)).body, moved.as_bytes());
    let deleted = crate::cluster::eventually(std::time::Duration::from_secs(10), || {
        count_files(&spare.dir) == files - 1
    });
    assert!(deleted, "the old copy is deleted once its grace is over");

    // A key whose only copy is gone cannot move, and its record stays.
    let lost = unbalanced[1];
    let path = mkv::placement::key2path(lost.as_bytes());
    std::fs::remove_file(spare.dir.join(&path[1..])).unwrap();
    assert_eq!(request("REBALANCE", &cluster.url(lost), None).status, 400);
    let reply = request("HEAD", &cluster.url(lost), None);
    assert_eq!(reply.header("key-volumes"), Some(spare.host().as_str()));

    // A copy that does not match the recorded md5 is not spread: no copy
    // is left on the target, and the record stays.
    let corrupt = unbalanced[2];
    let path = mkv::placement::key2path(corrupt.as_bytes());
    std::fs::write(spare.dir.join(&path[1..]), b"bit rot").unwrap();
    let all_files = |cluster: &Cluster| count_files(&spare.dir) + files_on_all(cluster);
    let files = all_files(&cluster);
    assert_eq!(request("REBALANCE", &cluster.url(corrupt), None).status, 400);
    assert!(
        cluster.master_log().contains("does not match the recorded md5"),
        "{}",
        cluster.master_log()
    );
    let reply = request("HEAD", &cluster.url(corrupt), None);
    assert_eq!(reply.header("key-volumes"), Some(spare.host().as_str()));
    assert_eq!(all_files(&cluster), files);

    assert_eq!(
        request("REBALANCE", &cluster.url(moved), None).status,
        204,
        "already placed"
    );
    assert_eq!(request("REBALANCE", &cluster.url("/one/missing"), None).status, 404);
}
