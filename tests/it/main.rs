//! Integration tests: real nginx volumes (the repo's `volume` script), the
//! real `mkv` binary, a real HTTP client. Run under both monoio drivers by
//! the test script (`MONOIO_FORCE_LEGACY_DRIVER=1` forces epoll).

mod api;
mod body;
mod bounded;
mod cluster;
mod durability;
mod flags;
mod imports;
mod maintenance;
mod metrics;
mod online;
mod postgres;
mod protocol;
mod rebuilt;
mod resilience;
mod s3;
mod s3_commit;
mod s3_hashing;
mod s3_hostile;
mod s3_listing;
mod safety;
mod shutdown;
mod startup;
mod verify;
mod volume_client;
mod volumes;
