//! The `mkv` binary: parse flags, then run the chosen command.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use mimalloc::MiMalloc;

use mkv::app::App;
use mkv::coherence::Coherence;
use mkv::config::{self, Command, Config, ConfigError};
use mkv::health::Volumes;
use mkv::index::{Index, IndexError, IndexOptions, Role, BATCH_RECORDS_MAX};
use mkv::record::Record;
use mkv::s3::auth::Auth;
use mkv::server;
use mkv::store::{Placement, Store};
use mkv::verify::Settings;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> ExitCode {
    let config = match config::parse(std::env::args()) {
        Ok(config) => config,
        Err(ConfigError::Usage(error)) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
        Err(error) => {
            eprintln!("mkv: {error}");
            return ExitCode::from(2);
        }
    };
    match run(config) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mkv: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> anyhow::Result<ExitCode> {
    match server::raise_fd_limit() {
        Ok(limit) => eprintln!("{limit}"),
        Err(error) => eprintln!("cannot raise the fd limit: {error}"),
    }
    // The S3 credentials are read before anything opens: a file that does
    // not parse stops the master with a clear message.
    if config.command == Command::Server {
        let loaded = Auth::environment_key().and_then(|environment| Auth::load(config.s3_auth.clone(), environment));
        match loaded {
            Ok(auth) => mkv::s3::auth::install(auth),
            Err(error) => {
                eprintln!("mkv: {error}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    // Verify and rebalance judge the volumes against an index: one that
    // does not exist (a mistyped -db) would be made empty here, and every
    // file on the volumes would look like an orphan. Only the server, seed
    // and rebuild make an index.
    let judges = matches!(config.command, Command::Verify | Command::Rebalance);
    let is_url = config.db.to_string_lossy().contains("://");
    if judges && !is_url && !config.db.exists() {
        eprintln!(
            "mkv: no index at {:?}: verify and rebalance need an existing index (is -db right? rebuild makes one)",
            config.db
        );
        return Ok(ExitCode::from(2));
    }
    let opened = Index::open(
        &config.db,
        &IndexOptions {
            block_cache_bytes: config.block_cache_bytes,
            sync: config.sync,
            role: match config.command {
                Command::Server => Role::Serve,
                _ => Role::Offline,
            },
        },
    );
    let index = match opened {
        Ok(index) => index,
        Err(IndexError::Locked(path)) => return locked(&config, IndexError::Locked(path)),
        Err(error) => return Err(error.into()),
    };
    let placement = Placement {
        volumes: config.volumes.clone(),
        replicas: config.replicas,
        subvolumes: config.subvolumes,
    };
    match config.command {
        Command::Server => {
            let volumes = Arc::new(Volumes::new(&config.volumes));
            let up = volumes.probe_all(config.volume_timeout);
            eprintln!("{up} of {} volumes answer", config.volumes.len());
            let coherence = match index.postgres() {
                Some(_) => Coherence::bounded(config.coherence),
                None => Coherence::owned(),
            };
            let store = Store::new(
                index,
                placement,
                volumes.clone(),
                config.cache_bytes,
                config.threads,
                coherence,
            );
            let app = Arc::new(App { config, store, volumes });
            if app.store.index().postgres().is_some() {
                mkv::server::follow(app.clone()).context("cannot start following the index")?;
            }
            let warming = app.clone();
            std::thread::Builder::new()
                .name("mkv-warm".into())
                .spawn(move || warming.store.warm())
                .context("cannot start the warm fill")?;
            // Serving returns only if it cannot start: the process exits from
            // within it, 0 after SIGTERM/SIGINT, 70 when a thread ends.
            match server::serve(app).context("server")? {}
        }
        Command::Seed => {
            seed(&index, &placement, &config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rebuild => {
            let summary = maintenance_runtime()?.block_on(mkv::rebuild::run(&index, &config))?;
            Ok(exit_code(summary.failures()))
        }
        Command::Rebalance => {
            let summary = maintenance_runtime()?.block_on(mkv::rebalance::run(&index, &config))?;
            Ok(exit_code(summary.failures()))
        }
        Command::Verify => {
            // The state a master shares, so verify's per-key work is the
            // same code a running master would call.
            let volumes = Arc::new(Volumes::new(&config.volumes));
            let store = Store::new(
                index,
                placement,
                volumes.clone(),
                MAINTENANCE_CACHE_BYTES,
                1,
                Coherence::owned(),
            );
            let app = App { config, store, volumes };
            let settings = Settings::from_config(&app.config);
            let summary = maintenance_runtime()?.block_on(mkv::verify::run(&app, &settings, None))?;
            Ok(exit_code(summary.failures()))
        }
    }
}

/// The index is held by another process (`error`): a running master does
/// rebalance and verify for us when told its `--admin-port` (and token file); rebuild
/// empties the index, so it runs only with the master stopped.
fn locked(config: &Config, error: IndexError) -> anyhow::Result<ExitCode> {
    let job = match config.command {
        Command::Rebalance => "rebalance",
        Command::Verify => "verify",
        Command::Rebuild => {
            anyhow::bail!("{error}; rebuild empties the index, so it runs only with the master stopped")
        }
        Command::Server | Command::Seed => return Err(error.into()),
    };
    match config.admin_port {
        Some(port) => Ok(ExitCode::from(mkv::admin::request_job(config, job, port)?)),
        None => anyhow::bail!(
            "{error}; to have the running master do the {job}, pass its --admin-port and --admin-token-file (and \
             --admin-bind if not loopback)"
        ),
    }
}

/// Record cache of an offline maintenance command: it reads each record
/// about once, so a cache would only cost memory.
const MAINTENANCE_CACHE_BYTES: usize = 1 << 20;

/// One monoio runtime on this thread for rebuild, rebalance and verify
/// (`admin::runtime`).
fn maintenance_runtime() -> anyhow::Result<mkv::app::Runtime> {
    mkv::admin::runtime().context("cannot start the I/O runtime")
}

/// 0 when every item went through, 1 when some failed (each was reported).
fn exit_code(failures: u64) -> ExitCode {
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Write live records for `prefix + i`, i < count, as a PUT would leave them
/// (placement volumes, an md5), without touching the volumes.
fn seed(index: &Index, placement: &Placement, config: &Config) -> anyhow::Result<()> {
    use md5::{Digest, Md5};
    let started = std::time::Instant::now();
    let mut batch: Vec<(Vec<u8>, Record)> = Vec::with_capacity(BATCH_RECORDS_MAX);
    for i in 0..config.seed_count {
        let key = format!("{}{i}", config.seed_prefix).into_bytes();
        let hash = mkv::placement::hex_lower(&Md5::digest(&key).into());
        batch.push((key.clone(), Record::new(placement.place(&key), false, Some(hash))));
        if batch.len() == BATCH_RECORDS_MAX || i + 1 == config.seed_count {
            index.put_batch(batch.iter().map(|(key, record)| (key.as_slice(), record)))?;
            batch.clear();
        }
    }
    index.compact();
    eprintln!(
        "seeded {} keys in {:.1}s (compacted)",
        config.seed_count,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
