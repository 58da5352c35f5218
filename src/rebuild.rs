//! Rebuild: regrow the index from what the volumes hold.
//!
//! Every volume must first answer its root listing (else the run is refused
//! and the index left as it was, unless `--allow-down-volumes`): a rebuild
//! without a volume would drop every copy it holds. Then the index is
//! emptied, and every volume is walked with nginx's JSON
//! autoindex: the root, its `svXX` subvolume directories, their `xx/yy/`
//! shard directories, and below those the files, whose names are the
//! base64 of their keys. A name whose base64 holds `/` is a chain of nested
//! directories, so below `xx/yy/` every directory is part of a name. Each
//! key gets a live record naming every entry (`host:port` or
//! `host:port/svXX`) that holds it, ordered as key2volume orders them, then
//! the others. With `--md5` every copy is read once more and the md5 stored
//! when the copies agree, so rebuilt records are as complete as written ones
//! (the original loses them).
//!
//! Rebuild records only what the copies agree on. A key's copies may
//! disagree (a rebalance leftover whose delete failed, a replica a failed
//! write left behind), and the order in which listings arrive says nothing
//! about which copy is right, so a size (metadata) or md5 (record) taken from
//! whichever copy came first would be a guess that `verify --repair` then
//! trusts over the copies' majority. When a key's copies differ in size its
//! metadata is dropped; when they differ in md5 the record keeps none; each
//! such key is reported, and verify then repairs only on what more than
//! half of the copies hold. A rebuilt value's ETag (S3) is nginx's, its file's mtime
//! and size in hex, until an md5 is known; its content type and user
//! metadata are not on the volumes and are lost.
//!
//! A decoded key must hash to the shard directories it was found in, so a
//! stray file never becomes a key whose redirect points nowhere. nginx
//! merges runs of slashes in a path (`a//b` is stored as `a/b`), so a name
//! that does not decode is retried with the merged slashes put back
//! (`decode_name`); the shard check makes a wrong guess vanishingly rare.
//!
//! Listings run concurrently, at most `--concurrency` at once, spread over
//! the volumes (the least busy volume with work goes next), each volume
//! walked depth first so the queue stays small. One unreadable directory,
//! stray file or undecodable name is reported and counted, and the walk
//! goes on; only the exit code says something failed. The index is the
//! accumulator (one read and write per file found), so memory does not grow
//! with the number of keys. Interrupted, a rebuild is simply run again: it
//! starts by emptying the index.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures_util::stream::{FuturesUnordered, StreamExt};
use md5::{Digest, Md5};
use serde::Deserialize;

use crate::config::Config;
use crate::index::{Change, Index, IndexError};
use crate::meta::Meta;
use crate::placement::{entry_host, hex_lower, key2path, key2volume, FILE_NAME_BYTES_MAX};
use crate::progress::Progress;
use crate::record::{Record, HASH_HEX_BYTES};
use crate::replication::{entry_path, PIECE_BYTES, VOLUME_IO_TIMEOUT};
use crate::volume::{self, Download, VolumeError};

/// Largest directory listing read: about 150,000 entries of nginx's JSON.
/// A shard directory holds about keys * replicas / (volumes * subvolumes *
/// 65,536) files, a few hundred even for billions of keys.
const LISTING_BYTES_MAX: usize = 16 << 20;
/// A listing must arrive within this time. Longer than `-voltimeout`: a big
/// directory on a busy disk may take seconds to read.
const LISTING_TIMEOUT: Duration = Duration::from_secs(10);
/// Most spellings tried to put back the slashes nginx merged in one name.
const REPAIR_CANDIDATES_MAX: usize = 256;

/// One entry of nginx's JSON autoindex.
#[derive(Debug, Deserialize)]
pub(crate) struct Listed {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// A file's modification time (an HTTP date): its key's mtime in the
    /// index's metadata, and `verify`'s orphan age.
    #[serde(default)]
    pub(crate) mtime: Option<String>,
    /// A file's size in bytes.
    #[serde(default)]
    size: Option<u64>,
}

impl Listed {
    /// The metadata of the value this file holds, as the listing tells it;
    /// with `etag`, nginx's ETag of the file (its mtime and size in hex),
    /// for a value whose md5 is not known.
    fn meta(&self, etag: bool) -> Meta {
        let mtime_ms = self
            .mtime
            .as_deref()
            .and_then(|text| httpdate::parse_http_date(text).ok())
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |elapsed| elapsed.as_millis() as u64);
        let size = self.size.unwrap_or(0);
        Meta {
            size,
            mtime_ms,
            etag: etag.then(|| listing_etag(mtime_ms, size)),
            ..Meta::default()
        }
    }
}

/// nginx's ETag of a file (`mtime-size`, seconds and bytes in lower-case
/// hex): what a rebuilt value without an md5 answers as its S3 ETag.
fn listing_etag(mtime_ms: u64, size: u64) -> String {
    format!("{:x}-{size:x}", mtime_ms / 1000)
}

/// Where a directory sits in a volume's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    /// The volume's root: shard directories or `svXX` subvolumes.
    Root,
    /// `/svXX/`: shard directories.
    Subvolume,
    /// `xx/`: second-level shard directories.
    First,
    /// `xx/yy/`: files named by key, or the first part of a name with `/`.
    Second,
    /// Below `xx/yy/`: the rest of a name with `/`.
    Nested,
}

/// A directory to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Directory {
    /// Position of the volume in `-volumes`.
    pub(crate) host: usize,
    /// The entry its files belong to: `host:port` or `host:port/svXX`.
    pub(crate) entry: String,
    /// URL path, ending in `/`.
    pub(crate) path: String,
    pub(crate) level: Level,
    /// The shard bytes (`xx`, `yy`) of the files below, from `Second` down.
    shard: [u8; 2],
    /// In `Nested`: the part of the base64 name the directories spell.
    name: String,
}

impl Directory {
    pub(crate) fn root(host: usize, volume: &str) -> Directory {
        Directory {
            host,
            entry: volume.to_owned(),
            path: "/".to_owned(),
            level: Level::Root,
            shard: [0; 2],
            name: String::new(),
        }
    }

    pub(crate) fn child(&self, name: &str, level: Level) -> Directory {
        Directory {
            host: self.host,
            entry: self.entry.clone(),
            path: format!("{}{name}/", self.path),
            level,
            shard: self.shard,
            name: String::new(),
        }
    }
}

/// What one listed entry is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    Directory(Directory),
    Key(Vec<u8>),
    /// Not part of the layout (nginx's own state, `lost+found`): ignored.
    Skip,
    /// A file (or name) that cannot be a stored value: an error.
    Stray(&'static str),
}

/// Classify one entry of `parent`'s listing.
pub(crate) fn classify(parent: &Directory, listed: &Listed) -> Found {
    let is_directory = listed.kind == "directory";
    let is_file = listed.kind == "file";
    let name = listed.name.as_str();
    match parent.level {
        Level::Root | Level::Subvolume | Level::First => {
            if is_file {
                return Found::Stray("stray file outside the shard directories");
            }
            if !is_directory {
                return Found::Skip;
            }
            if let Some(byte) = hex2(name) {
                let level = if parent.level == Level::First {
                    Level::Second
                } else {
                    Level::First
                };
                let mut child = parent.child(name, level);
                child.shard[usize::from(level == Level::Second)] = byte;
                return Found::Directory(child);
            }
            if parent.level == Level::Root && is_subvolume(name) {
                let mut child = parent.child(name, Level::Subvolume);
                child.entry = format!("{}/{name}", parent.entry);
                return Found::Directory(child);
            }
            Found::Skip
        }
        Level::Second | Level::Nested => {
            let full_name = if parent.level == Level::Nested {
                format!("{}/{name}", parent.name)
            } else {
                name.to_owned()
            };
            if full_name.len() > FILE_NAME_BYTES_MAX || !is_base64_part(name) {
                return Found::Stray("a name that is not the base64 of a key");
            }
            if is_directory {
                let mut child = parent.child(name, Level::Nested);
                child.name = full_name;
                Found::Directory(child)
            } else if is_file {
                match decode_name(parent.shard, &full_name) {
                    Some(key) => Found::Key(key),
                    None => Found::Stray("a name that does not decode to a key stored in this directory"),
                }
            } else {
                Found::Stray("neither a file nor a directory")
            }
        }
    }
}

/// The byte a two-digit lower-case hex shard directory stands for.
fn hex2(name: &str) -> Option<u8> {
    let lower_hex = |byte: u8| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte);
    (name.len() == 2 && name.bytes().all(lower_hex))
        .then(|| u8::from_str_radix(name, 16).ok())
        .flatten()
}

/// `svXX`, XX two upper-case hex digits (how key2volume names subvolumes).
fn is_subvolume(name: &str) -> bool {
    let upper_hex = |byte: u8| byte.is_ascii_digit() || (b'A'..=b'F').contains(&byte);
    name.len() == 4 && name.starts_with("sv") && name.bytes().skip(2).all(upper_hex)
}

/// Whether `name` only has characters of standard base64 (`/` aside, which
/// separates the parts).
fn is_base64_part(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'+' || byte == b'=')
}

/// The key whose file is named `name` in the shard directories `shard`.
///
/// nginx merges runs of slashes, so a key whose base64 holds `//` (or starts
/// with `/`) is stored under a shorter name. When `name` does not decode to
/// a key of this shard, slashes are put back where a run may have been
/// merged (at the start and after each `/`), as many as make the length a
/// multiple of 4 (or 4 more), and each spelling is checked the same way.
fn decode_name(shard: [u8; 2], name: &str) -> Option<Vec<u8>> {
    if let Some(key) = decode_exact(shard, name) {
        return Some(key);
    }
    let positions: Vec<usize> = std::iter::once(0)
        .chain(name.match_indices('/').map(|(at, _)| at + 1))
        .collect();
    let short = (4 - name.len() % 4) % 4;
    let mut budget = REPAIR_CANDIDATES_MAX;
    let mut counts = vec![0; positions.len()];
    for missing in [short, short + 4] {
        if missing == 0 {
            continue;
        }
        let mut attempt = Spelling {
            shard,
            name,
            positions: &positions,
            counts: &mut counts,
            budget: &mut budget,
        };
        if let Some(key) = attempt.spread(0, missing) {
            return Some(key);
        }
    }
    None
}

/// The search of `decode_name` over ways to put `missing` slashes back.
struct Spelling<'a> {
    shard: [u8; 2],
    name: &'a str,
    positions: &'a [usize],
    counts: &'a mut [usize],
    budget: &'a mut usize,
}

impl Spelling<'_> {
    /// Try every way to spread `left` slashes over positions `at..`.
    fn spread(&mut self, at: usize, left: usize) -> Option<Vec<u8>> {
        if at + 1 == self.positions.len() {
            self.counts[at] = left;
            if *self.budget == 0 {
                return None;
            }
            *self.budget -= 1;
            return decode_exact(self.shard, &self.spelled());
        }
        for here in 0..=left {
            self.counts[at] = here;
            if let Some(key) = self.spread(at + 1, left - here) {
                return Some(key);
            }
            if *self.budget == 0 {
                return None;
            }
        }
        None
    }

    fn spelled(&self) -> String {
        let mut out = String::with_capacity(self.name.len() + self.counts.iter().sum::<usize>());
        let mut last = 0;
        for (&position, &count) in self.positions.iter().zip(self.counts.iter()) {
            out.push_str(&self.name[last..position]);
            out.extend(std::iter::repeat_n('/', count));
            last = position;
        }
        out.push_str(&self.name[last..]);
        out
    }
}

/// The key `name` is the canonical base64 of, if it hashes to `shard`.
fn decode_exact(shard: [u8; 2], name: &str) -> Option<Vec<u8>> {
    let key = STANDARD.decode(name).ok()?;
    let digest = Md5::digest(&key);
    (digest[..2] == shard).then_some(key)
}

/// Order a key's entries as key2volume orders them (`placed`), then the
/// others by name.
pub fn order_entries(entries: &mut [String], placed: &[String]) {
    let rank = |entry: &String| placed.iter().position(|wanted| wanted == entry).unwrap_or(usize::MAX);
    entries.sort_by(|left, right| rank(left).cmp(&rank(right)).then_with(|| left.cmp(right)));
}

/// Why a directory could not be listed.
#[derive(Debug)]
pub(crate) enum ListingError {
    Volume(VolumeError),
    Status(u16),
    Json(serde_json::Error),
}

impl fmt::Display for ListingError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListingError::Volume(error) => write!(formatter, "{error}"),
            ListingError::Status(status) => write!(formatter, "listing answered {status}"),
            ListingError::Json(error) => write!(formatter, "listing is not nginx's JSON autoindex: {error}"),
        }
    }
}

pub(crate) async fn list(host: &str, path: &str) -> Result<Vec<Listed>, ListingError> {
    let (status, body) = volume::simple_request("GET", host, path, LISTING_TIMEOUT, LISTING_BYTES_MAX)
        .await
        .map_err(ListingError::Volume)?;
    if status != 200 {
        return Err(ListingError::Status(status));
    }
    serde_json::from_slice(&body).map_err(ListingError::Json)
}

/// The md5 of the value of `key` on `entry`, read in pieces.
async fn hash_value(entry: &str, key: &[u8], timeout: Duration) -> Result<[u8; HASH_HEX_BYTES], String> {
    let path = entry_path(entry, &key2path(key));
    let mut download = Download::begin(entry_host(entry), &path, timeout, VOLUME_IO_TIMEOUT)
        .await
        .map_err(|error| error.to_string())?
        .ok_or("the file vanished")?;
    let mut hasher = Md5::new();
    while let Some(piece) = download.next(PIECE_BYTES).await.map_err(|error| error.to_string())? {
        hasher.update(&piece);
    }
    download.finish();
    Ok(hex_lower(&hasher.finalize().into()))
}

/// One request to a volume.
enum Task {
    List(Directory),
    Hash { host: usize, entry: String, key: Vec<u8> },
}

impl Task {
    fn host(&self) -> usize {
        match self {
            Task::List(directory) => directory.host,
            Task::Hash { host, .. } => *host,
        }
    }
}

/// A finished request.
enum Done {
    Listed(Directory, Result<Vec<Listed>, ListingError>),
    Hashed {
        host: usize,
        entry: String,
        key: Vec<u8>,
        result: Result<[u8; HASH_HEX_BYTES], String>,
    },
}

async fn perform(task: Task, volumes: &[String], timeout: Duration) -> Done {
    match task {
        Task::List(directory) => {
            let listing = list(&volumes[directory.host], &directory.path).await;
            Done::Listed(directory, listing)
        }
        Task::Hash { host, entry, key } => {
            let result = hash_value(&entry, &key, timeout).await;
            Done::Hashed {
                host,
                entry,
                key,
                result,
            }
        }
    }
}

/// Work waiting per volume, and requests in flight per volume.
struct Queue {
    pending: Vec<Vec<Task>>,
    in_flight: Vec<usize>,
}

impl Queue {
    fn new(volumes: usize) -> Queue {
        Queue {
            pending: (0..volumes).map(|_| Vec::new()).collect(),
            in_flight: vec![0; volumes],
        }
    }

    fn push(&mut self, task: Task) {
        self.pending[task.host()].push(task);
    }

    /// The newest task (depth first) of the least busy volume that has work.
    fn pop(&mut self) -> Option<Task> {
        let host = (0..self.pending.len())
            .filter(|&host| !self.pending[host].is_empty())
            .min_by_key(|&host| self.in_flight[host])?;
        self.in_flight[host] += 1;
        self.pending[host].pop()
    }

    fn finished(&mut self, host: usize) {
        self.in_flight[host] -= 1;
    }
}

/// The counts of a rebuild.
#[derive(Debug, Default)]
pub struct Summary {
    /// Records the index held before (removed first).
    pub removed: u64,
    pub directories: u64,
    /// Files indexed (a key with three replicas is three files).
    pub files: u64,
    /// Keys indexed.
    pub keys: u64,
    /// Copies whose md5 was read (`--md5`).
    pub hashed: u64,
    /// Keys whose copies differ in size or md5: recorded without either.
    pub disagreeing: u64,
    /// Stray files and names that do not decode.
    pub strays: u64,
    /// Directories that could not be listed.
    pub unlisted: u64,
    /// Copies whose md5 could not be read.
    pub unhashed: u64,
    pub elapsed: Duration,
}

impl Summary {
    /// Problems the exit code should show.
    pub fn failures(&self) -> u64 {
        self.strays + self.unlisted + self.unhashed
    }

    fn status(&self) -> String {
        format!("{} files, {} keys, {} errors", self.files, self.keys, self.failures())
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} keys from {} files in {} directories, {} md5s read, {} keys whose copies disagree; \
             errors: {} stray files or names, {} unreadable directories, {} unreadable values; \
             {} old records removed; {:.1}s",
            self.keys,
            self.files,
            self.directories,
            self.hashed,
            self.disagreeing,
            self.strays,
            self.unlisted,
            self.unhashed,
            self.removed,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Why a rebuild did not run to its end.
#[derive(Debug)]
pub enum RebuildError {
    /// Volumes (`host:port`, why) did not answer their root listing; the
    /// index was not touched.
    VolumesDown(Vec<(String, String)>),
    Index(IndexError),
}

impl fmt::Display for RebuildError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RebuildError::VolumesDown(down) => {
                for (volume, error) in down {
                    writeln!(formatter, "volume {volume} does not answer its listing: {error}")?;
                }
                write!(
                    formatter,
                    "refusing to rebuild, the index is untouched: a rebuild without a volume drops every \
                     copy it holds from the index; bring it back, or pass --allow-down-volumes"
                )
            }
            RebuildError::Index(error) => write!(formatter, "{error}"),
        }
    }
}

impl std::error::Error for RebuildError {}

impl From<IndexError> for RebuildError {
    fn from(error: IndexError) -> Self {
        RebuildError::Index(error)
    }
}

/// The volumes whose root listing fails, with why; listed all at once.
async fn down_volumes(volumes: &[String]) -> Vec<(String, String)> {
    let listings: FuturesUnordered<_> = volumes
        .iter()
        .map(|volume| async move { (volume, list(volume, "/").await) })
        .collect();
    let mut down: Vec<(String, String)> = listings
        .filter_map(|(volume, listing)| async move { listing.err().map(|error| (volume.clone(), error.to_string())) })
        .collect()
        .await;
    down.sort();
    down
}

/// `mkv rebuild`: empty the index and refill it from the volumes. Every
/// volume must answer first (unless `--allow-down-volumes`): emptying the
/// index while one is away would drop every copy it holds. Per-item
/// failures are counted in the summary; an index failure ends the run.
pub async fn run(index: &Index, config: &Config) -> Result<Summary, RebuildError> {
    let down = down_volumes(&config.volumes).await;
    if !down.is_empty() && !config.allow_down_volumes {
        return Err(RebuildError::VolumesDown(down));
    }
    let summary = Summary {
        removed: index.clear()?,
        ..Summary::default()
    };
    let progress = Progress::new("rebuild", "directories", None);
    let mut queue = Queue::new(config.volumes.len());
    for (host, volume) in config.volumes.iter().enumerate() {
        queue.push(Task::List(Directory::root(host, volume)));
    }
    let mut walk = Walk {
        index,
        config,
        queue,
        summary,
        progress: &progress,
        undecided: HashSet::new(),
    };
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < config.concurrency {
            let Some(task) = walk.queue.pop() else { break };
            running.push(perform(task, &config.volumes, config.volume_timeout));
        }
        let Some(done) = running.next().await else { break };
        match done {
            Done::Listed(directory, listing) => {
                walk.queue.finished(directory.host);
                walk.summary.directories += 1;
                match listing {
                    Ok(listing) => {
                        for listed in &listing {
                            walk.found(&directory, listed)?;
                        }
                    }
                    Err(error) => {
                        walk.summary.unlisted += 1;
                        progress.report(&format!("{}{}: {error}", volume_of(&directory), directory.path));
                    }
                }
                let summary = &walk.summary;
                progress.advance(1, || summary.status());
            }
            Done::Hashed {
                host,
                entry,
                key,
                result,
            } => {
                walk.queue.finished(host);
                walk.hashed(&entry, key, result)?;
                let summary = &walk.summary;
                progress.advance(0, || summary.status());
            }
        }
    }
    let mut summary = walk.summary;
    summary.elapsed = progress.elapsed();
    progress.finish(&summary.to_string());
    Ok(summary)
}

/// The `host:port` a directory's path is relative to.
pub(crate) fn volume_of(directory: &Directory) -> &str {
    entry_host(&directory.entry)
}

/// The line reporting the stray entry `listed` of `directory`: where it is
/// and `what` is wrong with it.
pub(crate) fn stray_line(directory: &Directory, listed: &Listed, what: &str) -> String {
    format!("{}{}{}: {what}", volume_of(directory), directory.path, listed.name)
}

/// A rebuild's walk: the index it fills, its queue and counts.
struct Walk<'a> {
    index: &'a Index,
    config: &'a Config,
    queue: Queue,
    summary: Summary,
    progress: &'a Progress,
    /// Keys whose md5 is not recorded, whatever their other copies hash to:
    /// their copies disagree (in size or md5) or one could not be read. Only
    /// keys with such a problem are held, each reported once.
    undecided: HashSet<Vec<u8>>,
}

/// What recording one copy of a key did.
enum Added {
    /// The key's first copy: the record and its metadata are new.
    NewKey,
    /// Another copy of a key already recorded.
    Copy,
    /// This copy was recorded already.
    Known,
}

impl Walk<'_> {
    /// Act on one entry of `directory`'s listing.
    fn found(&mut self, directory: &Directory, listed: &Listed) -> Result<(), IndexError> {
        match classify(directory, listed) {
            Found::Directory(child) => self.queue.push(Task::List(child)),
            Found::Key(key) => {
                self.summary.files += 1;
                let added = self.add_entry(&key, &directory.entry, listed)?;
                if matches!(added, Added::NewKey) {
                    self.summary.keys += 1;
                }
                // Every copy is read: an md5 is recorded only when all agree.
                if self.config.md5 && !matches!(added, Added::Known) {
                    self.queue.push(Task::Hash {
                        host: directory.host,
                        entry: directory.entry.clone(),
                        key,
                    });
                }
            }
            Found::Skip => {}
            Found::Stray(what) => {
                self.summary.strays += 1;
                self.progress.report(&stray_line(directory, listed, what));
            }
        }
        Ok(())
    }

    /// Record that `entry` holds `key`, whose copy there the listing
    /// describes as `listed`. A copy whose size is not the size recorded
    /// from another drops the key's metadata: nothing says which is right.
    fn add_entry(&mut self, key: &[u8], entry: &str, listed: &Listed) -> Result<Added, IndexError> {
        let existing = self.index.get(key)?;
        let new = existing.is_none();
        let mut record = existing.unwrap_or_else(|| Record::new(Vec::new(), false, None));
        if record.volumes.iter().any(|known| known == entry) {
            return Ok(Added::Known);
        }
        record.volumes.push(entry.to_owned());
        let placed = key2volume(key, &self.config.volumes, self.config.replicas, self.config.subvolumes);
        order_entries(&mut record.volumes, &placed);
        if new {
            let meta = listed.meta(!self.config.md5);
            self.index
                .apply(&[Change::Record(key, &record), Change::Meta(key, &meta)])?;
            return Ok(Added::NewKey);
        }
        let recorded = self.index.meta(key)?;
        match recorded {
            Some(meta) if Some(meta.size) != listed.size => {
                // Copies of two sizes hash apart too: an md5 read from the
                // first goes. Remove drops the record and its metadata; the
                // record is put back in the same batch.
                record.hash = None;
                self.index.apply(&[Change::Remove(key), Change::Record(key, &record)])?;
                let line = format!(
                    "{:?}: its copies differ in size ({} bytes on {entry}, {} on another): no size recorded",
                    String::from_utf8_lossy(key),
                    listed.size.unwrap_or(0),
                    meta.size
                );
                self.disagree(key, &line);
            }
            _ => self.index.put(key, &record)?,
        }
        Ok(Added::Copy)
    }

    /// Count and report `key`'s copies as disagreeing (once per key).
    fn disagree(&mut self, key: &[u8], line: &str) {
        if self.undecided.insert(key.to_vec()) {
            self.summary.disagreeing += 1;
            self.progress.report(line);
        }
    }

    /// One copy's md5 was read (or not): record it when it is the first,
    /// and forget the key's md5 when a copy hashes otherwise or cannot be read.
    fn hashed(
        &mut self,
        entry: &str,
        key: Vec<u8>,
        result: Result<[u8; HASH_HEX_BYTES], String>,
    ) -> Result<(), IndexError> {
        let hash = match result {
            Ok(hash) => {
                self.summary.hashed += 1;
                hash
            }
            Err(error) => {
                self.summary.unhashed += 1;
                self.progress.report(&format!(
                    "{:?} on {entry}: cannot read the value for its md5: {error}",
                    String::from_utf8_lossy(&key)
                ));
                self.undecided.insert(key.clone());
                return forget_hash(self.index, &key);
            }
        };
        if self.undecided.contains(&key) {
            return Ok(());
        }
        let Some(mut record) = self.index.get(&key)? else {
            return Ok(());
        };
        match record.hash {
            None => {
                record.hash = Some(hash);
                self.index.put(&key, &record)
            }
            Some(recorded) if recorded == hash => Ok(()),
            Some(_) => {
                let line = format!(
                    "{:?}: its copies differ in md5 ({entry} and another): no md5 recorded",
                    String::from_utf8_lossy(&key)
                );
                self.disagree(&key, &line);
                forget_hash(self.index, &key)
            }
        }
    }
}

/// Record `key` without an md5: its ETag is then its listing's (nginx's).
fn forget_hash(index: &Index, key: &[u8]) -> Result<(), IndexError> {
    let Some(mut record) = index.get(key)? else {
        return Ok(());
    };
    record.hash = None;
    match index.meta(key)? {
        Some(mut meta) if meta.etag.is_none() => {
            meta.etag = Some(listing_etag(meta.mtime_ms, meta.size));
            index.apply(&[Change::Record(key, &record), Change::Meta(key, &meta)])
        }
        _ => index.put(key, &record),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(name: &str, kind: &str) -> Listed {
        Listed {
            name: name.to_owned(),
            kind: kind.to_owned(),
            mtime: None,
            size: None,
        }
    }

    fn shard_of(key: &[u8]) -> [u8; 2] {
        let digest = Md5::digest(key);
        [digest[0], digest[1]]
    }

    #[test]
    fn listing_json_decodes_escaped_names() {
        let body = br#"[
{ "name":"41", "type":"directory", "mtime":"Wed, 01 Jan 2025 00:00:00 GMT" },
{ "name":"we\"ird\\name", "type":"file", "mtime":"Wed, 01 Jan 2025 00:00:00 GMT", "size":5 }
]"#;
        let listing: Vec<Listed> = serde_json::from_slice(body).unwrap();
        assert_eq!(listing[0].name, "41");
        assert_eq!(listing[1].name, "we\"ird\\name");
        assert_eq!(listing[1].kind, "file");
        let meta = listing[1].meta(false);
        assert_eq!((meta.size, meta.mtime_ms), (5, 1_735_689_600_000));
    }

    #[test]
    fn walk_follows_the_layout() {
        let root = Directory::root(0, "v:1");
        let Found::Directory(subvolume) = classify(&root, &listed("sv0A", "directory")) else {
            panic!()
        };
        assert_eq!(
            (subvolume.entry.as_str(), subvolume.path.as_str()),
            ("v:1/sv0A", "/sv0A/")
        );
        let Found::Directory(first) = classify(&subvolume, &listed("5d", "directory")) else {
            panic!()
        };
        let Found::Directory(second) = classify(&first, &listed("41", "directory")) else {
            panic!()
        };
        assert_eq!(second.path, "/sv0A/5d/41/");
        assert_eq!(second.shard, [0x5d, 0x41]);
        assert_eq!(
            classify(&second, &listed("aGVsbG8=", "file")),
            Found::Key(b"hello".to_vec())
        );
        // Shards straight under the root (-subvolumes 1).
        let Found::Directory(first) = classify(&root, &listed("5d", "directory")) else {
            panic!()
        };
        assert_eq!((first.entry.as_str(), first.level), ("v:1", Level::First));
    }

    #[test]
    fn walk_skips_foreign_directories_and_counts_strays() {
        let root = Directory::root(0, "v:1");
        for name in [".nginx", "lost+found", "5D", "sv0a", "abc"] {
            assert_eq!(classify(&root, &listed(name, "directory")), Found::Skip, "{name}");
        }
        assert!(matches!(classify(&root, &listed("README", "file")), Found::Stray(_)));
        let Found::Directory(first) = classify(&root, &listed("5d", "directory")) else {
            panic!()
        };
        let Found::Directory(second) = classify(&first, &listed("41", "directory")) else {
            panic!()
        };
        // In the wrong shard directory, or not base64 at all.
        assert!(matches!(
            classify(&second, &listed("aGVsbG93b3JsZA==", "file")),
            Found::Stray(_)
        ));
        assert!(matches!(
            classify(&second, &listed("not base64!", "file")),
            Found::Stray(_)
        ));
    }

    #[test]
    fn names_with_slashes_are_nested_directories() {
        let key = b"/kz\xfc";
        let name = STANDARD.encode(key);
        assert!(name.contains('/'), "{name}");
        let (head, tail) = name.split_once('/').unwrap();
        let mut second = Directory::root(0, "v:1")
            .child("xx", Level::First)
            .child("yy", Level::Second);
        second.shard = shard_of(key);
        let Found::Directory(nested) = classify(&second, &listed(head, "directory")) else {
            panic!()
        };
        assert_eq!(nested.name, head);
        assert_eq!(classify(&nested, &listed(tail, "file")), Found::Key(key.to_vec()));
    }

    #[test]
    fn merged_slashes_are_put_back() {
        // Keys whose base64 holds `//`, or starts with `/`: nginx stores them
        // with the run of slashes merged into one.
        for key in [&b"\x01\xff\xff\xf1"[..], b"\xff\xf0ab", b"/a\xff\xff\xffb"] {
            let name = STANDARD.encode(key);
            assert!(name.starts_with('/') || name.contains("//"), "{name}");
            let mut merged = name.trim_start_matches('/').to_owned();
            while merged.contains("//") {
                merged = merged.replace("//", "/");
            }
            assert_eq!(
                decode_name(shard_of(key), &merged),
                Some(key.to_vec()),
                "{name} as {merged}"
            );
        }
        assert_eq!(decode_name([0, 0], "a/b"), None);
    }

    #[test]
    fn entries_follow_placement_then_name() {
        let placed = ["c".to_string(), "a".to_string()];
        let mut entries = vec!["z".to_string(), "a".to_string(), "b".to_string(), "c".to_string()];
        order_entries(&mut entries, &placed);
        assert_eq!(entries, ["c", "a", "b", "z"]);
    }

    #[test]
    fn hex_and_subvolume_names() {
        assert_eq!(hex2("0f"), Some(15));
        assert_eq!(hex2("0F"), None);
        assert_eq!(hex2("f"), None);
        assert!(is_subvolume("sv0A") && !is_subvolume("sv0a") && !is_subvolume("sv001"));
    }
}
