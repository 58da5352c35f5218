//! Request failures, by where they came from, and the one place that maps
//! each to an HTTP status.

use std::fmt;

use crate::index::IndexError;
use crate::volume::VolumeError;

/// Why a request did not succeed.
#[derive(Debug)]
pub enum Error {
    /// The request itself is wrong or not allowed; the status says how.
    Client(u16, &'static str),
    /// Another write of the same key is in flight.
    Locked,
    /// A volume failed.
    Volume(VolumeError),
    /// No replica of the key is on a healthy volume.
    Unavailable,
    /// The index failed.
    Index(IndexError),
}

impl Error {
    /// The status code the request answers with.
    pub fn status(&self) -> u16 {
        match self {
            Error::Client(status, _) => *status,
            Error::Locked => 409,
            Error::Unavailable | Error::Index(IndexError::Unavailable(_)) => 503,
            Error::Volume(_) | Error::Index(_) => 500,
        }
    }

    /// Extra response headers.
    pub fn headers(&self) -> &'static [u8] {
        match self {
            Error::Unavailable | Error::Index(IndexError::Unavailable(_)) => b"Retry-After: 1\r\n",
            _ => b"",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Client(_, message) => write!(formatter, "{message}"),
            Error::Locked => write!(formatter, "another write of this key is in progress"),
            Error::Volume(error) => write!(formatter, "{error}"),
            Error::Unavailable => write!(formatter, "no replica of this key is on a healthy volume"),
            Error::Index(error) => write!(formatter, "{error}"),
        }
    }
}

impl From<VolumeError> for Error {
    fn from(error: VolumeError) -> Self {
        Error::Volume(error)
    }
}

impl From<IndexError> for Error {
    fn from(error: IndexError) -> Self {
        Error::Index(error)
    }
}
