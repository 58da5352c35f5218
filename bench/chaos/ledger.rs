//! The ledger: what the client was told about each key, as the set of states
//! the key may be in, and the answers that no such state allows.
//!
//! A key's `fates` are every state consistent with the answers so far:
//! `Absent`, `Live(value)` or `Unlinked(value)`. An answer the server gave
//! narrows the set (a PUT answered 201 leaves exactly `Live(value)`); an
//! operation that failed (a 5xx, a reset while the master was killed, a
//! timeout) widens it with every state the operation may have left. A key
//! with one fate is *acked*: the server committed to it. An answer that no
//! fate allows is an `Anomaly`: a loss (the server no longer has what it
//! acked), a resurrection (it has what it said was gone) or wrong bytes. The
//! key is then retired from the run, its history kept for the report.

use md5::{Digest, Md5};

/// Operations kept per key for the report; older ones are dropped.
const HISTORY_MAX: usize = 24;

/// A value the harness wrote: its bytes are regenerated from seed and size,
/// so the ledger keeps 32 bytes per value, not the value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Value {
    pub seed: u64,
    pub size: usize,
    pub md5: [u8; 16],
}

impl Value {
    pub fn new(seed: u64, size: usize) -> Value {
        let md5 = Md5::digest(value_bytes(seed, size)).into();
        Value { seed, size, md5 }
    }

    pub fn bytes(&self) -> Vec<u8> {
        value_bytes(self.seed, self.size)
    }

    pub fn md5_hex(&self) -> String {
        hex(&self.md5)
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            formatter,
            "v{:x}({} B, md5 {})",
            self.seed,
            self.size,
            &self.md5_hex()[..8]
        )
    }
}

/// Deterministic bytes of a value: splitmix64 words.
fn value_bytes(seed: u64, size: usize) -> Vec<u8> {
    let mut state = seed;
    let mut bytes = Vec::with_capacity(size + 8);
    while bytes.len() < size {
        bytes.extend_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    bytes.truncate(size);
    bytes
}

pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

pub fn md5_hex(bytes: &[u8]) -> String {
    hex(&Md5::digest(bytes))
}

/// One state a key may be in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fate {
    Absent,
    Live(Value),
    /// Soft-deleted with every copy of the value in place: RELINK must work.
    Unlinked(Value),
    /// A DELETED record left by a PUT or DELETE that failed midway, whose
    /// copies may be missing: GET, UNLINK and RELINK may answer 404, DELETE 204.
    Wreck,
}

/// What an operation was answered: a status, or no answer at all.
#[derive(Clone, Debug)]
pub enum Outcome {
    Status(u16),
    Failed(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Outcome::Status(status) => write!(formatter, "{status}"),
            Outcome::Failed(error) => write!(formatter, "failed ({error})"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AnomalyKind {
    /// The server no longer has a value it acked (live or unlinked).
    Lost,
    /// The server has a key, or a state of it, that it said was gone.
    Resurrected,
    /// A read returned bytes that are none of the key's possible values.
    WrongBytes,
}

#[derive(Clone, Debug)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub key: String,
    /// What was expected and what came back.
    pub detail: String,
    /// The key's operations, oldest first, ending with the one that showed it.
    pub history: Vec<String>,
}

/// One key and what the client knows of it.
pub struct KeyLedger {
    pub key: String,
    fates: Vec<Fate>,
    history: Vec<String>,
    /// Set once an anomaly was reported: the key takes no further part.
    pub retired: bool,
}

impl KeyLedger {
    pub fn new(key: String) -> KeyLedger {
        KeyLedger {
            key,
            fates: vec![Fate::Absent],
            history: Vec::new(),
            retired: false,
        }
    }

    /// The one state the server committed to, if it did.
    pub fn acked(&self) -> Option<Fate> {
        match self.fates.as_slice() {
            [fate] => Some(*fate),
            _ => None,
        }
    }

    pub fn may_be_live(&self) -> bool {
        self.fates.iter().any(|fate| matches!(fate, Fate::Live(_)))
    }

    pub fn may_be_unlinked(&self) -> bool {
        self.fates.iter().any(|fate| matches!(fate, Fate::Unlinked(_)))
    }

    pub fn live_values(&self) -> Vec<Value> {
        self.fates
            .iter()
            .filter_map(|fate| match fate {
                Fate::Live(value) => Some(*value),
                _ => None,
            })
            .collect()
    }

    /// The fates, as the report prints them.
    pub fn describe(&self) -> String {
        describe(&self.fates)
    }

    pub fn history(&self) -> &[String] {
        &self.history
    }

    /// Note an operation and its answer in the history.
    pub fn note(&mut self, entry: String) {
        if self.history.len() == HISTORY_MAX {
            self.history.remove(0);
        }
        self.history.push(entry);
    }

    fn widen(&mut self, extra: impl IntoIterator<Item = Fate>) {
        for fate in extra {
            if !self.fates.contains(&fate) {
                self.fates.push(fate);
            }
        }
    }

    /// Narrow to the fates `keep` allows; none left is an anomaly of `kind`.
    fn narrow(&mut self, kind: AnomalyKind, detail: &str, keep: impl Fn(&Fate) -> Option<Fate>) -> Option<Anomaly> {
        let kept: Vec<Fate> = self.fates.iter().filter_map(keep).collect();
        if kept.is_empty() {
            return Some(self.anomaly(kind, detail.to_string()));
        }
        self.fates = kept;
        None
    }

    /// Report an anomaly and retire the key.
    pub fn anomaly(&mut self, kind: AnomalyKind, detail: String) -> Anomaly {
        self.retired = true;
        Anomaly {
            kind,
            key: self.key.clone(),
            detail: format!("{detail}; the ledger allowed {}", describe(&self.fates)),
            history: self.history.clone(),
        }
    }

    pub fn put(&mut self, value: Value, outcome: &Outcome) -> Option<Anomaly> {
        self.note(format!("PUT {value} -> {outcome}"));
        match outcome {
            Outcome::Status(201) => {
                self.fates = vec![Fate::Live(value)];
                None
            }
            Outcome::Status(403) => self.narrow(AnomalyKind::Resurrected, "PUT answered 403 (key live)", |fate| {
                matches!(fate, Fate::Live(_)).then_some(*fate)
            }),
            // Anything else may have left the new value live, or a DELETED
            // record (with the new or the old copies), or no record.
            _ => {
                self.widen([Fate::Live(value), Fate::Unlinked(value), Fate::Wreck, Fate::Absent]);
                None
            }
        }
    }

    pub fn delete(&mut self, outcome: &Outcome) -> Option<Anomaly> {
        self.note(format!("DELETE -> {outcome}"));
        match outcome {
            Outcome::Status(204) => {
                let anomaly = (self.fates == [Fate::Absent])
                    .then(|| self.anomaly(AnomalyKind::Resurrected, "DELETE answered 204".into()));
                self.fates = vec![Fate::Absent];
                anomaly
            }
            Outcome::Status(404) => self.narrow(AnomalyKind::Lost, "DELETE answered 404", |fate| {
                (*fate == Fate::Absent).then_some(*fate)
            }),
            // A DELETE that failed may have left the record DELETED, with
            // all, some or none of the copies.
            _ => {
                let unlinked: Vec<Fate> = self.live_values().into_iter().map(Fate::Unlinked).collect();
                self.widen(unlinked);
                self.widen([Fate::Wreck, Fate::Absent]);
                None
            }
        }
    }

    pub fn unlink(&mut self, outcome: &Outcome) -> Option<Anomaly> {
        self.note(format!("UNLINK -> {outcome}"));
        match outcome {
            Outcome::Status(204) => self.narrow(AnomalyKind::Resurrected, "UNLINK answered 204", |fate| match fate {
                Fate::Live(value) => Some(Fate::Unlinked(*value)),
                _ => None,
            }),
            Outcome::Status(404) => self.narrow(AnomalyKind::Lost, "UNLINK answered 404", |fate| {
                (!matches!(fate, Fate::Live(_))).then_some(*fate)
            }),
            _ => {
                let unlinked: Vec<Fate> = self.live_values().into_iter().map(Fate::Unlinked).collect();
                self.widen(unlinked);
                None
            }
        }
    }

    pub fn relink(&mut self, outcome: &Outcome) -> Option<Anomaly> {
        self.note(format!("RELINK -> {outcome}"));
        match outcome {
            Outcome::Status(204) => self.narrow(AnomalyKind::Resurrected, "RELINK answered 204", |fate| match fate {
                Fate::Unlinked(value) => Some(Fate::Live(*value)),
                _ => None,
            }),
            Outcome::Status(404) => self.narrow(AnomalyKind::Lost, "RELINK answered 404", |fate| {
                (!matches!(fate, Fate::Unlinked(_))).then_some(*fate)
            }),
            _ => {
                let live: Vec<Fate> = self
                    .fates
                    .iter()
                    .filter_map(|fate| match fate {
                        Fate::Unlinked(value) => Some(Fate::Live(*value)),
                        _ => None,
                    })
                    .collect();
                self.widen(live);
                None
            }
        }
    }

    /// The master's answer to a GET: 302 (live), 404 (not live), else nothing learnt.
    pub fn get(&mut self, outcome: &Outcome) -> Option<Anomaly> {
        self.note(format!("GET -> {outcome}"));
        match outcome {
            Outcome::Status(302) => self.narrow(AnomalyKind::Resurrected, "GET answered 302", |fate| {
                matches!(fate, Fate::Live(_)).then_some(*fate)
            }),
            Outcome::Status(404) => self.narrow(AnomalyKind::Lost, "GET answered 404", |fate| {
                (!matches!(fate, Fate::Live(_))).then_some(*fate)
            }),
            _ => None,
        }
    }

    /// The bytes a volume returned for the live key (after a 302).
    pub fn read(&mut self, volume_url: &str, md5: &str, size: usize) -> Option<Anomaly> {
        self.note(format!("  read {volume_url} -> {size} B, md5 {}", &md5[..8]));
        self.narrow(
            AnomalyKind::WrongBytes,
            &format!("{volume_url} returned {size} B with md5 {md5}"),
            |fate| match fate {
                Fate::Live(value) if value.md5_hex() == md5 => Some(*fate),
                _ => None,
            },
        )
    }
}

fn describe(fates: &[Fate]) -> String {
    let names: Vec<String> = fates
        .iter()
        .map(|fate| match fate {
            Fate::Absent => "absent".to_string(),
            Fate::Live(value) => format!("live {value}"),
            Fate::Unlinked(value) => format!("unlinked {value}"),
            Fate::Wreck => "wreck".to_string(),
        })
        .collect();
    format!("{{{}}}", names.join(", "))
}
