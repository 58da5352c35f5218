//! Repair after a rebuild: `rebuild` records only what a key's copies agree
//! on, so `verify --repair` never overwrites copies on the evidence of a size
//! or md5 taken from whichever copy a listing showed first. A stray old copy
//! (a rebalance leftover) is outvoted by the other copies; more copies win
//! over fewer wherever they lie (a placed copy is no better evidence);
//! copies that disagree with nothing to say which is right, a tie included,
//! are reported and left. A rebuilt value without an md5 still has an S3
//! ETag.

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, SystemTime};

use mkv::placement::{entry_host, key2path};

use crate::cluster::{fetch, request, request_full, Cluster};

/// The acknowledged value (15 bytes) and an older one (3 bytes).
const VALUE: &[u8] = b"acknowledged-15";
const OLD: &[u8] = b"old";

fn expect(output: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Where volume `volume` keeps `key` (one subvolume).
fn file_on(cluster: &Cluster, volume: usize, key: &str) -> PathBuf {
    cluster.volumes[volume].dir.join(&key2path(key.as_bytes())[1..])
}

/// The volumes (by position) holding `key` by the master's `Key-Volumes`.
fn holders(cluster: &Cluster, key: &str) -> Vec<usize> {
    let reply = request("HEAD", &cluster.url(key), None);
    let entries = reply.header("key-volumes").expect("a live key").to_owned();
    entries
        .split(',')
        .map(|entry| {
            let host = entry_host(entry);
            cluster.volumes.iter().position(|volume| volume.host() == host).unwrap()
        })
        .collect()
}

/// Write `bytes` at `path`, last modified an hour ago (an old leftover).
fn plant(path: &PathBuf, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
}

#[test]
fn repair_after_rebuild_keeps_the_placed_copies_over_a_stray_old_copy() {
    let mut cluster = Cluster::start(3, &["-replicas", "2", "-subvolumes", "1"]);
    let key = "/rebuilt/stray";
    assert_eq!(request("PUT", &cluster.url(key), Some(VALUE)).status, 201);
    let placed = holders(&cluster, key);
    let stray = (0..3).find(|volume| !placed.contains(volume)).unwrap();
    plant(&file_on(&cluster, stray, key), OLD);
    cluster.kill_master();
    // The stray's volume listed first, as the first `-volumes` host.
    cluster.volumes.swap(0, stray);
    let placed: Vec<usize> = placed
        .iter()
        .map(|&volume| if volume == 0 { stray } else { volume })
        .collect();

    let rebuilt = expect(&cluster.run_command(&[], "rebuild"), 0);
    assert!(rebuilt.contains("differ in size"), "{rebuilt}");
    let repaired = expect(&cluster.run_command(&["--repair"], "verify"), 0);
    assert!(repaired.contains("1 repaired"), "{repaired}");
    for volume in placed {
        assert_eq!(
            std::fs::read(file_on(&cluster, volume, key)).unwrap(),
            VALUE,
            "{repaired}"
        );
    }
    assert_eq!(
        std::fs::read(file_on(&cluster, 0, key)).unwrap(),
        VALUE,
        "the stray now agrees"
    );
    cluster.start_master();
    assert_eq!(fetch(&cluster.url(key)).body, VALUE);
}

#[test]
fn after_a_rebuild_more_copies_win_wherever_they_lie_and_a_tie_repairs_nothing() {
    let mut cluster = Cluster::start(3, &["-replicas", "1", "-subvolumes", "1"]);
    let outvoted = "/rebuilt/outvoted";
    let tied = "/rebuilt/tied";
    for key in [outvoted, tied] {
        assert_eq!(request("PUT", &cluster.url(key), Some(VALUE)).status, 201);
    }
    // The one placed copy of each against two agreeing copies elsewhere,
    // and against one.
    let elsewhere = |key: &str| -> Vec<usize> {
        let placed = holders(&cluster, key);
        (0..3).filter(|volume| !placed.contains(volume)).collect()
    };
    let (outvoted_placed, tied_placed) = (holders(&cluster, outvoted)[0], holders(&cluster, tied)[0]);
    let outvoting = elsewhere(outvoted);
    for &volume in &outvoting {
        plant(&file_on(&cluster, volume, outvoted), OLD);
    }
    let tying = elsewhere(tied)[0];
    plant(&file_on(&cluster, tying, tied), OLD);
    cluster.kill_master();

    let rebuilt = expect(&cluster.run_command(&[], "rebuild"), 0);
    assert!(rebuilt.contains("differ in size"), "{rebuilt}");
    let repaired = expect(&cluster.run_command(&["--repair"], "verify"), 1);
    assert!(repaired.contains("1 repaired"), "{repaired}");
    assert!(
        repaired.contains(&format!("{tied:?}: not repaired: the copies disagree")),
        "{repaired}"
    );
    for &volume in &outvoting {
        assert_eq!(
            std::fs::read(file_on(&cluster, volume, outvoted)).unwrap(),
            OLD,
            "{repaired}"
        );
    }
    assert_eq!(
        std::fs::read(file_on(&cluster, outvoted_placed, outvoted)).unwrap(),
        OLD,
        "the placed copy, outvoted two to one, now holds what most copies hold"
    );
    assert_eq!(std::fs::read(file_on(&cluster, tied_placed, tied)).unwrap(), VALUE);
    assert_eq!(
        std::fs::read(file_on(&cluster, tying, tied)).unwrap(),
        OLD,
        "one against one: neither copy is destroyed"
    );
}

#[test]
fn copies_that_disagree_with_nothing_to_say_which_is_right_are_left_alone() {
    let mut cluster = Cluster::start(3, &["-replicas", "2", "-subvolumes", "1"]);
    let sized = "/rebuilt/sized";
    let same_length = "/rebuilt/same-length";
    for key in [sized, same_length] {
        assert_eq!(request("PUT", &cluster.url(key), Some(VALUE)).status, 201);
    }
    // One placed copy each holds other bytes: of another size, or the same.
    let sized_files: Vec<PathBuf> = holders(&cluster, sized)
        .iter()
        .map(|&v| file_on(&cluster, v, sized))
        .collect();
    let same_files: Vec<PathBuf> = holders(&cluster, same_length)
        .iter()
        .map(|&v| file_on(&cluster, v, same_length))
        .collect();
    let other = b"another-15-byte";
    plant(&sized_files[1], OLD);
    plant(&same_files[1], other);
    cluster.kill_master();

    // Without --md5 only the sizes are compared; with it, every copy's md5.
    for md5 in [&[][..], &["--md5"][..]] {
        let rebuilt = expect(&cluster.run_command(md5, "rebuild"), 0);
        assert!(rebuilt.contains("differ in size"), "{rebuilt}");
        let args: Vec<&str> = md5.iter().copied().chain(["--repair"]).collect();
        let verified = expect(&cluster.run_command(&args, "verify"), 1);
        assert!(verified.contains("the copies disagree"), "{verified}");
        assert!(verified.contains("0 repaired"), "{verified}");
        assert_eq!(std::fs::read(&sized_files[0]).unwrap(), VALUE);
        assert_eq!(std::fs::read(&sized_files[1]).unwrap(), OLD);
        assert_eq!(std::fs::read(&same_files[0]).unwrap(), VALUE);
        assert_eq!(std::fs::read(&same_files[1]).unwrap(), other);
    }
    let rebuilt = expect(&cluster.run_command(&["--md5"], "rebuild"), 0);
    assert!(rebuilt.contains("differ in md5"), "{rebuilt}");
}

#[test]
fn a_rebuilt_value_without_an_md5_has_an_s3_etag() {
    let mut cluster = Cluster::start(3, &["-replicas", "2"]);
    let s3 = ("x-amz-content-sha256", "UNSIGNED-PAYLOAD");
    assert_eq!(
        request_full("PUT", &cluster.url("/etags"), &[s3], Some(b"")).status,
        200
    );
    assert_eq!(
        request_full("PUT", &cluster.url("/etags/k"), &[s3], Some(VALUE)).status,
        200
    );
    cluster.kill_master();
    expect(&cluster.run_command(&[], "rebuild"), 0);
    cluster.start_master();
    let head = request_full("HEAD", &cluster.url("/etags/k"), &[s3], None);
    assert_eq!(head.status, 200);
    let etag = head.header("etag").unwrap_or_default().trim_matches('"').to_owned();
    assert!(!etag.is_empty(), "{:?}", head.headers);
    // Rebuilt with --md5, the ETag is the value's md5 again.
    cluster.kill_master();
    expect(&cluster.run_command(&["--md5"], "rebuild"), 0);
    cluster.start_master();
    let head = request_full("HEAD", &cluster.url("/etags/k"), &[s3], None);
    assert_eq!(
        head.header("etag"),
        Some(format!("\"{}\"", crate::cluster::md5_hex(VALUE)).as_str())
    );
}
