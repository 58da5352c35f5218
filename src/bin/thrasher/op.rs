//! An op is one of the three steps of a round (PUT, GET, DELETE), and names
//! its latency histogram; a `Failure` is the one thing that went wrong in a
//! round (an I/O error, an unexpected status, a bad redirect or a wrong byte),
//! which stops the round and is counted.

use std::fmt;
use std::io;

/// The three ops of a round, also the index of their histograms.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    Put = 0,
    Get = 1,
    Delete = 2,
}

pub(crate) const OPS: [Op; 3] = [Op::Put, Op::Get, Op::Delete];

impl Op {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Delete => "delete",
        }
    }
}

/// One thing that went wrong in a round; the round stops there.
pub(crate) enum Failure {
    Io {
        op: Op,
        url: String,
        error: io::Error,
    },
    Status {
        op: Op,
        url: String,
        expected: u16,
        got: u16,
    },
    Redirect {
        url: String,
        location: Option<String>,
    },
    Bytes {
        url: String,
        expected_bytes: usize,
        got_bytes: usize,
        first_difference: usize,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Io { op, url, error } => write!(formatter, "{} {url}: {error}", op.name()),
            Failure::Status { op, url, expected, got } => {
                write!(formatter, "{} {url}: status {got}, expected {expected}", op.name())
            }
            Failure::Redirect { url, location } => {
                write!(formatter, "get {url}: 302 with bad Location {location:?}")
            }
            Failure::Bytes {
                url,
                expected_bytes,
                got_bytes,
                first_difference,
            } => write!(
                formatter,
                "get {url}: wrong value: {got_bytes} bytes, expected {expected_bytes}, \
                 first difference at byte {first_difference}"
            ),
        }
    }
}
