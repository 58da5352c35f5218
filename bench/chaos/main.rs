//! `chaos`: a chaos harness for mkv. It starts a cluster of its own (three
//! nginx volumes and the mkv master, on loopback ports, in a temp dir), runs
//! concurrent writers against it while a fault thread `kill -9`s and
//! restarts the master, kills and restarts volumes and freezes them past
//! `-voltimeout`, then stops the faults, recovers everything and checks that
//! nothing the client was told is lost:
//!
//! ```sh
//! cargo build --release --bin mkv --bin chaos
//! target/release/chaos --master-kills 50 --volume-faults 20     # a full run
//! target/release/chaos --smoke                                  # ~10 s
//! ```
//!
//! Modules: `cluster` (processes and faults on them), `client` (a blocking
//! HTTP/1.1 client), `ledger` (what each key may be, given the answers),
//! `workload` (writer and fault threads), `check` (the final checks). It
//! prints acked / lost / wrong-bytes / orphaned / faults, and exits 1 on any
//! loss, wrong bytes, resurrected key, bad replica or failed final request
//! (2 on a usage or start error, 130 when interrupted).

mod check;
mod client;
mod cluster;
mod ledger;
mod workload;

use clap::Parser;
use ledger::AnomalyKind;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use workload::{FaultPlan, Shared, Writer};

/// Wait after recovery before the final checks: a few `--health-interval`s
/// plus `-voltimeout`, so the master has seen every volume healthy again.
const RECOVERY_SETTLE: Duration = Duration::from_secs(3);

/// How often the main thread looks at the run's bounds.
const BOUNDS_POLL: Duration = Duration::from_millis(100);

/// Anomalies printed with their key's history; the rest are counted.
const ANOMALIES_SHOWN: usize = 20;

/// Problems of the other kinds printed in full; the rest are counted.
const PROBLEMS_SHOWN: usize = 10;

/// Number of volumes started.
const VOLUMES: usize = 3;

/// Set by SIGINT / SIGTERM.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

#[derive(Parser, Debug)]
#[command(about = "Chaos harness: writers against a cluster whose master and volumes are killed and frozen")]
struct Flags {
    /// The mkv binary to test.
    #[arg(long, default_value = "target/release/mkv")]
    mkv: PathBuf,
    /// The volume script (stock nginx over WebDAV).
    #[arg(long, default_value = "./volume")]
    volume_script: PathBuf,
    /// The master listens here, volumes on the next three ports.
    #[arg(long, default_value_t = 24000)]
    base_port: u16,
    /// Master -replicas (2 or 3).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(2..=3))]
    replicas: u16,
    /// Master -voltimeout in milliseconds; a freeze lasts 1.5x to 3x this.
    #[arg(long, default_value_t = 1000)]
    voltimeout_ms: u64,
    /// Master --health-interval in milliseconds.
    #[arg(long, default_value_t = 200)]
    health_interval_ms: u64,
    /// More master flags, space-separated (e.g. "--sync --threads 1").
    #[arg(long, default_value = "--threads 2")]
    master_flags: String,
    /// Concurrent writer threads.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Operations per writer (0: no bound).
    #[arg(long, default_value_t = 0)]
    rounds: u64,
    /// `kill -9` + restart of the master to do.
    #[arg(long, default_value_t = 50)]
    master_kills: u32,
    /// Volume kills + freezes to do.
    #[arg(long, default_value_t = 20)]
    volume_faults: u32,
    /// Longest run (the chaos phase) in seconds.
    #[arg(long, default_value_t = 900)]
    seconds: u64,
    /// Seed of values, operations and fault timing.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Short smoke run: --seconds 10 --master-kills 2 --volume-faults 1.
    #[arg(long)]
    smoke: bool,
    /// Keep the temp dir (index, volumes, logs) even when the run passed.
    #[arg(long)]
    keep: bool,
    /// Where to make the temp dir.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    tmp: PathBuf,
}

fn main() {
    let mut flags = Flags::parse();
    if flags.smoke {
        flags.seconds = 10;
        flags.master_kills = 2;
        flags.volume_faults = 1;
    }
    install_cleanup();
    std::process::exit(run(flags));
}

/// SIGINT/SIGTERM end the run early; a panic anywhere kills the cluster.
fn install_cleanup() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        cluster::kill_all_registered();
        default_hook(info);
    }));
}

fn run(flags: Flags) -> i32 {
    let dir = flags.tmp.join(format!("mkv-chaos-{}", std::process::id()));
    let voltimeout = Duration::from_millis(flags.voltimeout_ms);
    let mut master_flags = vec![
        "-replicas".to_string(),
        flags.replicas.to_string(),
        "-voltimeout".to_string(),
        format!("{}ms", flags.voltimeout_ms),
        "--health-interval".to_string(),
        format!("{}ms", flags.health_interval_ms),
    ];
    master_flags.extend(flags.master_flags.split_whitespace().map(str::to_string));
    let layout = cluster::Layout {
        dir: dir.clone(),
        base_port: flags.base_port,
        volumes: VOLUMES,
        mkv: flags.mkv.clone(),
        volume_script: flags.volume_script.clone(),
        master_flags,
    };
    let cluster = match cluster::Cluster::start(layout) {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("chaos: cannot start the cluster: {error}");
            return 2;
        }
    };
    let master = cluster.master_host();
    println!(
        "chaos: cluster in {} (master {master}, volumes {}), {} writers, up to {} master kills, {} volume faults, {} s",
        dir.display(),
        cluster.hosts().join(","),
        flags.writers,
        flags.master_kills,
        flags.volume_faults,
        flags.seconds
    );

    let shared = Shared::default();
    let plan = FaultPlan {
        master_kills: flags.master_kills,
        volume_faults: flags.volume_faults,
        voltimeout,
        seed: flags.seed,
    };
    let started = Instant::now();
    let (cluster, faults, ledgers, writer_panics) = std::thread::scope(|scope| {
        let fault_thread = scope.spawn(|| workload::run_faults(cluster, plan, &shared));
        let writer_threads: Vec<_> = (0..flags.writers)
            .map(|id| {
                let writer = Writer::new(id, flags.seed, master.clone(), &shared);
                scope.spawn(move || writer.run(flags.rounds))
            })
            .collect();
        let deadline = started + Duration::from_secs(flags.seconds);
        while Instant::now() < deadline
            && !shared.faults_done.load(Ordering::Relaxed)
            && !INTERRUPTED.load(Ordering::Relaxed)
            && !writer_threads.iter().all(|thread| thread.is_finished())
        {
            std::thread::sleep(BOUNDS_POLL);
        }
        shared.stop.store(true, Ordering::Relaxed);
        let mut ledgers = Vec::new();
        let mut writer_panics = 0;
        for thread in writer_threads {
            match thread.join() {
                Ok(keys) => ledgers.push(keys),
                Err(_) => writer_panics += 1,
            }
        }
        let (cluster, faults) = fault_thread.join().expect("the fault thread panicked");
        (cluster, faults, ledgers, writer_panics)
    });
    let chaos_seconds = started.elapsed().as_secs_f64();
    if INTERRUPTED.load(Ordering::Relaxed) {
        eprintln!("chaos: interrupted; stopping the cluster (kept in {})", dir.display());
        return 130;
    }
    finish(flags, cluster, faults, ledgers, writer_panics, &shared, chaos_seconds)
}

/// Recover, check, report; the exit code.
fn finish(
    flags: Flags,
    mut cluster: cluster::Cluster,
    faults: workload::FaultCounts,
    mut ledgers: Vec<Vec<ledger::KeyLedger>>,
    writer_panics: usize,
    shared: &Shared,
    chaos_seconds: f64,
) -> i32 {
    let mut findings = check::Findings::default();
    if let Err(error) = cluster.recover() {
        eprintln!("chaos: recovery failed: {error}");
        return 1;
    }
    std::thread::sleep(RECOVERY_SETTLE);
    let master = cluster.master_host();
    check::final_batch(&master, flags.seed, &mut findings);
    for keys in &mut ledgers {
        check::settle_keys(&master, keys, shared, &mut findings);
    }
    let volume_check = check::check_volumes(&cluster, usize::from(flags.replicas), &mut findings);
    if let Some(status) = cluster.master.exited() {
        findings
            .final_batch_failures
            .push(format!("the master exited during the checks: {status}"));
    }

    let anomalies = shared
        .anomalies
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .clone();
    let count = |kind| anomalies.iter().filter(|anomaly| anomaly.kind == kind).count();
    let lost = count(AnomalyKind::Lost);
    let wrong = count(AnomalyKind::WrongBytes) + findings.replicas_wrong.len();
    let resurrected = count(AnomalyKind::Resurrected);
    print_report(
        &flags,
        &faults,
        &findings,
        shared,
        chaos_seconds,
        [lost, wrong, resurrected],
    );
    for anomaly in anomalies.iter().take(ANOMALIES_SHOWN) {
        println!("\n{:?} {}: {}", anomaly.kind, anomaly.key, anomaly.detail);
        for step in &anomaly.history {
            println!("    {step}");
        }
    }
    let problems = findings
        .final_batch_failures
        .iter()
        .chain(&findings.replicas_missing)
        .chain(&findings.replicas_wrong)
        .chain(&findings.unsettled)
        .chain(&faults.restart_failures)
        .chain(&faults.unexpected_exits);
    for problem in problems.take(PROBLEMS_SHOWN) {
        println!("problem: {problem}");
    }
    let mut suspects = findings.suspect_keys.clone();
    suspects.dedup();
    for key in suspects.iter().take(PROBLEMS_SHOWN) {
        if let Some(entry) = ledgers.iter().flatten().find(|entry| &entry.key == key) {
            println!("\nhistory of {key} (ledger: {}):", entry.describe());
            for step in entry.history() {
                println!("    {step}");
            }
        }
    }
    for orphan in findings.orphans.iter().take(PROBLEMS_SHOWN) {
        println!("orphan: {}", orphan.display());
    }

    let failed = lost
        + wrong
        + resurrected
        + writer_panics
        + findings.final_batch_failures.len()
        + findings.replicas_missing.len()
        + findings.unsettled.len()
        + faults.unexpected_exits.len()
        > 0;
    if let Err(error) = &volume_check {
        println!("volume check failed: {error}");
    }
    let code = if failed || volume_check.is_err() { 1 } else { 0 };
    println!("\nchaos: {}", if code == 0 { "PASS" } else { "FAIL" });
    let dir = cluster.dir.clone();
    drop(cluster);
    if code == 0 && !flags.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!(
            "chaos: kept {} (master.log, volume*.log, index, volumes)",
            dir.display()
        );
    }
    code
}

fn print_report(
    flags: &Flags,
    faults: &workload::FaultCounts,
    findings: &check::Findings,
    shared: &Shared,
    chaos_seconds: f64,
    [lost, wrong, resurrected]: [usize; 3],
) {
    let counters = &shared.counters;
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    println!(
        "\n== chaos report (seed {}, replicas {}, {} writers) ==",
        flags.seed, flags.replicas, flags.writers
    );
    println!("chaos phase         {chaos_seconds:.0} s");
    println!(
        "faults              {} master kills, {} volume faults ({} kills, {} freezes), {} restart failures, {} unexpected exits",
        faults.master_kills,
        faults.volume_faults(),
        faults.volume_kills,
        faults.volume_freezes,
        faults.restart_failures.len(),
        faults.unexpected_exits.len()
    );
    println!(
        "operations          {} PUT ({} answered 201), {} GET ({} reads verified, {} read misses), {} DELETE, {} UNLINK, {} RELINK; {} failed (5xx or no answer)",
        load(&counters.puts),
        load(&counters.puts_created),
        load(&counters.gets),
        load(&counters.reads_verified),
        load(&counters.read_misses),
        load(&counters.deletes),
        load(&counters.unlinks),
        load(&counters.relinks),
        load(&counters.failed)
    );
    println!(
        "acked               {} (live {}, unlinked {}); also {} acked absent, {} uncertain",
        findings.acked_live + findings.acked_unlinked,
        findings.acked_live,
        findings.acked_unlinked,
        findings.acked_absent,
        findings.uncertain
    );
    println!("lost                {lost}");
    println!("wrong-bytes         {wrong}");
    println!("resurrected         {resurrected}");
    let mut bad_keys = findings.suspect_keys.clone();
    bad_keys.sort();
    bad_keys.dedup();
    println!(
        "replicas            {} live keys listed, {} replicas missing, {} wrong ({} keys), {} live keys without md5; {} unlinked records",
        findings.listed_live,
        findings.replicas_missing.len(),
        findings.replicas_wrong.len(),
        bad_keys.len(),
        findings.live_without_md5,
        findings.listed_unlinked
    );
    println!("orphaned            {} files", findings.orphans.len());
    println!(
        "final requests      {} failed of the fresh batch; {} settling retries, {} keys unsettled",
        findings.final_batch_failures.len(),
        findings.settle_retries,
        findings.unsettled.len()
    );
}
