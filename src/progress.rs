//! Progress of a maintenance command (rebuild, rebalance) as the operator
//! sees it: a bar on a terminal, plain periodic lines otherwise (a log file,
//! a CI job), problems with single items as lines of their own, and a final
//! summary.
//!
//! Everything goes to stderr, so stdout stays free for output meant for
//! scripts (`rebalance --dry-run` prints its plan there). A job a running
//! master does for an operator (`admin`) gives a `Sink` instead: every line,
//! plan lines included, goes there, and from there to the operator's
//! connection.

use std::cell::Cell;
use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

/// How often the bar's status text is rebuilt: often enough to look live,
/// rarely enough that formatting it costs nothing next to the work.
const STATUS_INTERVAL: Duration = Duration::from_millis(100);
/// How often a plain status line is printed when stderr is not a terminal.
const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Where an online job's lines go instead of stderr and stdout. A send to
/// a receiver that went away (the operator's command ended) is ignored: the
/// job goes on.
pub type Sink = Sender<String>;

/// The display of one run.
pub struct Progress {
    /// Hidden when stderr is not a terminal or there is a sink.
    bar: ProgressBar,
    terminal: bool,
    sink: Option<Sink>,
    /// What is running, as the first word of every line.
    command: &'static str,
    /// What `position` counts (`keys`, `directories`).
    unit: &'static str,
    total: Option<u64>,
    position: Cell<u64>,
    last_status: Cell<Instant>,
    last_log: Cell<Instant>,
    started: Instant,
}

impl Progress {
    /// A display for `command` counting `unit`s, out of `total` when known.
    pub fn new(command: &'static str, unit: &'static str, total: Option<u64>) -> Progress {
        Progress::with_sink(command, unit, total, None)
    }

    /// A display that, given a `sink`, sends every line there as plain
    /// periodic lines (no bar), and prints nothing.
    pub fn with_sink(command: &'static str, unit: &'static str, total: Option<u64>, sink: Option<Sink>) -> Progress {
        let terminal = sink.is_none() && std::io::stderr().is_terminal();
        let bar = if terminal {
            let (bar, template) = match total {
                Some(total) => (
                    ProgressBar::new(total),
                    "{prefix} [{bar:25}] {pos}/{len} {unit} ({rate}, {elapsed}, eta {eta}) {wide_msg}",
                ),
                None => (
                    ProgressBar::no_length(),
                    "{spinner} {prefix} {pos} {unit} ({rate}, {elapsed}) {wide_msg}",
                ),
            };
            let style = ProgressStyle::with_template(&template.replace("{unit}", unit))
                .expect("the template is valid")
                .with_key("rate", |state: &ProgressState, out: &mut dyn fmt::Write| {
                    let _ = write!(out, "{:.0}/s", state.per_sec());
                })
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(command);
            bar.enable_steady_tick(STATUS_INTERVAL);
            bar
        } else {
            ProgressBar::hidden()
        };
        let now = Instant::now();
        Progress {
            bar,
            terminal,
            sink,
            command,
            unit,
            total,
            position: Cell::new(0),
            last_status: Cell::new(now),
            last_log: Cell::new(now),
            started: now,
        }
    }

    /// Count `done` more units; `status` (the counts so far) is called only
    /// when the display is due to change.
    pub fn advance(&self, done: u64, status: impl FnOnce() -> String) {
        self.position.set(self.position.get() + done);
        self.bar.inc(done);
        let now = Instant::now();
        if now.duration_since(self.last_status.get()) < STATUS_INTERVAL {
            return;
        }
        self.last_status.set(now);
        let status = status();
        if self.terminal {
            self.bar.set_message(status);
        } else if now.duration_since(self.last_log.get()) >= LOG_INTERVAL {
            self.last_log.set(now);
            let of_total = self.total.map(|total| format!("/{total}")).unwrap_or_default();
            self.line(&format!(
                "{}: {}{of_total} {}, {status}, {:.0}s",
                self.command,
                self.position.get(),
                self.unit,
                self.started.elapsed().as_secs_f64()
            ));
        }
    }

    /// One item's problem (or, for a dry run, one item's plan), on a line of
    /// its own above the bar.
    pub fn report(&self, line: &str) {
        if self.terminal {
            self.bar.println(format!("{}: {line}", self.command));
        } else {
            self.line(&format!("{}: {line}", self.command));
        }
    }

    /// A line meant for scripts (a dry run's plan): to stdout without
    /// tearing the bar, or to the sink. A reader that went away (`| head`)
    /// is not an error of the run.
    pub fn output(&self, line: &str) {
        match &self.sink {
            Some(sink) => {
                let _ = sink.send(line.to_owned());
            }
            None => {
                let _ = self.bar.suspend(|| writeln!(std::io::stdout().lock(), "{line}"));
            }
        }
    }

    /// A whole line to the sink, or to stderr.
    fn line(&self, line: &str) {
        match &self.sink {
            Some(sink) => {
                let _ = sink.send(line.to_owned());
            }
            None => eprintln!("{line}"),
        }
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Remove the bar and print the run's summary.
    pub fn finish(&self, summary: &str) {
        self.bar.finish_and_clear();
        self.line(&format!("{}: {summary}", self.command));
    }
}
