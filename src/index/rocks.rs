//! The RocksDB engine of the index: the embedded default.
//!
//! This is the only module that imports `rocksdb`. Records are stored in the
//! original master's encoding (see `record`) so the database stays readable by
//! tools that know it. The options favour point lookups (bloom filters, a
//! block cache, hash-indexed data blocks); listing uses bounded iterators over
//! a snapshot. A write returns once it is in RocksDB's write-ahead log, which
//! survives `kill -9` of the master; with `sync` it is also fsynced.

use std::path::Path;

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DataBlockIndexType, Options,
    ReadOptions, WriteBatch, WriteOptions, DB,
};

use super::{decode_meta, decode_record, key_after, prefix_end, Change, IndexError, IndexOptions};
use crate::meta::Meta;
use crate::record::{Record, RecordError};

/// Column family of records' metadata (`meta`), keyed like the records.
const META_COLUMN: &str = "meta";
/// Column family of S3 state that is not per key: buckets and multipart
/// uploads (`s3::state` owns its key layout).
const STATE_COLUMN: &str = "s3";

/// Bloom filter bits per key: about 1% false positives on a miss.
const BLOOM_BITS_PER_KEY: f64 = 10.0;
/// Data block size: a point lookup that misses the block cache reads one
/// block, so small blocks keep that read short (the block index grows).
const BLOCK_BYTES: usize = 4096;

fn io_error(error: rocksdb::Error) -> IndexError {
    IndexError::Io(error.into_string())
}

/// The index in an embedded RocksDB.
pub struct Rocks {
    db: DB,
    write_options: WriteOptions,
    /// Made once: `DB::get_pinned` would allocate and free a C++
    /// `ReadOptions` on every point read.
    read_options: ReadOptions,
}

impl Rocks {
    /// Open (creating if missing) the index at `path`.
    pub fn open(path: &Path, options: &IndexOptions) -> Result<Rocks, IndexError> {
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
        if options.block_cache_bytes == 0 {
            table.disable_cache();
        } else {
            table.set_block_cache(&rocksdb::Cache::new_lru_cache(options.block_cache_bytes));
        }
        // Index and filter blocks stay in the table readers, outside the
        // block cache (about 2 bytes a key): inside it, a stream of cold data
        // blocks would evict them and every miss would re-read them.
        table.set_cache_index_and_filter_blocks(false);
        table.set_index_type(BlockBasedIndexType::BinarySearch);
        // A hash inside each data block turns the in-block binary search of a
        // point lookup into one probe, and still allows ordered iteration.
        table.set_data_block_index_type(DataBlockIndexType::BinaryAndHash);
        table.set_data_block_hash_ratio(0.75);
        table.set_format_version(5);
        table.set_block_size(BLOCK_BYTES);
        table.set_index_block_restart_interval(16);

        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.set_block_based_table_factory(&table);
        // Records are ~100 bytes; uncompressed blocks cost a point lookup that
        // misses the block cache one pread and no decompression.
        db_options.set_compression_type(rocksdb::DBCompressionType::None);
        db_options.increase_parallelism(2);
        db_options.set_max_background_jobs(2);
        db_options.set_level_compaction_dynamic_level_bytes(true);
        db_options.set_memtable_whole_key_filtering(true);
        db_options.set_memtable_prefix_bloom_ratio(0.1);
        db_options.set_keep_log_file_num(4);

        db_options.create_missing_column_families(true);
        let columns = [META_COLUMN, STATE_COLUMN].map(|name| ColumnFamilyDescriptor::new(name, db_options.clone()));
        let db = DB::open_cf_descriptors(&db_options, path, columns).map_err(|error| {
            let message = error.into_string();
            if message.contains("lock") || message.contains("LOCK") {
                IndexError::Locked(path.to_owned())
            } else {
                IndexError::Open(path.to_owned(), message)
            }
        })?;
        let mut write_options = WriteOptions::default();
        write_options.set_sync(options.sync);
        Ok(Rocks {
            db,
            write_options,
            read_options: ReadOptions::default(),
        })
    }

    /// The record of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, IndexError> {
        let bytes = self.db.get_pinned_opt(key, &self.read_options).map_err(io_error)?;
        decode_record(key, bytes.as_deref())
    }

    fn column(&self, name: &str) -> &ColumnFamily {
        self.db.cf_handle(name).expect("opened with every column family")
    }

    /// Store `record` under `key` (durable in the write-ahead log on return).
    pub fn put(&self, key: &[u8], record: &Record) -> Result<(), IndexError> {
        self.apply(&[Change::Record(key, record)])
    }

    /// Remove `key`'s record and metadata (hard delete).
    pub fn delete(&self, key: &[u8]) -> Result<(), IndexError> {
        self.apply(&[Change::Remove(key)])
    }

    /// The metadata of `key`, if any was recorded.
    pub fn meta(&self, key: &[u8]) -> Result<Option<Meta>, IndexError> {
        let bytes = self
            .db
            .get_pinned_cf_opt(self.column(META_COLUMN), key, &self.read_options)
            .map_err(io_error)?;
        decode_meta(key, bytes.as_deref())
    }

    /// Apply `changes` in one atomic write.
    pub fn apply(&self, changes: &[Change<'_>]) -> Result<(), IndexError> {
        let mut batch = WriteBatch::default();
        for change in changes {
            match *change {
                // Validated by `Index::apply`.
                Change::Record(key, record) => batch.put(key, record.encode()),
                Change::Meta(key, meta) => batch.put_cf(self.column(META_COLUMN), key, meta.encode()),
                Change::Remove(key) => {
                    batch.delete(key);
                    batch.delete_cf(self.column(META_COLUMN), key);
                }
                Change::StatePut(key, value) => batch.put_cf(self.column(STATE_COLUMN), key, value),
                Change::StateDelete(key) => batch.delete_cf(self.column(STATE_COLUMN), key),
            }
        }
        self.db.write_opt(batch, &self.write_options).map_err(io_error)
    }

    /// The S3 state entry at `key`.
    pub fn state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, IndexError> {
        self.db
            .get_cf_opt(self.column(STATE_COLUMN), key, &self.read_options)
            .map_err(io_error)
    }

    /// Visit S3 state entries starting with `prefix`, from `start` on, in
    /// byte order, until `visit` returns false or `visits_max` were seen.
    pub fn scan_state(
        &self,
        prefix: &[u8],
        start: &[u8],
        visits_max: usize,
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), IndexError> {
        let mut read_options = ReadOptions::default();
        if let Some(end) = prefix_end(prefix) {
            read_options.set_iterate_upper_bound(end);
        }
        let mut iterator = self.db.raw_iterator_cf_opt(self.column(STATE_COLUMN), read_options);
        iterator.seek(if start > prefix { start } else { prefix });
        let mut visits = 0;
        while iterator.valid() && visits < visits_max {
            let (key, value) = (iterator.key().expect("valid"), iterator.value().expect("valid"));
            if !visit(key, value) {
                return Ok(());
            }
            visits += 1;
            iterator.next();
        }
        iterator.status().map_err(io_error)
    }

    /// Store many records in one atomic write.
    pub fn put_batch<'a>(&self, records: impl IntoIterator<Item = (&'a [u8], &'a Record)>) -> Result<(), IndexError> {
        let mut batch = WriteBatch::default();
        for (key, record) in records {
            batch.put(key, record.encode());
        }
        self.db.write_opt(batch, &self.write_options).map_err(io_error)
    }

    /// RocksDB's integer property `name` (`rocksdb.cur-size-all-mem-tables`,
    /// ...) summed over the column families (metrics); `None` when the
    /// engine does not know it.
    pub fn property(&self, name: &str) -> Option<u64> {
        let default = self.db.property_int_value(name).ok()??;
        let columns = [META_COLUMN, STATE_COLUMN].into_iter();
        let others = columns.filter_map(|column| self.db.property_int_value_cf(self.column(column), name).ok()?);
        Some(default + others.sum::<u64>())
    }

    /// Compact the whole index: after a bulk load, so reads meet a settled
    /// tree instead of competing with background compaction.
    pub fn compact(&self) {
        self.db.compact_range(None::<&[u8]>, None::<&[u8]>);
    }

    /// Remove every record (rebuild starts from nothing). Returns how many.
    ///
    /// One pass counts the records, then one range tombstone from the first
    /// key to just past the last removes them all: no seek ever wades
    /// through the point tombstones of earlier batches, and later scans
    /// skip the whole range at once.
    pub fn clear(&self) -> Result<u64, IndexError> {
        self.clear_column(Some(self.column(META_COLUMN)))?;
        self.clear_column(None)
    }

    /// `clear` for one column family (None: the records).
    fn clear_column(&self, column: Option<&ColumnFamily>) -> Result<u64, IndexError> {
        let mut read_options = ReadOptions::default();
        read_options.fill_cache(false);
        let mut iterator = match column {
            Some(column) => self.db.raw_iterator_cf_opt(column, read_options),
            None => self.db.raw_iterator_opt(read_options),
        };
        iterator.seek_to_first();
        let Some(first) = iterator.key().map(<[u8]>::to_vec) else {
            iterator.status().map_err(io_error)?;
            return Ok(0);
        };
        let mut removed = 0u64;
        while iterator.valid() {
            removed += 1;
            iterator.next();
        }
        iterator.status().map_err(io_error)?;
        iterator.seek_to_last();
        let last = iterator.key().map(key_after);
        iterator.status().map_err(io_error)?;
        drop(iterator);
        let end = last.ok_or_else(|| IndexError::Io("the last record vanished while clearing".into()))?;
        let mut batch = WriteBatch::default();
        match column {
            Some(column) => batch.delete_range_cf(column, first, end),
            None => batch.delete_range(first, end),
        }
        self.db.write_opt(batch, &self.write_options).map_err(io_error)?;
        Ok(removed)
    }

    /// A consistent view for scans that take more than one pass.
    pub fn view(&self) -> RocksView<'_> {
        RocksView {
            index: self,
            snapshot: self.db.snapshot(),
        }
    }
}

/// A point-in-time view of the index.
pub struct RocksView<'a> {
    index: &'a Rocks,
    snapshot: rocksdb::SnapshotWithThreadMode<'a, DB>,
}

impl RocksView<'_> {
    /// The metadata of `key` as of the view.
    pub fn meta(&self, key: &[u8]) -> Result<Option<Meta>, IndexError> {
        let column = self.index.column(META_COLUMN);
        let bytes = self
            .snapshot
            .get_cf_opt(column, key, ReadOptions::default())
            .map_err(io_error)?;
        decode_meta(key, bytes.as_deref())
    }

    /// `View::scan_bounded`, over the snapshot.
    pub fn scan_bounded(
        &self,
        prefix: &[u8],
        start: &[u8],
        visits_max: usize,
        mut visit: impl FnMut(&[u8], Result<Record, RecordError>) -> bool,
    ) -> Result<Option<Vec<u8>>, IndexError> {
        let mut read_options = ReadOptions::default();
        if let Some(end) = prefix_end(prefix) {
            read_options.set_iterate_upper_bound(end);
        }
        read_options.set_snapshot(&self.snapshot);
        // A large listing should not evict the point-lookup working set.
        read_options.fill_cache(false);
        let mut iterator = self.index.db.raw_iterator_opt(read_options);
        iterator.seek(if start > prefix { start } else { prefix });
        let mut visits = 0usize;
        while iterator.valid() {
            let key = iterator.key().expect("valid iterator has a key");
            if visits == visits_max {
                return Ok(Some(key.to_vec()));
            }
            let value = iterator.value().expect("valid iterator has a value");
            if !visit(key, Record::decode(value)) {
                return Ok(Some(key.to_vec()));
            }
            visits += 1;
            iterator.next();
        }
        iterator.status().map_err(io_error)?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Rocks {
        Rocks::open(
            dir,
            &IndexOptions {
                block_cache_bytes: 1 << 20,
                sync: false,
                role: crate::index::Role::Serve,
            },
        )
        .unwrap()
    }

    #[test]
    fn put_get_delete_and_raw_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let index = open(dir.path());
        let record = Record::new(vec!["hello".into()], false, Some(*b"5d41402abc4b2a76b9719d911017c592"));
        index.put(b"/k", &record).unwrap();
        assert_eq!(index.get(b"/k").unwrap(), Some(record));
        assert_eq!(
            index.db.get(b"/k").unwrap().unwrap(),
            b"HASH5d41402abc4b2a76b9719d911017c592hello",
            "stored bytes are the original encoding"
        );
        index.delete(b"/k").unwrap();
        assert_eq!(index.get(b"/k").unwrap(), None);
    }

    #[test]
    fn second_open_reports_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _index = open(dir.path());
        let second = Rocks::open(
            dir.path(),
            &IndexOptions {
                block_cache_bytes: 1 << 20,
                sync: false,
                role: crate::index::Role::Serve,
            },
        );
        assert!(matches!(second, Err(IndexError::Locked(_))), "{:?}", second.err());
    }
}
