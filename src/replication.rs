//! Replication: stream one PUT body to every replica at once.
//!
//! The body is read in pieces of at most `PIECE_BYTES`; each piece is shared
//! (reference-counted, not copied) by the uploads to all replicas, and the
//! next piece is read from the client while the current one is written to the
//! volumes. The md5 is computed on the way through: inline for a one-piece
//! value, and on a helper thread for longer ones, so the reactor's core is
//! left to the body's I/O (hashing 256 MiB is ~0.5 s of CPU here). So a PUT
//! holds at most four pieces (two in I/O, two waiting to be hashed),
//! whatever the value's size.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use openssl::hash::MessageDigest;

use crate::connection::{BodyError, BodyReader, Connection};
use crate::placement::{entry_host, entry_prefix, hex_lower};
use crate::record::Record;
use crate::volume::{self, Download, Settled, Upload, VolumeError};

/// Largest piece of a body held in memory; a PUT holds two.
pub const PIECE_BYTES: usize = 1024 * 1024;
/// A volume write that makes no progress for this long fails the PUT.
pub const VOLUME_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes queued for a hashing thread and not yet hashed, at most: the piece
/// it is hashing and the next one.
const HASH_BACKLOG_BYTES: u64 = 2 * PIECE_BYTES as u64;
/// Hashing threads at once; a PUT that finds them all busy hashes inline.
const HASH_THREADS_MAX: usize = 8;
/// How often a reactor waiting on a hashing thread looks again. A piece
/// takes ~2 ms to hash, so this costs little and needs no cross-thread waker.
const HASH_POLL: Duration = Duration::from_micros(500);

static HASH_THREADS: AtomicUsize = AtomicUsize::new(0);

/// A value's md5: OpenSSL's when it provides MD5 (its assembly hashes 1.3x
/// as fast as the `md-5` crate here, and one core's md5 bounds a big PUT:
/// PERF.md, "md5 at its limit"; nginx links the same libcrypto), else the
/// `md-5` crate's (an OpenSSL in FIPS mode refuses MD5).
#[derive(Clone)]
enum Md5 {
    OpenSsl(openssl::hash::Hasher),
    Rust(md5::Md5),
}

impl Md5 {
    fn new() -> Md5 {
        match openssl::hash::Hasher::new(MessageDigest::md5()) {
            Ok(hasher) => Md5::OpenSsl(hasher),
            Err(_) => Md5::Rust(md5::Digest::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            // MD5's update has no failure mode once its context exists.
            Md5::OpenSsl(hasher) => hasher.update(bytes).expect("OpenSSL MD5 update"),
            Md5::Rust(hasher) => md5::Digest::update(hasher, bytes),
        }
    }

    fn finalize(self) -> [u8; 16] {
        match self {
            Md5::OpenSsl(mut hasher) => {
                let digest = hasher.finish().expect("OpenSSL MD5 finish");
                digest.as_ref().try_into().expect("an MD5 digest is 16 bytes")
            }
            Md5::Rust(hasher) => md5::Digest::finalize(hasher).into(),
        }
    }
}

/// How a replicated write failed.
#[derive(Debug)]
pub enum ReplicationError {
    /// The client's body was bad or cut short.
    Body(BodyError),
    /// The body was empty.
    Empty,
    /// A replica failed.
    Volume(VolumeError),
    /// The volume the value was copied from failed (a copy, not a PUT).
    Source(VolumeError),
    /// The value's md5 is not the one the client said it sent.
    BadDigest,
    /// The writer's gate stopped the write before its last bytes.
    Gate(GateError),
}

/// Why a writer's `Gate` stopped a write before its last bytes.
#[derive(Debug)]
pub enum GateError {
    /// The index failed.
    Index(crate::index::IndexError),
    /// The write has nowhere to go any more (a part whose upload ended).
    Gone,
    /// A wait of the gate ran out.
    Busy,
    /// The writer's lock on its key lapsed (`Gate::may_send`).
    LockLost,
}

/// Where a replicated write's bytes come from: a client's body, or another
/// key's value on a volume.
// Futures here never leave their reactor thread (monoio is thread-per-core),
// so no `Send` bound is wanted on them.
#[allow(async_fn_in_trait)]
pub trait PieceSource {
    /// The next piece of at most `bytes_max` bytes; None at the end.
    async fn next_piece(&mut self, bytes_max: usize) -> Result<Option<Bytes>, ReplicationError>;
    /// Bytes delivered so far.
    fn delivered(&self) -> u64;
    /// Whether the source ended cleanly, asked once its last piece is in
    /// hand and its digest matched: a client body followed by bytes that
    /// are no request was longer than it said.
    fn end_check(&self) -> Result<(), ReplicationError> {
        Ok(())
    }
    /// A checksum the source verified its bytes against, to keep with the
    /// value: (metadata entry name, value).
    fn checksum(&self) -> Option<(String, String)> {
        None
    }
}

/// A request body read from the client's connection.
pub struct ClientBody<'a> {
    pub connection: &'a mut Connection,
    pub body: BodyReader,
    /// The client waits for `100 Continue` before it sends the body: sent
    /// when the first piece is asked for (after the record is written).
    pub continue_pending: bool,
}

impl PieceSource for ClientBody<'_> {
    async fn next_piece(&mut self, bytes_max: usize) -> Result<Option<Bytes>, ReplicationError> {
        if std::mem::take(&mut self.continue_pending) && self.connection.send_continue().await.is_err() {
            return Err(ReplicationError::Body(BodyError::ContinueFailed));
        }
        self.body
            .next(self.connection, bytes_max)
            .await
            .map_err(ReplicationError::Body)
    }

    fn delivered(&self) -> u64 {
        self.body.received
    }

    fn end_check(&self) -> Result<(), ReplicationError> {
        match self.body.excess {
            true => Err(ReplicationError::Body(BodyError::TooLong)),
            false => Ok(()),
        }
    }
}

/// A value whose bytes are all in hand and checked, at the gate: what it
/// will be once its last bytes reach the replicas.
pub struct Sealed {
    pub bytes: u64,
    /// The value's md5, if asked for.
    pub md5: Option<[u8; 16]>,
    /// A checksum the source verified (`PieceSource::checksum`).
    pub checksum: Option<(String, String)>,
}

/// What a writer checks or does just before a replicated value's last
/// bytes go out: their arrival is what makes each volume store the value
/// (nginx writes a PUT to a temporary file and renames it into place when
/// the body completes), so until then every replica holds what it held
/// before, whole. An error here fails the write with no replica changed.
#[allow(async_fn_in_trait)]
pub trait Gate {
    async fn before_last(&mut self, sealed: &Sealed) -> Result<(), ReplicationError>;
    /// Whether the writer may still send bytes (it still provably holds
    /// its key: `Store::still_held`). Asked before the first piece, before
    /// each piece and before the uploads are finished; false fails the
    /// write at once, so no byte goes out after the writer's lock lapsed.
    fn may_send(&self) -> bool {
        true
    }
    /// Whether `may_send` can turn false while bytes are on their way (a
    /// key lease that may lapse: PostgreSQL); then the write also watches
    /// it while a piece goes out and while it waits for the volumes'
    /// verdicts, and resets every upload once it turns false.
    fn fenced(&self) -> bool {
        false
    }
}

/// How often a fenced write (`Gate::fenced`) asks, while its requests are
/// on their way to the volumes, whether it still holds its key: well
/// inside what is left of a lease when `may_send` turns false
/// (`index::pg::KEY_LEASE_LEFT_MIN_MS`, 3 s).
const LEASE_POLL: Duration = Duration::from_millis(100);

/// `work` (volume requests of a writer holding a key), unless the key can
/// no longer be proven held (`held` false; only where the hold can lapse,
/// `fenced`) before it ends: then None, and `work` is dropped, which
/// resets its volume connections (they drop what they had not sent), so
/// none of its bytes reaches a volume after another master may have taken
/// the key.
pub async fn unless_lease_lost<T>(fenced: bool, held: impl Fn() -> bool, work: impl Future<Output = T>) -> Option<T> {
    let lost = async {
        if !fenced {
            return std::future::pending().await;
        }
        while held() {
            monoio::time::sleep(LEASE_POLL).await;
        }
    };
    monoio::select! {
        done = work => Some(done),
        () = lost => None,
    }
}

/// A write whose key's lease can no longer be proven while its bytes were
/// on their way: every upload is dropped at once, each connection reset
/// (`volume::Upload`'s connections drop what they had not sent yet), so no
/// byte of it reaches a volume after another master may have taken the
/// key. What each volume holds is unknown (a body its kernel had taken
/// whole is stored).
fn cut_off(uploads: Vec<Option<Upload>>) -> Failed {
    let settled = uploads
        .iter()
        .map(|upload| match upload {
            Some(_) => Settled::Unknown,
            None => Settled::NotTaken,
        })
        .collect();
    drop(uploads);
    lease_lost_failure(settled)
}

/// The failure of a write cut off because its lease could no longer be
/// proven (`cut_off`; uploads dropped while they began or finished are
/// each `Unknown`).
fn lease_lost_failure(settled: Vec<Settled>) -> Failed {
    crate::metrics::count_replica_failure(false);
    Failed {
        error: ReplicationError::Gate(GateError::LockLost),
        settled,
    }
}

/// A write with nothing to do before its last bytes (a multipart part).
pub struct Open;

impl Gate for Open {
    async fn before_last(&mut self, _sealed: &Sealed) -> Result<(), ReplicationError> {
        Ok(())
    }
}

/// What a replicated write should do besides copying the bytes.
pub struct Target<'a> {
    /// The volume entries to write.
    pub entries: &'a [String],
    /// The key's path under each entry.
    pub key_path: &'a str,
    /// The value's length, when known before it arrives.
    pub declared: Option<u64>,
    /// Compute the value's md5.
    pub with_md5: bool,
    /// The md5 the value must have (`Content-MD5`): checked before the last
    /// byte reaches a volume, so a mismatch leaves every replica as it was.
    pub expected_md5: Option<[u8; 16]>,
    /// A 0-byte value is a value (S3), not a missing body (native PUT).
    pub allow_empty: bool,
    pub connect_timeout: Duration,
}

/// A finished replicated write.
pub struct Written {
    pub bytes: u64,
    /// The value's md5, if asked for.
    pub md5: Option<[u8; 16]>,
}

/// The URL path of `key`'s file under a volume entry.
pub fn entry_path(entry: &str, key_path: &str) -> String {
    format!("{}{key_path}", entry_prefix(entry))
}

/// A replicated write that failed, and what each replica holds because of it.
#[derive(Debug)]
pub struct Failed {
    pub error: ReplicationError,
    /// Per entry, in `entries` order: whether it took the new value. Every
    /// upload is settled before this is returned, so a cleanup that follows
    /// cannot race one still in flight.
    pub settled: Vec<Settled>,
}

/// The md5 check of a write with an expected md5: the hasher is finished
/// once the last piece is known, before that piece reaches a volume.
struct Digested {
    hasher: Option<Hasher>,
    md5: Option<[u8; 16]>,
}

impl Digested {
    async fn update(&mut self, piece: Bytes, parallel: bool) {
        if let Some(hasher) = self.hasher.as_mut() {
            if parallel {
                hasher.go_parallel();
            }
            hasher.update(piece).await;
        }
    }

    /// Finish hashing (the last piece is in); false when the md5 differs
    /// from `expected`.
    async fn finish(&mut self, expected: Option<[u8; 16]>) -> bool {
        if let Some(hasher) = self.hasher.take() {
            self.md5 = Some(hasher.finish().await);
        }
        expected.is_none_or(|expected| self.md5 == Some(expected))
    }

    /// The value `source` delivered, once hashing is finished.
    fn sealed<S: PieceSource>(&self, source: &S) -> Sealed {
        Sealed {
            bytes: source.delivered(),
            md5: self.md5,
            checksum: source.checksum(),
        }
    }
}

/// Stream the bytes of `source` to every entry of `target`.
pub async fn replicate<S: PieceSource, G: Gate>(
    source: &mut S,
    target: &Target<'_>,
    gate: &mut G,
) -> Result<Written, Failed> {
    let entries = target.entries;
    let untouched = |error| Failed {
        error,
        settled: vec![Settled::NotTaken; entries.len()],
    };
    let first = match source.next_piece(PIECE_BYTES).await {
        Ok(Some(first)) => first,
        Ok(None) if target.allow_empty => Bytes::new(),
        Ok(None) => return Err(untouched(ReplicationError::Empty)),
        Err(error) => return Err(untouched(error)),
    };
    let hashing = target.with_md5 || target.expected_md5.is_some();
    let mut digest = Digested {
        hasher: hashing.then(|| Hasher::Inline(Md5::new())),
        md5: None,
    };
    digest.update(first.clone(), false).await;
    // A declared length tells when the last piece is in hand: then its md5
    // is checked before it goes out (an empty body ends at once).
    let declared = if first.is_empty() { Some(0) } else { target.declared };
    let is_last = |source: &S| declared == Some(source.delivered());
    if is_last(source) {
        if !digest.finish(target.expected_md5).await {
            return Err(untouched(ReplicationError::BadDigest));
        }
        source.end_check().map_err(untouched)?;
    }
    // Whether the gate was passed: once, before the last bytes go out.
    let mut gated = false;
    if is_last(source) {
        gate.before_last(&digest.sealed(source)).await.map_err(untouched)?;
        gated = true;
    }
    if !gate.may_send() {
        return Err(untouched(ReplicationError::Gate(GateError::LockLost)));
    }
    let begins = entries.iter().map(|entry| {
        let first = first.clone();
        async move {
            let path = entry_path(entry, target.key_path);
            Upload::begin_with(
                entry_host(entry),
                &path,
                declared,
                first,
                target.connect_timeout,
                VOLUME_IO_TIMEOUT,
            )
            .await
        }
    });
    let fenced = gate.fenced();
    let begun = unless_lease_lost(fenced, || gate.may_send(), join_all(begins)).await;
    let Some(begun) = begun else {
        return Err(lease_lost_failure(vec![Settled::Unknown; entries.len()]));
    };
    let mut uploads = Vec::with_capacity(entries.len());
    let mut failure = None;
    for begun in begun {
        match begun {
            Ok(upload) => uploads.push(Some(upload)),
            Err(error) => {
                uploads.push(None);
                failure.get_or_insert(error);
            }
        }
    }
    if let Some(error) = failure {
        return Err(abandon(uploads, ReplicationError::Volume(error)).await);
    }
    // The first piece went out with the heads. From here on, write each piece
    // to all replicas while reading the next one from the source.
    let mut piece: Option<Bytes> = None;
    while !is_last(source) || piece.is_some() {
        if !gate.may_send() {
            return Err(abandon(uploads, ReplicationError::Gate(GateError::LockLost)).await);
        }
        let sending = unless_lease_lost(fenced, || gate.may_send(), async {
            monoio::join!(send_all(&mut uploads, piece.take()), source.next_piece(PIECE_BYTES))
        })
        .await;
        let Some((sent, next)) = sending else {
            return Err(cut_off(uploads));
        };
        if let Err(error) = sent {
            return Err(abandon(uploads, ReplicationError::Volume(error)).await);
        }
        match next {
            Ok(Some(next)) => {
                digest.update(next.clone(), true).await;
                if is_last(source) {
                    if !digest.finish(target.expected_md5).await {
                        return Err(abandon(uploads, ReplicationError::BadDigest).await);
                    }
                    if let Err(error) = source.end_check() {
                        return Err(abandon(uploads, error).await);
                    }
                    if let Err(error) = gate.before_last(&digest.sealed(source)).await {
                        return Err(abandon(uploads, error).await);
                    }
                    gated = true;
                }
                piece = Some(next);
            }
            Ok(None) => break,
            Err(error) => return Err(abandon(uploads, error).await),
        }
    }
    // A body of unknown length is chunked to the volumes: it is not complete
    // (and so not stored) until the uploads finish, after this check.
    if !digest.finish(target.expected_md5).await {
        return Err(abandon(uploads, ReplicationError::BadDigest).await);
    }
    if !gated {
        if let Err(error) = gate.before_last(&digest.sealed(source)).await {
            return Err(abandon(uploads, error).await);
        }
    }
    // A chunked upload's last bytes (its end) go out with the finish.
    if !gate.may_send() {
        return Err(abandon(uploads, ReplicationError::Gate(GateError::LockLost)).await);
    }
    let finishes = uploads
        .into_iter()
        .map(|upload| upload.expect("every upload is live until one fails").finish_settled());
    // Dropped unfinished, the uploads reset their connections.
    let finished = unless_lease_lost(fenced, || gate.may_send(), join_all(finishes)).await;
    let Some(finished) = finished else {
        return Err(lease_lost_failure(vec![Settled::Unknown; entries.len()]));
    };
    let mut settled = Vec::with_capacity(entries.len());
    let mut failure = None;
    for (outcome, result) in finished {
        settled.push(outcome);
        if let Err(error) = result {
            failure.get_or_insert(error);
        }
    }
    if let Some(error) = failure {
        crate::metrics::count_replica_failure(true);
        return Err(Failed {
            error: ReplicationError::Volume(error),
            settled,
        });
    }
    Ok(Written {
        bytes: source.delivered(),
        md5: digest.md5,
    })
}

/// Settle every upload still open after `error` (see `Upload::settle`).
async fn abandon(uploads: Vec<Option<Upload>>, error: ReplicationError) -> Failed {
    crate::metrics::count_replica_failure(matches!(error, ReplicationError::Volume(_)));
    let settles = uploads.into_iter().map(|upload| async move {
        match upload {
            Some(upload) => upload.settle().await,
            // Its begin or a write failed: the body never completed.
            None => Settled::NotTaken,
        }
    });
    Failed {
        error,
        settled: join_all(settles).await,
    }
}

/// The md5 of a streamed value, inline or on a helper thread.
enum Hasher {
    Inline(Md5),
    Parallel(HashThread),
}

/// A thread hashing the pieces sent to it, in order.
struct HashThread {
    pieces: mpsc::Sender<Bytes>,
    /// Bytes the thread has hashed.
    hashed: Arc<AtomicU64>,
    /// Bytes sent to the thread.
    queued: u64,
    thread: thread::JoinHandle<[u8; 16]>,
}

impl Hasher {
    /// Move the hashing to a thread, if one is free (a value of more than
    /// one piece is worth it).
    fn go_parallel(&mut self) {
        let Hasher::Inline(md5) = self else { return };
        if HASH_THREADS.fetch_add(1, Ordering::Relaxed) >= HASH_THREADS_MAX {
            HASH_THREADS.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let (sender, receiver) = mpsc::channel::<Bytes>();
        let hashed = Arc::new(AtomicU64::new(0));
        let mut md5 = md5.clone();
        let progress = hashed.clone();
        let spawned = thread::Builder::new().name("mkv-md5".into()).spawn(move || {
            for piece in receiver {
                md5.update(&piece);
                progress.fetch_add(piece.len() as u64, Ordering::Release);
            }
            HASH_THREADS.fetch_sub(1, Ordering::Relaxed);
            md5.finalize()
        });
        match spawned {
            Ok(thread) => {
                *self = Hasher::Parallel(HashThread {
                    pieces: sender,
                    hashed,
                    queued: 0,
                    thread,
                })
            }
            // No thread to be had: go on inline.
            Err(_) => {
                HASH_THREADS.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Hash `piece` after every piece before it. Waits while the thread is
    /// HASH_BACKLOG_BYTES behind, which bounds the pieces held for it.
    async fn update(&mut self, piece: Bytes) {
        match self {
            Hasher::Inline(md5) => md5.update(&piece),
            Hasher::Parallel(thread) => {
                while thread.queued - thread.hashed.load(Ordering::Acquire) >= HASH_BACKLOG_BYTES {
                    monoio::time::sleep(HASH_POLL).await;
                }
                thread.queued += piece.len() as u64;
                let sent = thread.pieces.send(piece);
                sent.expect("the hashing thread runs until its channel closes");
            }
        }
    }

    /// The digest of everything hashed.
    async fn finish(self) -> [u8; 16] {
        match self {
            Hasher::Inline(md5) => md5.finalize(),
            Hasher::Parallel(HashThread { pieces, thread, .. }) => {
                // Closing the channel ends the thread's loop.
                drop(pieces);
                while !thread.is_finished() {
                    monoio::time::sleep(HASH_POLL).await;
                }
                thread.join().expect("the hashing thread does not panic")
            }
        }
    }
}

/// Write `piece` to every live upload. An upload whose write fails is
/// dropped (its body can no longer complete, so the volume discards it);
/// the first such error is returned.
async fn send_all(uploads: &mut [Option<Upload>], piece: Option<Bytes>) -> Result<(), VolumeError> {
    let Some(piece) = piece else { return Ok(()) };
    let sends = uploads.iter_mut().map(|slot| {
        let piece = piece.clone();
        async move {
            let upload = slot.as_mut()?;
            let error = upload.send(piece).await.err()?;
            *slot = None;
            Some(error)
        }
    });
    match join_all(sends).await.into_iter().flatten().next() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Delete `key_path` from every entry, in parallel; the first error, if any.
pub async fn delete_all(entries: &[String], key_path: &str, timeout: Duration) -> Result<(), VolumeError> {
    let deletes = entries
        .iter()
        .map(|entry| async move { volume::delete(entry_host(entry), &entry_path(entry, key_path), timeout).await });
    join_all(deletes).await.into_iter().collect()
}

/// The md5 (lower-case hex) of the file at `key_path` on `entry`, read
/// through; None when the volume has no such file.
pub async fn copy_md5(entry: &str, key_path: &str, timeout: Duration) -> Result<Option<[u8; 32]>, VolumeError> {
    let path = entry_path(entry, key_path);
    let download = Download::begin(entry_host(entry), &path, timeout, VOLUME_IO_TIMEOUT);
    let Some(mut download) = download.await? else {
        return Ok(None);
    };
    let mut md5 = Md5::new();
    while let Some(piece) = download.next(PIECE_BYTES).await? {
        md5.update(&piece);
    }
    download.finish();
    Ok(Some(hex_lower(&md5.finalize())))
}

/// The md5 of every copy `record` names, read through in parallel, in
/// record order (None where a volume has no such file). A volume that fails
/// fails the call: nothing is decided on a guess.
async fn copy_md5s(record: &Record, key_path: &str, timeout: Duration) -> Result<Vec<Option<[u8; 32]>>, VolumeError> {
    let reads = record.volumes.iter().map(|entry| copy_md5(entry, key_path, timeout));
    join_all(reads).await.into_iter().collect()
}

/// The entries of `record` whose file at `key_path` provably holds its
/// value: the bytes hash to the record's md5. A record without an md5 proves
/// nothing, so none.
pub async fn copies_holding(record: &Record, key_path: &str, timeout: Duration) -> Result<Vec<String>, VolumeError> {
    let Some(expected) = record.hash else {
        return Ok(Vec::new());
    };
    let md5s = copy_md5s(record, key_path, timeout).await?;
    let holding = record
        .volumes
        .iter()
        .zip(md5s)
        .filter(|(_, md5)| *md5 == Some(expected));
    Ok(holding.map(|(entry, _)| entry.clone()).collect())
}

/// The md5 every copy of `record`'s value hashes to, when every copy is
/// there, all hold the same bytes, and (if the record has an md5) those are
/// its bytes; None otherwise. What a soft-deleted record names can be the
/// leftovers of a failed PUT over it: copies of different values.
pub async fn agreed_md5(record: &Record, key_path: &str, timeout: Duration) -> Result<Option<[u8; 32]>, VolumeError> {
    let mut agreed = record.hash;
    for md5 in copy_md5s(record, key_path, timeout).await? {
        let Some(md5) = md5 else { return Ok(None) };
        if agreed.is_some_and(|agreed| agreed != md5) {
            return Ok(None);
        }
        agreed = Some(md5);
    }
    Ok(agreed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OpenSSL's MD5 and the `md-5` crate's (the fallback) agree, across
    /// pieces of every length around a block.
    #[test]
    fn openssl_md5_matches_the_md5_crate() {
        let Md5::OpenSsl(mut openssl) = Md5::new() else {
            panic!("this machine's OpenSSL provides MD5")
        };
        let mut rust = Md5::Rust(md5::Digest::new());
        for length in 0..200usize {
            let piece = vec![length as u8; length];
            openssl.update(&piece).unwrap();
            rust.update(&piece);
        }
        assert_eq!(Md5::OpenSsl(openssl).finalize(), rust.finalize());
    }

    /// The digest is the same whether pieces are hashed inline or on the
    /// thread, including pieces that wait for the thread's backlog.
    #[test]
    fn parallel_hashing_matches_inline() {
        let pieces: Vec<Bytes> = (0..9u8)
            .map(|i| Bytes::from(vec![i; PIECE_BYTES - usize::from(i)]))
            .collect();
        let mut whole = Md5::new();
        for piece in &pieces {
            whole.update(piece);
        }
        let expected = whole.finalize();
        let mut runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .expect("a runtime");
        let got = runtime.block_on(async {
            let mut hasher = Hasher::Inline(Md5::new());
            hasher.update(pieces[0].clone()).await;
            hasher.go_parallel();
            assert!(matches!(hasher, Hasher::Parallel(_)), "a hashing thread was free");
            for piece in &pieces[1..] {
                hasher.update(piece.clone()).await;
            }
            hasher.finish().await
        });
        assert_eq!(got, expected);
    }
}
