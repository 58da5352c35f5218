//! Object metadata: what a value is beyond where it lives.
//!
//! The record (`record`) stays the original master's bytes, which other tools
//! read. What S3 needs beyond it (the value's size, its modification time,
//! its content type, and for a multipart upload its ETag, which is not an
//! md5 of the value) lives beside it in the index, in its own column, and is
//! written in the same atomic batch as the live record. Native PUTs write
//! size and mtime too; `rebuild` restores them from the volumes' listings.
//!
//! Encoding, version 1 (little-endian):
//!
//! ```text
//! 0x01 | size u64 | mtime_ms u64 | etag_len u8 | etag | type_len u16 | content type
//!      | user count u8 | (name_len u8 | name | value_len u16 | value) per user field
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

const VERSION: u8 = 1;
/// Longest ETag kept: a multipart one is 32 hex digits, '-' and a part count.
pub const ETAG_BYTES_MAX: usize = 64;
/// Longest content type kept; longer ones are refused at PUT (a header this
/// long is not a media type).
pub const CONTENT_TYPE_BYTES_MAX: usize = 1024;
/// User metadata (`x-amz-meta-*` names and values) a value may carry, in all:
/// S3's own limit.
pub const USER_BYTES_MAX: usize = 2048;
/// User metadata fields a value may carry.
const USER_FIELDS_MAX: usize = 255;

/// A value's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// Bytes in the value.
    pub size: u64,
    /// When it was written, in milliseconds since the Unix epoch.
    pub mtime_ms: u64,
    /// The ETag when it is not the record's md5 (multipart uploads).
    pub etag: Option<String>,
    /// The `Content-Type` given at PUT.
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-NAME: VALUE`): names lower-case, without
    /// the prefix. A name starting with `:` is a standard header stored
    /// with the value and sent back on reads (`:cache-control`,
    /// `:content-disposition`, ...): no `x-amz-meta-` name can start so.
    /// A name starting with `!` is an entry of mkv's own (a checksum, a
    /// multipart value's part sizes), never sent as user metadata nor
    /// counted against `USER_BYTES_MAX`; S3 refuses such user names.
    pub user: Vec<(String, String)>,
}

/// Metadata bytes that do not decode.
#[derive(Debug, PartialEq, Eq)]
pub struct MetaError;

impl std::fmt::Display for MetaError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "object metadata is malformed")
    }
}

impl std::error::Error for MetaError {}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

impl Meta {
    /// Metadata of a value of `size` bytes written now.
    pub fn written_now(size: u64) -> Meta {
        Meta {
            size,
            mtime_ms: now_ms(),
            etag: None,
            content_type: None,
            user: Vec::new(),
        }
    }

    /// Whether user metadata fits the limits.
    pub fn user_fits(user: &[(String, String)]) -> bool {
        let bytes: usize = user
            .iter()
            .filter(|(name, _)| !name.starts_with('!'))
            .map(|(name, value)| name.len() + value.len())
            .sum();
        bytes <= USER_BYTES_MAX
            && user.len() <= USER_FIELDS_MAX
            && user
                .iter()
                .all(|(name, value)| name.len() <= 255 && value.len() <= usize::from(u16::MAX))
    }

    /// The bytes stored in the index.
    pub fn encode(&self) -> Vec<u8> {
        let etag = self.etag.as_deref().unwrap_or("").as_bytes();
        let content_type = self.content_type.as_deref().unwrap_or("").as_bytes();
        debug_assert!(etag.len() <= ETAG_BYTES_MAX && content_type.len() <= CONTENT_TYPE_BYTES_MAX);
        let mut out = Vec::with_capacity(20 + etag.len() + content_type.len());
        out.push(VERSION);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.mtime_ms.to_le_bytes());
        out.push(etag.len() as u8);
        out.extend_from_slice(etag);
        out.extend_from_slice(&(content_type.len() as u16).to_le_bytes());
        out.extend_from_slice(content_type);
        debug_assert!(Meta::user_fits(&self.user));
        out.push(self.user.len() as u8);
        for (name, value) in &self.user {
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    /// Parse stored bytes.
    pub fn decode(bytes: &[u8]) -> Result<Meta, MetaError> {
        let mut reader = Reader { bytes };
        if reader.take(1)? != [VERSION] {
            return Err(MetaError);
        }
        let size = u64::from_le_bytes(reader.array()?);
        let mtime_ms = u64::from_le_bytes(reader.array()?);
        let etag_bytes = usize::from(reader.take(1)?[0]);
        let etag = reader.text(etag_bytes)?;
        let type_bytes = usize::from(u16::from_le_bytes(reader.array()?));
        let content_type = reader.text(type_bytes)?;
        let fields = usize::from(reader.take(1)?[0]);
        let mut user = Vec::with_capacity(fields);
        for _ in 0..fields {
            let name_bytes = usize::from(reader.take(1)?[0]);
            let name = reader.text(name_bytes)?.unwrap_or_default();
            let value_bytes = usize::from(u16::from_le_bytes(reader.array()?));
            let value = reader.text(value_bytes)?.unwrap_or_default();
            user.push((name, value));
        }
        if !reader.bytes.is_empty() || etag_bytes > ETAG_BYTES_MAX || type_bytes > CONTENT_TYPE_BYTES_MAX {
            return Err(MetaError);
        }
        Ok(Meta {
            size,
            mtime_ms,
            etag,
            content_type,
            user,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], MetaError> {
        if self.bytes.len() < count {
            return Err(MetaError);
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], MetaError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    /// `count` bytes of UTF-8; None when empty.
    fn text(&mut self, count: usize) -> Result<Option<String>, MetaError> {
        let text = std::str::from_utf8(self.take(count)?).map_err(|_| MetaError)?;
        Ok((!text.is_empty()).then(|| text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let metas = [
            Meta::default(),
            Meta {
                size: 5 << 40,
                mtime_ms: 1_700_000_000_123,
                etag: Some("0123456789abcdef0123456789abcdef-10000".into()),
                content_type: Some("text/plain; charset=utf-8".into()),
                user: vec![("colour".into(), "blue".into()), ("empty".into(), String::new())],
            },
        ];
        for meta in metas {
            assert_eq!(Meta::decode(&meta.encode()), Ok(meta));
        }
    }

    #[test]
    fn rejects_malformed() {
        let good = Meta::written_now(7).encode();
        assert_eq!(Meta::decode(&good[..good.len() - 1]), Err(MetaError));
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(Meta::decode(&longer), Err(MetaError));
        let mut version = good;
        version[0] = 2;
        assert_eq!(Meta::decode(&version), Err(MetaError));
    }
}
