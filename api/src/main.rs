//! The `tessera` binary: serve | migrate | openapi | admin | policy.

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
    /// Operator actions.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Lint or test an authorization policy directory (model.conf, policy.csv, tests/).
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Outgoing mail.
    Mail {
        #[command(subcommand)]
        action: MailAction,
    },
}

#[derive(Subcommand)]
enum MailAction {
    /// Print the outbox, newest first, one JSON object a line.
    Outbox {
        /// Only messages to this address (case-insensitive).
        #[arg(long)]
        to: Option<String>,
        /// At most this many messages.
        #[arg(long, default_value_t = 100)]
        limit: u64,
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
enum AdminAction {
    /// Disable a user: their sessions end at once and they cannot sign in.
    DisableUser { email: String },
    /// Re-enable a disabled user.
    EnableUser { email: String },
    /// Mark a user's current email address verified.
    VerifyEmail { email: String },
    /// Re-encrypt every TOTP secret with the first key of mfa.keys (after adding a new key first).
    RotateMfaKeys,
}

#[derive(Subcommand)]
enum PolicyAction {
    /// Check model.conf, policy.csv and tests/*.csv; exits non-zero on any error.
    Lint {
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
    /// Ask Casbin the expected decisions of DIR/tests/*.csv; exits non-zero if one fails.
    Test {
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            // The detail (an invalid policy's file:line messages, a database's reason) is in
            // the causes; service errors keep their own text opaque for HTTP bodies.
            let mut shown = err.to_string();
            let mut source = err.source();
            while let Some(cause) = source {
                let text = cause.to_string();
                if text != shown {
                    eprintln!("caused by: {text}");
                }
                shown = text;
                source = cause.source();
            }
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
            if let Some(dir) = ctx.settings.policy.dir.clone() {
                reload_on_sighup(ctx.clone(), dir)?;
            }
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
        Command::Admin { action } => {
            let settings = load()?;
            let db = service::db::connect(&settings.database).await?;
            let (email, status) = match &action {
                AdminAction::DisableUser { email } => (email, service::users::UserStatus::Disabled),
                AdminAction::EnableUser { email } => (email, service::users::UserStatus::Active),
                AdminAction::RotateMfaKeys => {
                    let keys = service::mfa::SecretBox::load(&settings)?.ok_or(
                        "configure mfa.keys first: the new key first, the old ones after it",
                    )?;
                    let rotated = service::mfa::MfaService::rotate_keys(&db, &keys).await?;
                    println!(
                        "{rotated} TOTP secret(s) re-encrypted with key {}",
                        keys.active_id()
                    );
                    return Ok(());
                }
                AdminAction::VerifyEmail { email } => {
                    let email = service::domain::Email::parse(email)?;
                    let changed =
                        service::one_time_tokens::EmailVerificationService::verify_by_operator(
                            &db, &email,
                        )
                        .await
                        .map_err(|e| match e {
                            service::ServiceError::NotFound => "no such user".into(),
                            other => Box::<dyn std::error::Error>::from(other),
                        })?;
                    let was = if changed { "" } else { " (it already was)" };
                    println!("{} is now verified{was}", email.as_str());
                    return Ok(());
                }
            };
            let email = service::domain::Email::parse(email)?;
            let user = service::users::UserService::find_by_email(&db, &email)
                .await?
                .ok_or("no such user")?;
            service::users::UserService::set_status(&db, user.id, status).await?;
            println!("{} is now {:?}", email.as_str(), status);
        }
        Command::Policy { action } => {
            use service::authz::policy_test::{lint_dir, run_dir};
            let (report, passed) = match &action {
                PolicyAction::Lint { dir } => {
                    let report = lint_dir(dir);
                    (report.to_string(), report.errors() == 0)
                }
                PolicyAction::Test { dir } => {
                    let report = run_dir(dir);
                    (report.to_string(), report.passed())
                }
            };
            println!("{report}");
            if !passed {
                return Err("the policy did not pass".into());
            }
        }
        Command::Mail {
            action: MailAction::Outbox { to, limit },
        } => {
            let settings = load()?;
            let db = service::db::connect(&settings.database).await?;
            for line in service::mail::outbox_lines(&db, to.as_deref(), limit).await? {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// On SIGHUP, re-reads the policy files the server runs on; see
/// [`service::authz::reload_policy`].
fn reload_on_sighup(ctx: service::AppContext, dir: std::path::PathBuf) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            if let Err(e) = service::authz::reload_policy(&ctx, &dir).await {
                tracing::error!(error = %e, "policy reload failed; the policy in force stays");
            }
        }
    });
    Ok(())
}
