//! What a run stands on: a PostgreSQL cluster of its own (or a given server), a fresh database,
//! the server and the plain handler as child processes stopped on drop, facts about the machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sea_orm::{ConnectionTrait, Database};

/// A private PostgreSQL cluster in a temporary directory, as the outage test runs one: this
/// machine's shared server runs with autovacuum off, which lets the statistics of the tables a
/// benchmark grows go stale, and other work shares it. Stock settings otherwise (durable
/// commits, fsync on).
pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub url: String,
}

impl Cluster {
    pub fn start() -> Result<Self> {
        let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .context("no PostgreSQL server binaries in /usr/lib/postgresql (or give --pg-url)")?
            .filter_map(|e| Some(e.ok()?.path().join("bin")))
            .filter(|p| p.join("pg_ctl").exists())
            .collect();
        bins.sort();
        let bin = bins.pop().context("no pg_ctl under /usr/lib/postgresql")?;
        let dir = tempfile::Builder::new()
            .prefix("tessera-bench-pg-")
            .tempdir()?;
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status();
        let port = free_port()?;
        let data = dir.path().join("data").display().to_string();
        let cluster = Self {
            bin,
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"),
            dir,
        };
        cluster.tool(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        )?;
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c autovacuum=on -c fsync=on",
            cluster.dir.path().display()
        );
        let log = cluster.dir.path().join("pg.log").display().to_string();
        cluster.tool(
            "pg_ctl",
            &["-D", &data, "-o", &opts, "-l", &log, "-w", "start"],
        )?;
        Ok(cluster)
    }

    /// Runs a PostgreSQL tool, as the `postgres` user when we are root (initdb refuses root).
    fn tool(&self, tool: &str, args: &[&str]) -> Result<()> {
        let program = self.bin.join(tool);
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let mut cmd = if root {
            Command::new("runuser")
        } else {
            Command::new(&program)
        };
        if root {
            cmd.args(["-u", "postgres", "--"]).arg(&program);
        }
        let out = cmd
            .args(args)
            .output()
            .with_context(|| format!("running {tool}"))?;
        if !out.status.success() {
            bail!("{tool} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").display().to_string();
        let _ = self.tool("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}

/// Runs a command (simple protocol: `VACUUM`, `CREATE DATABASE` and the like) at `url`.
pub async fn exec(url: &str, sql: &str) -> Result<()> {
    let db = Database::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    db.execute_unprepared(sql)
        .await
        .with_context(|| format!("running {sql}"))?;
    Ok(db.close().await?)
}

/// The first column of the first row of `sql` at `url`, as text.
pub async fn query(url: &str, sql: &str) -> Result<String> {
    let db = Database::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            sql,
        ))
        .await?;
    let value = row
        .and_then(|r| r.try_get_by_index::<String>(0).ok())
        .unwrap_or_default();
    db.close().await?;
    Ok(value)
}

/// `url` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> Result<String> {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let slash = base
        .rfind('/')
        .filter(|&i| i > "postgres://".len())
        .context("PostgreSQL URL without a database")?;
    Ok(format!(
        "{}/{name}{}",
        &base[..slash],
        query.map(|q| format!("?{q}")).unwrap_or_default()
    ))
}

/// A child process (the server, the plain handler), killed when dropped; its output goes to a
/// log file in the run's directory.
pub struct Child {
    name: &'static str,
    child: std::process::Child,
    log: PathBuf,
}

impl Child {
    pub fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Result<Self> {
        let out = std::fs::File::create(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Self { name, child, log })
    }

    /// Waits until `url` answers 200 (5 minutes at most: a debug build migrates slowly).
    pub async fn wait_ready(&mut self, client: &reqwest::Client, url: &str) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(300) {
            self.check_alive()?;
            if client
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{} not ready at {url}; log: {}", self.name, self.log_tail())
    }

    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}); log: {}", self.name, self.log_tail());
        }
        Ok(())
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to completion off the async runtime (tokio's process feature is left out of the
/// workspace's feature set, so the tests' build serves this one).
pub async fn output(mut cmd: Command) -> Result<std::process::Output> {
    Ok(tokio::task::spawn_blocking(move || cmd.output()).await??)
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Share of all cores busy over `window` (from /proc/stat).
pub async fn busy(window: Duration) -> Option<f64> {
    fn read() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let v: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let idle = v.get(3)? + v.get(4)?;
        Some((v.iter().take(8).sum(), idle))
    }
    let (t0, i0) = read()?;
    tokio::time::sleep(window).await;
    let (t1, i1) = read()?;
    let total = t1.checked_sub(t0).filter(|&t| t > 0)?;
    Some(1.0 - (i1 - i0) as f64 / total as f64)
}

pub fn machine(cores: usize) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo.lines().find_map(|l| {
        l.strip_prefix("model name")?
            .split_once(':')
            .map(|(_, m)| m.trim().to_owned())
    });
    let mem_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines().find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .trim()
                .trim_end_matches(" kB")
                .parse::<u64>()
                .ok()
        })
    });
    format!(
        "{cores} cores, {}, {:.1} GiB RAM",
        cpu.unwrap_or_else(|| "unknown CPU".into()),
        mem_kib.unwrap_or(0) as f64 / 1_048_576.0
    )
}

/// The commit, marked when the tree has uncommitted changes.
pub fn commit(dir: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    let Some(head) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|o| !o.stdout.is_empty());
    if dirty {
        format!("{head} with uncommitted changes")
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_database_in_a_url() {
        let url = super::with_database("postgres://u@h:5/postgres?sslmode=disable", "b1").unwrap();
        assert_eq!(url, "postgres://u@h:5/b1?sslmode=disable");
        assert_eq!(
            super::with_database("postgres://u@h/x", "y").unwrap(),
            "postgres://u@h/y"
        );
    }
}
