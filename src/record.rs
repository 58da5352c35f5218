//! Index records: the value stored under each key in the index.
//!
//! The encoding is the original master's, byte for byte, so that records stay
//! readable by tools that know it:
//!
//! ```text
//! ["DELETED"] ["HASH" + 32 lower-case hex md5] vol1,vol2,...
//! ```
//!
//! A record that is `DELETED` is soft-deleted: unlinked, or a PUT that is in
//! progress or failed. No record at all means hard-deleted or never written.

use std::fmt;

const DELETED_PREFIX: &[u8] = b"DELETED";
const HASH_PREFIX: &[u8] = b"HASH";
/// Length of a hex md5.
pub const HASH_HEX_BYTES: usize = 32;

/// One key's entry in the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Volume entries holding the value (`host:port` or `host:port/svXX`).
    pub volumes: Vec<String>,
    /// Soft-deleted: not visible to reads.
    pub deleted: bool,
    /// Lower-case hex md5 of the whole value, when known.
    pub hash: Option<[u8; HASH_HEX_BYTES]>,
}

/// A record whose bytes do not follow the encoding.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordError {
    /// `HASH` not followed by 32 lower-case hex digits.
    BadHash,
    /// A volume list that is not UTF-8, or has an empty entry.
    BadVolumes,
}

impl fmt::Display for RecordError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::BadHash => write!(formatter, "record hash is not 32 lower-case hex digits"),
            RecordError::BadVolumes => write!(formatter, "record volume list is malformed"),
        }
    }
}

impl std::error::Error for RecordError {}

impl Record {
    /// A record for a value on `volumes`.
    pub fn new(volumes: Vec<String>, deleted: bool, hash: Option<[u8; HASH_HEX_BYTES]>) -> Record {
        let record = Record { volumes, deleted, hash };
        debug_assert!(record.validate().is_ok(), "{record:?}");
        record
    }

    /// Whether reads may see this record.
    pub fn is_live(&self) -> bool {
        !self.deleted
    }

    /// The same record with `deleted` set to `deleted`.
    pub fn with_deleted(&self, deleted: bool) -> Record {
        Record {
            deleted,
            ..self.clone()
        }
    }

    /// Check the invariants that `encode` relies on.
    pub fn validate(&self) -> Result<(), RecordError> {
        if let Some(hash) = &self.hash {
            if !hash.iter().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(RecordError::BadHash);
            }
        }
        let bad = |volume: &String| volume.is_empty() || volume.contains(',');
        if self.volumes.iter().any(bad) {
            return Err(RecordError::BadVolumes);
        }
        Ok(())
    }

    /// The record's bytes in the original encoding.
    pub fn encode(&self) -> Vec<u8> {
        debug_assert!(self.validate().is_ok(), "{self:?}");
        let volume_bytes: usize = self.volumes.iter().map(|volume| volume.len() + 1).sum();
        let mut out = Vec::with_capacity(DELETED_PREFIX.len() + HASH_PREFIX.len() + HASH_HEX_BYTES + volume_bytes);
        if self.deleted {
            out.extend_from_slice(DELETED_PREFIX);
        }
        if let Some(hash) = &self.hash {
            out.extend_from_slice(HASH_PREFIX);
            out.extend_from_slice(hash);
        }
        for (i, volume) in self.volumes.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(volume.as_bytes());
        }
        out
    }

    /// Parse a record's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        let (deleted, rest) = match bytes.strip_prefix(DELETED_PREFIX) {
            Some(rest) => (true, rest),
            None => (false, bytes),
        };
        let (hash, rest) = match rest.strip_prefix(HASH_PREFIX) {
            Some(rest) if rest.len() >= HASH_HEX_BYTES => {
                let mut hash = [0u8; HASH_HEX_BYTES];
                hash.copy_from_slice(&rest[..HASH_HEX_BYTES]);
                (Some(hash), &rest[HASH_HEX_BYTES..])
            }
            Some(_) => return Err(RecordError::BadHash),
            None => (None, rest),
        };
        let text = std::str::from_utf8(rest).map_err(|_| RecordError::BadVolumes)?;
        let volumes = if text.is_empty() {
            Vec::new()
        } else {
            text.split(',').map(str::to_owned).collect()
        };
        let record = Record { volumes, deleted, hash };
        record.validate()?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &[u8; 32] = b"5d41402abc4b2a76b9719d911017c592";

    fn volumes(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn encoding_matches_original() {
        let cases: [(Record, &[u8]); 3] = [
            (
                Record::new(volumes(&["hello", "world"]), true, None),
                b"DELETEDhello,world",
            ),
            (
                Record::new(volumes(&["hello"]), false, Some(*HASH)),
                b"HASH5d41402abc4b2a76b9719d911017c592hello",
            ),
            (
                Record::new(volumes(&["hello"]), true, Some(*HASH)),
                b"DELETEDHASH5d41402abc4b2a76b9719d911017c592hello",
            ),
        ];
        for (record, bytes) in cases {
            assert_eq!(record.encode(), bytes);
            assert_eq!(Record::decode(bytes).unwrap(), record);
        }
    }

    #[test]
    fn decode_rejects_malformed() {
        assert_eq!(Record::decode(b"HASH5d41"), Err(RecordError::BadHash));
        assert_eq!(
            Record::decode(b"HASH5D41402ABC4B2A76B9719D911017C592hello"),
            Err(RecordError::BadHash)
        );
        assert_eq!(Record::decode(b"a,,b"), Err(RecordError::BadVolumes));
        assert_eq!(Record::decode(b"\xffvol"), Err(RecordError::BadVolumes));
    }

    #[test]
    fn subvolume_entries_round_trip() {
        let record = Record::new(volumes(&["localhost:3001/sv0A", "localhost:3002/sv03"]), false, None);
        assert_eq!(record.encode(), b"localhost:3001/sv0A,localhost:3002/sv03");
        assert_eq!(Record::decode(&record.encode()).unwrap(), record);
    }
}
