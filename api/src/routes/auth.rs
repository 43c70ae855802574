//! `/v1/auth/*`: register, sign in, rotate refresh tokens, sign out.

use actix_web::{post, web, HttpResponse};
use secrecy::ExposeSecret;
use service::auth::AuthService;
use service::domain::{DisplayName, Email, Password};
use service::users::{NewUser, UserService};
use service::{AppContext, ServiceError};

/// Matches `maxLength` of `LoginRequest.password`.
const MAX_LOGIN_PASSWORD_CHARS: usize = 1024;

use crate::dto::{LoginRequest, RefreshRequest, RegisterRequest, TokenPair, UserResponse};
use crate::error::{ApiError, Problem};
use crate::request_context::{ClientMeta, SigningOut};
use crate::validation::all_ok;

/// Create an account.
#[utoipa::path(
    extensions(("x-required-permission" = json!("public"))),
    tag = "auth",
    responses(
        (status = 201, description = "Account created", body = UserResponse),
        (status = 409, description = "Email already registered (`email_taken`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid email, password or display name", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many registrations from this client (`rate_limited`)", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
#[post("/auth/register")]
pub async fn register(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    body: web::Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let (email, password, display_name) = all_ok((
        Email::parse(&body.email),
        Password::parse(&body.password, "password"),
        DisplayName::parse(&body.display_name),
    ))?;
    let user = UserService::register(
        &ctx,
        &meta.0,
        NewUser {
            email,
            password,
            display_name,
        },
    )
    .await?;
    Ok(HttpResponse::Created().json(UserResponse::from(user)))
}

/// Sign in with email and password.
///
/// Starts a new session. Wrong password and unknown email get the same answer in the same time,
/// and the same delays after repeated failures.
#[utoipa::path(
    extensions(("x-required-permission" = json!("public"))),
    tag = "auth",
    responses(
        (status = 200, description = "Signed in", body = TokenPair, links(
            ("refresh" = (
                operation_id = "refresh",
                request_body = json!({"refresh_token": "$response.body#/refresh_token"}),
                description = "Rotate the session's refresh token (single use: presenting it again revokes the session). The body is `{\"refresh_token\": <this response's refresh_token>}`: the runtime expression inside the object is meant to be evaluated, as Schemathesis does."
            ))
        )),
        (status = 401, description = "Email or password incorrect (`invalid_credentials`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Account disabled (`account_disabled`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Malformed email, or password longer than 1024 characters", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many sign-ins from this client, or too many failed checks for this account: wait, then the right password works (`rate_limited`)", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
#[post("/auth/login")]
pub async fn login(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let email = Email::parse(&body.email)?;
    if body.password.expose_secret().chars().count() > MAX_LOGIN_PASSWORD_CHARS {
        // Longer than any password we accept; refuse before spending a hash on it.
        return Err(ServiceError::validation(
            "password",
            "password_too_long",
            "password is too long",
        )
        .into());
    }
    let tokens = AuthService::login(&ctx, &meta.0, &email, &body.password).await?;
    Ok(no_store(HttpResponse::Ok()).json(TokenPair::from(tokens)))
}

/// Exchange a refresh token for a new token pair.
///
/// Each refresh token works once. Presenting one that was already used revokes its whole session.
#[utoipa::path(
    extensions(("x-required-permission" = json!("public"))),
    tag = "auth",
    responses(
        (status = 200, description = "New token pair", body = TokenPair, links(
            ("refresh" = (
                operation_id = "refresh",
                request_body = json!({"refresh_token": "$response.body#/refresh_token"}),
                description = "Rotate again with the refresh token just issued (the presented one is spent). The body is `{\"refresh_token\": <this response's refresh_token>}`: the runtime expression inside the object is meant to be evaluated, as Schemathesis does."
            ))
        )),
        (status = 401, description = "Unknown, expired, revoked or reused refresh token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Account disabled (`account_disabled`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/auth/refresh")]
pub async fn refresh(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    body: web::Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    // Run to completion even if the client goes away or the request times out, so the work after
    // the commit (remembering revoked sessions locally) is never cut off halfway.
    let (ctx, meta, token) = (ctx.into_inner(), meta.0, body.into_inner().refresh_token);
    let tokens = tokio::spawn(async move { AuthService::refresh(&ctx, &meta, &token).await })
        .await
        .map_err(ServiceError::unexpected)??;
    Ok(no_store(HttpResponse::Ok()).json(TokenPair::from(tokens)))
}

/// Sign out: revoke the current session (a session already revoked is signed out too).
#[utoipa::path(
    extensions(("x-required-permission" = json!("authenticated"))),
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Session revoked"),
        (status = 401, description = "Missing or invalid access token", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/auth/logout")]
pub async fn logout(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: SigningOut,
) -> Result<HttpResponse, ApiError> {
    AuthService::logout(&ctx, &meta.0, &auth.0).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Token responses must not be cached by anything on the way.
fn no_store(mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    builder.insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"));
    builder
}
