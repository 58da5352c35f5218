//! Replication: stream one PUT body to every replica at once.
//!
//! The body is read in pieces of at most `PIECE_BYTES`; each piece is shared
//! (reference-counted, not copied) by the uploads to all replicas, and the
//! next piece is read from the client while the current one is written to the
//! volumes. So a PUT holds at most two pieces, whatever the value's size, and
//! the md5 is computed on the way through.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use md5::{Digest, Md5};

use crate::connection::{BodyError, BodyReader, Connection};
use crate::placement::{entry_host, entry_prefix, hex_lower};
use crate::volume::{self, Upload, VolumeError};

/// Largest piece of a body held in memory; a PUT holds two.
pub const PIECE_BYTES: usize = 1024 * 1024;
/// A volume write that makes no progress for this long fails the PUT.
pub const VOLUME_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// How a replicated write failed.
#[derive(Debug)]
pub enum ReplicationError {
    /// The client's body was bad or cut short.
    Body(BodyError),
    /// The body was empty.
    Empty,
    /// A replica failed.
    Volume(VolumeError),
}

/// A finished replicated write.
pub struct Written {
    pub bytes: u64,
    /// Lower-case hex md5 of the value, if asked for.
    pub md5: Option<[u8; 32]>,
}

/// The URL path of `key`'s file under a volume entry.
pub fn entry_path(entry: &str, key_path: &str) -> String {
    format!("{}{key_path}", entry_prefix(entry))
}

/// Stream the request body on `connection` to every entry in `entries`.
pub async fn replicate(
    connection: &mut Connection,
    body: &mut BodyReader,
    declared: Option<u64>,
    entries: &[String],
    key_path: &str,
    with_md5: bool,
    connect_timeout: Duration,
) -> Result<Written, ReplicationError> {
    let first = body
        .next(connection, PIECE_BYTES)
        .await
        .map_err(ReplicationError::Body)?;
    let Some(first) = first else {
        return Err(ReplicationError::Empty);
    };
    let mut hasher = with_md5.then(Md5::new);
    if let Some(hasher) = hasher.as_mut() {
        hasher.update(&first);
    }
    let begins = entries.iter().map(|entry| {
        let first = first.clone();
        async move {
            let path = entry_path(entry, key_path);
            Upload::begin_with(
                entry_host(entry),
                &path,
                declared,
                first,
                connect_timeout,
                VOLUME_IO_TIMEOUT,
            )
            .await
        }
    });
    let mut uploads = collect(join_all(begins).await)?;
    // The first piece went out with the heads. From here on, write each piece
    // to all replicas while reading the next one from the client.
    let mut piece: Option<Bytes> = None;
    loop {
        let (sent, next) = monoio::join!(send_all(&mut uploads, piece.take()), body.next(connection, PIECE_BYTES));
        sent?;
        match next.map_err(ReplicationError::Body)? {
            Some(next) => {
                if let Some(hasher) = hasher.as_mut() {
                    hasher.update(&next);
                }
                piece = Some(next);
            }
            None => break,
        }
    }
    collect(join_all(uploads.into_iter().map(Upload::finish)).await)?;
    let md5 = hasher.map(|hasher| hex_lower(&hasher.finalize().into()));
    Ok(Written {
        bytes: body.received,
        md5,
    })
}

async fn send_all(uploads: &mut [Upload], piece: Option<Bytes>) -> Result<(), ReplicationError> {
    let Some(piece) = piece else { return Ok(()) };
    collect(join_all(uploads.iter_mut().map(|upload| upload.send(piece.clone()))).await).map(drop)
}

fn collect<T>(results: Vec<Result<T, VolumeError>>) -> Result<Vec<T>, ReplicationError> {
    results
        .into_iter()
        .collect::<Result<Vec<T>, _>>()
        .map_err(ReplicationError::Volume)
}

/// Delete `key_path` from every entry, in parallel; the first error, if any.
pub async fn delete_all(entries: &[String], key_path: &str, timeout: Duration) -> Result<(), VolumeError> {
    let deletes = entries
        .iter()
        .map(|entry| async move { volume::delete(entry_host(entry), &entry_path(entry, key_path), timeout).await });
    join_all(deletes).await.into_iter().collect()
}
