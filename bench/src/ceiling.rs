//! The ceilings each benchmark is compared with, measured in the same run by this binary as its
//! own process (`tessera-bench ceiling …`, the server's settings from the same environment): raw
//! Argon2id, refresh rotation through the service layer without HTTP, a bare actix handler.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use argon2_rust::Algorithm;
use clap::Subcommand;
use secrecy::SecretString;
use service::auth::AuthService;
use service::config::Settings;
use service::RequestMeta;

use crate::load::{drive, Pace, PASSWORD};

#[derive(Subcommand)]
pub enum Ceiling {
    /// Raw Argon2id verifications per second with the configured parameters, one reused arena
    /// per thread as the server's hashing threads have; prints `{"per_sec": …}`.
    Argon2 {
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Refresh rotation through the service layer, no HTTP: SESSIONS sessions of EMAIL (the
    /// benchmark's password) chain refreshes for SECONDS, closed loop or at RATE a second, on
    /// the configured database with the server's pool settings; prints a measurement as JSON.
    Refresh {
        email: String,
        #[arg(long, default_value_t = 32)]
        sessions: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long)]
        rate: Option<f64>,
    },
    /// A bare actix JSON handler at GET /plain, until killed.
    PlainHttp {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        workers: Option<usize>,
    },
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

pub fn run(ceiling: Ceiling) -> Result<()> {
    match ceiling {
        Ceiling::Argon2 { threads, seconds } => {
            let settings = Settings::load(None)?;
            let per_sec = argon2(
                &settings,
                threads.unwrap_or_else(cores),
                Duration::from_secs_f64(seconds),
            )?;
            println!("{}", serde_json::json!({ "per_sec": per_sec }));
        }
        Ceiling::Refresh {
            email,
            sessions,
            seconds,
            rate,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            let m = rt.block_on(refresh(
                &email,
                sessions,
                Duration::from_secs_f64(seconds),
                rate,
            ))?;
            println!("{}", serde_json::to_string(&m)?);
        }
        Ceiling::PlainHttp { port, workers } => {
            actix_web::rt::System::new().block_on(async move {
                let plain = || async {
                    actix_web::HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
                };
                actix_web::HttpServer::new(move || {
                    actix_web::App::new().route("/plain", actix_web::web::get().to(plain))
                })
                .workers(workers.unwrap_or_else(cores))
                .bind(("127.0.0.1", port))?
                .run()
                .await
            })?
        }
    }
    Ok(())
}

fn argon2(settings: &Settings, threads: usize, run: Duration) -> Result<f64> {
    let argon = service::passwords::configured_argon2(&settings.password)?;
    let phc = argon
        .hash_password_with_random_salt(PASSWORD.as_bytes())
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    let start = Instant::now();
    let total: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut hasher = argon.hasher();
                    let mut n = 0u64;
                    while start.elapsed() < run {
                        let _ =
                            hasher.verify_encoded(&phc, PASSWORD.as_bytes(), Algorithm::Argon2id);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

async fn refresh(
    email: &str,
    sessions: usize,
    run: Duration,
    rate: Option<f64>,
) -> Result<crate::load::Measurement> {
    let ctx = api::Application::context_for(Settings::load(None)?).await?;
    let email = service::domain::Email::parse(email)?;
    let meta = Arc::new(RequestMeta {
        ip: Some("127.0.0.1".into()),
        user_agent: Some("tessera-bench".into()),
        request_id: None,
    });
    let mut tokens = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        tokens.push(
            AuthService::login(&ctx, &meta, &email, &PASSWORD.into())
                .await?
                .into_tokens()?
                .refresh_token,
        );
    }
    let pace = match rate {
        Some(rate) => Pace::open(rate, run)?,
        None => Pace::closed(run),
    };
    let send = move |token: SecretString| {
        let (ctx, meta, email) = (ctx.clone(), meta.clone(), email.clone());
        async move {
            match AuthService::refresh(&ctx, &meta, &token).await {
                Ok(issued) => (issued.refresh_token, Ok(200)),
                // As the HTTP chains do: a chain whose refresh failed starts a new session.
                Err(err) => match AuthService::login(&ctx, &meta, &email, &PASSWORD.into())
                    .await
                    .and_then(service::auth::LoginOutcome::into_tokens)
                {
                    Ok(issued) => (issued.refresh_token, Err(err.to_string())),
                    Err(_) => (token, Err(err.to_string())),
                },
            }
        }
    };
    Ok(drive(pace, tokens, send).await?.0)
}
