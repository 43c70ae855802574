//! The processes a run starts (the server, the plain-handler ceiling, oha, the Argon2 ceiling),
//! stopping them on every exit path, and sampling a process's CPU and RSS from /proc.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cpu::{CpuSplit, Machine, Snapshot};

/// Pids of short-lived tools (oha, the Argon2 ceiling) currently running, so an interrupt can end
/// them too; long-lived children are ended by their guards.
fn running_tools() -> &'static Mutex<HashSet<u32>> {
    static RUNNING: OnceLock<Mutex<HashSet<u32>>> = OnceLock::new();
    RUNNING.get_or_init(Default::default)
}

/// Sends SIGTERM to every tool still running (interrupt path).
pub fn terminate_running_tools() {
    let pids: Vec<u32> = running_tools()
        .lock()
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default();
    for pid in pids {
        signal(pid, "TERM");
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A command for messages: the program and its arguments only, an `Authorization` header's
/// value left out (oha carries a bearer token). `Command`'s Debug also prints the environment it
/// sets, which holds DATABASE_URL and, for `tessera ceiling refresh`, a password.
fn shown(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        line.push(' ');
        if arg.to_ascii_lowercase().starts_with("authorization:") {
            line.push_str("Authorization: <redacted>");
        } else {
            line.push_str(&arg);
        }
    }
    line
}

/// Starts a bounded tool with its output piped, registered so that an interrupt ends it too.
fn spawn_tool(cmd: &mut Command, stdin: Stdio, shown: &str) -> Result<Child> {
    let child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    if let Ok(mut set) = running_tools().lock() {
        set.insert(child.id());
    }
    Ok(child)
}

/// A tool [`spawn_tool`] started has been waited for.
fn forget_tool(pid: u32) {
    if let Ok(mut set) = running_tools().lock() {
        set.remove(&pid);
    }
}

/// Runs a bounded tool to completion off the async executor and returns its output.
pub async fn run_tool(mut cmd: Command) -> Result<Output> {
    let shown = shown(&cmd);
    tokio::task::spawn_blocking(move || -> Result<Output> {
        let child = spawn_tool(&mut cmd, Stdio::null(), &shown)?;
        let pid = child.id();
        let out = child.wait_with_output();
        forget_tool(pid);
        let out = out.with_context(|| format!("waiting for {shown}"))?;
        if !out.status.success() {
            bail!(
                "{shown} exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    })
    .await?
}

/// Like [`run_tool`], for a tool that prints its result as a line `is_result` recognizes and then
/// waits for its stdin to close (`tessera ceiling refresh --hold`). The tool's CPU (in the
/// server's place of the split) and that of the PostgreSQL backends serving `pg_db` are sampled
/// from its start until that line, while its database connections are still open: a backend
/// that has exited can no longer be read.
pub async fn run_held_tool(
    mut cmd: Command,
    pg_db: &str,
    is_result: fn(&str) -> bool,
) -> Result<(Output, Usage)> {
    let shown = shown(&cmd);
    let pg_db = pg_db.to_owned();
    tokio::task::spawn_blocking(move || -> Result<(Output, Usage)> {
        let mut child = spawn_tool(&mut cmd, Stdio::piped(), &shown)?;
        let pid = child.id();
        let mut sampler = Some(Sampler::start(pid, Some(&pg_db)));
        let stderr = child.stderr.take().map(|mut err| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = std::io::Read::read_to_end(&mut err, &mut buf);
                buf
            })
        });
        let (mut stdin, mut stdout, mut usage) = (child.stdin.take(), String::new(), None);
        if let Some(out) = child.stdout.take() {
            for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
                let Ok(line) = line else { break };
                stdout.push_str(&line);
                stdout.push('\n');
                if usage.is_none() && is_result(&line) {
                    usage = sampler.take().map(Sampler::finish);
                    // Closing its stdin lets the tool exit.
                    stdin.take();
                }
            }
        }
        drop(stdin);
        let status = child.wait();
        forget_tool(pid);
        let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
        let status = status.with_context(|| format!("waiting for {shown}"))?;
        if !status.success() {
            bail!(
                "{shown} exited with {status}: {}",
                String::from_utf8_lossy(&stderr).trim()
            );
        }
        let usage = usage.or_else(|| sampler.take().map(Sampler::finish));
        Ok((
            Output {
                status,
                stdout: stdout.into_bytes(),
                stderr,
            },
            usage.unwrap_or_default(),
        ))
    })
    .await?
}

/// A long-running child (server, plain handler) that is stopped when dropped.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl ChildGuard {
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}: {}", shown(&cmd)))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails (with the end of its log) if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited unexpectedly ({status}); last log lines:\n{}",
                    self.name,
                    self.log_tail(20)
                );
            }
        }
        Ok(())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, up to 3 s for a graceful exit, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        signal(child.id(), "TERM");
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A scratch directory (server working dir, data dir, logs), removed when dropped.
pub struct WorkDir(pub PathBuf);

impl WorkDir {
    pub fn create() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "tessera-bench-{}-{}",
            std::process::id(),
            chrono::Utc::now().format("%Y%m%d%H%M%S")
        ));
        fs::create_dir_all(dir.join("data"))?;
        Ok(Self(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// CPU and memory used by a process (and optionally the PostgreSQL backends serving it) over one
/// measurement window. CPU is in percent of one core (200% = both cores of a 2-core machine).
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub cpu_pct: f64,
    pub max_rss_kib: u64,
    pub pg_cpu_pct: Option<f64>,
    /// Where all the cores' time went (without a database, every PostgreSQL process counts as
    /// the rest of the cluster).
    pub split: Option<CpuSplit>,
}

pub struct Sampler {
    pid: u32,
    pg_db: Option<String>,
    started: Instant,
    start_ticks: u64,
    split_start: Option<Snapshot>,
    stop: Arc<AtomicBool>,
    max_rss: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling `pid`; with `pg_db`, also the PostgreSQL backends connected to that database.
    pub fn start(pid: u32, pg_db: Option<&str>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let max_rss = Arc::new(AtomicU64::new(rss_kib(pid).unwrap_or(0)));
        let thread = {
            let (stop, max_rss) = (stop.clone(), max_rss.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = rss_kib(pid) {
                        max_rss.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Self {
            pid,
            pg_db: pg_db.map(str::to_owned),
            started: Instant::now(),
            start_ticks: cpu_ticks(pid).unwrap_or(0),
            split_start: Snapshot::take(pid, pg_db.unwrap_or_default()),
            stop,
            max_rss,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> Usage {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let wall = self.started.elapsed().as_secs_f64().max(1e-3);
        let hz = clock_ticks_per_sec() as f64;
        let end_ticks = cpu_ticks(self.pid).unwrap_or(self.start_ticks);
        let pct = |ticks: u64| ticks as f64 / hz / wall * 100.0;
        let split = self.split_start.as_ref().and_then(|start| {
            Snapshot::take(self.pid, self.pg_db.as_deref().unwrap_or_default())
                .map(|end| CpuSplit::between(start, &end))
        });
        // The backends serving the database, from the same snapshots as the split.
        let pg_cpu_pct = self
            .pg_db
            .as_ref()
            .map(|_| pct(split.as_ref().map_or(0, |s| s.pg_bench)));
        if let Some(rss) = rss_kib(self.pid) {
            self.max_rss.fetch_max(rss, Ordering::Relaxed);
        }
        Usage {
            split,
            cpu_pct: pct(end_ticks.saturating_sub(self.start_ticks)),
            max_rss_kib: self.max_rss.load(Ordering::Relaxed),
            pg_cpu_pct,
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Fraction of all cores' time spent busy (not idle or waiting for I/O) over `window`.
pub async fn cpu_busy_fraction(window: Duration) -> Option<f64> {
    let start = Machine::read()?;
    tokio::time::sleep(window).await;
    let end = Machine::read()?;
    let total = end.total().checked_sub(start.total())?.max(1);
    let idle = end.resting().saturating_sub(start.resting());
    Some(1.0 - idle as f64 / total as f64)
}

/// The fields of a `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat` line that CPU
/// accounting needs, in clock ticks.
pub(crate) struct ProcStat {
    pub comm: String,
    pub utime: u64,
    pub stime: u64,
    /// CPU of the children it has waited for (exited tools such as oha).
    pub children: u64,
    /// When it started, in clock ticks after boot: with the PID, names one process even if the
    /// PID is reused.
    pub start: u64,
}

pub(crate) fn read_stat(path: &str) -> Option<ProcStat> {
    let stat = fs::read_to_string(path).ok()?;
    // The command name may contain spaces and parentheses; the fields after the last ')' do not.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // The fields after the name start at field 3 (state); utime, stime, cutime and cstime are
    // fields 14 to 17, starttime field 22.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        comm,
        utime: field(14)?,
        stime: field(15)?,
        children: field(16)? + field(17)?,
        start: field(22)?,
    })
}

/// utime + stime of a process (all its threads), in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    read_stat(&format!("/proc/{pid}/stat")).map(|s| s.utime + s.stime)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Backends set their title to "postgres: <cluster>: <user> <db> <client> <state>".
pub(crate) fn serves_database(title: &str, db: &str) -> bool {
    title.starts_with("postgres:") && title.split_whitespace().any(|w| w == db)
}

/// One process of the PostgreSQL cluster.
pub(crate) struct PgProcess {
    pub pid: u32,
    /// Its command line, which PostgreSQL rewrites into a title naming the process's role.
    pub title: String,
    /// utime + stime, in clock ticks.
    pub ticks: u64,
}

/// Any other process on the machine (kernel threads included), by its command name.
pub(crate) struct OtherProcess {
    pub pid: u32,
    /// Its start time (see [`ProcStat::start`]).
    pub start: u64,
    pub comm: String,
    /// utime + stime, in clock ticks.
    pub ticks: u64,
}

/// Every process of the PostgreSQL cluster: the postmaster and all it forked (backends, WAL
/// writer, checkpointer, ...), whose name is `postgres`; and every other process but the ones in
/// `except`.
pub(crate) fn processes(except: &[u32]) -> (Vec<PgProcess>, Vec<OtherProcess>) {
    let (mut pg, mut other) = (Vec::new(), Vec::new());
    let Ok(entries) = fs::read_dir("/proc") else {
        return (pg, other);
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if except.contains(&pid) {
            continue;
        }
        let Some(stat) = read_stat(&format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ticks = stat.utime + stat.stime;
        if stat.comm != "postgres" {
            other.push(OtherProcess {
                pid,
                start: stat.start,
                comm: stat.comm,
                ticks,
            });
            continue;
        }
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let title = String::from_utf8_lossy(&cmdline).into_owned();
        pg.push(PgProcess { pid, title, ticks });
    }
    (pg, other)
}

pub(crate) fn clock_ticks_per_sec() -> u64 {
    static HZ: OnceLock<u64> = OnceLock::new();
    *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&hz| hz > 0)
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_shown_without_their_environment() {
        let mut cmd = Command::new("tessera");
        cmd.args(["ceiling", "refresh"])
            .env("TESSERA_CEILING_PASSWORD", "hunter2")
            .env("DATABASE_URL", "postgres://u:secret@h/db");
        assert_eq!(shown(&cmd), "tessera ceiling refresh");
        assert!(format!("{cmd:?}").contains("hunter2"), "why shown() exists");
        let mut oha = Command::new("oha");
        oha.args([
            "-H",
            "Authorization: Bearer eyJsecret",
            "http://127.0.0.1:1/v1/me",
        ]);
        assert_eq!(
            shown(&oha),
            "oha -H Authorization: <redacted> http://127.0.0.1:1/v1/me"
        );
    }

    #[test]
    fn reads_own_cpu_and_rss() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        assert!(rss_kib(me).unwrap() > 0);
        let start = cpu_ticks(me).unwrap();
        let s = Sampler::start(me, None);
        // Spin until the process has been charged some CPU (however busy the machine is).
        let spin = Instant::now();
        while cpu_ticks(me).unwrap() < start + 3 && spin.elapsed() < Duration::from_secs(10) {
            std::hint::black_box(spin.elapsed());
        }
        let u = s.finish();
        assert!(u.cpu_pct > 0.0, "{u:?}");
        assert!(u.max_rss_kib > 0);
        assert!(u.pg_cpu_pct.is_none());
    }
}
