//! `tessera-bench`: load benchmarks of `tessera serve` on PostgreSQL, each judged against a
//! ceiling measured in the same run (see BENCHMARKS.md), and those ceilings as subcommands.

mod ceiling;
mod env;
mod load;
mod oha;
mod report;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::env::Child;
use crate::load::{Measurement, Pace};
use crate::oha::{Load, Oha};
use crate::report::{ms, rate, Row, Verdict};

/// Open-loop p99 goals are judged with this share of the saturation measured in the same run
/// offered on a fixed schedule: busy, but with room left, on any machine of this kind.
const OPEN_SHARE: f64 = 0.70;
/// The server's default user-cache TTL, over which the many-users run spreads its first reads.
const USER_TTL: Duration = Duration::from_secs(1);
/// Workers of the in-crate generator's open loops. A worker sleeps until its request is due on
/// tokio's millisecond timer, then waits for the answer: with the 64 of the closed loops, tens of
/// thousands of requests a second left each worker about 2 ms for both, and the generator fell
/// behind its own schedule (hundreds of ms, charged as latency) before the server did.
const OPEN_WORKERS: usize = 256;

#[derive(Parser)]
#[command(
    name = "tessera-bench",
    about = "Load benchmarks for Tessera (see BENCHMARKS.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: Args,
}

#[derive(Subcommand)]
enum Cmd {
    /// A ceiling, measured in this process (the harness runs each as its own process).
    #[command(subcommand)]
    Ceiling(ceiling::Ceiling),
}

#[derive(clap::Args)]
struct Args {
    /// The `tessera` binary (default: the one next to this binary).
    #[arg(long)]
    tessera: Option<PathBuf>,
    #[arg(long, env = "TESSERA_BENCH_OHA", default_value = "oha")]
    oha: PathBuf,
    /// An existing PostgreSQL server whose user may CREATE DATABASE (default: a private cluster).
    #[arg(long, env = "TESSERA_BENCH_PG_URL")]
    pg_url: Option<String>,
    /// A few seconds per scenario; prints the report and leaves BENCHMARKS.md alone.
    #[arg(long)]
    smoke: bool,
    /// Only these scenarios; prints the report and leaves BENCHMARKS.md alone.
    #[arg(long, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Users of the many-users GET /v1/me run (default 2,000; smoke 50).
    #[arg(long)]
    users: Option<usize>,
    /// A server setting for this run, e.g. TESSERA_CACHE__USER_TTL_MS=5000 (repeatable).
    #[arg(long = "server-env", value_parser = key_value)]
    server_env: Vec<(String, String)>,
    #[arg(long, default_value = "BENCHMARKS.md")]
    output: PathBuf,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected KEY=VALUE")?;
    Ok((k.to_owned(), v.to_owned()))
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Me,
    Login,
    Refresh,
    Register,
    Fairness,
    Forgot,
    Authz,
}

/// How long each part runs.
struct Plan {
    run: Duration,
    open: Duration,
    warmup: Duration,
    ceiling: Duration,
    burst: Duration,
    users: usize,
    /// Organizations the authorization check runs over.
    tenants: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Cmd::Ceiling(c)) => ceiling::run(c).map(|()| Vec::new()),
        None => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(async {
                    tokio::select! {
                        r = run(cli.run) => r,
                        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
                    }
                })
            }),
    };
    match outcome {
        Ok(failures) if failures.is_empty() => ExitCode::SUCCESS,
        Ok(failures) => {
            failures
                .iter()
                .for_each(|f| eprintln!("tessera-bench: {f}"));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("tessera-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Everything a scenario needs.
struct Ctx {
    plan: Plan,
    cores: usize,
    oha: Oha,
    client: reqwest::Client,
    base: String,
    plain: String,
    /// The user login, refresh and the one-token GET /v1/me sign in as.
    email: String,
    run_id: String,
    exe: PathBuf,
    tessera: PathBuf,
    env: Vec<(String, String)>,
    work: PathBuf,
    db_url: String,
}

impl Ctx {
    /// `program` with the run's environment: the caller's TESSERA_* / DATABASE_URL / RUST_LOG
    /// removed (unknown TESSERA_* keys would be refused), the run's own set.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        for (key, _) in std::env::vars() {
            if key.starts_with("TESSERA_") || key == "DATABASE_URL" || key == "RUST_LOG" {
                cmd.env_remove(key);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.work);
        cmd
    }

    /// Runs `tessera-bench ceiling ARGS` as its own process; its last line of output.
    async fn ceiling(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.command(&self.exe);
        cmd.arg("ceiling").args(args);
        let out = env::output(cmd).await?;
        if !out.status.success() {
            bail!("ceiling {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        Ok(stdout.lines().last().unwrap_or_default().to_owned())
    }

    async fn argon2(&self) -> Result<f64> {
        let secs = self.plan.ceiling.as_secs_f64().to_string();
        let line = self.ceiling(&["argon2", "--seconds", &secs]).await?;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        v["per_sec"]
            .as_f64()
            .context("argon2 ceiling without per_sec")
    }

    /// oha after a short warm-up with the same load.
    async fn oha(&self, load: Load) -> Result<Measurement> {
        let warm = Load {
            run: self.plan.warmup,
            ..load.clone()
        };
        self.oha.run(&warm).await.context("warm-up")?;
        self.oha.run(&load).await
    }
}

/// Runs the scenarios; returns what must make the exit status non-zero.
async fn run(args: Args) -> Result<Vec<String>> {
    let started = Instant::now();
    let plan = Plan {
        run: Duration::from_secs(if args.smoke { 2 } else { 15 }),
        open: Duration::from_secs(if args.smoke { 2 } else { 30 }),
        warmup: Duration::from_millis(if args.smoke { 300 } else { 2_000 }),
        ceiling: Duration::from_secs(if args.smoke { 1 } else { 5 }),
        burst: Duration::from_secs(if args.smoke { 2 } else { 10 }),
        users: args
            .users
            .unwrap_or(if args.smoke { 50 } else { 2_000 })
            .max(1),
        tenants: if args.smoke { 200 } else { 10_000 },
    };
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let exe = std::env::current_exe()?;
    let tessera = match &args.tessera {
        Some(p) => p.clone(),
        None => exe.with_file_name("tessera"),
    };
    if !tessera.is_file() {
        bail!("{} not found (bench/run.sh builds it)", tessera.display());
    }
    let oha = Oha(args.oha.clone());
    let oha_version = oha
        .version()
        .await
        .with_context(|| format!("oha at {}", oha.0.display()))?;

    // A full run waits up to 2 minutes for the cores to be quiet (a build may just have ended).
    let mut busy = env::busy(Duration::from_secs(1)).await.unwrap_or(0.0);
    let waiting = Instant::now();
    while !args.smoke && busy >= 0.25 && waiting.elapsed() < Duration::from_secs(120) {
        busy = env::busy(Duration::from_secs(1)).await.unwrap_or(0.0);
    }
    let quiet = if busy < 0.25 {
        "quiet"
    } else {
        "**not quiet: numbers are pessimistic**"
    };

    let work = tempfile::Builder::new()
        .prefix("tessera-bench-")
        .tempdir()?;
    let cluster = match &args.pg_url {
        Some(_) => None,
        None => Some(env::Cluster::start()?),
    };
    let admin_url = match (&args.pg_url, &cluster) {
        (Some(url), _) => url.clone(),
        (None, Some(c)) => c.url.clone(),
        (None, None) => unreachable!("a cluster was started"),
    };
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let db_name = format!("tessera_bench_{run_id}");
    env::exec(&admin_url, &format!("CREATE DATABASE {db_name}")).await?;
    let db_url = env::with_database(&admin_url, &db_name)?;
    let pg = env::query(
        &db_url,
        "SELECT current_setting('server_version') || ' (' || string_agg(name || '=' || setting, \
         ', ' ORDER BY name) || ')' FROM pg_settings WHERE name IN ('autovacuum', 'fsync', \
         'synchronous_commit', 'shared_buffers', 'max_connections')",
    )
    .await?;
    eprintln!(
        "tessera-bench: database {db_name}, work dir {}",
        work.path().display()
    );

    let port = env::free_port()?;
    let plain_port = env::free_port()?;
    let mut server_env: Vec<(String, String)> = [
        ("DATABASE_URL", db_url.clone()),
        (
            "TESSERA_DATA_DIR",
            work.path().join("data").display().to_string(),
        ),
        ("TESSERA_ENVIRONMENT", "development".into()),
        ("TESSERA_LOG__LEVEL", "warn".into()),
        ("TESSERA_SERVER__WORKERS", cores.to_string()),
        // Every load client is 127.0.0.1 and the sign-ins name one account: the per-client and
        // per-account limits production needs would shed the load being measured. Raised on
        // purpose; the limits are tested in tests/api/limits.rs.
        ("TESSERA_LIMITS__LOGIN_MAX", "1000000000".into()),
        ("TESSERA_LIMITS__REGISTER_MAX", "1000000000".into()),
        ("TESSERA_LIMITS__FREE_FAILURES", "1000000000".into()),
        ("TESSERA_LIMITS__FAILURE_BUDGET", "1000000000".into()),
        ("TESSERA_PASSWORD__MAX_QUEUED_PER_CLIENT", "1000000".into()),
        ("TESSERA_LIMITS__PASSWORD_RESET_MAX", "1000000000".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    server_env.extend(args.server_env.iter().cloned());
    let ctx = Ctx {
        plan,
        cores,
        oha,
        client: load::client(256)?,
        base: format!("http://127.0.0.1:{port}"),
        plain: format!("http://127.0.0.1:{plain_port}"),
        email: format!("bench-{run_id}@example.com"),
        run_id,
        exe: exe.clone(),
        tessera: tessera.clone(),
        env: server_env,
        work: work.path().to_owned(),
        db_url: db_url.clone(),
    };
    let mut server = {
        let mut cmd = ctx.command(&tessera);
        cmd.args(["serve", "--port", &port.to_string()]);
        Child::spawn("tessera serve", cmd, work.path().join("server.log"))?
    };
    let mut plain = {
        let mut cmd = ctx.command(&exe);
        cmd.args(["ceiling", "plain-http", "--port", &plain_port.to_string()]);
        Child::spawn("plain handler", cmd, work.path().join("plain.log"))?
    };
    server
        .wait_ready(&ctx.client, &format!("{}/readyz", ctx.base))
        .await?;
    plain
        .wait_ready(&ctx.client, &format!("{}/plain", ctx.plain))
        .await?;
    load::sign_up(&ctx.client, &ctx.base, &ctx.email).await?;

    let wanted = |s: Scenario| args.only.is_empty() || args.only.contains(&s);
    let (mut rows, mut notes, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    for scenario in [
        Scenario::Me,
        Scenario::Login,
        Scenario::Refresh,
        Scenario::Register,
        Scenario::Fairness,
        Scenario::Forgot,
        Scenario::Authz,
    ] {
        if !wanted(scenario) {
            continue;
        }
        // Each scenario starts on a vacuumed, analyzed database, as autovacuum leaves it between
        // busy phases, not stepping over what the one before it left.
        env::exec(&db_url, "VACUUM (ANALYZE)").await?;
        let name = scenario
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default();
        eprintln!("tessera-bench: {name}");
        let outcome = match scenario {
            Scenario::Me => me(&ctx).await,
            Scenario::Login => login(&ctx).await,
            Scenario::Refresh => refresh(&ctx, &mut notes, &mut failures).await,
            Scenario::Register => register(&ctx).await,
            Scenario::Fairness => fairness(&ctx).await,
            Scenario::Forgot => forgot(&ctx).await,
            Scenario::Authz => authz(&ctx).await,
        };
        match outcome {
            Ok(r) => rows.extend(r),
            Err(e) => {
                failures.push(format!("{name}: {e:#}"));
                rows.push(Row {
                    scenario: name,
                    result: format!("error: {e:#}"),
                    ceiling: "—".into(),
                    goal: "—".into(),
                    verdict: Verdict::NotJudged("the scenario failed".into()),
                });
            }
        }
        server.check_alive()?;
    }
    plain.check_alive()?;
    if !failures.is_empty() {
        eprintln!("server log tail:\n{}", server.log_tail());
    }
    drop((server, plain));
    env::exec(&admin_url, &format!("DROP DATABASE {db_name} WITH (FORCE)")).await?;
    drop(cluster);

    let mode = match (args.smoke, args.only.is_empty()) {
        (true, _) => "Smoke run (numbers not judged)",
        (false, true) => "Full run",
        (false, false) => "Partial run",
    };
    let overrides: Vec<String> = args
        .server_env
        .iter()
        .map(|(k, v)| format!("**{k}={v}**"))
        .collect();
    let header = report::Header {
        title: format!("{mode}, {}", chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")),
        facts: vec![
            ("Command", format!("`{}`", std::env::var("TESSERA_BENCH_COMMAND").unwrap_or_else(|_| "tessera-bench".into()))),
            ("Commit", format!("`{}`", env::commit(Path::new(".")))),
            ("Machine", format!("{}; cores {:.0}% busy just before the run ({quiet})", env::machine(cores), busy * 100.0)),
            (
                "Server",
                format!(
                    "{} `tessera serve`, {cores} workers, default settings{}",
                    if cfg!(debug_assertions) { "debug-build" } else { "release" },
                    if overrides.is_empty() { String::new() } else { format!(" except {}", overrides.join(", ")) }
                ),
            ),
            (
                "PostgreSQL",
                format!("{pg}, {}", if args.pg_url.is_some() { "the server given" } else { "a private cluster" }),
            ),
            ("Load", format!("{oha_version} for fixed requests, the in-crate generator for the rest; all on loopback, sharing the cores")),
            ("Took", format!("{:.0} s", started.elapsed().as_secs_f64())),
        ],
    };
    let text = report::render(&header, &rows, &notes);
    println!("{text}");
    if args.smoke || !args.only.is_empty() || !failures.is_empty() {
        eprintln!("tessera-bench: {} left alone", args.output.display());
    } else {
        report::write_between(&args.output, &text)?;
        eprintln!(
            "tessera-bench: results written to {}",
            args.output.display()
        );
    }
    Ok(failures)
}

fn share(part: f64, whole: f64) -> String {
    format!("{:.0}%", 100.0 * part / whole.max(1e-9))
}

/// A saturation beside the plain handler's under the same load (`how` names that load).
fn beside_plain(scenario: String, sat: &Measurement, plain: &Measurement, how: &str) -> Row {
    Row {
        scenario,
        result: format!(
            "{} req/s ({} of the plain handler)",
            rate(sat.rps()),
            share(sat.rps(), plain.rps())
        ),
        ceiling: format!("plain handler {} req/s{how}", rate(plain.rps())),
        goal: "≥ 20,000 req/s".into(),
        verdict: Verdict::at_least(sat.rps(), 20_000.0),
    }
}

/// An open-loop p99 against its goal; not met when the run did not get the rate it offered.
fn open_row(scenario: &str, m: &Measurement, offered_rate: f64, goal_ms: f64) -> Row {
    let result = format!("p99 {} at {}/s offered", ms(m.p99_ms), rate(offered_rate));
    let (result, verdict) = match (m.shortfall(m.offered.unwrap_or(0)), m.p99_ms) {
        (Some(why), _) => (format!("{result} ({why})"), Verdict::NotMet),
        (None, Some(p99)) => (result, Verdict::at_most(p99, goal_ms)),
        (None, None) => (result, Verdict::NotJudged("no answers".into())),
    };
    Row {
        scenario: format!(
            "{scenario}, p99 at {:.0}% of saturation",
            OPEN_SHARE * 100.0
        ),
        result,
        ceiling: "—".into(),
        goal: format!("p99 ≤ {goal_ms} ms"),
        verdict,
    }
}

/// An open-loop p99 of an endpoint answered in microseconds, beside the plain handler's p99 at
/// the same share of its own saturation through the same load tool: at tens of thousands of
/// requests a second the load tool, the server and the kernel's loopback share two cores, and
/// the tail that sharing makes is the floor of what this machine can measure. The goal is 5 ms,
/// or that floor where it is higher: what the server adds over a bare actix handler.
fn open_row_beside_plain(
    scenario: &str,
    m: &Measurement,
    offered_rate: f64,
    plain: &Measurement,
    plain_rate: f64,
) -> Row {
    let floor = plain.p99_ms.unwrap_or(0.0);
    let goal_ms = floor.max(5.0);
    let mut row = open_row(scenario, m, offered_rate, goal_ms);
    row.goal = "p99 ≤ 5 ms, or ≤ the plain handler's at the same share".into();
    row.ceiling = format!(
        "plain handler p99 {} at {}/s offered ({:.0}% of its saturation){}",
        ms(plain.p99_ms),
        rate(plain_rate),
        OPEN_SHARE * 100.0,
        plain
            .shortfall(plain.offered.unwrap_or(0))
            .map(|why| format!(" ({why})"))
            .unwrap_or_default()
    );
    row
}

fn expect_ok(m: &Measurement, what: &str) -> Result<()> {
    if m.ok() == 0 {
        bail!("{what}: no 2xx answer ({})", m.answers());
    }
    Ok(())
}

/// GET /v1/me beside the plain handler: one token with oha (the caches' best case), then many
/// users' tokens round-robin with the in-crate generator (cache misses and many entries). Each
/// open loop has the plain handler's beside it, at the same share of its own saturation.
async fn me(ctx: &Ctx) -> Result<Vec<Row>> {
    let (me_url, plain_url) = (
        format!("{}/v1/me", ctx.base),
        format!("{}/plain", ctx.plain),
    );
    let token = load::sign_in(&ctx.client, &ctx.base, &ctx.email)
        .await?
        .access_token;
    let conns = 64;
    let one = Load {
        header: Some(format!("Authorization: Bearer {token}")),
        ..Load::new(me_url.clone(), conns, ctx.plan.run)
    };
    let open = |load: &Load, rate: f64| Load {
        rate: Some(rate),
        run: ctx.plan.open,
        ..load.clone()
    };
    let bare = Load::new(plain_url.clone(), conns, ctx.plan.run);
    let plain = ctx.oha(bare.clone()).await?;
    let plain_offered = OPEN_SHARE * plain.rps();
    let plain_open = ctx.oha(open(&bare, plain_offered)).await?;
    let sat = ctx.oha(one.clone()).await?;
    expect_ok(&sat, "GET /v1/me")?;
    let offered = OPEN_SHARE * sat.rps();
    let me_open = ctx.oha(open(&one, offered)).await?;
    let scenario = "GET /v1/me, one token (oha)";
    let mut rows = vec![
        beside_plain(scenario.into(), &sat, &plain, ""),
        open_row_beside_plain(scenario, &me_open, offered, &plain_open, plain_offered),
    ];

    let n = ctx.plan.users;
    let tokens = load::new_users(&ctx.client, &ctx.base, &ctx.run_id, n).await?;
    let get = |url: &str, workers: usize, pace: Pace| {
        let (client, tokens, url) = (ctx.client.clone(), tokens.clone(), url.to_owned());
        async move { load::get(&client, &url, &tokens, workers, pace).await }
    };
    get(&plain_url, conns, Pace::closed(ctx.plan.warmup)).await?;
    let plain = get(&plain_url, conns, Pace::closed(ctx.plan.run)).await?;
    let plain_offered = OPEN_SHARE * plain.rps();
    let plain_open = get(
        &plain_url,
        OPEN_WORKERS,
        Pace::open(plain_offered, ctx.plan.open)?,
    )
    .await?;
    // First reads spread over the TTL, as real clients' arrivals are, so that the entries do
    // not all expire in the same few milliseconds; then no pause until the timed runs.
    let spread = Pace::open(n as f64 / USER_TTL.as_secs_f64(), USER_TTL)?;
    get(&me_url, conns, spread).await?;
    get(&me_url, conns, Pace::closed(ctx.plan.warmup)).await?;
    let sat = get(&me_url, conns, Pace::closed(ctx.plan.run)).await?;
    expect_ok(&sat, "GET /v1/me, many users")?;
    let offered = OPEN_SHARE * sat.rps();
    let me_open = get(&me_url, OPEN_WORKERS, Pace::open(offered, ctx.plan.open)?).await?;
    let scenario = format!("GET /v1/me, {n} users round-robin");
    rows.push(beside_plain(
        scenario.clone(),
        &sat,
        &plain,
        ", same generator",
    ));
    rows.push(open_row_beside_plain(
        &scenario,
        &me_open,
        offered,
        &plain_open,
        plain_offered,
    ));
    Ok(rows)
}

/// Sign-ins of one user: saturation against raw Argon2id measured just before and after it, the
/// p99 below saturation, and an overload burst that must be refused fast.
async fn login(ctx: &Ctx) -> Result<Vec<Row>> {
    let url = format!("{}/v1/auth/login", ctx.base);
    let body = serde_json::json!({ "email": ctx.email, "password": load::PASSWORD }).to_string();
    let conns = 4 * ctx.cores;
    let sign_in = Load {
        body: Some(body),
        ..Load::new(url, conns, ctx.plan.run)
    };
    let before = ctx.argon2().await?;
    let sat = ctx.oha(sign_in.clone()).await?;
    expect_ok(&sat, "login")?;
    let after = ctx.argon2().await?;
    let ceiling = (before + after) / 2.0;
    let offered = OPEN_SHARE * sat.rps();
    let open = ctx
        .oha(Load {
            rate: Some(offered),
            run: ctx.plan.open,
            connections: 2 * conns,
            ..sign_in.clone()
        })
        .await?;
    let burst = ctx
        .oha
        .run(&Load {
            connections: 256,
            run: ctx.plan.burst,
            ..sign_in
        })
        .await?;
    let refused: u64 = burst
        .statuses
        .iter()
        .filter(|(s, _)| matches!(**s, 429 | 503))
        .map(|(_, n)| n)
        .sum();
    let unanswered: u64 = burst.errors.values().sum();
    let burst_verdict = Verdict::at_most(burst.refused_p99_ms.unwrap_or(0.0), 250.0)
        .and(Verdict::at_most(burst.ok_p99_ms.unwrap_or(0.0), 1_000.0))
        .and(if unanswered == 0 {
            Verdict::Met
        } else {
            Verdict::NotMet
        });
    Ok(vec![
        Row {
            scenario: "Login, saturation".into(),
            result: format!(
                "{}/s, {} of the ceiling",
                rate(sat.rps()),
                share(sat.rps(), ceiling)
            ),
            ceiling: format!(
                "Argon2id {}/s ({} before, {} after)",
                rate(ceiling),
                rate(before),
                rate(after)
            ),
            goal: "≥ 80% of the Argon2id ceiling".into(),
            verdict: Verdict::at_least(sat.rps() / ceiling, 0.80),
        },
        open_row("Login", &open, offered, 250.0),
        Row {
            scenario: "Login, overload (256 connections)".into(),
            result: format!(
                "{refused} of {} refused, refusal p99 {}, accepted p99 {}, {unanswered} unanswered",
                burst.statuses.values().sum::<u64>(),
                ms(burst.refused_p99_ms),
                ms(burst.ok_p99_ms)
            ),
            ceiling: "—".into(),
            goal: "429/503 p99 ≤ 250 ms, accepted p99 < 1 s, none unanswered".into(),
            verdict: burst_verdict,
        },
    ])
}

/// Refresh rotation: chains of single-use tokens over HTTP against the same rotations through
/// the service layer without HTTP, the p99 below saturation, and no token accepted twice.
async fn refresh(
    ctx: &Ctx,
    notes: &mut Vec<String>,
    failures: &mut Vec<String>,
) -> Result<Vec<Row>> {
    let (c, base, email) = (&ctx.client, ctx.base.as_str(), ctx.email.as_str());
    let pairs = load::sessions(c, base, email, 32).await?;
    let (sat, mut check) = load::refresh(c, base, email, pairs, Pace::closed(ctx.plan.run)).await?;
    expect_ok(&sat, "refresh")?;
    let secs = ctx.plan.run.as_secs_f64().to_string();
    let line = ctx
        .ceiling(&["refresh", email, "--sessions", "32", "--seconds", &secs])
        .await?;
    let alone: Measurement = serde_json::from_str(&line).context("refresh ceiling's output")?;
    let offered = OPEN_SHARE * sat.rps();
    let pairs = load::sessions(c, base, email, 64).await?;
    let (open, check2) =
        load::refresh(c, base, email, pairs, Pace::open(offered, ctx.plan.open)?).await?;
    check.presented += check2.presented;
    check.races += check2.races;
    check.replays += check2.replays;
    check.accepted_twice += check2.accepted_twice;
    check.issued_twice += check2.issued_twice;
    let reused = check.accepted_twice + check.issued_twice;
    if reused > 0 {
        failures.push(format!(
            "refresh: {} tokens accepted twice, {} issued twice",
            check.accepted_twice, check.issued_twice
        ));
    }
    notes.push(format!(
        "Refresh: {} tokens presented once each, {} concurrent double presentations and {} replays of used tokens after the timed parts; the ceiling's answers: {}.",
        check.presented,
        check.races,
        check.replays,
        alone.answers()
    ));
    Ok(vec![
        Row {
            scenario: "Refresh, saturation (32 chains)".into(),
            result: format!(
                "{}/s, {} of the ceiling",
                rate(sat.rps()),
                share(sat.rps(), alone.rps())
            ),
            ceiling: format!("the same rotations without HTTP {}/s", rate(alone.rps())),
            goal: "≥ 55% of the rotations without HTTP".into(),
            verdict: Verdict::at_least(sat.rps() / alone.rps().max(1e-9), 0.55),
        },
        open_row("Refresh (64 chains)", &open, offered, 15.0),
        Row {
            scenario: "Refresh, single use".into(),
            result: format!(
                "{} accepted twice, {} issued twice",
                check.accepted_twice, check.issued_twice
            ),
            ceiling: "—".into(),
            goal: "no token accepted twice".into(),
            verdict: if reused == 0 {
                Verdict::Met
            } else {
                Verdict::NotMet
            },
        },
    ])
}

/// Registrations with unique emails: one Argon2id hash each.
async fn register(ctx: &Ctx) -> Result<Vec<Row>> {
    let ceiling = ctx.argon2().await?;
    let m = load::register(
        &ctx.client,
        &ctx.base,
        &ctx.run_id,
        4 * ctx.cores,
        Pace::closed(ctx.plan.run),
    )
    .await?;
    expect_ok(&m, "register")?;
    Ok(vec![Row {
        scenario: "Register".into(),
        result: format!(
            "{}/s ({} of the ceiling)",
            rate(m.rps()),
            share(m.rps(), ceiling)
        ),
        ceiling: format!("Argon2id {}/s", rate(ceiling)),
        goal: "≥ 65/s".into(),
        verdict: Verdict::at_least(m.rps(), 65.0),
    }])
}

/// Sign-ins from one client (2 workers, source address 127.0.0.3) alone, then while another
/// client (64 workers, 127.0.0.2) floods sign-ins, on a second server with the default
/// per-client share of the hashing queue (`password.max_queued_per_client`, which the main
/// server raises for one-client saturation runs).
async fn fairness(ctx: &Ctx) -> Result<Vec<Row>> {
    let port = env::free_port()?;
    let mut cmd = ctx.command(&ctx.tessera);
    cmd.args(["serve", "--port", &port.to_string()])
        .env("TESSERA_PASSWORD__MAX_QUEUED_PER_CLIENT", "4");
    let mut server = env::Child::spawn("fair tessera serve", cmd, ctx.work.join("fair.log"))?;
    let base = format!("http://127.0.0.1:{port}");
    server
        .wait_ready(&ctx.client, &format!("{base}/readyz"))
        .await?;
    let url = format!("{base}/v1/auth/login");
    let body = serde_json::json!({ "email": ctx.email, "password": load::PASSWORD }).to_string();
    let from = |last: u8, workers: usize| {
        let (url, body) = (url.clone(), vec![body.clone()]);
        async move {
            let client = reqwest::Client::builder()
                .local_address(std::net::IpAddr::from([127, 0, 0, last]))
                .timeout(Duration::from_secs(30))
                .build()?;
            load::post_bodies(
                &client,
                &url,
                None,
                &body,
                workers,
                Pace::closed(ctx.plan.run),
            )
            .await
        }
    };
    let alone = from(3, 2).await?;
    let (flood, other) = tokio::join!(from(2, 64), from(3, 2));
    let (flood, other) = (flood?, other?);
    server.check_alive()?;
    drop(server);
    let answered = other.ok() as f64 / other.sent().max(1) as f64;
    let verdict = Verdict::at_least(answered, 0.95)
        .and(Verdict::at_most(other.p99_ms.unwrap_or(f64::MAX), 1_000.0));
    Ok(vec![Row {
        scenario: "Login, another client during one client's flood (64 workers)".into(),
        result: format!(
            "{}/s signed in, {:.0}% of its sign-ins 2xx, p99 {} (alone {}/s); the flood {}/s 2xx, {} refused",
            rate(other.rps()),
            answered * 100.0,
            ms(other.p99_ms),
            rate(alone.rps()),
            rate(flood.rps()),
            flood.sent() - flood.ok()
        ),
        ceiling: "the same client alone, same run".into(),
        goal: "≥ 95% of its sign-ins 2xx, p99 ≤ 1 s".into(),
        verdict,
    }])
}

/// `POST /v1/auth/password/forgot` for an existing and an unknown address, 50/s each at the same
/// time: the answers must not tell them apart by their timing either.
async fn forgot(ctx: &Ctx) -> Result<Vec<Row>> {
    let url = format!("{}/v1/auth/password/forgot", ctx.base);
    let ask = |email: String| {
        let (client, url) = (ctx.client.clone(), url.clone());
        let body = vec![serde_json::json!({ "email": email }).to_string()];
        async move {
            load::post_bodies(
                &client,
                &url,
                None,
                &body,
                8,
                Pace::open(50.0, ctx.plan.run)?,
            )
            .await
        }
    };
    let (known, unknown) = tokio::join!(
        ask(ctx.email.clone()),
        ask(format!("nobody-{}@example.com", ctx.run_id))
    );
    let (known, unknown) = (known?, unknown?);
    expect_ok(&known, "forgot, known address")?;
    let (k, u) = (known.p50_ms.unwrap_or(0.0), unknown.p50_ms.unwrap_or(0.0));
    let apart = (k - u).abs();
    Ok(vec![Row {
        scenario: "Forgot password, known vs unknown address (50/s each, together)".into(),
        result: format!(
            "p50 {} vs {}, p99 {} vs {}",
            ms(known.p50_ms),
            ms(unknown.p50_ms),
            ms(known.p99_ms),
            ms(unknown.p99_ms)
        ),
        ceiling: "—".into(),
        goal: "p50s within 5% or 0.5 ms".into(),
        verdict: Verdict::at_most(apart, (0.05 * k.max(u)).max(0.5)),
    }])
}

/// `POST /v1/authz/check` over `plan.tenants` organizations (10 members each, written straight
/// to the tables), the bench user asking about itself at random scopes and permissions, one
/// question per tenant round-robin (in-crate generator; the plain handler through the same one):
/// saturation, the p99 at 70% of it, and the batch form (100 questions a request).
async fn authz(ctx: &Ctx) -> Result<Vec<Row>> {
    let n = ctx.plan.tenants;
    let owner = migration::builtin_role_id("owner");
    let viewer = migration::builtin_role_id("viewer");
    // Nine other members in every tenant: each tenant's enforcer holds ten users' grants.
    let sql = format!(
        "INSERT INTO users (id, email, password_hash, display_name, status, mfa_enabled, failed_login_count, metadata, version, created_at, updated_at) \
           SELECT gen_random_uuid(), 'filler-{run}-' || i || '@example.com', 'x', 'Filler', 'active', false, 0, '{{}}', 1, now(), now() FROM generate_series(1, 9) i;
         INSERT INTO organizations (id, slug, name, version, authz_version, created_at, updated_at) \
           SELECT gen_random_uuid(), 'bench-' || i, 'Bench ' || i, 1, 1, now(), now() FROM generate_series(1, {n}) i;
         INSERT INTO accounts (id, organization_id, slug, name, version, created_at, updated_at) \
           SELECT gen_random_uuid(), id, 'a', 'A', 1, now(), now() FROM organizations WHERE slug LIKE 'bench-%';
         INSERT INTO projects (id, organization_id, account_id, slug, name, version, created_at, updated_at) \
           SELECT gen_random_uuid(), organization_id, id, 'p', 'P', 1, now(), now() FROM accounts;
         INSERT INTO memberships (id, organization_id, user_id, created_at) \
           SELECT gen_random_uuid(), o.id, u.id, now() FROM organizations o, users u \
           WHERE o.slug LIKE 'bench-%' AND (u.email = '{email}' OR u.email LIKE 'filler-{run}-%');
         INSERT INTO role_assignments (id, organization_id, membership_id, role_id, scope_type, scope_id, created_at) \
           SELECT gen_random_uuid(), m.organization_id, m.id, CASE WHEN u.email = '{email}' THEN '{owner}'::uuid ELSE '{viewer}'::uuid END, 'organization', m.organization_id, now() \
           FROM memberships m JOIN users u ON u.id = m.user_id;
         VACUUM ANALYZE",
        run = ctx.run_id,
        email = ctx.email,
    );
    for statement in sql.split(";\n") {
        env::exec(&ctx.db_url, statement.trim()).await?;
    }
    let rows = env::query(
        &ctx.db_url,
        "SELECT string_agg(o.id || ' ' || a.id || ' ' || p.id, ',') FROM organizations o \
         JOIN accounts a ON a.organization_id = o.id JOIN projects p ON p.account_id = a.id \
         WHERE o.slug LIKE 'bench-%'",
    )
    .await?;
    let mut seed = 0x5EED_u64;
    let mut pick = |k: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % k as u64) as usize
    };
    let perms = service::authz::Permission::ALL;
    let questions: Vec<serde_json::Value> = rows
        .split(',')
        .filter_map(|r| {
            let ids: Vec<&str> = r.split(' ').collect();
            (ids.len() == 3).then_some(ids)
        })
        .map(|ids| {
            let (kind, id) = [("organization", ids[0]), ("account", ids[1]), ("project", ids[2])][pick(3)];
            serde_json::json!({"org_id": ids[0], "scope": {"type": kind, "id": id}, "permission": perms[pick(perms.len())].as_str()})
        })
        .collect();
    if questions.len() != n {
        bail!("expected {n} tenants, found {}", questions.len());
    }
    let token = load::sign_in(&ctx.client, &ctx.base, &ctx.email)
        .await?
        .access_token;
    let one: Vec<String> = questions.iter().map(|q| q.to_string()).collect();
    let batches: Vec<String> = questions
        .chunks(100)
        .map(|c| serde_json::json!({ "checks": c }).to_string())
        .collect();
    let url = format!("{}/v1/authz/check", ctx.base);
    let conns = 64;
    let post = |bodies: &Vec<String>, workers: usize, pace: Pace| {
        let (client, url, token, bodies) = (
            ctx.client.clone(),
            url.clone(),
            token.clone(),
            bodies.clone(),
        );
        async move { load::post_bodies(&client, &url, Some(&token), &bodies, workers, pace).await }
    };
    // Every tenant asked once (its enforcer built, its answer remembered), then timed runs.
    post(&one, conns, Pace::closed(ctx.plan.warmup)).await?;
    post(&one, conns, Pace::closed(ctx.plan.warmup)).await?;
    let plain_url = format!("{}/plain", ctx.plain);
    let plain = load::get(
        &ctx.client,
        &plain_url,
        &[],
        conns,
        Pace::closed(ctx.plan.run),
    )
    .await?;
    let sat = post(&one, conns, Pace::closed(ctx.plan.run)).await?;
    expect_ok(&sat, "POST /v1/authz/check")?;
    let offered = OPEN_SHARE * sat.rps();
    let open = post(&one, OPEN_WORKERS, Pace::open(offered, ctx.plan.open)?).await?;
    let batch = post(&batches, conns, Pace::closed(ctx.plan.run)).await?;
    expect_ok(&batch, "POST /v1/authz/check, batches")?;
    let decisions = batch.rps() * 100.0;
    let scenario = format!("Authorization check, {n} tenants round-robin");
    Ok(vec![
        Row {
            goal: "≥ 50% of the plain handler".into(),
            verdict: Verdict::at_least(sat.rps(), 0.5 * plain.rps()),
            ..beside_plain(scenario.clone(), &sat, &plain, ", same generator")
        },
        open_row(&scenario, &open, offered, 5.0),
        Row {
            scenario: format!("Authorization check, batches of 100, {n} tenants"),
            result: format!(
                "{} decisions/s ({} req/s)",
                rate(decisions),
                rate(batch.rps())
            ),
            ceiling: "—".into(),
            goal: "≥ 100,000 decisions/s".into(),
            verdict: Verdict::at_least(decisions, 100_000.0),
        },
    ])
}
