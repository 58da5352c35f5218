//! The application state every reactor shares: configuration, the record
//! store and the volumes' health.
//!
//! It sits beneath both the server (which owns reactors and connections) and
//! the handlers (which answer requests), so neither imports the other's
//! state: the arrows run one way, from the wire inward.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::health::Volumes;
use crate::store::Store;

/// A monoio runtime: io_uring, or epoll where io_uring is unavailable. The
/// reactors run on one each, and so do maintenance jobs (`admin::runtime`).
pub type Runtime = monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
>;

/// Set once the master starts shutting down (SIGTERM, SIGINT): reactors
/// stop accepting, and a maintenance job (`admin`) stops taking new items.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// Whether the master is shutting down.
pub fn shutting_down() -> bool {
    SHUTTING_DOWN.load(Ordering::SeqCst)
}

/// Start shutting down (`server::shut_down`).
pub fn start_shutting_down() {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
}

/// Everything a reactor needs, shared by all of them.
pub struct App {
    pub config: Config,
    pub store: Store,
    pub volumes: Arc<Volumes>,
}
