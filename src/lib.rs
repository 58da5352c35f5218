//! mkv: a fast, drop-in master server for the minikeyvalue blob store.
//!
//! The master keeps the index (key -> the volume servers holding the value)
//! and answers reads with a 302 to a volume; values stream through it to the
//! replicas on PUT. Module map, from the wire inwards:
//!
//! - `server`: reactors (one monoio runtime per thread), listeners, the
//!   per-connection request loop.
//! - `shutdown`: the process's end: signals, the orderly shutdown, the
//!   watchdog that exits when a thread the master needs ended.
//! - `app`: the state every reactor shares (config, store, volume health).
//! - `connection`: a client connection's buffers and body reading.
//! - `http`: the sans-IO HTTP/1.x codec (request heads, chunked bodies, responses).
//! - `handlers`: one function per API method; `error` maps failures to statuses.
//! - `listing`: `?list` and `?unlinked`, bounded scans of an index snapshot.
//! - `store`: index + cache of packed 302 answers + key locks, kept coherent.
//! - `cache`: the bounded sharded cache; `locks`: per-key write locks.
//! - `index`: RocksDB, records in the original encoding (`record`).
//! - `placement`: key2path / key2volume, bit-compatible with the original.
//! - `health`: the volumes and their health flags (the probe thread).
//! - `volume`: the HTTP client to nginx volumes (pool, uploads, downloads).
//! - `write`: the write protocol (record deleted, bytes to every replica,
//!   record live with its metadata; undo on failure).
//! - `replication`: PUT bodies streamed to all replicas at once.
//! - `meta`: object metadata beside the record (size, mtime, type, ETag).
//! - `rebuild`: regrow the index from the volumes' directory listings.
//! - `rebalance`: move values where placement wants them (one key, or all).
//! - `verify`: check every replica, find orphans, repair (`mkv verify`).
//! - `progress`: what the maintenance commands show the operator.
//! - `admin`: rebalance and verify run by a live master for an operator.
//! - `metrics`: per-reactor counters, summed for Prometheus on scrape.
//! - `side_port`: the metrics and admin ports' listener (heads read on one
//!   thread, a slot only for a complete one).
//! - `config`: flags in Go and GNU spelling.

pub mod admin;
pub mod app;
pub mod cache;
pub mod coherence;
pub mod config;
pub mod connection;
pub mod error;
pub mod handlers;
pub mod health;
pub mod http;
pub mod index;
pub mod journal;
pub mod listing;
pub mod locks;
pub mod meta;
pub mod metrics;
pub mod offload;
pub mod placement;
pub mod progress;
pub mod rebalance;
pub mod rebuild;
pub mod record;
pub mod replication;
pub mod s3;
pub mod server;
pub mod shutdown;
pub mod side_port;
pub mod store;
pub mod verify;
pub mod volume;
pub mod write;
