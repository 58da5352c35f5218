//! The cluster under test and the faults done to it: three nginx volumes
//! (the repo's `./volume` script) and the mkv master, on loopback ports, in
//! a temp dir.
//!
//! Every child runs in its own process group (`process_group(0)`), so a
//! signal sent to the group (`kill(-pgid, sig)`) reaches nginx's workers as
//! well as its master process, and a Ctrl-C on the terminal reaches only the
//! harness, which then stops the children itself. The groups of running
//! children are also kept in a global registry that the panic hook and the
//! signal path SIGKILL, so nothing outlives the harness.

use std::fs::OpenOptions;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a restarted server may take to listen again.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How often a starting server's port is tried.
const START_POLL: Duration = Duration::from_millis(10);

/// How long a killed child may take to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(10);

/// Process groups of the running children, for the last-resort cleanup.
static PROCESS_GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// SIGKILL every registered process group (panic hook, signal path). Uses
/// `try_lock`: a panic while the registry is held must not deadlock.
pub fn kill_all_registered() {
    if let Ok(groups) = PROCESS_GROUPS.try_lock() {
        for &group in groups.iter() {
            signal_group(group, libc::SIGCONT);
            signal_group(group, libc::SIGKILL);
        }
    }
}

fn register(group: i32) {
    PROCESS_GROUPS
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .push(group);
}

fn unregister(group: i32) {
    PROCESS_GROUPS
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .retain(|&registered| registered != group);
}

fn signal_group(group: i32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals that process group; no
    // memory is touched.
    unsafe { libc::kill(-group, signal) };
}

/// A child in its own process group.
struct Process {
    child: Child,
}

impl Process {
    fn spawn(command: &mut Command) -> std::io::Result<Process> {
        let child = command.process_group(0).stdin(Stdio::null()).spawn()?;
        register(child.id() as i32);
        Ok(Process { child })
    }

    fn group(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether it exited on its own, and how.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL the whole group and reap the child.
    fn kill(mut self) {
        signal_group(self.group(), libc::SIGCONT);
        signal_group(self.group(), libc::SIGKILL);
        let deadline = Instant::now() + REAP_TIMEOUT;
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(START_POLL);
        }
        unregister(self.group());
    }
}

/// Wait until something listens on `port`, or `START_TIMEOUT` passes.
fn wait_for_port(port: u16, process: &mut Process) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = process.exited() {
            return Err(format!("exited with {status} before listening on {port}"));
        }
        if Instant::now() > deadline {
            return Err(format!("nothing listens on {port} after {START_TIMEOUT:?}"));
        }
        std::thread::sleep(START_POLL);
    }
    Ok(())
}

/// Fail early, with a clear message, when a port of the cluster is taken.
pub fn check_port_free(port: u16) -> Result<(), String> {
    TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .map_err(|error| format!("port {port} is not free ({error}): pick another --base-port"))
}

/// One nginx volume server.
pub struct Volume {
    pub port: u16,
    pub dir: PathBuf,
    script: PathBuf,
    process: Option<Process>,
    frozen: bool,
}

impl Volume {
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn start(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .map_err(|error| error.to_string())?;
        let mut process = Process::spawn(
            Command::new(&self.script)
                .arg(&self.dir)
                .env("PORT", self.port.to_string())
                .env("BIND", "127.0.0.1")
                .stdout(log.try_clone().map_err(|error| error.to_string())?)
                .stderr(log),
        )
        .map_err(|error| format!("start {}: {error}", self.script.display()))?;
        let started = wait_for_port(self.port, &mut process);
        self.process = Some(process);
        started.map_err(|error| format!("volume {}: {error}", self.host()))
    }

    /// SIGKILL nginx and its workers; the directory stays.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
        self.frozen = false;
    }

    /// SIGSTOP every process of the volume.
    pub fn freeze(&mut self) {
        if let Some(process) = &self.process {
            signal_group(process.group(), libc::SIGSTOP);
            self.frozen = true;
        }
    }

    pub fn thaw(&mut self) {
        if let Some(process) = &self.process {
            signal_group(process.group(), libc::SIGCONT);
        }
        self.frozen = false;
    }

    pub fn running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|process| process.exited().is_none())
    }
}

/// The mkv master.
pub struct Master {
    pub port: u16,
    binary: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    process: Option<Process>,
}

impl Master {
    pub fn start(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|error| error.to_string())?;
        let mut process = Process::spawn(
            Command::new(&self.binary)
                .args(&self.args)
                .stdout(log.try_clone().map_err(|error| error.to_string())?)
                .stderr(log),
        )
        .map_err(|error| format!("start {}: {error}", self.binary.display()))?;
        let started = wait_for_port(self.port, &mut process);
        self.process = Some(process);
        started.map_err(|error| format!("master: {error}"))
    }

    /// `kill -9`: no shutdown of any kind.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }

    /// How it exited, if it exited without being killed.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.as_mut().and_then(Process::exited)
    }

    pub fn running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|process| process.exited().is_none())
    }
}

/// What the cluster is started with.
pub struct Layout {
    pub dir: PathBuf,
    pub base_port: u16,
    pub volumes: usize,
    pub mkv: PathBuf,
    pub volume_script: PathBuf,
    /// Master flags after `-db`, `-volumes` and `-port`.
    pub master_flags: Vec<String>,
}

/// Volumes plus the master; dropping it kills them all.
pub struct Cluster {
    pub dir: PathBuf,
    pub volumes: Vec<Volume>,
    pub master: Master,
}

impl Cluster {
    /// Start the volumes (ports base+1..) and the master (base port).
    pub fn start(layout: Layout) -> Result<Cluster, String> {
        for port in layout.base_port..=layout.base_port + layout.volumes as u16 {
            check_port_free(port)?;
        }
        std::fs::create_dir_all(&layout.dir).map_err(|error| error.to_string())?;
        let volumes = (1..=layout.volumes)
            .map(|number| Volume {
                port: layout.base_port + number as u16,
                dir: layout.dir.join(format!("volume{number}")),
                script: layout.volume_script.clone(),
                process: None,
                frozen: false,
            })
            .collect::<Vec<_>>();
        let hosts: Vec<String> = volumes.iter().map(Volume::host).collect();
        let mut args = vec![
            "-db".to_string(),
            layout.dir.join("index").display().to_string(),
            "-volumes".to_string(),
            hosts.join(","),
            "-port".to_string(),
            layout.base_port.to_string(),
        ];
        args.extend(layout.master_flags);
        args.push("server".to_string());
        let master = Master {
            port: layout.base_port,
            binary: layout.mkv,
            args,
            log: layout.dir.join("master.log"),
            process: None,
        };
        let mut cluster = Cluster {
            dir: layout.dir,
            volumes,
            master,
        };
        for volume in &mut cluster.volumes {
            std::fs::create_dir_all(&volume.dir).map_err(|error| error.to_string())?;
            volume.start()?;
        }
        cluster.master.start()?;
        Ok(cluster)
    }

    pub fn master_host(&self) -> String {
        format!("127.0.0.1:{}", self.master.port)
    }

    pub fn hosts(&self) -> Vec<String> {
        self.volumes.iter().map(Volume::host).collect()
    }

    /// The data directory of the volume `host:port`.
    pub fn volume_dir(&self, host: &str) -> Option<&Path> {
        self.volumes
            .iter()
            .find(|volume| volume.host() == host)
            .map(|volume| volume.dir.as_path())
    }

    /// Bring everything back: thaw frozen volumes, start what is down.
    pub fn recover(&mut self) -> Result<(), String> {
        for volume in &mut self.volumes {
            if volume.frozen {
                volume.thaw();
            }
            if !volume.running() {
                volume.kill();
                volume.start()?;
            }
        }
        if !self.master.running() {
            self.master.kill();
            self.master.start()?;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.master.kill();
        for volume in &mut self.volumes {
            volume.kill();
        }
    }
}
