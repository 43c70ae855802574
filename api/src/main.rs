//! The `tessera` binary: serve | migrate | openapi | admin.

use std::path::PathBuf;
use std::process::ExitCode;

use api::Application;
use clap::{Parser, Subcommand};
use migration::sea_orm_migration::MigratorTrait;
use migration::Migrator;
use service::config::Settings;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Multi-tenant authentication and RBAC"
)]
struct Cli {
    /// Configuration file (default: ./tessera.toml if present). Env: TESSERA_CONFIG.
    #[arg(long, global = true, env = "TESSERA_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API.
    Serve {
        /// Port to listen on (default 8080).
        #[arg(long)]
        port: Option<u16>,
        /// Address to bind (default 127.0.0.1).
        #[arg(long)]
        bind: Option<String>,
    },
    /// Apply or inspect database migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Reference measurements for the benchmarks (same binary, same build).
    #[command(hide = true)]
    Ceiling {
        #[command(subcommand)]
        action: CeilingAction,
    },
    /// Operator actions.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
}

#[derive(Subcommand)]
enum MigrateAction {
    /// Apply all pending migrations.
    Up,
    /// Roll back the last N migrations (default 1).
    Down {
        #[arg(short = 'n', long, default_value_t = 1)]
        steps: u32,
    },
    /// List migrations and whether each is applied.
    Status,
    /// Drop every table and apply all migrations again (refused in production without --yes).
    Fresh {
        /// Confirm dropping every table, required when environment = "production".
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
enum CeilingAction {
    /// Raw Argon2id verifications per second with the configured parameters.
    Argon2 {
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Refresh-token rotation through the service layer, no HTTP: signs `sessions` sessions in
    /// as EMAIL (password in TESSERA_CEILING_PASSWORD), chains refreshes on them for `seconds`,
    /// closed loop or at `rate` per second; prints one JSON line.
    Refresh {
        email: String,
        #[arg(long, default_value_t = 32)]
        sessions: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long)]
        rate: Option<f64>,
        /// After printing the result, keep the database connections open until stdin closes
        /// (so the caller can read the backends' CPU before they exit).
        #[arg(long)]
        hold: bool,
    },
    /// A plain actix JSON handler at GET /plain, nothing else, until killed.
    PlainHttp {
        #[arg(long, default_value_t = 8089)]
        port: u16,
        #[arg(long)]
        workers: Option<usize>,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Disable a user: their sessions end at once and they cannot sign in.
    DisableUser { email: String },
    /// Re-enable a disabled user.
    EnableUser { email: String },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let load = || -> Result<Settings, Box<dyn std::error::Error>> {
        let settings = Settings::load(cli.config.as_deref())?;
        api::telemetry::init(&settings.log);
        Ok(settings)
    };
    match cli.command {
        Command::Openapi => println!("{}", api::openapi::build().to_pretty_json()?),
        Command::Serve { port, bind } => {
            let mut settings = load()?;
            if let Some(port) = port {
                settings.server.port = port;
            }
            if let Some(bind) = bind {
                settings.server.bind = bind;
            }
            let app = Application::build(settings).await?;
            let ctx = app.context();
            let host = match ctx.settings.server.bind.as_str() {
                "0.0.0.0" | "::" => "127.0.0.1".to_owned(),
                other if other.contains(':') => format!("[{other}]"),
                other => other.to_owned(),
            };
            let url = format!("http://{host}:{}", app.port());
            tracing::info!(%url, "tessera listening");
            println!("Tessera listening on {url}\nSwagger UI: {url}/swagger-ui/\nOpenAPI:    {url}/openapi.json");
            app.run_until_stopped().await?;
        }
        Command::Migrate { action } => {
            let settings = load()?;
            let db = service::db::connect(&settings.database).await?;
            match action {
                MigrateAction::Up => Migrator::up(&db, None).await?,
                MigrateAction::Down { steps } => Migrator::down(&db, Some(steps)).await?,
                MigrateAction::Fresh { yes } => {
                    if settings.environment == service::config::Environment::Production && !yes {
                        return Err(
                            "migrate fresh drops every table; pass --yes to do that in production"
                                .into(),
                        );
                    }
                    Migrator::fresh(&db).await?
                }
                MigrateAction::Status => {
                    for m in Migrator::get_migration_with_status(&db).await? {
                        println!("{:<10} {}", format!("{:?}", m.status()), m.name());
                    }
                }
            }
        }
        Command::Ceiling { action } => match action {
            CeilingAction::Argon2 { threads, seconds } => {
                let settings = load()?;
                let threads = threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
                let rate = service::passwords::raw_verify_rate(
                    &settings.password,
                    threads,
                    std::time::Duration::from_secs(seconds),
                )?;
                println!(
                    "{}",
                    serde_json::json!({
                        "verifies_per_sec": rate,
                        "threads": threads,
                        "memory_kib": settings.password.memory_kib,
                        "iterations": settings.password.iterations,
                        "parallelism": settings.password.parallelism,
                    })
                );
            }
            CeilingAction::Refresh {
                email,
                sessions,
                seconds,
                rate,
                hold,
            } => {
                let email = service::domain::Email::parse(&email)?;
                let password = std::env::var("TESSERA_CEILING_PASSWORD")
                    .map_err(|_| "set TESSERA_CEILING_PASSWORD to the user's password")?;
                let plan = service::ceiling::RefreshPlan {
                    sessions,
                    duration: std::time::Duration::from_secs(seconds),
                    rate,
                };
                let ctx = Application::context_for(load()?).await?;
                let measured =
                    service::ceiling::refresh(&ctx, &email, &password.into(), plan).await?;
                println!("{}", serde_json::to_string(&measured)?);
                if hold {
                    tokio::task::spawn_blocking(|| {
                        let mut line = String::new();
                        std::io::stdin().read_line(&mut line)
                    })
                    .await??;
                }
            }
            CeilingAction::PlainHttp { port, workers } => {
                let workers = workers
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
                actix_web::HttpServer::new(|| {
                    actix_web::App::new().route(
                        "/plain",
                        actix_web::web::get().to(|| async {
                            actix_web::HttpResponse::Ok()
                                .json(serde_json::json!({ "status": "ok" }))
                        }),
                    )
                })
                .workers(workers)
                .bind(("127.0.0.1", port))?
                .run()
                .await?;
            }
        },
        Command::Admin { action } => {
            let settings = load()?;
            let db = service::db::connect(&settings.database).await?;
            let (email, status) = match &action {
                AdminAction::DisableUser { email } => (email, service::users::UserStatus::Disabled),
                AdminAction::EnableUser { email } => (email, service::users::UserStatus::Active),
            };
            let email = service::domain::Email::parse(email)?;
            let user = service::users::UserService::find_by_email(&db, &email)
                .await?
                .ok_or("no such user")?;
            service::users::UserService::set_status(&db, user.id, status).await?;
            println!("{} is now {:?}", email.as_str(), status);
        }
    }
    Ok(())
}
