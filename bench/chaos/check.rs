//! The checks once the faults stopped and the cluster recovered:
//!
//! 1. a fresh batch of PUT / GET (following the 302) / DELETE, every request
//!    of which must succeed at the first try ("after recovery no request
//!    fails");
//! 2. every key of the ledger settles: it is read (following the 302) and,
//!    when it may be unlinked and is not live, RELINKed and read; an answer
//!    no state allows is a loss, a resurrection or wrong bytes. Requests that
//!    get no answer are retried here (they are not what this step checks)
//!    and counted;
//! 3. every live key in `GET /?list` has its bytes on every replica its
//!    record names (`Key-Volumes`), all alike and matching `Content-Md5`;
//! 4. files on the volumes that no record names are counted as orphans.

use crate::client::Client;
use crate::cluster::Cluster;
use crate::ledger::{md5_hex, KeyLedger, Outcome, Value};
use crate::workload::{Operations, Shared, CLIENT_TIMEOUT};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Keys of the fresh batch.
const FINAL_BATCH_KEYS: usize = 50;

/// Tries of a settling request that gets no answer (or a 5xx), and the pause
/// between them: the cluster was just recovered, so a few seconds suffice.
const SETTLE_ATTEMPTS: usize = 20;
const SETTLE_PAUSE: Duration = Duration::from_millis(250);

/// Keys per listing page.
const LIST_PAGE_KEYS: usize = 1000;

/// Subvolumes per volume: the master's default (`-subvolumes 10`), which the
/// harness does not change; the layout of unlinked keys' files follows it.
pub const SUBVOLUMES: u32 = 10;

/// Failures and problems found; details go to stderr as they are found.
#[derive(Default, Debug)]
pub struct Findings {
    pub final_batch_failures: Vec<String>,
    /// Settling requests that needed a retry.
    pub settle_retries: u64,
    /// Keys the ledger acked at the end of the run (live / unlinked).
    pub acked_live: u64,
    pub acked_unlinked: u64,
    pub acked_absent: u64,
    /// Keys whose state the run left uncertain.
    pub uncertain: u64,
    /// Keys that could not be settled (no answer after every retry).
    pub unsettled: Vec<String>,
    pub listed_live: u64,
    pub listed_unlinked: u64,
    /// Replicas named by a record that do not answer 200.
    pub replicas_missing: Vec<String>,
    /// Replicas whose bytes differ from the recorded md5 or from each other.
    pub replicas_wrong: Vec<String>,
    /// Keys with a bad replica, for their history in the report.
    pub suspect_keys: Vec<String>,
    /// Live keys without a `Content-Md5`.
    pub live_without_md5: u64,
    pub orphans: Vec<PathBuf>,
}

/// Check 1: fresh PUT / GET / DELETE, none may fail.
pub fn final_batch(master: &str, seed: u64, findings: &mut Findings) {
    let mut client = Client::new(CLIENT_TIMEOUT);
    for number in 0..FINAL_BATCH_KEYS {
        let key = format!("/chaos-final/{number}");
        let value = Value::new(seed ^ number as u64, 1024 + number * 4099);
        let mut fail = |what: String| {
            eprintln!("chaos: final batch: {what}");
            findings.final_batch_failures.push(what);
        };
        match client.request("PUT", master, &key, Some(&value.bytes())) {
            Ok(reply) if reply.status == 201 => {}
            other => fail(format!("PUT {key}: {}", answer(&other))),
        }
        match client.request("GET", master, &key, None) {
            Ok(reply) if reply.status == 302 => {
                let location = reply.header("location").unwrap_or_default().to_string();
                match client.get_url(&location) {
                    Ok(read) if read.status == 200 && md5_hex(&read.body) == value.md5_hex() => {}
                    other => fail(format!("GET {location} (for {key}): {}", answer(&other))),
                }
            }
            other => fail(format!("GET {key}: {}", answer(&other))),
        }
        match client.request("DELETE", master, &key, None) {
            Ok(reply) if reply.status == 204 => {}
            other => fail(format!("DELETE {key}: {}", answer(&other))),
        }
    }
}

fn answer(result: &std::io::Result<crate::client::Reply>) -> String {
    match result {
        Ok(reply) => format!("{} {}", reply.status, String::from_utf8_lossy(&reply.body).trim()),
        Err(error) => format!("no answer ({error})"),
    }
}

fn answered(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Status(status) if *status < 500)
}

/// Check 2: settle every key of the ledger.
pub fn settle_keys(master: &str, keys: &mut [KeyLedger], shared: &Shared, findings: &mut Findings) {
    let mut operations = Operations {
        client: Client::new(CLIENT_TIMEOUT),
        master: master.to_string(),
        shared,
    };
    for entry in keys.iter_mut().filter(|entry| !entry.retired) {
        match entry.acked() {
            Some(crate::ledger::Fate::Live(_)) => findings.acked_live += 1,
            Some(crate::ledger::Fate::Unlinked(_)) => findings.acked_unlinked += 1,
            Some(crate::ledger::Fate::Absent) => findings.acked_absent += 1,
            Some(crate::ledger::Fate::Wreck) | None => findings.uncertain += 1,
        }
        if !settle(&mut operations, entry, findings) {
            findings.unsettled.push(entry.key.clone());
        }
    }
}

/// Read the key; if it is not live but may be unlinked, RELINK and read it.
/// False when some request never got an answer.
fn settle(operations: &mut Operations, entry: &mut KeyLedger, findings: &mut Findings) -> bool {
    let Some((outcome, _)) = retry(findings, || operations.get(entry)) else {
        return false;
    };
    if entry.retired || !matches!(outcome, Outcome::Status(404)) || !entry.may_be_unlinked() {
        return true;
    }
    let Some(outcome) = retry(findings, || (operations.relink(entry), ())).map(|(outcome, _)| outcome) else {
        return false;
    };
    if entry.retired || !matches!(outcome, Outcome::Status(204)) {
        return true;
    }
    retry(findings, || operations.get(entry)).is_some()
}

/// Repeat `request` while it gets no answer (or a 5xx), up to `SETTLE_ATTEMPTS`.
fn retry<T>(findings: &mut Findings, mut request: impl FnMut() -> (Outcome, T)) -> Option<(Outcome, T)> {
    for attempt in 0..SETTLE_ATTEMPTS {
        if attempt > 0 {
            findings.settle_retries += 1;
            std::thread::sleep(SETTLE_PAUSE);
        }
        let (outcome, extra) = request();
        if answered(&outcome) {
            return Some((outcome, extra));
        }
    }
    None
}

/// The keys of `GET /?list` (or `?unlinked`), page by page.
fn list_all(client: &mut Client, master: &str, query: &str) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let mut start = String::new();
    loop {
        let path = format!("/?{query}&limit={LIST_PAGE_KEYS}&start={}", percent_encode(&start));
        let reply = client
            .request("GET", master, &path, None)
            .map_err(|error| format!("GET {path}: {error}"))?;
        if reply.status != 200 {
            return Err(format!("GET {path}: {}", reply.status));
        }
        let page: serde_json::Value =
            serde_json::from_slice(&reply.body).map_err(|error| format!("GET {path}: {error}"))?;
        let names = page["keys"].as_array().ok_or(format!("GET {path}: no keys"))?;
        keys.extend(names.iter().filter_map(|name| name.as_str().map(str::to_string)));
        match page["next"].as_str() {
            Some(next) if !next.is_empty() => start = next.to_string(),
            _ => return Ok(keys),
        }
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// The file a volume entry (`host:port` or `host:port/svNN`) holds for `key`.
fn entry_file(cluster: &Cluster, entry: &str, key: &str) -> Option<PathBuf> {
    let (host, subvolume) = entry.split_at(entry.find('/').unwrap_or(entry.len()));
    let dir = cluster.volume_dir(host)?;
    let relative = format!("{subvolume}{}", mkv::placement::key2path(key.as_bytes()));
    Some(dir.join(relative.trim_start_matches('/')))
}

/// Checks 3 and 4: replicas of live keys, then orphans.
pub fn check_volumes(cluster: &Cluster, replicas: usize, findings: &mut Findings) -> Result<(), String> {
    let master = cluster.master_host();
    let mut client = Client::new(CLIENT_TIMEOUT);
    let mut named: HashSet<PathBuf> = HashSet::new();
    for key in list_all(&mut client, &master, "list")? {
        findings.listed_live += 1;
        let reply = client
            .request("GET", &master, &percent_encode(&key), None)
            .map_err(|error| format!("GET {key}: {error}"))?;
        if reply.status != 302 {
            findings
                .replicas_missing
                .push(format!("{key}: listed live, GET answered {}", reply.status));
            continue;
        }
        let recorded = reply.header("content-md5").map(str::to_string);
        if recorded.is_none() {
            findings.live_without_md5 += 1;
        }
        let entries: Vec<String> = reply
            .header("key-volumes")
            .unwrap_or_default()
            .split(',')
            .map(str::to_string)
            .collect();
        let path = mkv::placement::key2path(key.as_bytes());
        let mut seen: Vec<(String, String)> = Vec::new();
        for entry in &entries {
            named.extend(entry_file(cluster, entry, &key));
            let url = format!("http://{entry}{path}");
            match client.get_url(&url) {
                Ok(read) if read.status == 200 => seen.push((entry.clone(), md5_hex(&read.body))),
                other => {
                    let what = format!("{key}: replica {entry} answered {}", answer(&other));
                    eprintln!("chaos: {what}");
                    findings.replicas_missing.push(what);
                    findings.suspect_keys.push(key.clone());
                }
            }
        }
        // Without a recorded md5 the replicas must at least agree.
        let expected = recorded.clone().or_else(|| seen.first().map(|(_, md5)| md5.clone()));
        for (entry, md5) in &seen {
            if Some(md5) != expected.as_ref() {
                let what = match &recorded {
                    Some(recorded) => format!("{key}: replica {entry} has md5 {md5}, the record says {recorded}"),
                    None => format!("{key}: no md5 recorded and the replicas differ: {seen:?}"),
                };
                eprintln!("chaos: {what}");
                findings.replicas_wrong.push(what);
                findings.suspect_keys.push(key.clone());
            }
        }
    }
    // A DELETED record names the volumes placement chose for it at PUT time.
    let hosts = cluster.hosts();
    for key in list_all(&mut client, &master, "unlinked")? {
        findings.listed_unlinked += 1;
        for entry in mkv::placement::key2volume(key.as_bytes(), &hosts, replicas, SUBVOLUMES) {
            named.extend(entry_file(cluster, &entry, &key));
        }
    }
    for volume in &cluster.volumes {
        let mut files = Vec::new();
        walk(&volume.dir, &mut files);
        findings
            .orphans
            .extend(files.into_iter().filter(|file| !named.contains(file)));
    }
    Ok(())
}

/// Files under a volume's data root, skipping nginx's own `.nginx` state.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_name() == ".nginx" {
            continue;
        }
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}
