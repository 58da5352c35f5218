//! `mkv verify` against real volumes, the master stopped: it finds a
//! deleted replica, a corrupted one (`--md5`), orphans and unreachable
//! volumes; `--repair` restores replicas byte-exact from a good copy and
//! removes old orphans only (never a copy of a recorded key, nor anything
//! when the index holds no live record); a rerun finds nothing;
//! `--purge-unlinked` hard-deletes old soft-deleted keys only. Records
//! naming fewer volumes than `-replicas` are reported.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, SystemTime};

use mkv::placement::{entry_host, entry_prefix, key2path};

use crate::cluster::{fetch, mkv, request, value, Cluster};

/// Older than any grace a test uses: the planted orphans' age.
const OLD: Duration = Duration::from_secs(2 * 3600);

/// `mkv <the cluster's index and volumes> <args> verify`.
fn verify(cluster: &Cluster, args: &[&str]) -> Output {
    cluster.run_command(args, "verify")
}

/// The run's stderr, after checking its exit code.
fn expect(output: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// PUT `count` keys (one longer than a copy piece); the master keeps running.
fn write_keys(cluster: &Cluster, count: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let size = if i == 0 { 1_500_000 } else { 100 + i * 50 };
            let key = format!("/v/key-{i}");
            let body = value(size, i as u64);
            assert_eq!(request("PUT", &cluster.url(&key), Some(&body)).status, 201, "{key}");
            (key, body)
        })
        .collect()
}

/// The files holding `key`'s replicas, from the master's `Key-Volumes`.
fn replica_files(cluster: &Cluster, key: &str) -> Vec<PathBuf> {
    let reply = request("HEAD", &cluster.url(key), None);
    let entries = reply.header("key-volumes").expect("a live key").to_owned();
    entries.split(',').map(|entry| file_at(cluster, entry, key)).collect()
}

/// Where volume entry `entry` keeps the file of `key`.
fn file_at(cluster: &Cluster, entry: &str, key: &str) -> PathBuf {
    let volume = cluster
        .volumes
        .iter()
        .find(|volume| volume.host() == entry_host(entry))
        .expect("a volume of the cluster");
    let relative = format!("{}{}", entry_prefix(entry), key2path(key.as_bytes()));
    volume.dir.join(&relative[1..])
}

/// Write `bytes` at `path` (directories too), last modified `age` ago.
fn plant(path: &PathBuf, bytes: &[u8], age: Duration) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

#[test]
fn verify_repairs_missing_and_corrupt_replicas_byte_exact() {
    let mut cluster = Cluster::start(3, &["-replicas", "2"]);
    let keys = write_keys(&cluster, 12);
    let (big, big_body) = &keys[0];
    let (small, small_body) = &keys[5];
    let big_files = replica_files(&cluster, big);
    let small_files = replica_files(&cluster, small);
    let (last, last_body) = &keys[7];
    let last_files = replica_files(&cluster, last);
    cluster.kill_master();
    expect(&verify(&cluster, &[]), 0);

    // A deleted replica: reported missing, restored, then nothing to find.
    std::fs::remove_file(&big_files[1]).unwrap();
    let found = expect(&verify(&cluster, &[]), 1);
    assert!(
        found.contains(&format!("{big:?} on ")) && found.contains("missing"),
        "{found}"
    );
    assert!(found.contains("23 ok, 1 missing"), "{found}");
    assert!(!big_files[1].exists(), "verify without --repair changes nothing");
    let repaired = expect(&verify(&cluster, &["--repair"]), 0);
    assert!(repaired.contains("1 repaired"), "{repaired}");
    assert!(
        std::fs::read(&big_files[1]).unwrap() == *big_body,
        "restored byte-exact"
    );
    let clean = expect(&verify(&cluster, &[]), 0);
    assert!(
        clean.contains("24 ok, 0 missing, 0 wrong size, 0 corrupt, 0 unreachable"),
        "{clean}"
    );

    // Same size, other bytes: only a read-back sees it, and only the
    // good copy is copied over it.
    let mut rotten = small_body.clone();
    rotten[7] ^= 0xff;
    std::fs::write(&small_files[0], &rotten).unwrap();
    expect(&verify(&cluster, &[]), 0);
    let found = expect(&verify(&cluster, &["--md5"]), 1);
    assert!(
        found.contains("1 corrupt") && found.contains(&format!("{small:?} on ")),
        "{found}"
    );
    let repaired = expect(&verify(&cluster, &["--md5", "--repair"]), 0);
    assert!(repaired.contains("1 repaired"), "{repaired}");
    assert!(std::fs::read(&small_files[0]).unwrap() == *small_body);
    assert!(std::fs::read(&small_files[1]).unwrap() == *small_body);
    expect(&verify(&cluster, &["--md5"]), 0);

    // A short copy is the wrong size; every value still reads back.
    std::fs::write(&small_files[1], b"short").unwrap();
    let found = expect(&verify(&cluster, &["--repair"]), 0);
    assert!(
        found.contains("1 wrong size") && found.contains("1 repaired"),
        "{found}"
    );
    cluster.start_master();
    for (key, body) in &keys {
        assert!(fetch(&cluster.url(key)).body == *body, "{key}");
    }

    // The only copy left is corrupt: a HEAD cannot tell, but the copy is
    // checked against the recorded md5 on the way and never lands.
    cluster.kill_master();
    let mut rotten = last_body.clone();
    rotten[0] ^= 0xff;
    std::fs::write(&last_files[0], &rotten).unwrap();
    std::fs::remove_file(&last_files[1]).unwrap();
    let refused = expect(&verify(&cluster, &["--repair"]), 1);
    assert!(
        refused.contains("repair failed") && refused.contains("0 repaired"),
        "{refused}"
    );
    assert!(!last_files[1].exists(), "a bad copy is never spread");
    let refused = expect(&verify(&cluster, &["--md5", "--repair"]), 1);
    assert!(refused.contains("1 keys with no good copy"), "{refused}");
    assert!(refused.contains(&format!("{last:?}: no good copy")), "{refused}");
    assert!(!last_files[1].exists() && std::fs::read(&last_files[0]).unwrap() == rotten);
}

#[test]
fn verify_never_counts_an_unreachable_volume_as_missing() {
    let mut cluster = Cluster::start(3, &["-replicas", "3"]);
    let keys = write_keys(&cluster, 6);
    let (key, body) = &keys[2];
    let files = replica_files(&cluster, key);
    cluster.kill_master();
    let down = cluster.volumes[2].host();
    let down_file = files
        .iter()
        .find(|file| file.starts_with(&cluster.volumes[2].dir))
        .unwrap()
        .clone();
    let lost = files.iter().find(|file| **file != down_file).unwrap().clone();
    std::fs::remove_file(&lost).unwrap();
    cluster.volumes[2].stop();

    // Every key has a replica on the stopped volume: unreachable, not
    // missing, not repaired; the one really missing replica is repaired
    // from the copy that answers.
    let output = expect(&verify(&cluster, &["--repair"]), 1);
    assert!(
        output.contains("1 missing") && output.contains("6 unreachable"),
        "{output}"
    );
    assert!(output.contains("1 repaired"), "{output}");
    assert!(output.contains(&down) && output.contains("unreachable: "), "{output}");
    assert!(std::fs::read(&lost).unwrap() == *body);
    assert!(
        std::fs::read(&down_file).unwrap() == *body,
        "the unreachable copy is untouched"
    );

    cluster.volumes[2].restart();
    let clean = expect(&verify(&cluster, &[]), 0);
    assert!(clean.contains("18 ok, 0 missing"), "{clean}");
}

#[test]
fn verify_removes_old_orphans_and_leaves_young_ones_and_unlinked_copies() {
    let mut cluster = Cluster::start(3, &["-replicas", "2"]);
    let keys = write_keys(&cluster, 4);
    let (live, live_body) = &keys[1];
    assert_eq!(request("PUT", &cluster.url("/v/unlinked"), Some(b"kept")).status, 201);
    let unlinked_files = replica_files(&cluster, "/v/unlinked");
    assert_eq!(request("UNLINK", &cluster.url("/v/unlinked"), None).status, 204);
    let live_files = replica_files(&cluster, live);
    cluster.kill_master();

    // An old file of a key with no record; one of a live key on a volume
    // its record does not name; an old part of an upload that is gone; and
    // a fresh file with no record (a PUT in flight, for all verify knows).
    let volume = cluster.volumes[0].host();
    let no_record = file_at(&cluster, &format!("{volume}/sv01"), "/v/no-record");
    plant(&no_record, b"old", OLD);
    let elsewhere = cluster
        .volumes
        .iter()
        .map(|volume| file_at(&cluster, &format!("{}/sv03", volume.host()), live))
        .find(|file| !live_files.contains(file))
        .unwrap();
    plant(&elsewhere, live_body, OLD);
    let part = cluster.volumes[1]
        .dir
        .join("sv02/mkv-parts/0123456789abcdef0123456789abcdef/00001");
    plant(&part, b"part", OLD);
    let young = file_at(&cluster, &format!("{volume}/sv01"), "/v/in-flight");
    plant(&young, b"young", Duration::ZERO);

    let found = expect(&verify(&cluster, &[]), 1);
    assert!(found.contains("orphans: 2 found, 0 removed (1 younger"), "{found}");
    assert!(found.contains("orphan (no record names it)"), "{found}");
    assert!(
        found.contains("1 copies on volumes their records do not name (kept)"),
        "{found}"
    );
    assert!(no_record.exists() && elsewhere.exists() && part.exists());

    let removed = expect(&verify(&cluster, &["--repair"]), 1);
    assert!(removed.contains("orphans: 2 found, 2 removed (1 younger"), "{removed}");
    assert!(!no_record.exists() && !part.exists());
    assert!(
        elsewhere.exists() && removed.contains("its record does not name: kept"),
        "a live key's copy is never an orphan: {removed}"
    );
    assert!(young.exists(), "a file younger than the grace is left alone");
    assert!(live_files.iter().all(|file| file.exists()));
    assert!(
        unlinked_files.iter().all(|file| file.exists()),
        "UNLINK keeps the bytes"
    );
    // The operator, told of the copy, deletes it.
    std::fs::remove_file(&elsewhere).unwrap();

    // A shorter grace makes the young file old enough.
    std::thread::sleep(Duration::from_millis(1100));
    // A grace this short needs the confirmation.
    let refused = expect(&verify(&cluster, &["--repair", "--orphan-grace", "1s"]), 2);
    assert!(refused.contains("--confirm-short-grace"), "{refused}");
    assert!(young.exists());
    let confirmed = ["--repair", "--orphan-grace", "1s", "--confirm-short-grace"];
    let removed = expect(&verify(&cluster, &confirmed), 0);
    assert!(removed.contains("orphans: 1 found, 1 removed"), "{removed}");
    assert!(!young.exists());
    cluster.start_master();
    assert_eq!(request("RELINK", &cluster.url("/v/unlinked"), None).status, 204);
    assert_eq!(fetch(&cluster.url("/v/unlinked")).body, b"kept");
}

#[test]
fn purge_unlinked_hard_deletes_only_keys_older_than_the_threshold() {
    let mut cluster = Cluster::start(3, &["-replicas", "2"]);
    assert_eq!(request("PUT", &cluster.url("/p/old"), Some(b"old value")).status, 201);
    // The threshold below is 4 s: the old key is written 5 s before the run,
    // the young one just before it.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        request("PUT", &cluster.url("/p/young"), Some(b"young value")).status,
        201
    );
    let old_files = replica_files(&cluster, "/p/old");
    let young_files = replica_files(&cluster, "/p/young");
    for key in ["/p/old", "/p/young"] {
        assert_eq!(request("UNLINK", &cluster.url(key), None).status, 204);
    }
    cluster.kill_master();

    let refused = expect(&verify(&cluster, &["--purge-unlinked", "4s"]), 2);
    assert!(refused.contains("--confirm-short-grace"), "{refused}");
    assert!(
        old_files.iter().all(|file| file.exists()),
        "a refused run deletes nothing"
    );
    let purged = expect(
        &verify(&cluster, &["--purge-unlinked", "4s", "--confirm-short-grace"]),
        0,
    );
    assert!(purged.contains("1 unlinked keys purged"), "{purged}");
    assert!(old_files.iter().all(|file| !file.exists()), "the copies are deleted");
    assert!(young_files.iter().all(|file| file.exists()));

    cluster.start_master();
    let unlinked = String::from_utf8(request("GET", &cluster.url("/?unlinked"), None).body).unwrap();
    assert_eq!(unlinked, r#"{"next":"","keys":["/p/young"]}"#);
    assert_eq!(request("RELINK", &cluster.url("/p/old"), None).status, 404);
    assert_eq!(request("RELINK", &cluster.url("/p/young"), None).status, 204);
    assert_eq!(fetch(&cluster.url("/p/young")).body, b"young value");
}

#[test]
fn verify_repair_killed_midway_converges_on_rerun() {
    let mut cluster = Cluster::start(3, &["-replicas", "2"]);
    let keys: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| {
            let key = format!("/k/{i}");
            let body = value(300_000 + i, i as u64);
            assert_eq!(request("PUT", &cluster.url(&key), Some(&body)).status, 201);
            (key, body)
        })
        .collect();
    let lost: Vec<PathBuf> = keys
        .iter()
        .map(|(key, _)| replica_files(&cluster, key)[0].clone())
        .collect();
    cluster.kill_master();
    for file in &lost {
        std::fs::remove_file(file).unwrap();
    }

    // Killed once the first replica is back, then run again.
    let mut run = mkv()
        .args([
            "-db",
            &cluster.db().display().to_string(),
            "-volumes",
            &cluster.volume_list(),
        ])
        .args(&cluster.extra)
        .args(["--concurrency", "1", "--repair", "verify"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !lost.iter().any(|file| file.exists()) && std::time::Instant::now() < deadline {
        assert!(run.try_wait().unwrap().is_none(), "verify ended before it was killed");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(run.try_wait().unwrap().is_none(), "verify ended before it was killed");
    run.kill().unwrap();
    run.wait().unwrap();
    assert!(!lost.iter().all(|file| file.exists()), "killed before the end");

    let rerun = expect(&verify(&cluster, &["--repair"]), 0);
    assert!(!rerun.contains(" 0 repaired"), "{rerun}");
    for ((key, body), file) in keys.iter().zip(&lost) {
        assert!(std::fs::read(file).unwrap() == *body, "{key}");
    }
    let clean = expect(&verify(&cluster, &["--md5"]), 0);
    assert!(clean.contains("80 ok, 0 missing, 0 wrong size, 0 corrupt"), "{clean}");
}

#[test]
fn repair_removes_every_orphan_copy_of_one_key() {
    let mut cluster = Cluster::start(3, &["-replicas", "2"]);
    // A live key: an index without one removes no orphan unconfirmed.
    assert_eq!(request("PUT", &cluster.url("/v/live"), Some(b"live")).status, 201);
    cluster.kill_master();
    // One key with no record, an old copy on six entries: their removals
    // run at once and each takes the key's lock.
    let files: Vec<PathBuf> = cluster
        .volumes
        .iter()
        .flat_map(|volume| ["sv01", "sv02"].map(|subvolume| format!("{}/{subvolume}", volume.host())))
        .map(|entry| file_at(&cluster, &entry, "/v/orphaned-everywhere"))
        .collect();
    for file in &files {
        plant(file, b"old copy", OLD);
    }
    let removed = expect(&verify(&cluster, &["--repair"]), 0);
    assert!(removed.contains("orphans: 6 found, 6 removed"), "{removed}");
    let left: Vec<&PathBuf> = files.iter().filter(|file| file.exists()).collect();
    assert!(left.is_empty(), "{left:?}\n{removed}");
    expect(&verify(&cluster, &[]), 0);
}

#[test]
fn verify_and_rebalance_refuse_an_index_that_does_not_exist() {
    let cluster = Cluster::start(3, &[]);
    let kept = value(1000, 5);
    assert_eq!(request("PUT", &cluster.url("/kept"), Some(&kept)).status, 201);
    // A mistyped -db: made empty, every file would look like an orphan.
    let missing = cluster.dir.path().join("typo");
    let repair: &[&str] = &["--repair", "--orphan-grace", "0s", "--confirm-short-grace"];
    for (command, flags) in [("verify", repair), ("rebalance", &[][..])] {
        let output = mkv()
            .args([
                "-db",
                &missing.display().to_string(),
                "-volumes",
                &cluster.volume_list(),
            ])
            .args(flags)
            .arg(command)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        assert!(stderr.contains("no index"), "{command}: {stderr}");
        assert!(!missing.exists(), "{command} made no index");
    }
    assert_eq!(fetch(&cluster.url("/kept")).body, kept);
}

#[test]
fn repair_after_a_rebuild_without_a_volume_keeps_that_volumes_copies() {
    let mut cluster = Cluster::start(3, &["-replicas", "2"]);
    let keys = write_keys(&cluster, 8);
    cluster.kill_master();
    let held = cluster.files_on(2);
    assert!(!held.is_empty());
    cluster.volumes[2].stop();
    let rebuilt = cluster.run_command(&["--allow-down-volumes"], "rebuild");
    assert!(!String::from_utf8_lossy(&rebuilt.stderr).contains("panicked"));
    cluster.volumes[2].restart();

    // The volume is back: its copies are no orphans, the records that
    // left them out are reported.
    let short = ["--repair", "--orphan-grace", "0s", "--confirm-short-grace"];
    let repaired = expect(&verify(&cluster, &short), 1);
    let count = held.len();
    assert!(
        repaired.contains(&format!("{count} records naming fewer volumes than -replicas")),
        "{repaired}"
    );
    assert!(repaired.contains("names 1 volumes, fewer than -replicas"), "{repaired}");
    assert!(
        repaired.contains(&format!("{count} copies on volumes their records do not name (kept)")),
        "{repaired}"
    );
    assert!(repaired.contains("orphans: 0 found"), "{repaired}");
    let left: Vec<&PathBuf> = held.iter().filter(|file| !file.exists()).collect();
    assert!(left.is_empty(), "deleted: {left:?}\n{repaired}");

    // With every volume up, a rebuild records them again.
    expect(&cluster.run_command(&[], "rebuild"), 0);
    let clean = expect(&verify(&cluster, &[]), 0);
    assert!(clean.contains("0 records naming fewer volumes"), "{clean}");
    cluster.start_master();
    for (key, body) in &keys {
        assert!(fetch(&cluster.url(key)).body == *body, "{key}");
    }
}

#[test]
fn repair_with_an_index_that_holds_no_live_record_removes_nothing_unconfirmed() {
    let cluster = Cluster::start(3, &[]);
    let kept = value(1000, 9);
    assert_eq!(request("PUT", &cluster.url("/kept"), Some(&kept)).status, 201);
    let files = replica_files(&cluster, "/kept");
    // An index that exists and is empty (the wrong one, made by a command).
    let empty = cluster.dir.path().join("empty");
    let db = empty.display().to_string();
    let run = |args: &[&str], command: &str| {
        mkv()
            .args(["-db", &db, "-volumes", &cluster.volume_list()])
            .args(args)
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    expect(&run(&["--count", "0"], "seed"), 0);
    let repair = ["--repair", "--orphan-grace", "0s", "--confirm-short-grace"];
    let refused = expect(&run(&repair, "verify"), 1);
    assert!(
        refused.contains("no orphan removed: the index holds no live record"),
        "{refused}"
    );
    assert!(refused.contains("orphans: 3 found, 0 removed"), "{refused}");
    assert!(files.iter().all(|file| file.exists()));
    assert_eq!(fetch(&cluster.url("/kept")).body, kept);

    let confirmed: Vec<&str> = repair.iter().copied().chain(["--confirm-empty-index"]).collect();
    let removed = expect(&run(&confirmed, "verify"), 0);
    assert!(removed.contains("orphans: 3 found, 3 removed"), "{removed}");
    assert!(files.iter().all(|file| !file.exists()));
}
