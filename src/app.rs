//! The application state every reactor shares: configuration, the record
//! store and the volumes' health.
//!
//! It sits beneath both the server (which owns reactors and connections) and
//! the handlers (which answer requests), so neither imports the other's
//! state: the arrows run one way, from the wire inward.

use std::sync::Arc;

use crate::config::Config;
use crate::health::Volumes;
use crate::store::Store;

/// Everything a reactor needs, shared by all of them.
pub struct App {
    pub config: Config,
    pub store: Store,
    pub volumes: Arc<Volumes>,
}
