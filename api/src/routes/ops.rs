//! Operational endpoints: liveness, readiness, and the JWKS.

use actix_web::{get, web, HttpResponse};
use service::AppContext;

use crate::dto::{Health, Jwks};
use crate::error::{ApiError, Problem};

/// Liveness: the process answers.
#[utoipa::path(tag = "ops", extensions(("x-required-permission" = json!("public"))), responses((status = 200, description = "Alive", body = Health)))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
    })
}

/// Readiness: the database answers and every migration is applied.
#[utoipa::path(
    extensions(("x-required-permission" = json!("public"))),
    tag = "ops",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Database unreachable or migrations pending", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/readyz")]
pub async fn readyz(ctx: web::Data<AppContext>) -> Result<HttpResponse, ApiError> {
    match service::db::readiness(&ctx.db).await {
        Ok(()) => Ok(HttpResponse::Ok().json(Health {
            status: "ready".into(),
        })),
        Err(err) => {
            tracing::warn!(error = %err, "not ready");
            Err(ApiError::new(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "Service unavailable",
            )
            .detail(err.to_string()))
        }
    }
}

/// The public keys that verify access tokens (RFC 7517).
#[utoipa::path(tag = "ops", extensions(("x-required-permission" = json!("public"))), responses((status = 200, description = "JSON Web Key Set", body = Jwks)))]
#[get("/.well-known/jwks.json")]
pub async fn jwks(ctx: web::Data<AppContext>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            actix_web::http::header::CACHE_CONTROL,
            "public, max-age=300",
        ))
        .json(ctx.keys.jwks())
}
