//! Building and running the server: `Application::build(settings)` binds (port 0 in tests),
//! exposes `.port()`, and `.run_until_stopped()` serves until a shutdown signal.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpRequest, HttpServer};
use service::changes::ChangeFeed;
use service::config::Settings;
use service::tokens::{load_signing_key, KeySource, TokenKeys};
use service::AppContext;
use tracing_actix_web::TracingLogger;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::ApiError;
use crate::request_context::{self, RequestLimits};
use crate::{openapi, routes};

pub struct Application {
    port: u16,
    server: Server,
    context: AppContext,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("database: {0}")]
    Database(#[from] service::db::DbErr),
    #[error(transparent)]
    SigningKey(#[from] service::tokens::KeyError),
    #[error("{0}")]
    Service(#[from] service::ServiceError),
    #[error("bind: {0}")]
    Io(#[from] std::io::Error),
}

impl Application {
    /// Connects, migrates (unless disabled), loads the signing key and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let context = Self::context_for(settings).await?;
        let feed = ChangeFeed::start(&context).await;
        Self::with_context(context, feed)
    }

    /// What [`Self::build`] serves: connected, migrated (unless disabled), the signing key loaded.
    pub async fn context_for(settings: Settings) -> Result<AppContext, StartupError> {
        let db = service::db::connect(&settings.database).await?;
        if settings.database.auto_migrate {
            service::db::migrate_up(&db).await?;
        }
        let (key, source) = load_signing_key(&settings)?;
        match &source {
            KeySource::GeneratedForDevelopment(path) => tracing::warn!(
                path = %path.display(),
                "generated a new Ed25519 signing key for development; configure auth.signing_key_file in production"
            ),
            KeySource::LoadedGenerated(path) => tracing::warn!(
                path = %path.display(),
                "using the generated development signing key; configure auth.signing_key_file in production"
            ),
            KeySource::Configured | KeySource::File => {}
        }
        let keys = TokenKeys::new(&key, source, &settings.auth)?;
        let context = AppContext::new(db, settings, keys)?;
        if let Err(err) =
            service::authz::sync_builtin_roles(&context.db, &context.authz.policy()).await
        {
            // Before the migrations ran (auto_migrate off) there is no table yet; /readyz says so.
            tracing::warn!(error = %err, "could not sync the built-in roles of the policy");
        }
        Ok(context)
    }

    /// Binds and builds the server around an existing context; the server holds `feed`, which
    /// keeps reading the change feed as long as the server lives.
    pub fn with_context(context: AppContext, feed: ChangeFeed) -> Result<Self, StartupError> {
        let feed = web::Data::new(feed);
        tokio::spawn(service::changes::run(Arc::downgrade(
            &feed.clone().into_inner(),
        )));
        let s = &context.settings.server;
        let listener = TcpListener::bind((s.bind.as_str(), s.port))?;
        let port = listener.local_addr()?.port();
        let _ = context
            .public_url
            .set(context.settings.server.public_base_url(port));
        let workers = s
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let api = openapi::build();
        let routes = web::Data::new(request_context::RouteTable::from_openapi(&api));
        let permissions = web::Data::new(request_context::PermissionTable::from_openapi(&api));
        let ctx = web::Data::new(context.clone());
        let limits = web::Data::new(RequestLimits {
            timeout: Duration::from_millis(s.request_timeout_ms),
        });
        let json_limit = s.json_limit_bytes;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(ctx.clone())
                .app_data(feed.clone())
                .app_data(limits.clone())
                .app_data(routes.clone())
                .app_data(permissions.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(json_limit)
                        .error_handler(json_error),
                )
                .app_data(web::PathConfig::default().error_handler(path_error))
                .app_data(web::QueryConfig::default().error_handler(query_error))
                .configure(|cfg| {
                    routes::configure(&mut utoipa_actix_web::service_config::ServiceConfig::new(
                        cfg,
                    ))
                })
                .service(SwaggerUi::new("/swagger-ui/{_:.*}").url("/openapi.json", api.clone()))
                .default_service(web::to(request_context::no_route))
                .wrap(from_fn(request_context::request_context))
                .wrap(TracingLogger::default())
        })
        .listen(listener)?
        .workers(workers)
        .max_connections(s.max_connections_per_worker)
        .client_request_timeout(Duration::from_millis(s.client_request_timeout_ms))
        .keep_alive(Duration::from_secs(s.keep_alive_secs))
        .shutdown_timeout(10)
        .run();
        Ok(Self {
            port,
            server,
            context,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn context(&self) -> &AppContext {
        &self.context
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "Payload too large",
        )
        .detail(format!("the body must be at most {limit} bytes")),
        JsonPayloadError::ContentType => ApiError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
        )
        .detail("send the body as application/json"),
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            ApiError::unprocessable("invalid_body", e.to_string())
        }
        JsonPayloadError::Deserialize(e) => ApiError::bad_request("malformed_json", e.to_string()),
        other => ApiError::bad_request("malformed_body", other.to_string()),
    };
    api.into()
}

fn path_error(err: PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request("invalid_path_parameter", err.to_string()).into()
}

fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request("invalid_query", err.to_string()).into()
}
