//! A fresh PostgreSQL database per run (through `psql`), dropped when the guard goes away.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

pub struct Database {
    admin_url: String,
    pub name: String,
    pub url: String,
    /// What the server is given: `url`, without TLS when PostgreSQL is on this machine.
    pub server_url: String,
}

impl Database {
    /// Creates `tessera_bench_<pid>_<time>_<n>` on the server `admin_url` points at (`n` counts
    /// this process's databases, so two made within a second differ).
    pub fn create(admin_url: &str) -> Result<Self> {
        static CREATED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "tessera_bench_{}_{}_{}",
            std::process::id(),
            chrono::Utc::now().format("%Y%m%d%H%M%S"),
            CREATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let url = with_database(admin_url, &name)?;
        psql(admin_url, &format!("CREATE DATABASE \"{name}\"")).context(
            "creating the benchmark database (is PostgreSQL up, may this user CREATE DATABASE?)",
        )?;
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
            server_url: without_loopback_tls(&url),
            url,
        })
    }

    pub fn drop_now(&self) -> Result<()> {
        psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
        )
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Err(err) = self.drop_now() {
            eprintln!("warning: could not drop database {}: {err:#}", self.name);
        }
    }
}

/// What the benchmark database's backends are doing, sampled every [`WaitSampler::EVERY`] over
/// one `psql` connection kept open for the run (one small query per sample, no process per
/// sample): for each sample, the wait event of every active backend, `CPU` for one that is not
/// waiting (running, or runnable and waiting for a core).
pub struct WaitSampler {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Vec<WaitSample>>>,
}

/// One sample: when it was read, and one entry per active backend.
pub type WaitSample = (std::time::Instant, Vec<String>);

impl WaitSampler {
    pub const EVERY: std::time::Duration = std::time::Duration::from_millis(100);
    const SQL: &'static str = "SELECT coalesce(string_agg(coalesce(wait_event_type || ':' || \
        wait_event, 'CPU'), ','), '') FROM pg_stat_activity WHERE datname = current_database() \
        AND state = 'active' AND pid <> pg_backend_pid();\n";

    /// Starts sampling `url`'s database; `None` (and a warning) if `psql` cannot be started.
    pub fn start(url: &str) -> Option<Self> {
        use std::io::{BufRead, Write};
        let mut child = Command::new("psql")
            .arg(url)
            .args(["-qAtX", "-v", "ON_ERROR_STOP=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| eprintln!("warning: no wait-event sampling: {err}"))
            .ok()?;
        let (mut input, output) = (child.stdin.take()?, child.stdout.take()?);
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(output).lines();
            let mut samples = Vec::new();
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Self::EVERY)
            {
                let at = std::time::Instant::now();
                if input
                    .write_all(Self::SQL.as_bytes())
                    .and_then(|()| input.flush())
                    .is_err()
                {
                    break;
                }
                let Some(Ok(line)) = lines.next() else { break };
                samples.push((at, parse_wait_sample(&line)));
            }
            drop(input); // psql exits at the end of its input
            let _ = child.wait();
            samples
        });
        Some(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops sampling; the samples taken.
    pub fn finish(mut self) -> Vec<WaitSample> {
        drop(self.stop.take());
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for WaitSampler {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `"CPU,LWLock:WALWrite"` → the two entries; an empty line is a sample with nothing active.
fn parse_wait_sample(line: &str) -> Vec<String> {
    line.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The samples of one window: how many were taken, and how often each state was seen in them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WaitCounts {
    samples: u32,
    seen: std::collections::BTreeMap<String, u32>,
}

impl WaitCounts {
    /// Adds another window's samples to these.
    pub fn merge(&mut self, other: &Self) {
        self.samples += other.samples;
        for (state, n) in &other.seen {
            *self.seen.entry(state.clone()).or_default() += n;
        }
    }

    /// The mean number of active backends in each state per sample, largest first.
    pub fn means(&self) -> Vec<(String, f64)> {
        let mut means: Vec<(String, f64)> = self
            .seen
            .iter()
            .map(|(state, n)| {
                (
                    state.clone(),
                    f64::from(*n) / f64::from(self.samples.max(1)),
                )
            })
            .collect();
        means.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        means
    }
}

/// The samples per window of `width` from `origin`, window `i` covering `[i, i + 1) × width`
/// (as [`crate::measure::windows`] does); samples before `origin` are left out.
pub fn waits_by_window(
    samples: &[WaitSample],
    origin: std::time::Instant,
    width: std::time::Duration,
) -> Vec<WaitCounts> {
    let mut windows: Vec<WaitCounts> = Vec::new();
    for (at, active) in samples {
        let Some(offset) = at.checked_duration_since(origin) else {
            continue;
        };
        let i = (offset.as_micros() / width.as_micros().max(1)) as usize;
        if windows.len() <= i {
            windows.resize_with(i + 1, Default::default);
        }
        windows[i].samples += 1;
        for state in active {
            *windows[i].seen.entry(state.clone()).or_default() += 1;
        }
    }
    windows
}

/// What autovacuum does about planner statistics, done by the harness because this machine's
/// PostgreSQL (like some others) runs with `autovacuum = off`: every [`Autoanalyze::EVERY`], each
/// table of the benchmark database whose rows changed more than autovacuum's analyze threshold
/// (50 + 10% of its rows, the defaults) since its last ANALYZE is analyzed again, at most once
/// per [`Autoanalyze::NAPTIME`] (autovacuum visits a database once per `autovacuum_naptime`,
/// 60 s by default), except a table that held fewer than [`Autoanalyze::SMALL_TABLE`] rows at its
/// last ANALYZE.
///
/// Without it, a table analyzed while nearly empty keeps statistics that say so while it grows
/// by thousands of rows: the server's prepared statements and the foreign-key checks keep plans
/// made for a tiny table (sequential scans of `sessions` on every sign-in and refresh, found
/// with `pg_stat_user_tables`), and a scenario measures a cost that grows with the run instead
/// of the steady state of a server whose statistics are kept current. Such a table is analyzed
/// again within 10 s, so that a scenario of 15 s reaches that steady state.
///
/// Once a table is past that size its plans no longer change, and it is analyzed no more often
/// than autovacuum would. Analyzing it every 10 s instead (as this harness did until 2026-12-03)
/// put an ANALYZE of the 200,000-row `refresh_tokens` (130–250 ms of a core) into every other
/// 5 s window of the refresh open loop: p99 by window 3.4 / 28.3 / 7.4 / 25.1 / 8.3 ms..., where
/// one ANALYZE a minute gives 3.6 / 2.9 / 4.3 / 4.6 / 8.6 / 23.9 (its window) / 6.0 ms.
pub struct Autoanalyze {
    /// Dropping it ends the thread at once (its wait sees the channel disconnected).
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Autoanalyze {
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(10);
    /// `autovacuum_naptime`'s default, in seconds: the least time between two analyzes of a table.
    pub const NAPTIME: u64 = 60;
    /// Below this many rows at its last ANALYZE a table is analyzed as soon as it passes the
    /// threshold: the plans cached for it may still be those of an empty table.
    pub const SMALL_TABLE: u64 = 1_000;
    /// The statement each check runs: analyze every table past its threshold and due again
    /// (`small` and `naptime` are [`Self::SMALL_TABLE`] and [`Self::NAPTIME`] outside tests).
    fn sql(small: u64, naptime: u64) -> String {
        format!(
            "DO $$ DECLARE t regclass; BEGIN \
             FOR t IN SELECT s.relid FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
                      WHERE s.n_mod_since_analyze > 50 + 0.1 * greatest(c.reltuples, 0) \
                        AND (c.reltuples < {small} OR s.last_analyze IS NULL \
                             OR s.last_analyze < now() - interval '{naptime} seconds') \
             LOOP EXECUTE format('ANALYZE %s', t); END LOOP; END $$",
        )
    }

    /// Starts checking `url`'s database in the background until dropped.
    pub fn start(url: &str) -> Self {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (url, sql) = (url.to_owned(), Self::sql(Self::SMALL_TABLE, Self::NAPTIME));
        let thread = std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Self::EVERY)
            {
                if let Err(err) = psql_query(&url, &sql) {
                    eprintln!("warning: analyzing the benchmark database: {err:#}");
                }
            }
        });
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Autoanalyze {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Cluster-wide counters of PostgreSQL's write path, read before and after a run to say what the
/// database did meanwhile (other databases' activity included).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WalCounters {
    /// Checkpoints started (timed and requested).
    pub checkpoints: i64,
    pub wal_bytes: f64,
    /// Full-page images: the first change to a page after a checkpoint logs the whole page.
    pub wal_fpi: i64,
}

impl WalCounters {
    /// Reads them; `None` when this server has no such views (before PostgreSQL 14).
    pub fn read(url: &str) -> Option<Self> {
        let checkpoints = psql_query(
            url,
            "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter",
        )
        .or_else(|_| {
            // PostgreSQL 17 moved them.
            psql_query(
                url,
                "SELECT num_timed + num_requested FROM pg_stat_checkpointer",
            )
        })
        .ok()?;
        let wal = psql_query(url, "SELECT wal_bytes, wal_fpi FROM pg_stat_wal").ok()?;
        Self::parse(&checkpoints, &wal)
    }

    fn parse(checkpoints: &str, wal: &str) -> Option<Self> {
        let (bytes, fpi) = wal.split_once('|')?;
        Some(Self {
            checkpoints: checkpoints.trim().parse().ok()?,
            wal_bytes: bytes.trim().parse().ok()?,
            wal_fpi: fpi.trim().parse().ok()?,
        })
    }

    /// What happened between `self` (before) and `after`.
    pub fn since(&self, after: &Self) -> Self {
        Self {
            checkpoints: after.checkpoints - self.checkpoints,
            wal_bytes: after.wal_bytes - self.wal_bytes,
            wal_fpi: after.wal_fpi - self.wal_fpi,
        }
    }
}

/// Runs one statement; the output is returned trimmed.
pub fn psql_query(url: &str, sql: &str) -> Result<String> {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-qAtX", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .context("running psql (is the PostgreSQL client installed?)")?;
    if !out.status.success() {
        bail!(
            "psql `{sql}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub(crate) fn psql(url: &str, sql: &str) -> Result<()> {
    psql_query(url, sql).map(drop)
}

/// `postgres://user@host:port/db?opts` with the database replaced by `name`.
fn with_database(url: &str, name: &str) -> Result<String> {
    let scheme_end = url.find("://").context("database URL without scheme")? + 3;
    let (base, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    Ok(format!("{}/{name}{query}", &base[..authority_end]))
}

/// `url` with `sslmode=disable` added when its host is loopback and it names no sslmode.
/// PostgreSQL's default (`prefer`) negotiates TLS even over loopback, where it protects nothing
/// and costs both the server and PostgreSQL CPU on the very cores the benchmark measures; an
/// explicit sslmode is kept as given.
fn without_loopback_tls(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return url.to_owned();
    };
    // `host_str` keeps an IPv6 address in brackets.
    let host = parsed.host_str().unwrap_or("");
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback || parsed.query_pairs().any(|(k, _)| k == "sslmode") {
        return url.to_owned();
    }
    parsed.query_pairs_mut().append_pair("sslmode", "disable");
    parsed.into()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{parse_wait_sample, waits_by_window, WaitSampler, WalCounters};

    #[test]
    fn wait_samples_parse_and_average_by_window() {
        assert_eq!(parse_wait_sample(""), Vec::<String>::new());
        assert_eq!(
            parse_wait_sample("CPU,LWLock:WALWrite"),
            ["CPU", "LWLock:WALWrite"]
        );
        let origin = std::time::Instant::now();
        let at = |ms| origin + std::time::Duration::from_millis(ms);
        let sample = |ms, line| (at(ms), parse_wait_sample(line));
        let samples = vec![
            sample(0, "CPU"),
            sample(100, "CPU,IO:WALSync"),
            sample(1_100, "LWLock:WALWrite,LWLock:WALWrite,CPU"),
            sample(1_200, ""),
        ];
        let later = origin + std::time::Duration::from_millis(50);
        let windows = waits_by_window(&samples, origin, std::time::Duration::from_secs(1));
        assert_eq!(windows.len(), 2);
        assert_eq!(
            windows[0].means(),
            [("CPU".to_owned(), 1.0), ("IO:WALSync".to_owned(), 0.5)]
        );
        assert_eq!(
            windows[1].means(),
            [("LWLock:WALWrite".to_owned(), 1.0), ("CPU".to_owned(), 0.5)]
        );
        // Merged, the means are over all four samples.
        let mut both = windows[0].clone();
        both.merge(&windows[1]);
        assert_eq!(
            both.means(),
            [
                ("CPU".to_owned(), 0.75),
                ("LWLock:WALWrite".to_owned(), 0.5),
                ("IO:WALSync".to_owned(), 0.25)
            ]
        );
        // Samples taken before the origin are not in any window.
        let windows = waits_by_window(&samples, later, std::time::Duration::from_secs(1));
        assert_eq!(
            windows[0].means(),
            [("CPU".to_owned(), 1.0), ("IO:WALSync".to_owned(), 1.0)]
        );
    }

    /// The sampler against a real PostgreSQL: each sample sees at least the busy session.
    #[test]
    fn wait_sampler_sees_an_active_backend() {
        let Some(db) = test_database() else { return };
        let busy = std::thread::spawn({
            let url = db.url.clone();
            move || psql(&url, "SELECT pg_sleep(1)").unwrap()
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        let sampler = WaitSampler::start(&db.url).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(450));
        let samples = sampler.finish();
        busy.join().unwrap();
        assert!(samples.len() >= 2, "{samples:?}");
        assert!(
            samples
                .iter()
                .all(|(_, active)| active == &["Timeout:PgSleep"]),
            "{samples:?}"
        );
    }
    use super::{psql, psql_query, with_database, without_loopback_tls, Autoanalyze, Database};

    /// A fresh database on the PostgreSQL of `TESSERA_TEST_PG_URL` (which the README's test
    /// command sets), dropped with the guard; `None` without it.
    pub(crate) fn test_database() -> Option<Database> {
        let Ok(admin) = std::env::var("TESSERA_TEST_PG_URL") else {
            eprintln!("TESSERA_TEST_PG_URL not set: skipped (the README's test command sets it)");
            return None;
        };
        Some(Database::create(&admin).unwrap())
    }

    /// Against a real PostgreSQL (`TESSERA_TEST_PG_URL`, which the README's test command sets):
    /// a table that was small at its last ANALYZE is analyzed as soon as it passes the threshold;
    /// a larger one only once its last ANALYZE is a naptime old; one below the threshold never.
    #[test]
    fn autoanalyze_analyzes_small_tables_at_once_and_large_ones_once_a_naptime() {
        let Some(db) = test_database() else { return };
        let rows = |t: &str| -> f64 {
            psql_query(
                &db.url,
                &format!("SELECT reltuples FROM pg_class WHERE relname = '{t}'"),
            )
            .unwrap()
            .parse()
            .unwrap()
        };
        for (table, before, after) in [
            ("small", 10, 2_000),
            ("large", 5_000, 5_000),
            ("calm", 5_000, 100),
        ] {
            // Each step its own psql process: counts reach the statistics when it exits (and
            // inserts counted after an ANALYZE in the same transaction would count as changes).
            psql(&db.url, &format!(
                "CREATE TABLE {table} (id int); INSERT INTO {table} SELECT generate_series(1, {before})"
            ))
            .unwrap();
            psql(&db.url, &format!("ANALYZE {table}")).unwrap();
            psql(
                &db.url,
                &format!("INSERT INTO {table} SELECT generate_series(1, {after})"),
            )
            .unwrap();
        }

        psql(
            &db.url,
            &Autoanalyze::sql(Autoanalyze::SMALL_TABLE, Autoanalyze::NAPTIME),
        )
        .unwrap();
        assert_eq!(
            rows("small"),
            2_010.0,
            "a small table past its threshold is analyzed at once"
        );
        assert_eq!(
            rows("large"),
            5_000.0,
            "a large table analyzed just now waits for the naptime"
        );
        assert_eq!(rows("calm"), 5_000.0);

        // A naptime of 0 s stands for the minute having passed.
        psql(&db.url, &Autoanalyze::sql(Autoanalyze::SMALL_TABLE, 0)).unwrap();
        assert_eq!(
            rows("large"),
            10_000.0,
            "past its threshold and its naptime"
        );
        assert_eq!(
            rows("calm"),
            5_000.0,
            "100 changed rows are below 50 + 10% of 5,000"
        );
    }

    #[test]
    fn wal_counters_parse_and_subtract() {
        let before = WalCounters::parse("3", "1048576|10").unwrap();
        let after = WalCounters::parse("4\n", "3145728|25").unwrap();
        assert_eq!(
            before.since(&after),
            WalCounters {
                checkpoints: 1,
                wal_bytes: 2_097_152.0,
                wal_fpi: 15
            }
        );
        assert_eq!(WalCounters::parse("x", "1|2"), None);
        assert_eq!(WalCounters::parse("1", "12"), None);
    }

    #[test]
    fn loopback_connections_go_without_tls_unless_told_otherwise() {
        for (given, expected) in [
            (
                "postgres://postgres@127.0.0.1:5432/x",
                "postgres://postgres@127.0.0.1:5432/x?sslmode=disable",
            ),
            (
                "postgres://u:p@localhost/x?application_name=b",
                "postgres://u:p@localhost/x?application_name=b&sslmode=disable",
            ),
            (
                "postgres://[::1]:5432/x",
                "postgres://[::1]:5432/x?sslmode=disable",
            ),
            (
                "postgres://u@127.0.0.1/x?sslmode=require",
                "postgres://u@127.0.0.1/x?sslmode=require",
            ),
            (
                "postgres://u@db.internal:5432/x",
                "postgres://u@db.internal:5432/x",
            ),
            ("postgres://u@10.0.0.5/x", "postgres://u@10.0.0.5/x"),
        ] {
            assert_eq!(without_loopback_tls(given), expected, "{given}");
        }
    }

    #[test]
    fn replaces_the_database() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x").unwrap(),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x").unwrap(),
            "postgres://h:5432/x"
        );
    }
}
